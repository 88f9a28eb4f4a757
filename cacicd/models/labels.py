"""The label hierarchy shared by the losses and the output rules: `LabelContext` (label metadata) and
`TreeLayers` (its tree, grouped by depth, with vectorised max/min over descendants/ancestors).

The label tree is given by edges (parent_idx, child_idx) among the label columns (each label has at
most one parent: its nearest ancestor present among the labels). Edges are grouped by the depth of
their child, so a max over descendants (D(j) = j and its descendants) is a bottom-up sweep of one
vectorised reduction per depth, and a min over ancestors (A(j) = j and its ancestors) a top-down sweep
of one gather per depth: ICD-9-CM has depth <= 5, so <= 4 sweeps and no Python loop over labels. The
same layers serve numpy (inference) and torch (training, with gradients through max/min to the
arg-extreme).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from cacicd import icd9


class TreeLayers:
    """Tree edges among n labels grouped by child depth, top-down; caches torch copies per device."""

    def __init__(self, parent_idx: np.ndarray, child_idx: np.ndarray, n: int):
        par = np.asarray(parent_idx, dtype=np.int64).ravel()
        chi = np.asarray(child_idx, dtype=np.int64).ravel()
        if par.shape != chi.shape:
            raise ValueError(f"parent_idx has {par.size} edges but child_idx has {chi.size}")
        if par.size and (min(par.min(), chi.min()) < 0 or max(par.max(), chi.max()) >= n):
            raise ValueError(f"edge index out of range [0, {n})")
        if np.any(par == chi):
            raise ValueError(f"self-loop on label {int(chi[par == chi][0])}")
        if np.unique(chi).size != chi.size:
            raise ValueError("a label has several parents: the edges are not a forest")
        parent_of = np.full(n, -1, dtype=np.int64)
        parent_of[chi] = par
        depth = np.zeros(n, dtype=np.int64)
        for _ in range(n + 1):  # fixed point of depth = depth[parent] + 1; converges in max-depth steps
            new = np.where(parent_of >= 0, depth[np.maximum(parent_of, 0)] + 1, 0)
            if np.array_equal(new, depth):
                break
            depth = new
        else:
            raise ValueError("the edges contain a cycle")
        self.n = int(n)
        self.depth = depth  # 0 for roots
        self.parent_idx, self.child_idx = par, chi
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []  # (parents, children), child depth 1, 2, ...
        self._reduce: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # per layer, for np reduceat
        for d in range(1, int(depth.max(initial=0)) + 1):
            m = depth[chi] == d
            p, c = par[m], chi[m]
            order = np.argsort(p, kind="stable")
            p, c = p[order], c[order]
            self.layers.append((p, c))
            uniq, starts = np.unique(p, return_index=True)
            self._reduce.append((uniq, starts, c))
        self._torch: dict[torch.device, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def torch_layers(self, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The layers as int64 tensors on `device` (cached)."""
        device = torch.device(device)
        if device not in self._torch:
            self._torch[device] = [(torch.as_tensor(p, device=device), torch.as_tensor(c, device=device))
                                   for p, c in self.layers]
        return self._torch[device]

    # ---- numpy (inference) ----
    def max_down_np(self, x: np.ndarray) -> np.ndarray:
        """(n, L) -> (n, L): out[:, j] = max over k in D(j) of x[:, k]."""
        out = np.array(x, copy=True)
        for uniq, starts, c in reversed(self._reduce):
            red = np.maximum.reduceat(out[:, c], starts, axis=1)
            out[:, uniq] = np.maximum(out[:, uniq], red)
        return out

    def min_up_np(self, x: np.ndarray) -> np.ndarray:
        """(n, L) -> (n, L): out[:, j] = min over k in A(j) of x[:, k]."""
        out = np.array(x, copy=True)
        for p, c in self.layers:
            out[:, c] = np.minimum(out[:, c], out[:, p])
        return out

    # ---- torch (training, differentiable) ----
    # The sweeps run without autograd on int64 keys that pack (value as an order-preserving int32,
    # column index): one in-place scatter_reduce per depth yields both the extreme value and where it
    # sits; the result is a single differentiable gather, so the gradient of max/min goes to the
    # arg-extreme (on ties the highest column index: a valid subgradient, deterministic).
    @staticmethod
    def keys(z: torch.Tensor) -> torch.Tensor:
        """(B, L) float -> (B, L) int64 keys ordered like (float32(z), column)."""
        k = z.detach().to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
        k ^= (k >> 31) & 0x7FFFFFFF  # negative floats: flip the magnitude bits, so int order = float order
        k <<= 32
        k |= torch.arange(z.shape[1], device=z.device, dtype=torch.int64)
        return k

    def argmax_down(self, z: torch.Tensor, mask: torch.Tensor | None = None,
                    keys: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) -> (B, L) int64: the column k in D(j) of the largest z[:, k] (only where mask, if given).

        `keys` (from `keys(z)`, not modified) saves recomputing them.
        """
        keys = self.keys(z) if keys is None else keys
        keys = keys.clone() if mask is None else keys.masked_fill(~mask, torch.iinfo(torch.int64).min)
        for p, c in reversed(self.torch_layers(z.device)):
            keys.scatter_reduce_(1, p.expand(z.shape[0], -1), keys.index_select(1, c), reduce="amax")
        return keys.bitwise_and_(0xFFFFFFFF)

    def argmin_up(self, z: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) -> (B, L) int64: the column k in A(j) of the smallest z[:, k]."""
        keys = self.keys(z) if keys is None else keys.clone()
        for p, c in self.torch_layers(z.device):
            keys.scatter_reduce_(1, c.expand(z.shape[0], -1), keys.index_select(1, p), reduce="amin")
        return keys.bitwise_and_(0xFFFFFFFF)

    def max_down(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L): out[:, j] = max over k in D(j) of z[:, k], differentiable."""
        return z.gather(1, self.argmax_down(z))

    def min_up(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, L): out[:, j] = min over k in A(j) of z[:, k], differentiable."""
        return z.gather(1, self.argmin_up(z))


