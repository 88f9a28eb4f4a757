"""OMOP CDM 5.3 tables (a folder of CSV or Parquet files) -> `Dataset`, with DuckDB (spec section 1).

Layout. `register_folder` validates each file and loads it as a typed DuckDB table named after
its table (person, visit_occurrence, visit_detail, drug_exposure, condition_occurrence, concept,
concept_ancestor), with the columns of `SCHEMA` only (an optional column that is absent reads as
NULL). `build_dataset` then runs the aggregating SQL (`SQL_*` below: plain SQL that DuckDB and
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
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import duckdb
import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from cacicd import icd9
from cacicd.data.dataset import Dataset
from cacicd.files import Damaged, file_lock

log = logging.getLogger(__name__)

LOADER_VERSION = "omop-1"
PRESCRIPTION_WRITTEN = 38000177
FEMALE = 8532
MALE = 8507
AGE_MAX = 89.0
UNKNOWN_CODES_SHOWN = 50

NEWBORN_SERVICES = ("NB", "NBB")
SURGICAL_SERVICES = ("CSURG", "NSURG", "ORTHO", "PSURG", "SURG", "TSURG", "VSURG", "TRAUM")

ICD9_SHAPE = re.compile(r"^(\d{3,5}|V\d{2,4}|E\d{3,4})$")
ICD10_SHAPE = re.compile(r"^[A-Z]\d[0-9A-Z]{1,5}$")
ICD9_VOCABS = ("ICD9CM",)
ICD10_VOCABS = ("ICD10CM", "ICD10")


class DataError(ValueError):
    """Input data that cannot be turned into a dataset (the message names file, column, count)."""


@dataclass(frozen=True)
class Col:
    """A column the loader reads: kind is int, date or str; required columns must exist."""

    name: str
    kind: str
    required: bool = True
    not_null: bool = False


SCHEMA: dict[str, tuple[Col, ...]] = {
    "person": (
        Col("person_id", "int", not_null=True),
        Col("gender_concept_id", "int"),
        Col("year_of_birth", "int"),
        Col("month_of_birth", "int", required=False),
        Col("day_of_birth", "int", required=False),
        Col("birth_datetime", "date", required=False),
    ),
    "visit_occurrence": (
        Col("visit_occurrence_id", "int", not_null=True),
        Col("person_id", "int", not_null=True),
        Col("visit_start_date", "date", not_null=True),
        Col("visit_concept_id", "int", required=False),
    ),
    "visit_detail": (
        Col("visit_detail_id", "int", required=False),
        Col("visit_occurrence_id", "int"),
        Col("visit_detail_start_date", "date"),
        Col("visit_detail_start_datetime", "datetime", required=False),
        Col("visit_detail_source_value", "str"),
    ),
    "drug_exposure": (
        Col("visit_occurrence_id", "int"),
        Col("drug_concept_id", "int", not_null=True),
        Col("drug_type_concept_id", "int"),
    ),
    "condition_occurrence": (
        Col("visit_occurrence_id", "int"),
        Col("condition_source_value", "str"),
        Col("condition_source_concept_id", "int", required=False),
    ),
    "concept": (
        Col("concept_id", "int", not_null=True),
        Col("vocabulary_id", "str"),
        Col("concept_class_id", "str"),
    ),
    "concept_ancestor": (
        Col("ancestor_concept_id", "int", not_null=True),
        Col("descendant_concept_id", "int", not_null=True),
    ),
}
REQUIRED_TABLES = ("person", "visit_occurrence", "drug_exposure", "condition_occurrence")
SUFFIXES = (".csv", ".csv.gz", ".parquet")
CSV_DELIMITERS = (",", "\t", ";", "|")

# ---------------------------------------------------------------- SQL, written once
# Placeholders ({visit_filter}, {type_filter}) are filled with validated integers only.

SQL_VISITS = """
WITH visits AS (SELECT * FROM visit_occurrence WHERE {visit_filter})
SELECT v.visit_occurrence_id, v.person_id, CAST(v.visit_start_date AS VARCHAR) AS start_date,
       p.person_id AS known_person, p.gender_concept_id, p.year_of_birth, p.month_of_birth,
       p.day_of_birth, CAST(p.birth_datetime AS VARCHAR) AS birth_date
FROM visits v LEFT JOIN person p ON p.person_id = v.person_id
ORDER BY v.visit_occurrence_id
"""

SQL_DRUG_TYPES = """
SELECT drug_type_concept_id, count(*) AS n FROM drug_exposure GROUP BY drug_type_concept_id
"""

SQL_KEPT_DRUGS = """
WITH visits AS (SELECT * FROM visit_occurrence WHERE {visit_filter}),
typed AS (SELECT * FROM drug_exposure d WHERE {type_filter}),
kept AS (
  SELECT d.visit_occurrence_id, d.drug_concept_id FROM typed d
  JOIN visits v ON v.visit_occurrence_id = d.visit_occurrence_id
  WHERE d.drug_concept_id <> 0
)"""

SQL_DRUG_COUNTS = """
WITH visits AS (SELECT * FROM visit_occurrence WHERE {visit_filter}),
typed AS (SELECT * FROM drug_exposure d WHERE {type_filter})
SELECT count(*) AS type_kept,
       sum(CASE WHEN d.drug_concept_id = 0 THEN 1 ELSE 0 END) AS concept_0,
       sum(CASE WHEN d.visit_occurrence_id IS NULL THEN 1 ELSE 0 END) AS no_visit,
       sum(CASE WHEN d.visit_occurrence_id IS NOT NULL AND v.visit_occurrence_id IS NULL
                THEN 1 ELSE 0 END) AS other_visit
