import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import rankdata
from scipy.stats import t as t_dist
from sklearn.metrics import coverage_error, ndcg_score

from cacicd import icd9
from cacicd.paper import subgroups as S
from cacicd.models.labels import LabelContext
from cacicd.models.outputs import make_output_rule


def _fake(n=60, L=12, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, L)) < 0.3).astype(np.uint8)
    y[np.arange(n), rng.integers(0, L, n)] = 1  # every row has a positive
    s = rng.random((n, L))  # continuous: no ties
    return y, s


def test_metrics_by_stay_type_matches_sklearn_on_each_subset():
    y, s = _fake()
    st = np.array(["newborn", "surgical", "medical", "unknown"] * 15)
    groups = {"all": np.ones(12, bool), "first": np.arange(12) < 5}
    df = S.metrics_by_stay_type(sp.csr_matrix(y), s, st, groups, metrics=["ndcg", "re@100"])
    assert set(df.stay_type) == {"newborn", "surgical", "medical"}  # unknown is not reported
    for typ in ("newborn", "surgical", "medical"):
        rows = st == typ
        got = df[(df.stay_type == typ) & (df.level == "all")].set_index("metric")["value"]
        assert got["ndcg"] == pytest.approx(ndcg_score(y[rows], s[rows]))
        assert got["re@100"] == pytest.approx(coverage_error(y[rows], s[rows]) - y[rows].sum(1).mean())
        assert (df[df.stay_type == typ].n_stays == rows.sum()).all()
        sub = df[(df.stay_type == typ) & (df.level == "first") & (df.metric == "ndcg")].value.item()
        assert sub == pytest.approx(ndcg_score(y[rows][:, :5], s[rows][:, :5]))


def test_metrics_by_stay_type_skips_absent_types_and_rejects_bad_input():
    y, s = _fake(n=8)
    st = np.array(["medical"] * 8)
    df = S.metrics_by_stay_type(y, s, st, {"all": np.ones(12, bool)}, metrics=["ndcg"])
    assert df.stay_type.unique().tolist() == ["medical"]
    none = S.metrics_by_stay_type(y, s, np.array(["unknown"] * 8), {"all": np.ones(12, bool)}, metrics=["ndcg"])
    assert none.empty and list(none.columns) == ["stay_type", "level", "metric", "value", "n_stays"]
    with pytest.raises(ValueError, match="martian"):
        S.metrics_by_stay_type(y, s, np.array(["martian"] * 8), {"all": np.ones(12, bool)})
    with pytest.raises(ValueError, match="7 entries"):
        S.metrics_by_stay_type(y, s, st[:7], {"all": np.ones(12, bool)})


def test_table_s9_takes_each_metric_from_its_model():
    from types import SimpleNamespace

    from sklearn.metrics import roc_auc_score

    from cacicd.evaluation import metrics as M

    y, s = _fake(n=80)
    st = np.array(["newborn", "surgical", "medical", "unknown"] * 20)
    rng = np.random.default_rng(1)
    runs = {exp: [SimpleNamespace(fold=k, test_idx=np.arange(k * 40, k * 40 + 40), scores=rng.random((40, 12)))
                  for k in range(2)] for exp in S.TABLE_S9_MODELS}
    groups = {"all": np.ones(12, bool)}
    df = S.table_s9_folds(runs, sp.csr_matrix(y), st, groups)
    assert set(df.experiment) == set(S.TABLE_S9_MODELS)
    assert set(df[df.experiment == "naive_auroc_micro"].metric) == {"auroc_micro"}  # only its own metric
    r = runs["naive_auroc_micro"][1]
    rows = st[r.test_idx] == "surgical"
    got = df[(df.experiment == "naive_auroc_micro") & (df.fold == 1) & (df.stay_type == "surgical")].value.item()
    assert got == pytest.approx(roc_auc_score(y[r.test_idx][rows].ravel(), r.scores[rows].ravel()))
    r = runs["naive_ndcg"][0]
    rows = st[r.test_idx] == "medical"
    v = df[(df.experiment == "naive_ndcg") & (df.fold == 0) & (df.stay_type == "medical")].set_index("metric").value
    assert v["re_authors@50"] == pytest.approx(M.re_at_r_authors(y[r.test_idx][rows], r.scores[rows], 50,
                                                                  float16=False))  # full precision, as theirs
    assert v["re@50"] == pytest.approx(M.re_at_r(y[r.test_idx][rows], r.scores[rows], 50))
    with pytest.raises(ValueError, match="needs the experiment"):
        S.table_s9_folds({"naive_ndcg": runs["naive_ndcg"]}, y, st, groups)


