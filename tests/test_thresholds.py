"""Adaptive per-level threshold (Appendix K) against brute force and scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import f1_score, precision_score, recall_score

from cacicd.thresholds import adaptive_threshold_table, best_threshold, fixed_threshold_table, hard_metrics


def _brute_force(y, s, mask):
    """Best micro F1 over every distinct score used as a threshold (sklearn f1 on the flattened matrix)."""
    yy, ss = y[:, mask].ravel(), s[:, mask].ravel()
    best_t, best_f = np.nan, -1.0
    for t in sorted(set(ss[np.isfinite(ss)].tolist()), reverse=True):
        f = f1_score(yy, ss >= t, zero_division=0)
        if f > best_f + 1e-12:
            best_t, best_f = t, f
    return best_t, best_f


@pytest.fixture
def fake():
    rng = np.random.default_rng(3)
    y = (rng.random((60, 12)) < 0.25).astype(np.uint8)
    s = np.round(np.clip(0.35 * y + rng.random((60, 12)) * 0.7, 0, 1), 2)  # rounded: many ties
    return y, s


def test_best_threshold_matches_brute_force(fake):
    y, s = fake
    mask = np.zeros(12, bool)
    mask[[0, 2, 3, 7, 11]] = True
    t, f = best_threshold(sp.csr_matrix(y), s, mask)
    bt, bf = _brute_force(y, s, mask)
    assert t == pytest.approx(bt)
    assert f == pytest.approx(bf)
    # the reported F1 is the F1 of applying that threshold
    assert hard_metrics(y, s, t, mask)["f1"] == pytest.approx(f)


def test_hand_worked_threshold():
    # scores 0.9(+), 0.8(-), 0.7(+), 0.2(+): cut at 0.9 -> F1 2/(1+3)=.5; at .8 -> 2/5=.4; at .7 -> 4/6=.667;
    # at .2 -> 6/7=.857 (best)
    y = np.array([[1, 0, 1, 1]])
    s = np.array([[0.9, 0.8, 0.7, 0.2]])
    t, f = best_threshold(y, s)
    assert t == 0.2 and f == pytest.approx(6 / 7)


def test_ties_are_cut_together():
    # a positive tied with a negative: the threshold cannot separate them
    y = np.array([[1, 0, 0]])
    s = np.array([[0.5, 0.5, 0.1]])
    t, f = best_threshold(y, s)
    assert t == 0.5 and f == pytest.approx(2 / 3)


def test_hard_metrics_match_sklearn(fake):
    y, s = fake
    mask = np.arange(12) % 2 == 0
    got = hard_metrics(sp.csr_matrix(y), s, 0.5, mask)
    yy, pp = y[:, mask].ravel(), s[:, mask].ravel() >= 0.5
    assert got["precision"] == pytest.approx(precision_score(yy, pp))
    assert got["recall"] == pytest.approx(recall_score(yy, pp))
    assert got["f1"] == pytest.approx(f1_score(yy, pp))


def test_nan_safety():
    y = np.array([[1, 0, 1], [0, 1, 0]])
    s = np.array([[np.nan, 0.2, 0.9], [0.1, np.nan, 0.3]])
    t, f = best_threshold(y, s)
    # finite scores: .9(+), .3(-), .2(-), .1(-); 3 positives in all (two hidden behind NaN)
    assert t == 0.9 and f == pytest.approx(2 / 4)
    m = hard_metrics(y, s, 0.95)
    assert np.isnan(m["precision"]) and m["recall"] == 0.0
    # no positive at all: undefined, not an error
    t, f = best_threshold(np.zeros((2, 3)), s)
    assert np.isnan(t) and np.isnan(f)
    assert all(np.isnan(v) for v in hard_metrics(y, s, t).values())


def test_tables_per_level(fake):
    y, s = fake
    masks = {"chapter": np.arange(12) < 4, "billing": np.arange(12) >= 4, "all": np.ones(12, bool)}
    code_mask = np.arange(12) != 5
    tab = adaptive_threshold_table(y[:30], s[:30], y[30:], s[30:], masks, code_mask, levels=("chapter", "billing"))
    assert list(tab.level) == ["chapter", "billing"]
    assert list(tab.n_codes) == [4, 7]
    m = masks["billing"] & code_mask
    t, _ = _brute_force(y[:30], s[:30], m)
    assert tab.threshold.iloc[1] == pytest.approx(t)
    assert tab.f1.iloc[1] == pytest.approx(f1_score(y[30:, m].ravel(), s[30:, m].ravel() >= t))
    fixed = fixed_threshold_table(y[30:], s[30:], masks, code_mask, levels=("chapter",))
    assert fixed.f1.iloc[0] == pytest.approx(f1_score(y[30:, :4].ravel(), s[30:, :4].ravel() >= 0.5))
    with pytest.raises(ValueError, match="level 'bogus'"):
        fixed_threshold_table(y, s, masks, levels=("bogus",))


def test_shape_errors(fake):
    y, s = fake
    with pytest.raises(ValueError, match="shape"):
        best_threshold(y[:, :5], s)
    with pytest.raises(ValueError, match="column mask"):
        best_threshold(y, s, np.ones(3, bool))
