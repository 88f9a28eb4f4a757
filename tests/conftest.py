"""Shared fixtures: a tiny hand-built OMOP CDM folder whose dataset is worked out by hand."""
from __future__ import annotations

import copy
import gzip
import os
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

BIG = -5779522865065417426  # a large signed 64-bit visit id, as in real ETL exports

# Hand-worked expectations are written next to each row.
TINY: dict[str, list[dict]] = {
    "person": [
        {"person_id": 1, "gender_concept_id": 8532, "year_of_birth": 1950, "month_of_birth": 6,
         "day_of_birth": 15, "birth_datetime": "1950-06-15 00:00:00"},
        {"person_id": 2, "gender_concept_id": 8507, "year_of_birth": 2000, "month_of_birth": None,
         "day_of_birth": None, "birth_datetime": None},  # born 2000-01-01
        {"person_id": 3, "gender_concept_id": 8532, "year_of_birth": 1900, "month_of_birth": 3,
         "day_of_birth": None, "birth_datetime": None},  # 110 years at visit: clipped to 89
    ],
    "visit_occurrence": [
        {"visit_occurrence_id": 10, "person_id": 1, "visit_concept_id": 9201, "visit_start_date": "2000-06-15"},
        {"visit_occurrence_id": 11, "person_id": 1, "visit_concept_id": 9201, "visit_start_date": "2001-01-01"},
        {"visit_occurrence_id": BIG, "person_id": 2, "visit_concept_id": 9201, "visit_start_date": "2000-01-01"},
        {"visit_occurrence_id": 30, "person_id": 3, "visit_concept_id": 9201, "visit_start_date": "2010-03-01"},
        {"visit_occurrence_id": 40, "person_id": 2, "visit_concept_id": 9202, "visit_start_date": "2005-07-01"},
    ],
    "visit_detail": [
        {"visit_detail_id": 1, "visit_occurrence_id": 10, "visit_detail_start_date": "2000-06-16",
         "visit_detail_source_value": "CSURG"},
        {"visit_detail_id": 2, "visit_occurrence_id": 10, "visit_detail_start_date": "2000-06-15",
         "visit_detail_source_value": "MED"},  # a surgical row among others: surgical (the authors' rule)
        {"visit_detail_id": 3, "visit_occurrence_id": 11, "visit_detail_start_date": "2001-01-01",
         "visit_detail_source_value": "XYZ"},  # not a service code: medical
        {"visit_detail_id": 4, "visit_occurrence_id": BIG, "visit_detail_start_date": "2000-01-01",
         "visit_detail_source_value": "NB"},  # newborn, whatever the other rows
        {"visit_detail_id": 7, "visit_occurrence_id": BIG, "visit_detail_start_date": "2000-01-02",
         "visit_detail_source_value": "SURG"},
        {"visit_detail_id": 5, "visit_occurrence_id": 30, "visit_detail_start_date": "2010-03-01",
         "visit_detail_source_value": "ward 5"},
        {"visit_detail_id": 6, "visit_occurrence_id": 30, "visit_detail_start_date": "2010-03-02",
         "visit_detail_source_value": "SURG"},  # surgical
    ],  # visit 40: no row -> unknown
    "drug_exposure": [
        {"drug_exposure_id": 1, "visit_occurrence_id": 10, "drug_concept_id": 2000, "drug_type_concept_id": 38000177},
        {"drug_exposure_id": 2, "visit_occurrence_id": 10, "drug_concept_id": 2000, "drug_type_concept_id": 38000177},
        {"drug_exposure_id": 3, "visit_occurrence_id": 10, "drug_concept_id": 0, "drug_type_concept_id": 38000177},
        {"drug_exposure_id": 4, "visit_occurrence_id": 10, "drug_concept_id": 2001, "drug_type_concept_id": 38000180},
        {"drug_exposure_id": 5, "visit_occurrence_id": 11, "drug_concept_id": 1002, "drug_type_concept_id": 38000177},
        {"drug_exposure_id": 6, "visit_occurrence_id": 11, "drug_concept_id": 2002, "drug_type_concept_id": 38000177},
        {"drug_exposure_id": 7, "visit_occurrence_id": BIG, "drug_concept_id": 2001, "drug_type_concept_id": 38000177},
        {"drug_exposure_id": 8, "visit_occurrence_id": None, "drug_concept_id": 2000, "drug_type_concept_id": 38000177},
    ],
    "condition_occurrence": [
        {"visit_occurrence_id": 10, "condition_source_value": "038.9", "condition_source_concept_id": 0},
        {"visit_occurrence_id": 10, "condition_source_value": "0389   ", "condition_source_concept_id": 0},
        {"visit_occurrence_id": 10, "condition_source_value": "401.9", "condition_source_concept_id": 9001},
        {"visit_occurrence_id": 11, "condition_source_value": "I10", "condition_source_concept_id": 9002},
        {"visit_occurrence_id": 11, "condition_source_value": "E119", "condition_source_concept_id": 0},
        {"visit_occurrence_id": 11, "condition_source_value": "SR (Sinus Rhythm)", "condition_source_concept_id": 0},
        {"visit_occurrence_id": BIG, "condition_source_value": "V3000  ", "condition_source_concept_id": 0},
        {"visit_occurrence_id": BIG, "condition_source_value": "7742", "condition_source_concept_id": 0},
        {"visit_occurrence_id": 30, "condition_source_value": "99999", "condition_source_concept_id": 0},
        {"visit_occurrence_id": 30, "condition_source_value": "E849.0", "condition_source_concept_id": 0},
    ],
    "concept": [
        {"concept_id": 1000, "vocabulary_id": "RxNorm", "concept_class_id": "Ingredient"},
        {"concept_id": 1001, "vocabulary_id": "RxNorm", "concept_class_id": "Ingredient"},
        {"concept_id": 1002, "vocabulary_id": "RxNorm", "concept_class_id": "Ingredient"},
        {"concept_id": 2000, "vocabulary_id": "RxNorm", "concept_class_id": "Clinical Drug"},
        {"concept_id": 2001, "vocabulary_id": "RxNorm", "concept_class_id": "Clinical Drug"},
        {"concept_id": 2002, "vocabulary_id": "RxNorm", "concept_class_id": "Clinical Drug"},
        {"concept_id": 3000, "vocabulary_id": "ATC", "concept_class_id": "ATC 4th"},
        {"concept_id": 9001, "vocabulary_id": "ICD9CM", "concept_class_id": "4-dig billing code"},
        {"concept_id": 9002, "vocabulary_id": "ICD10CM", "concept_class_id": "3-char billing code"},
    ],
    "concept_ancestor": [
        {"ancestor_concept_id": 1000, "descendant_concept_id": 2000},
        {"ancestor_concept_id": 1001, "descendant_concept_id": 2000},
        {"ancestor_concept_id": 3000, "descendant_concept_id": 2000},  # not an ingredient
        {"ancestor_concept_id": 1002, "descendant_concept_id": 2001},
    ],
}
# Expected: drugs per visit (ingredients), ICD-9 leaves per visit, stay types, ages in years
TINY_INGREDIENTS = {10: {1000, 1001}, 11: {1002}, BIG: {1002}, 30: set(), 40: set()}
TINY_LEAVES = {10: {"0389", "4019"}, 11: set(), BIG: {"V3000", "7742"}, 30: {"E8490"}, 40: set()}
TINY_STAY_TYPES = {10: "surgical", 11: "medical", BIG: "newborn", 30: "surgical", 40: "unknown"}
TINY_AGES = {10: (date(2000, 6, 15) - date(1950, 6, 15)).days / 365.25,
             11: (date(2001, 1, 1) - date(1950, 6, 15)).days / 365.25,
             BIG: 0.0, 30: 89.0, 40: (date(2005, 7, 1) - date(2000, 1, 1)).days / 365.25}