def test_stay_type_counts_and_presence():
    st = np.array(["newborn", "medical", "medical", "unknown"])
    c = S.stay_type_counts(st)
    assert c.to_dict() == {"newborn": 1, "surgical": 0, "medical": 2, "unknown": 1}
    assert S.has_stay_types(st)
    assert not S.has_stay_types(np.array(["unknown"] * 3))


def test_median_rank_vs_frequency_by_hand():
    # 3 stays, 4 labels; label 3 has no positive and is left out
    y = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 0, 0]])
    s = np.array([[0.9, 0.1, 0.5, 0.2], [0.3, 0.8, 0.8, 0.1], [0.2, 0.4, 0.9, 0.6]])
    df = S.median_rank_vs_frequency(sp.csr_matrix(y), s)
    ranks = np.vstack([rankdata(-r, method="max") for r in s])  # ties share the worst rank
    exp = {j: np.median(ranks[y[:, j] == 1, j]) for j in range(3)}
    assert df.label.tolist() == [0, 1, 2]
    assert df.n_pos.tolist() == [2, 2, 1]
    assert df.frequency.tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    assert df.median_rank.tolist() == pytest.approx([exp[0], exp[1], exp[2]])
    # by hand: label 0 ranks 1 and 3; label 1 ranks 2 (tied with label 2 at 0.8: worst) and 3; label 2 rank 2
    assert df.median_rank.tolist() == [2.0, 2.5, 2.0]


def test_pool_folds_means_per_label():
    a = pd.DataFrame({"label": [0, 1], "n_pos": [2, 4], "frequency": [0.2, 0.4], "median_rank": [3.0, 1.0]})
    b = pd.DataFrame({"label": [1, 2], "n_pos": [6, 1], "frequency": [0.6, 0.1], "median_rank": [2.0, 9.0]})
    out = S.pool_folds([a, b]).set_index("label")
    assert out.loc[1, "median_rank"] == 1.5 and out.loc[1, "frequency"] == pytest.approx(0.5)
    assert out.loc[1, "n_folds"] == 2 and out.loc[0, "n_folds"] == 1 and out.loc[2, "median_rank"] == 9.0
    with pytest.raises(ValueError):
        S.pool_folds([])


def test_lowess_recovers_a_power_law_exactly_on_log_scale():
    x = np.logspace(-3, 0, 200)
    y = 5.0 * x ** -0.7  # a straight line in log-log: LOWESS (local linear) reproduces it
    fit = S.lowess_curve(x, y, frac=1 / 3)
    assert np.all(np.diff(fit.x) >= 0)
    assert fit.y_fit.to_numpy() == pytest.approx(5.0 * fit.x.to_numpy() ** -0.7, rel=1e-6)
    lin = S.lowess_curve(x, 2 * x + 1, log=False, n_points=20)
    assert len(lin) == 20 and lin.y_fit.to_numpy() == pytest.approx(2 * lin.x.to_numpy() + 1)


def test_lowess_drops_bad_points_and_handles_too_few():
    x = np.array([0.0, -1.0, np.nan, 0.1, 0.2])
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert S.lowess_curve(x, y).empty  # only 2 positive finite points remain
    with pytest.raises(ValueError, match="frac"):
        S.lowess_curve(np.ones(5), np.ones(5), frac=0)


