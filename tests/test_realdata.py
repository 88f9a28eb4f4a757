"""The open demo data sets load with sane counts (read-only; anything derived goes to tmp_path)."""
from __future__ import annotations

import numpy as np
import pytest

from cacicd.data import sources as data, mimic3, omop
from cacicd.data.describe import describe
from cacicd.config import get_profile
from conftest import shared_data

pytestmark = pytest.mark.realdata

OMOP_DEMO = shared_data() / "mimic-iv-demo-omop-0.9"
MIMIC3_DEMO = shared_data() / "mimic-iii-demo-1.4"


def _need(folder):
    if not folder.is_dir():
        pytest.skip(f"open data not found at {folder} (set CACICD_SHARED_DATA to the shared/data folder)")


@pytest.fixture(scope="module")
def omop_demo():
    _need(OMOP_DEMO)
    return omop.load_omop(OMOP_DEMO, ingredient_mapping="drug_concept", drug_type_concept_id=None)


def test_mimic_iv_omop_demo_needs_the_documented_options():
    _need(OMOP_DEMO)
    with pytest.raises(omop.DataError, match="no concept_ancestor and no concept table.*drug_concept"):
        omop.load_omop(OMOP_DEMO)
    with pytest.raises(omop.DataError, match=r"no row of type 38000177 among 18229 rows.*32838"):
        omop.load_omop(OMOP_DEMO, ingredient_mapping="drug_concept")


def test_mimic_iv_omop_demo_counts(omop_demo):
    ds, r = omop_demo, omop_demo.report
    assert ds.n_stays == 852 and r["persons"] == 100
    assert ds.visit_ids.min() < -2**62 < 2**62 < ds.visit_ids.max()  # large signed 64-bit ids kept exactly
    assert r["drug_rows"] == 18229 and r["drug_rows_concept_0"] == 546
    assert ds.features[2].startswith("drug:") and r["ingredients"] == len(ds.features) - 2 == 896
    # one row in eight or so is ICD-9-CM, the rest ICD-10-CM or non-ICD (rhythm strings, item ids)
    assert r["condition_rows"] == 16441
    assert r["condition_rows_icd9"] + r["condition_rows_icd10"] + r["condition_rows_other_vocabulary"] == 16441
    assert 1700 < r["condition_rows_icd9"] < 2000 and 1800 < r["condition_rows_icd10"] < 2100
    assert r["codes_unknown_icd9"] == 0
    assert set(ds.stay_type) == {"unknown"}  # no visit_detail in this export
    assert 1000 < len(ds.codes) < 1500 and r["stays_without_diagnoses"] == ds.n_stays - np.count_nonzero(
        np.diff(ds.Y.indptr))
    age = ds.X[:, 1].toarray().ravel()
    assert 0 <= age.min() and age.max() <= 1.0


def test_mimic_iv_omop_demo_through_load_data(tmp_path, omop_demo):
    src = f"omop:{OMOP_DEMO}?ingredient_mapping=drug_concept&drug_type_concept_id=none"
    ds = data.load_data(src, get_profile("smoke"), tmp_path)
    assert ds.content_hash() == omop_demo.content_hash()
    splits = data.get_splits(ds, get_profile("smoke"), tmp_path)
    assert len(splits) == 3 and len(splits[0].test) == round(0.15 * 852)
    assert not any(p.is_relative_to(OMOP_DEMO) for p in tmp_path.rglob("*"))


def test_mimic3_demo_counts(tmp_path):
    _need(MIMIC3_DEMO)
    ds = data.load_data(f"mimic3:{MIMIC3_DEMO}", get_profile("smoke"), tmp_path)
    r = ds.report
    assert ds.n_stays == 129 and r["persons"] == 100
    assert r["drug_rows"] == 10398 and r["condition_rows"] == 1761 == r["condition_rows_icd9"]
    assert r["stays_without_drugs"] == 7 and r["stays_without_diagnoses"] == 0
    assert 400 < r["ingredients"] < 500 and 1000 < len(ds.codes) < 1300
    assert r["stay_types"]["surgical"] + r["stay_types"]["medical"] == 129
    assert "0389" in ds.codes or "038" in ds.codes
    d = describe(ds)
    assert d["table1"].set_index("level").loc["chapter", "dataset"] <= 19
    assert d["table2"].set_index("level").loc["all", "min"] > 0
    assert mimic3.load_mimic3(MIMIC3_DEMO).content_hash() == ds.content_hash()
