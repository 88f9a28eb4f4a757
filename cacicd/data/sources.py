"""The one entry point for every data source (`load_data`), and cached splits.

Sources (strings):
  "synthetic"            the embedded generator (`cacicd.data.synthetic`), profile.n_stays and profile.seed;
  "<folder>" / "omop:<folder>"   an OMOP CDM folder of CSV/Parquet files (`cacicd.data.omop`);
  "mimic3:<folder>"      raw MIMIC-III CSV tables (`cacicd.data.mimic3`);
  "postgresql://[user[:password]@]host[:port]/db?schema=omop&vocab_schema=vocab"
                         an OMOP CDM database in PostgreSQL (`cacicd.data.pg`): CDM tables in `schema`
                         (default: the session's current schema), concept and concept_ancestor in
                         `vocab_schema` (default: `schema`); other parameters go to libpq. Credentials:
                         the URL, PGUSER/PGPASSWORD/..., ~/.pgpass; the password is never shown.
Loader options may follow a folder or URL (or "synthetic") as a query string, e.g.
"omop:/data/mimic-iv-omop?ingredient_mapping=drug_concept&drug_type_concept_id=none" (integers,
comma-separated integer lists, "none" for None, other values as text); an unknown option is
refused with the list of known ones, and a value of the wrong type or outside its set with what is
expected (`check_source`, before any work). Two options of every source (`FLAGS`, true or false) accept a
dataset that is otherwise refused: allow_no_icd9 (no stay has an ICD-9-CM code) and allow_no_drugs
(no stay has a drug feature, leaving sex and age only).
Every source also takes
`age_encoding` (`cacicd.data.dataset.AGE_ENCODINGS`): "float" (the default, age / 89) or "authors"
(1[age > 0], what the authors' models saw), e.g. "mimic3:/data/mimic-iii?age_encoding=authors";
the dataset's report says which (`report["age_encoding"]`).
"""
from __future__ import annotations

import difflib
import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from cacicd.config import Profile
from cacicd.data import mimic3, omop, pg, synthetic
from cacicd.data.dataset import AGE_ENCODINGS, DEFAULT_AGE_ENCODING, Dataset
from cacicd.data.omop.schema import INGREDIENT_MAPPINGS, DataError
from cacicd.data.options import FLAGS, OWN_OPTIONS, parse_flag, parse_value
from cacicd.data.splits import Split, load_splits, make_splits, save_splits
from cacicd.files import file_lock

log = logging.getLogger(__name__)

_KIND_TEXT = {"synthetic": "the synthetic source", "omop": "an OMOP folder", "mimic3": "a MIMIC-III folder"}


def loader_options(kind: str) -> tuple[str, ...]:
    """Names of the options a folder or synthetic source accepts: its loader's options, then `OWN_OPTIONS`."""
    return tuple(mimic3.OPTIONS if kind == "mimic3" else omop.OPTIONS) + OWN_OPTIONS


def _split_query(s: str) -> tuple[str, list[tuple[str, str]]]:
    if "?" not in s:
        return s, []
    base, query = s.rsplit("?", 1)
    items = []
    for item in filter(None, query.split("&")):
        if "=" not in item:
            raise DataError(f"data source option {item!r} in {s!r} is not of the form name=value")
        items.append(tuple(item.split("=", 1)))
    return base, items


