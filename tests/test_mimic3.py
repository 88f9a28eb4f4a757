"""Raw MIMIC-III loader on a tiny hand-built folder; drug-name keys; bad inputs."""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from cacicd import icd9

from cacicd.data import mimic3
from cacicd.data.mimic3 import drug_key
from cacicd.data.omop import DataError
from conftest import write_tables


def tiny_mimic3() -> dict[str, list[dict]]:
    """Three admissions: a newborn, a surgical ICU stay (first unit by intime), a medical one."""
    return {
        "patients": [
            {"row_id": 1, "subject_id": 7, "gender": "F", "dob": "2100-01-01 00:00:00"},
            {"row_id": 2, "subject_id": 8, "gender": "M", "dob": "1800-05-05 00:00:00"},  # shifted: > 89
        ],
        "admissions": [
            {"row_id": 1, "subject_id": 7, "hadm_id": 100, "admittime": "2100-01-01 08:00:00",
             "admission_type": "NEWBORN"},
            {"row_id": 2, "subject_id": 7, "hadm_id": 101, "admittime": "2150-07-01 12:00:00",
             "admission_type": "EMERGENCY"},
            {"row_id": 3, "subject_id": 8, "hadm_id": 102, "admittime": "2120-02-02 00:00:00",
             "admission_type": "ELECTIVE"},
        ],
        "icustays": [
            {"hadm_id": 100, "icustay_id": 1, "first_careunit": "NICU", "intime": "2100-01-01 09:00:00"},
            {"hadm_id": 101, "icustay_id": 2, "first_careunit": "MICU", "intime": "2150-07-03 00:00:00"},
            {"hadm_id": 101, "icustay_id": 3, "first_careunit": "CSRU", "intime": "2150-07-01 13:00:00"},
            {"hadm_id": 102, "icustay_id": 4, "first_careunit": "CCU", "intime": "2120-02-02 01:00:00"},
        ],
        "prescriptions": [
            {"hadm_id": 101, "drug_type": "MAIN", "drug": "Vancomycin HCl", "drug_name_generic": None},
            {"hadm_id": 101, "drug_type": "MAIN", "drug": "Vancomycin", "drug_name_generic": "Vancomycin"},
            {"hadm_id": 101, "drug_type": "BASE", "drug": "D5W", "drug_name_generic": None},
            {"hadm_id": 102, "drug_type": "MAIN", "drug": "Albuterol Neb", "drug_name_generic": "Albuterol 0.083% Neb Soln"},
            {"hadm_id": 102, "drug_type": "MAIN", "drug": None, "drug_name_generic": None},
            {"hadm_id": 999, "drug_type": "MAIN", "drug": "Aspirin", "drug_name_generic": "Aspirin"},
        ],
        "diagnoses_icd": [
            {"hadm_id": 100, "seq_num": 1, "icd9_code": "V3000"},
            {"hadm_id": 100, "seq_num": 2, "icd9_code": "7742"},
            {"hadm_id": 101, "seq_num": 1, "icd9_code": "0389"},
            {"hadm_id": 101, "seq_num": 2, "icd9_code": "0389"},
            {"hadm_id": 101, "seq_num": 3, "icd9_code": "E8490"},
            {"hadm_id": 101, "seq_num": 4, "icd9_code": "9999X"},
        ],
    }


def test_drug_key_examples():
    cases = {
        "Albuterol 0.083% Neb Soln": "albuterol",
        "*NF* Bimatoprost": "bimatoprost",
        "Bisacodyl (Rectal)": "bisacodyl",
        "5% Dextrose": "dextrose",
        "Sodium Chloride 0.9%  Flush": "sodium chloride",
        "Heparin 5000 units/mL": "heparin",
        "Vancomycin HCl": "vancomycin",
        "Piperacillin-Tazobactam": "piperacillin-tazobactam",
        "D5W": "d5w",
        "": "",
        None: "",
    }
    assert {k: drug_key(k) for k in cases} == cases


