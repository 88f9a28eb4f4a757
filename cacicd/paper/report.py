"""The replication report (tables/<profile>/REPORT.md): regenerated numbers next to the published ones.

Published values: `cacicd/reference/paper_values.csv` (a copy of the spec's table; one row per
item, level, model, metric with value, sem, unit, source).

Regenerated values: every CSV under tables_dir in the *paper-comparable long format*, i.e. with the
columns item, level, model, metric, value and optionally sem, unit, and paper_level / paper_model /
paper_metric (the paper's label a row is compared with, when ours differs, e.g. another device or code
count). `long_rows` builds such a table from a tidy one. A notebook writes its own with
`cacicd.paper.figures.save_table(long_df, "paper_<name>", tables_dir)`.

RE@R like for like: a regenerated RE@R row may also carry `value_authors` / `sem_authors` (the same
RE@R computed the way the published values were, `cacicd.evaluation.metrics.re_at_r_authors`) and `left_out`
(the share of stays with a code of the level that this way leaves out); the report shows every
published RE@R value next to ours both ways. Our exact RE@R is the one compared and flagged.

Matching: on (item, level, model, metric) after normalising case, spaces and the micro sign. Units:
a regenerated ratio compared with a published % is multiplied by 100 (and the reverse).

Flag: |ours − paper| > sqrt(sem_paper² + sem_ours²) when both SEMs are known (and not both 0);
otherwise |ours − paper| > REL_TOL·|paper| (5 %; for a published 0, an absolute 1e-9), and the row
says which rule decided. Per-fold rows of the published table are not compared (their means are).
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cacicd.experiments.registry import EXPERIMENTS
from cacicd.paper.claims import RULE

logger = logging.getLogger(__name__)

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
PAPER_VALUES = REFERENCE_DIR / "paper_values.csv"
PAPER_NOTES = REFERENCE_DIR / "paper_values.md"
KEY = ("item", "level", "model", "metric")
LONG_COLUMNS = ("item", "level", "model", "metric", "value", "sem", "unit")
AUTHORS_COLUMNS = ("value_authors", "sem_authors", "left_out")  # optional, on RE@R rows
_RE_METRIC = re.compile(r"^RE@\d+$", re.IGNORECASE)
UNITS = ("%", "ratio", "count", "s", "bool")
REL_TOL = 0.05
PACKAGES = ("cacicd", "torch", "numpy", "scipy", "scikit-learn", "pandas", "dask", "duckdb")


# ------------------------------------------------------------------------------------------------
# loading

def load_paper_values(path: str | Path = PAPER_VALUES) -> pd.DataFrame:
    """The published values: columns item, level, model, metric, value, sem, unit, source.

    The file is read once per (path, modification time, size); each call returns a copy of that read.
    """
    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"published values not found: {path}")
    st = path.stat()
    return _read_paper_values(path, st.st_mtime_ns, st.st_size).copy()


@functools.lru_cache(maxsize=8)
def _read_paper_values(path: Path, mtime_ns: int, size: int) -> pd.DataFrame:
    """`load_paper_values`'s read and checks (cached; modification time and size key it: an edited file is read again)."""
    df = pd.read_csv(path, dtype={c: str for c in ("item", "level", "model", "metric", "unit", "source")},
                     keep_default_na=False, na_values={"value": [""], "sem": [""]})
    missing = set(LONG_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    for col in ("value", "sem"):
        bad = pd.to_numeric(df[col], errors="coerce").isna() & df[col].notna()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{path}: non-numeric {col} {df[col].iloc[i]!r} on row {i + 2}")
        df[col] = pd.to_numeric(df[col])
    bad_units = sorted(set(df["unit"]) - set(UNITS))
    if bad_units:
        raise ValueError(f"{path}: unknown unit(s) {bad_units}; expected one of {UNITS}")
    return df


def long_rows(df: pd.DataFrame, item: str, *, level: str | None = None, model: str | None = None,
              metric: str | None = None, value: str = "value", sem: str | None = "sem", unit: str = "ratio",
              **paper_labels: str) -> pd.DataFrame:
    """A tidy table -> the paper-comparable long format (constants for the columns it lacks).

    level/model/metric: a constant, or None to take the column of that name from df. paper_labels:
    paper_level/paper_model/paper_metric constants (the paper's label for every row).
    """
    out = pd.DataFrame({"item": item}, index=df.index)
    for col, const in (("level", level), ("model", model), ("metric", metric)):
        if const is not None:
            out[col] = const
        elif col in df.columns:
            out[col] = df[col].astype(str)
        else:
            raise ValueError(f"long_rows({item!r}): no {col!r} column and no constant given")
    if value not in df.columns:
        raise ValueError(f"long_rows({item!r}): no value column {value!r} in {list(df.columns)}")
    out["value"] = pd.to_numeric(df[value], errors="coerce")
    out["sem"] = pd.to_numeric(df[sem], errors="coerce") if sem and sem in df.columns else np.nan
    out["unit"] = unit
    for k, v in paper_labels.items():
        if k not in ("paper_level", "paper_model", "paper_metric"):
            raise ValueError(f"long_rows: unknown argument {k!r}")
        out[k] = v
    return out.reset_index(drop=True)


def _table1(df: pd.DataFrame) -> pd.DataFrame:
    cols = {"icd9cm": "ICD9-CM (full classification)", "dataset": "MIMIC-III", "cherry_picked": "cherry-picked subset"}
    parts = [long_rows(df, "Table 1", model=("dataset (this run)" if c == "dataset" else label), metric="unique codes",
                       value=c, sem=None, unit="count", **({"paper_model": label} if c == "dataset" else {}))
             for c, label in cols.items()]
    return pd.concat(parts, ignore_index=True)


def _table2(df: pd.DataFrame) -> pd.DataFrame:
    stats = {"min": "min", "max": "max", "median": "median", "mean": "mean", "sd": "SD"}
    return pd.concat([long_rows(df, "Table 2", model="complete code set (this run)", metric=f"codes per stay {name}",
                                value=c, sem=None, unit="count", paper_model="MIMIC-III (complete code set)")
                      for c, name in stats.items()], ignore_index=True)


# Tables written by notebooks in their own shape, turned into paper-comparable rows here (CSV stem -> adapter).
ADAPTERS = {"table1_unique_codes": _table1, "table2_codes_per_stay": _table2}


def read_regenerated(tables_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """(rows of every paper-comparable CSV under tables_dir, names of the CSVs read); never raises on a bad file."""
    tables_dir = Path(tables_dir)
    frames, used = [], []
    for p in sorted(tables_dir.glob("*.csv")) if tables_dir.exists() else []:
        try:
            if p.stem in ADAPTERS:
                df = ADAPTERS[p.stem](pd.read_csv(p))
                df["value"] = df["value"].astype(float)
                for col in ("paper_level", "paper_model", "paper_metric"):
                    df[col] = df[col].fillna("").astype(str) if col in df.columns else ""
                df["table"] = p.stem
                frames.append(df)
                used.append(p.name)
                continue
            head = pd.read_csv(p, nrows=0)
            if not {"item", "level", "model", "metric", "value"} <= set(head.columns):
                continue
            df = pd.read_csv(p, dtype={c: str for c in ("item", "level", "model", "metric", "unit", "paper_level",
                                                        "paper_model", "paper_metric")}, keep_default_na=False,
                             na_values={"value": ["", "nan", "NaN"], "sem": ["", "nan", "NaN"]})
        except Exception as exc:  # an unreadable table is reported, not fatal
            logger.warning("skipping %s: %s", p.name, exc)
            continue
        for col in ("sem", "unit", "paper_level", "paper_model", "paper_metric"):
            if col not in df.columns:
                df[col] = np.nan if col == "sem" else ""
        df["value"] = pd.to_numeric(df["value"], errors="coerce")
        df["sem"] = pd.to_numeric(df["sem"], errors="coerce")
        for col in AUTHORS_COLUMNS:
            df[col] = pd.to_numeric(df[col], errors="coerce") if col in df.columns else np.nan
        df["table"] = p.stem
        frames.append(df)
        used.append(p.name)
    if not frames:
        return pd.DataFrame(columns=[*LONG_COLUMNS, "paper_level", "paper_model", "paper_metric", "table"]), used
    return pd.concat(frames, ignore_index=True), used


# ------------------------------------------------------------------------------------------------
# matching and flags

def norm(s) -> str:
    """A label for matching: case-folded, micro signs unified, spaces collapsed."""
    s = str(s).replace("\u00b5", "\u03bc").casefold()
    return re.sub(r"\s+", " ", s).strip()


def _keys(df: pd.DataFrame, prefer_paper: bool) -> pd.Series:
    parts = []
    for col in KEY:
        v = df[col].astype(str)
        alt = f"paper_{col}"
        if prefer_paper and alt in df.columns:
            a = df[alt].fillna("").astype(str)
            v = a.where(a.str.strip() != "", v)
        parts.append(v.map(norm))
    return pd.Series(list(zip(*parts)), index=df.index)


def convert_units(value: float, sem: float, unit: str, to_unit: str) -> tuple[float, float]:
    """A (value, sem) pair from `unit` to `to_unit` where it is a ratio <-> % change; unchanged otherwise."""
    if unit == "ratio" and to_unit == "%":
        return value * 100, sem * 100
    if unit == "%" and to_unit == "ratio":
        return value / 100, sem / 100
    return value, sem


def flag(ours: float, paper: float, sem_ours: float = np.nan, sem_paper: float = np.nan,
         rel_tol: float = REL_TOL) -> tuple[bool, float, str]:
    """(differs, tolerance, basis): beyond the combined SEMs when both are known, else beyond rel_tol·|paper|."""
    diff = abs(ours - paper)
    if np.isfinite(sem_ours) and np.isfinite(sem_paper) and (sem_ours > 0 or sem_paper > 0):
        tol = float(np.hypot(sem_ours, sem_paper))
        return bool(diff > tol), tol, "SEM"
    tol = rel_tol * abs(paper) if paper != 0 else 1e-9
    missing = "no SEM" if not (np.isfinite(sem_ours) or np.isfinite(sem_paper)) else (
        "no paper SEM" if not np.isfinite(sem_paper) else "no SEM of ours" if not np.isfinite(sem_ours) else "SEMs 0")
    return bool(diff > tol), float(tol), f"{missing}: ±{rel_tol:.0%}"


def compare(paper: pd.DataFrame, ours: pd.DataFrame, rel_tol: float = REL_TOL) -> pd.DataFrame:
    """One row per published value (per-fold items excluded) with the regenerated value when matched.

    Columns: item, level, model, metric, unit, paper, paper_sem, ours, ours_sem, diff, tolerance, basis,
    status ('agrees' | 'differs' | 'not regenerated' | 'regenerated as NaN'), table, and for RE@R rows
    ours_authors, ours_authors_sem, left_out (NaN where not regenerated that way).
    """
    paper = paper[~paper["item"].str.contains("per-fold", case=False)].copy()
    ours = ours.copy()
    ours["_key"] = _keys(ours, prefer_paper=True) if len(ours) else pd.Series(dtype=object)
    dup = ours["_key"].duplicated(keep="first") if len(ours) else pd.Series(dtype=bool)
    if dup.any():
        logger.warning("%d regenerated rows duplicate an earlier key; the first is used", int(dup.sum()))
    lookup: dict = {}
    for k, r in zip(ours["_key"], ours.to_dict("records")):
        lookup.setdefault(k, r)  # first occurrence wins
    rows = []
    for rec, key in zip(paper.to_dict("records"), _keys(paper, prefer_paper=False)):
        row = {c: rec[c] for c in (*KEY, "unit")}
        row.update(paper=rec["value"], paper_sem=rec["sem"], ours=np.nan, ours_sem=np.nan, diff=np.nan,
                   tolerance=np.nan, basis="", status="not regenerated", table="", ours_authors=np.nan,
                   ours_authors_sem=np.nan, left_out=np.nan)
        hit = lookup.get(key)
        if hit is not None:
            row.update(ours_authors=float(hit.get("value_authors", np.nan)),
                       ours_authors_sem=float(hit.get("sem_authors", np.nan)), left_out=float(hit.get("left_out", np.nan)))
            v, s = convert_units(float(hit["value"]), float(hit["sem"]), str(hit.get("unit") or rec["unit"]),
                                 rec["unit"])
            row.update(ours=v, ours_sem=s, table=hit.get("table", ""))
            if np.isfinite(v):
                differs, tol, basis = flag(v, rec["value"], s, rec["sem"], rel_tol)
                row.update(diff=v - rec["value"], tolerance=tol, basis=basis,
                           status="differs" if differs else "agrees")
            else:
                row["status"] = "regenerated as NaN"
        rows.append(row)
    return pd.DataFrame(rows)


def unmatched_regenerated(paper: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    """Regenerated rows with no published counterpart (e.g. a label typo, or extra numbers)."""
    if not len(ours):
        return ours
    known = set(_keys(paper, prefer_paper=False))
    return ours[~_keys(ours, prefer_paper=True).isin(known)]


# ------------------------------------------------------------------------------------------------
# provenance, claims, notes

def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Installed version of each distribution ('not installed' where absent)."""
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out


def read_run_log(tables_dir: str | Path) -> pd.DataFrame:
    """run_log.json (written by cacicd.runner) as a table: notebook, wall_s, finished, profile, data."""
    p = Path(tables_dir) / "run_log.json"
    cols = ["notebook", "wall_s", "finished", "profile", "data"]
    if not p.exists():
        return pd.DataFrame(columns=cols)
    try:
        log = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        logger.warning("unreadable %s: %s", p, exc)
        return pd.DataFrame(columns=cols)
    return pd.DataFrame([{"notebook": k, **{c: v.get(c) for c in cols[1:]}} for k, v in sorted(log.items())],
                        columns=cols)


def claim_counts(claims) -> dict[str, int]:
    """Counts of claims supported (True), not supported (False), not checkable (None), and withheld by the rule."""
    s = [c.supported for c in claims]
    return {"reproduced": s.count(True), "not reproduced": s.count(False), "not checkable": s.count(None),
            "withheld": sum(bool(getattr(c, "withheld", "")) for c in claims), "total": len(s)}


def parse_disagreements(md: str) -> list[str]:
    """The numbered items of the section on disagreements between the paper's text and stored outputs."""
    m = re.search(r"^#+ .*disagree.*$", md, flags=re.MULTILINE | re.IGNORECASE)
    if not m:
        return []
    body = md[m.end():]
    nxt = re.search(r"^#+ ", body, flags=re.MULTILINE)
    body = body[:nxt.start()] if nxt else body
    items: list[str] = []
    for line in body.splitlines():
        if re.match(r"^\d+\.\s", line):
            items.append(re.sub(r"^\d+\.\s+", "", line).strip())
        elif items and line.startswith(" ") and line.strip():
            items[-1] += " " + line.strip()
    return items


# ------------------------------------------------------------------------------------------------
# rendering

def _num(v: float, sem: float = np.nan) -> str:
    if not np.isfinite(v):
        return "NaN"
    s = f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return f"{s} ± {sem:.2g}" if np.isfinite(sem) else s


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
                     + ["| " + " | ".join(r) + " |" for r in esc]) + "\n"


RE_CONVENTION = (
    "The published RE@R values were not computed as the paper's text describes (spec §5). The authors' "
    "analysis notebook cast the test scores to float16 (so many scores tie, and ties go to the lower column), "
    "took each stay's positives' rank percentile with keras_extra's NaN-aware `nanpercentile` on TensorFlow "
    "Probability 0.17, whose arithmetic returns NaN for every stay with exactly one code of the level, and at "
    "R = 100 for some other code counts, and averaged with `np.nanmean`, so those stays were left out. Our "
    "RE@R (the value compared above, and everywhere else) is exact, over every stay with a code of the level. "
    "Here each published RE@R value stands next to ours both ways: exact, and computed their way "
    "(`cacicd.evaluation.metrics.re_at_r_authors`, checked bit for bit against their library), with the share of stays "
    "with a code of the level that their way leaves out (mean over folds). Table S9's values came from "
    "full-precision predictions: no float16 cast there.")

METHOD_NOTES: tuple[str, ...] = (
    "Splits. The authors' split files suggest that their third fold trained on about 44,000 stays rather than "
    "48,976: its train id file (data/mimic-omop/pre-processed/train_visits_id_2.csv.gz in their repository, a "
    "git LFS object) is 98,380 bytes against 109,129 and 109,293 for the first two folds, about 90 % of their "
    "size, consistent with a sampling loop that did not reset its pool between folds. Our splits follow the paper's sizes: each fold draws its dev and test sets from every stay, "
    "independently (spec §4).",
    "Cherry-picked codes. As the authors' code built them (their Table 1, S2 and cherry-picked figures): 765 "
    "itself stays in (only 765.x and 765.xx are dropped), and the low-frequency codes of Fig 1a are those with "
    "fewer than 100 occurrences (the text: ≤ 100 and 765 dropped).",
    "Entropy reduction (Fig 1a, S2). In the authors' order: mutual information averaged over the folds where the "
    "code has both classes, divided by the code's entropy, then clipped to 1.",
    "IRNW. As the authors ran it: only the positive weight is normalised, the negative weight stays 1 (spec §9).",
    "Table S4. One rule for both parts: a code is predicted when its score is strictly above the threshold, "
    "and a 0/0 precision, recall or F1 counts 0 (scikit-learn's default, through which the authors' numbers "
    "went); the adaptive threshold is the dev score maximising the dev F1 of `score >= t`, as theirs.",
    "Table S9. The authors' stay-type rule (newborn if any visit_detail row is a newborn service, else surgical if "
    "any is surgical, else medical) and their columns (NDCG, NDCG@15, RE@R of the NDCG-tuned model; each AUROC "
    "and AUPRC from the model tuned on it).",
    "Fig S4. Over full-label models only: models trained on a subset of codes are left out, not scored with zeros.",
    "Age. Our models read age as a float (age / 89); the authors' models declared a boolean input, so age reached "
    "them as 1[age > 0]. The loader option `age_encoding=authors` reproduces that; the provenance above says which "
    "this run used.",
)


def re_like_for_like(comparison: pd.DataFrame) -> pd.DataFrame:
    """The published RE@R rows of a `compare` table with ours both ways and the share of stays left out."""
    c = comparison[comparison["metric"].astype(str).str.match(_RE_METRIC)
                   & (comparison["status"] != "not regenerated")]
    return c[["item", "level", "model", "metric", "paper", "paper_sem", "ours", "ours_sem", "ours_authors",
              "ours_authors_sem", "left_out"]].reset_index(drop=True)


def _re_section(comparison: pd.DataFrame, rel_tol: float) -> list[str]:
    t = re_like_for_like(comparison)
    L = ["## RE@R like for like", "", RE_CONVENTION, ""]
    if t.empty:
        return L + ["No published RE@R value was regenerated in this run.", ""]
    rows = []
    for r in t.itertuples():
        flag_txt = ""
        if np.isfinite(r.ours_authors):
            differs, _, basis = flag(r.ours_authors, r.paper, r.ours_authors_sem, r.paper_sem, rel_tol)
            flag_txt = ("**differs**" if differs else "agrees") + f" ({basis})"
        rows.append([r.item, r.level, r.model, r.metric, _num(r.paper, r.paper_sem), _num(r.ours, r.ours_sem),
                     _num(r.ours_authors, r.ours_authors_sem) if np.isfinite(r.ours_authors) else "not computed",
                     f"{100 * r.left_out:.1f} %" if np.isfinite(r.left_out) else "", flag_txt])
    n_auth = int(np.isfinite(t["ours_authors"]).sum())
    L += [f"{len(t)} published RE@R values regenerated, {n_auth} of them also the authors' way.", "",
          _md_table(["item", "level", "model", "metric", "published", "ours (exact)", "ours (authors' way)",
                     "stays left out", "authors' way vs published"], rows)]
    return L


def output_paths(tables_dir: str | Path, figures_dir: str | Path) -> dict[str, str]:
    """Where the run's tables and figures are, relative to REPORT.md's folder (the tables'): no absolute path."""
    tables = Path(tables_dir).resolve()
    return {"tables": ". (this report's folder)",
            "figures": Path(os.path.relpath(Path(figures_dir).resolve(), tables)).as_posix()}


def render(comparison: pd.DataFrame, *, synthetic: bool, provenance: Mapping[str, str],
           versions: Mapping[str, str], run_log: pd.DataFrame, claims=(), disagreements: Iterable[str] = (),
           tables_read: Iterable[str] = (), unmatched: pd.DataFrame | None = None,
           figures: Iterable[str] = (), rel_tol: float = REL_TOL,
           method_notes: Iterable[str] = METHOD_NOTES) -> str:
    """REPORT.md: a one-page Markdown report from `compare`'s table and the run's provenance."""
    c = comparison
    claims = list(claims)
    n_cmp = int(c["status"].isin(["agrees", "differs"]).sum())
    n_diff = int((c["status"] == "differs").sum())
    items = list(dict.fromkeys(c["item"]))
    done = [i for i in items if (c.loc[c["item"] == i, "status"] != "not regenerated").any()]
    missing = [i for i in items if i not in done]
    cc = claim_counts(list(claims))
    L: list[str] = ["# Replication report: Marcou et al. 2024 (cacicd)", ""]
    if synthetic:
        from cacicd.data.synthetic import CALIBRATED_TO, NOT_CALIBRATED

        L += ["> **Synthetic data.** This run used the embedded synthetic generator, not MIMIC-III. The comparison",
              "> with the published values below is for **form only**: differences are expected and say nothing",
              "> about the replication. Run `./run_all.sh --profile paper --data <MIMIC-III OMOP>` for a real one.",
              "> The generator was calibrated to these outputs only (`cacicd.data.synthetic.CALIBRATED_TO`), which are",
              "> therefore no evidence for the paper's claims:", ">"]
        L += [f"> - {x}" for x in CALIBRATED_TO] + [">", "> Not calibrated, for comparison: " + "; ".join(NOT_CALIBRATED)
                                                    + ".", ""]
    L += ["## Summary", "",
          f"- Published values compared: **{n_cmp}** of {len(c)} (per-fold rows excluded); "
          f"**{n_cmp - n_diff} agree**, **{n_diff} differ** beyond the tolerance; "
          f"{len(c) - n_cmp} not regenerated in this run.",
          f"- Items regenerated: {len(done)} of {len(items)}.",
          f"- Claims of the paper checked by the notebooks: {cc['total']}: **{cc['reproduced']} reproduced**, "
          f"**{cc['not reproduced']} not reproduced**, {cc['not checkable']} not checkable with this run"
          + (f" ({cc['withheld']} withheld by the verdict rule: "
             f"{next(c.withheld for c in claims if getattr(c, 'withheld', ''))})." if cc["withheld"] else "."),
          f"- Verdict rule: {RULE}",
          f"- Flag rule: a value *differs* when |ours − paper| > sqrt(sem_paper² + sem_ours²) (both SEMs known), "
          f"else when it is beyond ±{rel_tol:.0%} of the published value (the row says which rule). Published "
          "notebook strings were truncated (means to 5 characters, SEMs to 4).", ""]
    L += ["## Provenance", ""] + [f"- {k}: {v}" for k, v in provenance.items()]
    L += ["- packages: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    if len(run_log):
        rows = [[str(r.notebook), f"{r.wall_s:.1f}" if isinstance(r.wall_s, (int, float)) else str(r.wall_s),
                 str(r.finished)] for r in run_log.itertuples()]
        total = pd.to_numeric(run_log["wall_s"], errors="coerce").sum()
        L += ["Wall time per notebook (run_log.json, written by the runner after each notebook; this report's "
              f"own notebook appears from the next run). Total {total:.0f} s.", "",
              _md_table(["notebook", "wall time (s)", "finished"], rows)]
    else:
        L += ["No run_log.json: wall times unknown (notebooks run outside `run_all.sh`).", ""]
    claims = list(claims)
    if claims:
        L += ["## Claims", ""]
        L += [f"- {'✅' if cl.supported else '❌' if cl.supported is False else '➖'} §{cl.section} {cl.paper} "
              f"— *{cl.evidence}*" for cl in claims]
        L += [""]
    L += ["## Published vs regenerated", ""]
    for item in done:
        sub = c[(c["item"] == item) & (c["status"] != "not regenerated")]
        n_left = int(((c["item"] == item) & (c["status"] == "not regenerated")).sum())
        L += [f"### {item}", ""]
        rows = []
        for r in sub.itertuples():
            mark = {"differs": "**differs**", "agrees": "agrees"}.get(r.status, r.status)
            rows.append([r.level, r.model, r.metric, r.unit, _num(r.paper, r.paper_sem), _num(r.ours, r.ours_sem),
                         _num(r.diff) if np.isfinite(r.diff) else "", r.basis, mark])
        L += [_md_table(["level", "model", "metric", "unit", "published", "regenerated", "diff", "rule", "flag"],
                        rows)]
        if n_left:
            L += [f"{n_left} published value(s) of {item} have no regenerated counterpart in this run.", ""]
    if missing:
        L += ["## Not regenerated in this run", "",
              "No regenerated table holds a value of these items (their notebook did not run, failed, or does "
              "not write paper-comparable rows):", ""]
        L += [f"- {i} ({int((c['item'] == i).sum())} published values)" for i in missing] + [""]
    if unmatched is not None and len(unmatched):
        L += [f"{len(unmatched)} regenerated row(s) match no published value (first 10 shown):", ""]
        L += [_md_table(["table", "item", "level", "model", "metric"],
                        [[r.table, r.item, r.level, r.model, r.metric] for r in unmatched.head(10).itertuples()])]
    L += _re_section(c, rel_tol)
    L += ["## Where this replication computes what the authors' code computed, or differs from it", ""]
    L += [f"- {n}" for n in method_notes] + [""]
    dis = list(disagreements)
    L += ["## Where the paper's text and the authors' stored outputs disagree", ""]
    L += [f"{i}. {d}" for i, d in enumerate(dis, 1)] if dis else ["(list not found)"]
    L += [""]
    tr, figs = list(tables_read), list(figures)
    L += ["## Files", "", f"- Paper-comparable tables read: {', '.join(tr) if tr else 'none'}."]
    if figs:
        L += [f"- Figures of this run: {', '.join(figs)}."]
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------------------------------------
# builders of paper-comparable rows (used by the summary notebooks)

def _experiment_field(name: str, field: str) -> str:
    """An experiment's `field` in the registry; the name when the experiment or the field is unset."""
    e = EXPERIMENTS.get(name)
    value = getattr(e, field) if e is not None else None
    return value if value else name


def experiment_label(name: str) -> str:
    """An experiment's display name in reports and paper-comparable tables (its `label`; the name when unset)."""
    return _experiment_field(name, "label")


def experiment_short(name: str) -> str:
    """An experiment's short display name among the methods of a figure (its `short`; the name when unset)."""
    return _experiment_field(name, "short")


def experiment_tuned_on(name: str) -> str:
    """The short name of the metric an experiment was tuned on (its `tuned_on`; the name when unset)."""
    return _experiment_field(name, "tuned_on")


# Table S7: ranking metrics of the NDCG-tuned model; Table S8: each soft-classification metric from the
# model tuned on it. (our metric name, paper metric name, paper unit)
TABLE_S7 = {"naive_ndcg": [("ndcg", "NDCG", "%"), ("ndcg@15", "NDCG@15", "%")]
            + [(f"re@{r}", f"RE@{r}", "count") for r in (25, 50, 75, 100)]}
TABLE_S8 = {"naive_auroc_micro": [("auroc_micro", "micro AUROC", "%")],
            "naive_auroc_macro": [("auroc_macro", "macro AUROC", "%")],
            "naive_auprc_micro": [("auprc_micro", "micro AUPRC", "%")],
            "naive_auprc_macro": [("auprc_macro", "macro AUPRC", "%")]}
# Table S4: the models of the hard-classification table, as the published table names them
TABLE_S4_MODELS = {"naive_f1_micro": "μF1-tuned all codes", "cherry_f1_micro": "μF1-tuned cherry-picked",
                   "naive_auprc_micro": "adaptive threshold (μAUPRC-tuned)"}
TABLE_S9 = {**TABLE_S7, **TABLE_S8}  # per stay type: the columns of Tables S7 and S8 (model label + " [<type> stays]")
# Table S10: the paper's four columns, from the search's configuration (one units value and one dropout rate
# shared by every hidden layer, as keras-tuner recorded them, also for a model without a hidden layer)
TABLE_S10 = (("batchnorm", "batch normalization", "bool"), ("num_layers", "number of layers", "count"),
             ("units", "number of units", "count"), ("dropout", "dropout rate", "ratio"))


def top_frequent_mask(counts: np.ndarray, mask: np.ndarray, n: int = 50) -> np.ndarray:
    """(L,) bool: the n most frequent codes among `mask` (counts (L,); ties broken by column order)."""
    counts, mask = np.asarray(counts), np.asarray(mask, dtype=bool)
    if counts.shape != mask.shape:
        raise ValueError(f"counts have shape {counts.shape} but the mask {mask.shape}")
    cols = np.flatnonzero(mask)
    keep = cols[np.argsort(-counts[cols], kind="stable")[:n]]
    out = np.zeros_like(mask)
    out[keep] = True
    return out


def frequent_mask(counts: np.ndarray, n_stays: int, min_fraction: float = 0.01) -> np.ndarray:
    """(L,) bool: codes present in at least min_fraction of the stays (Table S6: ≥ 1 %)."""
    if n_stays < 1:
        raise ValueError(f"n_stays must be >= 1, got {n_stays}")
    return np.asarray(counts) >= min_fraction * n_stays


def metric_table_rows(summary: pd.DataFrame, item: str, spec: Mapping[str, list[tuple[str, str, str]]],
                      levels: Mapping[str, str] | None = None, model_suffix: str = "") -> pd.DataFrame:
    """Paper-comparable rows of a per-level metrics table (Tables S7, S8, S9) from a fold summary.

    summary: columns experiment, level, metric, mean, sem (ratios, as cacicd.evaluation.metrics gives them);
    spec: experiment -> [(metric, paper metric, paper unit)]; levels: our level -> paper level (default: same);
    model_suffix: appended to the model label (e.g. " [newborn stays]"). A "re@R" row takes the summary's
    "re_authors@R" and "re_left_out@R" of the same experiment and level, when present, as value_authors,
    sem_authors and left_out.
    """
    _need = {"experiment", "level", "metric", "mean", "sem"}
    if missing := _need - set(summary.columns):
        raise ValueError(f"{item}: summary lacks column(s) {sorted(missing)}")
    by_key = {(r.experiment, r.level, r.metric): r for r in summary.itertuples()}
    rows = []
    for exp, metrics in spec.items():
        for ours, paper_metric, unit in metrics:
            sub = summary[(summary["experiment"] == exp) & (summary["metric"] == ours)]
            for r in sub.itertuples():
                if levels is not None and r.level not in levels:
                    continue
                scale = 100.0 if unit == "%" else 1.0
                row = {"item": item, "level": levels[r.level] if levels else r.level,
                       "model": experiment_label(exp) + model_suffix, "metric": paper_metric,
                       "value": r.mean * scale, "sem": r.sem * scale, "unit": unit}
                if ours.startswith("re@"):
                    a = by_key.get((exp, r.level, "re_authors@" + ours[3:]))
                    lo = by_key.get((exp, r.level, "re_left_out@" + ours[3:]))
                    row.update(value_authors=a.mean if a else np.nan, sem_authors=a.sem if a else np.nan,
                               left_out=lo.mean if lo else np.nan)
                rows.append(row)
    return pd.DataFrame(rows, columns=[*LONG_COLUMNS, *AUTHORS_COLUMNS])


def hyperparameter_table(results: Iterable[tuple[str, int, Mapping]]) -> pd.DataFrame:
    """Tidy best hyperparameters: columns experiment, fold, parameter, value (from (experiment, fold, params))."""
    rows = []
    for exp, fold, params in results:
        flat = {}
        for k, v in (params or {}).items():  # composites hold one dict per part
            if isinstance(v, Mapping):
                flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
            else:
                flat[k] = v
        rows += [{"experiment": exp, "fold": int(fold), "parameter": k, "value": v} for k, v in sorted(flat.items())]
    return pd.DataFrame(rows, columns=["experiment", "fold", "parameter", "value"])


def table_s10_rows(hp: pd.DataFrame) -> pd.DataFrame:
    """Paper-comparable Table S10 rows (model '<label> [fold k]') from `hyperparameter_table`."""
    rows = []
    for r in hp.itertuples():
        for ours, paper_metric, unit in TABLE_S10:
            if r.parameter == ours:
                v = float(r.value) if not isinstance(r.value, str) else float(r.value.lower() in ("true", "1"))
                rows.append({"item": "Table S10", "level": "all",
                             "model": f"{experiment_label(r.experiment)} [fold {r.fold}]",
                             "metric": paper_metric, "value": v, "sem": np.nan, "unit": unit})
    return pd.DataFrame(rows, columns=list(LONG_COLUMNS))


def paper_row(item: str, level: str, model: str, metric: str, value: float, sem: float = np.nan,
              unit: str = "ratio", **extra) -> dict:
    """One paper-comparable value (the long format's columns, then `extra`: paper_model, value_authors, …)."""
    if unit not in UNITS:
        raise ValueError(f"paper_row({item!r}, {metric!r}): unit {unit!r} not one of {UNITS}")
    return {"item": item, "level": level, "model": model, "metric": metric, "value": value, "sem": sem, "unit": unit,
            **extra}


def paper_table(rows: Iterable[Mapping | pd.DataFrame], columns: Iterable[str] | None = None) -> pd.DataFrame:
    """A notebook's paper-comparable table from its rows (`paper_row` dicts) and blocks of rows (DataFrames).

    Dicts only: one DataFrame of them; otherwise the blocks (each dict a one-row block) concatenated in
    order. columns: the columns of the table, in order (for an empty table too).
    """
    rows = list(rows)
    cols = None if columns is None else list(columns)
    if all(not isinstance(r, pd.DataFrame) for r in rows):
        return pd.DataFrame(rows, columns=cols)
    blocks = [r if isinstance(r, pd.DataFrame) else pd.DataFrame([r]) for r in rows]
    out = pd.concat(blocks, ignore_index=True)
    return out if cols is None else out[cols]


def published_row(item: str, metric: str, level: str | None = None, model: str | None = None,
                  paper: pd.DataFrame | None = None) -> pd.Series:
    """The one row of `paper_values.csv` for (item, metric[, level, model]); KeyError if not exactly one."""
    p = load_paper_values() if paper is None else paper
    hit = (p["item"] == item) & (p["metric"] == metric)
    if level is not None:
        hit &= p["level"] == level
    if model is not None:
        hit &= p["model"] == model
    if hit.sum() != 1:
        raise KeyError(f"{int(hit.sum())} published values for item {item!r}, metric {metric!r}, level {level!r}, "
                       f"model {model!r}; expected one")
    return p.loc[hit].iloc[0]


def paper_value(item: str, metric: str, level: str | None = None, model: str | None = None,
                paper: pd.DataFrame | None = None) -> float:
    """The one published value of (item, metric[, level, model]) in `paper_values.csv`; KeyError if not exactly one."""
    return float(published_row(item, metric, level, model, paper)["value"])


def paper_sem(item: str, metric: str, level: str | None = None, model: str | None = None,
              paper: pd.DataFrame | None = None) -> float:
    """The SEM (or ±) published with `paper_value`'s value (NaN when none was)."""
    return float(published_row(item, metric, level, model, paper)["sem"])


def mean_sem_cells(mean, sem, fmt: str = ".2f", sem_fmt: str | None = None, scale: float | None = None) -> list[str]:
    """'mean ± SEM' strings, one per pair (each times `scale` when given; the SEM in `sem_fmt`, else in `fmt`)."""
    sem_fmt = fmt if sem_fmt is None else sem_fmt
    if scale is None:
        return [f"{m:{fmt}} ± {s:{sem_fmt}}" for m, s in zip(mean, sem)]
    return [f"{scale * m:{fmt}} ± {scale * s:{sem_fmt}}" for m, s in zip(mean, sem)]


def cell_table(summary: pd.DataFrame, index, columns: str = "metric", mean: str = "mean", sem: str = "sem",
               fmt: str = ".2f", sem_fmt: str | None = None, scale: float | None = 100.0) -> pd.DataFrame:
    """A wide table of 'mean ± SEM' cells (`mean_sem_cells`) from a long one: index x columns, first cell of each."""
    t = summary.assign(cell=mean_sem_cells(summary[mean], summary[sem], fmt, sem_fmt, scale))
    return t.pivot_table(index=index, columns=columns, values="cell", aggfunc="first")


def paper_values_of(item: str, paper: pd.DataFrame | None = None) -> dict[tuple[str, str, str], float]:
    """The published values of one item: (level, model, metric) -> value (`paper_values.csv`)."""
    p = load_paper_values() if paper is None else paper
    p = p[p["item"] == item]
    if p.empty:
        raise KeyError(f"no published value of item {item!r}")
    return {(r.level, r.model, r.metric): float(r.value) for r in p.itertuples()}


def baseline_re_rows(rel_ref: pd.DataFrame, authors: pd.DataFrame, item: str, levels: Iterable[str],
                     rs: Iterable[int], model: str = "μF1-tuned naive multitask (baseline)") -> list[dict]:
    """Paper rows of a reference model's absolute RE@R per level and R: exact, the authors' way, the share left out.

    rel_ref: the reference's rows of a `compare.relative` table (level, R, mean, sem); authors: a fold
    summary indexed by (level, metric) holding re_authors@R and re_left_out@R.
    """
    rows = []
    for level in levels:
        for r in rs:
            v = rel_ref[(rel_ref["level"] == level) & (rel_ref["R"] == r)].iloc[0]
            a, lo = authors.loc[(level, f"re_authors@{r}")], authors.loc[(level, f"re_left_out@{r}")]
            rows.append(paper_row(item, level, model, f"RE@{r}", v["mean"], v["sem"], "count",
                                  value_authors=a["mean"], sem_authors=a["sem"], left_out=lo["mean"]))
    return rows


def published_columns(item: str, model: str, metrics: Mapping[str, str],
                      paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """The published values of one item and model per level: column level, then one column per metric (renamed)."""
    p = load_paper_values() if paper is None else paper
    p = p[(p["item"] == item) & (p["model"] == model) & p["metric"].isin(list(metrics))]
    wide = p.pivot_table(index="level", columns="metric", values="value", aggfunc="first", sort=False)
    return wide[list(metrics)].rename(columns=dict(metrics)).rename_axis(columns=None).reset_index()


def table2_with_paper(table2: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 2 (codes per stay per level) with the published median and mean of the complete code set beside it."""
    return table2.merge(published_columns("Table 2", "MIMIC-III (complete code set)",
                                          {"codes per stay median": "paper_median", "codes per stay mean": "paper_mean"},
                                          paper), on="level")
