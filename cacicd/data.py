"""The one entry point for every data source (`load_data`), cached splits, and data description tables.

Sources (strings):
  "synthetic"            the embedded generator (`cacicd.synthetic`), profile.n_stays and profile.seed;
  "<folder>" / "omop:<folder>"   an OMOP CDM folder of CSV/Parquet files (`cacicd.omop`);
  "mimic3:<folder>"      raw MIMIC-III CSV tables (`cacicd.mimic3`);
  "postgresql://[user[:password]@]host[:port]/db?schema=omop&vocab_schema=vocab"
                         an OMOP CDM database in PostgreSQL (`cacicd.pg`): CDM tables in `schema`
                         (default: the session's current schema), concept and concept_ancestor in
                         `vocab_schema` (default: `schema`); other parameters go to libpq. Credentials:
                         the URL, PGUSER/PGPASSWORD/..., ~/.pgpass; the password is never shown.
Loader options may follow a folder or URL (or "synthetic") as a query string, e.g.
"omop:/data/mimic-iv-omop?ingredient_mapping=drug_concept&drug_type_concept_id=none" (integers,
comma-separated integer lists, "none" for None, other values as text). Every source takes
`age_encoding` (`cacicd.dataset.AGE_ENCODINGS`): "float" (the default, age / 89) or "authors"
(1[age > 0], what the authors' models saw), e.g. "mimic3:/data/mimic-iii?age_encoding=authors";
the dataset's report says which (`report["age_encoding"]`).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import icd9
from .config import Profile
from .dataset import AGE_ENCODINGS, DEFAULT_AGE_ENCODING, Dataset
from .io import file_lock
from .omop import DataError
from .pg import SCHEMES
from .splits import Split, load_splits, make_splits, save_splits

log = logging.getLogger(__name__)


def _parse_value(v: str):
    if v.lower() == "none":
        return None
    try:
        parts = [int(x) for x in v.split(",")]
    except ValueError:
        return v
    return parts[0] if len(parts) == 1 else parts


def parse_source(source: str) -> tuple[str, str, dict]:
    """(kind, location, options) of a source string; kind in synthetic, omop, mimic3, postgresql."""
    s = str(source).strip()
    if s.split("?", 1)[0] == "synthetic":
        return "synthetic", "", _parse_query(s.split("?", 1)[1], source) if "?" in s else {}
    if s.startswith(SCHEMES):  # the URL's own parameters go to cacicd.pg; age_encoding is read here
        base, _, query = s.partition("?")
        ours = [x for x in query.split("&") if x.split("=", 1)[0] == "age_encoding"]
        rest = [x for x in query.split("&") if x and x not in ours]
        return "postgresql", base + ("?" + "&".join(rest) if rest else ""), _parse_query("&".join(ours), source)
    kind = "omop"
    for prefix in ("omop:", "mimic3:"):
        if s.startswith(prefix):
            kind, s = prefix[:-1], s[len(prefix):]
    options = {}
    if "?" in s:
        s, query = s.rsplit("?", 1)
        options = _parse_query(query, source)
    return kind, s, options


def _parse_query(query: str, source: str) -> dict:
    options = {}
    for item in filter(None, query.split("&")):
        if "=" not in item:
            raise ValueError(f"data source option {item!r} in {source!r} is not of the form name=value")
        k, v = item.split("=", 1)
        options[k] = _parse_value(v)
    return options


def load_data(source: str, profile: Profile, cache_dir: str | Path, **options) -> Dataset:
    """The dataset of a source string (see the module docstring), built once and cached under cache_dir."""
    kind, where, opts = parse_source(source)
    opts.update(options)
    age = opts.pop("age_encoding", DEFAULT_AGE_ENCODING)
    if age not in AGE_ENCODINGS:
        raise ValueError(f"data source {source!r}: unknown age_encoding {age!r}; choose one of "
                         f"{', '.join(AGE_ENCODINGS)}")
    return _load(kind, where, source, profile, Path(cache_dir), opts).with_age_encoding(age)


def _load(kind: str, where: str, source: str, profile: Profile, cache_dir: Path, opts: dict) -> Dataset:
    if kind == "synthetic":
        from . import synthetic  # lazy: only the synthetic source needs the generator

        folder = synthetic.default_folder(profile.n_stays, profile.seed, cache_dir / "synthetic")
        from .omop import load_omop_cached

        ds = load_omop_cached(folder, cache_dir, **opts)
        ds.source = f"synthetic:n{profile.n_stays}-s{profile.seed}"
        return ds
    if kind == "postgresql":
        from .pg import load_pg_cached

        return load_pg_cached(where, cache_dir, **opts)
    path = Path(where).expanduser()
    if not path.is_dir():
        raise DataError(f"data source {source!r}: {path} is not a folder; use 'synthetic', an OMOP folder, "
                        "'mimic3:<folder>' or 'postgresql://…'")
    if kind == "mimic3":
        from .mimic3 import load_mimic3_cached

        return load_mimic3_cached(path, cache_dir, **opts)
    from .omop import load_omop_cached

    return load_omop_cached(path, cache_dir, **opts)


def splits_key(dataset: Dataset, profile: Profile) -> str:
    """Cache key of a dataset's splits: its content hash and the profile fields that shape splits."""
    fields = {"data": dataset.content_hash(), "n_folds": profile.n_folds, "fraction": profile.split_fraction,
              "seed": profile.seed, "group_by_person": profile.group_by_person}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def get_splits(dataset: Dataset, profile: Profile, cache_dir: str | Path) -> list[Split]:
    """The profile's Monte-Carlo splits of the dataset, read from or saved to cache_dir/splits/<key>."""
    folder = Path(cache_dir) / "splits" / splits_key(dataset, profile)
    with file_lock(folder.parent / f"{folder.name}.lock"):
        if (folder / "splits.json").exists():
            return load_splits(folder)
        splits = make_splits(dataset.visit_ids, profile.n_folds, profile.split_fraction, profile.seed,
                             dataset.person_ids if profile.group_by_person else None)
        save_splits(splits, folder)
        log.info("saved %d splits in %s", len(splits), folder)
        return splits


