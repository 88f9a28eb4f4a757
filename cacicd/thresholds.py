"""Hard classification with an adaptive per-level threshold (spec section 10, the paper's Appendix K).

From the micro-AUPRC-tuned model: per level, choose on the dev set the threshold that maximises micro
F1 over the cherry-picked codes of that level, then apply it to the test set. Compared (Table S4) with
the micro-F1-tuned models at the fixed threshold 0.5.

NaN-safety: a NaN score is never predicted positive (its positives count as false negatives); a
level with no positive in the dev set, or no finite score, gets a NaN threshold and NaN metrics;
precision with no predicted positive is NaN (not 0), so averages over folds can skip it.
A stay is predicted positive for a code when its score is >= the threshold.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)

TABLE_S4_LEVELS: tuple[str, ...] = ("chapter", "subchapter", "3digit", "billing")


def _select(y_true, scores: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Flattened (labels, scores) of the masked columns; y_true (n, L) CSR or dense, scores (n, L)."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a 2-D (n, L) array, got shape {scores.shape}")
    if y_true.shape != scores.shape:
        raise ValueError(f"labels have shape {y_true.shape} but scores have shape {scores.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (scores.shape[1],):
            raise ValueError(f"column mask has shape {mask.shape}, expected ({scores.shape[1]},)")
        cols = np.flatnonzero(mask)
        y = y_true[:, cols]
        s = scores[:, cols]
    else:
        y, s = y_true, scores
    y = y.toarray() if sp.issparse(y) else np.asarray(y)
    return (y.ravel() != 0), np.asarray(s, dtype=np.float64).ravel()


def best_threshold(y_true, scores: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """(threshold, micro F1 there) maximising micro F1 of `scores >= threshold` on the masked columns.

    y_true: (n, L) 0/1 CSR or dense; scores: (n, L) floats; mask: (L,) bool columns to pool.
    The highest threshold among equally good ones is returned; (NaN, NaN) where no positive or no
    finite score exists.
    """
    y, s = _select(y_true, scores, mask)
    n_pos = int(y.sum())
    finite = np.isfinite(s)
    if n_pos == 0 or not finite.any():
        return float("nan"), float("nan")
    y, s = y[finite], s[finite]
    order = np.argsort(-s, kind="stable")
    s_sorted, tp = s[order], np.cumsum(y[order])
    # cut only between distinct scores: predicting "score >= s_sorted[k]" selects the first k+1 entries
    # and every entry tied with entry k
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    k = np.flatnonzero(last_of_tie)
    f1 = 2.0 * tp[k] / ((k + 1) + n_pos)
    best = int(np.argmax(f1))  # first maximum: the highest threshold
    return float(s_sorted[k[best]]), float(f1[best])


def hard_metrics(y_true, scores: np.ndarray, threshold: float, mask: np.ndarray | None = None) -> dict[str, float]:
    """Micro precision, recall and F1 of `scores >= threshold` on the masked columns (NaN where undefined)."""
    y, s = _select(y_true, scores, mask)
    if not np.isfinite(threshold):
        return {"precision": float("nan"), "recall": float("nan"), "f1": float("nan")}
    pred = s >= threshold  # NaN scores compare False: never positive
    tp = float(np.sum(pred & y))
    n_pred, n_pos = float(pred.sum()), float(y.sum())
    precision = tp / n_pred if n_pred else float("nan")
    recall = tp / n_pos if n_pos else float("nan")
    f1 = 2 * tp / (n_pred + n_pos) if (n_pred + n_pos) else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1}


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
