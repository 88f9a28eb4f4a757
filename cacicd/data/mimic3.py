"""Raw MIMIC-III CSV tables -> `Dataset` (the same dataset as the OMOP loader, spec section 1).

Files: PATIENTS, ADMISSIONS, ICUSTAYS, PRESCRIPTIONS, DIAGNOSES_ICD (and SERVICES, optional) as .csv or .csv.gz, any case
of file name and header (the demo has lower-case headers, full MIMIC-III upper-case ones). Files
are validated and read with DuckDB through `cacicd.data.omop.files.register_file` (same clear errors).

Stays: one per ADMISSIONS row (hadm_id), sorted by hadm_id; stays without prescriptions or
without diagnoses are kept and counted.
Sex: 1 if PATIENTS.gender == 'F'. Age: (ADMISSIONS.admittime − PATIENTS.dob) in days / 365.25,
clipped to [0, 89], divided by 89 (MIMIC-III shifts the dob of patients over 89 by about 300 years).
Drugs: one binary feature "drug:<key>" per ingredient key, the key of a PRESCRIPTIONS row being
`drug_key(drug_name_generic if non-empty else drug)`, see `drug_key`; rows without a name or of
an unknown admission are dropped and counted. MIMIC-III has no ingredient vocabulary in these
files, so the key is a normalized name, not an RxNorm ingredient.
Labels: DIAGNOSES_ICD.icd9_code read as text, spaces and dots removed, de-duplicated per stay,
rolled up to all ancestors; codes unknown to ICD-9-CM (2015) are dropped and reported.
Stay type: with a SERVICES table, the authors' rule on its curr_service rows (`cacicd.data.stays.stay_type_of`:
newborn if any is NB/NBB, else surgical if any is a surgical service, else medical; an admission without
a row -> unknown), as the MIMIC-III OMOP visit_detail carries them. Without SERVICES (the open demo) a
proxy: admission_type NEWBORN -> newborn; otherwise the first ICU stay of the admission (by intime) with
first_careunit in SICU, CSRU, TSICU -> surgical; otherwise (other care unit or no ICU stay) -> medical.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np

from cacicd.data.cache import cache_key, cached, with_defaults
from cacicd.data.dataset import Dataset
from cacicd.data.omop.build import assemble, check_unique, code_pairs
from cacicd.data.omop.files import find_tables, register_file
from cacicd.data.omop.schema import Col, DataError
from cacicd.data.omop.sql import isnull, query, sql_list
from cacicd.data.stays import NEWBORN_SERVICES, SURGICAL_SERVICES, stay_type_of

log = logging.getLogger(__name__)

LOADER_VERSION = "mimic3-1"
OPTIONS: dict[str, object] = {"drug_types": None}  # the loader options and their defaults
DRUG_TYPES = ("MAIN", "BASE", "ADDITIVE")  # the values of PRESCRIPTIONS.drug_type in MIMIC-III
SURGICAL_CAREUNITS = ("SICU", "CSRU", "TSICU")

SCHEMA: dict[str, tuple[Col, ...]] = {
    "patients": (Col("subject_id", "int", not_null=True), Col("gender", "str"),
                 Col("dob", "datetime", not_null=True)),
    "admissions": (Col("hadm_id", "int", not_null=True), Col("subject_id", "int", not_null=True),
                   Col("admittime", "datetime", not_null=True), Col("admission_type", "str")),
    "icustays": (Col("hadm_id", "int"), Col("icustay_id", "int", required=False),
                 Col("intime", "datetime"), Col("first_careunit", "str")),
    "prescriptions": (Col("hadm_id", "int"), Col("drug", "str"), Col("drug_name_generic", "str", required=False),
                      Col("drug_type", "str", required=False)),
    "diagnoses_icd": (Col("hadm_id", "int"), Col("icd9_code", "str"), Col("seq_num", "int", required=False)),
    "services": (Col("hadm_id", "int"), Col("curr_service", "str")),
}
OPTIONAL_TABLES = ("services",)

# Words dropped from drug names (lower case): units, dose forms, routes, release types, packaging.
UNIT_WORDS = frozenset("""mg mcg g gm kg ml l dl meq mmol mol unit units iu u % mg/ml mcg/ml units/ml
meq/ml mg/kg mcg/kg mcg/hr mg/hr units/hr""".split())
FORM_WORDS = frozenset("""tab tabs tablet tablets cap caps capsule capsules soln sol solution susp suspension
syrup elixir liquid conc concentrate neb nebulizer nebule inh inhaler inhalation inhal hfa mdi injection inj
injectable vial vials bag premix premixed patch cream crm ointment oint gel lotion spray drops drop gtt supp
suppository syringe syr ampule amp powder pwd packet lozenge troche chewable chew ud sr er xl xr cr dr ec odt
iv ivpb po pr sl im sc subq oral rectal topical top ophth ophthalmic otic nasal vaginal transdermal extended
release delayed flush bolus drip infusion desensitization opth opht""".split())
SALT_WORDS = frozenset({"hcl", "hydrochloride"})


def drug_key(name) -> str:
    """The ingredient key of a MIMIC-III drug name ('' when there is no name).

    Lower case; text in () or [] removed; then, splitting on white space and commas, tokens are
    dropped when they contain a digit (doses, strengths, '0.9%', '5mg', 'd5w'), are markers in
    asterisks ('*nf*', non-formulary), or when every part
    split on '/' is a unit word (UNIT_WORDS: mg, ml, meq/ml, %, ...), a dose-form, route or
    packaging word (FORM_WORDS: tab, capsule, soln, neb, iv, po, vial, bag, patch, ...) or 'hcl' /
    'hydrochloride'. The kept tokens are joined by one space. If nothing is left, the key is the
    whole lower-cased name with runs of white space made single (so 'D5W' -> 'd5w').
    """
    if isnull(name):
        return ""
    raw = " ".join(str(name).lower().split())
    text = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", raw)
    kept = []
    for tok in re.split(r"[\s,]+", text):
        tok = tok.strip(".;:")
        if not tok or any(ch.isdigit() for ch in tok) or (tok.startswith("*") and tok.endswith("*")):
            continue
        parts = [p for p in tok.split("/") if p]
        if parts and all(p in UNIT_WORDS or p in FORM_WORDS or p in SALT_WORDS for p in parts):
            continue
        kept.append(tok)
    return " ".join(kept) if kept else raw


SQL_STAYS = """
SELECT a.hadm_id, a.subject_id, p.subject_id AS known_subject, upper(trim(p.gender)) AS gender,
       upper(trim(a.admission_type)) AS admission_type,
       date_diff('second', p.dob, a.admittime) / 86400.0 / 365.25 AS age_years
