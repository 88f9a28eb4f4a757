"""What two runs of run_all.sh concluded, side by side: the models each search chose, Figs 2-5 and every verdict.

Usage: python benchmarks/compare_runs.py BEFORE_TABLES AFTER_TABLES [--sections 3.2,3.3,3.4,3.5]
  e.g. python benchmarks/compare_runs.py /tmp/before/tables tables/default
Prints, from each run's tables folder: the configuration each search chose per target and fold
(metric_choice_search_choices.csv) and the configurations each search started; Fig 2 (relative RE@R, all
codes) and Figs 3-5 (relative NDCG per level); then each claim's verdict before -> after, with its evidence
where the verdict moved. `compare_tables.py` says whether the tables are identical; this says what moved.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from cacicd.paper.claims import Claim, load_claims

FIGS = {"Fig 2 (relative RE@R vs μF1, %, all codes)": ("fig2_figS3_relative_re_at_r", "R"),
        "Fig 3 (relative NDCG vs naive, %)": ("fig3_relative_ndcg_multitask", "level"),
        "Fig 4 (relative NDCG vs naive, %)": ("fig4_relative_ndcg_hmc", "level"),
        "Fig 5 (relative NDCG vs naive, %)": ("fig5_relative_ndcg_imbalance", "level")}


def _read(tables: Path, name: str) -> pd.DataFrame | None:
    p = tables / f"{name}.csv"
    return pd.read_csv(p) if p.exists() else None


def choices(tables: Path) -> pd.DataFrame | None:
    """One row per (experiment, fold): the chosen configuration, and the configurations searched."""
    df = _read(tables, "metric_choice_search_choices")
    if df is None:
        return None
    return df.set_index(["experiment", "fold"])[["configuration", "configurations_searched"]]


def figure(tables: Path, name: str, column: str) -> pd.DataFrame | None:
    """A figure's table as model x (level or R) of the relative difference to its reference model, %."""
    df = _read(tables, name)
    if df is None:
        return None
    if "level" in df.columns and column == "R":
        df = df[df["level"] == "all"]
    return df.pivot_table(index="model", columns=column, values="rel", aggfunc="mean").round(2)


def verdicts(tables: Path) -> dict[str, Claim]:
    """section/key -> claim, from every claims_*.json."""
    return {f"{c.section} {c.key}": c for c in load_claims(tables)}


def _verdict(c: Claim | None) -> str:
    if c is None:
        return "absent"
    if c.withheld:
        return "withheld"
    return {True: "supported", False: "not supported", None: "n/a"}[c.supported]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--sections", default="", help="only claims of these sections (e.g. 3.2,3.3); default: all")
    a = ap.parse_args()
    pd.set_option("display.width", 200, "display.max_rows", 200, "display.max_columns", 20)
    cb, ca = choices(a.before), choices(a.after)
    if cb is not None and ca is not None:
        both = cb.merge(ca, left_index=True, right_index=True, how="outer", suffixes=(" before", " after"))
        print("Configuration chosen by each search (and configurations it started):")
        print(both.to_string(), "\n")
    for title, (name, column) in FIGS.items():
        fb, fa = figure(a.before, name, column), figure(a.after, name, column)
        if fb is None or fa is None:
            continue
        print(f"{title}: before")
        print(fb.to_string())
        print("after")
        print(fa.to_string(), "\n")
    vb, va = verdicts(a.before), verdicts(a.after)
    keep = tuple(s.strip() for s in a.sections.split(",") if s.strip())
    print("Verdicts, before -> after:")
    for k in sorted(set(vb) | set(va)):
        if keep and not k.startswith(keep):
            continue
        b, c = _verdict(vb.get(k)), _verdict(va.get(k))
        mark = "" if b == c else "   <-- moved"
        print(f"  {k}: {b} -> {c}{mark}")
        if b != c:
            for label, claim in (("before", vb.get(k)), ("after", va.get(k))):
                if claim:
                    print(f"      {label}: {claim.evidence}")


if __name__ == "__main__":
    main()
