"""The `cacicd` console script: list, data, run, evaluate, status, search."""
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


def _threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: every CPU this process may use)")


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
    for name, hlp in (("run", "search, train and predict one experiment (cached)"),
                      ("evaluate", "print the metrics table of a cached run")):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("experiment")
        _common(p)
        p.add_argument("--fold", default="all", help="fold number(s), e.g. 0 or 0,2 (default: all)")
        if name == "run":
            p.add_argument("--storage", default=None, help="PostgreSQL URL of a shared search (default: SQLite in the cache)")
            p.add_argument("--force", action="store_true", help="recompute even when cached")
            p.add_argument("--precision", default=None, choices=PRECISIONS,
                           help="training and inference precision (default: the profile's)")
            _threads(p)
        else:
            p.add_argument("--split", default="test", choices=("test", "dev"))
    p = sub.add_parser("status", help="done / stale / missing results for a profile and data source")
    _common(p)
    p = sub.add_parser("search", help="a worker joining the shared search of an experiment's family (one per process/machine)")
    p.add_argument("experiment")
    _common(p)
    p.add_argument("--storage", required=True, help="postgresql://… shared by the workers")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--precision", default=None, choices=PRECISIONS)
    _threads(p)
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
            rs = E.run(args.experiment, args.profile, args.data, _folds(args.fold), args.cache, storage=args.storage,
                       force=args.force, precision=args.precision, threads=args.threads)
            for r in rs:
                t = r.timings
                print(f"{r.experiment} fold {r.fold}: search {t.get('search_s', 0):.1f}s, train {t.get('train_s', 0):.1f}s, "
                      f"inference {t.get('inference_s', 0):.2f}s; params {r.best_params}; cached in {r.path}")
        elif args.cmd == "evaluate":
            rs = E.load(args.experiment, args.profile, args.data, _folds(args.fold), args.cache)
            tab = pd.concat([(r.test_metrics if args.split == "test" else r.dev_metrics).assign(fold=r.fold) for r in rs])
            print(tab.pivot_table(index="metric", columns="level", values="value", aggfunc="mean").round(4).to_string())
        elif args.cmd == "status":
            st = E.status(args.profile, args.data, args.cache)
            print(st.pivot(index="experiment", columns="fold", values="state").to_string())
            print(st["state"].value_counts().to_string())
        elif args.cmd == "search":
            out = E.search_worker(args.experiment, args.storage, args.profile, args.data, args.fold, args.cache,
                                  precision=args.precision, threads=args.threads)
            print(f"store {out['store']}: {out['nodes']} networks trained, {out['nodes_mine']} by this worker")
    except (ValueError, FileNotFoundError) as e:
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
