"""A rehearsal of the paper profile at the paper's size, on synthetic data, without running its study.

1. `cacicd data --profile paper`: builds the 58,976-stay synthetic dataset (timed, peak memory of the process),
   and prints its Table 1 / Table 2 statistics next to the paper's.
2. One training of a mid-size configuration of the paper's space (default 2 hidden layers of 2,560 units,
   dropout 0.5, batch normalisation) for one epoch on fold 0, through the search's own path
   (`cacicd.models.search.train_node`, the naive family's data and all nine members scored on the
   validation split and dev, a checkpoint written), with the profile's precision and torch threads (timed, peak
   memory).

    python benchmarks/rehearse_paper.py [--cache DIR] [--units 2560] [--layers 3] [--skip-training]

Each step runs in a fresh process so that its peak memory is its own.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_gib() -> float:
    """This process's peak resident memory, GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build_data(cache: str) -> dict:
    """Build (or read) the paper-size synthetic dataset; its time, peak memory and Table 1/2 against the paper."""
    from cacicd.config import get_profile
    from cacicd.data.describe import describe
    from cacicd.data.sources import load_data
    from cacicd.paper import report

    t0 = time.perf_counter()
    ds = load_data("synthetic", get_profile("paper"), cache)
    secs = time.perf_counter() - t0
    desc = describe(ds)
    table2 = report.table2_with_paper(desc["table2"])
    return {"seconds": secs, "peak_gib": peak_gib(), "stays": ds.n_stays, "features": int(ds.X.shape[1]),
            "codes": len(ds.codes), "table1": desc["table1"].to_string(index=False),
            "table2": table2.to_string(index=False)}


def train_one(cache: str, layers: int, units: int) -> dict:
    """One epoch of one configuration at the paper's size through the search's path, all nine members scored."""
    from cacicd.config import get_profile
    from cacicd.experiments import engine as E
    from cacicd.models import search as S

    profile = get_profile("paper")
    ds = E.load_dataset("synthetic", profile, Path(cache))
    exp = E.get_experiment("naive_ndcg")
    members = tuple(S.Member(e.name, e.target, e.output_rule) for e in E.family(exp))
    t0 = time.perf_counter()
    data = E.family_data(exp, ds, profile, 0, Path(cache))
    data_s = time.perf_counter() - t0
    cfg = {"num_layers": layers, "units": units, "dropout": 0.5, "batchnorm": True}
    node = S.Node.make(cfg, 0, None, [profile.seed, 0])
    settings = S.TrainSettings(profile.learning_rate, profile.batch_size, profile.patience, None, profile.precision,
                               profile.threads)
    job = S.NodeJob(node, members, settings, tuple((m.key, 1) for m in members))
    with tempfile.TemporaryDirectory() as ckpts:
        t0 = time.perf_counter()
        rec = S.train_node(job, data, ckpts)
        secs = time.perf_counter() - t0
        ckpt_bytes = sum(p.stat().st_size for p in Path(ckpts).glob("*.pt"))
    e = rec["epochs"][0]
    return {"configuration": S.describe(cfg), "train_rows": data.X_fit.shape[0], "val_rows": data.X_val.shape[0],
            "dev_rows": data.X_dev.shape[0], "labels": data.Y_fit.shape[1], "family_data_s": data_s,
            "node_s": secs, "epoch_s": e["seconds"], "loss": e["loss"], "dev": e["dev"], "val": e["val"],
            "checkpoint_mb": ckpt_bytes / 1e6, "threads": profile.threads, "precision": profile.precision,
            "peak_gib": peak_gib()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=None, help="cache folder (default: a new temporary one)")
    ap.add_argument("--layers", type=int, default=3, help="num_layers (hidden blocks + 1; default 3)")
    ap.add_argument("--units", type=int, default=2560)
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.step == "data":
        print(json.dumps(build_data(a.cache)))
        return
    if a.step == "train":
        print(json.dumps(train_one(a.cache, a.layers, a.units)))
        return
    cache = a.cache or tempfile.mkdtemp(prefix="rehearse_paper.")
    steps = ["data"] + ([] if a.skip_training else ["train"])
    for step in steps:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--step", step, "--cache", cache, "--layers", str(a.layers),
                              "--units", str(a.units)], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"step {step} failed:\n{out.stderr[-3000:]}")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        if step == "data":
            print(f"cacicd data --profile paper: {r['stays']:,} stays, {r['features']:,} features, {r['codes']:,} "
                  f"codes in {r['seconds']:.0f} s (process {time.perf_counter() - t0:.0f} s), peak RSS "
                  f"{r['peak_gib']:.2f} GiB")
            print("Table 1 (unique codes per level):\n" + r["table1"])
            print("Table 2 (codes per stay) against the paper:\n" + r["table2"])
        else:
            print(f"one epoch of {r['configuration']} at the paper's size ({r['train_rows']:,} training rows, "
                  f"{r['val_rows']:,} validation, {r['dev_rows']:,} dev, {r['labels']:,} labels; {r['precision']}, "
                  f"{r['threads']} torch thread(s)):")
            print(f"  epoch (training + nine members on val and dev) {r['epoch_s']:.1f} s; node with checkpoint "
                  f"{r['node_s']:.1f} s ({r['checkpoint_mb']:.0f} MB); family data {r['family_data_s']:.1f} s; "
                  f"peak RSS {r['peak_gib']:.2f} GiB")
            print(f"  loss {r['loss']:.4f}; dev: " + ", ".join(f"{k} {v:.4f}" for k, v in r["dev"].items()
                                                               if v is not None))
    print(f"cache: {cache}")


if __name__ == "__main__":
    main()
