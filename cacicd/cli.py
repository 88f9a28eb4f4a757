"""The `cacicd` console script: list, data, plan, run, evaluate, status."""
from __future__ import annotations

import argparse
import json
import logging
import sys

import pandas as pd

from cacicd.config import PRECISIONS, StrictParser, cache_root, get_profile
from cacicd.experiments import engine as E
from cacicd.experiments.cluster import add_worker_arguments
from cacicd.experiments import plan as P
from cacicd.files import folder_error
from cacicd.models.search import describe


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="default", help="smoke | default | paper (default: default)")
    p.add_argument("--data", default="synthetic", help="data source: synthetic, an OMOP folder, mimic3:PATH, postgresql://…")
    p.add_argument("--cache", default=None, help="cache folder (default: $CACICD_CACHE or ./cache)")


def _folds(s: str | None) -> list[int] | None:
    """--fold's value: None for all, else the listed fold numbers (ValueError naming a bad item)."""
    if s is None or s.strip() == "all":
        return None
    out = []
    for x in s.split(","):
        try:
            out.append(int(x.strip()))
        except ValueError:
            raise ValueError(f"--fold {s!r}: {x.strip()!r} is not a fold number; give e.g. 0, 0,2 or all") from None
    return out


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    ap = StrictParser(prog="cacicd", description="Computer-assisted ICD-9-CM coding: the paper's experiments.")
    ap.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug logging")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the declared experiments, one line each")
    p = sub.add_parser("data", help="build (or read) the dataset and print its summary")
    _common(p)
    p = sub.add_parser("plan", help="what a profile's searches will cost (epochs, device-hours, wall time, memory), "
                                    "before any training")
    _common(p)
    p.add_argument("--workers", default="auto",
                   help="Dask workers of the run to plan for (auto: as `cacicd run` picks them; for cuda without a "
                        "GPU here, 1)")
    p.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="the device the run trains on (default: cuda where there is one, else cpu); cuda without "
                        "one here: a stated FLOP-based estimate")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON document")
    p.add_argument("--configs", action="store_true",
                   help="list every configuration each search starts, with the cost of its epoch")
    p = sub.add_parser("run", help="search, train and predict experiments (cached); every search at once on Dask")
    p.add_argument("experiment", nargs="*", help="experiment name(s) (see `cacicd list`)")
    p.add_argument("--all", action="store_true", help="every experiment of the paper")
    _common(p)
    p.add_argument("--fold", default="all", help="fold number(s), e.g. 0 or 0,2 (default: all)")
    p.add_argument("--force", action="store_true", help="recompute the results even when cached")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="training and inference precision (default: the profile's)")
    add_worker_arguments(p)
    p = sub.add_parser("evaluate", help="print the metrics table of a cached run")
    p.add_argument("experiment")
    _common(p)
    p.add_argument("--fold", default="all", help="fold number(s), e.g. 0 or 0,2 (default: all)")
    p.add_argument("--split", default="test", choices=("test", "dev"))
    p = sub.add_parser("status", help="done / stale / missing results for a profile and data source")
    _common(p)
    return ap


def ms(s: float) -> str:
    """Seconds in milliseconds, 3 significant digits."""
    return f"{s * 1e3:.3g} ms"


def ns(s: float) -> str:
    """Seconds in nanoseconds, 3 significant digits."""
    return f"{s * 1e9:.3g} ns"


def rate(flops: float) -> str:
    """FLOP/s in words: 'at 467 GFLOP/s', 'at 200 TFLOP/s', '(no measurable cost)' when the fit found none."""
    if flops == float("inf"):
        return "(no measurable cost)"
    return f"at {flops / 1e12:,.3g} TFLOP/s" if flops >= 1e12 else f"at {flops / 1e9:,.3g} GFLOP/s"


def device_time(h: float, unit: str) -> str:
    """Device time in words: '1,326 GPU-hours', '2.5 core-hours', '39 s of core time'."""
    if h < 1:
        return f"{duration(h * 3600)} of {unit} time"
    return f"{h:,.0f} {unit}-hours" if h >= 100 else f"{h:.3g} {unit}-hours"


