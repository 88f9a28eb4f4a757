import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import rankdata
from sklearn.feature_selection import mutual_info_classif

from cacicd.paper import information as I

CODES = ["001-139", "0389", "V1582", "E8490", "7650", "76500", "800-999", "4019", "V30-V39", "765"]
COUNTS = np.array([500, 100, 150, 300, 250, 120, 99, 5, 2000, 400])


def test_code_groups_hand_worked():
    g = I.code_groups(CODES, COUNTS)
    assert list(g) == list(I.GROUPS)
    # < 100 occurrences (the authors' rule): 800-999 (99), 4019 (5); 0389 has exactly 100
    assert g["low-frequency"].tolist() == [False, False, False, False, False, False, True, True, False, False]
    # >= 100 and outside 800-999 / E / V / the children of 765: 001-139, 0389, 765 itself
    assert g["cherry-picked"].tolist() == [True, True, False, False, False, False, False, False, False, True]
    # >= 100 and excluded by belief: V1582, E8490, 7650, 76500, V30-V39 (800-999 has only 99)
    assert g["filtered-out-by-belief"].tolist() == [False, False, True, True, True, True, False, False, True, False]
    # every code is in exactly one of: low-frequency, cherry-picked, filtered-out-by-belief
    np.testing.assert_array_equal(sum(m.astype(int) for m in g.values()), 1)


def test_code_groups_rejects_bad_counts():
    with pytest.raises(ValueError, match="expected \\(10,\\)"):
        I.code_groups(CODES, COUNTS[:3])
    with pytest.raises(ValueError, match="'0389' has a negative count"):
        I.code_groups(CODES, np.where(np.arange(10) == 1, -1, COUNTS))


def test_occurrence_bins_are_right_closed():
    c = np.array([1, 2, 3, 5, 6, 15, 16, 100, 101, 300, 301, 1000, 1001, 50_000])
    assert I.occurrence_bin(c).tolist() == ["", "", "(2,5]", "(2,5]", "(5,15]", "(5,15]", "(15,100]", "(15,100]",
                                            "(100,300]", "(100,300]", "(300,1000]", "(300,1000]", ">1000", ">1000"]


def _folds(n_folds=3, n=80, L=6, seed=0):
    rng = np.random.default_rng(seed)
    ys, ss = [], []
    for _ in range(n_folds):
        y = (rng.random((n, L)) < 0.3).astype(np.uint8)
        s = np.clip(0.6 * y + rng.random((n, L)) * np.linspace(0.2, 2, L), 0, None)  # some signal
        ys.append(y)
        ss.append(s)
    ys[1][:, 5] = 0  # code 5 has no positive in fold 1: undefined there, skipped in the mean
    for y in ys:
        y[:, 4] = 0  # code 4 never positive: NaN
    return ys, ss


def test_entropy_reduction_in_the_authors_order_matches_sklearn():
    ys, ss = _folds()
    base = np.array([0.3, 0.25, 0.35, 0.3, 0.01, 0.2])
    mi = I.mutual_info_folds([sp.csr_matrix(y) for y in ys], ss)
    assert mi.shape == (3, 6)
    ref = np.full((3, 6), np.nan)
    for k, (y, s) in enumerate(zip(ys, ss)):
        for j in range(6):
            if y[:, j].min() != y[:, j].max():
                ref[k, j] = mutual_info_classif(s[:, [j]], y[:, j], n_neighbors=3, random_state=0)[0]
    np.testing.assert_allclose(mi, ref, atol=2e-3, equal_nan=True)
    h = -(base * np.log(base) + (1 - base) * np.log(1 - base))
    er = I.entropy_reduction(mi, base)
    assert np.isnan(er[4])  # never positive: no fold has both classes
    assert er[5] == pytest.approx(min(np.mean(mi[[0, 2], 5]) / h[5], 1.0))  # fold 1 skipped
    for j in (0, 1, 2, 3):
        assert er[j] == pytest.approx(min(mi[:, j].mean() / h[j], 1.0))
    assert np.all(er[[0, 1, 2, 3, 5]] > 0)  # codes with a signal gain information


def test_entropy_reduction_averages_then_divides_then_clips():
    # base rate 0.5: H = ln 2 nats. Per fold MI / H = 1.6 and 0.2: the authors' order gives mean 0.9 -> 0.9,
    # clipping each fold first would give mean(1, 0.2) = 0.6; 1.8 and 0.6: 1.2 -> clipped to 1 (per fold: 0.8)
    h = np.log(2)
    mi = np.array([[1.6 * h, 1.8 * h], [0.2 * h, 0.6 * h]])
    np.testing.assert_allclose(I.entropy_reduction(mi, [0.5, 0.5]), [0.9, 1.0])
    mi3 = np.array([[0.5 * h], [np.nan], [0.3 * h]])  # a fold without both classes is skipped
    assert I.entropy_reduction(mi3, [0.5])[0] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="base_rate of code 0 is 1.0"):
        I.entropy_reduction(mi3, [1.0])
    with pytest.raises(ValueError, match="one per code"):
        I.entropy_reduction(mi3, [0.5, 0.5])


