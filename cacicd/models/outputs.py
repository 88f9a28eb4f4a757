"""Output rules on probabilities (identity, roll-up, roll-down; spec section 8), computed on the label
tree of a `cacicd.models.labels.LabelContext`.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cacicd.models.labels import LabelContext

OutputRule = Callable[[np.ndarray], np.ndarray]


def _checked(probs: np.ndarray, n_labels: int) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != n_labels:
        raise ValueError(f"probabilities have shape {probs.shape}, expected (n, {n_labels})")
    return probs


def make_output_rule(name: str, ctx: LabelContext) -> OutputRule:
    """An output rule by name: callable (n, L) probabilities -> (n, L) probabilities (a new array)."""
    n_labels = len(ctx.codes)
    if name == "identity":
        return lambda probs: np.array(_checked(probs, n_labels), copy=True)
    if name not in ("rollup", "rolldown"):
        raise ValueError(f"unknown output rule {name!r}; known: {', '.join(OUTPUT_RULES)}")
    tree = ctx.tree()
    if name == "rollup":
        return lambda probs: tree.max_down_np(_checked(probs, n_labels))
    return lambda probs: tree.min_up_np(_checked(probs, n_labels))


OUTPUT_RULES: tuple[str, ...] = ("identity", "rollup", "rolldown")
