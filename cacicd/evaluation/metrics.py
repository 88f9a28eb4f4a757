"""Every metric of the paper (spec section 5): pure, vectorised functions on arrays.

Shapes: `y_true` is (n_samples, n_labels), a dense 0/1 array or any scipy sparse matrix;
`y_score` is a dense float array of the same shape (probabilities; float32 or float64).

Conventions (spec section 5 and, where it is silent, our choice):

* Ranks are pessimistic. Within a row, a positive is placed after every negative that has the
  same score, and positives tied with each other take consecutive ranks. So the j-th best
  positive (j = 1..n) has rank r_j = N_j + j, where N_j is the number of negatives scored >= it.
  Coverage (= max rank) is then exactly `sklearn.metrics.coverage_error`'s, RE@0 is the number of
  negatives above (or tied with) the first positive and RE@R is an interpolated count of negatives.
* RE@R as the published values were computed is an option, never the default: `re_at_r_authors`
  (metric name "re_authors@R") emulates the authors' keras_extra `rank_errors_at_percentile` on
  TensorFlow Probability 0.17 (float16 scores, ties to the lower column, NaN for every sample with
  one positive and at R = 100 for some positive counts, then `np.nanmean`); `re_left_out_share`
  ("re_left_out@R") is the share of samples with a positive it leaves out.
* RE@R and Recall@K average over samples with >= 1 positive. NDCG counts samples without a
  positive as 0 (as `sklearn.metrics.ndcg_score`). Coverage and LRAP follow scikit-learn exactly:
  a sample without a positive has coverage 0 and LRAP 1 and is included in the mean.
* NDCG breaks ties pessimistically by default (`ties="average"` reproduces scikit-learn's
  tie-averaged DCG). AUPRC is the trapezoidal area of `precision_recall_curve` (not average
  precision); AUROC counts ties as 1/2 (as `roc_auc_score`). Macro averages run over labels
  with >= 1 positive (AUROC: and >= 1 negative); NaN when there is none.
* Hard predictions: a score is positive iff `score > threshold` (strict, as Keras' metrics).
  A 0/0 precision, recall or F1 counts as 0 (sklearn `zero_division=0`). Macro averages over
  labels with >= 1 positive, "samples" over samples with >= 1 positive.
* Calibration: every (sample, label) pair is a two-class prediction with predicted class
  `p > 0.5` and confidence max(p, 1 - p) (in the scores' dtype); pairs are sorted by (confidence, correct) and cut into
  `n_bins` equal-mass bins exactly as `np.array_split` would cut them.
* Entropy reduction: `mutual_info_per_label` is the estimator of sklearn's `mutual_info_classif`
  (k = 3, nats, same scaling and seeded noise) computed with sorted 1-D neighbour searches. It
  equals sklearn to ~1e-15 when sklearn uses its k-d tree; for a class of <= 7 samples sklearn
  switches to brute-force kNN whose distances (|x|^2 - 2xy + |y|^2) round by ~1e-16, which
  sometimes counts the k-th neighbour inside the radius; we compare exactly (a few 1e-3 nats).
* Median ranks (Fig 1b, S6) use the rank of every (stay, code) pair among the stay's codes with
  ties sharing the worst rank of their group (scipy `rankdata(-s, method="max")`).

Scalar metrics average per-sample or per-label forms that are public too: `re_at_r_per_sample`,
`recall_at_k_per_sample`, `ndcg_per_sample`, `coverage_per_sample`, `lrap_per_sample`,
`auprc_per_label`, `auroc_per_label`. `evaluate` gives a tidy table per label group.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import digamma
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

RE_R: tuple[int, ...] = (10, 25, 33, 50, 66, 75, 90, 100)
RECALL_K: tuple[int, ...] = tuple(range(1, 51))
DEFAULT_METRICS: tuple[str, ...] = (
    ("ndcg", "ndcg@15")
    + tuple(f"re@{r}" for r in RE_R)
    + tuple(f"recall@{k}" for k in RECALL_K)
    + ("coverage", "lrap", "auprc_micro", "auprc_macro", "auroc_micro", "auroc_macro")
    + tuple(f"{m}_{a}" for m in ("f1", "precision", "recall") for a in ("micro", "macro", "samples"))
    + ("ece", "mce", "brier")
)
_LOWER_IS_BETTER = re.compile(r"^(re@.*|re_authors@.*|coverage|ece|mce|brier)$")
_NAME = re.compile(
    r"^(?:(?P<ndcg>ndcg)(?:@(?P<ndcg_k>\d+))?|re@(?P<re>\d+(?:\.\d+)?)|recall@(?P<rk>\d+)"
    r"|re_authors@(?P<rea>\d+(?:\.\d+)?)|re_left_out@(?P<rel>\d+(?:\.\d+)?)"
    r"|(?P<rank>coverage|lrap)|(?P<curve>auprc|auroc)_(?P<cavg>micro|macro)"
    r"|(?P<prf>f1|precision|recall)_(?P<pavg>micro|macro|samples)|(?P<cal>ece|mce|brier))$"
)


def lower_is_better(metric: str) -> bool:
    """True for metrics where smaller is better (RE@R either way, coverage, ECE, MCE, Brier)."""
    return bool(_LOWER_IS_BETTER.match(metric))


# ----------------------------------------------------------------------------- input checks

def _check_score(y_score) -> np.ndarray:
    s = np.asarray(y_score)
    if s.ndim != 2:
        raise ValueError(f"y_score must be 2-D (n_samples, n_labels), got shape {s.shape}")
    if s.dtype.kind not in "fiub":
        raise TypeError(f"y_score must be numeric, got dtype {s.dtype}")
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    bad = ~np.isfinite(s)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"y_score has {int(bad.sum())} NaN/inf value(s), first at row {i}, label {j}")
    return s


def _check_true(y_true, shape: tuple[int, int]) -> sp.csr_matrix:
    if sp.issparse(y_true):
        t = sp.csr_matrix(y_true, copy=True)
        t.sum_duplicates()
        t.eliminate_zeros()
        if t.shape != shape:
            raise ValueError(f"y_true has shape {t.shape} but y_score has shape {shape}")
        bad = t.data != 1
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            row = int(np.searchsorted(t.indptr, k, side="right") - 1)
            raise ValueError(f"y_true must be 0/1: value {t.data[k]} at row {row}, label {t.indices[k]}")
    else:
        a = np.asarray(y_true)
        if a.shape != shape:
            raise ValueError(f"y_true has shape {a.shape} but y_score has shape {shape}")
        bad = (a != 0) & (a != 1)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(f"y_true must be 0/1: value {a[i, j]} at row {i}, label {j}")
        t = sp.csr_matrix(a != 0)
    t = t.astype(bool)
    t.sort_indices()
    return t


def _inputs(y_true, y_score) -> tuple[sp.csr_matrix, np.ndarray]:
    s = _check_score(y_score)
    return _check_true(y_true, s.shape), s


def _group_bounds(start_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last index of each element's run; runs start where `start_mask`."""
    n = len(start_mask)
    idx = np.arange(n)
    first = np.maximum.accumulate(np.where(start_mask, idx, 0))
    end_mask = np.empty(n, dtype=bool)
    end_mask[:-1] = start_mask[1:]
    if n:
        end_mask[-1] = True
    last = np.minimum.accumulate(np.where(end_mask, idx, n)[::-1])[::-1]
    return first, last + 1


