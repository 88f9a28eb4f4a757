"""cacicd.evaluation.stats: fold aggregation, relative improvements and the scipy tests."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from cacicd.evaluation import stats as S


@pytest.fixture
def tidy():
    rows = []
    vals = {("naive", "ndcg"): [0.60, 0.62, 0.64], ("per_level", "ndcg"): [0.63, 0.66, 0.66],
            ("naive", "re@50"): [10.0, 12.0, 14.0], ("per_level", "re@50"): [9.0, 9.0, 12.0]}
    for (model, metric), v in vals.items():
        for fold, x in enumerate(v):
            rows.append(dict(model=model, level="all", metric=metric, fold=fold, value=x))
    return pd.DataFrame(rows)


def test_fold_summary_mean_and_sem_ddof1(tidy):
    s = S.fold_summary(tidy)
    assert list(s.columns) == ["model", "level", "metric", "mean", "sem", "n"]
    r = s.set_index(["model", "metric"]).loc[("naive", "re@50")]
    assert r["mean"] == pytest.approx(12.0)
    assert r["sem"] == pytest.approx(np.std([10, 12, 14], ddof=1) / np.sqrt(3))
    assert r["sem"] == pytest.approx(st.sem([10, 12, 14]))
    assert r["n"] == 3


def test_fold_summary_rejects_duplicates(tidy):
    with pytest.raises(ValueError, match="duplicated"):
        S.fold_summary(pd.concat([tidy, tidy.iloc[:1]]))
    with pytest.raises(KeyError, match="fold"):
        S.fold_summary(tidy.drop(columns="fold"))


@pytest.mark.parametrize("m, ref, sem, lower, want, want_sem", [
    (0.66, 0.60, 0.01, False, 10.0, 100 * 0.01 / 0.60),
    (9.0, 12.0, 1.0, True, 25.0, 100 / 12),  # fewer rank errors: positive
    (15.0, 12.0, 1.0, True, -25.0, 100 / 12),
    (1.0, 0.0, 1.0, False, np.nan, np.nan),
])
def test_relative_improvement(m, ref, sem, lower, want, want_sem):
    rel, rel_sem = S.relative_improvement(m, ref, sem, lower_better=lower)
    assert rel == pytest.approx(want, nan_ok=True) and rel_sem == pytest.approx(want_sem, nan_ok=True)


def test_relative_to_negates_rank_errors(tidy):
    r = S.relative_to(S.fold_summary(tidy), "naive").set_index(["model", "metric"])
    assert r.loc[("per_level", "ndcg"), "rel"] == pytest.approx(100 * (0.65 / 0.62 - 1))
    assert r.loc[("per_level", "re@50"), "rel"] == pytest.approx(-100 * (10 / 12 - 1))
    assert r.loc[("per_level", "re@50"), "rel_sem"] == pytest.approx(st.sem([9, 9, 12]) * 100 / 12)
    assert r.loc[("naive", "ndcg"), "rel"] == pytest.approx(0)
    with pytest.raises(ValueError, match="no row with model == 'x'"):
        S.relative_to(S.fold_summary(tidy), "x")


def test_paired_ttest_matches_scipy():
    a, b = [10.0, 12.0, 14.0], [9.0, 9.0, 12.5]
    r = S.paired_ttest(a, b, compared="naive vs per level, re@50, all")
    ref = st.ttest_rel(a, b)
    assert (r.statistic, r.pvalue, r.n) == pytest.approx((ref.statistic, ref.pvalue, 3))
    assert r.as_dict()["test"] == "ttest_rel" and "re@50" in r.compared
    assert S.paired_ttest([1.0, np.nan, 3.0, 4.0], [1.5, 2.0, 2.0, 3.0]).n == 3
    with pytest.raises(ValueError, match="same length"):
        S.paired_ttest([1, 2], [1, 2, 3])


def test_mann_whitney_and_spearman_match_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.random(30), rng.random(40) + 0.2
    r = S.mann_whitney(np.r_[a, np.nan], b)
    ref = st.mannwhitneyu(a, b, alternative="two-sided")
    assert (r.statistic, r.pvalue, r.n) == pytest.approx((ref.statistic, ref.pvalue, 70))
    x, y = rng.random(20), rng.random(20)
    r = S.spearman(x, x + 0.3 * y)
    ref = st.spearmanr(x, x + 0.3 * y)
    assert (r.statistic, r.pvalue, r.n) == pytest.approx((ref.statistic, ref.pvalue, 20))
    assert np.isnan(S.spearman([1.0, 2.0], [2.0, 1.0]).pvalue)
