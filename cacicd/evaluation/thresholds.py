"""Hard classification with an adaptive per-level threshold (spec section 10, the paper's Appendix K).

From the micro-AUPRC-tuned model: per level, choose on the dev set the threshold that maximises micro
F1 over the cherry-picked codes of that level, then apply it to the test set. Compared (Table S4) with
the micro-F1-tuned models at the fixed threshold 0.5.

One rule for both parts of Table S4, the authors': a stay is predicted positive for a code when its
score is strictly above the threshold (their `y_score > threshold`, as Keras' metrics); micro precision,
recall and F1 pool the (stay, code) pairs of the selected codes, and a 0/0 ratio counts 0 (scikit-learn's
`zero_division` default, through which their numbers went: no predicted positive gives precision 0).
`hard_metrics` computes them with `cacicd.evaluation.metrics.prf`, the function behind the engine's f1 / precision
/ recall metrics, so notebooks 01 and 06 cannot disagree.

The adaptive threshold is chosen as the authors chose it: the dev score t whose `score >= t` gives the
best dev micro F1 (scikit-learn's `precision_recall_curve` and the first arg-max, i.e. the lowest t
among equally good ones), then applied to the test set with the strict rule above.

NaN-safety: a NaN score is never predicted positive (its positives count as false negatives); a level
with no positive in the dev set, or no finite score, gets a NaN threshold and NaN metrics.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cacicd.evaluation import metrics as M

logger = logging.getLogger(__name__)

TABLE_S4_LEVELS: tuple[str, ...] = ("chapter", "subchapter", "3digit", "billing")


def _columns(y_true, scores: np.ndarray, mask: np.ndarray | None) -> tuple[sp.csr_matrix, np.ndarray]:
    """(labels, scores) of the masked columns, 2-D; y_true (n, L) CSR or dense, scores (n, L)."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a 2-D (n, L) array, got shape {scores.shape}")
    if y_true.shape != scores.shape:
        raise ValueError(f"labels have shape {y_true.shape} but scores have shape {scores.shape}")
    y = sp.csr_matrix(y_true)
    if mask is None:
        return y, np.asarray(scores, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (scores.shape[1],):
        raise ValueError(f"column mask has shape {mask.shape}, expected ({scores.shape[1]},)")
    cols = np.flatnonzero(mask)
    return y[:, cols], np.asarray(scores[:, cols], dtype=np.float64)


def best_threshold(y_true, scores: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """(t, dev micro F1 of `scores >= t`) maximising that F1 over the masked columns (the authors' choice).

    y_true: (n, L) 0/1 CSR or dense; scores: (n, L) floats; mask: (L,) bool columns to pool. The lowest
    t among equally good ones (scikit-learn's curve and first arg-max); (NaN, NaN) where no positive or
    no finite score exists.
    """
    y, s = _columns(y_true, scores, mask)
    y = (y.toarray() != 0).ravel()
    s = s.ravel()
    n_pos = int(y.sum())
    finite = np.isfinite(s)
    if n_pos == 0 or not finite.any():
        return float("nan"), float("nan")
    y, s = y[finite], s[finite]
    order = np.argsort(-s, kind="stable")
    s_sorted, tp = s[order], np.cumsum(y[order])
    # cut only between distinct scores: "score >= s_sorted[k]" selects the first k+1 entries and every tie
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    k = np.flatnonzero(last_of_tie)
    f1 = 2.0 * tp[k] / ((k + 1) + n_pos)
    best = int(np.flatnonzero(f1 == f1.max())[-1])  # the lowest threshold among the best
    return float(s_sorted[k[best]]), float(f1[best])


def hard_metrics(y_true, scores: np.ndarray, threshold: float, mask: np.ndarray | None = None) -> dict[str, float]:
    """Micro precision, recall and F1 of `scores > threshold` on the masked columns (0/0 -> 0; NaN threshold -> NaN)."""
    y, s = _columns(y_true, scores, mask)
    if not np.isfinite(threshold):
        return {"precision": float("nan"), "recall": float("nan"), "f1": float("nan")}
    nan = np.isnan(s)
    if nan.any():  # never positive: any value not above the threshold
        s = np.where(nan, min(threshold, float(np.nanmin(s)) if (~nan).any() else threshold), s)
    return M.prf(y, s, threshold, "micro")


def adaptive_threshold_table(y_dev, s_dev: np.ndarray, y_test, s_test: np.ndarray,
                             level_masks: Mapping[str, np.ndarray], code_mask: np.ndarray | None = None,
                             levels: tuple[str, ...] = TABLE_S4_LEVELS) -> pd.DataFrame:
    """Per level: the dev-chosen threshold and the test micro precision/recall/F1 it gives.

    y_dev/s_dev: (n_dev, L) dev labels and scores; y_test/s_test: (n_test, L); level_masks: level ->
    (L,) bool; code_mask: (L,) bool (e.g. cherry-picked codes) intersected with each level.
    Returns columns level, n_codes, threshold, dev_f1, precision, recall, f1.
    """
    rows = []
    for level in levels:
        m = _level_mask(level_masks, level, code_mask)
        t, dev_f1 = best_threshold(y_dev, s_dev, m)
        if not np.isfinite(t):
            logger.warning("level %s: no dev positive among %d codes; threshold undefined", level, int(m.sum()))
        rows.append({"level": level, "n_codes": int(m.sum()), "threshold": t, "dev_f1": dev_f1,
                     **hard_metrics(y_test, s_test, t, m)})
    return pd.DataFrame(rows)


def _level_mask(level_masks: Mapping[str, np.ndarray], level: str, code_mask: np.ndarray | None) -> np.ndarray:
    """The codes of one level, intersected with `code_mask` when given."""
    if level not in level_masks:
        raise ValueError(f"level {level!r} not in level masks {sorted(level_masks)}")
    m = np.asarray(level_masks[level], dtype=bool)
    return m if code_mask is None else m & np.asarray(code_mask, dtype=bool)


def fixed_threshold_table(y_test, s_test: np.ndarray, level_masks: Mapping[str, np.ndarray],
                          code_mask: np.ndarray | None = None, threshold: float = 0.5,
                          levels: tuple[str, ...] = TABLE_S4_LEVELS) -> pd.DataFrame:
    """Per level: test micro precision/recall/F1 at a fixed threshold (0.5), same columns as the adaptive table."""
    rows = []
    for level in levels:
        m = _level_mask(level_masks, level, code_mask)
        rows.append({"level": level, "n_codes": int(m.sum()), "threshold": threshold, "dev_f1": float("nan"),
                     **hard_metrics(y_test, s_test, threshold, m)})
    return pd.DataFrame(rows)