# ----------------------------------------------------------------------------- per-row ranks

@dataclass(frozen=True)
class _Rows:
    """Positives of each row sorted by decreasing score, with counts used by every ranking metric."""

    n_labels: int
    indptr: np.ndarray  # (n+1,) row i's positives are [indptr[i], indptr[i+1])
    rows: np.ndarray  # (P,) row of each positive
    neg_ge: np.ndarray  # (P,) negatives scored >= the positive
    pos_gt: np.ndarray  # (P,) positives of the row scored > it
    pos_ge: np.ndarray  # (P,) positives scored >= it (itself included)
    all_gt: np.ndarray  # (P,) labels scored > it
    all_eq: np.ndarray  # (P,) labels scored == it (itself included)

    @property
    def n_pos(self) -> np.ndarray:
        return np.diff(self.indptr)

    @property
    def j(self) -> np.ndarray:
        """1-based position of each positive among its row's positives."""
        return np.arange(len(self.rows)) - self.indptr[self.rows] + 1

    @property
    def rank(self) -> np.ndarray:
        """Pessimistic rank of each positive: negatives scored >= it, plus its position."""
        return self.neg_ge + self.j


def _rows(t: sp.csr_matrix, s: np.ndarray) -> _Rows:
    n, L = s.shape
    indptr = t.indptr.astype(np.int64)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    v = s[rows, t.indices]
    order = np.lexsort((-v, rows))
    v = v[order]
    P = len(v)
    start = np.ones(P, dtype=bool)
    if P:
        start[1:] = (rows[1:] != rows[:-1]) | (v[1:] != v[:-1])
    first, stop = _group_bounds(start)
    base = indptr[rows]
    pos_gt, pos_ge = first - base, stop - base
    srt = np.sort(s, axis=1)
    lo = np.empty(P, dtype=np.int64)
    hi = np.empty(P, dtype=np.int64)
    for i in np.flatnonzero(np.diff(indptr)):
        a, b = indptr[i], indptr[i + 1]
        lo[a:b] = np.searchsorted(srt[i], v[a:b], side="left")
        hi[a:b] = np.searchsorted(srt[i], v[a:b], side="right")
    all_ge = L - lo
    return _Rows(L, indptr, rows, all_ge - pos_ge, pos_gt, pos_ge, L - hi, hi - lo)


def _row_sum(r: _Rows, x: np.ndarray) -> np.ndarray:
    return np.bincount(r.rows, weights=x, minlength=len(r.indptr) - 1)


def _re_rows(r: _Rows, R: np.ndarray) -> np.ndarray:
    """(n, len(R)) RE@R per sample (NaN without positive): linear percentile of N_j."""
    n_pos = r.n_pos
    out = np.full((len(n_pos), len(R)), np.nan)
    has = np.flatnonzero(n_pos)
    if not len(has):
        return out
    N = r.neg_ge.astype(np.float64)
    q = np.asarray(R, dtype=np.float64) / 100.0
    h = (n_pos[has, None] - 1) * q[None, :]
    lo = np.floor(h).astype(np.int64)
    frac = h - lo
    hi = np.minimum(lo + 1, n_pos[has, None] - 1)
    a = N[r.indptr[has, None] + lo]
    b = N[r.indptr[has, None] + hi]
    out[has] = np.where(frac >= 0.5, b - (b - a) * (1 - frac), a + (b - a) * frac)
    return out


def _recall_rows(r: _Rows, K: np.ndarray) -> np.ndarray:
    """(n, len(K)) Recall@K per sample (NaN without positive)."""
    n_pos = r.n_pos
    rank = r.rank
    hits = np.empty((len(n_pos), len(K)))
    for c, k in enumerate(K):
        hits[:, c] = _row_sum(r, (rank <= k).astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos[:, None] > 0, hits / n_pos[:, None], np.nan)


def _discount_cumsum(L: int, k: int | None) -> np.ndarray:
    disc = 1.0 / np.log2(np.arange(L) + 2.0)
    if k is not None:
        disc[k:] = 0.0
    return np.concatenate([[0.0], np.cumsum(disc)])


