"""CPU training-epoch time at the default size, today's code against this tree's, side by side (issue 24).

Data: the default profile's synthetic stays (7,000: 1,155 inputs, 6,434 labels), fold 0's training
set (~5,250 stays) and dev set. Networks: "2 x 384" is num_layers 2 (one hidden layer of 384 units),
"3 x 1,024" num_layers 3 (two of 1,024); dropout 0.3, no batch normalisation, BCE, batch 128, Adam
(lr 2e-4), `Trainer.train_epoch`, in bfloat16 and float32, with 1 and 2 torch threads.

Today's code runs for real: `git archive <ref> cacicd` unpacks the reference commit's package (default
d2338cc) into a temporary folder, and each measurement is a subprocess whose PYTHONPATH is one tree or
the other, old and new alternating variant by variant in every round, so a busy machine slows both
alike. A subprocess trains `--warmup` epochs (the logits leave 0, as in a real run), then times
`--epochs` epochs; a variant's time is the median over rounds and epochs, in wall-clock seconds and
in CPU seconds of the process (all its threads: on a machine shared with other work, the CPU time
leaves out the time the process waited for a core); ratio = new / today (target <= 0.6). Beside them, the
floor: the same epoch's dense matrix products and torch's fused Adam over the parameters alone, on random
tensors (`floor_seconds`), the lowest ratio any epoch with these mathematics reaches on this machine. Then the
torch profiler's top operators (self CPU time) of one epoch, today's and the new code's (2 x 384,
bfloat16, 1 thread), and, unless --no-ndcg, the dev NDCG after each of `--ndcg-epochs` epochs of a
fixed configuration (2 x 384, dropout 0.3, lr 2e-3, 1 thread) on every fold, old and new side by
side: the mathematics are the same, but the new code draws dropout's masks from other variates (uniform, not
Bernoulli), so the curves agree in distribution, not to rounding (the issue asks for the same or better).

    python benchmarks/bench_epoch.py                        # about 45 min on 2 busy cores
    python benchmarks/bench_epoch.py --rounds 1 --epochs 1 --no-ndcg --networks 2x384

Set OMP_WAIT_POLICY=PASSIVE on a shared machine (see benchmarks/bench_train.py); it is passed on to
the subprocesses. `--malloc worker` (default) sets glibc's allocator in both trees' subprocesses as the engine
sets it in the Dask workers where every training runs; `--malloc glibc` leaves glibc's defaults (page faults
on (batch, labels) tensors then cost both trees some time). The new tree compiles its CPU kernels
(`cacicd.models.kernels`) in the first warm-up epoch, from TorchInductor's on-disk cache after the first run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = {"2x384": [384], "3x1024": [1024, 1024]}
BATCH, LR, DROPOUT = 128, 2e-4, 0.3


def network_params(units: list[int]) -> dict:
    """Trainer parameters of an MLP with these hidden layers (dropout 0.3, no batch normalisation)."""
    return {"num_layers": len(units) + 1, **{f"units_{i}": u for i, u in enumerate(units)},
            **{f"dropout_{i}": DROPOUT for i in range(len(units))}, "batchnorm": False}


# ---- the subprocess side: runs with whichever cacicd PYTHONPATH names --------------------------

def load_fold(data: Path, fold: int):
    """(X_train, Y_train, X_dev, Y_dev, codes) of one fold from the saved data file."""
    z = np.load(data, allow_pickle=False)
    X = sp.csr_matrix((z["x_data"], z["x_indices"], z["x_indptr"]), shape=tuple(z["x_shape"]))
    Y = sp.csr_matrix((z["y_data"], z["y_indices"], z["y_indptr"]), shape=tuple(z["y_shape"]))
    tr, dv = z[f"train_{fold}"], z[f"dev_{fold}"]
    return X[tr], Y[tr], X[dv], Y[dv], [str(c) for c in z["codes"]]


def make_trainer(job: dict, fold: int = 0, **kw):
    """A cacicd Trainer (BCE, target ndcg) on one fold for a job's network and precision."""
    from cacicd.models.labels import LabelContext
    from cacicd.models.losses import make_loss
    from cacicd.models.train import Trainer

    Xt, Yt, Xd, Yd, codes = load_fold(Path(job["data"]), fold)
    loss = make_loss("bce", LabelContext.from_labels(codes, Yt))
    return Trainer(Xt, Yt, Xd, Yd, network_params(job["units"]), loss, "ndcg", batch_size=BATCH, device="cpu",
                   precision=job["precision"], **{"lr": LR, "seed": 0, **kw})