FROM typed d LEFT JOIN visits v ON v.visit_occurrence_id = d.visit_occurrence_id
"""

SQL_INGREDIENT_MAP = """,
ing AS (
  SELECT ca.descendant_concept_id AS drug_concept_id, ca.ancestor_concept_id AS ingredient_id
  FROM concept_ancestor ca JOIN concept c ON c.concept_id = ca.ancestor_concept_id
  WHERE c.concept_class_id = 'Ingredient' AND c.vocabulary_id = 'RxNorm'
  UNION
  SELECT c.concept_id AS drug_concept_id, c.concept_id AS ingredient_id FROM concept c
  WHERE c.concept_class_id = 'Ingredient' AND c.vocabulary_id = 'RxNorm'
)"""

SQL_VISIT_INGREDIENT = SQL_KEPT_DRUGS + SQL_INGREDIENT_MAP + """
SELECT DISTINCT k.visit_occurrence_id, i.ingredient_id
FROM kept k JOIN ing i ON i.drug_concept_id = k.drug_concept_id
"""

SQL_UNMAPPED_DRUGS = SQL_KEPT_DRUGS + SQL_INGREDIENT_MAP + """
SELECT count(DISTINCT k.drug_concept_id) AS concepts, count(*) AS n_rows FROM kept k
WHERE NOT EXISTS (SELECT 1 FROM ing i WHERE i.drug_concept_id = k.drug_concept_id)
"""

SQL_VISIT_DRUG = SQL_KEPT_DRUGS + """
SELECT DISTINCT k.visit_occurrence_id, k.drug_concept_id AS ingredient_id FROM kept k
"""

SQL_CONDITION_COUNTS = """
WITH visits AS (SELECT * FROM visit_occurrence WHERE {visit_filter})
SELECT count(*) AS n,
       sum(CASE WHEN co.visit_occurrence_id IS NULL THEN 1 ELSE 0 END) AS no_visit,
       sum(CASE WHEN co.visit_occurrence_id IS NOT NULL AND v.visit_occurrence_id IS NULL
                THEN 1 ELSE 0 END) AS other_visit
FROM condition_occurrence co LEFT JOIN visits v ON v.visit_occurrence_id = co.visit_occurrence_id
"""

SQL_VISIT_CODE = """
WITH visits AS (SELECT * FROM visit_occurrence WHERE {visit_filter})
SELECT co.visit_occurrence_id,
       upper(replace(replace(replace(co.condition_source_value, ' ', ''), '.', ''), chr(9), '')) AS code,
       {vocabulary} AS vocabulary, count(*) AS n_rows
FROM condition_occurrence co JOIN visits v ON v.visit_occurrence_id = co.visit_occurrence_id
{concept_join}
GROUP BY 1, 2, 3
"""

SQL_STAY_SERVICE = """
SELECT visit_occurrence_id,
       max(CASE WHEN service IN ({newborn}) THEN 1 ELSE 0 END) AS newborn,
       max(CASE WHEN service IN ({surgical}) THEN 1 ELSE 0 END) AS surgical,
       max(CASE WHEN service <> '' THEN 1 ELSE 0 END) AS any_service
FROM (SELECT visit_occurrence_id, upper(trim(visit_detail_source_value)) AS service
      FROM visit_detail WHERE visit_occurrence_id IS NOT NULL) t
