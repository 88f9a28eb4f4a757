"""Train every search of a profile in three ways, side by side: one process with 2 torch threads (how runs
trained before the Dask engine), 1 Dask worker and 2 Dask workers (1 torch thread per training, the profiles'
setting); wall time of each and the ratios, then every cached result of the Dask runs compared bit for bit.

    python benchmarks/bench_scale.py                          # default profile, every experiment, 3 ways
    python benchmarks/bench_scale.py --profile smoke --ways workers1,workers2

Each way runs in a fresh process on a fresh cache (the dataset is built first, outside the timing). Run it on a
quiet machine: the ways are timed one after another. The 2-thread process is the same code with the profile's
`threads` set to 2, so it trains slightly different bits (a training's bits depend on its thread count) and may
stop networks at other epochs; the two Dask ways must agree exactly.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WAYS = {"process2threads": (None, 2), "workers1": (1, 1), "workers2": (2, 1)}  # (workers, torch threads)


def one(way: str, profile_name: str, cache: str) -> dict:
    """Train every experiment in one way on a fresh cache; seconds for the data and for the training."""
    from cacicd.config import get_profile
    from cacicd.data.sources import load_data
    from cacicd.experiments import engine as E
    from cacicd.models.curves import CURVES_FILE, read_records

    workers, threads = WAYS[way]
    profile = get_profile(profile_name).replace(threads=threads)
    t0 = time.perf_counter()
    load_data("synthetic", profile, cache)
    data_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    E.run_many(list(E.EXPERIMENTS), profile, "synthetic", cache_dir=cache, workers=workers, progress=False)
    train_s = time.perf_counter() - t0
    epochs = sum(len(r["epochs"]) for f in Path(cache).rglob(CURVES_FILE) for r in read_records(f).values())
    return {"data_s": data_s, "train_s": train_s, "epochs": epochs}


def results(cache: Path) -> dict[str, bytes]:
    """Every cached result's test scores and metrics, by experiment/fold."""
    out = {}
    for f in sorted(cache.rglob("result.json")):
        key = f"{f.parent.parent.name}/{f.parent.name}"
        out[key] = (f.parent / "scores.npy").read_bytes() + (f.parent / "test_metrics.csv").read_bytes()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, of {', '.join(WAYS)}")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.profile, a.cache)))
        return
    ways = [w.strip() for w in a.ways.split(",")]
    unknown = set(ways) - set(WAYS)
    if unknown:
        raise SystemExit(f"unknown way(s) {sorted(unknown)}; known: {', '.join(WAYS)}")
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale."))
    rows = {}
    for w in ways:
        cache = tmp / w
        out = subprocess.run([sys.executable, __file__, "--one", w, "--profile", a.profile, "--cache", str(cache)],
                             capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{w} failed:\n{out.stderr[-3000:]}")
        rows[w] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{w:16s} train {rows[w]['train_s']:8.1f} s   ({rows[w]['epochs']:,} epochs; data {rows[w]['data_s']:.1f} s)",
              flush=True)
    ref = rows.get("process2threads")
    if ref:
        for w in ways:
            print(f"{w:16s} / process2threads: {rows[w]['train_s'] / ref['train_s']:.2f}x")
    dask = [w for w in ways if w.startswith("workers")]
    if len(dask) > 1:
        base = results(tmp / dask[0])
        for w in dask[1:]:
            other = results(tmp / w)
            same = sum(base[k] == other.get(k) for k in base)
            print(f"{w} vs {dask[0]}: {same} of {len(base)} cached results identical (scores and test metrics)"
                  + ("" if same == len(base) == len(other) else "  <-- DIFFER"))
    print(f"caches in {tmp}")


if __name__ == "__main__":
    main()
