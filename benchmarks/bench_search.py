"""The naive family's nine searches (seven target metrics, roll-up, roll-down) on one shared store vs each alone.

Prints configurations started, networks (nodes) and epochs trained, and seconds, for the shared family and
for every search run alone on a store of its own, in one run; then the ratio of the family's cost to the
cost of one search alone (target: at most 1.5x) and to the nine run separately. Every search gets the same
result both ways (tests/test_search.py checks it); the script checks it too.

    python benchmarks/bench_search.py                       # synthetic smoke-size data, default profile's schedule
    python benchmarks/bench_search.py --stays 7000 --fold 0 # the default profile's data
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from cacicd.experiments import engine as E
from cacicd.config import get_profile
from cacicd.models.curves import CurveStore
from cacicd.data.sources import load_data
from cacicd.models.search import FamilySearch, Member, TrainSettings
from cacicd.models.train import set_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default", help="profile whose schedule, space and training settings apply")
    ap.add_argument("--stays", type=int, default=2000, help="synthetic stays (default 2,000)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=1, help="Hyperband iterations (default 1)")
    ap.add_argument("--precision", default=None, help="float32, bfloat16 or auto (default: the profile's)")
    a = ap.parse_args()
    profile = get_profile(a.profile).replace(n_stays=a.stays)
    set_threads(profile.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ds = load_data("synthetic", profile, Path(tmp) / "cache")
        exp = E.get_experiment("naive_ndcg")
        members = [Member(e.name, e.target, e.output_rule) for e in E.family(exp)]
        data = E.family_data(exp, ds, profile, a.fold, Path(tmp) / "cache")
        settings = TrainSettings(profile.learning_rate, profile.batch_size, profile.patience, None,
                                 a.precision or profile.precision, profile.threads)

        def search(ms, name):
            store = CurveStore(Path(tmp) / name)
            fs = FamilySearch(ms, data, profile, store, iterations=a.iterations, seed_material=[profile.seed, a.fold],
                              loss_space=None, settings=settings)
            t0 = time.perf_counter()
            res = fs.run()
            secs = time.perf_counter() - t0
            recs = store.records()
            return res, {"configurations": next(iter(res.values()))["n_configurations"], "networks": len(recs),
                         "epochs": sum(len(r["epochs"]) for r in recs.values()), "seconds": secs}

        print(f"data: {ds.n_stays:,} synthetic stays, {len(ds.codes):,} codes, fold {a.fold}: {data.X_fit.shape[0]:,} "
              f"training rows, {data.X_val.shape[0]:,} validation, {data.X_dev.shape[0]:,} dev")
        print(f"schedule: profile {profile.name}, max_epochs {profile.max_epochs}, factor {profile.hyperband_factor}, "
              f"{a.iterations} iteration(s), {profile.executions_per_trial} execution(s) per trial; precision "
              f"{settings.precision}")
        shared, cost = search(members, "shared")
        rows = [("9 searches, one shared store", cost)]
        alone_costs = []
        for m in members:
            res, c = search([m], m.name)
            alone_costs.append(c)
            rows.append((f"{m.name} alone", c))
            same = all(res[m.name]["best"][k] == shared[m.name]["best"][k] for k in ("config", "best_epoch", "best_dev"))
            if not same:
                raise SystemExit(f"{m.name}: the shared search differs from the search alone")
        total = {k: sum(c[k] for c in alone_costs) for k in ("networks", "epochs", "seconds")}
        total["configurations"] = alone_costs[0]["configurations"]
        rows.append(("9 searches, separately (sum)", total))
        print(f"\n{'':34s} {'configs':>8s} {'networks':>9s} {'epochs':>7s} {'seconds':>9s}")
        for name, c in rows:
            print(f"{name:34s} {c['configurations']:8d} {c['networks']:9d} {c['epochs']:7d} {c['seconds']:9.1f}")
        one = {k: float(np.mean([c[k] for c in alone_costs])) for k in ("epochs", "seconds")}
        print(f"\nshared / one search alone (mean of the nine): epochs {cost['epochs'] / one['epochs']:.2f}x, "
              f"seconds {cost['seconds'] / one['seconds']:.2f}x (target <= 1.5x)")
        print(f"shared / nine separately: epochs {cost['epochs'] / total['epochs']:.2f}x, "
              f"seconds {cost['seconds'] / total['seconds']:.2f}x")
        chosen = {m.name: shared[m.name]["best"]["checkpoint"] for m in members}
        print(f"distinct top models among the nine searches: {len(set(chosen.values()))}")
        print("every search found the same model shared and alone: yes")


if __name__ == "__main__":
    main()
