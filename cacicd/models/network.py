"""The paper's models (spec section 6): a feed-forward network and the dummy (label-frequency) model.

`MLP` takes a dense (B, n_inputs) tensor or a torch sparse CSR batch. With a sparse batch the first
layer is an embedding-bag of the active inputs weighted by their values (age is a float), so its
cost follows the number of prescribed ingredients, not n_inputs; its weight is stored input-major
(`weight.t()` is contiguous) so each bag reads whole rows. `state_dict` keys and shapes are those of
plain nn.Linear layers.

Layers and initialisation are those of the authors' Keras 2.9 builder (keras_extra
`sequential_multilabel_model`): Glorot-uniform weights and zero biases (`KerasLinear`, Keras Dense's
defaults); a hidden layer has no bias when batch normalisation follows it (`use_bias=not batchnorm`);
BatchNormalization with Keras's momentum 0.99 (torch's momentum is 1 - that: 0.01) and epsilon 1e-3.
Keras keeps the batches' biased variance in its moving variance, torch the unbiased one (a factor
B / (B - 1), 128/127 at batch 128, used at inference only): left as torch does it.

Mixed precision: inside `low_precision(torch.bfloat16)` the other linear layers (`MixedLinear`)
multiply in bfloat16 (float32 accumulation) with float32 master weights, through persistent bfloat16
copies of the weights, gradient and batch buffers (no large allocation per step); the float32 bias is
added to the rounded product, so activations between layers, logits, losses and the optimizer stay
float32. `cacicd.models.train.KerasAdam` writes the bfloat16 weight copy in its step and reads the
bfloat16 weight gradient, so neither costs a pass of its own.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from cacicd.models import kernels

_COMPUTE_DTYPE: contextvars.ContextVar[torch.dtype] = contextvars.ContextVar("cacicd_compute_dtype",
                                                                             default=torch.float32)


@contextlib.contextmanager
def low_precision(dtype: torch.dtype = torch.bfloat16) -> Iterator[None]:
    """Within the block, `MixedLinear` layers multiply in `dtype` (float32: plain nn.Linear)."""
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"low_precision: dtype must be torch.float32 or torch.bfloat16, got {dtype}")
    token = _COMPUTE_DTYPE.set(dtype)
    try:
        yield
    finally:
        _COMPUTE_DTYPE.reset(token)


KERAS_BN_MOMENTUM = 0.99  # Keras BatchNormalization defaults (torch: momentum = 1 - 0.99)
KERAS_BN_EPSILON = 1e-3


class KerasLinear(nn.Linear):
    """nn.Linear initialised as a Keras Dense layer: Glorot-uniform weight, zero bias."""

    def reset_parameters(self) -> None:
        """Weight ~ U(-b, b) with b = sqrt(6 / (in + out)) (glorot_uniform), bias 0 (zeros)."""
        nn.init.xavier_uniform_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


def keras_batchnorm(n: int) -> nn.BatchNorm1d:
    """BatchNorm1d with Keras's BatchNormalization defaults (momentum 0.99, epsilon 1e-3)."""
    return nn.BatchNorm1d(n, eps=KERAS_BN_EPSILON, momentum=round(1 - KERAS_BN_MOMENTUM, 6))


class SparseInputLinear(KerasLinear):
    """nn.Linear that also takes a torch sparse CSR batch (B, in): an embedding-bag of the active inputs."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.weight = nn.Parameter(self.weight.detach().t().contiguous().t())  # input-major storage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.layout == torch.strided:
            return super().forward(x)
        if x.layout != torch.sparse_csr:
            x = x.to_sparse_csr()
        crow = x.crow_indices()
        out = F.embedding_bag(x.col_indices(), self.weight.t(), crow[:-1], mode="sum",
                              per_sample_weights=x.values().to(self.weight.dtype))
        return out + self.bias if self.bias is not None else out


class _Shadow:
    """A layer's low-precision weight copy and weight gradient, its float32 gradient buffer, and per-batch buffers."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype):
        with torch.inference_mode(False):  # plain tensors, usable in training even when made in predict
            self.weight = torch.empty(weight.shape, dtype=dtype, device=weight.device)
            self.grad = torch.empty_like(self.weight)  # low-precision weight gradient
        self.master_grad: torch.Tensor | None = None  # its float32 copy, for an optimizer that does not defer
        self.key: tuple | None = None  # (data_ptr, version) of the weight `self.weight` was copied from
        self.fresh: tuple | None = None  # the weight's key when an optimizer step wrote `self.weight` with it
        self.pending = False  # self.grad holds this step's weight gradient, for an optimizer that reads it
        self.lent = False  # the "grad" batch buffer holds a fused loss's gradient until its backward
        self.rows: dict[tuple[str, int], torch.Tensor] = {}

    def batch(self, name: str, n: int) -> torch.Tensor:
        """A reused low-precision (n, out_features) buffer, one per name and row count (whole tensors, not views of a
        larger one: a compiled kernel takes them as they are)."""
        buf = self.rows.get((name, n))
        if buf is None:
            with torch.inference_mode(False):
                buf = self.rows[(name, n)] = torch.empty((n, self.weight.shape[0]), dtype=self.weight.dtype,
                                                         device=self.weight.device)
        return buf


