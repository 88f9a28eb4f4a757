"""The synthetic OMOP generator: determinism, schema, MIMIC-III calibration, planted signal."""
from __future__ import annotations

import hashlib
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cacicd import icd9

from cacicd.data import synthetic

N = 3_000
COLUMNS = {
    "person": ["person_id", "gender_concept_id", "year_of_birth", "month_of_birth", "day_of_birth", "birth_datetime"],
    "visit_occurrence": ["visit_occurrence_id", "person_id", "visit_concept_id", "visit_start_date",
                         "visit_end_date", "visit_type_concept_id"],
    "visit_detail": ["visit_detail_id", "person_id", "visit_occurrence_id", "visit_detail_concept_id",
                     "visit_detail_start_date", "visit_detail_source_value"],
    "drug_exposure": ["drug_exposure_id", "person_id", "visit_occurrence_id", "drug_concept_id",
                      "drug_exposure_start_date", "drug_type_concept_id", "drug_source_value"],
    "condition_occurrence": ["condition_occurrence_id", "person_id", "visit_occurrence_id", "condition_concept_id",
                             "condition_start_date", "condition_type_concept_id", "condition_source_value",
                             "condition_source_concept_id"],
    "concept": ["concept_id", "concept_name", "domain_id", "vocabulary_id", "concept_class_id",
                "standard_concept", "concept_code"],
    "concept_ancestor": ["ancestor_concept_id", "descendant_concept_id", "min_levels_of_separation",
                         "max_levels_of_separation"],
}
STRINGS = {"condition_source_value": str, "visit_detail_source_value": str, "drug_source_value": str,
           "concept_code": str, "concept_name": str, "standard_concept": str}
SURGICAL = {"CSURG", "NSURG", "ORTHO", "PSURG", "SURG", "TSURG", "VSURG", "TRAUM"}


def _read(folder, table):
    return pd.read_csv(folder / f"{table}.csv", dtype=STRINGS, keep_default_na=False,
                       na_values={"standard_concept": [""]})


@pytest.fixture(scope="module")
def omop(tmp_path_factory):
    folder = synthetic.write_omop(tmp_path_factory.mktemp("omop"), n_stays=N, seed=0)
    return {t: _read(folder, t) for t in synthetic.TABLES}


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _table2(cond: pd.DataFrame, n: int) -> pd.DataFrame:
    """Codes per stay after roll-up per level (min, max, median, mean, SD), an independent roll-up."""
    pairs = cond[["visit_occurrence_id", "condition_source_value"]].drop_duplicates()
    pairs = pairs[pairs.condition_source_value.map(icd9.is_known)]
    up = {c: [c, *icd9.ancestors(c)] for c in pairs.condition_source_value.unique()}
    ex = pairs.assign(code=pairs.condition_source_value.map(up)).explode("code")[["visit_occurrence_id", "code"]]
    ex = ex.drop_duplicates()
    codes = ex.code.unique()
    masks = dict(zip(icd9.REPORT_LEVELS, (dict(zip(codes, m)) for m in icd9.level_masks(list(codes)).values())))
    rows = {}
    for lvl in icd9.REPORT_LEVELS:
        sub = ex[ex.code.map(masks[lvl]).astype(bool)]
        c = sub.groupby("visit_occurrence_id").size().reindex(range(1, n + 1), fill_value=0)
        rows[lvl] = {"min": c.min(), "max": c.max(), "median": c.median(), "mean": c.mean(), "sd": c.std(),
                     "distinct": sub.code.nunique()}
    return pd.DataFrame(rows).T


def _ingredients(omop) -> pd.DataFrame:
    """(visit, ingredient concept id) of written prescriptions, de-duplicated."""
    de = omop["drug_exposure"]
    de = de[(de.drug_type_concept_id == synthetic.PRESCRIPTION_WRITTEN) & (de.drug_concept_id != 0)]
    ca = omop["concept_ancestor"]
    m = de.merge(ca, left_on="drug_concept_id", right_on="descendant_concept_id")
    return m[["visit_occurrence_id", "ancestor_concept_id"]].drop_duplicates()


def test_deterministic_and_seeded(tmp_path):
    a = synthetic.write_omop(tmp_path / "a", n_stays=600, seed=3)
    b = synthetic.write_omop(tmp_path / "b", n_stays=600, seed=3)
    c = synthetic.write_omop(tmp_path / "c", n_stays=600, seed=4)
    assert _digest(a) == _digest(b)
    assert _digest(a)["condition_occurrence.csv"] != _digest(c)["condition_occurrence.csv"]
    pa_ = synthetic.write_omop(tmp_path / "pa", n_stays=300, seed=3, fmt="parquet")
    pb = synthetic.write_omop(tmp_path / "pb", n_stays=300, seed=3, fmt="parquet")
    assert _digest(pa_) == _digest(pb)
    assert sorted(p.name for p in pa_.iterdir()) == sorted(f"{t}.parquet" for t in synthetic.TABLES)