def _ndcg_rows(r: _Rows, k: int | None, ties: str) -> np.ndarray:
    """(n,) NDCG(@k) per sample; 0 for samples without positive."""
    L = r.n_labels
    C = _discount_cumsum(L, k)
    if ties == "pessimistic":
        rank = r.rank
        gain = C[rank] - C[rank - 1]
    elif ties == "average":
        a, t = r.all_gt, r.all_eq
        gain = (C[a + t] - C[a]) / t
    else:
        raise ValueError(f"ties must be 'pessimistic' or 'average', got {ties!r}")
    dcg = _row_sum(r, gain)
    idcg = C[np.minimum(r.n_pos, L)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(idcg > 0, dcg / idcg, 0.0)


def _coverage_rows(r: _Rows) -> np.ndarray:
    cov = np.zeros(len(r.indptr) - 1)
    has = np.flatnonzero(r.n_pos)
    last = r.indptr[has + 1] - 1
    cov[has] = r.rank[last]
    return cov


def _lrap_rows(r: _Rows) -> np.ndarray:
    n_pos = r.n_pos
    frac = r.pos_ge / (r.pos_ge + r.neg_ge)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = _row_sum(r, frac) / n_pos
    return np.where((n_pos == 0) | (n_pos == r.n_labels), 1.0, out)


def _as_list(x) -> tuple[np.ndarray, bool]:
    a = np.asarray(x)
    return np.atleast_1d(a), a.ndim == 0


def re_at_r_per_sample(y_true, y_score, r) -> np.ndarray:
    """RE@R per sample: (n_samples,) for scalar r, (n_samples, len(r)) otherwise; NaN without positive."""
    R, scalar = _as_list(r)
    if ((R < 0) | (R > 100)).any():
        raise ValueError(f"r must lie in [0, 100], got {R}")
    t, s = _inputs(y_true, y_score)
    if (R == 100).all():  # RE@100 = coverage - n: no sort needed
        n_pos = np.diff(t.indptr)
        re100 = np.where(n_pos > 0, _coverage_fast(t, s) - n_pos, np.nan)
        out = np.repeat(re100[:, None], len(R), axis=1)
    else:
        out = _re_rows(_rows(t, s), R)
    return out[:, 0] if scalar else out


def re_at_r(y_true, y_score, r) -> float | np.ndarray:
    """RE@R averaged over samples with >= 1 positive: float, or (len(r),) for a sequence r."""
    out = np.atleast_2d(re_at_r_per_sample(y_true, y_score, np.atleast_1d(r)))
    res = _nanmean0(out)
    return float(res[0]) if np.ndim(r) == 0 else res


# ----------------------------------------------------------------------------- RE@R as the authors computed it

def _authors_positive_ranks(t: sp.csr_matrix, s: np.ndarray, block: int = 256) -> np.ndarray:
    """(P,) ordinal rank of each positive (CSR order): ties go to the lower column index (TF argsort/top_k)."""
    n, L = s.shape
    out = np.empty(t.nnz, dtype=np.float32)
    rows = np.flatnonzero(np.diff(t.indptr))
    for b0 in range(0, len(rows), block):
        rb = rows[b0:b0 + block]
        order = np.argsort(-s[rb], axis=1, kind="stable")  # descending; equal scores keep column order
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(1, L + 1)[None, :], axis=1)
        for k, i in enumerate(rb):
            a, z = t.indptr[i], t.indptr[i + 1]
            out[a:z] = rank[k, t.indices[a:z]]
    return out


def _tfp_nan_percentile(x: np.ndarray, n: np.ndarray, L: int, q: float) -> np.ndarray:
    """(m,) float32: keras_extra `stats.nanpercentile(interpolation='linear')` over TFP 0.17 `percentile`.

    x: (m, n_max) float32, each row's n[i] values sorted ascending then +inf (the NaN padding of a row
    of L entries, which nanpercentile turns into +inf). The arithmetic is the library's, in its order
    and dtypes: effective q = q·(L − n_nan − 1)/(L − 1) in float64, index (L − 1)·q/100, upper index
    ceil, lower = upper − 1 clipped to 0, upper = lower + 1 clipped to L − 1 (`preserve_gradients`),
    fraction = upper − index cast to float32, value = x[upper]·(1 − fraction) + x[lower]·fraction
    in float32, and an infinite result (a padded entry weighted > 0) or NaN (inf·0) read as NaN.
    """
    m = len(n)
    out = np.full(m, np.nan, dtype=np.float32)
    if L < 2 or m == 0:
        return out  # L = 1: (L - 1) = 0 makes the effective q 0/0 = NaN
    Lf = np.float64(L)
    nan_count = (L - n).astype(np.float64)
    eff_q = np.float64(q) * ((Lf - nan_count - 1.0) / (Lf - 1.0))
    exact = (Lf - 1.0) * (eff_q / 100.0)
    upper = np.clip(np.ceil(exact), 0, L - 1).astype(np.int64)
    lower = np.maximum(upper - 1, 0)
    upper = np.minimum(lower + 1, L - 1)
    fraction = (upper.astype(np.float64) - exact).astype(np.float32)
    width = x.shape[1]
    pick = lambda k: np.where(k < width, x[np.arange(m), np.minimum(k, width - 1)], np.float32(np.inf))  # noqa: E731
    with np.errstate(invalid="ignore", over="ignore"):
        v = pick(upper) * (np.float32(1) - fraction) + pick(lower) * fraction
    ok = (n > 0) & np.isfinite(v)
    out[ok] = v[ok]
    return out


def re_at_r_authors_per_sample(y_true, y_score, r, float16: bool = True) -> np.ndarray:
    """RE@R per sample as the published values were computed; NaN for the samples that convention leaves out.

    Emulates keras_extra `metrics.rank_errors_at_percentile(interpolation='linear')` (TensorFlow
    Probability 0.17), as the authors' analysis notebook called it: scores cast to float16 first
    (`float16=False`: kept, as for Table S9, computed from the CSV predictions); ordinal ranks with
    ties given to the lower column index (TensorFlow's descending argsort); the positives' ranks and
    1..n each through `_tfp_nan_percentile`, then subtracted. That arithmetic returns NaN for every
    sample with exactly one positive, and at R = 100 for the positive counts n where
    (L − 1)·(100·((n − 1)/(L − 1))/100) rounds above n − 1 (L: labels in the group). Samples without
    a positive are NaN too. Returns float32, (n_samples,) for scalar r, else (n_samples, len(r)).
    """
    R, scalar = _as_list(r)
    if ((R < 0) | (R > 100)).any():
        raise ValueError(f"r must lie in [0, 100], got {R}")
    t, s = _inputs(y_true, y_score)
    n_rows, L = s.shape
    if float16:
        s = s.astype(np.float16)
    rank = _authors_positive_ranks(t, s)
    n_pos = np.diff(t.indptr)
    rows = np.repeat(np.arange(n_rows), n_pos)
    order = np.lexsort((rank, rows))
    width = max(int(n_pos.max()) if n_rows else 0, 1)
    pred = np.full((n_rows, width), np.inf, dtype=np.float32)
    pred[rows[order], np.arange(t.nnz) - t.indptr[rows[order]]] = rank[order]
    ideal = np.where(np.arange(1, width + 1)[None, :] <= n_pos[:, None],
                     np.arange(1, width + 1, dtype=np.float32)[None, :], np.float32(np.inf)).astype(np.float32)
    out = np.empty((n_rows, len(R)), dtype=np.float32)
    for c, q in enumerate(R):
        out[:, c] = _tfp_nan_percentile(pred, n_pos, L, float(q)) - _tfp_nan_percentile(ideal, n_pos, L, float(q))
    return out[:, 0] if scalar else out


