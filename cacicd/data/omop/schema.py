"""The OMOP CDM 5.3 tables and columns the loader reads, its option defaults, and its error type."""
from __future__ import annotations

from dataclasses import dataclass

PRESCRIPTION_WRITTEN = 38000177  # drug_type_concept_id "Prescription written"
FEMALE = 8532
MALE = 8507
DEFAULT_INGREDIENT_MAPPING = "concept_ancestor"
INGREDIENT_MAPPINGS = (DEFAULT_INGREDIENT_MAPPING, "drug_concept")
# The loader options of an OMOP source (folder or PostgreSQL) and their defaults, in signature order.
OPTIONS: dict[str, object] = {"drug_type_concept_id": PRESCRIPTION_WRITTEN,
                              "ingredient_mapping": DEFAULT_INGREDIENT_MAPPING, "visit_concept_id": None}


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
VOCAB_TABLES = ("concept", "concept_ancestor")  # the OMOP vocabulary tables the loader reads
# Tables refused when empty: they leave no stay. Any other table may be empty; `cacicd.data.sources.check_usable`
# refuses a dataset left without ICD-9-CM codes or drug features unless allow_no_icd9 / allow_no_drugs.
NONEMPTY_TABLES = ("person", "visit_occurrence")
SUFFIXES = (".csv", ".csv.gz", ".parquet")
CSV_DELIMITERS = (",", "\t", ";", "|")