GROUP BY visit_occurrence_id
"""


# ---------------------------------------------------------------- files -> typed views


def find_tables(folder: str | Path, names: Sequence[str] | None = None) -> dict[str, Path]:
    """The table files of a folder (OMOP tables unless `names`), by lower-case table name."""
    names = set(SCHEMA if names is None else names)
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"OMOP folder {folder} does not exist or is not a folder")
    found: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        name = p.name.lower()
        for suf in SUFFIXES:
            if name.endswith(suf) and name[: -len(suf)] in names:
                found.setdefault(name[: -len(suf)], []).append(p)
    dupes = {t: ps for t, ps in found.items() if len(ps) > 1}
    if dupes:
        t, ps = next(iter(dupes.items()))
        raise DataError(f"{folder}: table {t} is given by several files ({', '.join(p.name for p in ps)}); keep one")
    return {t: ps[0] for t, ps in found.items()}


def _sql_str(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def _ident(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


class Queryable(Protocol):
    """A non-DuckDB connection for `build_dataset` (e.g. `cacicd.data.pg.PgQuery`): SQL -> DataFrame, DataError on failure."""

    def fetch_df(self, sql: str, what: str, params=None) -> pd.DataFrame: ...


def query(con: duckdb.DuckDBPyConnection | Queryable, sql: str, what: str, params=None) -> pd.DataFrame:
    """Run SQL and return a DataFrame; a DuckDB error becomes a DataError saying what failed."""
    if not isinstance(con, duckdb.DuckDBPyConnection):
        return con.fetch_df(sql, what, params)
    try:
        return con.execute(sql, params).df() if params else con.execute(sql).df()
    except duckdb.Error as e:
        raise DataError(f"{what}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def _execute(con: duckdb.DuckDBPyConnection, sql: str, what: str) -> None:
    try:
        con.execute(sql)
    except duckdb.Error as e:
        raise DataError(f"{what}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def _examples(con, sql: str, what: str) -> str:
    vals = query(con, sql, what).iloc[:, 0].tolist()
    return ", ".join(repr(v) for v in vals)


def register_file(con: duckdb.DuckDBPyConnection, path: Path, table: str, columns: Sequence[Col]) -> int:
    """Validate one table file and load it as the typed table `table`; returns its row count."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (table {table} needs a header and rows)")
    raw = f"_raw_{table}"
    if path.name.lower().endswith(".parquet"):
        _execute(con, f"CREATE OR REPLACE TABLE {raw} AS SELECT * FROM read_parquet({_sql_str(str(path))})",
                 f"{path}: cannot read table {table}")
    else:
        delim, names = csv_header(path)
        cols = "{" + ", ".join(f"{_sql_str(n)}: 'VARCHAR'" for n in names) + "}"
        src = (f"read_csv({_sql_str(str(path))}, header=true, auto_detect=false, columns={cols}, "
               f"""delim={_sql_str(delim)}, quote='"', escape='"')""")
        try:
            con.execute(f"CREATE OR REPLACE TABLE {raw} AS SELECT * FROM {src}")
        except duckdb.Error as e:
            raise csv_error(path, table, str(e), delim) from None
    desc = query(con, f"DESCRIBE {raw}", f"{path}: cannot read the columns of table {table}")
    actual = {str(n).strip().lower(): (str(n), str(t).upper()) for n, t in zip(desc["column_name"], desc["column_type"])}
    n_rows = int(query(con, f"SELECT count(*) AS n FROM {raw}", f"{path}: cannot count rows").iloc[0, 0])
    missing = [c.name for c in columns if c.required and c.name not in actual]
    if missing:
        raise DataError(f"{path}: table {table} lacks column(s) {', '.join(missing)} "
                        f"(found: {', '.join(list(actual)[:30])})")
    selects = []
    for c in columns:
        if c.name not in actual:
            sqltype = {"int": "BIGINT", "date": "DATE", "datetime": "TIMESTAMP", "str": "VARCHAR"}[c.kind]
            selects.append(f"CAST(NULL AS {sqltype}) AS {c.name}")
            continue
        name, dtype = actual[c.name]
        expr, bad = _typed_expr(_ident(name), dtype, c.kind, path, table, c.name)
        if bad is not None:
            n_bad = int(query(con, f"SELECT count(*) FROM {raw} WHERE {bad}", f"{path}: checking {c.name}").iloc[0, 0])
            if n_bad:
                ex = _examples(con, f"SELECT DISTINCT CAST({_ident(name)} AS VARCHAR) FROM {raw} WHERE {bad} LIMIT 3",
                               f"{path}: examples of {c.name}")
                what = {"int": "not integers", "date": "not dates", "datetime": "not date-times"}[c.kind]
                raise DataError(f"{path}: column {c.name}: {n_bad} value(s) are {what} (e.g. {ex})")
        if c.not_null:
            n_null = int(query(con, f"SELECT count(*) FROM {raw} WHERE {_ident(name)} IS NULL",
                               f"{path}: checking {c.name}").iloc[0, 0])
            if n_null:
                raise DataError(f"{path}: column {c.name}: {n_null} empty value(s) in a column that needs one in every row")
        selects.append(f"{expr} AS {c.name}")
    _execute(con, f"CREATE OR REPLACE TABLE {table} AS SELECT {', '.join(selects)} FROM {raw}",
             f"{path}: cannot type table {table}")
    _execute(con, f"DROP TABLE {raw}", f"{path}: cleaning up")
    return n_rows


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _not_utf8(path: Path, data: bytes, line: int, offset: int) -> DataError:
    """The error for a line of `path` that is not UTF-8 (`data`: that line, at byte `offset` of the file)."""
    try:
        data.decode("utf-8")
        return DataError(f"{path}: line {line} is not UTF-8")
    except UnicodeDecodeError as e:
        at, byte = offset + e.start, data[e.start]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) and line == 1:
        guess = "UTF-16 (it starts with a UTF-16 byte-order mark)"
    else:
        guess = "probably Latin-1 or Windows-1252"
    return DataError(f"{path}: line {line} (byte {at:,} of the file) holds byte 0x{byte:02x}, which is not UTF-8: "
                     f"the file's encoding is not UTF-8 ({guess}); convert it to UTF-8, "
                     "e.g. iconv -f WINDOWS-1252 -t UTF-8")


def csv_header(path: Path) -> tuple[str, list[str]]:
    """(delimiter, column names) of a CSV file, from its header line, once the file's ends are checked.

    The delimiter is the one of , tab ; | the header holds most. Refused with a DataError naming the
    file: a header that is not UTF-8, a compressed file that cannot be opened, and an uncompressed
    file that does not end with a line break (cut short).
    """
    try:
        with _open_bytes(path) as f:
            head = f.readline(1 << 20)
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read the file: {e}") from None
    try:
        text = head.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise _not_utf8(path, head, 1, 0) from None
    if not path.name.lower().endswith(".gz"):
        with open(path, "rb") as f:
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                f.seek(0)
                n = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 22), b"")) + 1
                raise DataError(f"{path}: the file does not end with a line break, so its last line (line {n:,}) "
                                "may be cut short (an interrupted copy or download?); copy it again, or, if it is "
                                "complete, add a line break at its end")
    counts = {d: text.count(d) for d in CSV_DELIMITERS}
    delim = max(CSV_DELIMITERS, key=lambda d: counts[d]) if max(counts.values()) else ","
    names = [n if n.strip() else f"column{i}" for i, n in enumerate(next(csv.reader([text], delimiter=delim)))]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{path}: the header line names column(s) {', '.join(dupes)} more than once")
    return delim, names


