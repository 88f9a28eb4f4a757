from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr, ttest_rel
from sklearn.metrics import f1_score, ndcg_score

from cacicd.evaluation import compare as C


def _tidy(values: dict) -> pd.DataFrame:
    """{(model, level, metric): [per-fold values]} -> tidy table."""
    rows = [(m, k, lv, mt, v) for (m, lv, mt), vs in values.items() for k, v in enumerate(vs)]
    return pd.DataFrame(rows, columns=list(C.TIDY))


def test_tidy_results_from_results_and_frames():
    m0 = pd.DataFrame({"level": ["all", "all"], "metric": ["ndcg", "re@50"], "value": [0.5, 3.0]})
    m2 = m0.assign(value=[0.6, 2.0])
    res = {"a": [SimpleNamespace(fold=0, test_metrics=m0, dev_metrics=m0), SimpleNamespace(fold=2, test_metrics=m2)],
           "b": [m0, m2]}
    t = C.tidy_results(res)
    assert list(t.columns) == list(C.TIDY)
    assert sorted(t[t.model == "a"].fold.unique()) == [0, 2]
    assert sorted(t[t.model == "b"].fold.unique()) == [0, 1]  # frames: position
    assert t[(t.model == "a") & (t.fold == 2) & (t.metric == "ndcg")].value.item() == 0.6
    with pytest.raises(ValueError, match="duplicated"):
        C.tidy_results({"a": [SimpleNamespace(fold=0, test_metrics=m0)] * 2})
    with pytest.raises(ValueError, match="model 'x' fold 0 lack column"):
        C.tidy_results({"x": [m0.drop(columns="value")]})
    with pytest.raises(ValueError, match="split"):
        C.tidy_results(res, split="train")


def test_evaluate_folds_matches_sklearn_on_a_masked_group():
    rng = np.random.default_rng(1)
    ys = [(rng.random((30, 8)) < 0.3).astype(np.uint8) for _ in range(2)]
    ss = [rng.random((30, 8)) for _ in range(2)]
    group = {"g": np.arange(8) < 6}
    mask = np.array([1, 1, 0, 1, 1, 1, 1, 1], bool)
    t = C.evaluate_folds([sp.csr_matrix(y) for y in ys], ss, group, model="m", metrics=["ndcg", "f1_micro",
                                                                                        "recall@2"],
                         label_mask=mask, folds=[3, 7])
    cols = [0, 1, 3, 4, 5]
    for k, y, s in zip([3, 7], ys, ss):
        got = t[t.fold == k].set_index("metric")["value"]
        yy, sc = y[:, cols], s[:, cols]
        assert got["ndcg"] == pytest.approx(ndcg_score(yy, sc))  # continuous scores: no ties
        assert got["f1_micro"] == pytest.approx(f1_score(yy, (sc > 0.5).astype(int), average="micro"))
        top2 = np.argsort(-sc, axis=1)[:, :2]
        has = yy.sum(1) > 0
        rec = np.take_along_axis(yy, top2, 1).sum(1)[has] / yy.sum(1)[has]
        assert got["recall@2"] == pytest.approx(rec.mean())
    with pytest.raises(ValueError, match="2 fold ids for 1"):
        C.evaluate_folds(ys[:1], ss[:1], group, model="m", metrics=["ndcg"], folds=[0, 1])


def test_summarise_and_relative_hand_worked():
    t = _tidy({("ref", "all", "re@25"): [10, 12, 14], ("m", "all", "re@25"): [9, 9, 9],
               ("ref", "all", "ndcg"): [0.5, 0.5, 0.5], ("m", "all", "ndcg"): [0.6, 0.6, 0.9],
               ("m", "billing", "ndcg"): [0.1, 0.1, 0.1]})
    s = C.summarise(t).set_index(["model", "level", "metric"])
    assert s.loc[("ref", "all", "re@25"), "mean"] == 12
    assert s.loc[("ref", "all", "re@25"), "sem"] == pytest.approx(np.std([10, 12, 14], ddof=1) / np.sqrt(3))
    r = C.relative(t, "ref", metrics=["re@25", "ndcg"], levels=["all"]).set_index(["model", "metric"])
    assert r.loc[("m", "re@25"), "rel"] == pytest.approx(25.0)  # 9 errors instead of 12: 25 % better
    assert r.loc[("m", "re@25"), "rel_sem"] == pytest.approx(0.0)
    assert r.loc[("m", "ndcg"), "rel"] == pytest.approx(40.0)
    assert r.loc[("m", "ndcg"), "rel_sem"] == pytest.approx(np.std([0.6, 0.6, 0.9], ddof=1) / np.sqrt(3) * 200)
    assert r.loc[("ref", "re@25"), "rel"] == 0 and not np.signbit(r.loc[("ref", "re@25"), "rel"])
    assert r.loc[("m", "re@25"), "ref_mean"] == 12
    assert "billing" not in set(r["level"])
    with pytest.raises(ValueError, match="reference model 'nope'"):
        C.relative(t, "nope")


def test_recall_curves_parse_and_sort_k():
    t = _tidy({("m", "billing", "recall@10"): [0.5, 0.7], ("m", "billing", "recall@2"): [0.1, 0.3],
               ("m", "billing", "ndcg"): [0.4, 0.4]})
    c = C.recall_curves(t)
    assert c["k"].tolist() == [2, 10]
    assert c["mean"].tolist() == pytest.approx([0.2, 0.6])
    assert c["sem"].tolist() == pytest.approx([0.1, 0.1])
    with pytest.raises(ValueError, match="no recall@K"):
        C.recall_curves(t[t.metric == "ndcg"])


