"""How much a model learned about each code (paper section 3.1, Figs 1a, 1b, S2; spec sections 3 and 5).

Per code: the entropy reduction, in the authors' order (spec section 5): the mutual information
between score and label on each test fold (`mutual_info_folds`), averaged over the folds where the
code has both classes, divided by the binary entropy of the code's frequency in the whole dataset,
then clipped to 1 (`entropy_reduction`); and the relative difference of median ranks on positives and
negatives (`cacicd.evaluation.metrics.median_rank_ratio`), per fold then averaged over the folds where it is defined.

Code groups (masks over the dataset's code list):

* ``low-frequency``: fewer than `LOW_FREQUENCY_BELOW` (100) occurrences in the whole dataset, the
  codes the frequency filter drops (the authors' `< 100`; the paper's text says <= 100);
* ``cherry-picked``: `cacicd.icd9.cherry_pick_mask` (>= 100 occurrences, not excluded by belief);
* ``filtered-out-by-belief``: frequent enough to pass the frequency filter (>= 100 occurrences) but
  dropped by the prior-belief filter (800-999, E, V and below, the children of 765). Restricting to frequent codes
  isolates the belief filter: the paper compares these with the cherry-picked codes (MWU p = .155)
  and finds every one of them, like every cherry-picked code, better ranked on positives.

Occurrence bins (Fig S2) are right-closed: (2,5], (5,15], (15,100], (100,300], (300,1000], >1000;
codes with <= 2 occurrences fall in no bin.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cacicd import icd9
from cacicd.evaluation import metrics as M
from cacicd.evaluation import stats

logger = logging.getLogger(__name__)

LOW_FREQUENCY_BELOW = icd9.CHERRY_MIN_COUNT
GROUPS: tuple[str, ...] = ("low-frequency", "cherry-picked", "filtered-out-by-belief")
BIN_EDGES: tuple[float, ...] = (2, 5, 15, 100, 300, 1000, np.inf)
BIN_LABELS: tuple[str, ...] = ("(2,5]", "(5,15]", "(15,100]", "(100,300]", "(300,1000]", ">1000")
# Fig 1b: (name, threshold, strict) -> share of codes with ratio < threshold (strict) or <= threshold
RANK_SHARES: tuple[tuple[str, float, bool], ...] = (
    ("better_on_positives", 0.0, True),  # median rank on positives below that on negatives
    ("at_least_halved", -0.5, False),  # pos <= neg / 2
    ("more_than_halved", -0.5, True),  # pos < neg / 2
    ("below_tenth", -0.9, True),  # pos < neg / 10
)


def _counts(codes: Sequence[str], counts) -> np.ndarray:
    c = np.asarray(counts)
    if c.shape != (len(codes),):
        raise ValueError(f"counts has shape {c.shape}, expected ({len(codes)},) (one per code)")
    if np.any(c < 0):
        raise ValueError(f"counts must be >= 0; code {codes[int(np.flatnonzero(c < 0)[0])]!r} has a negative count")
    return c


def code_groups(codes: Sequence[str], counts, min_count: int = icd9.CHERRY_MIN_COUNT,
                low_below: int = LOW_FREQUENCY_BELOW) -> dict[str, np.ndarray]:
    """Boolean masks (n_codes,) of the groups in `GROUPS`, from codes and whole-dataset occurrence counts."""
    c = _counts(codes, counts)
    belief = np.array([icd9.excluded_by_belief(x) for x in codes], dtype=bool)
    return {
        "low-frequency": c < low_below,
        "cherry-picked": ~belief & (c >= min_count),
        "filtered-out-by-belief": belief & (c >= min_count),
    }


def occurrence_bin(counts) -> np.ndarray:
    """(n_codes,) label of each code's occurrence bin (`BIN_LABELS`), "" for <= 2 occurrences."""
    c = np.asarray(counts, dtype=np.float64)
    idx = np.searchsorted(np.asarray(BIN_EDGES), c, side="left")  # c in (e[i-1], e[i]] -> i
    out = np.full(c.shape, "", dtype=object)
    ok = (idx >= 1) & (idx <= len(BIN_LABELS))
    out[ok] = np.asarray(BIN_LABELS, dtype=object)[idx[ok] - 1]
    return out