def _product(x: torch.Tensor, shadow: _Shadow) -> tuple[torch.Tensor, torch.Tensor]:
    """(x in low precision, x W^T in low precision written into the layer's "out" buffer for x's row count)."""
    x_lp = x.to(shadow.weight.dtype)
    return x_lp, torch.mm(x_lp, shadow.weight.t(), out=shadow.batch("out", x.shape[0]))


class _MixedLinearFn(torch.autograd.Function):
    """y = (x W^T in low precision) + b in float32; W's gradient stays in low precision for a deferring optimizer
    (`_Shadow.pending`), else goes into W.grad in float32 (a persistent buffer)."""

    @staticmethod
    def forward(ctx, x, weight, bias, shadow: _Shadow, defer: bool):
        x_lp, out = _product(x, shadow)
        ctx.save_for_backward(x_lp, shadow.weight)
        ctx.weight, ctx.shadow, ctx.x_dtype, ctx.defer = weight, shadow, x.dtype, defer
        return torch.add(out, bias) if bias is not None else out.float()

    @staticmethod
    def backward(ctx, grad_out):
        x_lp, w_lp = ctx.saved_tensors
        shadow = ctx.shadow
        g = shadow.batch("grad", grad_out.shape[0]).copy_(grad_out)  # one contiguous cast, no transposition
        grad_x = (g @ w_lp).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        if ctx.needs_input_grad[1]:
            _weight_grad(ctx.weight, shadow, ctx.defer, g, x_lp)
        grad_b = grad_out.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, None, grad_b, None, None


def _weight_grad(weight: torch.Tensor, shadow: _Shadow, defer: bool, g: torch.Tensor, x_lp: torch.Tensor) -> None:
    """Add g^T x_lp (low precision) to the weight's gradient: kept in shadow.grad for a deferring optimizer, else
    widened into weight.grad."""
    if defer and weight.grad is None and not shadow.pending:  # the optimizer reads shadow.grad
        torch.mm(g.t(), x_lp, out=shadow.grad)
        shadow.pending = True
        return
    part = torch.mm(g.t(), x_lp)
    if weight.grad is None:  # first contribution of this step (zero_grad(set_to_none=True))
        if shadow.master_grad is None:
            shadow.master_grad = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
        weight.grad = shadow.master_grad.copy_(part)
    else:  # e.g. a loss penalty on the same weight already accumulated its part
        weight.grad.add_(part)


class _MixedLinearBCEFn(torch.autograd.Function):
    """Mean BCE with logits of (x W^T in low precision) + b against 0/1 targets, in one fused pass after the product:
    the (B, out) logits are never written; their gradient is, once, in low precision (`kernels.linear_bce_terms`)."""

    @staticmethod
    def forward(ctx, x, weight, bias, shadow: _Shadow, defer: bool, targets, w, pw1):
        x_lp, out = _product(x, shadow)
        n = out.numel()
        scale = torch.tensor(1.0 / n, dtype=torch.float32, device=x.device)
        # the gradient's buffer lives until backward: a second forward meanwhile gets a buffer of its own
        g = shadow.batch("grad", x.shape[0]) if not shadow.lent else torch.empty_like(out)
        shadow.lent = True
        # a detached bias: a Parameter's shape would be compiled in as a constant (one graph per label count)
        total, colsum = kernels.run(kernels.linear_bce_terms, kernels.linear_bce_terms_eager, out, bias.detach(),
                                    targets, w, pw1, scale, g)
        ctx.save_for_backward(x_lp, shadow.weight)
        ctx.weight, ctx.shadow, ctx.x_dtype, ctx.defer, ctx.g, ctx.colsum = weight, shadow, x.dtype, defer, g, colsum
        return total / n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x_lp, w_lp = ctx.saved_tensors
        g, colsum = ctx.g, ctx.colsum
        ctx.shadow.lent = False
        if not kernels.unit(grad):  # a loss term scaled or summed with others
            g, colsum = g * grad.to(g.dtype), colsum * grad
        grad_x = (g @ w_lp).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        if ctx.needs_input_grad[1]:
            _weight_grad(ctx.weight, ctx.shadow, ctx.defer, g, x_lp)
        return grad_x, None, colsum if ctx.needs_input_grad[2] else None, None, None, None, None, None


