"""Write the measured run times of benchmarks/run_times.csv into each notebook's first Markdown cell, and check
that the README states them.

    python benchmarks/run_times.py           # rewrite the "Run time" line of notebooks/NN_*.py
    python benchmarks/run_times.py --check   # exit 1 if a notebook's line or the README differs from the table
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from cacicd.runner import trains

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "benchmarks" / "run_times.csv"
MARK = "# > **Run time**"


def duration(seconds: float) -> str:
    """A readable duration: '10 s', '2 min 7 s', '22 min'."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    return f"{s // 60} min {s % 60} s" if s < 600 else f"{round(s / 60)} min"


def read_table(path: Path = TABLE) -> dict[str, dict[str, float | None]]:
    """notebook -> {'cold_s', 'warm_s'} (None where blank), from the CSV without its comment lines."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return {r["notebook"]: {k: float(r[k]) if r[k].strip() else None for k in ("cold_s", "warm_s")}
            for r in csv.DictReader(lines)}


def run_time_line(name: str, table: dict[str, dict[str, float | None]]) -> str:
    """The notebook's marked Markdown line (a jupytext comment line) stating its run times in `./run_all.sh`."""
    row, train = table[name], table["training"]
    head = f"{MARK} (default profile, 2 CPU cores; `benchmarks/run_times.csv`): "
    times = f"{duration(row['cold_s'])}; warm: {duration(row['warm_s'])}"
    if not trains(name):
        return f"{head}this notebook trains nothing and takes {times}."
    return (f"{head}`./run_all.sh` first trains every experiment ({duration(train['cold_s'])} on a cold cache, 2 Dask "
            f"workers), then this notebook takes {times}. Opened alone on a cold cache, it trains what it needs in "
            "its kernel, one network after another.")


def readme_phrases(table: dict[str, dict[str, float | None]]) -> list[str]:
    """What README.md must say of the default profile's run times."""
    whole, train = table["run_all"], table["training"]
    return [f"about {duration(whole['cold_s'])} on 2 CPU cores with a cold cache ({duration(train['cold_s'])} "
            f"of it training every search on 2 Dask workers), {duration(whole['warm_s'])} with a warm one",
            f"# first: fills the cache (about {duration(whole['cold_s'])} on 2 CPU cores)"]


def stamp(path: Path, line: str) -> str:
    """The notebook source with its first Markdown cell's run-time line set (inserted after the title)."""
    lines = path.read_text().split("\n")
    start = lines.index("# %% [markdown]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("# %%")), len(lines))
    marked = [i for i in range(start, end) if lines[i].startswith(MARK)]
    if marked:
        lines[marked[0]] = line
    else:  # after the title and its blank line
        lines[start + 3:start + 3] = [line, "#"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or --check) every notebook's run-time line from the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only report notebooks whose line differs")
    args = ap.parse_args(argv)
    table = read_table()
    stale = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):  # rows "training" and "run_all" are no notebook
        if path.stem not in table:
            print(f"run_times: {path.stem} has no row in {TABLE}", file=sys.stderr)
            return 1
        new = stamp(path, run_time_line(path.stem, table))
        if new != path.read_text():
            stale.append(path.name)
            if not args.check:
                path.write_text(new)
    verb = "differ from the table" if args.check else "rewritten"
    print(f"run_times: {', '.join(stale) or 'none'} {verb}")
    readme = (ROOT / "README.md").read_text()
    missing = [p for p in readme_phrases(table) if p not in readme]
    for p in missing:
        print(f"run_times: README.md does not say: {p!r}", file=sys.stderr)
    return 1 if (args.check and stale) or missing else 0


if __name__ == "__main__":
    sys.exit(main())