def _folds(y_trues: Sequence, scores: Sequence, what: str) -> None:
    if len(y_trues) != len(scores) or len(scores) == 0:
        raise ValueError(f"{what}: need as many label matrices as score matrices (>= 1), "
                         f"got {len(y_trues)} and {len(scores)}")
    for k, (t, s) in enumerate(zip(y_trues, scores)):
        if t.shape != np.shape(s):
            raise ValueError(f"{what}: fold {k} labels have shape {t.shape} but scores {np.shape(s)}")


def mutual_info_folds(y_trues: Sequence, scores: Sequence, random_state: int = 0,
                      progress: bool = False) -> np.ndarray:
    """(n_folds, n_codes) mutual information (nats) between each code's score and label, per test fold.

    y_trues[k]: (n_k, n_codes) test labels of fold k; scores[k]: (n_k, n_codes) its scores. sklearn's
    `mutual_info_classif` estimator (k = 3; `cacicd.evaluation.metrics.mutual_info_per_label`); NaN where the
    code has a single class in the fold.
    """
    _folds(y_trues, scores, "mutual_info_folds")
    return np.vstack([M.mutual_info_per_label(t, s, random_state=random_state)
                      for t, s in tqdm(list(zip(y_trues, scores)), disable=not progress,
                                       desc="mutual information", leave=False)])


def entropy_reduction(mi_folds, base_rate) -> np.ndarray:
    """(n_codes,) entropy reduction in the authors' order: MI averaged over the folds where it is defined,
    divided by the binary entropy (nats) of the code's whole-dataset frequency, then clipped to 1.

    mi_folds: (n_folds, n_codes) from `mutual_info_folds`; base_rate: (n_codes,) frequencies. NaN where
    no fold has both classes. (Clipping each fold before averaging, as a per-fold ratio would, gives a
    lower value for codes whose ratio exceeds 1 in some fold.)
    """
    mi = fold_mean(mi_folds)
    q = np.asarray(base_rate, dtype=np.float64)
    if q.shape != mi.shape:
        raise ValueError(f"base_rate has shape {q.shape}, expected {mi.shape} (one per code)")
    bad = np.isfinite(mi) & ~((q > 0) & (q < 1))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(f"base_rate of code {j} is {q[j]} but the code has both classes in a test fold; "
                         "base rates must lie strictly between 0 and 1")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.minimum(mi / M.binary_entropy(q), 1.0)


def median_rank_ratio_folds(y_trues: Sequence, scores: Sequence) -> np.ndarray:
    """(n_folds, n_codes) (median rank on positives − on negatives) / on negatives, per fold (NaN if undefined)."""
    _folds(y_trues, scores, "median_rank_ratio_folds")
    return np.vstack([M.median_rank_ratio(t, s) for t, s in zip(y_trues, scores)])


def fold_mean(per_fold) -> np.ndarray:
    """(n_codes,) mean over folds of a (n_folds, n_codes) array, ignoring NaN folds; NaN where all are NaN."""
    a = np.asarray(per_fold, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"per-fold values must be (n_folds, n_codes), got shape {a.shape}")
    return M.mean_over_folds(list(a))


