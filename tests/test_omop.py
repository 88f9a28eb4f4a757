"""OMOP folder loader on tiny hand-built folders: values worked out by hand, every bad input tried."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from cacicd import icd9

from cacicd.data import omop
from cacicd.data.omop import DataError, classify_icd
from conftest import (TINY_AGES, TINY_INGREDIENTS, TINY_LEAVES, TINY_SEX, TINY_STAY_TYPES, tiny_tables,
                      write_tables)


def _rows(ds):
    return {int(v): i for i, v in enumerate(ds.visit_ids)}


def test_tiny_dataset_matches_hand_worked_values(tiny_omop):
    ds = omop.load_omop(tiny_omop)
    assert sorted(ds.visit_ids.tolist()) == ds.visit_ids.tolist() == sorted(TINY_AGES)
    assert ds.features == ["sex", "age", "rxnorm:1000", "rxnorm:1001", "rxnorm:1002"]
    X = ds.X.toarray()
    Y = ds.Y.toarray()
    for v, i in _rows(ds).items():
        assert X[i, 0] == TINY_SEX[v]
        assert X[i, 1] == pytest.approx(TINY_AGES[v] / 89, abs=1e-6)
        got = {int(f.split(":")[1]) for f, x in zip(ds.features[2:], X[i, 2:]) if x}
        assert got == TINY_INGREDIENTS[v]
        # labels: the hand-picked leaves rolled up with the hierarchy, nothing else
        expect = icd9.rollup(TINY_LEAVES[v]) if TINY_LEAVES[v] else set()
        assert {c for c, y in zip(ds.codes, Y[i]) if y} == expect
        assert ds.stay_type[i] == TINY_STAY_TYPES[v]
    assert set(np.unique(X[:, 2:])) <= {0.0, 1.0} and set(np.unique(Y)) <= {0, 1}
    assert ds.codes == sorted(ds.codes) and all(isinstance(c, str) for c in ds.codes)
    assert "0389" in ds.codes and "389" not in ds.codes
    assert ds.person_ids.tolist() == [2, 1, 1, 3, 2]  # rows sorted by visit id: BIG first
    assert ds.X.dtype == np.float32 and ds.Y.dtype == np.uint8


def test_tiny_report_counts(tiny_omop):
    r = omop.load_omop(tiny_omop).report
    assert r["drug_rows"] == 8 and r["drug_rows_by_type"] == {"38000177": 7, "38000180": 1}
    assert r["drug_rows_type_kept"] == 7 and r["drug_rows_type_filtered"] == 1
    assert r["drug_rows_concept_0"] == 1 and r["drug_rows_no_visit"] == 1
    assert r["drug_concepts_without_ingredient"] == 1 and r["drug_rows_without_ingredient"] == 1
    assert r["ingredients"] == 3
    assert r["stays_without_drugs"] == 2 and r["stays_with_drugs"] == 3
    # distinct ingredients per stay with drugs: 2, 1, 1
    assert r["ingredients_per_stay_with_drugs"] == {"mean": round(4 / 3, 4), "median": 1.0}
    assert r["stays_without_diagnoses"] == 2  # visit 11 (ICD-10 only) and 40
    assert r["condition_rows"] == 10
    assert r["condition_rows_icd9"] == 7  # 038.9 x2, 401.9, V3000, 7742, 99999, E849.0
    assert r["condition_rows_icd10"] == 2  # I10 (vocabulary) and E119 (resolved by its stay)
    assert r["condition_rows_other_vocabulary"] == 1
    assert r["condition_rows_ambiguous_icd9_icd10"] == 3 and r["condition_rows_ambiguous_read_as_icd9"] == 2
    assert r["codes_unknown_icd9"] == 1 and r["codes_unknown_icd9_list"] == ["99999"]
    assert r["stay_types"] == {"newborn": 1, "surgical": 2, "medical": 1, "unknown": 1}
    assert r["age_over_89_clipped"] == 1


def test_drug_type_and_mapping_options(tiny_omop):
    ds = omop.load_omop(tiny_omop, drug_type_concept_id=None)
    row = _rows(ds)[10]
    assert ds.X[row, ds.features.index("rxnorm:1002")] == 1  # the 38000180 row now counts
    ds = omop.load_omop(tiny_omop, ingredient_mapping="drug_concept")
    assert ds.features[2:] == ["drug:1002", "drug:2000", "drug:2001", "drug:2002"]
    ds = omop.load_omop(tiny_omop, visit_concept_id=[9202])
    assert ds.visit_ids.tolist() == [40]
    with pytest.raises(ValueError, match="ingredient_mapping"):
        omop.load_omop(tiny_omop, ingredient_mapping="walk")


@pytest.mark.parametrize("fmt,upper", [("parquet", False), ("csv.gz", True), ("csv", True)])
def test_formats_and_case_give_the_same_dataset(tmp_path, tiny_omop, fmt, upper):
    ref = omop.load_omop(tiny_omop)
    other = omop.load_omop(write_tables(tmp_path / fmt, tiny_tables(), fmt=fmt, upper=upper))
    assert other.content_hash() == ref.content_hash()


def test_no_concept_table_uses_code_shape_and_no_visit_detail_is_unknown(tmp_path):
    t = tiny_tables()
    for name in ("concept", "concept_ancestor", "visit_detail"):
        del t[name]
    folder = write_tables(tmp_path / "o", t)
    with pytest.raises(DataError, match="ingredient_mapping='drug_concept'"):
        omop.load_omop(folder)
    ds = omop.load_omop(folder, ingredient_mapping="drug_concept")
    assert set(ds.stay_type) == {"unknown"}
    # without vocabulary, 401.9 is read by shape (ICD-9) and I10 too (ICD-10): same labels as before
    Y = ds.Y.toarray()
    for v, i in _rows(ds).items():
        expect = icd9.rollup(TINY_LEAVES[v]) if TINY_LEAVES[v] else set()
        assert {c for c, y in zip(ds.codes, Y[i]) if y} == expect


def test_classify_icd_rule():
    codes = ["0389", "I10", "E119", "V3000", "E8490", "V3000", "SR(SINUSRHYTHM)", "225085", "", "4019", "Z9981"]
    vocab = [None, None, None, None, None, "ICD10CM", None, None, None, "ICD9CM", "SNOMED"]
    visits = [1, 2, 2, 1, 3, 4, 5, 5, 5, 6, 6]
    kind, amb = classify_icd(codes, vocab, visits)
    assert kind.tolist() == ["icd9", "icd10", "icd10", "icd9", "icd9", "icd10", "other", "other", "missing",
                             "icd9", "other"]
    assert amb.tolist() == [False, False, True, True, True] + [False] * 6


def test_cache_hits_and_follows_file_content(tmp_path, tiny_omop, monkeypatch):
    calls = []
    real = omop.load_omop
    monkeypatch.setattr(omop, "load_omop", lambda *a, **k: calls.append(1) or real(*a, **k))
    a = omop.load_omop_cached(tiny_omop, tmp_path / "cache")
    b = omop.load_omop_cached(tiny_omop, tmp_path / "cache")
    assert len(calls) == 1 and a.content_hash() == b.content_hash() and b.report == a.report
    omop.load_omop_cached(tiny_omop, tmp_path / "cache", drug_type_concept_id=None)
    assert len(calls) == 2  # another option, another entry
    t = tiny_tables()
    t["person"][1]["gender_concept_id"] = 8532
    write_tables(tiny_omop, {"person": t["person"]})
    os.utime(tiny_omop / "person.csv", ns=(1, 1))  # content decides, not mtime
    c = omop.load_omop_cached(tiny_omop, tmp_path / "cache")
    assert len(calls) == 3 and c.content_hash() != a.content_hash()
    with pytest.raises(TypeError, match="unknown option"):
        omop.load_omop_cached(tiny_omop, tmp_path / "cache", drug_type=1)


def _alter(table, fn):
    def go(t):
        t[table] = fn(t[table])
    return go


def _set(table, i, col, val):
    def go(t):
        t[table][i][col] = val
    return go


def _drop_col(table, col):
    def go(t):
        for r in t[table]:
            r.pop(col)
    return go


BAD = {
    "missing table": (lambda t: t.pop("drug_exposure"), r"missing table\(s\) drug_exposure"),
    "missing column": (_drop_col("visit_occurrence", "visit_start_date"),
                       r"visit_occurrence.csv: table visit_occurrence lacks column\(s\) visit_start_date"),
    "non-integer visit id": (_set("visit_occurrence", 1, "visit_occurrence_id", "11a"),
                             r"visit_occurrence.csv: column visit_occurrence_id: 1 value\(s\) are not integers"),
    "decimal concept id": (_set("drug_exposure", 0, "drug_concept_id", "2000.5"),
                           r"drug_exposure.csv: column drug_concept_id: 1 value\(s\) are not integers"),
    "unparseable date": (_set("visit_occurrence", 0, "visit_start_date", "2000-13-45"),
                         r"visit_occurrence.csv: column visit_start_date: 1 value\(s\) are not dates .*2000-13-45"),
    "missing start date": (_set("visit_occurrence", 2, "visit_start_date", None),
                           r"visit_occurrence.csv: column visit_start_date: 1 empty value"),
    "empty table": (_alter("person", lambda rows: pd.DataFrame(columns=list(rows[0]))),
                    r"person.csv: table person is empty \(0 rows\)"),
    "duplicated visit ids": (_set("visit_occurrence", 1, "visit_occurrence_id", 10),
                             r"column visit_occurrence_id: 1 id\(s\) appear more than once \(e.g. 10\)"),
    "duplicated person ids": (_set("person", 2, "person_id", 1), r"person: column person_id: 1 id\(s\) appear"),
    "unknown person": (_set("visit_occurrence", 4, "person_id", 99),
                       r"column person_id: 1 visit\(s\) refer to a person missing from person \(e.g. 99\)"),
    "no birth date": (_set("person", 1, "year_of_birth", None), r"1 person\(s\) with no valid birth date"),
    "impossible birth date": (_set("person", 2, "month_of_birth", 13), r"1 person\(s\) with no valid birth date"),
    "no concept_ancestor": (lambda t: t.pop("concept_ancestor"),
                            r"no concept_ancestor table.*ingredient_mapping='drug_concept'"),
    "no prescription rows": (_alter("drug_exposure", lambda rows: [dict(r, drug_type_concept_id=32838) for r in rows]),
                             r"drug_type_concept_id: no row of type 38000177 among 8 rows \(types present: \{'32838': 8\}\)"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_gives_a_clear_error(tmp_path, name):
    change, pattern = BAD[name]
    t = tiny_tables()
    change(t)
    folder = write_tables(tmp_path / "o", t)
    with pytest.raises(DataError, match=pattern) as e:
        omop.load_omop(folder)
    assert e.value.__cause__ is None or isinstance(e.value.__cause__, DataError)
    assert "Traceback" not in str(e.value)


def test_file_level_bad_inputs(tmp_path, tiny_omop):
    (tiny_omop / "person.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="table person is given by several files"):
        omop.load_omop(tiny_omop)
    (tiny_omop / "person.parquet").unlink()
    (tiny_omop / "person.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"person.csv: empty file"):
        omop.load_omop(tiny_omop)
    (tiny_omop / "person.csv").write_bytes(b"\x00\xff garbage \x01\n\x02")
    with pytest.raises(DataError, match=r"person.csv"):
        omop.load_omop(tiny_omop)
    with pytest.raises(DataError, match="does not exist"):
        omop.load_omop(tmp_path / "nowhere")


def test_parquet_float_ids_must_be_whole(tmp_path):
    t = tiny_tables()
    folder = write_tables(tmp_path / "o", t, fmt="parquet")
    df = pd.read_parquet(folder / "drug_exposure.parquet")
    df["drug_concept_id"] = df["drug_concept_id"].astype(float)
    df.to_parquet(folder / "drug_exposure.parquet")
    assert omop.load_omop(folder).content_hash() == omop.load_omop(write_tables(tmp_path / "c", t)).content_hash()
    df.loc[0, "drug_concept_id"] = 2000.5
    df.to_parquet(folder / "drug_exposure.parquet")
    with pytest.raises(DataError, match=r"drug_exposure.parquet: column drug_concept_id: 1 value\(s\) are not integers"):
        omop.load_omop(folder)


# ---------------------------------------------------------------- cacicd.data.sources, the entry point

from cacicd.data import sources as data  # noqa: E402
from cacicd.data.describe import describe  # noqa: E402
from cacicd.config import get_profile  # noqa: E402


def test_load_data_sources(tmp_path, tiny_omop):
    prof = get_profile("smoke")
    a = data.load_data(str(tiny_omop), prof, tmp_path / "cache")
    b = data.load_data(f"omop:{tiny_omop}?drug_type_concept_id=none", prof, tmp_path / "cache")
    assert a.content_hash() == omop.load_omop(tiny_omop).content_hash()
    assert b.content_hash() == omop.load_omop(tiny_omop, drug_type_concept_id=None).content_hash()
    assert data.parse_source("omop:/x?ingredient_mapping=drug_concept&visit_concept_id=9201,262") == (
        "omop", "/x", {"ingredient_mapping": "drug_concept", "visit_concept_id": [9201, 262]})
    assert data.parse_source("postgresql://u:secret@db/omop?schema=omop")[0] == "postgresql"
    with pytest.raises(DataError, match="cannot reach the server") as e:  # cacicd.data.pg; more in test_postgres_source
        data.load_data("postgresql://u:secret@127.0.0.1:1/omop?schema=omop", prof, tmp_path)
    assert "secret" not in str(e.value)
    with pytest.raises(DataError, match="is not a folder"):
        data.load_data(str(tmp_path / "none"), prof, tmp_path)


def test_age_encoding_option_of_every_source(tmp_path, tiny_omop):
    from cacicd.data.dataset import DEFAULT_AGE_ENCODING

    prof = get_profile("smoke")
    f = data.load_data(str(tiny_omop), prof, tmp_path / "cache")
    a = data.load_data(f"omop:{tiny_omop}?age_encoding=authors", prof, tmp_path / "cache")
    assert DEFAULT_AGE_ENCODING == "float" and f.report["age_encoding"].startswith("float")
    assert a.report["age_encoding"].startswith("authors: 1[age > 0]")
    ages = np.array([TINY_AGES[int(v)] for v in f.visit_ids])
    col = f.features.index("age")
    np.testing.assert_allclose(f.X[:, col].toarray().ravel(), np.clip(ages, 0, 89) / 89, rtol=1e-6)
    # the authors' boolean input: 1 where the age is above 0 (the newborn admitted on its birth day is 0)
    np.testing.assert_array_equal(a.X[:, col].toarray().ravel(), (ages > 0).astype(np.float32))
    assert (ages == 0).any() and (ages > 0).any()
    np.testing.assert_array_equal(np.delete(a.X.toarray(), col, 1), np.delete(f.X.toarray(), col, 1))
    assert a.content_hash() != f.content_hash()  # experiments on either encoding never share a cache entry
    assert data.parse_source("synthetic?age_encoding=authors") == ("synthetic", "", {"age_encoding": "authors"})
    assert data.parse_source("postgresql://u@db/omop?schema=omop&age_encoding=authors") == (
        "postgresql", "postgresql://u@db/omop?schema=omop", {"age_encoding": "authors"})
    with pytest.raises(ValueError, match="option age_encoding='bool': expected one of float, authors"):
        data.load_data(f"{tiny_omop}?age_encoding=bool", prof, tmp_path / "cache")


def test_get_splits_cached_by_dataset_and_profile(tmp_path, tiny_omop):
    ds = omop.load_omop(tiny_omop)
    prof = get_profile("smoke").replace(split_fraction=0.2)
    s1 = data.get_splits(ds, prof, tmp_path)
    assert len(list((tmp_path / "splits").glob("*/splits.json"))) == 1
    s2 = data.get_splits(ds, prof, tmp_path)
    assert [x.test.tolist() for x in s1] == [x.test.tolist() for x in s2]
    data.get_splits(ds, prof.replace(seed=1), tmp_path)
    assert len(list((tmp_path / "splits").glob("*/splits.json"))) == 2


def test_describe_against_a_loop(tiny_omop):
    ds = omop.load_omop(tiny_omop)
    d = describe(ds)
    t1 = d["table1"].set_index("level")
    lv = [icd9.level(c) for c in ds.codes]
    for level in icd9.LEVELS:
        assert t1.loc[level, "dataset"] == lv.count(level)
    assert t1.loc["all", "dataset"] == len(ds.codes) and t1.loc["all", "icd9cm"] == 17726
    assert t1.loc["billing", "icd9cm"] == 12167 and (t1["cherry_picked"] == 0).all()  # no code reaches 100
    Y = ds.Y.toarray()
    per = np.array([[sum(1 for c, y in zip(ds.codes, row) if y and icd9.level(c) == level) for level in ("3digit",)]
                    for row in Y]).ravel()
    t2 = d["table2"].set_index("level")
    assert t2.loc["3digit", "max"] == per.max() and t2.loc["3digit", "min"] == per.min()
    assert t2.loc["3digit", "mean"] == pytest.approx(per.mean())
    assert t2.loc["3digit", "sd"] == pytest.approx(np.std(per, ddof=1))
    assert t2.loc["3digit", "median"] == np.median(per)
    assert d["codes_per_stay"]["stays"].sum() == ds.n_stays
    z = d["zipf"][d["zipf"]["level"] == "all"]
    assert z["stays"].is_monotonic_decreasing and len(z) == len(ds.codes)
    rep = d["report"].set_index("item")["value"]
    assert rep["stay_types.newborn"] == "1" and rep["codes_unknown_icd9_list"] == "99999"


def test_load_data_synthetic(tmp_path):
    pytest.importorskip("cacicd.data.synthetic")
    prof = get_profile("smoke").replace(n_stays=300)
    ds = data.load_data("synthetic", prof, tmp_path)
    assert ds.n_stays == 300 and ds.source == "synthetic:n300-s0"
    assert ds.features[2].startswith("rxnorm:") and ds.report["ingredients"] > 0 and len(ds.codes) > 0
    assert (tmp_path / "synthetic").is_dir() and list((tmp_path / "omop").glob("*/meta.json"))
    again = data.load_data("synthetic", prof, tmp_path)
    assert again.content_hash() == ds.content_hash()
