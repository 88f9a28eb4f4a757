"""The `cacicd` console script: list, data, run, evaluate, status."""
from __future__ import annotations

import argparse
import logging
import sys

import pandas as pd

from cacicd.config import PRECISIONS, StrictParser, cache_root, get_profile
from cacicd.experiments import engine as E
from cacicd.files import folder_error


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="default", help="smoke | default | paper (default: default)")
    p.add_argument("--data", default="synthetic", help="data source: synthetic, an OMOP folder, mimic3:PATH, postgresql://…")
    p.add_argument("--cache", default=None, help="cache folder (default: $CACICD_CACHE or ./cache)")


def _workers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", default="auto",
                   help="train on a local Dask cluster of N worker processes (one per GPU where there are GPUs); "
                        "auto (default): as many as this machine's GPUs, else its cores; 0: in this process")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:8786",
                   help="train on an existing Dask cluster instead (its workers must see the cache folder)")


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
    p = sub.add_parser("run", help="search, train and predict experiments (cached); every search at once on Dask")
    p.add_argument("experiment", nargs="*", help="experiment name(s) (see `cacicd list`)")
    p.add_argument("--all", action="store_true", help="every experiment of the paper")
    _common(p)
    p.add_argument("--fold", default="all", help="fold number(s), e.g. 0 or 0,2 (default: all)")
    p.add_argument("--force", action="store_true", help="recompute the results even when cached")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="training and inference precision (default: the profile's)")
    _workers(p)
    p = sub.add_parser("evaluate", help="print the metrics table of a cached run")
    p.add_argument("experiment")
    _common(p)
    p.add_argument("--fold", default="all", help="fold number(s), e.g. 0 or 0,2 (default: all)")
    p.add_argument("--split", default="test", choices=("test", "dev"))
    p = sub.add_parser("status", help="done / stale / missing results for a profile and data source")
    _common(p)
    return ap


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
        elif args.cmd == "run":
            names = list(E.EXPERIMENTS) if args.all else args.experiment
            if not names or (args.all and args.experiment):
                raise ValueError("name the experiment(s) to run, or give --all (not both)")
            out = E.run_many(names, args.profile, args.data, _folds(args.fold), args.cache, workers=args.workers,
                             scheduler=args.scheduler, force=args.force, precision=args.precision)
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