def _masks(groups: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    out = {}
    for g, m in groups.items():
        m = np.asarray(m, dtype=bool)
        if m.shape != (n,):
            raise ValueError(f"mask of group {g!r} has shape {m.shape}, expected ({n},)")
        out[g] = m
    return out


def group_values(values, groups: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The finite values (n_codes,) of each group's codes, as 1-D arrays."""
    v = np.asarray(values, dtype=np.float64)
    return {g: v[m & np.isfinite(v)] for g, m in _masks(groups, len(v)).items()}


def entropy_summary(values, groups: Mapping[str, np.ndarray], min_gain: float = 0.1) -> pd.DataFrame:
    """Per group: codes, codes with a value, % with some entropy reduction (> 0), % with >= min_gain, quartiles."""
    v = np.asarray(values, dtype=np.float64)
    rows = []
    for g, m in _masks(groups, len(v)).items():
        x = v[m & np.isfinite(v)]
        n = len(x)
        q = np.quantile(x, [0.25, 0.5, 0.75]) if n else [np.nan] * 3
        rows.append({"group": g, "n_codes": int(m.sum()), "n_with_value": n,
                     "pct_some_reduction": 100 * float(np.mean(x > 0)) if n else np.nan,
                     f"pct_reduction_ge_{min_gain:g}": 100 * float(np.mean(x >= min_gain)) if n else np.nan,
                     "q25": q[0], "median": q[1], "q75": q[2], "mean": float(x.mean()) if n else np.nan})
    return pd.DataFrame(rows)


def ecdf_table(values, groups: Mapping[str, np.ndarray], grid=None) -> pd.DataFrame:
    """Cumulative distribution per group on a grid (default 0..1 by 0.01): group, x, cdf = share of values <= x, n."""
    grid = np.linspace(0, 1, 101) if grid is None else np.asarray(grid, dtype=np.float64)
    rows = []
    for g, x in group_values(values, groups).items():
        xs = np.sort(x)
        cdf = np.searchsorted(xs, grid, side="right") / len(xs) if len(xs) else np.full(len(grid), np.nan)
        rows.append(pd.DataFrame({"group": g, "x": grid, "cdf": cdf, "n": len(xs)}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["group", "x", "cdf", "n"])


def by_occurrence_bin(values, counts, min_gain: float = 0.1) -> pd.DataFrame:
    """`entropy_summary` per occurrence bin (Fig S2), bins in order, with their count range."""
    c = np.asarray(counts)
    if c.shape != np.shape(values):
        raise ValueError(f"counts has shape {c.shape} but values {np.shape(values)}")
    b = occurrence_bin(c)
    out = entropy_summary(values, {lab: b == lab for lab in BIN_LABELS}, min_gain)
    return out.rename(columns={"group": "occurrences"})


def rank_ratio_shares(ratio, groups: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Per group: codes with a ratio and the % of them below each threshold of `RANK_SHARES` (Fig 1b)."""
    rows = []
    for g, x in group_values(ratio, groups).items():
        row = {"group": g, "n_codes": len(x)}
        for name, thr, strict in RANK_SHARES:
            hit = (x < thr) if strict else (x <= thr)
            row[f"pct_{name}"] = 100 * float(hit.mean()) if len(x) else np.nan
        row["max_ratio"] = float(x.max()) if len(x) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def cumulative_histogram(values, bins=None) -> pd.DataFrame:
    """Cumulative histogram of finite values: edge, count <= edge, share <= edge (Fig 1b).

    Default edges: −1..1 by 0.05, plus the largest value when it exceeds 1.
    """
    x = np.asarray(values, dtype=np.float64)
    x = np.sort(x[np.isfinite(x)])
    if bins is None:
        edges = np.linspace(-1, 1, 41)
        if len(x) and x[-1] > 1:
            edges = np.append(edges, x[-1])
    else:
        edges = np.asarray(bins, dtype=np.float64)
    n_le = np.searchsorted(x, edges, side="right")
    return pd.DataFrame({"edge": edges, "count_le": n_le, "share_le": n_le / len(x) if len(x) else np.nan})


def mann_whitney_groups(values: Mapping[str, np.ndarray], a: str, b: str, compared: str = "") -> dict:
    """Mann–Whitney U test of group a's values vs group b's (1-D each): the test's fields, n_a, n_b and the medians."""
    va, vb = values[a], values[b]
    test = stats.mann_whitney(va, vb, compared)
    return dict(test.as_dict(), n_a=len(va), n_b=len(vb), median_a=float(np.median(va)) if len(va) else np.nan,
                median_b=float(np.median(vb)) if len(vb) else np.nan)
