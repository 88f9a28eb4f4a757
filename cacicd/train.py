"""Training loop (spec section 6): CUDA when present else CPU, Adam, shuffled mini-batches, early
stopping on the dev target metric keeping the best epoch's weights, and batched prediction.

Losses (`cacicd.losses.make_loss`) and output rules (`cacicd.outputs.make_output_rule`) are plug-ins:
the loop passes `(logits, targets, model)` to the loss and applies the rule to dev probabilities
before scoring; it never knows which ones it runs.

Inputs stay scipy CSR and are converted one batch at a time: on the CPU a network with a hidden
layer gets a torch sparse CSR batch (the first layer is a sparse matmul, ~2x faster than dense at
~35 non-zeros in 1,166 columns, see benchmarks/bench_train.py); on the GPU, and for logistic
regression, the batch is densified. Mixed precision (`amp=True`, GPU only) runs the forward pass
under torch.autocast in bfloat16 where the GPU supports it, else float16 with a gradient scaler.
CPU runs are deterministic given the seed (same seed, same predictions).
"""
from __future__ import annotations

import copy
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from .models import MLP, build_mlp

logger = logging.getLogger(__name__)

TARGETS: tuple[str, ...] = ("f1_micro", "f1_macro", "ndcg", "auprc_micro", "auprc_macro", "auroc_micro",
                            "auroc_macro")


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(n: int | None = None) -> int:
    """Use n CPU threads for torch (default: every core this process may use); returns n."""
    if n is None:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, int(n)))
    return torch.get_num_threads()


def target_score(target: str, y_true: sp.spmatrix | np.ndarray, y_score: np.ndarray) -> float:
    """The value of one of the seven target metrics (TARGETS; higher is better) via cacicd.metrics."""
    from . import metrics  # lazy: a parallel module

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


def use_sparse_input(model: nn.Module, device: torch.device) -> bool:
    """Whether batches go in as torch sparse CSR (CPU and a hidden layer) or dense."""
    return device.type == "cpu" and isinstance(model, MLP) and len(model.config["units"]) > 0


def to_tensor(X: sp.csr_matrix, device: torch.device, sparse: bool) -> torch.Tensor:
    """A CSR block (B, n_in) as a torch tensor on `device`: sparse CSR or dense float32."""
    if not sparse:
        return torch.from_numpy(X.toarray()).to(device, non_blocking=True)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the matmul used here is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(X.indptr.astype(np.int64)),
                                       torch.from_numpy(X.indices.astype(np.int64)),
                                       torch.from_numpy(np.asarray(X.data, dtype=np.float32)), size=X.shape,
                                       device=device)


def _amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@torch.inference_mode()
def predict_proba(model: nn.Module, X: sp.spmatrix | np.ndarray, batch_size: int = 1024,
                  device: torch.device | str | None = None, amp: bool = False, precision: str = "auto") -> np.ndarray:
    """(n, n_labels) float32 sigmoid probabilities of `model` on the rows of X (n, n_inputs)."""
    X, _ = _check_xy(X, None, "predict_proba")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    sparse = use_sparse_input(model, device)
    dtype = _amp_dtype(device, amp)
    out = np.empty((X.shape[0], model.n_labels), dtype=np.float32)
    for start in range(0, X.shape[0], batch_size):
        xb = to_tensor(X[start:start + batch_size], device, sparse)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(xb)
        out[start:start + batch_size] = torch.sigmoid(logits.float()).cpu().numpy()
    return out


@dataclass
class TrainResult:
    """A trained model with its best epoch (1-based), best dev value and per-epoch history."""

    model: nn.Module
    best_epoch: int
    best_value: float
    history: list[dict] = field(default_factory=list)  # epoch, loss, dev, seconds
    seconds: float = 0.0