def keep_freed_memory() -> None:
    """glibc's allocator as the engine's Dask workers run it (`cacicd.experiments.cluster.keep_freed_memory`)."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 2**30)  # M_TRIM_THRESHOLD


def floor_seconds(job: dict) -> list[float]:
    """Seconds per epoch of the work no fusing of the rest removes, on random tensors of the job's network and the
    epoch's batch sizes: the dense matrix products of every layer after the first (forward, weight gradient, input
    gradient) in the job's precision, and torch's fused Adam over all float32 parameters (a memory-bound pass, its
    arrays evicted from the caches by the products in between, as in training)."""
    import torch

    z = np.load(job["data"], allow_pickle=False)
    n_train, n_inputs, n_labels = len(z["train_0"]), int(z["x_shape"][1]), int(z["y_shape"][1])
    sizes = [BATCH] * (n_train // BATCH) + ([n_train % BATCH] if n_train % BATCH else [])
    dtype = getattr(torch, job["precision"])
    widths = [n_inputs, *job["units"], n_labels]
    layers = [(torch.randn(o, i, dtype=dtype), torch.randn(max(sizes), i, dtype=dtype),
               torch.randn(max(sizes), o, dtype=dtype)) for i, o in zip(widths[1:-1], widths[2:])]
    shapes = [s for i, o in zip(widths[:-1], widths[1:]) for s in ((o, i), (o,))]
    params, grads, m, v = ([torch.rand(s) * 1e-2 for s in shapes] for _ in range(4))
    steps = [torch.zeros(()) for _ in shapes]

    def epoch() -> None:
        for b in sizes:
            for w, x, g in layers:
                torch.mm(x[:b], w.t())
                torch.mm(g[:b].t(), x[:b])
                torch.mm(g[:b], w)
            torch._fused_adam_(params, grads, m, v, [], steps, lr=LR, beta1=0.9, beta2=0.999, weight_decay=0.0,
                               eps=1e-7, amsgrad=False, maximize=False)

    epoch()
    seconds = []
    for _ in range(job["epochs"]):
        t0 = time.perf_counter()
        epoch()
        seconds.append(time.perf_counter() - t0)
    return seconds


def worker(job: dict) -> dict:
    """Run one job ("time", "floor", "profile" or "ndcg") with the cacicd on PYTHONPATH; returns its result."""
    if job.get("malloc") == "worker":
        keep_freed_memory()
    import cacicd
    from cacicd.models.train import set_threads

    set_threads(job["threads"])
    out: dict = {"package": str(Path(cacicd.__file__).parent)}
    if job["task"] == "floor":
        return {**out, "seconds": floor_seconds(job)}
    if job["task"] == "ndcg":
        curves = []
        for fold in range(job["folds"]):
            tr = make_trainer(job, fold, lr=job["lr"], seed=1000 + fold, patience=job["epochs"])
            curves.append([tr.step()["dev"] for _ in range(job["epochs"])])
        return {**out, "ndcg": curves}
    tr = make_trainer(job)
    for _ in range(job["warmup"]):
        tr.train_epoch()
    if job["task"] == "profile":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            tr.train_epoch()
            seconds = time.perf_counter() - t0
        ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        return {**out, "seconds": seconds, "total_ms": sum(e.self_cpu_time_total for e in ops) / 1e3,
                "ops": [(e.key, e.self_cpu_time_total / 1e3, e.count) for e in ops[:job["top"]]]}
    wall, cpu = [], []
    for _ in range(job["epochs"]):
        t0, c0 = time.perf_counter(), time.process_time()
        tr.train_epoch()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {**out, "seconds": wall, "cpu_seconds": cpu}


# ---- the parent side -------------------------------------------------------------------------

def save_data(path: Path, cache: str | None) -> str:
    """Write the default profile's synthetic data and fold indices to one .npz; returns a description."""
    from cacicd.config import cache_root, get_profile
    from cacicd.experiments.engine import fold_indices, load_dataset

    profile = get_profile("default")
    cache_dir = Path(cache) if cache else cache_root()
    ds = load_dataset("synthetic", profile, cache_dir)
    X, Y = ds.X.tocsr().astype(np.float32), ds.Y.tocsr()
    folds = {}
    for k in range(profile.n_folds):
        tr, dv, _ = fold_indices(ds, profile, k, cache_dir)
        folds[f"train_{k}"], folds[f"dev_{k}"] = tr, dv
    np.savez(path, x_data=X.data, x_indices=X.indices, x_indptr=X.indptr, x_shape=np.array(X.shape),
             y_data=Y.data, y_indices=Y.indices, y_indptr=Y.indptr, y_shape=np.array(Y.shape),
             codes=np.array(ds.codes, dtype=str), **folds)
    return (f"default profile: {ds.n_stays:,} stays, {X.shape[1]:,} inputs, {Y.shape[1]:,} labels; "
            f"fold 0: {len(folds['train_0']):,} training stays, {len(folds['dev_0']):,} dev stays")


