"""cacicd.evaluation.metrics against scikit-learn, numpy and hand-worked values (ties, empty rows and labels)."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import sklearn.metrics as skm
from scipy.stats import rankdata

from cacicd.evaluation import metrics as M


def _case(name: str):
    """(y_true int (n, L), y_score) for a named case."""
    rng = np.random.default_rng(CASES.index(name))
    n, L = 40, 17
    y = (rng.random((n, L)) < 0.2).astype(int)
    y[:, 5] = 1  # a label with a single negative (row 0)
    y[:, 2] = 0  # a label without positive
    y[1] = 1  # a sample with only positives but label 2
    y[1, 2] = 0
    y[0] = 0  # a sample without positive
    s = rng.random((n, L))
    if name == "ties":
        s = np.round(s, 1)
    elif name == "all_equal":
        s = np.full((n, L), 0.25)
    elif name == "float32":
        s = s.astype(np.float32)
    elif name == "binary_scores":
        s = (s > 0.6).astype(float)
    return y, s


CASES = ["random", "ties", "all_equal", "float32", "binary_scores"]


def _strict_pessimistic(y, s):
    """Scores without ties that order each row as the pessimistic convention does."""
    out = np.empty(s.shape)
    for i in range(len(s)):
        order = np.lexsort((-y[i], s[i]))  # ascending score; among ties positives first, i.e. ranked last
        out[i, order] = np.arange(s.shape[1])
    return out


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("sparse", [False, True])
def test_coverage_and_lrap_match_sklearn(case, sparse):
    y, s = _case(case)
    yt = sp.csr_matrix(y) if sparse else y
    assert M.coverage(yt, s) == pytest.approx(skm.coverage_error(y, s), abs=1e-12)
    assert M.lrap(yt, s) == pytest.approx(skm.label_ranking_average_precision_score(y, s), abs=1e-12)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("k", [None, 1, 5, 15])
def test_ndcg_matches_sklearn(case, k):
    y, s = _case(case)
    # sklearn averages the gain over tie groups: our ties="average"
    assert M.ndcg(y, s, k=k, ties="average") == pytest.approx(skm.ndcg_score(y, s, k=k), abs=1e-12)
    # pessimistic ties = sklearn on scores whose ties are broken positives-last
    sp_ = _strict_pessimistic(y, s)
    assert M.ndcg(y, s, k=k) == pytest.approx(skm.ndcg_score(y, sp_, k=k), abs=1e-12)
    assert M.ndcg_per_sample(y, s, k=k)[0] == 0.0  # no positive: 0, included in the mean


def _re_reference(y, s, R):
    """RE@R by the spec's formula, with pessimistic ranks from the strictly ordered scores."""
    strict = _strict_pessimistic(y, s)
    out = []
    for i in range(len(y)):
        pos = np.flatnonzero(y[i])
        if not len(pos):
            out.append(np.nan)
            continue
        ranks = rankdata(-strict[i])[pos]
        out.append(np.percentile(ranks, R) - (1 + (len(pos) - 1) * R / 100))
    return np.array(out)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("R", [0, 10, 25, 33, 50, 66, 75, 90, 100])