FROM admissions a LEFT JOIN patients p ON p.subject_id = a.subject_id
ORDER BY a.hadm_id
"""

SQL_FIRST_CAREUNIT = """
SELECT hadm_id, careunit FROM (
  SELECT hadm_id, upper(trim(first_careunit)) AS careunit,
         row_number() OVER (PARTITION BY hadm_id ORDER BY intime, icustay_id) AS rn
  FROM icustays WHERE hadm_id IS NOT NULL
) t WHERE rn = 1
"""

SQL_SERVICES = """
SELECT hadm_id,
       max(CASE WHEN service IN ({newborn}) THEN 1 ELSE 0 END) AS newborn,
       max(CASE WHEN service IN ({surgical}) THEN 1 ELSE 0 END) AS surgical,
       max(CASE WHEN service <> '' THEN 1 ELSE 0 END) AS any_service
FROM (SELECT hadm_id, upper(trim(curr_service)) AS service FROM services WHERE hadm_id IS NOT NULL) t
GROUP BY hadm_id
"""

SQL_PRESCRIPTIONS = """
SELECT p.hadm_id, coalesce(nullif(trim(p.drug_name_generic), ''), p.drug) AS name,
       a.hadm_id IS NOT NULL AS known, count(*) AS n_rows
FROM prescriptions p LEFT JOIN admissions a ON a.hadm_id = p.hadm_id
WHERE {type_filter}
GROUP BY 1, 2, 3
"""

SQL_DIAGNOSES = """
SELECT d.hadm_id, upper(replace(replace(d.icd9_code, ' ', ''), '.', '')) AS code,
       a.hadm_id IS NOT NULL AS known, count(*) AS n_rows
