"""Loss plug-ins: each takes logits, targets and the label metadata, and returns a scalar loss.

The training loop only knows `make_loss(name, ctx, **hparams)`; the methods of spec sections 7–9
register themselves in LOSSES without touching the loop. `LabelContext` carries what they need.

Contract: `forward(logits (B, L), targets (B, L) 0/1, model=None) -> scalar`.
Decisions:
- Reduction: every loss is a mean over all B*L (stay, label) pairs, like plain BCE (Keras'
  binary cross-entropy as the authors used it); per-label weights multiply the pair terms and are
  not renormalised per batch.
- Penalties (hier_l2, output_l2) are added to every batch's mean loss as is, λ·R(model.output),
  as a Keras kernel regulariser does; `model.output` is the final nn.Linear (weight (L, H)).
- Tree edges link each label to its nearest ancestor present among the labels (identical to the
  direct parent on rolled-up label sets; a label set without ancestors, e.g. billing codes only,
  has no edges and the hierarchical losses reduce to BCE).
- Each loss class names its inference output rule in `output_rule` (`mcloss`: "rollup", others
  "identity"); see `cacicd.models.outputs.make_output_rule`.
- Targets are 0/1. BCE with logits is computed as softplus((1 − 2y)·z), the loss of the other class's
  logit (for 0/1 targets the same value as PyTorch's (1 − y)·z − log σ(z), without its slow CPU
  log-sigmoid), its gradient as (σ(z) − y) times the weights, both in one pass
  (`cacicd.models.kernels.bce_terms`) into a (B, L) buffer reused from batch to batch (`Scratch`);
  focal loss likewise (σ(u)^γ·softplus(u), u = (1 − 2y)·z). The BCE family (`BCELoss` and its
  subclasses: weights, penalties) can also start from the last hidden activations (`on_output`),
  fused with a bfloat16 output layer (`cacicd.models.network.MixedLinear.bce`).
"""
from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from cacicd.models import kernels
from cacicd.models.labels import LabelContext


# ---------------------------------------------------------------------------------------------
# BCE with logits of 0/1 targets: softplus instead of log-sigmoid, temporaries reused

class Loan:
    """Tensors lent by a `Scratch` to one autograd graph; they go back when the loan (the graph) is freed."""

    __slots__ = ("scratch", "tensors")

    def __init__(self, scratch: "Scratch", tensors: list[torch.Tensor]):
        self.scratch, self.tensors = scratch, tensors

    def __del__(self) -> None:
        self.scratch.give_back(self.tensors)


class Scratch:
    """Reusable (B, L) tensors of a loss's forward and backward: no large tensor allocated per batch."""

    # A set is lent to one call and kept by its autograd graph until the graph is freed: a graph still
    # alive (a loss not yet backpropagated, a retained graph) never shares its tensors with another.
    # The lock is reentrant: a loan freed by the garbage collector inside `lend` gives its set back.

    def __init__(self, keep: int = 2):
        self.keep = keep
        self._free: list[list[torch.Tensor]] = []
        self._lock = threading.RLock()

    def lend(self, like: torch.Tensor, n: int) -> Loan:
        """n contiguous tensors of `like`'s shape, dtype and device (reused when a free set matches)."""
        with self._lock:
            for i, ts in enumerate(self._free):
                t = ts[0]
                if len(ts) == n and t.shape == like.shape and t.dtype == like.dtype and t.device == like.device:
                    return Loan(self, self._free.pop(i))
        return Loan(self, [torch.empty(like.shape, dtype=like.dtype, device=like.device) for _ in range(n)])

    def give_back(self, tensors: list[torch.Tensor]) -> None:
        """Return a lent set (kept for reuse up to `keep` sets)."""
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(tensors)

    def __getstate__(self) -> dict:
        """Pickle and deepcopy without the tensors or the lock (a cache)."""
        return {"keep": self.keep}

    def __setstate__(self, state: dict) -> None:
        """Rebuild an empty scratch."""
        self.__init__(state["keep"])


