"""Compare the CSV tables of two runs, timing and path columns aside: identical, or how far apart.

Usage: python benchmarks/compare_tables.py BEFORE_TABLES AFTER_TABLES [--numeric]
  e.g. python benchmarks/compare_tables.py /tmp/before/tables tables/default
Without --numeric, exits 1 unless every table is cell-for-cell identical (the check of a refactor).
With --numeric, prints for each table that differs the count of differing cells and the largest
absolute difference of its numeric cells (e.g. a float32 run against a bfloat16 run).
Left aside: timing columns (`*_s`, seconds, samples per second, ratios of timings), every cell
but the keys of rows in seconds, and file paths inside cells (a run's cache or output folder).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

TIMING_COLUMN = re.compile(r"(_s|seconds|samples_per_s|ratio_to_reference)$")
KEYS = ("item", "level", "model", "metric", "unit", "paper_model", "paper_metric")
PATH = re.compile(r"(?:[a-z0-9]+:)?/[^\s,;]+")


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """The table without timing columns, with second-valued rows' value/SEM blanked and paths masked."""
    df = df.drop(columns=[c for c in df.columns if TIMING_COLUMN.search(str(c))])
    if "unit" in df.columns:  # rows in seconds (paper rows, the report's comparison): only their keys compared
        timed = df["unit"].astype(str).eq("s")
        df.loc[timed, [c for c in df.columns if c not in KEYS]] = ""
    return df.apply(lambda col: col.astype(str).str.replace(PATH, "<path>", regex=True))


def read(path: Path) -> pd.DataFrame:
    """A table as text cells (so that equal files compare equal, float formatting included)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def numeric_gap(a: pd.DataFrame, b: pd.DataFrame) -> tuple[int, float]:
    """(cells that differ, largest absolute difference among cells numeric in both) of two aligned tables."""
    differ = int((a.to_numpy() != b.to_numpy()).sum())
    x = a.apply(pd.to_numeric, errors="coerce").to_numpy(float)
    y = b.apply(pd.to_numeric, errors="coerce").to_numpy(float)
    both = np.isfinite(x) & np.isfinite(y)
    return differ, float(np.abs(x - y)[both].max()) if both.any() else float("nan")


def compare(before: Path, after: Path) -> pd.DataFrame:
    """One row per CSV of either folder: status identical / differs / only in one, with the gap."""
    rows = []
    for name in sorted({p.name for p in before.glob("*.csv")} | {p.name for p in after.glob("*.csv")}):
        pa, pb = before / name, after / name
        if not (pa.exists() and pb.exists()):
            rows.append({"table": name, "status": "only in " + ("after" if pb.exists() else "before")})
            continue
        a, b = comparable(read(pa)), comparable(read(pb))
        if list(a.columns) != list(b.columns) or a.shape != b.shape:
            rows.append({"table": name, "status": "differs in shape or columns",
                         "detail": f"{a.shape} {list(a.columns)[:6]} vs {b.shape} {list(b.columns)[:6]}"})
            continue
        differ, gap = numeric_gap(a, b)
        rows.append({"table": name, "status": "identical" if differ == 0 else "differs",
                     "cells": a.size, "cells_differing": differ, "max_abs_diff": gap})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--numeric", action="store_true", help="report the size of differences instead of failing")
    args = ap.parse_args(argv)
    for d in (args.before, args.after):
        if not d.is_dir():
            ap.error(f"{d} is not a folder of tables")
    out = compare(args.before, args.after)
    n_same = int(out["status"].eq("identical").sum())
    print(f"{n_same} of {len(out)} tables identical (timing and path columns aside)")
    diff = out[~out["status"].eq("identical")]
    if len(diff):
        print(diff.to_string(index=False))
    return 0 if args.numeric or diff.empty else 1


if __name__ == "__main__":
    sys.exit(main())