def re_at_r_authors(y_true, y_score, r, float16: bool = True) -> float | np.ndarray:
    """RE@R the published way: `np.nanmean` (float32, as the authors' notebook) of `re_at_r_authors_per_sample`."""
    per = re_at_r_authors_per_sample(y_true, y_score, np.atleast_1d(r), float16)
    res = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in per.T], dtype=np.float64)
    return float(res[0]) if np.ndim(r) == 0 else res


def authors_metrics(names) -> tuple[str, ...]:
    """For each "re@R" of `names` (others skipped), its published-way metrics "re_authors@R", "re_left_out@R"."""
    return tuple(f"{kind}@{m[len('re@'):]}" for m in names if m.startswith("re@")
                 for kind in ("re_authors", "re_left_out"))


def re_left_out_share(y_true, r, n_labels: int | None = None) -> float | np.ndarray:
    """Share of the samples with >= 1 positive that the authors' RE@R convention leaves out (NaN), per R.

    Depends only on each sample's positive count n and the label count L (`y_true`'s columns unless
    `n_labels`): n = 1 always, and at R = 100 the counts where the index arithmetic rounds up.
    """
    R, scalar = _as_list(r)
    t = _check_true(y_true, y_true.shape if sp.issparse(y_true) else np.shape(y_true))
    L = t.shape[1] if n_labels is None else int(n_labels)
    n = np.diff(t.indptr)
    n = n[n > 0]
    out = np.full(len(R), np.nan)
    if len(n):
        for c, q in enumerate(R):
            x = np.where(np.arange(1, n.max() + 1)[None, :] <= n[:, None],
                         np.arange(1, n.max() + 1, dtype=np.float32)[None, :], np.float32(np.inf)).astype(np.float32)
            out[c] = float(np.mean(np.isnan(_tfp_nan_percentile(x, n, L, float(q)))))
    return float(out[0]) if scalar else out


def recall_at_k_per_sample(y_true, y_score, k) -> np.ndarray:
    """Recall@K per sample: (n_samples,) or (n_samples, len(k)); NaN without positive."""
    K, scalar = _as_list(k)
    if (K < 1).any():
        raise ValueError(f"k must be >= 1, got {K}")
    out = _recall_rows(_rows(*_inputs(y_true, y_score)), K)
    return out[:, 0] if scalar else out


def recall_at_k(y_true, y_score, k) -> float | np.ndarray:
    """Recall@K averaged over samples with >= 1 positive: float, or (len(k),) for a sequence k."""
    res = _nanmean0(np.atleast_2d(recall_at_k_per_sample(y_true, y_score, np.atleast_1d(k))))
    return float(res[0]) if np.ndim(k) == 0 else res


def ndcg_per_sample(y_true, y_score, k: int | None = None, ties: str = "pessimistic") -> np.ndarray:
    """(n_samples,) NDCG (gain y, discount 1/log2(rank+1), cut at k); 0 for samples without positive."""
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1 or None, got {k}")
    return _ndcg_rows(_rows(*_inputs(y_true, y_score)), k, ties)


def ndcg(y_true, y_score, k: int | None = None, ties: str = "pessimistic") -> float:
    """Mean NDCG(@k) over all samples (samples without positive count 0, as sklearn ndcg_score)."""
    return float(np.mean(ndcg_per_sample(y_true, y_score, k, ties)))


def _coverage_fast(t: sp.csr_matrix, s: np.ndarray) -> np.ndarray:
    """(n,) coverage without sorting: labels scored >= the row's lowest-scored positive."""
    n = s.shape[0]
    rows = np.repeat(np.arange(n), np.diff(t.indptr))
    low = np.full(n, np.inf, dtype=s.dtype)
    np.minimum.at(low, rows, s[rows, t.indices])
    out = np.zeros(n)
    for i in np.flatnonzero(np.diff(t.indptr)):  # row by row: cache-friendly, faster than one 2-D pass
        out[i] = np.count_nonzero(s[i] >= low[i])
    return out


def coverage_per_sample(y_true, y_score) -> np.ndarray:
    """(n_samples,) labels to read down to the last positive (sklearn coverage_error); 0 without positive."""
    return _coverage_fast(*_inputs(y_true, y_score))


def coverage(y_true, y_score) -> float:
    """Mean coverage over all samples, as sklearn.metrics.coverage_error."""
    return float(np.mean(coverage_per_sample(y_true, y_score)))


def lrap_per_sample(y_true, y_score) -> np.ndarray:
    """(n_samples,) label ranking average precision; 1 for samples with no or only positives (sklearn)."""
    return _lrap_rows(_rows(*_inputs(y_true, y_score)))


def lrap(y_true, y_score) -> float:
    """Mean LRAP over all samples, as sklearn.metrics.label_ranking_average_precision_score."""
    return float(np.mean(lrap_per_sample(y_true, y_score)))


def _nanmean0(a: np.ndarray) -> np.ndarray:
    """Column means ignoring NaN; NaN (no warning) for an all-NaN column."""
    ok = ~np.isnan(a)
    cnt = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, np.where(ok, a, 0.0).sum(axis=0) / cnt, np.nan)


# ----------------------------------------------------------------------------- AUPRC / AUROC