def test_re_at_r_matches_percentile_formula(case, R):
    y, s = _case(case)
    ref = _re_reference(y, s, R)
    got = M.re_at_r_per_sample(y, s, R)
    np.testing.assert_allclose(got, ref, atol=1e-9)
    assert M.re_at_r(y, s, R) == pytest.approx(np.nanmean(ref), abs=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_re100_is_coverage_minus_positives_per_sample(case):
    y, s = _case(case)
    has = y.sum(1) > 0
    cov = np.array([skm.coverage_error(y[[i]], s[[i]]) for i in np.flatnonzero(has)])
    np.testing.assert_allclose(M.re_at_r_per_sample(y, s, 100)[has], cov - y.sum(1)[has], atol=1e-12)
    np.testing.assert_allclose(M.coverage_per_sample(y, s)[has], cov)
    assert np.isnan(M.re_at_r_per_sample(y, s, 100)[~has]).all()
    # the sort-free RE@100 path and the general path agree
    np.testing.assert_allclose(M.re_at_r_per_sample(y, s, [50, 100])[:, 1], M.re_at_r_per_sample(y, s, 100))


def test_re_at_r_hand_worked_and_sequence():
    # scores rank the labels a b c d e; positives at ranks 2 and 5 -> negatives above: 1 and 3
    y = np.array([[0, 1, 0, 0, 1]])
    s = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]])
    np.testing.assert_allclose(M.re_at_r(y, s, [0, 50, 100]), [1.0, 2.0, 3.0])
    assert M.re_at_r(y, s, 25) == pytest.approx(1.5)
    # a positive tied with a negative is ranked after it; tied positives take consecutive ranks
    y = np.array([[1, 0, 1, 1]])
    s = np.array([[0.5, 0.5, 0.9, 0.9]])
    assert M.re_at_r(y, s, 0) == 0.0  # the two top positives have no negative above
    assert M.re_at_r(y, s, 100) == 1.0
    assert M.coverage(y, s) == 4.0
    np.testing.assert_allclose(M.recall_at_k(y, s, [1, 2, 3, 4]), [1 / 3, 2 / 3, 2 / 3, 1.0])


@pytest.mark.parametrize("case", CASES)
def test_recall_at_k_matches_brute_force(case):
    y, s = _case(case)
    strict = _strict_pessimistic(y, s)
    K = [1, 3, 10, 17, 30]
    ref = np.full((len(y), len(K)), np.nan)
    for i in range(len(y)):
        if y[i].sum():
            top = np.argsort(-strict[i])
            ref[i] = [y[i, top[:k]].sum() / y[i].sum() for k in K]
    np.testing.assert_allclose(M.recall_at_k_per_sample(y, s, K), ref, atol=1e-12)
    np.testing.assert_allclose(M.recall_at_k(y, s, K), np.nanmean(ref, axis=0), atol=1e-12)
    assert M.recall_at_k(y, s, 3) == pytest.approx(np.nanmean(ref[:, 1]))


def _sk_auprc(y, s):
    p, r, _ = skm.precision_recall_curve(y, s)
    return skm.auc(r, p)


@pytest.mark.parametrize("case", CASES)
def test_auprc_auroc_match_sklearn(case):
    y, s = _case(case)
    pos = np.flatnonzero(y.sum(0) > 0)
    both = np.flatnonzero((y.sum(0) > 0) & (y.sum(0) < len(y)))
    assert M.auprc(y, s, "micro") == pytest.approx(_sk_auprc(y.ravel(), s.ravel()), abs=1e-12)
    assert M.auprc(y, s, "macro") == pytest.approx(np.mean([_sk_auprc(y[:, j], s[:, j]) for j in pos]), abs=1e-12)
    assert M.auroc(y, s, "micro") == pytest.approx(skm.roc_auc_score(y.ravel(), s.ravel()), abs=1e-12)
    assert M.auroc(y, s, "macro") == pytest.approx(np.mean([skm.roc_auc_score(y[:, j], s[:, j]) for j in both]),
                                                   abs=1e-12)
    assert np.isnan(M.auprc_per_label(y, s)[2]) and np.isnan(M.auroc_per_label(y, s)[2])
    # a label without negative has an AUPRC (1 here) but no AUROC
    y1, s1 = np.ones((4, 2), int), np.random.default_rng(0).random((4, 2))
    y1[:, 1] = [1, 0, 0, 1]
    np.testing.assert_allclose(M.auprc_per_label(y1, s1)[0], 1.0)
    assert np.isnan(M.auroc_per_label(y1, s1)[0]) and not np.isnan(M.auroc_per_label(y1, s1)[1])


def test_auprc_is_trapezoid_not_average_precision():
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1])
    # PR points (R, P): (0, 1) (.5, 1) (.5, .5) (1, 2/3) (1, .5): area .5 + .5 * (.5 + 2/3) / 2
    assert M.auprc(y[:, None], s[:, None], "macro") == pytest.approx(0.5 + 0.25 * (0.5 + 2 / 3))
    assert M.auprc(y[:, None], s[:, None]) != pytest.approx(skm.average_precision_score(y, s))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("thr", [0.5, 0.3])