def csv_error(path: Path, table: str, error: str, delim: str) -> DataError:
    """A DuckDB error reading a CSV file as a DataError naming file, line and cause (not the line's content)."""
    first = error.strip().splitlines()[0] if error.strip() else error
    if "not utf-8 encoded" in error.lower() or "invalid unicode" in error.lower():
        with _open_bytes(path) as f:
            offset = 0
            for i, data in enumerate(f, start=1):
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    return _not_utf8(path, data, i, offset)
                offset += len(data)
        return DataError(f"{path}: the file is not UTF-8 ({first})")
    if "gzip" in error.lower():
        return DataError(f"{path}: the compressed file is damaged or cut short ({first}); copy it again")
    m = re.search(r"CSV Error on Line: (\d+)", error)
    if not m:
        return DataError(f"{path}: cannot read table {table}: {first}")
    cols = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", error)
    if cols:
        why = f"{cols.group(2)} field(s) where the header has {cols.group(1)}"
    elif "unterminated quote" in error.lower():
        why = "a quoted value is not closed"
    else:
        why = next((ln.strip() for ln in error.splitlines()[2:] if ln.strip()), first)
    sep = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}[delim]
    return DataError(f"{path}: line {m.group(1)}: {why} ({sep}-separated, as read from the header); "
                     "the file is damaged or cut short: fix that line or copy the file again")


def _typed_expr(col: str, dtype: str, kind: str, path: Path, table: str, name: str) -> tuple[str, str | None]:
    """(SQL expression of the typed column, SQL condition of a bad value or None)."""
    ints = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")
    if kind == "str":
        return f"CAST({col} AS VARCHAR)", None
    if kind == "int":
        if dtype in ints:
            return f"CAST({col} AS BIGINT)", None
        if dtype in ("FLOAT", "DOUBLE") or dtype.startswith("DECIMAL"):
            return f"CAST({col} AS BIGINT)", f"{col} IS NOT NULL AND ({col} <> trunc({col}) OR abs({col}) > 9.2e18)"
        if dtype == "VARCHAR":
            return (f"CAST(trim({col}) AS BIGINT)",
                    f"{col} IS NOT NULL AND (NOT regexp_full_match(trim({col}), '[+-]?[0-9]{{1,19}}') "
                    f"OR TRY_CAST(trim({col}) AS BIGINT) IS NULL)")
        raise DataError(f"{path}: column {name} of table {table} has type {dtype}, expected integers")
    if kind in ("date", "datetime"):
        out = "DATE" if kind == "date" else "TIMESTAMP"
        if dtype.startswith(("DATE", "TIMESTAMP")):
            return f"CAST({col} AS {out})", None
        if dtype == "VARCHAR":
            parsed = f"coalesce(TRY_CAST(trim({col}) AS TIMESTAMP), CAST(TRY_CAST(trim({col}) AS DATE) AS TIMESTAMP))"
            return f"CAST({parsed} AS {out})", f"{col} IS NOT NULL AND trim({col}) <> '' AND {parsed} IS NULL"
        raise DataError(f"{path}: column {name} of table {table} has type {dtype}, expected dates")
    raise ValueError(kind)


def register_folder(con: duckdb.DuckDBPyConnection, folder: str | Path) -> dict[str, Path]:
    """Load every OMOP table file of `folder` as a typed table; returns {table: file}."""
    files = find_tables(folder)
    missing = [t for t in REQUIRED_TABLES if t not in files]
    if missing:
        raise DataError(f"{folder}: missing table(s) {', '.join(missing)} "
                        f"(looked for <table>{'|'.join(SUFFIXES)}; found {', '.join(sorted(files)) or 'none'})")
    big = sum(p.stat().st_size for p in files.values()) > 50e6
    for table, path in tqdm(files.items(), desc="reading OMOP tables", disable=not big, leave=False):
        n = register_file(con, path, table, SCHEMA[table])
        if n == 0 and table in REQUIRED_TABLES + ("concept", "concept_ancestor"):
            raise DataError(f"{path}: table {table} is empty (0 rows)")
        log.debug("%s: %d rows", path, n)
    return files


# ---------------------------------------------------------------- ICD version of source codes


