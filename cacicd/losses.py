"""Loss plug-ins: each takes logits, targets and the label metadata, and returns a scalar loss.

The training loop only knows `make_loss(name, ctx, **hparams)`; later methods (spec sections 7–9)
register themselves in LOSSES without touching the loop. `LabelContext` carries what they need.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from . import icd9


@dataclass
class LabelContext:
    """Label metadata for losses and output rules. Arrays are over the model's label columns."""

    codes: list[str]
    levels: np.ndarray  # level name of each label
    train_counts: np.ndarray  # positives per label in the training set
    n_train: int
    parent_idx: np.ndarray = field(default=None)  # tree edges among the labels
    child_idx: np.ndarray = field(default=None)

    def __post_init__(self) -> None:
        if self.parent_idx is None or self.child_idx is None:
            self.parent_idx, self.child_idx = icd9.hierarchy_edges(self.codes)

    @classmethod
    def from_labels(cls, codes: Sequence[str], Y_train: sp.spmatrix | np.ndarray) -> "LabelContext":
        """Build the context from the label codes and the training label matrix."""
        counts = np.asarray(Y_train.sum(axis=0)).ravel().astype(np.int64)
        return cls(list(codes), icd9.levels_of(codes), counts, int(Y_train.shape[0]))

    def ancestor_matrix(self) -> sp.csr_matrix:
        """A[i, j] = 1 when label j is label i or one of its ancestors."""
        return icd9.ancestor_matrix(self.codes)


class BCELoss(nn.Module):
    """Plain binary cross-entropy with logits, averaged over every (stay, label) pair."""

    def __init__(self, ctx: LabelContext):
        super().__init__()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets)


LOSSES: dict[str, Callable[..., nn.Module]] = {"bce": BCELoss}


def make_loss(name: str, ctx: LabelContext, **hparams) -> nn.Module:
    """Instantiate a registered loss by name."""
    try:
        factory = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(sorted(LOSSES))}") from None
    return factory(ctx, **hparams)