def test_median_rank_ratio_folds_matches_independent_computation():
    ys, ss = _folds(n_folds=2, n=40)
    ss[0][3, :] = 0.5  # ties inside a row: share the worst rank
    got = I.median_rank_ratio_folds(ys, ss)
    for k, (y, s) in enumerate(zip(ys, ss)):
        ranks = np.vstack([rankdata(-row, method="max") for row in s])
        for j in range(6):
            pos, neg = ranks[y[:, j] == 1, j], ranks[y[:, j] == 0, j]
            if len(pos) == 0:
                assert np.isnan(got[k, j])
            else:
                want = (np.median(pos) - np.median(neg)) / np.median(neg)
                assert got[k, j] == pytest.approx(want)


def test_folds_shape_errors():
    ys, ss = _folds(n_folds=2)
    with pytest.raises(ValueError, match="as many"):
        I.median_rank_ratio_folds(ys, ss[:1])
    with pytest.raises(ValueError, match="fold 1 labels have shape"):
        I.mutual_info_folds(ys, [ss[0], ss[1][:, :3]])
    with pytest.raises(ValueError, match="n_folds, n_codes"):
        I.fold_mean(np.zeros(3))


def test_rank_ratio_shares_hand_worked():
    ratio = np.array([-0.95, -0.5, -0.6, 0.1, -0.2, np.nan, 2.0])
    groups = {"all": np.ones(7, bool), "first_two": np.arange(7) < 2, "none": np.zeros(7, bool)}
    t = I.rank_ratio_shares(ratio, groups).set_index("group")
    a = t.loc["all"]
    assert a.n_codes == 6
    assert a.pct_better_on_positives == pytest.approx(100 * 4 / 6)
    assert a.pct_at_least_halved == pytest.approx(100 * 3 / 6)  # -0.95, -0.5, -0.6
    assert a.pct_more_than_halved == pytest.approx(100 * 2 / 6)  # -0.95, -0.6
    assert a.pct_below_tenth == pytest.approx(100 * 1 / 6)
    assert a.max_ratio == 2.0
    assert t.loc["first_two"].pct_below_tenth == 50
    assert t.loc["none"].n_codes == 0 and np.isnan(t.loc["none"].pct_better_on_positives)


def test_entropy_summary_ecdf_and_bins_hand_worked():
    v = np.array([0.0, 0.05, 0.1, 0.5, np.nan, 1.0])
    counts = np.array([3, 4, 10, 200, 2000, 5000])
    s = I.entropy_summary(v, {"all": np.ones(6, bool)}).iloc[0]
    assert (s.n_codes, s.n_with_value) == (6, 5)
    assert s.pct_some_reduction == pytest.approx(80)
    assert s["pct_reduction_ge_0.1"] == pytest.approx(60)
    assert s["median"] == pytest.approx(0.1)
    e = I.ecdf_table(v, {"all": np.ones(6, bool)}, grid=[0, 0.1, 0.99, 1])
    assert e["cdf"].tolist() == pytest.approx([0.2, 0.6, 0.8, 1.0])
    b = I.by_occurrence_bin(v, counts).set_index("occurrences")
    assert list(b.index) == list(I.BIN_LABELS)
    assert b.loc["(2,5]", "n_codes"] == 2 and b.loc["(2,5]", "pct_some_reduction"] == 50
    assert b.loc[">1000", "n_codes"] == 2 and b.loc[">1000", "n_with_value"] == 1
    assert b.loc["(15,100]", "n_codes"] == 0
    with pytest.raises(ValueError, match="mask of group 'x'"):
        I.entropy_summary(v, {"x": np.ones(3, bool)})


def test_cumulative_histogram():
    h = I.cumulative_histogram(np.array([-0.9, -0.5, -0.5, 0.2, np.nan, 3.0]))
    assert h["edge"].iloc[-1] == 3.0  # the max is added past 1
    at = h.set_index("edge")["count_le"]
    assert at[-0.5] == 3 and at[0.0] == 3 and at[1.0] == 4 and at[3.0] == 5
    assert h["share_le"].iloc[-1] == 1.0
    assert isinstance(h, pd.DataFrame)


def test_mann_whitney_groups_row():
    from scipy.stats import mannwhitneyu

    vals = {"a": np.array([0.1, 0.5, 0.9]), "b": np.array([0.2, 0.3]), "c": np.array([])}
    row = I.mann_whitney_groups(vals, "a", "b", "a vs b")
    want = mannwhitneyu(vals["a"], vals["b"], alternative="two-sided")
    assert list(row) == ["test", "statistic", "pvalue", "n", "compared", "n_a", "n_b", "median_a", "median_b"]
    assert row["statistic"] == want.statistic and row["pvalue"] == pytest.approx(want.pvalue)
    assert (row["n_a"], row["n_b"], row["median_a"], row["median_b"]) == (3, 2, 0.5, 0.25)
    empty = I.mann_whitney_groups(vals, "a", "c")
    assert np.isnan(empty["pvalue"]) and np.isnan(empty["median_b"])