class Trainer:
    """Trains one MLP epoch by epoch (so several can run in lockstep), tracking the best dev epoch."""

    def __init__(self, X_train, Y_train, X_dev, Y_dev, params: dict, loss: nn.Module, target: str, *,
                 lr: float = 2e-4, batch_size: int = 128, patience: int = 3, seed: int = 0,
                 output_rule: Callable[[np.ndarray], np.ndarray] | None = None,
                 device: torch.device | str | None = None, amp: bool = False, eval_batch_size: int = 2048,
                 precision: str = "auto"):
        if target not in TARGETS:
            raise ValueError(f"unknown target metric {target!r}; choose one of {', '.join(TARGETS)}")
        self.X_train, self.Y_train = _check_xy(X_train, Y_train, "training set")
        self.X_dev, self.Y_dev = _check_xy(X_dev, Y_dev, "dev set")
        if self.Y_train.shape[1] != self.Y_dev.shape[1]:
            raise ValueError(f"training labels have {self.Y_train.shape[1]} columns, dev labels {self.Y_dev.shape[1]}")
        if self.X_train.shape[0] == 0 or self.X_dev.shape[0] == 0:
            raise ValueError("empty training or dev set")
        self.device = torch.device(device) if device is not None else default_device()
        self.target, self.patience, self.batch_size = target, patience, batch_size
        self.output_rule = output_rule
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.model = build_mlp(self.X_train.shape[1], self.Y_train.shape[1], params).to(self.device)
        self.loss_fn = loss.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.sparse = use_sparse_input(self.model, self.device)
        self.amp_dtype = _amp_dtype(self.device, amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.amp = amp
        self.epoch = 0
        self.best_epoch, self.best_value, self.best_state = 0, -math.inf, None
        self.history: list[dict] = []
        self.stopped = False
        self.seconds = 0.0

    def train_epoch(self) -> float:
        """One epoch of training; the mean training loss."""
        return self._train_epoch()

    def _train_epoch(self) -> float:
        self.model.train()
        order = self.rng.permutation(self.X_train.shape[0])
        total, n = 0.0, 0
        for start in range(0, len(order), self.batch_size):
            idx = np.sort(order[start:start + self.batch_size])  # sorted rows: same batch, faster slicing
            if len(idx) < 2 and any(isinstance(m, nn.BatchNorm1d) for m in self.model.modules()):
                continue  # BatchNorm cannot train on a batch of one
            xb = to_tensor(self.X_train[idx], self.device, self.sparse)
            yb = torch.from_numpy(self.Y_train[idx].toarray().astype(np.float32)).to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                logits = self.model(xb)
            loss = self.loss_fn(logits.float(), yb, self.model)
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        if not math.isfinite(total):
            logger.warning("training loss is not finite at epoch %d", self.epoch + 1)
        return total / max(n, 1)

    def dev_scores(self) -> np.ndarray:
        """(n_dev, L) dev probabilities after the output rule."""
        p = predict_proba(self.model, self.X_dev, self.eval_batch_size, self.device, self.amp)
        return self.output_rule(p) if self.output_rule is not None else p

    def step(self) -> dict:
        """Train one epoch, score the dev set; returns {epoch, loss, dev, seconds}."""
        if self.stopped:
            raise RuntimeError("Trainer.step after early stopping")
        t0 = time.perf_counter()
        loss = self._train_epoch()
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


def train_many(X_train, Y_train, X_dev, Y_dev, params: dict, make_loss: Callable[[], nn.Module], target: str, *,
               seeds: Sequence[int] = (0,), max_epochs: int = 150,
               on_epoch: Callable[[int, float], None] | None = None, progress: bool = False,
               **trainer_kw) -> list[TrainResult]:
    """Train one model per seed in lockstep, epoch by epoch, each with its own early stopping.

    After each epoch `on_epoch(epoch, value)` gets the mean over seeds of each model's best dev value
    so far (it may raise, e.g. optuna.TrialPruned, to stop). Returns one TrainResult per seed.
    """
    from tqdm.auto import tqdm

    trainers = [Trainer(X_train, Y_train, X_dev, Y_dev, params, make_loss(), target, seed=s, **trainer_kw)
                for s in seeds]
    bar = tqdm(total=max_epochs, desc="epochs", leave=False, disable=not progress)
    try:
        for epoch in range(1, max_epochs + 1):
            for t in trainers:
                if not t.stopped:
                    t.step()
            bar.update(1)
            bar.set_postfix({target: f"{np.mean([t.best_value for t in trainers]):.4f}"})
            if on_epoch is not None:
                on_epoch(epoch, float(np.mean([t.best_value for t in trainers])))
            if all(t.stopped for t in trainers):
                break
    finally:
        bar.close()
    return [t.result() for t in trainers]


def train(X_train, Y_train, X_dev, Y_dev, params: dict, loss: nn.Module, target: str, *, seed: int = 0,
          max_epochs: int = 150, on_epoch: Callable[[int, float], None] | None = None, progress: bool = False,
          **trainer_kw) -> TrainResult:
    """Train one MLP (params: num_layers, units_i, dropout_i, batchnorm) with early stopping on `target`.

    X_*: (n, n_inputs) CSR float32; Y_*: (n, L) 0/1; loss: a `cacicd.losses` module.
    trainer_kw: lr, batch_size, patience, output_rule, device, amp (see `Trainer`).
    """
    return train_many(X_train, Y_train, X_dev, Y_dev, params, lambda: loss, target, seeds=(seed,),
                      max_epochs=max_epochs, on_epoch=on_epoch, progress=progress, **trainer_kw)[0]