class MixedLinear(KerasLinear):
    """nn.Linear that multiplies in bfloat16 inside `low_precision(torch.bfloat16)`.

    The product x W^T is computed in bfloat16 (float32 accumulation, rounded once) and the float32 bias is
    added to it: the output is float32, in training and in inference. The bfloat16 weight copy is rebuilt
    on every training forward and, in eval mode, whenever the weight's storage or version changes or the
    mode switches, unless an optimizer step just wrote it (`KerasAdam`, which with `defer_grad` set also
    takes the weight's gradient in bfloat16, see `_Shadow.pending`).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self._shadow: _Shadow | None = None
        self.defer_grad = False

    def low_precision_copy(self, dtype: torch.dtype) -> _Shadow:
        """The layer's low-precision weight copy in `dtype`, current with the weight."""
        w = self.weight
        s = self._shadow
        if s is None or s.weight.dtype != dtype or s.weight.device != w.device or s.weight.shape != w.shape:
            s = self._shadow = _Shadow(w, dtype)
        key = (w.data_ptr(), w._version)
        if s.fresh == key:  # an optimizer step wrote the copy with this very weight
            pass
        elif self.training or s.key != key:  # torch's fused optimizers leave versions as they were
            with torch.no_grad():
                s.weight.copy_(w)
        s.key = key
        return s

    def train(self, mode: bool = True) -> "MixedLinear":
        """Set the mode; a switch forgets the low-precision copy unless an optimizer just wrote it."""
        if self._shadow is not None and mode != self.training:
            self._shadow.key = None
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in) -> (B, out) float32."""
        dtype = _COMPUTE_DTYPE.get()
        if dtype == torch.float32:
            return super().forward(x)
        s = self.low_precision_copy(dtype)
        if not torch.is_grad_enabled():  # inference
            out = torch.mm(x.to(dtype), s.weight.t())
            return torch.add(out, self.bias) if self.bias is not None else out.float()
        return _MixedLinearFn.apply(x, self.weight, self.bias, s, self.defer_grad)

    def fuses_bce(self) -> bool:
        """Whether `bce` fuses the product with the loss here (inside `low_precision(torch.bfloat16)`, with a bias)."""
        return _COMPUTE_DTYPE.get() != torch.float32 and self.bias is not None

    def bce(self, x: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None,
            pos_weight: torch.Tensor | None = None) -> torch.Tensor:
        """Mean BCE with logits of self(x) against 0/1 targets (B, out), f = w·(1 + (pw − 1)·y) weighting each pair, in
        one pass after the product (`fuses_bce` must hold)."""
        s = self.low_precision_copy(_COMPUTE_DTYPE.get())
        return _MixedLinearBCEFn.apply(x, self.weight, self.bias, s, self.defer_grad, targets, weight,
                                       kernels.positive_term(weight, pos_weight))

    def __getstate__(self) -> dict:
        """Pickle and deepcopy without the low-precision copies (a cache), not deferring (a copy has no optimizer)."""
        return {**self.__dict__, "_shadow": None, "defer_grad": False}


class Dropout(nn.Dropout):
    """nn.Dropout whose mask is drawn as uniform(0, 1) >= p: the same Bernoulli(1 - p) mask, 3x faster on the CPU than
    `bernoulli_` (which draws one variate at a time there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x times the mask / (1 - p) in training, x itself in eval mode or with p = 0."""
        if not self.training or self.p == 0:
            return x
        noise = torch.empty_like(x).uniform_().ge_(self.p).div_(1 - self.p)
        return x.mul_(noise) if self.inplace else x * noise


class MLP(nn.Module):
    """(len(units)) hidden blocks Linear → [BatchNorm] → ReLU → [Dropout], then `output` = Linear(n_labels).

    With no hidden block (num_layers = 1) it is logistic regression. forward returns logits (B, n_labels).
    As the authors' Keras builder: Glorot-uniform weights, zero biases, no hidden bias under batchnorm.
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
            linear = SparseInputLinear if i == 0 else MixedLinear
            blocks.append(linear(width, u, bias=not batchnorm))  # batchnorm's shift replaces the bias
            if batchnorm:
                blocks.append(keras_batchnorm(u))
            blocks.append(nn.ReLU())
            if d > 0:
                blocks.append(Dropout(d))
            width = u
        self.hidden = nn.Sequential(*blocks)
        self.output = SparseInputLinear(width, n_labels) if not units else MixedLinear(width, n_labels)

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
