"""The build: typed OMOP tables (DuckDB or PostgreSQL) -> `Dataset`, through the aggregating SQL of `sql`."""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cacicd import icd9
from cacicd.data.dataset import Dataset
from cacicd.data.omop.schema import (DEFAULT_INGREDIENT_MAPPING, FEMALE, INGREDIENT_MAPPINGS, MALE,
                                     PRESCRIPTION_WRITTEN, DataError)
from cacicd.data.omop.sql import (SQL_CONDITION_COUNTS, SQL_DRUG_COUNTS, SQL_DRUG_TYPES, SQL_STAY_SERVICE,
                                  SQL_UNMAPPED_DRUGS, SQL_VISIT_CODE, SQL_VISIT_DRUG, SQL_VISIT_INGREDIENT,
                                  SQL_VISITS, Queryable, int_filter, isnull, query, sql_list)
from cacicd.data.stays import NEWBORN_SERVICES, STAY_TYPES, SURGICAL_SERVICES, UNKNOWN, stay_type_of

log = logging.getLogger(__name__)

AGE_MAX = 89.0
UNKNOWN_CODES_SHOWN = 50

ICD9_SHAPE = re.compile(r"^(\d{3,5}|V\d{2,4}|E\d{3,4})$")
ICD10_SHAPE = re.compile(r"^[A-Z]\d[0-9A-Z]{1,5}$")
ICD9_VOCABS = ("ICD9CM",)
ICD10_VOCABS = ("ICD10CM", "ICD10")

# ---------------------------------------------------------------- ICD version of source codes


def classify_icd(codes: Sequence, vocabularies: Sequence, visits: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """ICD version of each (visit, normalized code, source vocabulary) row; see the `cacicd.data.omop` docstring.

    Returns (kind, ambiguous): kind[i] in {"icd9", "icd10", "other", "missing"}; ambiguous[i] True
    where the code's shape fits both ICD-9-CM and ICD-10 and no vocabulary decided.
    """
    n = len(codes)
    kind = np.empty(n, dtype=object)
    ambiguous = np.zeros(n, dtype=bool)
    memo: dict = {}
    for i, (c, v) in enumerate(zip(codes, vocabularies)):
        v = None if isnull(v) or str(v) in ("", "None") else str(v)
        c = None if isnull(c) or c == "" else c
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
            if isnull(y):
                raise ValueError("no year")
            m = 1 if isnull(m) else int(m)
            d = 1 if isnull(d) else int(d)
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
    return 0 if isnull(x) else int(x)



def _summary(x: np.ndarray) -> dict:
    """Mean (4 decimals) and median of x; NaN for none."""
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
        "stay_types": {t: int((np.asarray(stay_type) == t).sum()) for t in STAY_TYPES},
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
    if ingredient_mapping not in INGREDIENT_MAPPINGS:
        raise ValueError(f"ingredient_mapping must be {' or '.join(repr(m) for m in INGREDIENT_MAPPINGS)}, "
                         f"got {ingredient_mapping!r}")
    if ingredient_mapping == "concept_ancestor":
        lacking = [t for t in ("concept_ancestor", "concept") if t not in tables]
        if lacking:
            raise DataError(f"{source}: no {' and no '.join(lacking)} table, so drugs cannot be mapped to RxNorm "
                            "ingredients; add the OMOP vocabulary tables concept and concept_ancestor, or load with "
                            "ingredient_mapping='drug_concept' (drug concepts used directly as features)")


def build_dataset(con: duckdb.DuckDBPyConnection | Queryable, tables: Sequence[str], source: str = "",
                  drug_type_concept_id: int | Sequence[int] | None = PRESCRIPTION_WRITTEN,
                  ingredient_mapping: str = DEFAULT_INGREDIENT_MAPPING,
                  visit_concept_id: int | Sequence[int] | None = None) -> Dataset:
    """Run the aggregating SQL on the typed tables of `con` (DuckDB, or PostgreSQL through `cacicd.data.pg`) -> Dataset.

    tables: the OMOP tables present. Only aggregates leave the database: one row per stay, the
    distinct (visit, ingredient) and (visit, code) pairs, and counts.
    """
    tables = set(tables)
    check_mapping(tables, ingredient_mapping, source)
    fmt = {"visit_filter": int_filter("visit_concept_id", visit_concept_id),
           "type_filter": int_filter("drug_type_concept_id", drug_type_concept_id)}
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
    sex = np.array([0 if isnull(g) else int(g) == FEMALE for g in gender], dtype=np.float32)
    report["gender_missing"] = int(sum(isnull(g) for g in gender))
    other = pd.Series([int(g) for g in gender if not isnull(g) and int(g) not in (MALE, FEMALE)], dtype=np.int64)
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
        st = query(con, SQL_STAY_SERVICE.format(newborn=sql_list(NEWBORN_SERVICES), surgical=sql_list(SURGICAL_SERVICES)),
                   f"{source}: reading visit_detail")
        svc = {int(v): (bool(a), bool(b), bool(c)) for v, a, b, c in
               zip(st["visit_occurrence_id"], st["newborn"], st["surgical"], st["any_service"])}
        stay_type = np.array([stay_type_of(*svc.get(int(x), (False, False, False))) for x in vid], dtype=object)
        report["stays_without_visit_detail"] = int(sum(int(x) not in svc for x in vid))
    else:
        stay_type = np.array([UNKNOWN] * len(vid), dtype=object)
        report["stays_without_visit_detail"] = int(len(vid))
        report["stay_type_note"] = "no visit_detail table: every stay type is 'unknown'"

    # drugs
    types = query(con, SQL_DRUG_TYPES, f"{source}: reading drug_exposure")
    by_type = {("null" if isnull(t) else str(int(t))): int(n) for t, n in zip(types["drug_type_concept_id"], types["n"])}
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