def min_test_stays(dataset: Dataset, profile: Profile, cache_dir: str | Path) -> int:
    """The fewest test stays of the profile's folds (the verdict rule of `cacicd.claims` reads it)."""
    return min(len(s.test) for s in get_splits(dataset, profile, cache_dir))


# ---------------------------------------------------------------- description (00_data notebook)


def _per_stay_stats(Y, masks: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = []
    for lvl in icd9.REPORT_LEVELS:
        n = np.asarray(Y[:, np.flatnonzero(masks[lvl])].sum(axis=1)).ravel().astype(float)
        rows.append({"level": lvl, "min": n.min() if len(n) else np.nan, "max": n.max() if len(n) else np.nan,
                     "median": float(np.median(n)) if len(n) else np.nan, "mean": n.mean() if len(n) else np.nan,
                     "sd": n.std(ddof=1) if len(n) > 1 else np.nan})
    return pd.DataFrame(rows)


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.extend(_flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out.append((key, ", ".join(str(x) for x in v)))
        else:
            out.append((key, v))
    return out


def describe(dataset: Dataset) -> dict[str, pd.DataFrame]:
    """Aggregate description tables of a dataset (never patient-level rows).

    table1: codes per level (ICD-9-CM, dataset, cherry-picked); table2 / tableS2: codes per stay
    per level over every stay (all codes / cherry-picked codes), a stay's count at a level being the
    number of distinct codes of that level after roll-up, sd with ddof=1; zipf: per level the code
    frequencies ranked (level, rank, stays); codes_per_stay: stays by number of codes (all levels);
    report: the loader's drop report as (item, value).
    """
    masks = dataset.level_masks()
    cherry = dataset.cherry_mask()
    full = icd9.table1_icd9_counts()
    table1 = pd.DataFrame([{"level": lvl, "icd9cm": full[lvl], "dataset": int(masks[lvl].sum()),
                            "cherry_picked": int((masks[lvl] & cherry).sum())} for lvl in icd9.REPORT_LEVELS])
    Y = dataset.Y.tocsc()
    table2 = _per_stay_stats(Y, masks)
    tableS2 = _per_stay_stats(Y, {k: m & cherry for k, m in masks.items()})
    counts = dataset.code_counts()
    zipf = []
    for lvl in icd9.REPORT_LEVELS:
        c = np.sort(counts[masks[lvl]])[::-1]
        zipf.append(pd.DataFrame({"level": lvl, "rank": np.arange(1, len(c) + 1), "stays": c}))
    per_stay = np.diff(dataset.Y.tocsr().indptr)
    values, n = np.unique(per_stay, return_counts=True)
    report = pd.DataFrame(_flatten(dataset.report), columns=["item", "value"])
    report["value"] = report["value"].astype(str)
    return {"table1": table1, "table2": table2, "tableS2": tableS2, "zipf": pd.concat(zipf, ignore_index=True),
            "codes_per_stay": pd.DataFrame({"codes": values, "stays": n}), "report": report}