@dataclass
class LabelContext:
    """Label metadata for losses and output rules. Arrays are over the model's label columns."""

    codes: list[str]
    levels: np.ndarray  # level name of each label
    train_counts: np.ndarray  # positives per label in the training set
    n_train: int
    parent_idx: np.ndarray = field(default=None)  # tree edges among the labels
    child_idx: np.ndarray = field(default=None)
    _tree: TreeLayers | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.codes)
        self.levels = np.asarray(self.levels, dtype=object)
        self.train_counts = np.asarray(self.train_counts)
        for name in ("levels", "train_counts"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"LabelContext.{name} has shape {getattr(self, name).shape}, expected ({n},)")
        if np.any(self.train_counts < 0) or np.any(self.train_counts > self.n_train):
            raise ValueError(f"LabelContext.train_counts must lie in [0, n_train={self.n_train}]")
        if self.parent_idx is None or self.child_idx is None:
            self.parent_idx, self.child_idx = icd9.hierarchy_edges(self.codes, nearest=True)

    def tree(self) -> TreeLayers:
        """The label tree grouped by depth (cached), for vectorised max/min over descendants/ancestors."""
        if self._tree is None:
            self._tree = TreeLayers(self.parent_idx, self.child_idx, len(self.codes))
        return self._tree

    @classmethod
    def from_labels(cls, codes: Sequence[str], Y_train: sp.spmatrix | np.ndarray) -> "LabelContext":
        """Build the context from the label codes and the training label matrix."""
        counts = np.asarray(Y_train.sum(axis=0)).ravel().astype(np.int64)
        return cls(list(codes), icd9.levels_of(codes), counts, int(Y_train.shape[0]))

    def ancestor_matrix(self) -> sp.csr_matrix:
        """A[i, j] = 1 when label j is label i or one of its ancestors."""
        return icd9.ancestor_matrix(self.codes)