def _tidy(values):
    rows = []
    for (model, level, metric), vals in values.items():
        rows += [{"model": model, "fold": k, "level": level, "metric": metric, "value": v} for k, v in vals.items()]
    return pd.DataFrame(rows)


def test_paired_ttests_against_hand_formula():
    a = {0: 10.0, 1: 12.0, 2: 11.0}
    b = {0: 11.0, 1: 12.5, 2: 13.0}
    tidy = _tidy({("naive", "billing", "re@90"): a, ("per", "billing", "re@90"): b,
                  ("naive", "chapter", "re@90"): {0: 1.0, 1: 1.0, 2: 1.0},
                  ("per", "chapter", "re@90"): {0: 2.0, 1: 2.0, 2: 2.0}})
    out = S.paired_ttests(tidy, "naive", "per", ["re@90"], ["billing", "chapter"])
    d = np.array([10 - 11, 12 - 12.5, 11 - 13])
    t = d.mean() / (d.std(ddof=1) / np.sqrt(3))
    p = 2 * t_dist.sf(abs(t), df=2)
    row = out[out.level == "billing"].iloc[0]
    assert row.t == pytest.approx(t) and row.p == pytest.approx(p)
    assert row.mean_a == pytest.approx(11.0) and row.mean_b == pytest.approx(12.166666, rel=1e-5)
    assert row.mean_diff == pytest.approx(d.mean()) and row.n_folds == 3 and row.R == 90
    const = out[out.level == "chapter"].iloc[0]  # equal differences: no variance, no test
    assert np.isnan(const.t) and np.isnan(const.p) and const.mean_diff == -1.0
    assert 0.05 < p < 0.2  # NaN p (chapter) is never significant
    assert S.significant(out, alpha=0.2).level.tolist() == ["billing"] and S.significant(out).empty
    noise = out.assign(mean_diff=1e-9, p=0.01)  # a "significant" difference of float noise
    assert S.significant(noise).empty and len(S.significant(noise, min_rel_diff=0)) == 2


def test_paired_ttests_pairs_by_fold_and_checks_names():
    tidy = _tidy({("a", "all", "ndcg"): {0: 0.5, 1: 0.6, 2: 0.7, 3: 0.9},
                  ("b", "all", "ndcg"): {1: 0.55, 2: 0.6, 3: 0.7}})
    row = S.paired_ttests(tidy, "a", "b", ["ndcg"], ["all"]).iloc[0]
    assert row.n_folds == 3 and np.isnan(row.R)
    assert row.mean_a == pytest.approx((0.6 + 0.7 + 0.9) / 3)
    from scipy.stats import ttest_rel
    assert row.p == pytest.approx(ttest_rel([0.6, 0.7, 0.9], [0.55, 0.6, 0.7]).pvalue)
    with pytest.raises(ValueError, match="'zzz'"):
        S.paired_ttests(tidy, "a", "zzz", ["ndcg"], ["all"])
    with pytest.raises(ValueError, match="column"):
        S.paired_ttests(tidy.drop(columns="fold"), "a", "b", ["ndcg"], ["all"])


CODES = ["001-139", "001-009", "001", "0010", "0011", "002", "0020"]