FROM diagnoses_icd d LEFT JOIN admissions a ON a.hadm_id = d.hadm_id
GROUP BY 1, 2, 3
"""


def _type_filter(drug_types: Sequence[str] | None) -> str:
    """SQL condition keeping the PRESCRIPTIONS rows of these drug types (TRUE for None)."""
    if drug_types is None:
        return "TRUE"
    if isinstance(drug_types, str):
        drug_types = drug_types.split(",")
    vals = sql_list(str(t).strip().upper() for t in drug_types)
    return f"upper(trim(p.drug_type)) IN ({vals})"


def load_mimic3(folder: str | Path, drug_types: Sequence[str] | None = None) -> Dataset:
    """Read a raw MIMIC-III folder into a Dataset (drug_types: PRESCRIPTIONS.drug_type kept, None = all)."""
    folder = Path(folder).resolve()
    source = f"mimic3:{folder}"
    files = find_tables(folder, SCHEMA)
    missing = [t.upper() for t in SCHEMA if t not in files and t not in OPTIONAL_TABLES]
    if missing:
        raise DataError(f"{folder}: missing MIMIC-III table(s) {', '.join(missing)} (looked for <TABLE>.csv or .csv.gz)")
    con = duckdb.connect()
    try:
        for table, path in files.items():
            n = register_file(con, path, table, SCHEMA[table])
            if n == 0 and table in ("patients", "admissions"):
                raise DataError(f"{path}: table {table.upper()} is empty (0 rows)")
        return _build(con, source, files, drug_types)
    finally:
        con.close()


def _build(con, source: str, files: dict[str, Path], drug_types) -> Dataset:
    report: dict = {"source": source, "ingredient_mapping": "drug name (cacicd.data.mimic3.drug_key)",
                    "drug_types": drug_types, "files": {t: p.name for t, p in sorted(files.items())}}
    for table, col in (("admissions", "hadm_id"), ("patients", "subject_id")):
        check_unique(con, table, col, source, str(files[table]))
    st = query(con, SQL_STAYS, f"{source}: reading ADMISSIONS and PATIENTS")
    orphan = st["known_subject"].isna().to_numpy()
    if orphan.any():
        raise DataError(f"{files['admissions']}: column subject_id: {int(orphan.sum())} admission(s) refer to a "
                        f"patient missing from PATIENTS (e.g. {', '.join(str(x) for x in st['subject_id'][orphan][:3])})")
    hadm = st["hadm_id"].to_numpy(dtype=np.int64)
    subject = st["subject_id"].to_numpy(dtype=np.int64)
    sex = (st["gender"].to_numpy(dtype=object) == "F").astype(np.float32)
    report["gender_missing"] = int(st["gender"].isna().sum())
    age = st["age_years"].to_numpy(dtype=float)

    cu = query(con, SQL_FIRST_CAREUNIT, f"{source}: reading ICUSTAYS")
    first_unit = dict(zip(cu["hadm_id"].astype(np.int64).tolist(), cu["careunit"].tolist()))
    report["stays_without_icu_stay"] = int(sum(int(h) not in first_unit for h in hadm))
    if "services" in files:
        sv = query(con, SQL_SERVICES.format(newborn=sql_list(NEWBORN_SERVICES), surgical=sql_list(SURGICAL_SERVICES)),
                   f"{source}: reading SERVICES")
        flags = {int(h): (bool(a), bool(b), bool(c))
                 for h, a, b, c in zip(sv["hadm_id"], sv["newborn"], sv["surgical"], sv["any_service"])}
        stay_type = np.array([stay_type_of(*flags.get(int(h), (False, False, False))) for h in hadm], dtype=object)
        report["stay_type_rule"] = "SERVICES: newborn if any NB/NBB, else surgical if any surgical service, else medical"
    else:
        adm_type = st["admission_type"].to_numpy(dtype=object)
        stay_type = np.array([stay_type_of(t == "NEWBORN", first_unit.get(int(h)) in SURGICAL_CAREUNITS, True)
                              for h, t in zip(hadm, adm_type)], dtype=object)
        report["stay_type_rule"] = ("no SERVICES table: proxy from admission_type NEWBORN and the first ICU "
                                    "care unit (SICU, CSRU, TSICU surgical)")

    # drugs
    types = query(con, "SELECT drug_type, count(*) AS n FROM prescriptions GROUP BY 1", f"{source}: reading PRESCRIPTIONS")
    by_type = {("null" if isnull(t) else str(t)): int(n) for t, n in zip(types["drug_type"], types["n"])}
    rx = query(con, SQL_PRESCRIPTIONS.format(type_filter=_type_filter(drug_types)), f"{source}: reading PRESCRIPTIONS")
    names = rx["name"].to_numpy(dtype=object)
    keys = {n: drug_key(n) for n in set(names.tolist()) if not isnull(n)}
    key = np.array(["" if isnull(n) else keys[n] for n in names], dtype=object)
    n_rows = rx["n_rows"].to_numpy(dtype=np.int64)
    known = rx["known"].to_numpy(dtype=bool)
    has_key = key != ""
    total = int(sum(by_type.values()))
    report.update({
        "drug_rows": total,
        "drug_rows_by_type": by_type,
        "drug_rows_type_kept": int(n_rows.sum()),
        "drug_rows_type_filtered": total - int(n_rows.sum()),
        "drug_rows_no_name": int(n_rows[~has_key].sum()),
        "drug_rows_other_visit": int(n_rows[~known].sum()),
        "drug_names": int(len(keys)),
    })
    keep = known & has_key
    pairs_drug = (rx["hadm_id"].to_numpy()[keep].astype(np.int64), key[keep])

    # diagnoses
    dx = query(con, SQL_DIAGNOSES, f"{source}: reading DIAGNOSES_ICD")
    dn = dx["n_rows"].to_numpy(dtype=np.int64)
    dknown = dx["known"].to_numpy(dtype=bool)
    report.update({"condition_rows": int(dn.sum()), "condition_rows_other_visit": int(dn[~dknown].sum())})
    codes = dx["code"].to_numpy(dtype=object)[dknown]
    vocab = np.where([isnull(c) for c in codes], None, "ICD9CM").astype(object)  # MIMIC-III codes are ICD-9-CM
    pairs_code = code_pairs(dx["hadm_id"].to_numpy()[dknown].astype(np.int64), codes, vocab, dn[dknown], report)
    ds = assemble(hadm, subject, sex, age, stay_type, pairs_drug, "drug:", pairs_code, source, report)
    log.info("%s: %d stays, %d drug keys, %d codes", source, ds.n_stays, len(ds.features) - 2, len(ds.codes))
    return ds


def load_mimic3_cached(folder: str | Path, cache_dir: str | Path, **options) -> Dataset:
    """`load_mimic3` cached on disk under cache_dir, keyed by the input files' bytes and the options."""
    folder = Path(folder).resolve()
    opts = with_defaults(OPTIONS, options, "load_mimic3_cached")
    key = cache_key(find_tables(folder, SCHEMA), opts, LOADER_VERSION)
    return cached(Path(cache_dir) / "mimic3", key, lambda: load_mimic3(folder, **opts))