def classify_icd(codes: Sequence, vocabularies: Sequence, visits: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """ICD version of each (visit, normalized code, source vocabulary) row; see the module docstring.

    Returns (kind, ambiguous): kind[i] in {"icd9", "icd10", "other", "missing"}; ambiguous[i] True
    where the code's shape fits both ICD-9-CM and ICD-10 and no vocabulary decided.
    """
    n = len(codes)
    kind = np.empty(n, dtype=object)
    ambiguous = np.zeros(n, dtype=bool)
    memo: dict = {}
    for i, (c, v) in enumerate(zip(codes, vocabularies)):
        v = None if _isnull(v) or str(v) in ("", "None") else str(v)
        c = None if _isnull(c) or c == "" else c
        if (c, v) not in memo:
            if c is None:
                memo[c, v] = "missing"
            elif v is not None:
                memo[c, v] = "icd9" if v in ICD9_VOCABS else "icd10" if v in ICD10_VOCABS else "other"
            else:
                s9, s10 = bool(ICD9_SHAPE.match(c)), bool(ICD10_SHAPE.match(c))
                memo[c, v] = None if s9 and s10 else "icd9" if s9 else "icd10" if s10 else "other"
        kind[i] = memo[c, v]
        ambiguous[i] = kind[i] is None
    if ambiguous.any():
        visits = np.asarray(visits)
        vis9 = set(visits[kind == "icd9"].tolist())
        vis10 = set(visits[kind == "icd10"].tolist())
        for i in np.flatnonzero(ambiguous):
            has9, has10 = visits[i] in vis9, visits[i] in vis10
            if has9 != has10:
                kind[i] = "icd9" if has9 else "icd10"
            else:
                kind[i] = "icd9" if icd9.is_known(codes[i]) else "icd10"
    return kind, ambiguous


# ---------------------------------------------------------------- the dataset


def _int_filter(column: str, value) -> str:
    """SQL condition `column = v` / `IN (...)` / TRUE for None, from validated integers."""
    if value is None:
        return "TRUE"
    vals = [value] if isinstance(value, (int, np.integer)) else list(value)
    try:
        ints = [int(v) for v in vals]
    except (TypeError, ValueError):
        raise ValueError(f"{column} filter must be integers or None, got {value!r}") from None
    if any(i != v for i, v in zip(ints, vals)) or not ints:
        raise ValueError(f"{column} filter must be a non-empty list of integers or None, got {value!r}")
    return f"{column} IN ({', '.join(str(i) for i in ints)})"


def _birth_days(df: pd.DataFrame, where: str) -> np.ndarray:
    """Birth date of each row as days since 1970-01-01 (int64)."""
    out = np.empty(len(df), dtype=np.int64)
    bdt = df["birth_date"].to_numpy(dtype=object)
    year = df["year_of_birth"].to_numpy(dtype=object)
    month = df["month_of_birth"].to_numpy(dtype=object)
    day = df["day_of_birth"].to_numpy(dtype=object)
    bad = []
    for i in range(len(df)):
        b = bdt[i]
        try:
            if isinstance(b, str) and b:
                out[i] = np.datetime64(b[:10], "D").astype(np.int64)
                continue
            y, m, d = year[i], month[i], day[i]
            if _isnull(y):
                raise ValueError("no year")
            m = 1 if _isnull(m) else int(m)
            d = 1 if _isnull(d) else int(d)
            out[i] = np.datetime64(f"{int(y):04d}-{m:02d}-{d:02d}", "D").astype(np.int64)
        except ValueError:
            bad.append(i)
    if bad:
        pid = df["person_id"].to_numpy()
        persons = sorted(set(pid[bad].tolist()))
        first = {p: i for i in reversed(bad) for p in [pid[i]]}
        ex = ", ".join(f"person {p}: {year[first[p]]}-{month[first[p]]}-{day[first[p]]}" for p in persons[:3])
        raise DataError(f"{where}: {len(persons)} person(s) with no valid birth date in birth_datetime nor "
                        f"year/month/day_of_birth (e.g. {ex})")
    return out


def _n(x) -> int:
    """An SQL count or sum as int (NULL -> 0)."""
    return 0 if _isnull(x) else int(x)


def _isnull(x) -> bool:
    return x is None or x is pd.NA or x is pd.NaT or (isinstance(x, float) and np.isnan(x))


def stay_type_of(newborn: bool, surgical: bool, any_service: bool) -> str:
    """The authors' stay type from a stay's visit_detail rows: newborn > surgical > medical; none -> unknown."""
    return "newborn" if newborn else "surgical" if surgical else "medical" if any_service else "unknown"


def _summary(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=float)
    if len(x) == 0:
        return {"mean": float("nan"), "median": float("nan")}
    return {"mean": round(float(x.mean()), 4), "median": float(np.median(x))}


def assemble(visit_ids: np.ndarray, person_ids: np.ndarray, sex: np.ndarray, age_years: np.ndarray,
             stay_type: np.ndarray, pairs_drug: tuple[np.ndarray, np.ndarray], drug_prefix: str,
             pairs_code: tuple[np.ndarray, np.ndarray], source: str, report: dict) -> Dataset:
    """Build the Dataset from per-stay arrays and (visit id, key) pairs of drugs and ICD-9 codes.

    pairs_drug: (visit ids, integer or string keys); pairs_code: (visit ids, normalized ICD-9 codes,
    all known to the hierarchy). Adds feature/label counts to `report` (in place).
    """
    n = len(visit_ids)
    row_of = pd.Index(visit_ids)
    # features
    dv, dk = pairs_drug
    keys = np.unique(np.asarray(dk)) if len(dk) else np.array([], dtype=object)
    key_index = pd.Index(keys)
    r = row_of.get_indexer(np.asarray(dv))
    c = key_index.get_indexer(np.asarray(dk))
    if len(r) and ((r < 0).any() or (c < 0).any()):
        raise AssertionError("drug pair of an unknown visit or key")
    drugs = sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(n, len(keys)))
    drugs.sum_duplicates()
    drugs.data[:] = 1.0
    age = np.clip(np.asarray(age_years, dtype=float), 0.0, AGE_MAX) / AGE_MAX
    demo = sp.csr_matrix(np.column_stack([np.asarray(sex, dtype=np.float32), age.astype(np.float32)]))
    X = sp.hstack([demo, drugs], format="csr", dtype=np.float32)
    X.eliminate_zeros()
    features = ["sex", "age"] + [f"{drug_prefix}{k}" for k in keys.tolist()]
    # labels
    cv, cc = pairs_code
    observed = sorted(set(np.asarray(cc).tolist()))
    universe = sorted(icd9.rollup(observed)) if observed else []
    cidx = pd.Index(universe)
    rr = row_of.get_indexer(np.asarray(cv))
    cc_i = cidx.get_indexer(np.asarray(cc, dtype=object))
    if len(rr) and ((rr < 0).any() or (cc_i < 0).any()):
        raise AssertionError("code pair of an unknown visit or code")
    P = sp.csr_matrix((np.ones(len(rr), dtype=np.float32), (rr, cc_i)), shape=(n, len(universe)))
    if universe:
        Y = (P @ icd9.ancestor_matrix(universe)).tocsr()
    else:
        Y = P
    Y.data[:] = 1
    Y = Y.astype(np.uint8)
    Y.eliminate_zeros()
    Y.sort_indices()
    n_ing = np.diff(drugs.indptr)
    n_codes = np.diff(Y.indptr)
    report.update({
        "stays": int(n),
        "persons": int(len(np.unique(person_ids))),
        "ingredients": int(len(keys)),
        "stays_without_drugs": int((n_ing == 0).sum()),
        "stays_with_drugs": int((n_ing > 0).sum()),
        "ingredients_per_stay_with_drugs": _summary(n_ing[n_ing > 0]),
        "stays_without_diagnoses": int((n_codes == 0).sum()),
        "codes_observed": int(len(observed)),
        "codes": int(len(universe)),
        "stay_types": {t: int((np.asarray(stay_type) == t).sum()) for t in ("newborn", "surgical", "medical", "unknown")},
        "age_over_89_clipped": int((np.asarray(age_years) > AGE_MAX).sum()),
        "age_negative_clipped": int((np.asarray(age_years) < 0).sum()),
    })
    return Dataset(X, Y, features, list(universe), np.asarray(visit_ids, dtype=np.int64),
                   np.asarray(person_ids, dtype=np.int64), np.asarray(stay_type, dtype=object), source, report)


