"""Training-epoch time and inference throughput of the paper-size network with cacicd's own code,
side by side with a plain dense-input PyTorch loop (spec section 11).

Network: 1,166 inputs (sparse, ~35 ones a row) -> 2,560 -> 2,560 -> 9,336 outputs. The project path
keeps X as scipy CSR and converts one batch at a time (`cacicd.train`); the reference holds X as a
dense tensor already on the device. Epoch times are extrapolated from `--batches` timed batches to
the paper's 48,976 training stays; inference times `--n-infer` stays at batch 1,024 (the paper: 58,976
stays in 1.92 s on a T4) and extrapolates to 58,976 when fewer are timed.

    python benchmarks/bench_train.py            # CUDA when present, else CPU
    python benchmarks/bench_train.py --small    # a quick run with a smaller network
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from cacicd.losses import BCELoss
from cacicd.train import Trainer, predict_proba, set_threads

PAPER_TRAIN, PAPER_STAYS = 48_976, 58_976


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _data(n: int, n_in: int, n_out: int, seed: int = 0) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    rng = np.random.default_rng(seed)
    nnz_x = rng.poisson(35, n).clip(1, n_in)
    X = sp.csr_matrix((np.ones(nnz_x.sum(), np.float32),
                       np.concatenate([rng.choice(n_in, k, replace=False) for k in nnz_x]),
                       np.concatenate([[0], np.cumsum(nnz_x)])), shape=(n, n_in))
    nnz_y = rng.poisson(40, n).clip(1, n_out)
    Y = sp.csr_matrix((np.ones(nnz_y.sum(), np.uint8),
                       np.concatenate([rng.choice(n_out, k, replace=False) for k in nnz_y]),
                       np.concatenate([[0], np.cumsum(nnz_y)])), shape=(n, n_out))
    X.sort_indices()
    Y.sort_indices()
    return X, Y


def _reference_model(n_in: int, units: list[int], n_out: int) -> nn.Module:
    layers, w = [], n_in
    for u in units:
        layers += [nn.Linear(w, u), nn.ReLU(), nn.Dropout(0.3)]
        w = u
    return nn.Sequential(*layers, nn.Linear(w, n_out))


def bench(n_in: int, units: list[int], n_out: int, batches: int, n_infer: int, device: torch.device,
          amp: bool) -> dict:
    """Seconds per training batch and per inference pass for both paths."""
    bs = 128
    n_train = bs * (batches + 2)
    X, Y = _data(max(n_train, n_infer), n_in, n_out)
    params = {"num_layers": len(units) + 1, **{f"units_{i}": u for i, u in enumerate(units)},
              **{f"dropout_{i}": 0.3 for i in range(len(units))}, "batchnorm": False}
    out = {}
    # project path: Trainer on CSR, timed over whole (short) epochs
    Xt, Yt = X[:n_train], Y[:n_train]
    tr = Trainer(Xt, Yt, Xt[:bs], Yt[:bs], params, BCELoss(None), "ndcg", batch_size=bs, device=device, amp=amp)
    tr.X_train, tr.Y_train = Xt[:2 * bs], Yt[:2 * bs]
    tr._train_epoch()  # warm-up
    tr.X_train, tr.Y_train = Xt[2 * bs:], Yt[2 * bs:]
    _sync(device)
    t0 = time.perf_counter()
    tr._train_epoch()
    _sync(device)
    out["train_batch_project"] = (time.perf_counter() - t0) / batches
    # reference: dense tensors on the device, plain loop
    torch.manual_seed(0)
    ref = _reference_model(n_in, units, n_out).to(device)
    opt = torch.optim.Adam(ref.parameters(), lr=2e-4)
    Xd = torch.from_numpy(Xt.toarray()).to(device)
    Yd = torch.from_numpy(Yt.toarray().astype(np.float32)).to(device)
    dtype = (torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16) if amp else None

    def ref_steps(lo: int, hi: int) -> None:
        ref.train()
        perm = torch.randperm(hi - lo, device=device) + lo
        for s in range(0, hi - lo, bs):
            idx = perm[s:s + bs]
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = ref(Xd[idx])
            loss = F.binary_cross_entropy_with_logits(logits.float(), Yd[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    ref_steps(0, 2 * bs)
    _sync(device)
    t0 = time.perf_counter()
    ref_steps(2 * bs, n_train)
    _sync(device)
    out["train_batch_reference"] = (time.perf_counter() - t0) / batches
    # inference at batch 1,024
    Xi = X[:n_infer]
    predict_proba(tr.model, Xi[:2048], batch_size=1024, device=device, amp=amp)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    predict_proba(tr.model, Xi, batch_size=1024, device=device, amp=amp)
    _sync(device)
    out["infer_project"] = time.perf_counter() - t0
    ref.eval()
    Xid = torch.from_numpy(Xi.toarray()).to(device)

    @torch.inference_mode()
    def ref_infer() -> None:
        for s in range(0, n_infer, 1024):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                p = torch.sigmoid(ref(Xid[s:s + 1024]).float())
            p.cpu().numpy()

    _sync(device)
    t0 = time.perf_counter()
    ref_infer()
    _sync(device)
    out["infer_reference"] = time.perf_counter() - t0
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="a smaller network (1,166 -> 512 -> 2,000), quick")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    ap.add_argument("--batches", type=int, default=None, help="training batches timed (default 200 GPU, 20 CPU)")
    ap.add_argument("--n-infer", type=int, default=None, help=f"stays inferred (default {PAPER_STAYS:,} GPU, 5,000 CPU)")
    ap.add_argument("--amp", action="store_true", help="mixed precision (GPU only)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores allowed)")
    a = ap.parse_args(argv)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = set_threads(a.threads)
    gpu = device.type == "cuda"
    n_in, units, n_out = (1166, [512], 2000) if a.small else (1166, [2560, 2560], 9336)
    batches = a.batches or (200 if gpu else (10 if not a.small else 20))
    n_infer = a.n_infer or (PAPER_STAYS if gpu else (2_000 if not a.small else 5_000))
    name = torch.cuda.get_device_name(device) if gpu else f"CPU ({threads} threads)"
    print(f"device: {name}; torch {torch.__version__}; amp={a.amp and gpu}")
    print(f"network: {n_in} -> {' -> '.join(map(str, units))} -> {n_out}; batch 128; {batches} batches timed; "
          f"{n_infer:,} stays inferred at batch 1,024")
    r = bench(n_in, units, n_out, batches, n_infer, device, a.amp)
    epoch = PAPER_TRAIN / 128
    rows = [("train epoch (48,976 stays), s", r["train_batch_project"] * epoch, r["train_batch_reference"] * epoch),
            (f"infer {n_infer:,} stays, s", r["infer_project"], r["infer_reference"]),
            (f"infer {PAPER_STAYS:,} stays (extrapolated), s", r["infer_project"] * PAPER_STAYS / n_infer,
             r["infer_reference"] * PAPER_STAYS / n_infer)]
    print(f"{'':44s} {'cacicd':>10s} {'reference':>10s} {'ratio':>7s}")
    for label, p, q in rows:
        print(f"{label:44s} {p:10.3f} {q:10.3f} {p / q:7.2f}")
    print("ratio = cacicd / plain dense-input loop (< 1: cacicd faster). Paper: 1.92 s for 58,976 stays on a T4.")


if __name__ == "__main__":
    main()
