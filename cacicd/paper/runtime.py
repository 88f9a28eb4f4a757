"""Inference and training-time benchmarks (spec section 11, the paper's Section 3.6.2).

Inference: the whole dataset through a trained network, batch by batch, for each batch size: one
warm-up pass, then `repeats` timed passes; mean ± standard deviation (ddof = 1) of the wall time.
A pass includes moving each CSR batch to the device, the forward pass, the sigmoid and copying the
probabilities back to host memory (what a user of the predictions pays); CUDA is synchronised
before the clock stops. Works with any torch `nn.Module` mapping (B, n_inputs) to (B, n_labels)
logits. Results name the device; GPU and CPU timings belong in separate tables (`table_name`).
"""
from __future__ import annotations

import copy
import logging
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn
from tqdm.auto import tqdm

from cacicd.config import cpu_count
from cacicd.models.network import low_precision
from cacicd.models.train import KerasAdam, resolve_precision, to_tensor, use_sparse_input

logger = logging.getLogger(__name__)


def device_kind(device: torch.device | str) -> str:
    """'cuda', 'cpu' (or another torch device type) of a device."""
    return torch.device(device).type


def cpu_name(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU model name (from /proc/cpuinfo where it exists, else `platform`), with its core count."""
    name = ""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.lower().startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    n = cpu_count()
    return f"{name} ({n} cores usable, {torch.get_num_threads()} torch threads)"


def device_name(device: torch.device | str) -> str:
    """A human-readable name of a device: the CUDA device's name, or the CPU model name."""
    d = torch.device(device)
    if d.type == "cuda":
        return torch.cuda.get_device_name(d)
    if d.type == "cpu":
        return cpu_name()
    return str(d)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_inputs(model: nn.Module, X) -> sp.csr_matrix:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if not sp.issparse(X):
        raise TypeError(f"X must be a scipy sparse matrix (CSR), got {type(X).__name__}")
    X = X.tocsr().astype(np.float32)
    if X.shape[0] == 0:
        raise ValueError("X has no rows: nothing to time")
    return X


@torch.inference_mode()
def predict_pass(model: nn.Module, X: sp.csr_matrix, batch_size: int, device: torch.device | str,
                 dtype: torch.dtype = torch.float32) -> int:
    """One inference pass of `model` over every row of X (n, n_inputs) CSR, multiplying in `dtype`; returns the rows."""
    device = torch.device(device)
    sparse = use_sparse_input(model, device)
    n = 0
    for start in range(0, X.shape[0], batch_size):
        xb = to_tensor(X[start:start + batch_size], device, sparse)
        with low_precision(dtype):
            logits = model(xb)
        out = torch.sigmoid(logits.float()).cpu().numpy()
        n += out.shape[0]
    _synchronize(device)
    return n


def time_inference(model: nn.Module, X, batch_sizes: Sequence[int], repeats: int = 3, warmup: int = 1,
                   device: torch.device | str | None = None, progress: bool = False, precision: str = "float32",
                   clock: Callable[[], float] = time.perf_counter) -> pd.DataFrame:
    """Wall time of whole-dataset inference per batch size: one row per timed repeat.

    model: any nn.Module, (B, n_inputs) -> (B, n_labels) logits; X: (n, n_inputs) CSR; precision: as the
    trainer's ("auto": bfloat16 where the device has it natively). Returns columns device, device_kind,
    precision, batch_size, repeat, n_samples, seconds.
    """
    X = _check_inputs(model, X)
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    if any(int(b) < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device).eval()
    name, kind = device_name(device), device_kind(device)
    dtype = resolve_precision(precision, device)
    rows = []
    for bs in tqdm(list(batch_sizes), desc="inference batch sizes", disable=not progress, leave=False):
        bs = int(bs)
        for _ in range(warmup):
            predict_pass(model, X, bs, device, dtype)
        for rep in range(repeats):
            _synchronize(device)
            t0 = clock()
            n = predict_pass(model, X, bs, device, dtype)
            dt = clock() - t0
            rows.append({"device": name, "device_kind": kind, "precision": dtype_name(dtype), "batch_size": bs, "repeat": rep, "n_samples": n,
                         "seconds": dt})
        logger.info("batch %d: %s s", bs, [round(r["seconds"], 4) for r in rows[-repeats:]])
    return pd.DataFrame(rows)


def summarize(timings: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std (ddof = 1; NaN std for one repeat) of `time_inference` rows per device, precision and batch size.

    Returns columns device, device_kind, precision, batch_size, n_samples, repeats, mean_s, std_s, samples_per_s.
    """
    keys = ["device", "device_kind", "precision", "batch_size", "n_samples"]
    if missing := set(keys + ["seconds"]) - set(timings.columns):
        raise ValueError(f"timings table lacks column(s) {sorted(missing)}")
    g = timings.groupby(keys, sort=True)["seconds"]
    out = g.agg(repeats="count", mean_s="mean", std_s=lambda s: s.std(ddof=1)).reset_index()
    out["samples_per_s"] = out["n_samples"] / out["mean_s"]
    return out


def time_training_epochs(model: nn.Module, X, Y, epochs: int = 1, batch_size: int = 128, lr: float = 2e-4,
                         device: torch.device | str | None = None, seed: int = 0, precision: str = "float32",
                         clock: Callable[[], float] = time.perf_counter) -> pd.DataFrame:
    """Wall time of `epochs` plain training epochs (BCE with logits, Adam, shuffled batches) on a copy.

    model: nn.Module (B, n_inputs) -> (B, n_labels) logits (copied: the caller's weights are untouched);
    X: (n, n_inputs) CSR; Y: (n, n_labels) 0/1; precision: of the products (float32 master weights and
    loss). Returns columns device, device_kind, precision, epoch, n_samples, batch_size, seconds.
    """
    X = _check_inputs(model, X)
    Y = sp.csr_matrix(Y) if not sp.issparse(Y) else Y.tocsr()
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    m = copy.deepcopy(model).to(device).train()
    opt = KerasAdam(m.parameters(), lr=lr)  # the training's optimizer
    loss_fn = nn.BCEWithLogitsLoss()
    sparse = use_sparse_input(m, device)
    rng = np.random.default_rng(seed)
    name, kind = device_name(device), device_kind(device)
    dtype = resolve_precision(precision, device)
    rows = []
    for ep in range(epochs):
        order = rng.permutation(X.shape[0])
        _synchronize(device)
        t0 = clock()
        for start in range(0, len(order), batch_size):
            idx = np.sort(order[start:start + batch_size])
            if len(idx) < 2:
                continue  # BatchNorm cannot train on one row
            xb = to_tensor(X[idx], device, sparse)
            yb = torch.from_numpy(Y[idx].toarray().astype(np.float32)).to(device)
            with low_precision(dtype):
                logits = m(xb)
            loss = loss_fn(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _synchronize(device)
        rows.append({"device": name, "device_kind": kind, "precision": dtype_name(dtype), "epoch": ep, "n_samples": X.shape[0],
                     "batch_size": batch_size, "seconds": clock() - t0})
    return pd.DataFrame(rows)


def summarize_training(epochs: pd.DataFrame) -> pd.DataFrame:
    """One row of `time_training_epochs` rows: device, device_kind, precision, n_samples, batch_size, epochs,
    mean_s, std_s (ddof = 1; NaN for one epoch)."""
    keys = ["device", "device_kind", "precision", "n_samples", "batch_size"]
    if missing := set(keys + ["seconds"]) - set(epochs.columns):
        raise ValueError(f"training timings lack column(s) {sorted(missing)}")
    if epochs.empty or len(epochs.drop_duplicates(keys)) != 1:
        raise ValueError(f"training timings need rows of one run (one value of each of {keys})")
    first = epochs.iloc[0]
    return pd.DataFrame([{**{k: first[k] for k in keys}, "epochs": len(epochs), "mean_s": epochs["seconds"].mean(),
                          "std_s": epochs["seconds"].std(ddof=1)}])


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' or 'bfloat16' of a torch dtype."""
    return str(dtype).removeprefix("torch.")


def table_name(stem: str, timings: pd.DataFrame) -> str:
    """`<stem>_<device kind>` for a table of one device kind (GPU and CPU timings are never mixed)."""
    kinds = sorted(set(timings["device_kind"]))
    if len(kinds) != 1:
        raise ValueError(f"a runtime table must hold one device kind, got {kinds}")
    return f"{stem}_{kinds[0]}"