def code_pairs(visits: np.ndarray, codes: np.ndarray, vocabularies: np.ndarray, n_rows: np.ndarray,
               report: dict) -> tuple[np.ndarray, np.ndarray]:
    """Keep the known ICD-9-CM (visit, code) pairs; count the rest into `report` (in place)."""
    codes = np.asarray(codes, dtype=object)
    visits = np.asarray(visits)
    n_rows = np.asarray(n_rows, dtype=np.int64)
    kind, amb = classify_icd(codes, vocabularies, visits)
    is9 = kind == "icd9"
    known_code = {c: icd9.is_known(c) for c in set(codes[is9].tolist())}
    known = np.array([known_code[c] if k else False for c, k in zip(codes, is9)], dtype=bool)
    unknown = sorted(set(codes[is9 & ~known].tolist()))
    report.update({
        "condition_rows_icd9": int(n_rows[is9].sum()),
        "condition_rows_icd10": int(n_rows[kind == "icd10"].sum()),
        "condition_rows_other_vocabulary": int(n_rows[kind == "other"].sum()),
        "condition_rows_no_source_value": int(n_rows[kind == "missing"].sum()),
        "condition_rows_ambiguous_icd9_icd10": int(n_rows[amb].sum()),
        "condition_rows_ambiguous_read_as_icd9": int(n_rows[amb & is9].sum()),
        "condition_rows_icd9_unknown": int(n_rows[is9 & ~known].sum()),
        "codes_unknown_icd9": len(unknown),
        "codes_unknown_icd9_list": unknown[:UNKNOWN_CODES_SHOWN],
        "codes_not_icd9": int(len(set(codes[(kind == "icd10") | (kind == "other")].tolist()))),
        "codes_not_icd9_examples": sorted(set(codes[(kind == "icd10") | (kind == "other")].tolist()))[:20],
    })
    if unknown:
        log.warning("%d distinct code(s) unknown to ICD-9-CM dropped: %s", len(unknown), ", ".join(unknown[:10]))
    keep = is9 & known
    norm = {c: icd9.normalize(c) for c in known_code}
    kept_codes = np.array([norm[c] for c in codes[keep]], dtype=object)
    return visits[keep], kept_codes


def check_unique(con: duckdb.DuckDBPyConnection | Queryable, table: str, col: str, source: str, where: str) -> None:
    """Raise DataError (prefixed by `where`) when `table`.`col` holds an id more than once."""
    dup = query(con, f"SELECT {col} FROM {table} GROUP BY {col} HAVING count(*) > 1 ORDER BY {col}",
                f"{source}: checking {table}")
    if len(dup):
        raise DataError(f"{where}: column {col}: {len(dup)} id(s) appear more than once "
                        f"(e.g. {', '.join(str(x) for x in dup[col][:3])})")


