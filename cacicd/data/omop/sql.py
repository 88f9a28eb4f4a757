"""The loader's SQL: the aggregating statements (plain SQL that DuckDB and PostgreSQL both accept) and `query`."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import duckdb
import numpy as np
import pandas as pd

from cacicd.data.omop.schema import DataError

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

# ---------------------------------------------------------------- helpers


def sql_str(s: str) -> str:
    """A SQL string literal of `s` (single quotes doubled)."""
    return "'" + str(s).replace("'", "''") + "'"


def sql_list(values: Iterable[str]) -> str:
    """Comma-separated SQL string literals, for an IN (...) list."""
    return ", ".join(sql_str(v) for v in values)


def ident(s: str) -> str:
    """A quoted SQL identifier."""
    return '"' + s.replace('"', '""') + '"'


def isnull(x) -> bool:
    """True for an SQL NULL as read into pandas (None, NA, NaT, NaN)."""
    return x is None or x is pd.NA or x is pd.NaT or (isinstance(x, float) and np.isnan(x))


def int_filter(column: str, value) -> str:
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


def execute(con: duckdb.DuckDBPyConnection, sql: str, what: str) -> None:
    """Run one DuckDB statement; an error becomes a DataError saying what failed."""
    try:
        con.execute(sql)
    except duckdb.Error as e:
        raise DataError(f"{what}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