@pytest.mark.parametrize("average", ["micro", "macro", "samples"])
def test_f1_precision_recall_match_sklearn(case, thr, average):
    y, s = _case(case)
    pred = (s > thr).astype(int)
    kw = dict(average=average, zero_division=0)
    yy, pp = y, pred
    if average == "macro":
        kw["labels"] = np.flatnonzero(y.sum(0) > 0)
    elif average == "samples":
        keep = y.sum(1) > 0
        yy, pp = y[keep], pred[keep]
    assert M.f1(y, s, thr, average) == pytest.approx(skm.f1_score(yy, pp, **kw), abs=1e-12)
    assert M.precision(y, s, thr, average) == pytest.approx(skm.precision_score(yy, pp, **kw), abs=1e-12)
    assert M.recall(y, s, thr, average) == pytest.approx(skm.recall_score(yy, pp, **kw), abs=1e-12)


def _calibration_reference(y, s, n_bins):
    p, t = s.ravel(), y.ravel()
    conf = np.maximum(p, 1 - p).astype(np.float64)  # in the scores' dtype, as cacicd
    p = p.astype(np.float64)
    correct = ((p > 0.5) == t).astype(float)
    order = np.lexsort((correct, conf))
    gaps, sizes = [], []
    for b in np.array_split(order, n_bins):
        if len(b):
            gaps.append(abs(correct[b].mean() - conf[b].mean()))
            sizes.append(len(b))
    gaps, sizes = np.array(gaps), np.array(sizes)
    return (gaps * sizes).sum() / len(p), gaps.max(), np.mean((p - t) ** 2)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("n_bins", [1, 7, 500, 2000])
def test_calibration_matches_reference(case, n_bins):
    y, s = _case(case)
    c = M.calibration(y, s, n_bins)
    ece, mce, brier = _calibration_reference(y, s, n_bins)
    assert (c.ece, c.mce, c.brier) == pytest.approx((ece, mce, brier), abs=1e-9)
    assert c.brier == pytest.approx(skm.brier_score_loss(y.ravel(), s.ravel().astype(float)), abs=1e-9)


def test_calibration_hand_worked():
    y = np.array([[1, 0, 0, 1]])
    s = np.array([[0.9, 0.2, 0.6, 0.4]])
    # conf .9 .8 .6 .6, correct 1 1 0 0; one bin: |0.5 - 0.725| ; two bins: {.6,.6}: gap .6, {.8,.9}: gap .15
    c1, c2 = M.calibration(y, s, 1), M.calibration(y, s, 2)
    assert c1.ece == pytest.approx(0.225) and c1.mce == pytest.approx(0.225)
    assert c2.ece == pytest.approx(0.375) and c2.mce == pytest.approx(0.6)
    assert c1.brier == pytest.approx((0.01 + 0.04 + 0.36 + 0.36) / 4)


@pytest.fixture(scope="module")
def mi_data():
    rng = np.random.default_rng(3)
    n, L = 400, 24
    y = (rng.random((n, L)) < rng.uniform(0.005, 0.4, L)).astype(int)
    y[:, 0] = 0
    y[:3, 1], y[3:, 1] = 1, 0
    y[:1, 2], y[1:, 2] = 1, 0  # one positive: sklearn drops it
    s = np.clip(0.3 * y + rng.normal(0.3, 0.2, (n, L)), 0, 1).astype(np.float32)
    s[:, 3] = np.round(s[:, 3], 1)  # heavy ties
    s[:, 4] = 0.25  # constant
    return y, s


def _sk_mi(y, s, random_state=0, exact=False):
    import inspect

    from sklearn.feature_selection import mutual_info_classif
    from sklearn.neighbors import NearestNeighbors
    skmi = inspect.getmodule(mutual_info_classif)  # the module whose NearestNeighbors the estimator calls
    orig = skmi.NearestNeighbors
    if exact:  # sklearn's brute-force kNN (classes <= 7) rounds distances by ~1e-16; the k-d tree does not
        skmi.NearestNeighbors = lambda **kw: NearestNeighbors(algorithm="kd_tree", **kw)
    try:
        return np.array([mutual_info_classif(s[:, [j]], y[:, j], n_neighbors=3, random_state=random_state)[0]
                         if 0 < y[:, j].sum() < len(y) else np.nan for j in range(y.shape[1])])
    finally:
        skmi.NearestNeighbors = orig