def check_mapping(tables: Sequence[str], ingredient_mapping: str, source: str) -> None:
    """Raise unless `ingredient_mapping` is known and its vocabulary tables are among `tables`."""
    if ingredient_mapping not in ("concept_ancestor", "drug_concept"):
        raise ValueError(f"ingredient_mapping must be 'concept_ancestor' or 'drug_concept', got {ingredient_mapping!r}")
    if ingredient_mapping == "concept_ancestor":
        lacking = [t for t in ("concept_ancestor", "concept") if t not in tables]
        if lacking:
            raise DataError(f"{source}: no {' and no '.join(lacking)} table, so drugs cannot be mapped to RxNorm "
                            "ingredients; add the OMOP vocabulary tables concept and concept_ancestor, or load with "
                            "ingredient_mapping='drug_concept' (drug concepts used directly as features)")


def build_dataset(con: duckdb.DuckDBPyConnection | Queryable, tables: Sequence[str], source: str = "",
                  drug_type_concept_id: int | Sequence[int] | None = PRESCRIPTION_WRITTEN,
                  ingredient_mapping: str = "concept_ancestor",
                  visit_concept_id: int | Sequence[int] | None = None) -> Dataset:
    """Run the aggregating SQL on the typed tables of `con` (DuckDB, or PostgreSQL through `cacicd.data.pg`) -> Dataset.

    tables: the OMOP tables present. Only aggregates leave the database: one row per stay, the
    distinct (visit, ingredient) and (visit, code) pairs, and counts.
    """
    tables = set(tables)
    check_mapping(tables, ingredient_mapping, source)
    fmt = {"visit_filter": _int_filter("visit_concept_id", visit_concept_id),
           "type_filter": _int_filter("drug_type_concept_id", drug_type_concept_id)}
    report: dict = {"source": source, "ingredient_mapping": ingredient_mapping,
                    "drug_type_concept_id": drug_type_concept_id, "visit_concept_id": visit_concept_id}

    # stays, persons, sex, age
    for table, col in (("visit_occurrence", "visit_occurrence_id"), ("person", "person_id")):
        check_unique(con, table, col, source, f"{source}: {table}")
    v = query(con, SQL_VISITS.format(**fmt), f"{source}: reading visit_occurrence and person")
    if len(v) == 0:
        raise DataError(f"{source}: no visit_occurrence rows" + (f" with visit_concept_id {visit_concept_id}" if visit_concept_id is not None else ""))
    vid = v["visit_occurrence_id"].to_numpy(dtype=np.int64)
    orphan = v["known_person"].isna().to_numpy()
    if orphan.any():
        raise DataError(f"{source}: visit_occurrence: column person_id: {int(orphan.sum())} visit(s) refer to a "
                        f"person missing from person (e.g. {', '.join(str(x) for x in v['person_id'][orphan][:3])})")
    start = np.array([np.datetime64(s[:10], "D") for s in v["start_date"]]).astype(np.int64)
    age_years = (start - _birth_days(v, f"{source}: person")) / 365.25
    gender = v["gender_concept_id"].to_numpy(dtype=object)
    sex = np.array([0 if _isnull(g) else int(g) == FEMALE for g in gender], dtype=np.float32)
    report["gender_missing"] = int(sum(_isnull(g) for g in gender))
    other = pd.Series([int(g) for g in gender if not _isnull(g) and int(g) not in (MALE, FEMALE)], dtype=np.int64)
    report["gender_other"] = int(len(other))
    report["gender_other_concepts"] = {str(k): int(n) for k, n in other.value_counts().sort_index().items()}
    if len(other) or report["gender_missing"]:
        log.warning("%s: person: %d stay(s) with a gender_concept_id other than %d (male) or %d (female) (%s) and %d "
                    "without one: their sex feature reads 0, as for males", source, len(other), MALE, FEMALE,
                    ", ".join(f"{k}: {n}" for k, n in report["gender_other_concepts"].items()) or "none",
                    report["gender_missing"])
    report["visit_occurrence_rows"] = int(len(v))

    # stay type
    if "visit_detail" in tables:
        st = query(con, SQL_STAY_SERVICE.format(newborn=", ".join(_sql_str(s) for s in NEWBORN_SERVICES),
                                                surgical=", ".join(_sql_str(s) for s in SURGICAL_SERVICES)),
                   f"{source}: reading visit_detail")
        svc = {int(v): (bool(a), bool(b), bool(c)) for v, a, b, c in
               zip(st["visit_occurrence_id"], st["newborn"], st["surgical"], st["any_service"])}
        stay_type = np.array([stay_type_of(*svc.get(int(x), (False, False, False))) for x in vid], dtype=object)
        report["stays_without_visit_detail"] = int(sum(int(x) not in svc for x in vid))
    else:
        stay_type = np.array(["unknown"] * len(vid), dtype=object)
        report["stays_without_visit_detail"] = int(len(vid))
        report["stay_type_note"] = "no visit_detail table: every stay type is 'unknown'"

    # drugs
    types = query(con, SQL_DRUG_TYPES, f"{source}: reading drug_exposure")
    by_type = {("null" if _isnull(t) else str(int(t))): int(n) for t, n in zip(types["drug_type_concept_id"], types["n"])}
    counts = query(con, SQL_DRUG_COUNTS.format(**fmt), f"{source}: counting drug_exposure rows").iloc[0]
    total = int(sum(by_type.values()))
    type_kept = _n(counts["type_kept"])
    report.update({
        "drug_rows": total,
        "drug_rows_by_type": by_type,
        "drug_rows_type_kept": type_kept,
        "drug_rows_type_filtered": total - type_kept,
        "drug_rows_concept_0": _n(counts["concept_0"]),
        "drug_rows_no_visit": _n(counts["no_visit"]),
        "drug_rows_other_visit": _n(counts["other_visit"]),
    })
    if total and type_kept == 0:
        raise DataError(f"{source}: drug_exposure: column drug_type_concept_id: no row of type {drug_type_concept_id} "
                        f"among {total} rows (types present: {by_type}); pass drug_type_concept_id=<one of these> "
                        "or None to keep every type")
    if ingredient_mapping == "concept_ancestor":
        pairs = query(con, SQL_VISIT_INGREDIENT.format(**fmt), f"{source}: mapping drugs to ingredients")
        un = query(con, SQL_UNMAPPED_DRUGS.format(**fmt), f"{source}: counting unmapped drugs").iloc[0]
        report["drug_concepts_without_ingredient"] = _n(un["concepts"])
        report["drug_rows_without_ingredient"] = _n(un["n_rows"])
        prefix = "rxnorm:"
    else:
        pairs = query(con, SQL_VISIT_DRUG.format(**fmt), f"{source}: reading drugs")
        prefix = "drug:"
    pairs_drug = (pairs["visit_occurrence_id"].to_numpy(dtype=np.int64), pairs["ingredient_id"].to_numpy(dtype=np.int64))

    # diagnoses
    cc = query(con, SQL_CONDITION_COUNTS.format(**fmt), f"{source}: counting condition_occurrence rows").iloc[0]
    report.update({"condition_rows": _n(cc["n"]), "condition_rows_no_visit": _n(cc["no_visit"]),
                   "condition_rows_other_visit": _n(cc["other_visit"])})
    if "concept" in tables:
        vocab, join = "c.vocabulary_id", "LEFT JOIN concept c ON c.concept_id = co.condition_source_concept_id"
    else:
        vocab, join = "CAST(NULL AS VARCHAR)", ""
    report["icd_version_rule"] = ("condition_source_concept_id vocabulary, else code shape" if "concept" in tables
                                  else "code shape (no concept table), ambiguous V/E codes resolved by the stay")
    vc = query(con, SQL_VISIT_CODE.format(vocabulary=vocab, concept_join=join, **fmt), f"{source}: reading diagnoses")
    pairs_code = code_pairs(vc["visit_occurrence_id"].to_numpy(dtype=np.int64), vc["code"].to_numpy(dtype=object),
                            vc["vocabulary"].to_numpy(dtype=object), vc["n_rows"].to_numpy(), report)
    ds = assemble(vid, v["person_id"].to_numpy(dtype=np.int64), sex, age_years, stay_type, pairs_drug, prefix,
                  pairs_code, source, report)
    log.info("%s: %d stays, %d ingredients, %d codes", source, ds.n_stays, len(ds.features) - 2, len(ds.codes))
    return ds