def parse_source(source: str) -> tuple[str, str, dict]:
    """(kind, location, options) of a source string; kind in synthetic, omop, mimic3, postgresql.

    A postgresql URL keeps its query (read by `cacicd.data.pg`) but for `FLAGS`, returned as options.
    An option unknown to the source's loader is refused, naming it and listing the known ones.
    """
    s = str(source).strip()
    if s.startswith(pg.SCHEMES):
        base, items = _split_query(s)
        rest = [f"{k}={v}" for k, v in items if k not in OWN_OPTIONS]
        return "postgresql", base + ("?" + "&".join(rest) if rest else ""), {
            k: parse_value(v) for k, v in items if k in OWN_OPTIONS}
    kind = "omop"
    for prefix in ("omop:", "mimic3:"):
        if s.startswith(prefix):
            kind, s = prefix[:-1], s[len(prefix):]
    s, items = _split_query(s)
    if kind == "omop" and s == "synthetic":
        kind, s = "synthetic", ""
    known = loader_options(kind)
    for k, _ in items:
        if k not in known:
            raise DataError(f"data source {source!r}: unknown option {k!r} for {_KIND_TEXT[kind]}; "
                            f"known: {', '.join(known)}")
    return kind, s, {k: parse_value(v) for k, v in items}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_option_values(kind: str, options: dict, source: str) -> None:
    """Refuse (DataError naming the first) an option value outside its closed set or of the wrong type."""
    for name, v in options.items():
        if name in FLAGS:
            parse_flag(name, v)
            continue
        if name == "age_encoding":
            ok, want = v in AGE_ENCODINGS, f"one of {', '.join(AGE_ENCODINGS)}"
        elif name == "ingredient_mapping":
            ok, want = v in INGREDIENT_MAPPINGS, f"one of {', '.join(INGREDIENT_MAPPINGS)}"
        elif name in ("drug_type_concept_id", "visit_concept_id"):
            ok = v is None or _is_int(v) or (isinstance(v, (list, tuple)) and all(map(_is_int, v)))
            want = "a concept id, comma-separated concept ids or none"
        elif name == "drug_types" and kind == "mimic3":
            items = v.split(",") if isinstance(v, str) else v
            ok = v is None or (isinstance(items, (list, tuple)) and all(str(t).strip().upper() in mimic3.DRUG_TYPES
                                                                         for t in items))
            want = f"none or comma-separated PRESCRIPTIONS drug types among {', '.join(mimic3.DRUG_TYPES)}"
        else:
            continue
        if not ok:
            shown = pg.redact(source) if kind == "postgresql" else source
            raise DataError(f"data source {shown!r}: option {name}={v!r}: expected {want}")


def check_source(source: str) -> tuple[str, str, dict]:
    """`parse_source` with every option value checked; for a folder, that it exists and holds the required tables."""
    kind, where, opts = parse_source(source)
    check_option_values(kind, opts, source)
    if kind == "postgresql":
        check_option_values(kind, pg.parse_url(where).options, source)
    if kind in ("omop", "mimic3"):
        path = Path(where).expanduser()
        if not path.is_dir():
            hint = ""
            if difflib.get_close_matches(where, ["synthetic"], n=1, cutoff=0.75):
                hint = " (did you mean 'synthetic'?)"
            raise DataError(f"data source {source!r}: {path.resolve()} is not a folder{hint}; use 'synthetic', "
                            "an OMOP folder, 'mimic3:<folder>' or 'postgresql://…'")
        schema = mimic3.SCHEMA if kind == "mimic3" else omop.SCHEMA
        found = omop.find_tables(path, schema)
        required = [t for t in schema if t not in mimic3.OPTIONAL_TABLES] if kind == "mimic3" else omop.REQUIRED_TABLES
        missing = [t for t in required if t not in found]
        if missing:
            raise DataError(f"data source {source!r}: {path} lacks table(s) {', '.join(missing)} "
                            f"(looked for <table>{'|'.join(omop.SUFFIXES)}; "
                            f"found {', '.join(sorted(found)) or 'none'})")
    return kind, where, opts


def check_usable(ds: Dataset, allow_no_icd9: bool = False, allow_no_drugs: bool = False) -> Dataset:
    """The dataset, unless no stay has an ICD-9-CM code or none has a drug feature (DataError saying why)."""
    r = ds.report or {}

    def counts(prefixes):
        if r.get(prefixes[0]) == 0:
            return f"{prefixes[0]} 0: its table has no row"
        items = [(k, v) for k, v in r.items() if k.startswith(prefixes) and isinstance(v, (int, np.integer)) and v]
        return "; ".join(f"{k} {v:,}" for k, v in items) or "no counts in the loader's report"

    if not ds.codes and not allow_no_icd9:
        raise DataError(f"{ds.source}: no stay has an ICD-9-CM diagnosis code ({counts(('condition_rows',))})"
                        ": the models rank ICD-9-CM codes, read from condition_source_value (ICD-10 and other "
                        "vocabularies are not used). Check the source, or add allow_no_icd9=true to its options "
                        "(e.g. DIR?allow_no_icd9=true) to load it anyway")
    if ds.X[:, 2:].nnz == 0 and not allow_no_drugs:
        raise DataError(f"{ds.source}: no stay has a drug feature ({counts(('drug_rows', 'drug_concepts'))}), "
                        "so the models would see sex and age only. Check the drug table, the vocabulary tables and "
                        "the drug options (drug_type_concept_id, ingredient_mapping), or add allow_no_drugs=true to the "
                        "source's options (e.g. DIR?allow_no_drugs=true) to proceed")
    return ds