def test_mutual_info_equals_sklearn_estimator(mi_data):
    y, s = mi_data
    got = M.mutual_info_per_label(y, s, random_state=0, block=5)
    ref = _sk_mi(y, s, exact=True)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, atol=1e-10, equal_nan=True)
    assert np.isnan(got[0])
    # stock sklearn (brute force for tiny classes): within 0.01 nats
    assert np.nanmax(np.abs(got - _sk_mi(y, s))) < 0.01
    np.testing.assert_array_equal(got, M.mutual_info_per_label(sp.csr_matrix(y), s))  # deterministic


def test_entropy_reduction_normalises_and_clips(mi_data):
    y, s = mi_data
    q = np.clip(y.mean(0), 0.01, 0.99)
    er = M.entropy_reduction(y, s, q)
    mi = M.mutual_info_per_label(y, s)
    h = -(q * np.log(q) + (1 - q) * np.log(1 - q))
    np.testing.assert_allclose(er, np.minimum(mi / h, 1), equal_nan=True)
    assert np.nanmax(er) <= 1 and np.isnan(er[0])
    # a perfectly informative score recovers about H(q)
    yy = np.zeros((1000, 1), int)
    yy[:300] = 1
    ss = yy + np.random.default_rng(0).random((1000, 1)) * 0.1
    assert M.entropy_reduction(yy, ss, [0.3])[0] == pytest.approx(1.0, abs=0.02)
    with pytest.raises(ValueError, match="base_rate of label 1"):
        M.entropy_reduction(y, s, np.r_[q[:1], 0.0, q[2:]])


def test_mean_over_folds_skips_folds_without_both_classes():
    folds = [np.array([0.2, np.nan, np.nan]), np.array([0.4, 0.1, np.nan])]
    np.testing.assert_allclose(M.mean_over_folds(folds), [0.3, 0.1, np.nan])