def extract(ref: str, dest: Path) -> str:
    """Unpack the cacicd package of commit `ref` into dest; returns the commit's short hash and subject."""
    tar = subprocess.run(["git", "archive", ref, "cacicd"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(tar)) as t:
        t.extractall(dest, filter="data")
    return subprocess.run(["git", "log", "-1", "--format=%h %s", ref], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def run_job(tree: Path, job: dict) -> dict:
    """Run a job in a subprocess whose PYTHONPATH is `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    r = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], env=env, capture_output=True,
                       text=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    if r.returncode != 0 or not lines:
        raise RuntimeError(f"job {job} in {tree} failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    if Path(res["package"]).resolve() != (tree / "cacicd").resolve():
        raise RuntimeError(f"the job imported cacicd from {res['package']}, not from {tree}")
    return res


def print_profiles(trees: dict[str, Path], job: dict) -> None:
    """The top operators by self CPU time of one epoch, today's and the new code's, side by side."""
    res = {name: run_job(tree, job) for name, tree in trees.items()}
    print(f"\nTop operators of one epoch by self CPU time (torch.profiler; {'x'.join(map(str, job['units']))} "
          f"hidden, {job['precision']}, {job['threads']} thread(s)); epoch under the profiler: "
          + ", ".join(f"{k} {r['seconds']:.2f} s" for k, r in res.items()))
    names = list(res)
    print("| rank | " + " | ".join(f"{k}: operator | ms | % | calls" for k in names) + " |")
    print("|---:|" + "---|---:|---:|---:|" * len(names))
    for i in range(job["top"]):
        cells = []
        for k in names:
            ops = res[k]["ops"]
            if i < len(ops):
                name, ms, calls = ops[i]
                cells.append(f"{name} | {ms:.1f} | {100 * ms / res[k]['total_ms']:.1f} | {calls}")
            else:
                cells.append(" | | | ")
        print(f"| {i + 1} | " + " | ".join(cells) + " |")


def print_ndcg(trees: dict[str, Path], job: dict) -> None:
    """Dev NDCG after each epoch on every fold, today's code and the new one's, and their difference."""
    res = {name: run_job(tree, job)["ndcg"] for name, tree in trees.items()}
    old, new = (np.array(res[k]) for k in trees)
    print(f"\nDev NDCG, {'x'.join(map(str, job['units']))} hidden (dropout {DROPOUT}), lr {job['lr']}, batch {BATCH}, "
          f"{job['precision']}, {job['threads']} thread(s), seed 1000 + fold")
    print("| fold | epoch | today | new | new - today |")
    print("|---:|---:|---:|---:|---:|")
    for f in range(old.shape[0]):
        for e in range(old.shape[1]):
            print(f"| {f} | {e + 1} | {old[f, e]:.5f} | {new[f, e]:.5f} | {new[f, e] - old[f, e]:+.5f} |")
    print(f"largest |difference| {np.abs(new - old).max():.2e}; last epoch mean: today {old[:, -1].mean():.5f}, "
          f"new {new[:, -1].mean():.5f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--ref", default="d2338cc", help="the commit whose cacicd is today's code (default d2338cc)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, old and new alternating in each")
    ap.add_argument("--warmup", type=int, default=2, help="epochs trained before timing")
    ap.add_argument("--epochs", type=int, default=2, help="epochs timed per subprocess")
    ap.add_argument("--networks", default="2x384,3x1024", help=f"comma-separated, of {', '.join(NETWORKS)}")
    ap.add_argument("--precisions", default="bfloat16,float32")
    ap.add_argument("--threads", default="1,2", help="torch thread counts")
    ap.add_argument("--top", type=int, default=12, help="operators listed per profile (0: no profiles)")
    ap.add_argument("--no-ndcg", action="store_true", help="skip the dev NDCG comparison")
    ap.add_argument("--ndcg-epochs", type=int, default=4)
    ap.add_argument("--cache", default=None, help="cache folder of the data (default: cacicd.config.cache_root())")
    ap.add_argument("--malloc", choices=("worker", "glibc"), default="worker",
                    help="worker (default): glibc's allocator keeps freed blocks, as in the engine's Dask workers, "
                         "where every training runs; glibc: its defaults (a plain Python process)")
    a = ap.parse_args(argv)
    if a.worker:
        print("RESULT " + json.dumps(worker(json.loads(a.worker))), flush=True)
        return
    sys.path.insert(0, str(ROOT))
    import torch

    with tempfile.TemporaryDirectory(prefix="bench_epoch_") as tmp:
        tmp = Path(tmp)
        trees = {"today": tmp / "today", "new": ROOT}
        subject = extract(a.ref, trees["today"])
        data = tmp / "data.npz"
        print(f"today: {a.ref} ({subject}), extracted to a temporary folder; new: {ROOT}")
        print(f"{save_data(data, a.cache)}; torch {torch.__version__}, {os.cpu_count()} CPUs, "
              f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, malloc: {a.malloc}")
        variants = [(net, prec, int(th)) for net in a.networks.split(",") for prec in a.precisions.split(",")
                    for th in a.threads.split(",")]
        times: dict[tuple, dict[str, list[float]]] = {v: {k: [] for k in trees} for v in variants}
        cpu: dict[tuple, dict[str, list[float]]] = {v: {k: [] for k in trees} for v in variants}
        floor: dict[tuple, list[float]] = {v: [] for v in variants}
        for r in range(a.rounds):
            for v in variants:
                net, prec, th = v
                job = {"task": "time", "data": str(data), "units": NETWORKS[net], "precision": prec, "threads": th,
                       "warmup": a.warmup, "epochs": a.epochs, "malloc": a.malloc}
                for name in (trees if r % 2 == 0 else reversed(list(trees))):
                    res = run_job(trees[name], job)
                    times[v][name] += res["seconds"]
                    cpu[v][name] += res["cpu_seconds"]
                floor[v] += run_job(trees["new"], {**job, "task": "floor"})["seconds"]
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr, flush=True)
        print(f"\nEpoch seconds ({BATCH}-stay batches, median over {a.rounds} rounds x {a.epochs} epochs after "
              f"{a.warmup} warm-up epochs; measured under load):")
        print("| network | precision | threads | today s | new s | new / today | today CPU s | new CPU s | "
              "new / today (CPU) | floor s | floor / today |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for v, t in times.items():
            old, new = float(np.median(t["today"])), float(np.median(t["new"]))
            c_old, c_new = float(np.median(cpu[v]["today"])), float(np.median(cpu[v]["new"]))
            low = float(np.median(floor[v]))
            print(f"| {v[0].replace('x', ' x ')} | {v[1]} | {v[2]} | {old:.3f} | {new:.3f} | {new / old:.2f} "
                  f"| {c_old:.3f} | {c_new:.3f} | {c_new / c_old:.2f} | {low:.3f} | {low / old:.2f} |")
        print("Target: new / today <= 0.6 for 2 x 384 at the default size. floor: the epoch's dense matrix products "
              "(every layer after the first: forward, weight and input gradients) and torch's fused Adam over the "
              "float32 parameters alone, on random tensors of the epoch's shapes: what any epoch with the same "
              "mathematics still does; floor / today: the lowest ratio this machine allows before the loss, the first "
              "layer, dropout and Python.")
        if a.top > 0:
            print_profiles(trees, {"task": "profile", "data": str(data), "units": NETWORKS["2x384"],
                                   "precision": "bfloat16", "threads": 1, "warmup": a.warmup, "top": a.top,
                                   "malloc": a.malloc})
        if not a.no_ndcg:
            print_ndcg(trees, {"task": "ndcg", "data": str(data), "units": NETWORKS["2x384"], "precision": "bfloat16",
                               "threads": 1, "epochs": a.ndcg_epochs, "folds": 3, "lr": 2e-3, "malloc": a.malloc})


if __name__ == "__main__":
    main()