TINY_SEX = {10: 1, 11: 1, BIG: 0, 30: 1, 40: 0}


def tiny_tables() -> dict[str, list[dict]]:
    """A deep copy of the tiny tables, to be altered by a test."""
    return copy.deepcopy(TINY)


def write_tables(folder: Path, tables: dict[str, list[dict] | pd.DataFrame], fmt: str = "csv",
                 upper: bool = False) -> Path:
    """Write tables as <table>.csv / .csv.gz / .parquet (upper=True: upper-case names and headers)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, dtype=object)
        if upper:
            df = df.rename(columns=str.upper)
            name = name.upper()
        path = folder / f"{name}.{fmt}"
        if fmt == "parquet":
            out = df.copy()
            for c in out.columns:
                vals = out[c].dropna()
                if len(vals) and all(isinstance(v, int) for v in vals):
                    out[c] = out[c].astype("Int64")
                elif str(c).lower().endswith(("_date", "_datetime")):
                    out[c] = pd.to_datetime(out[c])
                else:
                    out[c] = out[c].astype("string")
            out.to_parquet(path, index=False)
        elif fmt == "csv.gz":
            with gzip.open(path, "wt", newline="") as f:
                df.to_csv(f, index=False)
        else:
            df.to_csv(path, index=False)
    return folder


@pytest.fixture
def tiny_omop(tmp_path) -> Path:
    """The tiny OMOP folder as CSV files."""
    return write_tables(tmp_path / "omop", tiny_tables())


def shared_data() -> Path:
    """The shared open-data folder (env CACICD_SHARED_DATA, else the repo's sibling shared/data)."""
    env = os.environ.get("CACICD_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"