def test_parquet_types(tmp_path):
    folder = synthetic.write_omop(tmp_path, n_stays=300, seed=0, fmt="parquet")
    cond = pq.read_table(folder / "condition_occurrence.parquet")
    assert str(cond.schema.field("condition_source_value").type) == "string"
    assert str(cond.schema.field("condition_start_date").type) == "date32[day]"
    assert str(cond.schema.field("visit_occurrence_id").type) == "int64"
    codes = cond.column("condition_source_value").to_pylist()
    assert any(c.startswith("0") for c in codes) or any(c.startswith("V") for c in codes)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        synthetic.write_omop(tmp_path, n_stays=10, fmt="xlsx")
    with pytest.raises(ValueError, match="n_stays"):
        synthetic.write_omop(tmp_path, n_stays=0)


def test_schema_and_keys(omop):
    for table, cols in COLUMNS.items():
        missing = set(cols) - set(omop[table].columns)
        assert not missing, f"{table} lacks {missing}"
    vo, person = omop["visit_occurrence"], omop["person"]
    assert len(vo) == N and vo.visit_occurrence_id.is_unique
    assert set(vo.person_id) <= set(person.person_id)
    assert set(person.gender_concept_id) == {8532, 8507}
    assert (vo.visit_concept_id == 9201).all()
    assert (pd.to_datetime(vo.visit_end_date) >= pd.to_datetime(vo.visit_start_date)).all()
    for t in ("visit_detail", "drug_exposure", "condition_occurrence"):
        assert set(omop[t].visit_occurrence_id) <= set(vo.visit_occurrence_id), t
        assert omop[t][f"{t}_id"].is_unique, t
        pid = omop[t].merge(vo[["visit_occurrence_id", "person_id"]], on="visit_occurrence_id")
        assert (pid.person_id_x == pid.person_id_y).all(), t
    # codes were written as strings: leading zeros survive a string read
    src = omop["condition_occurrence"].condition_source_value
    assert src.str.match(r"^0\d").any()
    assert omop["concept"].concept_id.is_unique


def test_codes_are_icd9_leaves(omop):
    """Every code is a leaf the hierarchy knows: the loader's warning about unknown codes is for real data."""
    src = omop["condition_occurrence"].condition_source_value
    assert src.map(icd9.is_known).all(), src[~src.map(icd9.is_known)].unique()
    leaves = src.unique()
    par = {icd9.parent(c) for c in icd9.all_codes()}
    assert not set(leaves) & par, "stay codes must be leaves"
    # one ICD-9 code may map to several standard concepts: rows repeat per (visit, code)
    cond = omop["condition_occurrence"]
    dup = cond.duplicated(["visit_occurrence_id", "condition_source_value"], keep=False)
    assert 0.05 < dup.mean() < 0.5
    assert not cond.duplicated(["visit_occurrence_id", "condition_source_value", "condition_concept_id"]).any()


def test_drug_vocabulary(omop):
    concept, ca, de = omop["concept"], omop["concept_ancestor"], omop["drug_exposure"]
    ing = concept[concept.concept_class_id == "Ingredient"]
    assert (ing.vocabulary_id == "RxNorm").all() and len(ing) >= 1_164
    drugs = concept[concept.concept_class_id == "Clinical Drug"]
    assert (drugs.vocabulary_id == "RxNorm").all()
    assert set(ca.ancestor_concept_id) <= set(ing.concept_id)
    self_rows = ca[ca.min_levels_of_separation == 0]
    assert (self_rows.ancestor_concept_id == self_rows.descendant_concept_id).all()
    assert set(self_rows.ancestor_concept_id) == set(ing.concept_id)
    per_drug = ca[ca.min_levels_of_separation == 1].groupby("descendant_concept_id").size()
    assert set(per_drug.index) == set(drugs.concept_id) and (per_drug == 2).sum() > 50
    mapped = de[de.drug_concept_id != 0]
    assert set(mapped.drug_concept_id) <= set(ca.descendant_concept_id)
    assert 0 < (de.drug_concept_id == 0).mean() < 0.02
    assert (de.drug_type_concept_id == synthetic.INPATIENT_ADMINISTRATION).sum() > 0
    written = de[de.drug_type_concept_id == synthetic.PRESCRIPTION_WRITTEN]
    assert written.duplicated(["visit_occurrence_id", "drug_concept_id"]).any()  # repeated prescriptions