def load_data(source: str, profile: Profile, cache_dir: str | Path, **options) -> Dataset:
    """The dataset of a source string (see the module docstring), built once and cached under cache_dir."""
    cache_dir = Path(cache_dir)
    kind, where, opts = check_source(source)
    opts.update(options)
    check_option_values(kind, opts, source)
    flags = {k: parse_flag(k, opts.pop(k)) for k in FLAGS if k in opts}
    age = opts.pop("age_encoding", DEFAULT_AGE_ENCODING)
    return check_usable(_load(kind, where, profile, cache_dir, opts), **flags).with_age_encoding(age)


def _load(kind: str, where: str, profile: Profile, cache_dir: Path, opts: dict) -> Dataset:
    if kind == "synthetic":
        folder = synthetic.default_folder(profile.n_stays, profile.seed, cache_dir / "synthetic")
        ds = omop.load_omop_cached(folder, cache_dir, **opts)
        ds.source = f"synthetic:n{profile.n_stays}-s{profile.seed}"
    elif kind == "postgresql":
        ds = pg.load_pg_cached(where, cache_dir, **opts)
    elif kind == "mimic3":
        ds = mimic3.load_mimic3_cached(Path(where).expanduser(), cache_dir, **opts)
    else:
        ds = omop.load_omop_cached(Path(where).expanduser(), cache_dir, **opts)
    return ds


def source_string(data: str | Dataset) -> str | None:
    """The source string (password removed) that loads `data` again; for a Dataset, as far as it tells (None: unknown)."""
    if isinstance(data, Dataset):
        if not data.source:
            return None
        s = "synthetic" if data.source.startswith("synthetic:") else data.source
        age = str((data.report or {}).get("age_encoding", DEFAULT_AGE_ENCODING)).split(":")[0]
        return s if age == DEFAULT_AGE_ENCODING else s + ("&" if "?" in s else "?") + f"age_encoding={age}"
    return pg.redact(data) if str(data).strip().startswith(pg.SCHEMES) else str(data)


def splits_key(dataset: Dataset, profile: Profile) -> str:
    """Cache key of a dataset's splits: its content hash and the profile fields that shape splits."""
    fields = {"data": dataset.content_hash(), "n_folds": profile.n_folds, "fraction": profile.split_fraction,
              "seed": profile.seed, "group_by_person": profile.group_by_person}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _saved_splits(folder: Path, splits: list[Split]) -> tuple[list[Split] | None, str | None]:
    """(the saved splits, None) when they equal `splits`; (None, why) when damaged; (None, None) when absent."""
    if not (folder / "splits.json").exists():
        return None, None
    try:
        saved = load_splits(folder)
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:  # JSONDecodeError is a ValueError
        return None, str(e)
    if [(s.fold, s.seed, s.dev.tolist(), s.test.tolist()) for s in saved] == [
            (s.fold, s.seed, s.dev.tolist(), s.test.tolist()) for s in splits]:
        return saved, None
    return None, "they differ from the splits drawn from the profile's seed"


def get_splits(dataset: Dataset, profile: Profile, cache_dir: str | Path) -> list[Split]:
    """The profile's Monte-Carlo splits of the dataset, saved to cache_dir/splits/<key>.

    Saved split files are checked against the splits drawn again (cheap, deterministic): damaged
    ones are rewritten with a warning naming the folder, never read as is.
    """
    folder = Path(cache_dir) / "splits" / splits_key(dataset, profile)
    splits = make_splits(dataset.visit_ids, profile.n_folds, profile.split_fraction, profile.seed,
                         dataset.person_ids if profile.group_by_person else None)
    saved, _ = _saved_splits(folder, splits)
    if saved is not None:  # read without the lock (a read-only cache): checked against the splits drawn
        return saved
    with file_lock(folder.parent / f"{folder.name}.lock"):
        saved, why = _saved_splits(folder, splits)
        if saved is not None:
            return saved
        if why is not None:
            log.warning("split files in %s are damaged (%s); rewriting them", folder, why)
        save_splits(splits, folder)
        log.info("saved %d splits in %s", len(splits), folder)
        return splits


def min_test_stays(dataset: Dataset, profile: Profile, cache_dir: str | Path) -> int:
    """The fewest test stays of the profile's folds (the verdict rule of `cacicd.paper.claims` reads it)."""
    return min(len(s.test) for s in get_splits(dataset, profile, cache_dir))
