"""Dev NDCG of bfloat16 training against float32 on the default profile's data (issue 13, item 3).

On the synthetic dataset of a profile (default: "default"), for each fold, trains one fixed network
twice with the same seed, in float32 and in bfloat16 (or another --precision), and prints the best
dev NDCG of each (early stopping on dev NDCG, as naive_ndcg), their difference and the training
time. Acceptance: |difference| <= --tolerance (0.003) on every fold.

    python benchmarks/bench_precision.py                       # default profile, 3 folds, ~5 min on 2 cores
    python benchmarks/bench_precision.py --units 384 --dropout 0.3 --lr 5e-3 --epochs 7
"""
from __future__ import annotations

import argparse
import time


from cacicd.models import losses
from cacicd.config import cache_root, get_profile
from cacicd.experiments.engine import fold_indices, load_dataset
from cacicd.models.labels import LabelContext
from cacicd.models.train import resolve_precision, set_threads, train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--precision", default="bfloat16", help="compared with float32 (default bfloat16)")
    ap.add_argument("--units", type=int, default=384, help="units of the one hidden layer")
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--epochs", type=int, default=7)
    ap.add_argument("--patience", type=int, default=None, help="default: the profile's")
    ap.add_argument("--tolerance", type=float, default=0.003)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache", default=None, help="cache folder (default: cacicd.config.cache_root())")
    a = ap.parse_args(argv)
    threads = set_threads(a.threads)
    profile = get_profile(a.profile)
    cache = cache_root() if a.cache is None else a.cache
    ds = load_dataset("synthetic", profile, cache)
    X, Y = ds.X.tocsr(), ds.Y.tocsr()
    params = {"num_layers": 2, "units_0": a.units, "dropout_0": a.dropout, "batchnorm": False}
    patience = profile.patience if a.patience is None else a.patience
    print(f"profile {profile.name}: {ds.n_stays:,} stays, {X.shape[1]} inputs, {Y.shape[1]} labels; "
          f"{profile.n_folds} folds; network {X.shape[1]} -> {a.units} (dropout {a.dropout}) -> {Y.shape[1]}, "
          f"lr {a.lr}, batch {profile.batch_size}, {a.epochs} epochs, patience {patience}, target ndcg; "
          f"CPU threads {threads}; {a.precision} computes in {resolve_precision(a.precision, 'cpu')}")
    print("| fold | float32 dev NDCG (epoch) | "
          f"{a.precision} dev NDCG (epoch) | difference | float32 s | {a.precision} s |")
    print("|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for fold in range(profile.n_folds):
        tr, dv, _ = fold_indices(ds, profile, fold, cache)
        ctx = LabelContext.from_labels(ds.codes, Y[tr])
        out = {}
        for prec in ("float32", a.precision):
            t0 = time.perf_counter()
            r = train(X[tr], Y[tr], X[dv], Y[dv], params, losses.make_loss("bce", ctx), "ndcg",
                      seed=profile.seed * 1000 + 7919 * (fold + 1), max_epochs=a.epochs, lr=a.lr,
                      batch_size=profile.batch_size, patience=patience, device="cpu", precision=prec)
            out[prec] = (r.best_value, r.best_epoch, time.perf_counter() - t0)
        (v32, e32, s32), (v16, e16, s16) = out["float32"], out[a.precision]
        worst = max(worst, abs(v16 - v32))
        print(f"| {fold} | {v32:.4f} ({e32}) | {v16:.4f} ({e16}) | {v16 - v32:+.4f} | {s32:.1f} | {s16:.1f} |")
    ok = worst <= a.tolerance
    print(f"largest |difference| {worst:.4f}: {'within' if ok else 'OUTSIDE'} the tolerance {a.tolerance}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
