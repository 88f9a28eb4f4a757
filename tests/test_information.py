import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import rankdata
from sklearn.feature_selection import mutual_info_classif

from cacicd import information as I

CODES = ["001-139", "0389", "V1582", "E8490", "7650", "76500", "800-999", "4019", "V30-V39"]
COUNTS = np.array([500, 100, 150, 300, 250, 120, 99, 5, 2000])


def test_code_groups_hand_worked():
    g = I.code_groups(CODES, COUNTS)
    assert list(g) == list(I.GROUPS)
    # <= 100 occurrences: 0389 (100), 800-999 (99), 4019 (5)
    assert g["low-frequency"].tolist() == [False, True, False, False, False, False, True, True, False]
    # >= 100 and outside 800-999 / E / V / 765: 001-139, 0389
    assert g["cherry-picked"].tolist() == [True, True, False, False, False, False, False, False, False]
    # >= 100 and excluded by belief: V1582, E8490, 7650, 76500, V30-V39 (800-999 has only 99)
    assert g["filtered-out-by-belief"].tolist() == [False, False, True, True, True, True, False, False, True]


def test_code_groups_rejects_bad_counts():
    with pytest.raises(ValueError, match="expected \\(9,\\)"):
        I.code_groups(CODES, COUNTS[:3])
    with pytest.raises(ValueError, match="'0389' has a negative count"):
        I.code_groups(CODES, np.where(np.arange(9) == 1, -1, COUNTS))


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


def test_entropy_reduction_folds_matches_sklearn_and_fold_mean_skips_undefined():
    ys, ss = _folds()
    base = np.array([0.3, 0.25, 0.35, 0.3, 0.01, 0.2])
    per_fold = I.entropy_reduction_folds([sp.csr_matrix(y) for y in ys], ss, base)
    assert per_fold.shape == (3, 6)
    h = -(base * np.log(base) + (1 - base) * np.log(1 - base))
    for k, (y, s) in enumerate(zip(ys, ss)):
        for j in range(6):
            if y[:, j].min() == y[:, j].max():
                assert np.isnan(per_fold[k, j])
                continue
            mi = mutual_info_classif(s[:, [j]], y[:, j], n_neighbors=3, random_state=0)[0]
            assert per_fold[k, j] == pytest.approx(min(mi / h[j], 1.0), abs=2e-3)
    m = I.fold_mean(per_fold)
    assert np.isnan(m[4])
    assert m[5] == pytest.approx(np.mean(per_fold[[0, 2], 5]))
    assert m[0] == pytest.approx(per_fold[:, 0].mean())
    # codes with a signal gain information
    assert np.all(m[[0, 1, 2, 3, 5]] > 0)


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
        I.entropy_reduction_folds(ys, [ss[0], ss[1][:, :3]], np.full(6, 0.3))
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