def test_calibration_to_mimic(omop):
    t2 = _table2(omop["condition_occurrence"], N)
    assert 8.0 <= t2.loc["billing", "mean"] <= 10.5 and 7 <= t2.loc["billing", "median"] <= 9
    assert 5.0 <= t2.loc["chapter", "mean"] <= 6.5
    for lvl, target in {"subchapter": 8.10, "3digit": 10.18, "4digit": 10.48, "5digit": 5.02, "all": 39.54}.items():
        assert abs(t2.loc[lvl, "mean"] / target - 1) < 0.15, (lvl, t2.loc[lvl, "mean"])
    assert t2.loc["all", "min"] == 0  # stays without diagnosis exist
    # drugs: ~15 % without written prescription, ~35 ingredients per stay among the others
    ing = _ingredients(omop)
    per = ing.groupby("visit_occurrence_id").size()
    assert 0.11 < 1 - len(per) / N < 0.19
    assert 30 < per.mean() < 40
    # stay types from the service code
    svc = omop["visit_detail"].visit_detail_source_value
    newborn = svc.isin(["NB", "NBB"])
    assert abs(newborn.mean() - 0.137) < 0.03 and abs(svc.isin(SURGICAL).mean() - 0.406) < 0.04
    # ages and sex
    vo = omop["visit_occurrence"].merge(omop["person"], on="person_id")
    age = (pd.to_datetime(vo.visit_start_date) - pd.to_datetime(vo.birth_datetime)).dt.days / 365.25
    assert (age >= 0).all() and 0.02 < (age > 89).mean() < 0.07 and (age > 250).mean() > 0.02
    assert (age[newborn.values] < 1).all()
    assert 0.38 < (omop["person"].gender_concept_id == 8532).mean() < 0.48
    counts = vo.person_id.map(vo.person_id.value_counts())
    assert abs((counts >= 2).mean() - 0.339) < 0.05
    # newborns: liveborn V30-V39 code and perinatal codes, few drugs
    cond = omop["condition_occurrence"]
    nb_ids = set(omop["visit_detail"].visit_occurrence_id[newborn])
    nb_codes = cond[cond.visit_occurrence_id.isin(nb_ids)].condition_source_value
    assert nb_codes.str.match(r"^V3\d").sum() >= 0.9 * len(nb_ids)
    assert nb_codes.str.match(r"^7[67]\d").any()
    assert per.reindex(list(nb_ids), fill_value=0).mean() < 5


def test_planted_signal(omop):
    planted = synthetic.planted_signal(0)
    assert set(planted["signal_codes"]).isdisjoint(planted["no_signal_codes"])
    ev = [k for c, k in planted["code_class"].items() if c[0] in "EV" and not c.startswith("V3")]
    assert 0.8 < np.mean(np.array(ev) == "no_signal") < 1  # most E and V codes carry no signal
    billing = [c for c in planted["no_signal_codes"] if c[0] not in "EV"]
    assert abs(len(billing) / icd9.table1_icd9_counts()["billing"] - synthetic.NOSIGNAL_BILLING_FRACTION) < 0.02
    cond = omop["condition_occurrence"][["visit_occurrence_id", "condition_source_value"]].drop_duplicates()
    ing = _ingredients(omop)
    has = {i: set(g.visit_occurrence_id) for i, g in ing.groupby("ancestor_concept_id")}
    freq = cond.condition_source_value.value_counts()
    stays_of = {c: set(g.visit_occurrence_id) for c, g in cond.groupby("condition_source_value")}
    # the top ingredient of the problem that emits a code most
    link = {}
    for p in planted["problems"]:
        for c, w in zip(p["codes"], p["code_p"]):
            if w > link.get(c, (0, None))[0]:
                link[c] = (w, p["ingredients"][0])
    rng = np.random.default_rng(0)
    tops = [p["ingredients"][0] for p in planted["problems"] if not p["newborn"]]

    def lift(code, ingr):
        s = has.get(ingr, set())
        if len(s) < 30:
            return np.nan
        return len(stays_of[code] & s) / len(s) / (freq[code] / N)

    frequent = freq[freq >= 40].index
    sig = [lift(c, link[c][1]) for c in frequent if planted["code_class"].get(c) == "signal" and c in link]
    nos = [lift(c, tops[rng.integers(len(tops))]) for c in frequent if planted["code_class"].get(c) == "no_signal"]
    sig, nos = np.array(sig), np.array(nos)
    assert len(sig[~np.isnan(sig)]) > 20 and len(nos[~np.isnan(nos)]) > 10
    assert np.nanmedian(sig) > 2.0
    assert 0.75 < np.nanmedian(nos) < 1.3
    # no-signal codes are independent of sex and age too: similar rate in female and male stays
    vo = omop["visit_occurrence"].merge(omop["person"], on="person_id")
    female = set(vo.visit_occurrence_id[vo.gender_concept_id == 8532])
    ns = cond[cond.condition_source_value.map(planted["code_class"]).eq("no_signal")]
    per_stay = ns.groupby("visit_occurrence_id").size().reindex(range(1, N + 1), fill_value=0)
    in_f = per_stay.index.isin(list(female))
    assert abs(per_stay[in_f].mean() / per_stay[~in_f].mean() - 1) < 0.1