def _curve_areas(seg, n_seg, n_total, n_pos, pos_gt, pos_ge, all_gt, all_ge):
    """(n_seg,) AUPRC and AUROC from per-positive counts; positives sorted by decreasing score per segment."""
    n_pos = n_pos.astype(np.float64)
    n_neg = n_total - n_pos
    first = pos_gt == (np.arange(len(seg)) - np.searchsorted(seg, seg, side="left"))
    a, b = pos_gt[first], (all_gt - pos_gt)[first]
    a2, b2 = pos_ge[first], (all_ge - pos_ge)[first]
    prev = np.divide(a, a + b, out=np.ones(len(a)), where=(a + b) > 0)
    cur = a2 / (a2 + b2)
    sf = seg[first]
    with np.errstate(invalid="ignore", divide="ignore"):
        pr = np.bincount(sf, weights=(a2 - a) * (prev + cur) / 2.0, minlength=n_seg) / n_pos
        neg_lt = (n_total - all_ge) - (n_pos[seg] - pos_ge)
        neg_eq = (all_ge - all_gt) - (pos_ge - pos_gt)
        roc = np.bincount(seg, weights=neg_lt + 0.5 * neg_eq, minlength=n_seg) / (n_pos * n_neg)
    pr = np.where(n_pos > 0, pr, np.nan)
    roc = np.where((n_pos > 0) & (n_neg > 0), roc, np.nan)
    return pr, roc


def _sorted_pos(seg: np.ndarray, v: np.ndarray):
    """Sort positives by (segment, decreasing score); return seg, v, pos_gt, pos_ge within segment."""
    order = np.lexsort((-v, seg))
    seg, v = seg[order], v[order]
    start = np.ones(len(v), dtype=bool)
    if len(v):
        start[1:] = (seg[1:] != seg[:-1]) | (v[1:] != v[:-1])
    first, stop = _group_bounds(start)
    base = np.searchsorted(seg, seg, side="left")
    return seg, v, first - base, stop - base


def _label_areas(t: sp.csr_matrix, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n_labels,) AUPRC and AUROC of each label (NaN where undefined)."""
    n, L = s.shape
    tc = t.tocsc()
    tc.sort_indices()
    cols = np.repeat(np.arange(L), np.diff(tc.indptr))
    seg, v, pos_gt, pos_ge = _sorted_pos(cols, s[tc.indices, cols])
    st = np.array(s.T, order="C")  # always a copy: sorted in place below
    st.sort(axis=1)
    ip = tc.indptr
    lo = np.empty(len(v), dtype=np.int64)
    hi = np.empty(len(v), dtype=np.int64)
    for j in np.flatnonzero(np.diff(ip)):
        a, b = ip[j], ip[j + 1]
        lo[a:b] = np.searchsorted(st[j], v[a:b], side="left")
        hi[a:b] = np.searchsorted(st[j], v[a:b], side="right")
    return _curve_areas(seg, L, n, np.diff(ip), pos_gt, pos_ge, n - hi, n - lo)


def _micro_areas(t: sp.csr_matrix, s: np.ndarray) -> tuple[float, float]:
    """Micro AUPRC and AUROC on the flattened matrix."""
    rows = np.repeat(np.arange(s.shape[0]), np.diff(t.indptr))
    v = s[rows, t.indices]
    seg, v, pos_gt, pos_ge = _sorted_pos(np.zeros(len(v), dtype=np.int64), v)
    flat = np.sort(s, axis=None)
    N = flat.size
    lo = np.searchsorted(flat, v, side="left")
    hi = np.searchsorted(flat, v, side="right")
    pr, roc = _curve_areas(seg, 1, N, np.array([len(v)]), pos_gt, pos_ge, N - hi, N - lo)
    return float(pr[0]), float(roc[0])


def auprc_per_label(y_true, y_score) -> np.ndarray:
    """(n_labels,) trapezoidal area under each label's precision-recall curve; NaN without positive."""
    return _label_areas(*_inputs(y_true, y_score))[0]


def auroc_per_label(y_true, y_score) -> np.ndarray:
    """(n_labels,) area under each label's ROC curve; NaN without both classes."""
    return _label_areas(*_inputs(y_true, y_score))[1]


def _average_arg(average: str, allowed: tuple[str, ...]) -> str:
    if average not in allowed:
        raise ValueError(f"average must be one of {allowed}, got {average!r}")
    return average


def auprc(y_true, y_score, average: str = "micro") -> float:
    """Trapezoidal AUPRC (precision_recall_curve + auc): micro on the flattened matrix, or macro."""
    t, s = _inputs(y_true, y_score)
    if _average_arg(average, ("micro", "macro")) == "micro":
        return _micro_areas(t, s)[0]
    return float(_nanmean0(_label_areas(t, s)[0][:, None])[0])


def auroc(y_true, y_score, average: str = "micro") -> float:
    """AUROC (ties count 1/2): micro on the flattened matrix, or macro over labels with both classes."""
    t, s = _inputs(y_true, y_score)
    if _average_arg(average, ("micro", "macro")) == "micro":
        return _micro_areas(t, s)[1]
    return float(_nanmean0(_label_areas(t, s)[1][:, None])[0])


# ----------------------------------------------------------------------------- hard predictions

