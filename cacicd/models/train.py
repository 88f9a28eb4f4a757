"""Training loop (spec section 6): CUDA when present else CPU, Adam, shuffled mini-batches, early
stopping on the dev target metric keeping the best epoch's weights, and batched prediction.

Losses (`cacicd.models.losses.make_loss`) and output rules (`cacicd.models.outputs.make_output_rule`) are plug-ins:
the loop passes `(logits, targets, model)` to the loss and applies the rule to dev probabilities
before scoring; it never knows which ones it runs. A loss of the BCE family (`BCELoss` and its weighted
and penalised subclasses) takes the last hidden activations instead (`on_output`): in bfloat16 the
output layer and the loss are then one pass after the product, the (B, L) logits never written.

Data: the training, dev and predicted sets are copied once to the device as CSR tensors
(`DeviceRows`); an epoch's shuffled rows are cut there once, and each batch, a slice of them, reaches
the network as a torch sparse CSR batch (the first layer is an embedding-bag of the active inputs, see
`cacicd.models.network`), its targets densified there into a reused buffer. Nothing crosses the
host-device boundary per batch but the output probabilities.

Precision (`precision=`): "float32", "bfloat16" (the linear layers multiply in bfloat16 through
`cacicd.models.network.low_precision`; master weights, Adam state, losses and metrics stay float32), or
"auto": bfloat16 where the device has it natively (a CPU with AVX-512 BF16 or AMX, a CUDA GPU of
compute capability 8.0 or more), else float32. Runs are deterministic given the seed, device,
precision and thread count (same seed, same predictions, bit for bit, on the CPU).

The optimizer (`KerasAdam`) and the BCE run as fused kernels on the CPU (`cacicd.models.kernels`, compiled
once per process by TorchInductor; eager operators where no C++ compiler is found).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from cacicd.config import PRECISIONS, cpu_count
from cacicd.evaluation import metrics
from cacicd.models import kernels
from cacicd.models.network import MLP, MixedLinear, build_mlp, low_precision

logger = logging.getLogger(__name__)

TARGETS: tuple[str, ...] = ("f1_micro", "f1_macro", "ndcg", "auprc_micro", "auprc_macro", "auroc_micro",
                            "auroc_macro")


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(n: int | None = None) -> int:
    """Use n CPU threads for torch, process-wide, from now on (default: `cacicd.config.cpu_count()`); returns n.

    For entry points (console script, notebooks, benchmarks); library calls take a `threads` argument
    and hold it for their duration only (`torch_threads`).
    """
    torch.set_num_threads(max(1, int(n if n is not None else cpu_count())))
    return torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(n: int | None = None) -> Iterator[int]:
    """Within the block torch uses n CPU threads (default: `cacicd.config.cpu_count()`); the count it used
    before is restored on leaving. Yields the count in use."""
    before = torch.get_num_threads()
    try:
        yield set_threads(n)
    finally:
        torch.set_num_threads(before)


def target_score(target: str, y_true: sp.spmatrix | np.ndarray, y_score: np.ndarray) -> float:
    """The value of one of the seven target metrics (TARGETS; higher is better) via cacicd.evaluation.metrics."""
    if target == "ndcg":
        return float(metrics.ndcg(y_true, y_score))
    name, _, average = target.partition("_")
    if target not in TARGETS:
        raise ValueError(f"unknown target metric {target!r}; choose one of {', '.join(TARGETS)}")
    fn = {"f1": metrics.f1, "auprc": metrics.auprc, "auroc": metrics.auroc}[name]
    return float(fn(y_true, y_score, average=average))


def _check_xy(X, Y, what: str) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
    X = sp.csr_matrix(X, dtype=np.float32) if not (sp.issparse(X) and X.format == "csr" and X.dtype == np.float32) else X
    if Y is not None:
        Y = sp.csr_matrix(Y) if not sp.issparse(Y) else Y.tocsr()
        if Y.shape[0] != X.shape[0]:
            raise ValueError(f"{what}: X has {X.shape[0]} rows but Y has {Y.shape[0]}")
    return X, Y


def use_sparse_input(model: nn.Module, device: torch.device | None = None) -> bool:
    """Whether batches go in as torch sparse CSR (a cacicd MLP, on any device) or dense."""
    return isinstance(model, MLP)


def to_tensor(X: sp.csr_matrix, device: torch.device, sparse: bool) -> torch.Tensor:
    """A CSR block (B, n_in) as a torch tensor on `device`: sparse CSR or dense float32."""
    if not sparse:
        return torch.from_numpy(X.toarray().astype(np.float32, copy=False)).to(device, non_blocking=True)
    return _csr_tensor(torch.from_numpy(X.indptr.astype(np.int64)).to(device),
                       torch.from_numpy(X.indices.astype(np.int64)).to(device),
                       torch.from_numpy(np.asarray(X.data, dtype=np.float32)).to(device), X.shape)


def _csr_tensor(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": only its accessors are used here
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, size=tuple(shape), check_invariants=False)


class DeviceRows:
    """A CSR matrix (n, m) held as torch tensors on a device; batches of its rows are cut there."""

    def __init__(self, X: sp.spmatrix | np.ndarray, device: torch.device | str):
        X = X.tocsr() if sp.issparse(X) else sp.csr_matrix(np.asarray(X))
        if not X.has_canonical_format:
            X = X.copy()
            X.sum_duplicates()
        self.shape = X.shape
        self.device = torch.device(device)
        self.host_indptr = X.indptr.astype(np.int64)
        self.indptr = torch.from_numpy(self.host_indptr).to(self.device)
        self.indices = torch.from_numpy(X.indices.astype(np.int64)).to(self.device)
        self.data = torch.from_numpy(np.asarray(X.data, dtype=np.float32)).to(self.device)

    def nnz(self, rows: np.ndarray) -> int:
        """Stored entries in these rows (host arithmetic: no device sync)."""
        return int((self.host_indptr[rows + 1] - self.host_indptr[rows]).sum())

    def take(self, rows: torch.Tensor, nnz: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(crow (B+1,), col (nnz,), val (nnz,)) of the rows `rows` (a device tensor) holding `nnz` entries."""
        start = self.indptr[rows]
        lens = self.indptr[rows + 1] - start
        crow = torch.zeros(len(rows) + 1, dtype=torch.int64, device=self.device)
        torch.cumsum(lens, 0, out=crow[1:])
        pos = torch.arange(nnz, device=self.device) + torch.repeat_interleave(start - crow[:-1], lens,
                                                                            output_size=nnz)
        return crow, self.indices[pos], self.data[pos]

    def span(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(crow, col, val) of the contiguous rows start..stop-1."""
        lo, hi = int(self.host_indptr[start]), int(self.host_indptr[stop])
        return self.indptr[start:stop + 1] - lo, self.indices[lo:hi], self.data[lo:hi]

    def sparse(self, part: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """A `take`/`span` result as a torch sparse CSR tensor (B, m)."""
        crow, col, val = part
        return _csr_tensor(crow, col, val, (len(crow) - 1, self.shape[1]))

    def dense(self, part: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """A `take`/`span` result as a dense float32 tensor (B, m)."""
        crow, col, val = part
        n = len(crow) - 1
        out = torch.zeros((n, self.shape[1]), dtype=torch.float32, device=self.device)
        row = torch.repeat_interleave(torch.arange(n, device=self.device), crow[1:] - crow[:-1],
                                      output_size=len(col))
        return out.index_put_((row, col), val)


def memory_order(p: torch.Tensor) -> tuple[torch.Tensor, list[int] | None]:
    """(view, dims): p and None if p is contiguous, else a contiguous view of its storage, p.permute(dims)."""
    # fused Adam on the CPU copies a non-contiguous parameter (the input-major first layer) to and fro each
    # step; it updates a contiguous view of the same storage, given the gradient permuted alike, in place
    dims = sorted(range(p.dim()), key=lambda d: -p.stride(d))
    view = p.detach().permute(dims)
    return (p, None) if p.is_contiguous() or not view.is_contiguous() else (view, dims)


def native_bfloat16(device: torch.device | str) -> bool:
    """Whether the device multiplies bfloat16 natively: a CPU with AVX-512 BF16 or AMX, a GPU with sm >= 8.0."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        return torch.backends.mkldnn.is_available() and any(p is not None and p() for p in probes)
    return False


def resolve_precision(precision: str, device: torch.device | str) -> torch.dtype:
    """The compute dtype of a precision name on a device ("auto": bfloat16 where native, else float32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    return torch.bfloat16 if precision == "bfloat16" else torch.float32


def _predict(model: nn.Module, X: sp.spmatrix | np.ndarray | DeviceRows, batch_size: int,
             device: torch.device | str | None, precision: str, sparse_input: bool | None,
             on_device: bool) -> torch.Tensor:
    """(n, n_labels) float32 probabilities, on the host (pinned from CUDA) or left on the model's device."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = resolve_precision(precision, device)
    if not isinstance(X, DeviceRows):
        X = DeviceRows(_check_xy(X, None, "predict_proba")[0], device)
    model.eval()
    sparse = use_sparse_input(model, device) if sparse_input is None else sparse_input
    cuda = device.type == "cuda"
    host = cuda and not on_device  # filled batch by batch from the device, read after one synchronize
    out = torch.empty((X.shape[0], model.n_labels), dtype=torch.float32, pin_memory=host,
                      device=device if on_device else "cpu")
    for start in range(0, X.shape[0], batch_size):
        stop = min(start + batch_size, X.shape[0])
        part = X.span(start, stop)
        with low_precision(dtype):
            logits = model(X.sparse(part) if sparse else X.dense(part))
        if cuda:
            out[start:stop].copy_(torch.sigmoid(logits.float()), non_blocking=True)
        else:  # float32 sigmoid written in place: no (B, L) temporary
            out[start:stop].copy_(logits).sigmoid_()
    if host:
        torch.cuda.synchronize(device)
    return out


@torch.inference_mode()
def predict_proba(model: nn.Module, X: sp.spmatrix | np.ndarray | DeviceRows, batch_size: int = 1024,
                  device: torch.device | str | None = None, precision: str = "auto",
                  sparse_input: bool | None = None) -> np.ndarray:
    """(n, n_labels) float32 sigmoid probabilities of `model` on the rows of X (n, n_inputs).

    precision: see the module docstring.
    sparse_input: feed sparse CSR batches (default: `use_sparse_input(model)`) or dense ones.
    """
    return _predict(model, X, batch_size, device, precision, sparse_input, on_device=False).numpy()


@torch.inference_mode()
def predict_proba_tensor(model: nn.Module, X: sp.spmatrix | np.ndarray | DeviceRows, batch_size: int = 1024,
                         device: torch.device | str | None = None, precision: str = "auto",
                         sparse_input: bool | None = None) -> torch.Tensor:
    """`predict_proba`'s probabilities (the same values) as a float32 tensor left on the model's device."""
    return _predict(model, X, batch_size, device, precision, sparse_input, on_device=True)


KERAS_ADAM_EPSILON = 1e-7  # Keras 2.9 Adam's default


class KerasAdam(torch.optim.Optimizer):
    """Adam taking steps as Keras 2.9's Adam: epsilon 1e-7 added to sqrt(v) before the bias correction.

    Keras: w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps), i.e. torch's Adam with its eps set to
    eps / sqrt(1 - b2^t) at step t. How much the placement matters: that eps is 3.2e-6 at step 1, 3.2e-7 at
    step 100, 1.3e-7 at step 1,000 and within 1 % of 1e-7 after 4,000 steps; a plain torch Adam (eps 1e-7)
    changes a step by about (eps_t - 1e-7) / sqrt(v_hat) relative: 3 % at step 1 for gradients ~1e-4.

    Each parameter's step is one fused pass (`cacicd.models.kernels.adam`). The `MixedLinear` layers named
    in `layers` hand it their bfloat16 weight gradient (no float32 copy) and get their bfloat16 weight copy
    written in the same pass. State per parameter: "step", "exp_avg", "exp_avg_sq", as torch's Adam.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = KERAS_ADAM_EPSILON, layers: Iterable[nn.Module] = ()):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})
        self.layers = {id(m.weight): m for m in layers}
        self._flats: dict[int, tuple] = {}  # id(p) -> (exp_avg, exp_avg_sq, their flat views with p's): `_flat`
        for m in self.layers.values():
            m.defer_grad = True

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the parameters' gradients, the layers' bfloat16 ones included."""
        super().zero_grad(set_to_none)
        for m in self.layers.values():
            if m._shadow is not None:
                m._shadow.pending = False

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One Adam step of every parameter with a gradient."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            scalars: dict[tuple, list[torch.Tensor]] = {}  # (step, dtype, device) -> the kernel's scalar tensors
            for p in group["params"]:
                layer = self.layers.get(id(p))
                shadow = layer._shadow if layer is not None else None
                g = p.grad
                if shadow is not None and shadow.pending:
                    g = shadow.grad if g is None else g.add_(shadow.grad)
                    shadow.pending = False
                if g is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = int(state["step"])
                key = (t, p.dtype, p.device)
                if key not in scalars:  # in the weight's precision
                    b1, b2 = group["betas"]
                    scalars[key] = [torch.tensor(x, dtype=p.dtype, device=p.device) for x in
                                    (group["lr"], b1, b2, group["eps"], group["lr"] / (1 - b1 ** t),
                                     math.sqrt(1 - b2 ** t))]
                lp = shadow.weight if shadow is not None and shadow.weight.shape == p.shape else None
                flat = self._flat(p, state)
                if flat is not None:  # one kernel for any shape: the tensors flat, in their memory order
                    p_, m, v, dims = flat
                    g_ = (g if dims is None else g.permute(dims)).reshape(-1)
                    kernels.run(kernels.adam, kernels.adam_eager, p_, g_, m, v, None if lp is None else lp.view(-1),
                                state["step"], *scalars[key])
                else:
                    kernels.adam_eager(p, g, state["exp_avg"], state["exp_avg_sq"], lp, state["step"], *scalars[key])
                if lp is not None:
                    shadow.fresh = (p.data_ptr(), p._version)  # the copy is current: no pass of its own
        return loss

    def _flat(self, p: torch.Tensor, state: dict) -> tuple | None:
        """(p, exp_avg, exp_avg_sq) as flat views in p's memory order and that order, kept while the state's tensors
        are the same; None where p's storage is not one block."""
        hit = self._flats.get(id(p))
        if hit is not None and hit[0] is state["exp_avg"] and hit[1] is state["exp_avg_sq"]:
            return hit[2]
        view, dims = memory_order(p)
        flat = None
        if view.is_contiguous():
            flat = (*((t if dims is None else t.permute(dims)).view(-1)
                      for t in (p, state["exp_avg"], state["exp_avg_sq"])), dims)
        self._flats[id(p)] = (state["exp_avg"], state["exp_avg_sq"], flat)
        return flat


@dataclass
class TrainResult:
    """A trained model with its best epoch (1-based), best dev value and per-epoch history."""

    model: nn.Module
    best_epoch: int
    best_value: float
    history: list[dict] = field(default_factory=list)  # epoch, loss, dev, seconds
    seconds: float = 0.0


class Trainer:
    """Trains one MLP epoch by epoch (so several can run in lockstep), tracking the best dev epoch.

    The training and dev sets live on `device` from construction on; `model`'s parameters are the
    only weights (load_state_dict on it any time). `sparse_input` (True) feeds the network sparse
    CSR batches; set it False for dense ones (benchmarks). precision: "auto", "float32" or "bfloat16" (see
    the module docstring).
    """

    def __init__(self, X_train, Y_train, X_dev, Y_dev, params: dict, loss: nn.Module, target: str, *,
                 lr: float = 2e-4, batch_size: int = 128, patience: int = 3, seed: int = 0,
                 output_rule: Callable[[np.ndarray], np.ndarray] | None = None,
                 device: torch.device | str | None = None, eval_batch_size: int = 2048,
                 precision: str = "auto"):
        if target not in TARGETS:
            raise ValueError(f"unknown target metric {target!r}; choose one of {', '.join(TARGETS)}")
        X_train, Y_train = _check_xy(X_train, Y_train, "training set")
        X_dev, self.Y_dev = _check_xy(X_dev, Y_dev, "dev set")
        if Y_train.shape[1] != self.Y_dev.shape[1]:
            raise ValueError(f"training labels have {Y_train.shape[1]} columns, dev labels {self.Y_dev.shape[1]}")
        if X_train.shape[1] != X_dev.shape[1]:
            raise ValueError(f"training inputs have {X_train.shape[1]} columns, dev inputs {X_dev.shape[1]}")
        if X_train.shape[0] == 0 or X_dev.shape[0] == 0:
            raise ValueError("empty training or dev set")
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = resolve_precision(precision, self.device)
        self.precision = "bfloat16" if self.dtype == torch.bfloat16 else "float32"
        self.target, self.patience, self.batch_size = target, patience, batch_size
        self.output_rule = output_rule
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.model = build_mlp(X_train.shape[1], Y_train.shape[1], params).to(self.device)
        self.loss_fn = loss.to(self.device)
        stepped = [(p, *memory_order(p)) for p in self.model.parameters()]
        self.grad_views = [(p, v, dims) for p, v, dims in stepped if dims is not None]
        self.optimizer = KerasAdam([v for _, v, _ in stepped], lr=lr,  # Keras's eps and its placement
                                   layers=[m for m in self.model.modules() if isinstance(m, MixedLinear)])
        self.X_train, self.Y_train = DeviceRows(X_train, self.device), DeviceRows(Y_train, self.device)
        self.X_dev = DeviceRows(X_dev, self.device)
        self.sparse_input = use_sparse_input(self.model, self.device)
        self.fused_output = hasattr(self.loss_fn, "on_output") and isinstance(self.model.output, MixedLinear)
        # batch rows -> the reused (rows, L) target block and the flat positions its last batch set
        self.target_blocks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.epoch = 0
        self.best_epoch, self.best_value, self.best_state = 0, -math.inf, None
        self.history: list[dict] = []
        self.stopped = False
        self.seconds = 0.0

    def _batches(self) -> list[tuple[np.ndarray, int, int]]:
        """This epoch's shuffled batches: (sorted row indices, nnz of X rows, nnz of Y rows)."""
        order = self.rng.permutation(self.X_train.shape[0])
        skip_single = any(isinstance(m, nn.BatchNorm1d) for m in self.model.modules())
        out = []
        for start in range(0, len(order), self.batch_size):
            idx = np.sort(order[start:start + self.batch_size])  # sorted rows: same batch, contiguous reads
            if len(idx) < 2 and skip_single:
                continue  # BatchNorm cannot train on a batch of one
            out.append((idx, self.X_train.nnz(idx), self.Y_train.nnz(idx)))
        return out

    def _target_entries(self, rows: torch.Tensor, sizes: np.ndarray, nnz: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions in a (batch, L) block, values) of the Y entries of the epoch's rows, batch after batch."""
        crow, col, val = self.Y_train.take(rows, nnz)
        local = np.arange(len(rows)) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # each row's place in its batch
        start = torch.from_numpy(local * self.Y_train.shape[1]).to(self.device)
        return torch.repeat_interleave(start, crow[1:] - crow[:-1], output_size=nnz) + col, val

    def _targets(self, pos: torch.Tensor, val: torch.Tensor, n: int) -> torch.Tensor:
        """The dense (n, L) targets of a batch, in a block reused for batches of n rows: the entries its last batch
        set cleared, these set. (Whole tensors, not views of a larger one: a compiled kernel takes them as they are.)"""
        block, last = self.target_blocks.get(n, (None, None))
        if block is None:
            block = torch.zeros((n, self.Y_train.shape[1]), dtype=torch.float32, device=self.device)
        flat = block.view(-1)
        if last is not None:
            flat.index_fill_(0, last, 0.0)
        flat.index_put_((pos,), val)
        self.target_blocks[n] = (block, pos)
        return block

    def train_epoch(self) -> float:
        """One epoch of training over shuffled mini-batches; returns the mean training loss."""
        self.model.train()
        batches = self._batches()
        if not batches:
            return float("nan")
        sizes = np.array([len(b[0]) for b in batches])
        x_ends, y_ends = np.cumsum([b[1] for b in batches]), np.cumsum([b[2] for b in batches])
        rows = torch.from_numpy(np.concatenate([b[0] for b in batches])).to(self.device)
        x_crow, x_col, x_val = self.X_train.take(rows, int(x_ends[-1]))  # the epoch's rows, cut once
        y_pos, y_val = self._target_entries(rows, sizes, int(y_ends[-1]))
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        n = r0 = x0 = y0 = 0
        for size, x1, y1 in zip(sizes.tolist(), x_ends.tolist(), y_ends.tolist()):
            part = (x_crow[r0:r0 + size + 1] - x0, x_col[x0:x1], x_val[x0:x1])
            xb = self.X_train.sparse(part) if self.sparse_input else self.X_train.dense(part)
            yb = self._targets(y_pos[y0:y1], y_val[y0:y1], size)
            with low_precision(self.dtype):
                if self.fused_output:  # the output layer and the loss in one pass (`BCELoss.on_output`)
                    loss = self.loss_fn.on_output(self.model.output, self.model.hidden(xb), yb, self.model)
                else:
                    logits = self.model(xb)
            if not self.fused_output:
                loss = self.loss_fn(logits.float(), yb, self.model)
            self.model.zero_grad(set_to_none=True)
            loss.backward()
            for p, view, dims in self.grad_views:  # see memory_order
                view.grad = None if p.grad is None else p.grad.permute(dims)
            self.optimizer.step()
            total += loss.detach() * size
            n += size
            r0, x0, y0 = r0 + size, x1, y1
        mean = float(total) / n
        if not math.isfinite(mean):
            logger.warning("training loss is not finite at epoch %d", self.epoch + 1)
        return mean

    def dev_scores(self) -> np.ndarray:
        """(n_dev, L) dev probabilities after the output rule."""
        p = predict_proba(self.model, self.X_dev, self.eval_batch_size, self.device, precision=self.precision,
                          sparse_input=self.sparse_input)
        return self.output_rule(p) if self.output_rule is not None else p

    def step(self) -> dict:
        """Train one epoch, score the dev set; returns {epoch, loss, dev, seconds}."""
        if self.stopped:
            raise RuntimeError("Trainer.step after early stopping")
        t0 = time.perf_counter()
        loss = self.train_epoch()
        value = target_score(self.target, self.Y_dev, self.dev_scores())
        self.epoch += 1
        dt = time.perf_counter() - t0
        self.seconds += dt
        rec = {"epoch": self.epoch, "loss": loss, "dev": value, "seconds": dt}
        self.history.append(rec)
        if math.isfinite(value) and value > self.best_value:
            self.best_epoch, self.best_value = self.epoch, value
            self.best_state = copy.deepcopy(self.model.state_dict())
        elif self.epoch - self.best_epoch >= self.patience:
            self.stopped = True
        logger.debug("epoch %d loss %.5f dev %s %.5f (%.1fs)", self.epoch, loss, self.target, value, dt)
        return rec

    def result(self) -> TrainResult:
        """The model with its best epoch's weights restored."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.model.eval()
        return TrainResult(self.model, self.best_epoch, self.best_value, list(self.history), self.seconds)


def train(X_train, Y_train, X_dev, Y_dev, params: dict, loss: nn.Module, target: str, *, seed: int = 0,
          max_epochs: int = 150, **trainer_kw) -> TrainResult:
    """Train one MLP (params: num_layers, units_i, dropout_i, batchnorm) with early stopping on `target`.

    X_*: (n, n_inputs) CSR float32; Y_*: (n, L) 0/1; loss: a `cacicd.models.losses` module.
    trainer_kw: lr, batch_size, patience, output_rule, device, precision, eval_batch_size (see `Trainer`).
    """
    trainer = Trainer(X_train, Y_train, X_dev, Y_dev, params, loss, target, seed=seed, **trainer_kw)
    for _ in range(max_epochs):
        trainer.step()
        if trainer.stopped:
            break
    return trainer.result()