def test_hierarchy_violations_against_brute_force_and_rollup():
    rng = np.random.default_rng(3)
    s = rng.random((37, len(CODES)))
    par, chi = icd9.hierarchy_edges(CODES, nearest=True)
    brute = sum(s[i, c] > s[i, p] for i in range(s.shape[0]) for p, c in zip(par, chi))
    out = S.hierarchy_violations(s, par, chi, chunk_rows=5)
    assert out["n_violations"] == brute and out["n_pairs"] == 37 * len(par)
    assert out["fraction"] == pytest.approx(brute / (37 * len(par)))
    assert out["max_gap"] == pytest.approx(max(s[i, c] - s[i, p] for i in range(37) for p, c in zip(par, chi)))
    ctx = LabelContext(CODES, icd9.levels_of(CODES), np.zeros(len(CODES), dtype=np.int64), 10)
    for rule in ("rollup", "rolldown"):  # consistent by construction
        assert S.hierarchy_violations(make_output_rule(rule, ctx)(s), par, chi)["n_violations"] == 0
    with pytest.raises(ValueError, match="out of range"):
        S.hierarchy_violations(s[:, :3], par, chi)


def test_runtime_table_mean_sem_and_ratio():
    t = pd.DataFrame({"model": ["mt"] * 3 + ["pl"] * 3, "fold": [0, 1, 2] * 2, "timing": "train_s",
                      "seconds": [10.0, 12.0, 14.0, 40.0, 44.0, 48.0]})
    out = S.runtime_table(t, "mt").set_index("model")
    assert out.loc["mt", "mean_s"] == 12.0 and out.loc["mt", "sem_s"] == pytest.approx(2 / np.sqrt(3))
    assert out.loc["pl", "ratio_to_reference"] == pytest.approx(44 / 12)
    with pytest.raises(ValueError, match="reference"):
        S.runtime_table(t, "nope")


def test_relative_bar_chart_draws_one_bar_per_model_and_level():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tidy = _tidy({(m, lv, "ndcg"): {0: v, 1: v * 1.01, 2: v * 0.99}
                  for m, v in (("ref", 0.5), ("a", 0.48), ("b", 0.52)) for lv in ("chapter", "billing")})
    from cacicd.evaluation import stats

    rel = stats.relative_to(stats.fold_summary(tidy), "ref")
    fig, ax = plt.subplots()
    S.relative_bar_chart(ax, rel, ["a", "b"], ["chapter", "billing"], "ref", labels={"ref": "naive"})
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == sorted([round(100 * (0.48 / 0.5 - 1), 6)] * 2 + [round(100 * (0.52 / 0.5 - 1), 6)] * 2)
    assert "naive: 0.500" in ax.get_xticklabels()[0].get_text()
    plt.close(fig)


def test_sum_of_models_adds_parts_per_fold_and_timing():
    t = pd.DataFrame({"model": ["a", "a", "b", "b", "a"], "fold": [0, 1, 0, 1, 0],
                      "timing": ["epoch_s", "epoch_s", "epoch_s", "epoch_s", "train_s"],
                      "seconds": [1.0, 2.0, 10.0, 20.0, 5.0]})
    out = S.sum_of_models(t, ["a", "b"], "ab")
    assert out.to_dict("records") == [{"model": "ab", "fold": 0, "timing": "epoch_s", "seconds": 11.0},
                                      {"model": "ab", "fold": 1, "timing": "epoch_s", "seconds": 22.0}]
    with pytest.raises(ValueError, match="'c'"):
        S.sum_of_models(t, ["a", "c"], "ac")


def test_hierarchy_consistency_summarises_violations_per_model():
    from types import SimpleNamespace

    parent, child = np.array([0, 0]), np.array([1, 2])
    good = np.array([[0.9, 0.5, 0.1], [0.8, 0.2, 0.3]])  # no parent below its child
    bad = np.array([[0.1, 0.5, 0.1], [0.8, 0.9, 0.3]])  # 2 of 4 (stay, edge) pairs violated
    res = {"a": [SimpleNamespace(fold=0, scores=good), SimpleNamespace(fold=1, scores=good)],
           "b": [SimpleNamespace(fold=0, scores=bad), SimpleNamespace(fold=1, scores=good)]}
    t = S.hierarchy_consistency(res, parent, child, {"a": "A", "b": "B"}).set_index("model")
    assert list(t.columns) == ["method", "violation_fraction_mean", "violation_fraction_sem", "n_folds",
                               "max_child_minus_parent", "n_edges"]
    assert t.loc["a", "violation_fraction_mean"] == 0 and t.loc["b", "violation_fraction_mean"] == pytest.approx(0.25)
    assert t.loc["b", "method"] == "B" and t.loc["b", "n_edges"] == 2
    assert t.loc["b", "max_child_minus_parent"] == pytest.approx(0.4)