def _check_targets(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if targets.shape != logits.shape:
        raise ValueError(f"targets of shape {tuple(targets.shape)} for logits of shape {tuple(logits.shape)}")
    if targets.dtype == logits.dtype and targets.device == logits.device:
        return targets
    return targets.to(device=logits.device, dtype=logits.dtype)


class _BCEWithLogits(torch.autograd.Function):
    """Σ f·softplus((1 − 2y)·z) / N for 0/1 targets y, f = w·(1 + (pw − 1)·y) (w, pw: (L,) or None).

    The loss and its gradient come from one fused pass (`kernels.bce_terms`); the gradient is kept for backward.
    """

    @staticmethod
    def forward(ctx, logits, targets, weight, pos_weight, scratch):
        scale = torch.tensor(1.0 / logits.numel(), dtype=logits.dtype, device=logits.device)
        loan = scratch.lend(logits, 1)
        total = kernels.run(kernels.bce_terms, kernels.bce_terms_eager, logits, targets, weight,
                            kernels.positive_term(weight, pos_weight), scale, loan.tensors[0])
        if ctx.needs_input_grad[0]:
            ctx.loan = loan
        return total / logits.numel()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        g = ctx.loan.tensors[0]
        if not kernels.unit(grad):  # a loss term scaled or summed with others
            g.mul_(grad)
        return g, None, None, None, None


class _FocalWithLogits(torch.autograd.Function):
    """Σ σ(u)^γ·softplus(u) / N with u = (1 − 2y)·z, for 0/1 targets y and γ > 0."""

    @staticmethod
    def forward(ctx, logits, targets, gamma, scratch):
        loan = scratch.lend(logits, 5)
        q, a, qg, p, t = loan.tensors
        u = torch.addcmul(logits, logits, targets, value=-2, out=q)
        torch.ops.aten.softplus.out(u, 1.0, kernels.SOFTPLUS_LINEAR, out=a)  # −log p_t
        torch.neg(u, out=p).sigmoid_()  # p_t
        torch.sigmoid(u, out=q)  # 1 − p_t, accurate where it is tiny
        torch.pow(q, gamma, out=qg)
        out = torch.mul(qg, a, out=t).sum().div_(logits.numel())
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(targets)
            ctx.loan, ctx.gamma = loan, gamma
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (targets,) = ctx.saved_tensors
        q, a, qg, p, t = ctx.loan.tensors
        # d/du σ(u)^γ·softplus(u) = σ(u)^γ·(γ·σ(−u)·softplus(u) + σ(u)); d/dz = (1 − 2y)·d/du
        torch.mul(p, a, out=t).mul_(ctx.gamma).add_(q).mul_(qg)
        t.addcmul_(t, targets, value=-2)
        return t.mul_(grad / t.numel()), None, None, None


class LogitLoss(nn.Module):
    """Base of the losses: BCE with logits (and focal loss) of 0/1 targets on reused temporaries."""

    def __init__(self):
        super().__init__()
        self.scratch = Scratch()

    def bce(self, logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None,
            pos_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over all pairs of −[pos_weight·y·log σ(z) + (1−y)·log(1−σ(z))]·weight, for 0/1 targets y."""
        targets = _check_targets(logits, targets)
        if weight is not None:
            weight = weight.to(device=logits.device, dtype=logits.dtype)
        if pos_weight is not None:
            pos_weight = pos_weight.to(device=logits.device, dtype=logits.dtype)
        return _BCEWithLogits.apply(logits, targets, weight, pos_weight, self.scratch)

    def focal(self, logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
        """Mean over all pairs of −(1 − p_t)^γ log p_t, p_t = σ(z) if y = 1 else 1 − σ(z), y 0/1."""
        if gamma == 0:
            return self.bce(logits, targets)
        return _FocalWithLogits.apply(logits, _check_targets(logits, targets), float(gamma), self.scratch)


class BCELoss(LogitLoss):
    """Plain binary cross-entropy with logits, averaged over every (stay, label) pair.

    Subclasses weight the pairs (`bce_weights`) or add a penalty of the model (`extra`); `on_output` computes the
    same loss from the last hidden activations, fused with the output layer where it can.
    """

    def __init__(self, ctx: LabelContext):
        super().__init__()

    def bce_weights(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(weight, pos_weight) of the pairs: (L,) tensors or None."""
        return None, None

    def extra(self, model: nn.Module | None) -> torch.Tensor | None:
        """What is added to the BCE (None: nothing)."""
        return None

    def _plus_extra(self, loss: torch.Tensor, model: nn.Module | None) -> torch.Tensor:
        pen = self.extra(model)
        return loss if pen is None else loss + pen

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
        return self._plus_extra(self.bce(logits, targets, *self.bce_weights()), model)

    def on_output(self, output: nn.Module, h: torch.Tensor, targets: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """forward(output(h), targets, model): BCE and the output layer in one pass where `output.fuses_bce()`."""
        if not (hasattr(output, "fuses_bce") and output.fuses_bce()):
            return self(output(h).float(), targets, model)
        if targets.shape != (h.shape[0], output.out_features):
            raise ValueError(f"targets of shape {tuple(targets.shape)} for logits of shape "
                             f"{(h.shape[0], output.out_features)}")
        weight, pos_weight = (None if t is None else t.to(device=h.device, dtype=torch.float32)
                              for t in self.bce_weights())
        targets = targets.to(device=h.device, dtype=torch.float32)
        return self._plus_extra(output.bce(h, targets, weight, pos_weight), model)


LOSSES: dict[str, Callable[..., nn.Module]] = {"bce": BCELoss}


def make_loss(name: str, ctx: LabelContext, **hparams) -> nn.Module:
    """Instantiate a registered loss by name."""
    try:
        factory = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(sorted(LOSSES))}") from None
    import inspect

    accepted = set(inspect.signature(factory).parameters) - {"ctx"}
    extra = sorted(set(hparams) - accepted)
    if extra:
        raise ValueError(f"loss {name!r} takes hyperparameters {sorted(accepted) or 'none'}, got {extra}")
    return factory(ctx, **hparams)


# ---------------------------------------------------------------------------------------------
# Weighted BCE family (spec sections 7 and 9)

LEVEL_GROUPS: dict[str, str] = {"chapter": "chapter", "subchapter": "subchapter", "3digit": "3digit",
                                "4digit": "4-5digit", "5digit": "4-5digit"}


def reweighted_weights(levels: np.ndarray) -> np.ndarray:
    """(L,) weights w_j = N_all / N_L(j) over level groups (chapter, subchapter, 3digit, 4-5digit), mean 1."""
    levels = np.asarray(levels, dtype=object)
    unknown = sorted(set(levels) - set(LEVEL_GROUPS))
    if unknown:
        raise ValueError(f"unknown level name(s) {unknown}; expected {sorted(LEVEL_GROUPS)}")
    groups = np.array([LEVEL_GROUPS[lv] for lv in levels], dtype=object)
    _, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    w = len(levels) / sizes[inverse].astype(np.float64)
    return w / w.mean() if len(w) else w


class ReweightedBCE(BCELoss):
    """Re-weighted multitask BCE (spec 7): the same per-label weight for y=0 and y=1."""

    def __init__(self, ctx: LabelContext):
        super().__init__(ctx)
        self.register_buffer("weight", torch.as_tensor(reweighted_weights(ctx.levels), dtype=torch.float32))

    def bce_weights(self):
        return self.weight, None


def irw_weights(train_counts: np.ndarray, n_train: int, cap: float) -> tuple[np.ndarray, np.ndarray]:
    """IRW (w0, w1), each (L,): w0 = 1, w1 = min(N_train / n_j − 1, cap); n_j = 0 gets w1 = cap."""
    n = np.asarray(train_counts, dtype=np.float64)
    with np.errstate(divide="ignore"):
        ir = np.where(n > 0, n_train / np.maximum(n, 1) - 1.0, np.inf)
    return np.ones_like(n), np.minimum(ir, cap)


def irnw_weights(train_counts: np.ndarray, n_train: int, cap: float) -> tuple[np.ndarray, np.ndarray]:
    """IRNW (w0, w1): w0 = 1 and IRW's w1 divided by 1 + f_j·(w1_j − 1), f_j = n_j / N_train.

    As the authors ran it (keras_extra divides the (L, 2) weight matrix element-wise by
    z = 1 + f·(w − 1), whose negative column is 1): only the positive weight is normalised. A zero
    divisor (n_j = N_train, so w1 = 0) is taken as 1 (their code would give 0/0 = NaN).
    """
    w0, w1 = irw_weights(train_counts, n_train, cap)
    f = np.asarray(train_counts, dtype=np.float64) / n_train
    div = 1.0 + f * (w1 - 1.0)
    div = np.where(div > 0, div, 1.0)
    return w0, w1 / div


def _check_cap(cap: float) -> float:
    if not np.isfinite(cap) or cap <= 0:
        raise ValueError(f"cap must be a positive finite number, got {cap!r}")
    return float(cap)


class IRWLoss(BCELoss):
    """Imbalance Ratio Weighting (spec 9): weight 1 on y=0, min(IR_j, cap) on y=1.

    IR_j = N_train / n_j − 1. A label never positive in training (n_j = 0) has an infinite ratio and
    gets w1 = cap (its positives never occur in training, so only finiteness matters); a label
    positive in every training stay gets w1 = 0, as the formula says.
    """

    def __init__(self, ctx: LabelContext, cap: float = 10.0):
        super().__init__(ctx)
        w0, w1 = self._weights(ctx, _check_cap(cap))
        self.register_buffer("weight", torch.as_tensor(w0, dtype=torch.float32))
        self.register_buffer("pos_weight", torch.as_tensor(w1 / w0, dtype=torch.float32))

    @staticmethod
    def _weights(ctx, cap):
        return irw_weights(ctx.train_counts, ctx.n_train, cap)

    def bce_weights(self):
        return self.weight, self.pos_weight


class IRNWLoss(IRWLoss):
    """Imbalance Ratio Normalised Weighting (spec 9): IRW's positive weight / (1 + f_j·(w1_j − 1)), f_j = n_j / N_train."""

    @staticmethod
    def _weights(ctx, cap):
        return irnw_weights(ctx.train_counts, ctx.n_train, cap)


class FocalLoss(LogitLoss):
    """Focal loss without α (spec 9): −(1 − p_t)^γ log p_t, from logits, mean over all pairs."""

    def __init__(self, ctx: LabelContext, gamma: float = 2.0):
        super().__init__()
        if not np.isfinite(gamma) or gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma!r}")
        self.gamma = float(gamma)

    def forward(self, logits, targets, model=None):
        return self.focal(logits, targets, self.gamma)


# ---------------------------------------------------------------------------------------------
# Hierarchical losses (spec section 8)

class ConstrainedBCE(LogitLoss):
    """BCE with logits on hierarchy-constrained logits z̃ (`constrained_logits`, defined by each subclass)."""

    def __init__(self, ctx: LabelContext):
        super().__init__()
        self.tree = ctx.tree()

    def constrained_logits(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, L) z̃ from logits and 0/1 targets."""
        raise NotImplementedError

    def forward(self, logits, targets, model=None):
        return self.bce(self.constrained_logits(logits, targets), targets)


class MCLoss(ConstrainedBCE):
    """MCLoss (Giunchiglia & Lukasiewicz 2020): BCE with logits on z̃; inference with roll-up.

    z̃_j = max over k in D(j) with y_k = 1 of z_k if y_j = 1, else max over k in D(j) of z_k.
    """

    output_rule = "rollup"

    def constrained_logits(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, L) z̃ of MCLoss."""
        pos = targets > 0.5
        keys = self.tree.keys(logits)
        idx = torch.where(pos, self.tree.argmax_down(logits, mask=pos, keys=keys),
                          self.tree.argmax_down(logits, keys=keys))
        return logits.gather(1, idx)


class TreeMinLoss(ConstrainedBCE):
    """TreeMin (Ouyang et al.): BCE with logits on z̃; inference a plain sigmoid.

    z̃_j = min over k in A(j) of z_k if y_j = 1, else max over k in D(j) of z_k.
    """

    def constrained_logits(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(B, L) z̃ of TreeMin."""
        keys = self.tree.keys(logits)
        idx = torch.where(targets > 0.5, self.tree.argmin_up(logits, keys=keys),
                          self.tree.argmax_down(logits, keys=keys))
        return logits.gather(1, idx)


def _output_layer(model: nn.Module | None, n_labels: int) -> nn.Linear:
    layer = getattr(model, "output", None)
    if not isinstance(layer, nn.Linear):
        raise ValueError("this loss regularises the output layer: pass a model whose `.output` is the final nn.Linear")
    if layer.out_features != n_labels:
        raise ValueError(f"model.output has {layer.out_features} outputs but the label set has {n_labels}")
    return layer


def _check_lam(lam: float) -> float:
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    return float(lam)


class _TreeSquaredDiff(torch.autograd.Function):
    """Σ_j ‖W[up_j] − W_j‖² for W (L, H) and up (L,) = parent index, or j itself for a root.

    Hand-written backward to keep to two (L, H) temporaries: the output layer can hold ~10^7 weights.
    """

    @staticmethod
    def forward(fctx, w: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        d = w.index_select(0, up).sub_(w)
        fctx.save_for_backward(d, up)
        return torch.dot(d.view(-1), d.view(-1))

    @staticmethod
    def backward(fctx, g: torch.Tensor):
        d, up = fctx.saved_tensors
        d2 = d.mul(2 * g)
        grad = d2.neg().index_add_(0, up, d2)
        return grad, None


class HierL2Loss(BCELoss):
    """BCE + λ·Σ over tree edges (p, c) of ‖[w_p; b_p] − [w_c; b_c]‖² on the output layer."""

    def __init__(self, ctx: LabelContext, lam: float = 1e-10):
        super().__init__(ctx)
        self.lam = _check_lam(lam)
        self.n_labels = len(ctx.codes)
        up = np.arange(self.n_labels, dtype=np.int64)
        up[np.asarray(ctx.child_idx, dtype=np.int64)] = ctx.parent_idx
        self.register_buffer("up", torch.as_tensor(up))

    def penalty(self, model: nn.Module | None) -> torch.Tensor:
        """Σ over edges of ‖[w_p; b_p] − [w_c; b_c]‖² (unscaled)."""
        layer = _output_layer(model, self.n_labels)
        up = self.up.to(layer.weight.device)
        pen = _TreeSquaredDiff.apply(layer.weight, up)
        if layer.bias is not None:
            pen = pen + (layer.bias.index_select(0, up) - layer.bias).square().sum()
        return pen

    def extra(self, model):
        return self.lam * self.penalty(model)


class OutputL2Loss(BCELoss):
    """BCE + λ·‖W_output‖² (weights only, not the bias)."""

    def __init__(self, ctx: LabelContext, lam: float = 1e-9):
        super().__init__(ctx)
        self.lam = _check_lam(lam)
        self.n_labels = len(ctx.codes)

    def extra(self, model):
        w = _output_layer(model, self.n_labels).weight
        return self.lam * torch.linalg.vector_norm(w).square()


LOSSES.update({
    "reweighted_bce": ReweightedBCE,
    "mcloss": MCLoss,
    "treemin": TreeMinLoss,
    "hier_l2": HierL2Loss,
    "output_l2": OutputL2Loss,
    "irw": IRWLoss,
    "irnw": IRNWLoss,
    "focal": FocalLoss,
})

LOSS_SPACES: dict[str, dict[str, tuple[str, float, float]]] = {
    "hier_l2": {"lam": ("loguniform", 1e-15, 5e-6)},
    "output_l2": {"lam": ("loguniform", 1e-14, 1e-4)},
    "irw": {"cap": ("loguniform", 1.0, 200.0)},
    "irnw": {"cap": ("loguniform", 1.0, 200.0)},
    "focal": {"gamma": ("uniform", 1.0, 4.0)},
}


def output_rule_for(name: str) -> str:
    """The inference output rule of a loss: 'rollup' for mcloss, else 'identity'."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(sorted(LOSSES))}")
    return getattr(LOSSES[name], "output_rule", "identity")