def test_paired_differences_match_scipy():
    a, b = [0.61, 0.64, 0.60], [0.58, 0.60, 0.59]
    t = _tidy({("a", "billing", "recall@30"): a, ("b", "billing", "recall@30"): b})
    d = C.paired_differences(t, "a", "b").iloc[0]
    ref = ttest_rel(a, b)
    assert d["diff"] == pytest.approx(np.mean(np.subtract(a, b)))
    assert d["diff_sem"] == pytest.approx(np.std(np.subtract(a, b), ddof=1) / np.sqrt(3))
    assert (d.statistic, d.pvalue) == pytest.approx((ref.statistic, ref.pvalue))
    assert d.n == 3 and "recall@30" in d.compared
    with pytest.raises(ValueError, match="model 'c'"):
        C.paired_differences(t, "a", "c")


def test_spearman_matrix_matches_scipy_and_best_correlated():
    rng = np.random.default_rng(3)
    n_models, n_folds = 4, 3
    re50 = rng.random(n_models * n_folds) * 10
    ndcg = -re50 + rng.normal(0, 0.5, re50.size)  # strongly (negatively) related
    lrap = rng.random(re50.size)  # unrelated
    ece = -re50 + rng.normal(0, 0.1, re50.size)  # lower-is-better metric in the wrong direction: |rho| high, bad
    rows = []
    for i in range(re50.size):
        m, k = f"m{i // n_folds}", i % n_folds
        rows += [(m, k, "all", "re@50", re50[i]), (m, k, "all", "ndcg", ndcg[i]), (m, k, "all", "lrap", lrap[i]),
                 (m, k, "all", "ece", ece[i]),
                 (m, k, "billing", "ndcg", 0.0)]
    t = pd.DataFrame(rows, columns=list(C.TIDY))
    s = C.spearman_matrix(t, level="all", r_values=[50, 75])
    assert set(s["target"]) == {"re@50"}  # re@75 absent: skipped
    assert set(s["metric"]) == {"ndcg", "lrap", "ece"}
    got = s.set_index("metric")
    for m, x in (("ndcg", ndcg), ("lrap", lrap)):
        ref = spearmanr(x, re50)
        assert (got.loc[m, "rho"], got.loc[m, "pvalue"]) == pytest.approx((ref.statistic, ref.pvalue))
        assert got.loc[m, "n"] == 12
    best = C.best_correlated(s)
    assert got.loc["ece", "rho"] < got.loc["ndcg", "rho"] < -0.8  # ece has the largest |rho|, of the wrong sign
    assert best.iloc[0]["metric"] == "ndcg" and best.iloc[0]["agreement"] == pytest.approx(-got.loc["ndcg", "rho"])
    assert C.best_correlated(s, exclude=["ndcg"]).iloc[0]["metric"] == "lrap"
    ag = C.spearman_agreement(s).set_index("metric")["agreement"]
    assert ag["ece"] == pytest.approx(got.loc["ece", "rho"]) and ag["lrap"] == pytest.approx(-got.loc["lrap", "rho"])
    with pytest.raises(ValueError, match="no row at level"):
        C.spearman_matrix(t, level="chapter")


def test_re_of():
    assert C.re_of("re@33") == 33 and np.isnan(C.re_of("ndcg"))


def test_identical_groups_finds_models_with_equal_scores_on_every_fold():
    rng = np.random.default_rng(0)
    a = [rng.random((4, 3)).astype(np.float32) for _ in range(2)]
    b = [x.copy() for x in a]
    c = [a[0].copy(), a[1] + 1e-6]  # equal on fold 0 only: a different model
    runs = {name: [SimpleNamespace(fold=k, scores=s) for k, s in enumerate(folds)]
            for name, folds in {"a": a, "b": b, "c": c, "d": [x.copy() for x in a]}.items()}
    assert C.identical_groups(runs) == [["a", "b", "d"]]
    assert C.identical_groups({"a": runs["a"], "c": runs["c"]}) == []
    # fold order does not matter
    assert C.identical_groups({"a": runs["a"], "r": runs["b"][::-1]}) == [["a", "r"]]


def test_recall_differences_sorted_by_level_and_k():
    t = _tidy({("a", "billing", "recall@10"): [0.5, 0.6], ("b", "billing", "recall@10"): [0.4, 0.4],
               ("a", "billing", "recall@2"): [0.2, 0.3], ("b", "billing", "recall@2"): [0.2, 0.2],
               ("a", "all", "recall@2"): [0.1, 0.1], ("b", "all", "recall@2"): [0.0, 0.0],
               ("a", "all", "recall@10"): [0.3, 0.3], ("b", "all", "recall@10"): [0.3, 0.3]})
    d = C.recall_differences(t, "a", "b")
    assert list(zip(d["level"], d["k"])) == [("all", 2), ("all", 10), ("billing", 2), ("billing", 10)]
    assert d.loc[3, "diff"] == pytest.approx(0.15) and d.loc[0, "diff"] == pytest.approx(0.1)


def test_mean_agreement_ranks_metrics():
    sp_tab = pd.DataFrame({"metric": ["ndcg", "ndcg", "ece", "ece", "coverage", "coverage"],
                           "target": ["re@10", "re@50"] * 3, "rho": [-0.9, -0.7, 0.2, 0.4, 0.99, 0.99]})
    m = C.mean_agreement(sp_tab, exclude=("coverage",))
    assert list(m.index) == ["ndcg", "ece"] and m["ndcg"] == pytest.approx(0.8) and m["ece"] == pytest.approx(0.3)
