"""The paper's models (spec section 6): a feed-forward network and the dummy (label-frequency) model.

`MLP` takes either a dense (B, n_inputs) tensor or a torch sparse CSR/COO tensor: with a sparse
input the first layer is a sparse-dense matmul (most of the 1,166 inputs are zero). Which is
faster is measured by `benchmarks/bench_train.py`; `cacicd.train` picks per device (see there).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn


class SparseInputLinear(nn.Linear):
    """nn.Linear that also accepts a torch sparse input (B, in) and multiplies it sparsely."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.layout == torch.strided:
            return super().forward(x)
        out = torch.sparse.mm(x, self.weight.t())
        return out + self.bias if self.bias is not None else out


class MLP(nn.Module):
    """(len(units)) hidden blocks Linear → [BatchNorm] → ReLU → [Dropout], then `output` = Linear(n_labels).

    With no hidden block (num_layers = 1) it is logistic regression. forward returns logits (B, n_labels).
    """

    def __init__(self, n_inputs: int, n_labels: int, units: Sequence[int] = (), dropout: Sequence[float] = (),
                 batchnorm: bool = False):
        super().__init__()
        units, dropout = list(units), list(dropout)
        if len(dropout) != len(units):
            raise ValueError(f"MLP: {len(units)} hidden layers but {len(dropout)} dropout rates")
        if any(u < 1 for u in units) or any(not 0 <= d < 1 for d in dropout):
            raise ValueError(f"MLP: bad units {units} or dropout {dropout} (units >= 1, 0 <= dropout < 1)")
        if n_inputs < 1 or n_labels < 1:
            raise ValueError(f"MLP: n_inputs={n_inputs} and n_labels={n_labels} must be >= 1")
        self.n_inputs, self.n_labels = n_inputs, n_labels
        self.config = {"units": units, "dropout": dropout, "batchnorm": bool(batchnorm)}
        blocks: list[nn.Module] = []
        width = n_inputs
        for i, (u, d) in enumerate(zip(units, dropout)):
            blocks.append(SparseInputLinear(width, u) if i == 0 else nn.Linear(width, u))
            if batchnorm:
                blocks.append(nn.BatchNorm1d(u))
            blocks.append(nn.ReLU())
            if d > 0:
                blocks.append(nn.Dropout(d))
            width = u
        self.hidden = nn.Sequential(*blocks)
        self.output = SparseInputLinear(width, n_labels) if not units else nn.Linear(width, n_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_inputs) dense or sparse -> (B, n_labels) logits."""
        return self.output(self.hidden(x))


def params_to_layers(params: dict) -> tuple[list[int], list[float], bool]:
    """Search parameters {num_layers, units_0.., dropout_0.., batchnorm} -> (units, dropout, batchnorm)."""
    n_hidden = int(params.get("num_layers", 1)) - 1
    if n_hidden < 0:
        raise ValueError(f"num_layers must be >= 1, got {params.get('num_layers')}")
    try:
        units = [int(params[f"units_{i}"]) for i in range(n_hidden)]
        dropout = [float(params.get(f"dropout_{i}", 0.0)) for i in range(n_hidden)]
    except KeyError as e:
        raise ValueError(f"hyperparameters {sorted(params)} lack {e.args[0]!r} for num_layers={n_hidden + 1}") from None
    return units, dropout, bool(params.get("batchnorm", False))


def build_mlp(n_inputs: int, n_labels: int, params: dict) -> MLP:
    """An MLP from search parameters (see `params_to_layers`)."""
    units, dropout, bn = params_to_layers(params)
    return MLP(n_inputs, n_labels, units, dropout, bn)


class DummyModel:
    """Predicts each label's training-set frequency, the same (n_labels,) row for every stay."""

    def __init__(self, freq: np.ndarray):
        self.freq = np.asarray(freq, dtype=np.float32).ravel()

    @classmethod
    def fit(cls, Y_train: sp.spmatrix | np.ndarray) -> "DummyModel":
        """Frequencies from a (n, L) 0/1 training label matrix."""
        n = Y_train.shape[0]
        if n == 0:
            raise ValueError("DummyModel.fit: empty training set")
        return cls(np.asarray(Y_train.sum(axis=0), dtype=np.float64).ravel() / n)

    def predict(self, n: int | sp.spmatrix | np.ndarray) -> np.ndarray:
        """(n, L) float32 scores for n stays (an int, or a feature matrix whose rows are counted)."""
        n = n if isinstance(n, (int, np.integer)) else n.shape[0]
        return np.broadcast_to(self.freq, (int(n), self.freq.size)).copy()