def test_frequency_bin_summary_counts_codes_per_bin():
    t = pd.DataFrame({"label": [0, 1, 2, 3], "frequency": [0.0005, 0.005, 0.006, 0.5], "median_rank": [50, 5, 20, 1]})
    s = S.frequency_bin_summary(t).set_index("freq_bin")
    assert list(s.columns) == ["n_codes", "median_of_median_rank", "codes_in_top10"]
    assert s["n_codes"].tolist() == [1, 2, 1] and s["codes_in_top10"].tolist() == [0, 1, 1]
    assert s["median_of_median_rank"].tolist() == [50, 12.5, 1]


def test_timings_table_leaves_out_absent_timings():
    from types import SimpleNamespace

    res = {"m": [SimpleNamespace(fold=0, timings={"train_s": 2, "epoch_s": 0.5}),
                 SimpleNamespace(fold=1, timings={"train_s": 3})]}
    t = S.timings_table(res)
    assert list(t.columns) == ["model", "fold", "timing", "seconds"]
    assert list(zip(t.fold, t.timing, t.seconds)) == [(0, "train_s", 2.0), (0, "epoch_s", 0.5), (1, "train_s", 3.0)]


def _s9_folds():
    rows = []
    for fold, (nb, md, sg) in enumerate([(0.9, 0.7, 0.5), (0.8, 0.6, 0.5), (0.85, 0.65, 0.45)]):
        for typ, v, n in (("newborn", nb, 10 + fold), ("medical", md, 20), ("surgical", sg, 30)):
            for level in ("billing", "all"):
                rows.append({"experiment": "naive_ndcg", "fold": fold, "stay_type": typ, "level": level,
                             "metric": "ndcg", "value": v, "n_stays": n})
    return pd.DataFrame(rows)


def test_table_s9_summary_and_order():
    t = S.table_s9(_s9_folds())
    assert list(t.columns) == ["experiment", "stay_type", "level", "metric", "mean", "sem", "n", "mean_test_stays"]
    assert list(t.level[:3]) == ["all"] * 3 and list(t.level[3:]) == ["billing"] * 3  # levels in Table S9's order
    nb = t[(t.stay_type == "newborn") & (t.level == "all")].iloc[0]
    assert nb["mean"] == pytest.approx(0.85) and nb["n"] == 3 and nb["mean_test_stays"] == pytest.approx(11)


def test_stay_type_ttests_pairs_present_types():
    f = _s9_folds()
    tt = S.stay_type_ttests(f[f.stay_type != "surgical"], [("newborn", "surgical"), ("newborn", "medical")])
    assert list(zip(tt.model_a, tt.model_b)) == [("newborn", "medical")]
    assert tt.mean_diff.item() == pytest.approx(0.2) and tt.level.item() == "all"


def test_paired_ttests_vs_concatenates_in_order():
    f = _s9_folds().rename(columns={"stay_type": "model"}).drop(columns=["experiment", "n_stays"])
    t = S.paired_ttests_vs(f, ["newborn", "surgical"], "medical", ["ndcg"], ["all", "billing"])
    assert list(zip(t.model_a, t.level)) == [("newborn", "all"), ("newborn", "billing"), ("surgical", "all"),
                                             ("surgical", "billing")]
    assert t.equals(pd.concat([S.paired_ttests(f, m, "medical", ["ndcg"], ["all", "billing"])
                               for m in ("newborn", "surgical")], ignore_index=True))
