"""Adaptive per-level threshold (Appendix K) against brute force and scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import f1_score, precision_recall_curve, precision_score, recall_score

from cacicd.evaluation import metrics as M

from cacicd.evaluation.thresholds import adaptive_threshold_table, best_threshold, fixed_threshold_table, hard_metrics


def _brute_force(y, s, mask):
    """Best micro F1 of `>= t` over every distinct score t, the lowest t among ties (sklearn f1, flattened)."""
    yy, ss = y[:, mask].ravel(), s[:, mask].ravel()
    best_t, best_f = np.nan, -1.0
    for t in sorted(set(ss[np.isfinite(ss)].tolist())):
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


def test_best_threshold_matches_brute_force_and_the_authors_curve(fake):
    y, s = fake
    mask = np.zeros(12, bool)
    mask[[0, 2, 3, 7, 11]] = True
    t, f = best_threshold(sp.csr_matrix(y), s, mask)
    bt, bf = _brute_force(y, s, mask)
    assert t == pytest.approx(bt)
    assert f == pytest.approx(bf)
    # the authors: precision_recall_curve on the dev pairs, F1 = 2pr/(p+r), thresholds[argmax]
    p, r, thr = precision_recall_curve(y[:, mask].ravel(), s[:, mask].ravel())
    with np.errstate(invalid="ignore"):
        assert t == thr[np.nanargmax(2 * p * r / (p + r))]
    # the reported F1 is the dev F1 of `>= t`; applied, the threshold is strict (`> t`), as the authors did
    assert f == pytest.approx(f1_score(y[:, mask].ravel(), s[:, mask].ravel() >= t))
    assert hard_metrics(y, s, t, mask)["f1"] == pytest.approx(f1_score(y[:, mask].ravel(), s[:, mask].ravel() > t))


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


def test_hard_metrics_match_sklearn_and_the_engine_metrics(fake):
    y, s = fake
    mask = np.arange(12) % 2 == 0
    got = hard_metrics(sp.csr_matrix(y), s, 0.5, mask)
    yy, pp = y[:, mask].ravel(), s[:, mask].ravel() > 0.5  # strictly above: the ties at 0.5 are negative
    assert ((s[:, mask] == 0.5).sum()) > 0  # the case has scores exactly at the threshold
    assert got["precision"] == pytest.approx(precision_score(yy, pp))
    assert got["recall"] == pytest.approx(recall_score(yy, pp))
    assert got["f1"] == pytest.approx(f1_score(yy, pp))
    # one code path with the engine's micro metrics (notebook 01's numbers)
    df = M.evaluate(y, s, {"x": mask}, metrics=("precision_micro", "recall_micro", "f1_micro"))
    assert df.set_index("metric")["value"].to_dict() == pytest.approx(
        {"precision_micro": got["precision"], "recall_micro": got["recall"], "f1_micro": got["f1"]})


def test_nan_safety_and_zero_division():
    y = np.array([[1, 0, 1], [0, 1, 0]])
    s = np.array([[np.nan, 0.2, 0.9], [0.1, np.nan, 0.3]])
    t, f = best_threshold(y, s)
    # finite scores: .9(+), .3(-), .2(-), .1(-); 3 positives in all (two hidden behind NaN)
    assert t == 0.9 and f == pytest.approx(2 / 4)
    # no predicted positive: precision 0/0 = 0 (sklearn's zero_division default), recall 0, F1 0
    m = hard_metrics(y, s, 0.95)
    assert m == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert precision_score([1, 0], [0, 0], zero_division=0) == 0.0
    # NaN scores are never positive, even with a threshold below every finite score
    assert hard_metrics(y, s, 0.0)["recall"] == pytest.approx(1 / 3)
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
    assert tab.f1.iloc[1] == pytest.approx(f1_score(y[30:, m].ravel(), s[30:, m].ravel() > t))
    fixed = fixed_threshold_table(y[30:], s[30:], masks, code_mask, levels=("chapter",))
    assert fixed.f1.iloc[0] == pytest.approx(f1_score(y[30:, :4].ravel(), s[30:, :4].ravel() > 0.5))
    with pytest.raises(ValueError, match="level 'bogus'"):
        fixed_threshold_table(y, s, masks, levels=("bogus",))


def test_shape_errors(fake):
    y, s = fake
    with pytest.raises(ValueError, match="shape"):
        best_threshold(y[:, :5], s)
    with pytest.raises(ValueError, match="column mask"):
        best_threshold(y, s, np.ones(3, bool))