def duration(s: float) -> str:
    """Seconds in words: '12 s', '41 min', '3.2 h', '5.1 days'."""
    if s < 90:
        return f"{s:.0f} s" if s >= 10 else f"{s:.2g} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def print_plan(plan: P.Plan, configs: bool = False) -> None:
    """The plan in words and one table, as `cacicd plan` prints it."""
    d, t, c, m, x = plan.dataset, plan.totals, plan.calibration, plan.peak_memory, plan.expected
    print(f"plan of profile {plan.profile} on {plan.source} ({d['stays']:,} stays, {d['features']:,} features, "
          f"{d['codes']:,} codes; dataset {d['hash']}), device {plan.device}, {plan.workers} worker(s)")
    print(f"schedule: {plan.schedule}")
    print(f"cost of an epoch: {c['text']}. A training batch: {ms(c['batch_s'])} + {ms(c['layer_s'])} per hidden "
          f"layer + {ns(c['label_s'])} per (row, label) + {ns(c['first_s'])} per first-layer weight + {ns(c['pass_s'])} "
          f"per hidden activation and batchnorm or dropout pass + FLOPs {rate(c['train_flops'])} + "
          f"{ns(c['param_step_s'])} per parameter; a prediction batch: {ms(c['predict_batch_s'])} + "
          f"{ns(c['predict_label_s'])} per (row, label) + FLOPs {rate(c['predict_flops'])}; a checkpoint at "
          f"{c['checkpoint_bytes_s'] / 1e6:,.0f} MB/s; the members' objectives as timed once per family at its "
          "validation + dev size" + (" on this machine's CPU (the run scores them on its host)"
                                     if c["kind"] == "estimate" else ""))
    if c.get("contention", 1.0) != 1.0:
        print(f"all of it x {c['contention']:.2f}: a worker's measured slow-down beside the {plan.workers - 1} other(s) "
              "training at once on this machine's cores")
    if x["from_record"]:
        rec = ", ".join(f"{k} {v['epochs_ratio']:.0%} of its bound from {v['searches']} search(es)"
                        for k, v in x["record"].items())
        print(f"expected epochs: from the record of this profile's finished searches in the cache: {rec}")
    if x["assumed"]:
        print(f"expected epochs{' of ' + ', '.join(x['assumed']) if x['from_record'] else ''}: assumed that "
              f"{x['assumption']}. Why: {x['why']}")
    rows = []
    for s in plan.searches:
        costs = [r["epoch_s"] for r in s.round0] or [0.0]
        rows.append({"search": s.family, "fold": s.fold, "members": len(s.members), "labels": s.data.n_labels,
                     "configs": s.configurations, "nodes": s.nodes, "nodes exp": round(s.nodes_expected),
                     "epochs bound": s.epochs_bound, "epochs exp": round(s.epochs_expected),
                     "epoch s min": round(min(costs), 3), "epoch s max": round(max(costs), 3),
                     "device h exp": round(s.seconds_expected / 3600, 3), "cached": "yes" if s.cached else ""})
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"in all: {t['searches']} searches ({t['cached']} already in the cache), {t['configurations']:,} "
          f"configurations, {t['nodes']:,} networks at most ({t['nodes_expected']:,.0f} expected), "
          f"{t['epochs_bound']:,} epochs if nothing stops early ({t['epochs_expected']:,.0f} expected)")
    unit = "GPU" if plan.device == "cuda" else "core"
    print(f"device time: {device_time(t['device_hours_expected'], unit)} expected "
          f"({device_time(t['device_hours_bound'], unit)} if nothing stops early)")
    print(f"wall time on {plan.workers} worker(s): {duration(t['wall_hours_expected'] * 3600)} expected "
          f"({duration(t['wall_hours_bound'] * 3600)} if nothing stops early)")
    where = "GPU" if plan.device == "cuda" else "host"
    need = m["device_bytes"] if plan.device == "cuda" else m["host_bytes_all_workers"]
    per = "" if plan.device == "cuda" else (f" ({m['host_bytes_per_worker'] / P.GiB:,.1f} GiB a worker, "
                                            f"x {plan.workers}, + the dataset)")
    print(f"peak memory: the largest configuration ({describe(m['config'])}, {m['params']:,} parameters, "
          f"family {m['family']}) needs {need / P.GiB:,.1f} GiB on the {where}{per}: "
          f"{'fits in' if m['fits'] else 'DOES NOT FIT in'} {m['capacity_bytes'] / P.GiB:,.1f} GiB ({m['capacity_of']})"
          + (f"; on the host {m['host_bytes_per_worker'] / P.GiB:,.1f} GiB a worker, {m['host_bytes_all_workers'] / P.GiB:,.1f} "
             f"GiB for {plan.workers} with the dataset" if plan.device == "cuda" else ""))
    for kind, why in plan.skipped.items():
        print(f"not planned: {kind}: {why} (the run fails on it)")
    sec = c["seconds"]
    print(f"the plan took {plan.seconds:.0f} s (dataset {sec['dataset']:.0f} s, calibration {sec['calibration']:.0f} s, "
          f"objectives {sec['objectives']:.0f} s) and trained no network")
    if configs:
        for s in plan.searches:
            print(f"\n{s.family} fold {s.fold}: {s.configurations} configurations started")
            for i, r in enumerate(s.round0):
                print(f"  {i:4d}  {describe(r['config']):60s} {r['epoch_s']:10.3f} s an epoch")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pd.set_option("display.width", 160, "display.max_rows", 500)
    try:
        if args.cmd == "list":
            w = max(map(len, E.EXPERIMENTS))
            for e in E.EXPERIMENTS.values():
                print(f"{e.name:{w}s}  {e.description}")
        elif args.cmd == "data":
            ds = E.load_dataset(args.data, get_profile(args.profile), args.cache or cache_root())
            print(f"{ds.n_stays:,} stays, {ds.X.shape[1]:,} features, {len(ds.codes):,} codes; hash {ds.content_hash()}")
            counts = {lv: int(m.sum()) for lv, m in ds.level_masks().items()}
            print("codes per level:", ", ".join(f"{k} {v:,}" for k, v in counts.items()))
            print(f"labels per stay: {ds.Y.nnz / max(ds.n_stays, 1):.2f}; ingredients per stay: "
                  f"{max(ds.X.nnz / max(ds.n_stays, 1) - 2, 0):.2f}")
            for k, v in (ds.report or {}).items():
                print(f"  {k}: {v}")
        elif args.cmd == "plan":
            say = None if args.json else (lambda s: print(f"[plan] {s} ...", file=sys.stderr, flush=True))
            plan = P.make_plan(args.profile, args.data, args.cache, workers=args.workers, device=args.device,
                               progress=say)
            if args.json:
                print(json.dumps(plan.as_dict(), default=str))
            else:
                print_plan(plan, args.configs)
        elif args.cmd == "run":
            names = list(E.EXPERIMENTS) if args.all else args.experiment
            if not names or (args.all and args.experiment):
                raise ValueError("name the experiment(s) to run, or give --all (not both)")
            out = E.run_many(names, args.profile, args.data, _folds(args.fold), args.cache, workers=args.workers,
                             scheduler=args.scheduler, force=args.force, precision=args.precision, keep=not args.all)
            if args.all:
                print(f"every experiment's results are in the cache ({args.cache or cache_root()}); "
                      f"`cacicd status --profile {args.profile}` lists them")
            for rs in out.values():
                for r in rs:
                    t = r.timings
                    print(f"{r.experiment} fold {r.fold}: search {t.get('search_s', 0):.1f}s, train "
                          f"{t.get('train_s', 0):.1f}s, inference {t.get('inference_s', 0):.2f}s; params "
                          f"{r.best_params}; cached in {r.path}")
        elif args.cmd == "evaluate":
            rs = E.load(args.experiment, args.profile, args.data, _folds(args.fold), args.cache)
            tab = pd.concat([(r.test_metrics if args.split == "test" else r.dev_metrics).assign(fold=r.fold) for r in rs])
            print(tab.pivot_table(index="metric", columns="level", values="value", aggfunc="mean").round(4).to_string())
        elif args.cmd == "status":
            st = E.status(args.profile, args.data, args.cache)
            print(st.pivot(index="experiment", columns="fold", values="state").to_string())
            print(st["state"].value_counts().to_string())
    except (ValueError, FileNotFoundError, ConnectionError) as e:
        print(f"cacicd {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only cache, or a cache path that is a file: one line, not a traceback
        cache = getattr(args, "cache", None)
        print(f"cacicd {args.cmd}: error: {folder_error(e, cache or cache_root(), '--cache' if cache else 'the cache')}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
