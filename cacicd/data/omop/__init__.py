"""OMOP CDM 5.3 tables (a folder of CSV or Parquet files) -> `Dataset`, with DuckDB (spec section 1).

Layout. `register_folder` validates each file and loads it as a typed DuckDB table named after
its table (person, visit_occurrence, visit_detail, drug_exposure, condition_occurrence, concept,
concept_ancestor), with the columns of `SCHEMA` only (an optional column that is absent reads as
NULL). `build_dataset` then runs the aggregating SQL (`sql.SQL_*`: plain SQL that DuckDB and
PostgreSQL both accept) through `query`, on a DuckDB connection holding such tables or on any
`Queryable`: `cacicd.data.pg` reads a PostgreSQL database that way, with the same SQL text.

Files. `<table>.csv`, `.csv.gz`, `.parquet` (any case of the name, e.g. PERSON.csv); column
headers of any case. CSV cells are read as text and checked before any cast, so a bad value is
reported with its file, column and count instead of being cast silently. CSV files are UTF-8;
the header line gives the columns and the delimiter (, tab ; |); a line with another number of
fields, an unclosed quote, a byte that is not UTF-8, or a missing final line break (a file cut
short) is refused naming the file and line.

Stays (rows): one per visit_occurrence row, sorted by visit_occurrence_id; stays without drugs
and stays without diagnoses are kept and counted in the report.

Features: sex (1 if gender_concept_id == 8532), age = (visit_start_date − birth date) in days /
365.25, clipped to [0, 89], divided by 89 (birth date: birth_datetime if present, else
year/month/day_of_birth with a missing month or day read as 1), then one binary column per
ingredient, sorted by concept id. Drug rows: drug_type_concept_id filter (default 38000177,
"Prescription written"; None keeps every type), drug_concept_id 0 dropped, rows of unknown
visits dropped. ingredient_mapping="concept_ancestor" (default): each drug maps to all its
concept_ancestor ancestors (and itself) with concept_class_id 'Ingredient' and vocabulary_id
'RxNorm', features "rxnorm:<id>"; ingredient_mapping="drug_concept": the drug concept itself is
the feature ("drug:<id>"), the fallback for exports without vocabulary tables.

Sex: a gender_concept_id other than 8532 (female) or 8507 (male), or none, reads 0 as for males;
such stays are counted in the report (gender_other, gender_other_concepts, gender_missing) and
warned about.

Labels: ICD-9-CM codes from condition_source_value with spaces and dots removed (upper case),
de-duplicated per stay, rolled up to every ancestor (`cacicd.icd9`); one column per code present.
Which rows are ICD-9-CM (`classify_icd`):
  1. where a concept table is present and condition_source_concept_id is in it with a real
     vocabulary: ICD9CM -> ICD-9; ICD10CM / ICD10 -> ICD-10; any other vocabulary -> other;
  2. otherwise by the code's shape, ICD9 = ^(\\d{3,5}|V\\d{2,4}|E\\d{3,4})$ and
     ICD10 = ^[A-Z]\\d[0-9A-Z]{1,5}$: ICD9 shape only (all-digit codes) -> ICD-9; ICD10 shape only
     -> ICD-10; neither -> other (free text, item ids); both (V or E followed by digits, e.g.
     "V3000" or "E119") -> ambiguous, resolved by the stay: ICD-9 if the stay's other codes
     include ICD-9 and no ICD-10 codes, ICD-10 in the converse case, otherwise ICD-9 when the code
     exists in ICD-9-CM, else ICD-10. Ambiguous rows are counted in the report.
ICD-9 codes unknown to the 2015 hierarchy are dropped and reported (count and distinct codes).

Stay type (Table S9), from visit_detail.visit_detail_source_value read as a MIMIC-III service code,
with the authors' rule over every visit_detail row of the stay: newborn if any row is a newborn
service (NB, NBB), else surgical if any row is a surgical service (CSURG, NSURG, ORTHO, PSURG, SURG,
TSURG, VSURG, TRAUM), else medical if any row has a value; no visit_detail table, no row for the stay,
or only blank values -> "unknown".

Modules: `schema` (tables, columns, option defaults, `DataError`), `sql` (the statements, `query`),
`files` (files -> typed DuckDB tables), `build` (typed tables -> `Dataset`); the on-disk cache is
`cacicd.data.cache`, shared with the other loaders.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from cacicd.data.cache import cache_key, cached, with_defaults
from cacicd.data.dataset import Dataset
from cacicd.data.omop.build import build_dataset, check_mapping, classify_icd
from cacicd.data.omop.files import find_tables, register_folder
from cacicd.data.omop.schema import (DEFAULT_INGREDIENT_MAPPING, NONEMPTY_TABLES, OPTIONS, PRESCRIPTION_WRITTEN,
                                     REQUIRED_TABLES, SCHEMA, SUFFIXES, VOCAB_TABLES, DataError)

__all__ = ["LOADER_VERSION", "NONEMPTY_TABLES", "OPTIONS", "PRESCRIPTION_WRITTEN", "REQUIRED_TABLES", "SCHEMA", "SUFFIXES", "VOCAB_TABLES",
           "DataError", "build_dataset", "check_mapping", "classify_icd", "find_tables", "load_omop",
           "load_omop_cached", "register_folder"]

LOADER_VERSION = "omop-1"


def load_omop(folder: str | Path, drug_type_concept_id: int | Sequence[int] | None = PRESCRIPTION_WRITTEN,
              ingredient_mapping: str = DEFAULT_INGREDIENT_MAPPING,
              visit_concept_id: int | Sequence[int] | None = None) -> Dataset:
    """Read an OMOP CDM 5.3 folder (CSV/Parquet) into a Dataset; see the module docstring."""
    folder = Path(folder).resolve()
    con = duckdb.connect()
    try:
        files = register_folder(con, folder)
        ds = build_dataset(con, files, f"omop:{folder}", drug_type_concept_id=drug_type_concept_id,
                           ingredient_mapping=ingredient_mapping, visit_concept_id=visit_concept_id)
        ds.report["files"] = {t: p.name for t, p in sorted(files.items())}
        return ds
    finally:
        con.close()


def load_omop_cached(folder: str | Path, cache_dir: str | Path, **options) -> Dataset:
    """`load_omop` cached on disk under cache_dir, keyed by the input files' bytes and the options."""
    folder = Path(folder).resolve()
    opts = with_defaults(OPTIONS, options, "load_omop_cached")
    key = cache_key(find_tables(folder), opts, LOADER_VERSION)
    return cached(Path(cache_dir) / "omop", key, lambda: load_omop(folder, **opts))