def test_tiny_mimic3_by_hand(tmp_path):
    ds = mimic3.load_mimic3(write_tables(tmp_path / "m", tiny_mimic3(), upper=True))
    assert ds.visit_ids.tolist() == [100, 101, 102] and ds.person_ids.tolist() == [7, 7, 8]
    assert ds.features == ["sex", "age", "drug:albuterol", "drug:d5w", "drug:vancomycin"]
    X = ds.X.toarray()
    age101 = (datetime(2150, 7, 1, 12) - datetime(2100, 1, 1)).total_seconds() / 86400 / 365.25
    age100 = 8 / 24 / 365.25
    np.testing.assert_allclose(X[:, :2], [[1, age100 / 89], [1, age101 / 89], [0, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(X[:, 2:], [[0, 0, 0], [0, 1, 1], [1, 0, 0]])
    assert ds.stay_type.tolist() == ["newborn", "surgical", "medical"]
    Y = ds.Y.toarray()
    leaves = [{"V3000", "7742"}, {"0389", "E8490"}, set()]
    for i, lv in enumerate(leaves):
        assert {c for c, y in zip(ds.codes, Y[i]) if y} == (icd9.rollup(lv) if lv else set())
    r = ds.report
    assert r["drug_rows"] == 6 and r["drug_rows_no_name"] == 1 and r["drug_rows_other_visit"] == 1
    assert r["codes_unknown_icd9_list"] == ["9999X"] and r["stays_without_diagnoses"] == 1
    assert r["stays_without_drugs"] == 1 and r["age_over_89_clipped"] == 1


def test_services_table_gives_the_authors_stay_type_rule(tmp_path):
    t = tiny_mimic3()
    t["services"] = [
        {"hadm_id": 100, "curr_service": "NB"}, {"hadm_id": 100, "curr_service": "SURG"},  # newborn first
        {"hadm_id": 101, "curr_service": "MED"},  # CSRU in ICU, but no surgical service: medical
        {"hadm_id": 102, "curr_service": "CMED"}, {"hadm_id": 102, "curr_service": "CSURG"},  # any surgical
    ]
    ds = mimic3.load_mimic3(write_tables(tmp_path / "m", t))
    assert ds.stay_type.tolist() == ["newborn", "medical", "surgical"]
    assert ds.report["stay_type_rule"].startswith("SERVICES")
    t["services"] = t["services"][:2]  # admissions without a SERVICES row: unknown
    assert mimic3.load_mimic3(write_tables(tmp_path / "n", t)).stay_type.tolist() == ["newborn", "unknown", "unknown"]


def test_drug_type_option_and_formats(tmp_path):
    t = tiny_mimic3()
    ds = mimic3.load_mimic3(write_tables(tmp_path / "m", t), drug_types=["MAIN"])
    assert "drug:d5w" not in ds.features and ds.report["drug_rows_type_filtered"] == 1
    spaced = mimic3.load_mimic3(tmp_path / "m", drug_types="main, base")  # as a URL option writes them
    assert spaced.content_hash() == mimic3.load_mimic3(tmp_path / "m", drug_types=["MAIN", "BASE"]).content_hash()
    gz = mimic3.load_mimic3(write_tables(tmp_path / "g", t, fmt="csv.gz"))
    assert gz.content_hash() == mimic3.load_mimic3(tmp_path / "m").content_hash()


def test_cache(tmp_path):
    folder = write_tables(tmp_path / "m", tiny_mimic3())
    a = mimic3.load_mimic3_cached(folder, tmp_path / "c")
    assert len(list((tmp_path / "c" / "mimic3").glob("*/meta.json"))) == 1
    assert mimic3.load_mimic3_cached(folder, tmp_path / "c").content_hash() == a.content_hash()


@pytest.mark.parametrize("change,pattern", [
    (lambda t: t.pop("diagnoses_icd"), r"missing MIMIC-III table\(s\) DIAGNOSES_ICD"),
    (lambda t: [r.pop("admittime") for r in t["admissions"]], r"table admissions lacks column\(s\) admittime"),
    (lambda t: t["admissions"][0].update(hadm_id="x1"), r"column hadm_id: 1 value\(s\) are not integers"),
    (lambda t: t["patients"][0].update(dob="yesterday"), r"column dob: 1 value\(s\) are not date-times"),
    (lambda t: t["admissions"][1].update(hadm_id=100), r"column hadm_id: 1 id\(s\) appear more than once"),
    (lambda t: t["admissions"][2].update(subject_id=9), r"1 admission\(s\) refer to a patient missing"),
    (lambda t: t.update(patients=t["patients"][:0] or __import__("pandas").DataFrame(columns=["subject_id", "gender", "dob"])),
     r"table PATIENTS is empty"),
])
def test_bad_inputs(tmp_path, change, pattern):
    t = tiny_mimic3()
    change(t)
    with pytest.raises(DataError, match=pattern):
        mimic3.load_mimic3(write_tables(tmp_path / "m", t))