def _prf_from_counts(tp, fp, fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    z = np.zeros_like(tp)
    p = np.divide(tp, tp + fp, out=z.copy(), where=(tp + fp) > 0)
    r = np.divide(tp, tp + fn, out=z.copy(), where=(tp + fn) > 0)
    f = np.divide(2 * tp, 2 * tp + fp + fn, out=z.copy(), where=(2 * tp + fp + fn) > 0)
    return p, r, f


def _counts(t: sp.csr_matrix, s: np.ndarray, threshold: float, axis: int):
    """tp, fp, fn per label (axis=0) or per sample (axis=1) for predictions score > threshold."""
    n, L = s.shape
    rows = np.repeat(np.arange(n), np.diff(t.indptr))
    hit = s[rows, t.indices] > threshold
    idx, size = (t.indices, L) if axis == 0 else (rows, n)
    tp = np.bincount(idx[hit], minlength=size)
    n_pos = np.bincount(idx, minlength=size)
    n_pred = np.count_nonzero(s > threshold, axis=axis)
    return tp, n_pred - tp, n_pos - tp


def _prf(t, s, threshold: float, average: str) -> dict[str, float]:
    _average_arg(average, ("micro", "macro", "samples"))
    if average == "micro":
        tp, fp, fn = (x.sum() for x in _counts(t, s, threshold, 0))
        p, r, f = _prf_from_counts([tp], [fp], [fn])
        return {"precision": float(p[0]), "recall": float(r[0]), "f1": float(f[0])}
    tp, fp, fn = _counts(t, s, threshold, 0 if average == "macro" else 1)
    keep = (tp + fn) > 0
    p, r, f = _prf_from_counts(tp[keep], fp[keep], fn[keep])
    mean = (lambda x: float(x.mean())) if keep.any() else (lambda x: float("nan"))
    return {"precision": mean(p), "recall": mean(r), "f1": mean(f)}


def prf(y_true, y_score, threshold: float = 0.5, average: str = "micro") -> dict[str, float]:
    """Precision, recall and F1 of predictions `y_score > threshold` (a 0/0 ratio counts 0); averages as `f1`."""
    return _prf(*_inputs(y_true, y_score), threshold, average)


def f1(y_true, y_score, threshold: float = 0.5, average: str = "micro") -> float:
    """F1 of predictions `y_score > threshold`: micro, macro (labels with positives) or samples (samples with positives)."""
    return prf(y_true, y_score, threshold, average)["f1"]


def precision(y_true, y_score, threshold: float = 0.5, average: str = "micro") -> float:
    """Precision of predictions `y_score > threshold`; averages as `f1`."""
    return prf(y_true, y_score, threshold, average)["precision"]


def recall(y_true, y_score, threshold: float = 0.5, average: str = "micro") -> float:
    """Recall of predictions `y_score > threshold`; averages as `f1`."""
    return prf(y_true, y_score, threshold, average)["recall"]


# ----------------------------------------------------------------------------- calibration

@dataclass(frozen=True)
class Calibration:
    """Expected and maximum calibration error over equal-mass bins, and Brier score."""

    ece: float
    mce: float
    brier: float
    n_bins: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _calibration(t: sp.csr_matrix, s: np.ndarray, n_bins: int) -> Calibration:
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    N = s.size
    p = s.ravel()
    flat_pos = (np.repeat(np.arange(s.shape[0]), np.diff(t.indptr)) * s.shape[1] + t.indices)
    y = np.zeros(N, dtype=bool)
    y[flat_pos] = True
    conf = np.maximum(p, 1 - p)
    correct = (p > 0.5) == y
    if conf.dtype == np.float32:
        # exact lexicographic (conf, correct) sort: float32 steps in [0.5, 1] are >= 2**-24
        key = conf.astype(np.float64) + correct * 2.0**-30
        key.sort()
        conf_s = key.astype(np.float32).astype(np.float64)
        corr_s = key != conf_s
    else:
        order = np.lexsort((correct, conf))
        conf_s, corr_s = conf[order].astype(np.float64), correct[order]
    q, rem = divmod(N, n_bins)
    sizes = np.full(n_bins, q)
    sizes[:rem] += 1
    edges = np.concatenate([[0], np.cumsum(sizes)])
    cc = np.concatenate([[0.0], np.cumsum(conf_s)])
    ca = np.concatenate([[0], np.cumsum(corr_s)])
    gap = np.abs(np.diff(ca[edges]) - np.diff(cc[edges]))
    nz = sizes > 0
    p64 = p.astype(np.float64)
    brier = float((np.dot(p64, p64) - 2 * p64[flat_pos].sum() + len(flat_pos)) / N)
    return Calibration(float(gap.sum() / N), float((gap[nz] / sizes[nz]).max()), brier, n_bins)


def calibration(y_true, y_score, n_bins: int = 500) -> Calibration:
    """ECE, MCE (confidence max(p, 1-p), `n_bins` equal-mass bins) and Brier score over all pairs."""
    return _calibration(*_inputs(y_true, y_score), n_bins)


# ----------------------------------------------------------------------------- information

def binary_entropy(q) -> np.ndarray:
    """Binary entropy in nats of frequencies `q` (any shape); 0 at q in {0, 1}."""
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        h = -(q * np.log(q) + (1 - q) * np.log1p(-q))
    return np.where((q <= 0) | (q >= 1), 0.0, h)


def _knn_radius(a: np.ndarray, k: int) -> np.ndarray:
    """(m,) distance to the k-th nearest other point of each point of the sorted 1-D array `a`."""
    m = len(a)
    pad = np.concatenate([np.full(k, -np.inf), a, np.full(k, np.inf)])
    d = np.full(m, np.inf)
    for j in range(k + 1):
        d = np.minimum(d, np.maximum(a - pad[j:j + m], pad[k + j:k + j + m] - a))
    return d


def _within(a: np.ndarray, r: np.ndarray, k: int) -> np.ndarray:
    """(m,) points of sorted `a` within distance r_i of a_i (itself included); needs < k+1 per side."""
    m = len(a)
    pad = np.concatenate([np.full(k, -np.inf), a, np.full(k, np.inf)])
    c = np.ones(m, dtype=np.int64)
    for o in range(1, k + 1):
        c += (a - pad[k - o:k - o + m]) <= r
        c += (pad[k + o:k + o + m] - a) <= r
    return c


def _count_within(b: np.ndarray, a: np.ndarray, r: np.ndarray) -> np.ndarray:
    """(m,) points of sorted `b` with |b_j - a_i| <= r_i, compared exactly (not a_i +- r_i, which rounds)."""
    nb = len(b)
    if nb == 0:
        return np.zeros(len(a), dtype=np.int64)
    hi = np.searchsorted(b, a + r, side="right")
    lo = np.searchsorted(b, a - r, side="left")
    while True:  # a +- r may be off by an ulp: move each bound until the exact test holds
        dn = (hi > 0) & (b[np.maximum(hi - 1, 0)] - a > r)
        up = (hi < nb) & (b[np.minimum(hi, nb - 1)] - a <= r)
        ldn = (lo > 0) & (a - b[np.maximum(lo - 1, 0)] <= r)
        lup = (lo < nb) & (a - b[np.minimum(lo, nb - 1)] > r)
        if not (dn.any() or up.any() or ldn.any() or lup.any()):
            return hi - lo
        hi = hi - dn + up
        lo = lo - ldn + lup


def _mi_column(xs: np.ndarray, pos: np.ndarray, k: int) -> float:
    """KSG/Ross MI (nats) between sorted column `xs` (n,) and a binary label given by sorted positive values `pos`."""
    n, c1 = len(xs), len(pos)
    first = np.searchsorted(pos, pos, side="left")
    keep = np.ones(n, dtype=bool)
    keep[np.searchsorted(xs, pos, side="left") + (np.arange(c1) - first)] = False
    neg = xs[keep]
    # as sklearn: a class seen once is dropped; the rest is the sample
    used = [a for a in (neg, pos) if len(a) > 1]
    if not used:
        return float("nan")
    full = xs if len(used) == 2 else used[0]
    N = len(full)
    acc = digamma(N)
    for i, a in enumerate(used):
        c = len(a)
        other = used[1 - i] if len(used) == 2 else a[:0]
        kk = min(k, c - 1)
        r = np.nextafter(_knn_radius(a, kk), 0)
        if c < 64 or len(other) > 4 * c:
            m = _count_within(full, a, r)
        else:  # same class from the window, the (few) others by binary search
            m = _within(a, r, kk) + _count_within(other, a, r)
        acc += (c * digamma(kk) - c * digamma(c) - digamma(m).sum()) / N
    return max(0.0, float(acc))


def mutual_info_per_label(y_true, y_score, n_neighbors: int = 3, random_state: int = 0,
                          block: int = 256, progress: bool = False) -> np.ndarray:
    """(n_labels,) MI in nats between each label and its score column, as mutual_info_classif.

    Equals `mutual_info_classif(y_score[:, [j]], y_true[:, j], n_neighbors=n_neighbors,
    random_state=random_state)` for each j: the column is scaled by its standard deviation and
    the same seeded noise (1e-10 * max(1, mean|x|) * N(0, 1)) is added, so the result is
    deterministic. NaN for labels with a single class.
    """
    t, s = _inputs(y_true, y_score)
    n, L = s.shape
    noise = np.random.RandomState(random_state).standard_normal(n)
    tc = t.tocsc()
    tc.sort_indices()
    n_pos = np.diff(tc.indptr)
    out = np.full(L, np.nan)
    for j0 in tqdm(range(0, L, block), disable=not progress, desc="mutual information", leave=False):
        j1 = min(L, j0 + block)
        x = s[:, j0:j1].astype(np.float64)
        sd = np.nanstd(x, axis=0)
        sd[sd < 10 * np.finfo(np.float64).eps] = 1.0
        x /= sd
        x += (1e-10 * np.maximum(1, np.mean(np.abs(x), axis=0))) * noise[:, None]
        xt = np.ascontiguousarray(x.T)
        xt_sorted = np.sort(xt, axis=1)
        for j in range(j0, j1):
            if n_pos[j] == 0 or n_pos[j] == n:
                continue
            rows = tc.indices[tc.indptr[j]:tc.indptr[j + 1]]
            out[j] = _mi_column(xt_sorted[j - j0], np.sort(xt[j - j0, rows]), n_neighbors)
    return out


def entropy_reduction(y_true, y_score, base_rate, n_neighbors: int = 3, random_state: int = 0,
                      progress: bool = False) -> np.ndarray:
    """(n_labels,) MI(score; label) / H(base_rate), clipped to [0, 1]; NaN for single-class labels.

    `base_rate` (n_labels,) is each code's frequency in the whole dataset; H is the binary
    entropy in nats. MI is `mutual_info_per_label` (sklearn mutual_info_classif, k=3).
    """
    t, s = _inputs(y_true, y_score)
    q = np.asarray(base_rate, dtype=np.float64)
    if q.shape != (s.shape[1],):
        raise ValueError(f"base_rate must have shape ({s.shape[1]},), got {q.shape}")
    mi = mutual_info_per_label(t, s, n_neighbors, random_state, progress=progress)
    bad = ~np.isnan(mi) & ((q <= 0) | (q >= 1) | np.isnan(q))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(f"base_rate of label {j} is {q[j]} but the label has both classes here; "
                         "base rates must lie strictly between 0 and 1")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.minimum(mi / binary_entropy(q), 1.0)


def mean_over_folds(values: Sequence[np.ndarray]) -> np.ndarray:
    """(n_labels,) mean of per-fold per-label values over folds where they are not NaN (e.g. both classes)."""
    a = np.vstack([np.asarray(v, dtype=np.float64) for v in values])
    return _nanmean0(a)


def _row_ranks_all(s: np.ndarray) -> np.ndarray:
    """(n, L) rank of every entry within its row, 1 = highest, ties share the worst rank."""
    n, L = s.shape
    srt = np.sort(s, axis=1)
    out = np.empty((n, L), dtype=np.int32)
    for i in range(n):
        out[i] = L - np.searchsorted(srt[i], s[i], side="left")
    return out


def median_ranks(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """(n_labels,) median rank of each code over stays where it is positive, and where it is negative (NaN if none)."""
    t, s = _inputs(y_true, y_score)
    n, L = s.shape
    R = _row_ranks_all(s)
    tc = t.tocsc()
    tc.sort_indices()
    n_pos = np.diff(tc.indptr)
    cols = np.repeat(np.arange(L), n_pos)
    rp = R[tc.indices, cols]
    order = np.lexsort((rp, cols))
    rp = rp[order].astype(np.float64)
    med_pos = np.full(L, np.nan)
    has = np.flatnonzero(n_pos)
    base = tc.indptr[has]
    med_pos[has] = (rp[base + (n_pos[has] - 1) // 2] + rp[base + n_pos[has] // 2]) / 2
    R[tc.indices, cols] = np.iinfo(np.int32).max
    Rt = np.ascontiguousarray(R.T)
    del R
    Rt.sort(axis=1)
    n_neg = n - n_pos
    med_neg = np.full(L, np.nan)
    hn = np.flatnonzero(n_neg)
    med_neg[hn] = (Rt[hn, (n_neg[hn] - 1) // 2].astype(np.float64) + Rt[hn, n_neg[hn] // 2]) / 2
    return med_pos, med_neg


def median_rank_ratio(y_true, y_score) -> np.ndarray:
    """(n_labels,) (median rank on positives - median rank on negatives) / median rank on negatives (Fig 1b)."""
    pos, neg = median_ranks(y_true, y_score)
    return (pos - neg) / neg


# ----------------------------------------------------------------------------- evaluate

def _parse(names: Sequence[str]) -> list[tuple[str, re.Match]]:
    out = []
    for name in names:
        m = _NAME.match(name)
        if m is None:
            raise ValueError(f"unknown metric name {name!r}; known forms: ndcg, ndcg@K, re@R, re_authors@R, "
                             "re_left_out@R, recall@K, "
                             "coverage, lrap, auprc_/auroc_(micro|macro), f1_/precision_/recall_"
                             "(micro|macro|samples), ece, mce, brier")
        out.append((name, m))
    return out


def _group_values(t, s, parsed, threshold: float, n_bins: int, areas, re_float16: bool = True) -> dict[str, float]:
    """Scalar value of each parsed metric on one label group (t, s already restricted)."""
    vals: dict[str, float] = {}
    need_rows = any(m["ndcg"] or m["re"] or m["rk"] or m["rank"] for _, m in parsed)
    r = _rows(t, s) if need_rows else None
    re_names = [(n, float(m["re"])) for n, m in parsed if m["re"]]
    if re_names:
        v = _nanmean0(_re_rows(r, np.array([x for _, x in re_names])))
        vals.update({n: float(x) for (n, _), x in zip(re_names, v)})
    rea = [(n, float(m["rea"])) for n, m in parsed if m["rea"]]
    if rea:
        v = re_at_r_authors(t, s, [x for _, x in rea], float16=re_float16)
        vals.update({n: float(x) for (n, _), x in zip(rea, v)})
    rel = [(n, float(m["rel"])) for n, m in parsed if m["rel"]]
    if rel:
        v = re_left_out_share(t, [x for _, x in rel])
        vals.update({n: float(x) for (n, _), x in zip(rel, v)})
    rk_names = [(n, int(m["rk"])) for n, m in parsed if m["rk"]]
    if rk_names:
        v = _nanmean0(_recall_rows(r, np.array([x for _, x in rk_names])))
        vals.update({n: float(x) for (n, _), x in zip(rk_names, v)})
    micro = None
    prf: dict[str, dict[str, float]] = {}
    cal = None
    for name, m in parsed:
        if m["ndcg"]:
            vals[name] = float(np.mean(_ndcg_rows(r, int(m["ndcg_k"]) if m["ndcg_k"] else None, "pessimistic")))
        elif m["rank"] == "coverage":
            vals[name] = float(np.mean(_coverage_rows(r)))
        elif m["rank"] == "lrap":
            vals[name] = float(np.mean(_lrap_rows(r)))
        elif m["curve"]:
            i = 0 if m["curve"] == "auprc" else 1
            if m["cavg"] == "micro":
                micro = micro or _micro_areas(t, s)
                vals[name] = micro[i]
            else:
                vals[name] = float(_nanmean0(areas[i][:, None])[0])
        elif m["prf"]:
            avg = m["pavg"]
            if avg not in prf:
                prf[avg] = _prf(t, s, threshold, avg)
            vals[name] = prf[avg][m["prf"]]
        elif m["cal"]:
            cal = cal or _calibration(t, s, n_bins)
            vals[name] = getattr(cal, m["cal"])
    return vals


def evaluate(
    y_true,
    y_score,
    groups: Mapping[str, np.ndarray] | None = None,
    *,
    levels: Sequence[str] | np.ndarray | None = None,
    label_mask: np.ndarray | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    threshold: float | Mapping[str, float] = 0.5,
    n_bins: int = 500,
    progress: bool = False,
    re_float16: bool = True,
) -> pd.DataFrame:
    """Tidy table (columns level, metric, value) of `metrics` on each label group.

    `groups` maps a group name to a boolean mask over labels (n_labels,), e.g.
    `cacicd.icd9.level_masks(codes)`; alternatively `levels` (n_labels,) gives each label's level
    name and groups are its levels plus "all". Without either, one group "all". `label_mask`
    (n_labels,) restricts every group (cherry-picked codes, the 50 most frequent). Ranking metrics
    rank each sample's labels within the group. `threshold` may be a dict group -> threshold.
    A group without labels gives NaN values. "re_authors@R" is RE@R the published way
    (`re_at_r_authors`, scores cast to float16 unless `re_float16=False`) and "re_left_out@R" the
    share of samples with a positive that this way leaves out (`re_left_out_share`); "re@R" stays exact.
    """
    t, s = _inputs(y_true, y_score)
    L = s.shape[1]
    if groups is None:
        if levels is not None:
            lv = np.asarray(levels).astype(str)
            if lv.shape != (L,):
                raise ValueError(f"levels must have shape ({L},), got {lv.shape}")
            groups = {name: lv == name for name in dict.fromkeys(lv.tolist())}
            groups["all"] = np.ones(L, dtype=bool)
        else:
            groups = {"all": np.ones(L, dtype=bool)}
    elif levels is not None:
        raise ValueError("pass either groups or levels, not both")
    lm = np.ones(L, dtype=bool) if label_mask is None else np.asarray(label_mask, dtype=bool)
    if lm.shape != (L,):
        raise ValueError(f"label_mask must have shape ({L},), got {lm.shape}")
    parsed = _parse(metrics)
    need_macro = any(m["cavg"] == "macro" for _, m in parsed)
    areas = _label_areas(t, s) if need_macro else None
    rows = []
    for g, mask in tqdm(groups.items(), disable=not progress, desc="evaluate", leave=False):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (L,):
            raise ValueError(f"mask of group {g!r} must have shape ({L},), got {mask.shape}")
        cols = np.flatnonzero(mask & lm)
        thr = threshold[g] if isinstance(threshold, Mapping) else threshold
        if len(cols) == 0:
            logger.warning("group %r has no labels; its metrics are NaN", g)
            vals = {name: float("nan") for name, _ in parsed}
        elif len(cols) == L:
            vals = _group_values(t, s, parsed, thr, n_bins, areas, re_float16)
        else:
            sub_areas = None if areas is None else (areas[0][cols], areas[1][cols])
            vals = _group_values(t[:, cols], np.ascontiguousarray(s[:, cols]), parsed, thr, n_bins, sub_areas,
                                 re_float16)
        rows.extend((g, name, vals[name]) for name, _ in parsed)
    return pd.DataFrame(rows, columns=["level", "metric", "value"])