def test_median_ranks_and_ratio():
    y = np.array([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
    s = np.array([[0.9, 0.5, 0.5], [0.1, 0.8, 0.3], [0.7, 0.7, 0.2], [0.3, 0.2, 0.1]])
    ranks = np.vstack([rankdata(-row, method="max") for row in s])
    pos, neg = M.median_ranks(sp.csr_matrix(y), s)
    for j in range(3):
        assert pos[j] == np.median(ranks[y[:, j] == 1, j])
        assert neg[j] == np.median(ranks[y[:, j] == 0, j])
    np.testing.assert_allclose(M.median_rank_ratio(y, s), (pos - neg) / neg)
    p2, n2 = M.median_ranks(np.c_[y, np.zeros(4, int)], np.c_[s, np.zeros(4)])
    assert np.isnan(p2[3]) and n2[3] == 4


@pytest.mark.parametrize("case", ["random", "ties"])
def test_evaluate_groups_equal_direct_calls(case):
    y, s = _case(case)
    lv = np.array(["chapter"] * 6 + ["3digit"] * 11)
    mask = np.ones(17, bool)
    mask[[3, 9]] = False
    names = ["ndcg", "ndcg@15", "re@25", "recall@3", "coverage", "lrap", "auprc_micro", "auprc_macro",
             "auroc_micro", "auroc_macro", "f1_micro", "f1_macro", "f1_samples", "precision_samples",
             "recall_macro", "ece", "mce", "brier"]
    df = M.evaluate(sp.csr_matrix(y), s, levels=lv, label_mask=mask, metrics=names)
    assert list(df.columns) == ["level", "metric", "value"]
    assert set(df.level) == {"chapter", "3digit", "all"} and len(df) == 3 * len(names)
    for g, cols in {"chapter": (lv == "chapter") & mask, "all": mask}.items():
        yt, st = y[:, cols], s[:, cols]
        want = {"ndcg": M.ndcg(yt, st), "ndcg@15": M.ndcg(yt, st, 15), "re@25": M.re_at_r(yt, st, 25),
                "recall@3": M.recall_at_k(yt, st, 3), "coverage": skm.coverage_error(yt, st),
                "lrap": skm.label_ranking_average_precision_score(yt, st),
                "auprc_micro": M.auprc(yt, st), "auprc_macro": M.auprc(yt, st, "macro"),
                "auroc_micro": M.auroc(yt, st), "auroc_macro": M.auroc(yt, st, "macro"),
                "f1_micro": M.f1(yt, st), "f1_macro": M.f1(yt, st, average="macro"),
                "f1_samples": M.f1(yt, st, average="samples"),
                "precision_samples": M.precision(yt, st, average="samples"),
                "recall_macro": M.recall(yt, st, average="macro"), **M.calibration(yt, st).as_dict()}
        got = df[df.level == g].set_index("metric").value
        for name in names:
            assert got[name] == pytest.approx(want[name], abs=1e-12, nan_ok=True), (g, name)


def test_evaluate_groups_dict_threshold_dict_and_empty_group():
    y, s = _case("random")
    groups = {"a": np.arange(17) < 8, "empty": np.zeros(17, bool), "all": np.ones(17, bool)}
    df = M.evaluate(y, s, groups, metrics=["f1_micro", "re@50"], threshold={"a": 0.9, "empty": 0.5, "all": 0.2})
    v = df.set_index(["level", "metric"]).value
    assert v["a", "f1_micro"] == pytest.approx(M.f1(y[:, :8], s[:, :8], 0.9))
    assert v["all", "f1_micro"] == pytest.approx(M.f1(y, s, 0.2))
    assert np.isnan(v["empty", "re@50"])


def test_default_metrics_are_all_computed():
    y, s = _case("random")
    df = M.evaluate(y, s)
    assert list(df.metric) == list(M.DEFAULT_METRICS) and df.value.notna().all()
    assert {"ndcg@15", "re@25", "recall@30", "auprc_macro", "f1_samples", "lrap"} <= set(M.DEFAULT_METRICS)
    assert M.lower_is_better("re@90") and M.lower_is_better("coverage") and not M.lower_is_better("recall@5")


@pytest.mark.parametrize("bad, match", [
    (dict(y=np.full((3, 4), 2)), "0/1: value 2 at row 0, label 0"),
    (dict(y=np.zeros((3, 5))), r"shape \(3, 5\)"),
    (dict(s=np.full((3, 4), np.nan)), "NaN/inf"),
    (dict(metrics=["ndcg@x"]), "unknown metric name 'ndcg@x'"),
    (dict(groups={"g": np.ones(3, bool)}), "mask of group 'g'"),
])
def test_bad_input_gets_clear_errors(bad, match):
    y = bad.get("y", np.eye(3, 4, dtype=int))
    s = bad.get("s", np.random.default_rng(0).random((3, 4)))
    with pytest.raises((ValueError, TypeError), match=match):
        M.evaluate(y, s, bad.get("groups"), metrics=bad.get("metrics", ["ndcg"]))


@pytest.mark.parametrize("order", ["C", "F"])
def test_inputs_are_not_modified(order):
    y, s = _case("random")
    s = np.array(s, order=order)
    s0, y0 = s.copy(), y.copy()
    M.evaluate(y, s)
    M.median_ranks(y, s), M.mutual_info_per_label(y, s)
    np.testing.assert_array_equal(s, s0)
    np.testing.assert_array_equal(y, y0)


def test_sparse_and_dense_y_give_the_same_table():
    y, s = _case("ties")
    a = M.evaluate(y, s, metrics=["ndcg", "re@90", "auprc_macro", "f1_samples"])
    b = M.evaluate(sp.csc_array(y), s, metrics=["ndcg", "re@90", "auprc_macro", "f1_samples"])
    pd.testing.assert_frame_equal(a, b)


# ---- RE@R as the published values were computed (keras_extra + TensorFlow Probability 0.17) ---------------

def _authors_value(x, n, L, q):
    """The library's arithmetic spelled out with Python floats (float64), for one row of n finite values."""
    eff_q = q * ((float(L) - float(L - n) - 1.0) / (float(L) - 1.0))
    exact = (float(L) - 1.0) * (eff_q / 100.0)
    upper = min(max(int(np.ceil(exact)), 0), L - 1)
    lower = max(upper - 1, 0)
    upper = min(lower + 1, L - 1)
    f = np.float32(float(upper) - exact)
    pad = list(np.float32(v) for v in x) + [np.float32(np.inf)] * (L - n)
    with np.errstate(invalid="ignore"):
        v = pad[upper] * (np.float32(1) - f) + pad[lower] * f
    return np.nan if not np.isfinite(v) else float(v)


def test_re_authors_leaves_out_single_positive_stays():
    # stay 0: one positive below two negatives (exact RE = 2 at every R); stay 1: positives at ranks 2 and 5
    y = np.array([[0, 0, 1, 0, 0], [0, 1, 0, 0, 1]])
    s = np.array([[0.9, 0.8, 0.7, 0.6, 0.5], [0.9, 0.8, 0.7, 0.6, 0.5]])
    per = M.re_at_r_authors_per_sample(y, s, [0, 25, 50, 100])
    assert np.isnan(per[0]).all()  # eff_q = 0 -> index 0: x[1] (padding, +inf) * 0 = NaN at every R
    np.testing.assert_allclose(per[1], [1.0, 1.5, 2.0, 3.0])  # negatives above: 1 and 3, interpolated
    np.testing.assert_allclose(M.re_at_r_authors(y, s, [0, 50, 100]), [1.0, 2.0, 3.0])  # stay 0 left out
    np.testing.assert_allclose(M.re_at_r(y, s, [0, 50, 100]), [1.5, 2.0, 2.5])  # exact: both stays
    np.testing.assert_allclose(M.re_left_out_share(y, [25, 100]), [0.5, 0.5])


def test_re_authors_ties_from_float16_rounding_follow_column_order():
    # 0.30001 and 0.30002 differ in float32 but are both 0.30004883 in float16: a tie, which TensorFlow's
    # descending argsort breaks by column order (lower column first), whatever the labels
    a, b = np.float32(0.30001), np.float32(0.30002)
    assert a != b and np.float16(a) == np.float16(b)
    y = np.array([[0, 1, 1], [1, 0, 1]])
    s = np.array([[a, b, 0.9], [a, b, 0.9]], dtype=np.float32)  # positive b above negative a in float32
    # row 0: float16 tie, negative in column 0 first -> the positive of column 1 has rank 3: 1 error at R = 100
    # row 1: float16 tie, positive in column 0 first -> no error; exact ranks: no error in row 0, none in row 1
    np.testing.assert_allclose(M.re_at_r_authors_per_sample(y, s, 100), [1.0, 0.0])
    np.testing.assert_allclose(M.re_at_r_per_sample(y, s, 100), [0.0, 1.0])  # exact: b > a; row 1 a < b
    np.testing.assert_allclose(M.re_at_r_authors_per_sample(y, s, 100, float16=False), [0.0, 1.0])
    # exact ties stay pessimistic in our RE@R, column order in the authors'
    t = np.array([[0.5, 0.5, 0.9]])
    assert M.re_at_r(np.array([[1, 0, 1]]), t, 100) == 1.0
    assert M.re_at_r_authors(np.array([[1, 0, 1]]), t, 100) == 0.0


def test_re_authors_nan_at_r100_for_eight_positives_among_ten_labels():
    # L = 10, n = 8: 9·(100·(7/9)/100) = 7.000000000000001 > 7, so the upper index is 8 (padding, +inf)
    # and the fraction 8 − 7.000000000000001 rounds to 1.0 in float32: inf·0 = NaN; n = 7 is not hit
    assert (10.0 - 1.0) * ((100.0 * (7.0 / 9.0)) / 100.0) > 7.0
    assert (10.0 - 1.0) * ((100.0 * (6.0 / 9.0)) / 100.0) <= 6.0  # at or just below: a finite value
    y = np.zeros((2, 10), dtype=int)
    y[0, :8] = 1
    y[1, :7] = 1
    s = np.linspace(0.95, 0.05, 10)[None, :].repeat(2, axis=0)
    s[:, [0, 9]] = s[:, [9, 0]]  # the top negative score goes to a positive column: errors appear
    per = M.re_at_r_authors_per_sample(y, s, [90, 100])
    assert np.isnan(per[0, 1]) and np.isfinite(per[0, 0]) and np.isfinite(per[1]).all()
    np.testing.assert_allclose(per[1], M.re_at_r_per_sample(y, s, [90, 100])[1], atol=1e-5)
    np.testing.assert_allclose(M.re_left_out_share(y, [90, 100]), [0.0, 0.5])
    # the same counts with more labels: the rounding depends on L (n = 8 is exact for L = 151)
    assert M.re_left_out_share(np.pad(np.ones((1, 8), int), ((0, 0), (0, 143))), 100) == 0.0


@pytest.mark.parametrize("case", ["random", "ties", "float32"])
def test_re_authors_equals_the_spelled_out_arithmetic(case):
    y, s = _case(case)
    R = [10, 25, 33, 50, 66, 75, 90, 100]
    got = M.re_at_r_authors_per_sample(y, s, R, float16=False)
    L = y.shape[1]
    for i in range(len(y)):
        order = np.argsort(-s[i], kind="stable")
        rank = np.empty(L)
        rank[order] = np.arange(1, L + 1)
        pos = np.sort(rank[y[i] == 1])
        n = len(pos)
        for c, q in enumerate(R):
            if n == 0:
                assert np.isnan(got[i, c])
                continue
            want = _authors_value(pos, n, L, q) - _authors_value(np.arange(1, n + 1), n, L, q)
            np.testing.assert_allclose(got[i, c], want, atol=1e-6, equal_nan=True)
    # without ties and where defined, it is our exact RE@R up to float32 rounding
    if case != "ties":
        exact = M.re_at_r_per_sample(y, s, R)
        ok = np.isfinite(got)
        np.testing.assert_allclose(got[ok], exact[ok], atol=1e-4)
        assert (np.diff(sp.csr_matrix(y).indptr)[np.isnan(got).all(1)] <= 1).all()


def test_evaluate_reports_re_both_ways_and_left_out_share():
    y, s = _case("random")
    groups = {"all": np.ones(y.shape[1], bool), "first": np.arange(y.shape[1]) < 6}
    df = M.evaluate(y, s, groups, metrics=("re@50", "re_authors@50", "re_left_out@50"))
    v = df.set_index(["level", "metric"])["value"]
    assert v["all", "re@50"] == pytest.approx(M.re_at_r(y, s, 50))
    assert v["all", "re_authors@50"] == pytest.approx(M.re_at_r_authors(y, s, 50))
    sub = y[:, :6]
    assert v["first", "re_authors@50"] == pytest.approx(M.re_at_r_authors(sub, s[:, :6], 50))
    n = sub.sum(1)
    assert v["first", "re_left_out@50"] == pytest.approx((n == 1).sum() / (n > 0).sum())
    assert M.lower_is_better("re_authors@50") and not M.lower_is_better("re_left_out@50")


def test_re_authors_equals_the_authors_library_bit_for_bit():
    # reference computed by keras_extra b54f0a8 on TensorFlow 2.9.1 / TFP 0.17.0 (tests/data/make_re_authors_reference.py)
    from pathlib import Path

    ref = np.load(Path(__file__).parent / "data" / "re_authors_reference.npz")
    R = [10, 25, 33, 50, 66, 75, 90, 100]
    for k in range(4):
        y, s = ref[f"y{k}"], ref[f"s{k}"]
        for f16 in (True, False):
            want = ref[f"re{k}_{int(f16)}"]
            got = M.re_at_r_authors_per_sample(y, s if f16 else s.astype(np.float64), R, float16=f16)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_array_equal(got[np.isfinite(want)], want[np.isfinite(want)])
            means = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in want.T])
            np.testing.assert_array_equal(M.re_at_r_authors(y, s if f16 else s.astype(np.float64), R, float16=f16),
                                          means)


def test_authors_metrics_names():
    assert M.authors_metrics(["ndcg", "re@25", "recall@5", "re@50"]) == (
        "re_authors@25", "re_left_out@25", "re_authors@50", "re_left_out@50")
    assert M.authors_metrics(["ndcg"]) == ()
