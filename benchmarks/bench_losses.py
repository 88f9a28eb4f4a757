"""Per-method training overhead of the loss plug-ins on a realistic ICD-9-CM label set.

Builds ~9,336 labels by rolling up random ICD-9-CM leaf codes (the size of MIMIC-III's label set),
rolled-up targets with 11 leaf codes per stay, and times `--batches` batches of 128 (70 batches ≈ one
epoch of a ~9k-stay training fold; use ~370 for all of MIMIC-III's training set) in two settings:
  loss: forward + backward of the loss alone on (128, L) logits (the penalties also reach the head);
  mlp:  forward + backward + Adam step of a small MLP head (1,166 → H → L) with the loss.
Prints a table of method, seconds, ratio to plain BCE.

    python benchmarks/bench_losses.py [--batches 70] [--hidden 1024] [--threads 1] [--device cpu]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from cacicd import icd9
from cacicd.models.labels import LabelContext
from cacicd.models.losses import LOSS_SPACES, LOSSES, make_loss
from cacicd.models.train import set_threads


def label_set(n_labels: int, seed: int) -> list[str]:
    """Codes rolled up from random ICD-9-CM leaves until at least n_labels codes."""
    rng = np.random.default_rng(seed)
    inner = {icd9.parent(c) for c in icd9.all_codes()}
    leaves = [c for c in icd9.all_codes() if c not in inner]
    codes: set[str] = set()
    for c in rng.permutation(leaves):
        codes |= icd9.rollup([c])
        if len(codes) >= n_labels:
            break
    return sorted(codes)


def targets(ctx: LabelContext, n: int, per_stay: int, seed: int) -> np.ndarray:
    """(n, L) rolled-up 0/1 targets: per_stay random label leaves per stay and their ancestors."""
    rng = np.random.default_rng(seed)
    is_leaf = np.ones(len(ctx.codes), dtype=bool)
    is_leaf[ctx.parent_idx] = False
    leaves = np.flatnonzero(is_leaf)
    A = ctx.ancestor_matrix()
    picks = rng.choice(leaves, (n, per_stay))
    onehot = np.zeros((n, len(ctx.codes)), dtype=np.float32)
    np.put_along_axis(onehot, picks, 1.0, axis=1)
    return (np.asarray((A.T @ onehot.T).T) > 0).astype(np.float32)


class Head(nn.Module):
    def __init__(self, n_in: int, hidden: int, n_out: int):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU())
        self.output = nn.Linear(hidden, n_out)

    def forward(self, x):
        return self.output(self.hidden(x))


def mid(space: dict) -> dict:
    """Mid-range hyperparameters (geometric mean for log-uniform)."""
    return {k: float(np.sqrt(lo * hi)) if kind == "loguniform" else (lo + hi) / 2
            for k, (kind, lo, hi) in space.items()}


def time_method(name, ctx, Y, X, model, batches, mode, device, repeats):
    loss_fn = make_loss(name, ctx, **mid(LOSS_SPACES.get(name, {})))
    bs = 128
    Yt = torch.as_tensor(Y, device=device)
    Xt = torch.as_tensor(X, device=device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-4) if mode == "mlp" else None
    logits0 = torch.randn(bs, Y.shape[1], device=device)

    def step(i):
        y = Yt[(i * bs) % (len(Yt) - bs):][:bs]
        if mode == "loss":
            z = logits0.clone().requires_grad_(True)
            loss = loss_fn(z, y, model)
            loss.backward()
        else:
            opt.zero_grad(set_to_none=True)
            x = Xt[(i * bs) % (len(Xt) - bs):][:bs]
            loss = loss_fn(model(x), y, model)
            loss.backward()
            opt.step()

    for i in range(3):  # warm-up
        step(i)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(batches):
            step(i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, default=9336)
    ap.add_argument("--batches", type=int, default=70)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--modes", default="loss,mlp")
    args = ap.parse_args()
    set_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    codes = label_set(args.labels, seed=0)
    Y = targets(LabelContext(codes, icd9.levels_of(codes), np.zeros(len(codes), dtype=np.int64), 1), 2048, 11, seed=1)
    ctx = LabelContext.from_labels(codes, Y)
    tree = ctx.tree()
    print(f"{len(codes)} labels, {ctx.parent_idx.size} tree edges, depth {int(tree.depth.max()) + 1}, "
          f"{Y.sum(1).mean():.1f} positive labels per stay; {args.batches} batches of 128; "
          f"device {device}, {args.threads} CPU thread(s)")
    X = (np.random.default_rng(2).random((2048, 1166)) < 0.02).astype(np.float32)
    rows = []
    for name in LOSSES:
        row = [name]
        for mode in args.modes.split(","):
            torch.manual_seed(0)
            model = Head(X.shape[1], args.hidden, len(codes)).to(device)
            row.append(time_method(name, ctx, Y, X, model, args.batches, mode, device, args.repeats))
        rows.append(row)
    modes = args.modes.split(",")
    head = "| method | " + " | ".join(f"{m} s | {m} ×BCE" for m in modes) + " |"
    print(head)
    print("|" + "---|" * (1 + 2 * len(modes)))
    base = rows[0]
    for row in rows:
        cells = " | ".join(f"{row[k + 1]:.3f} | {row[k + 1] / base[k + 1]:.2f}" for k in range(len(modes)))
        print(f"| {row[0]} | {cells} |")


if __name__ == "__main__":
    main()