def load_omop(folder: str | Path, drug_type_concept_id: int | Sequence[int] | None = PRESCRIPTION_WRITTEN,
              ingredient_mapping: str = "concept_ancestor",
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


# ---------------------------------------------------------------- cache

_HASHES: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (memoized per process on path, size and mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def cache_key(files: dict[str, Path], options: dict, kind: str = LOADER_VERSION) -> str:
    """A key over the loader version, the options and the bytes of every input file."""
    h = hashlib.sha256()
    h.update(json.dumps({"loader": kind, "options": options}, sort_keys=True, default=str).encode())
    for table in sorted(files):
        h.update(f"{table}:{files[table].name}:{file_sha256(files[table])}\n".encode())
    return h.hexdigest()[:24]


def cached(cache_dir: str | Path, key: str, build) -> Dataset:
    """The dataset stored under cache_dir/key, built by `build()` and saved when absent."""
    folder = Path(cache_dir) / key
    with file_lock(Path(cache_dir) / f"{key}.lock"):
        if (folder / "meta.json").exists():
            try:
                ds = Dataset.load(folder)
                log.info("dataset read from cache %s", folder)
                return ds
            except Exception as e:  # a damaged cache entry is rebuilt
                log.warning("%s; rebuilding it", e if isinstance(e, Damaged) else f"cache {folder} unreadable ({e})")
        ds = build()
        ds.save(folder)
        return ds


def load_omop_cached(folder: str | Path, cache_dir: str | Path, **options) -> Dataset:
    """`load_omop` cached on disk under cache_dir, keyed by the input files' bytes and the options."""
    folder = Path(folder).resolve()
    opts = {"drug_type_concept_id": PRESCRIPTION_WRITTEN, "ingredient_mapping": "concept_ancestor",
            "visit_concept_id": None}
    unknown = set(options) - set(opts)
    if unknown:
        raise TypeError(f"load_omop_cached got unknown option(s) {sorted(unknown)}; known: {sorted(opts)}")
    opts.update(options)
    key = cache_key(find_tables(folder), opts)
    return cached(Path(cache_dir) / "omop", key, lambda: load_omop(folder, **opts))