def test_drug_linked_codes_carry_the_signal_their_meaning_implies(omop):
    planted = synthetic.planted_signal(0)
    links = planted["drug_links"]
    assert {"V5861", "V5867", "V4581", "E9342"} <= set(links) == set(planted["drug_linked_codes"])
    assert links["V5861"]["class"] == links["E9342"]["class"] == "anticoagulant"
    assert links["V5867"]["class"] == links["E9323"]["class"] == "insulin"
    assert all(planted["code_class"][c] == "drug_linked" for c in links)
    assert all(icd9.is_known(c) and c[0] in "EV" for c in links)
    owners = [i for ings in planted["drug_classes"].values() for i in ings]
    assert len(owners) == len(set(owners))  # an ingredient belongs to one class
    # in the data: P(code | a drug of its class) well above P(code | none), near the demo-calibrated rates
    cond = omop["condition_occurrence"][["visit_occurrence_id", "condition_source_value"]].drop_duplicates()
    ing = _ingredients(omop)
    newborn = set(omop["visit_detail"].visit_occurrence_id[omop["visit_detail"].visit_detail_source_value.isin(
        ["NB", "NBB"])])
    adults = set(range(1, N + 1)) - newborn
    for code, lo in (("V5861", 0.2), ("V5867", 0.04), ("V4581", 0.07)):
        with_drug = set(ing.visit_occurrence_id[ing.ancestor_concept_id.isin(links[code]["ingredients"])]) & adults
        has = set(cond.visit_occurrence_id[cond.condition_source_value == code])
        p_with = len(has & with_drug) / len(with_drug)
        p_without = len(has & (adults - with_drug)) / len(adults - with_drug)
        assert len(with_drug) > 50 and p_with > lo and p_with > 2.5 * p_without, (code, p_with, p_without)
        assert not has & newborn
    # a documented share of the codes carries no signal at all
    cls = np.array([k for k in planted["code_class"].values()])
    assert abs(np.mean(cls == "no_signal") - 0.34) < 0.02


def test_default_folder_cached(tmp_path):
    a = synthetic.default_folder(200, seed=1, root=tmp_path)
    stamp = {p.name: p.stat().st_mtime_ns for p in a.iterdir()}
    b = synthetic.default_folder(200, seed=1, root=tmp_path)
    assert a == b and {p.name: p.stat().st_mtime_ns for p in b.iterdir()} == stamp
    assert {f"{t}.csv" for t in synthetic.TABLES} <= {p.name for p in a.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith(".")]  # no temp folder left
    assert synthetic.default_folder(200, seed=2, root=tmp_path) != a


@pytest.mark.slow
def test_paper_size(tmp_path):
    t0 = time.perf_counter()
    folder = synthetic.write_omop(tmp_path, n_stays=58_976, seed=0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 120, elapsed
    cond = pd.read_csv(folder / "condition_occurrence.csv", dtype={"condition_source_value": str},
                       usecols=["visit_occurrence_id", "condition_source_value"])
    t2 = _table2(cond, 58_976)
    for lvl, target in {"chapter": 5.77, "subchapter": 8.10, "3digit": 10.18, "4digit": 10.48, "5digit": 5.02,
                        "billing": 9.13, "all": 39.54}.items():
        assert abs(t2.loc[lvl, "mean"] / target - 1) < 0.1, (lvl, t2.loc[lvl, "mean"])
    for lvl, target in {"billing": 5_871, "all": 9_336, "3digit": 1_070}.items():
        assert abs(t2.loc[lvl, "distinct"] / target - 1) < 0.25, (lvl, t2.loc[lvl, "distinct"])
