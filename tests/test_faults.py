"""Issue 15's nine faults, each reproduced on a folder or cache damaged the way described (temporary folders).

1-2 damaged result artefacts, 3-4 cut or non-UTF-8 CSV files and damaged cached data, 5 a failed
notebook, 6 a misspelt source option, 7 run_all's arguments, 8 folds, 9 gender / ICD-9 / drugs.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cacicd import cli, runner

from cacicd.data import sources as data, omop, synthetic
from cacicd.experiments import engine as E
from cacicd.config import get_profile
from cacicd.data.dataset import Dataset
from cacicd.data.describe import describe
from cacicd.files import Damaged
from cacicd.data.omop import DataError
from conftest import tiny_tables, write_tables
from test_experiments import TINY
from test_runner import fake_repo  # noqa: F401  (fixture)
from test_train import make_dataset


@pytest.fixture(scope="module")
def ds():
    return make_dataset(n=300, n_ingredients=30, n_leaves=40, seed=3)


def _cut(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def _flip(path, at=-20):
    b = bytearray(path.read_bytes())
    b[at] ^= 0xFF
    path.write_bytes(bytes(b))


# ---------------------------------------------------------------- 1-2: damaged result artefacts


def test_damaged_metrics_refused_by_load_recomputed_by_run(ds, tmp_path, caplog):
    r0 = E.run("dummy", TINY, ds, cache_dir=tmp_path, progress=False)[0]
    before = (r0.path / "test_metrics.csv").read_bytes()
    meta = json.loads((r0.path / "result.json").read_text())
    assert set(meta["artefacts"]) == {p.name for p in r0.path.iterdir()} - {"result.json", ".lock"}
    f = r0.path / "test_metrics.csv"
    _cut(f, len(before) // 2)
    with pytest.raises(Damaged, match=rf"dummy fold 0 is damaged: {re.escape(str(f))} is [0-9,]+ bytes, [0-9,]+ "
                                      rf"when written; .cacicd run dummy --profile tiny --fold 0 --data random "
                                      rf"--cache {re.escape(str(tmp_path))}. recomputes it"):
        E.load("dummy", TINY, ds, cache_dir=tmp_path)
    st = E.status(TINY, ds, tmp_path).set_index(["experiment", "fold"])["state"]
    assert st["dummy", 0] == "damaged" and st["dummy", 1] == "done"
    with caplog.at_level(logging.WARNING, logger="cacicd.experiments.engine"):
        r1 = E.run("dummy", TINY, ds, cache_dir=tmp_path, progress=False)[0]
    assert f"dummy fold 0 is damaged: {f}" in caplog.text and "recomputing it" in caplog.text
    assert f.read_bytes() == before and np.array_equal(r1.scores, r0.scores)
    assert E.load("dummy", TINY, ds, cache_dir=tmp_path)[0].test_metrics.equals(r0.test_metrics)
    _flip(r0.path / "scores.npy")  # same size, other bytes: the content hash tells
    with pytest.raises(Damaged, match="scores.npy is same size, other content"):
        E.load("dummy", TINY, ds, cache_dir=tmp_path, folds=0)
    (r0.path / "result.json").write_text("{ not json")
    with pytest.raises(Damaged, match="result.json is not valid JSON"):
        E.load("dummy", TINY, ds, cache_dir=tmp_path, folds=0)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cacicd.experiments.engine"):
        r2 = E.run("dummy", TINY, ds, cache_dir=tmp_path, folds=0, progress=False)[0]
    assert "not valid JSON" in caplog.text and np.array_equal(r2.scores, r0.scores)


def test_any_artefact_written_before_result_json_is_verified(ds, tmp_path, monkeypatch, caplog):
    real = E.train_fold

    def with_curve(exp, c, fold):  # an artefact of a name the cache code does not know
        folder = E.fold_dir(c.cache_dir, c.profile, c.dataset_hash, exp.name, fold)
        (folder / "curves").mkdir(parents=True, exist_ok=True)
        (folder / "curves" / "search_curve.csv").write_text("trial,value\n0,0.5\n")
        return real(exp, c, fold)

    monkeypatch.setattr(E, "train_fold", with_curve)
    r = E.run("dummy", TINY, ds, cache_dir=tmp_path, folds=0, progress=False)[0]
    assert "curves/search_curve.csv" in r.artefacts
    (r.path / "curves" / "search_curve.csv").write_text("trial,value\n0,0.9\n")
    with pytest.raises(Damaged, match="search_curve.csv is same size, other content"):
        E.load("dummy", TINY, ds, cache_dir=tmp_path, folds=0)
    (r.path / "curves" / "search_curve.csv").unlink()
    with pytest.raises(Damaged, match="search_curve.csv is missing"):
        E.load("dummy", TINY, ds, cache_dir=tmp_path, folds=0)
    meta = json.loads((r.path / "result.json").read_text())
    del meta["artefacts"]  # a result written before artefacts were recorded is not read as is
    (r.path / "result.json").write_text(json.dumps(meta))
    with pytest.raises(Damaged, match="records no artefact sizes and hashes"):
        E.load("dummy", TINY, ds, cache_dir=tmp_path, folds=0)
    with caplog.at_level(logging.WARNING, logger="cacicd.experiments.engine"):
        E.run("dummy", TINY, ds, cache_dir=tmp_path, folds=0, progress=False)
    assert "written by an older version); recomputing it" in caplog.text
    assert E.load("dummy", TINY, ds, cache_dir=tmp_path, folds=0)[0].artefacts


def test_truncated_scores_and_damaged_model_or_search(ds, tmp_path, caplog, monkeypatch):
    from cacicd.models import search

    prof = TINY.replace(max_epochs=2)
    r0 = E.run("naive_ndcg", prof, ds, cache_dir=tmp_path, folds=0, progress=False)[0]
    model0 = (r0.path / "model.pt").read_bytes()
    _cut(r0.path / "scores.npy", 1000)
    _cut(r0.path / "history.csv", 10)
    with pytest.raises(Damaged, match=r"naive_ndcg fold 0 is damaged: .*scores.npy is 1,000 bytes") as e:
        E.load("naive_ndcg", prof, ds, cache_dir=tmp_path, folds=0)
    assert "history.csv is 10 bytes" in str(e.value)
    fam = next(tmp_path.glob("tiny/*/_search/all-bce-*/fold0/search.json"))
    _cut(fam, 10)  # the family's finished search: read again from its store, nothing retrained
    monkeypatch.setattr(search, "train_node", lambda *a, **k: pytest.fail("retrained a stored network"))
    with caplog.at_level(logging.WARNING, logger="cacicd.experiments.engine"):
        r1 = E.run("naive_ndcg", prof, ds, cache_dir=tmp_path, folds=0, progress=False)[0]
    assert "scores.npy is 1,000 bytes" in caplog.text and "search.json is damaged" in caplog.text
    assert np.array_equal(r1.scores, r0.scores) and r1.best_params == r0.best_params
    assert (r1.path / "model.pt").read_bytes() == model0
    _flip(r1.path / "model.pt")
    with pytest.raises(Damaged, match=r"naive_ndcg fold 0 is damaged: .*model.pt differs.*`cacicd run naive_ndcg "
                                      rf"--profile tiny --fold 0 --data random --cache {re.escape(str(tmp_path))}`"):
        r1.load_model()


@pytest.mark.parametrize("damage", ["middle", "deleted", "junk"])
def test_damaged_search_store_is_redone_from_what_is_sound(ds, tmp_path, caplog, damage):
    # issue 25 item 1: a damaged curve store is detected, named in a warning and the search redone from what is
    # still sound; --force never loses the good result before the new one is written
    prof = TINY.replace(max_epochs=2)
    r0 = E.run("naive_ndcg", prof, ds, cache_dir=tmp_path, folds=0, progress=False)[0]
    store = next(tmp_path.glob("tiny/*/_search/all-bce-*/fold0/curves.jsonl"))
    raw = bytearray(store.read_bytes())
    if damage == "middle":
        raw[len(raw) // 3:len(raw) // 3 + 300] = os.urandom(300)
        store.write_bytes(bytes(raw))
    elif damage == "deleted":
        store.unlink()
    else:
        store.write_bytes(os.urandom(len(raw)))
    with caplog.at_level(logging.WARNING):
        r1 = E.run("naive_ndcg", prof, ds, cache_dir=tmp_path, folds=0, progress=False, force=True)[0]
    if damage != "deleted":
        assert f"curve store {store}" in caplog.text and "damaged and dropped" in caplog.text
    if damage != "middle":  # nothing sound left: search.json's networks are gone, so the search is run again
        assert "no longer holds" in caplog.text and str(store.parent / "search.json") in caplog.text
    assert r1.best_params == r0.best_params
    np.testing.assert_array_equal(r1.scores, r0.scores)
    np.testing.assert_array_equal(E.load("naive_ndcg", prof, ds, cache_dir=tmp_path, folds=0)[0].scores, r0.scores)


def test_force_keeps_the_old_result_when_the_recomputation_fails(ds, tmp_path, monkeypatch):
    r0 = E.run("dummy", TINY, ds, cache_dir=tmp_path, folds=0, progress=False)[0]
    monkeypatch.setattr(E, "train_fold", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError, match="disk full"):
        E.run("dummy", TINY, ds, cache_dir=tmp_path, folds=0, progress=False, force=True)
    np.testing.assert_array_equal(E.load("dummy", TINY, ds, cache_dir=tmp_path, folds=0)[0].scores, r0.scores)


# ---------------------------------------------------------------- 3-4: CSV files and cached data


@pytest.mark.parametrize("cut, pattern", [
    ("fields", r"drug_exposure.csv: line 5: 2 field\(s\) where the header has 4 \(comma-separated"),
    ("quote", r"drug_exposure.csv: line 5: a quoted value is not closed"),
    ("no newline", r"drug_exposure.csv: the file does not end with a line break, so its last line \(line 5\) "
                   r"may be cut short"),
])
def test_csv_cut_in_a_line_names_file_and_line(tmp_path, cut, pattern):
    folder = write_tables(tmp_path / "o", tiny_tables())
    f = folder / "drug_exposure.csv"
    lines = f.read_text().splitlines(keepends=True)
    head = "".join(lines[:4])
    tail = {"fields": "4,10\n", "quote": '4,10,"20', "no newline": "4,10,2001,380"}[cut]
    f.write_text(head + tail + ("\n" if cut == "quote" else ""))
    with pytest.raises(DataError, match=pattern) as e:
        omop.load_omop(folder)
    assert "lacks column" not in str(e.value) and "4,10" not in str(e.value)  # the line's content is not shown


def test_non_utf8_byte_names_file_line_and_encoding(tmp_path):
    t = tiny_tables()
    t["condition_occurrence"][5]["condition_source_value"] = "Sinus rhythm \u00e9"
    folder = write_tables(tmp_path / "o", t)
    f = folder / "condition_occurrence.csv"
    f.write_bytes(f.read_text().encode("latin-1"))
    with pytest.raises(DataError, match=r"condition_occurrence.csv: line 7 \(byte [0-9,]+ of the file\) holds byte "
                                        r"0xe9, which is not UTF-8: the file's encoding is not UTF-8 \(probably "
                                        r"Latin-1 or Windows-1252\)"):
        omop.load_omop(folder)
    f.write_bytes(b"\xff\xfe" + "visit_occurrence_id,condition_source_value\n".encode("utf-16-le"))
    with pytest.raises(DataError, match=r"line 1 .* UTF-16"):
        omop.load_omop(folder)
    f.unlink()
    g = folder / "condition_occurrence.csv.gz"
    write_tables(folder, {"condition_occurrence": tiny_tables()["condition_occurrence"]}, fmt="csv.gz")
    _cut(g, g.stat().st_size // 2)
    with pytest.raises(DataError, match=r"condition_occurrence.csv.gz: .*(cut short|cannot read)"):
        omop.load_omop(folder)


def test_damaged_synthetic_folder_is_regenerated(tmp_path, caplog):
    a = synthetic.default_folder(200, seed=1, root=tmp_path)
    want = {p.name: p.read_bytes() for p in a.iterdir()}
    f = a / "drug_exposure.csv"
    _cut(f, f.stat().st_size // 2 + 7)
    with caplog.at_level(logging.WARNING, logger="cacicd.data.synthetic"):
        b = synthetic.default_folder(200, seed=1, root=tmp_path)
    assert b == a and f"synthetic data {a} is damaged: {f} is" in caplog.text and "regenerating it" in caplog.text
    assert {p.name: p.read_bytes() for p in b.iterdir()} == want  # the same bytes again
    (a / ".complete").write_text("ok\n")  # written by an older version: not trusted
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cacicd.data.synthetic"):
        synthetic.default_folder(200, seed=1, root=tmp_path)
    assert "older version" in caplog.text


def test_damaged_cached_dataset_is_rebuilt(tmp_path, tiny_omop, caplog):
    ds = omop.load_omop_cached(tiny_omop, tmp_path / "cache")
    [folder] = [p for p in (tmp_path / "cache" / "omop").iterdir() if p.is_dir()]
    _flip(folder / "X.npz", at=40)
    with pytest.raises(Damaged, match=r"X.npz is same size, other content"):
        Dataset.load(folder)
    with caplog.at_level(logging.WARNING, logger="cacicd.data.cache"):
        again = omop.load_omop_cached(tiny_omop, tmp_path / "cache")
    assert f"dataset {folder} is damaged: {folder / 'X.npz'}" in caplog.text and "rebuilding it" in caplog.text
    assert again.content_hash() == ds.content_hash() and Dataset.load(folder).content_hash() == ds.content_hash()


def test_damaged_split_files_are_rewritten(ds, tmp_path, caplog):
    prof = get_profile("smoke").replace(split_fraction=0.1, n_folds=2)
    splits = data.get_splits(ds, prof, tmp_path)
    [folder] = [p for p in (tmp_path / "splits").iterdir() if p.is_dir()]
    f = folder / "fold1_test.txt"
    ids = f.read_text().split()
    ids[0] = str(next(int(v) for v in ds.visit_ids if v not in splits[1].test and v not in splits[1].dev))
    f.write_text("".join(f"{i}\n" for i in ids))  # as many ids, one of another stay: only a fresh draw tells
    with caplog.at_level(logging.WARNING, logger="cacicd.data.sources"):
        again = data.get_splits(ds, prof, tmp_path)
    assert f"split files in {folder} are damaged" in caplog.text
    assert [s.test.tolist() for s in again] == [s.test.tolist() for s in splits]
    assert data.get_splits(ds, prof, tmp_path)[1].test.tolist() == splits[1].test.tolist()


# ---------------------------------------------------------------- 5, 7: run_all


def test_failed_notebook_is_never_up_to_date(fake_repo, tmp_path, monkeypatch, capsys):  # noqa: F811
    _, ran, out = fake_repo
    good = runner.execute
    assert runner.run_all("smoke", out=str(out)) == 0 and ran == ["00_a", "01_b"]

    def failing(name, dirs, params, kernel="python3", env=None):
        (dirs.notebooks / f"{name}.ipynb").write_text('{"failed": true}')  # papermill leaves the failed notebook
        raise RuntimeError("cell 2 failed")

    monkeypatch.setattr(runner, "execute", failing)
    other = write_tables(tmp_path / "other_data", tiny_tables())
    assert runner.run_all("smoke", data=str(other), out=str(out)) == 1
    assert set(json.loads((out / "tables" / "run_log.json").read_text())) == {"01_b"}
    monkeypatch.setattr(runner, "execute", good)
    ran.clear()
    capsys.readouterr()
    assert runner.run_all("smoke", out=str(out)) == 0  # the first run's inputs again
    assert ran == ["00_a"] and "00_a: up to date" not in capsys.readouterr().out
    assert (out / "notebooks" / "00_a.ipynb").read_text() == "{}"
    (out / "notebooks" / "01_b.ipynb").write_text('{"replaced": true}')  # not the notebook its run wrote
    ran.clear()
    runner.run_all("smoke", out=str(out))
    assert ran == ["01_b"]


def test_arguments_checked_before_anything_starts(fake_repo, tmp_path, capsys):  # noqa: F811
    _, ran, out = fake_repo
    assert runner.run_all("smoke", data="synthetc", out=str(out)) == 2
    err = capsys.readouterr().err
    assert "--data: data source 'synthetc'" in err and "did you mean 'synthetic'?" in err
    assert err.count("\n") == 1 and not out.exists() and ran == []
    assert runner.run_all("smoke", out=str(out), only=["99_nope"]) == 2 and not out.exists()
    assert runner.run_all("smoke", data=f"{tmp_path}?drug_type=none", out=str(out)) == 2 and not out.exists()
    assert "unknown option 'drug_type'" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert runner.run_all("smoke", out=str(tmp_path / "afile" / "out")) == 2
    assert f"--out {tmp_path / 'afile' / 'out'}: {tmp_path / 'afile'} is not a folder" in capsys.readouterr().err
    assert runner.main(["--profile", "bogus", "--data", "nowhere_at_all", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--profile: unknown profile 'bogus'" in err and "nowhere_at_all is not a folder" in err
    assert not out.exists() and ran == []


def test_read_only_out_is_refused(fake_repo, tmp_path, monkeypatch, capsys):  # noqa: F811
    _, ran, _ = fake_repo
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: a read-only mount, as the OS would answer
        real = tempfile.TemporaryFile

        def denied(*a, dir=None, **k):
            if Path(dir) == ro:
                raise PermissionError(13, "Permission denied")
            return real(*a, dir=dir, **k)

        monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    else:
        ro.chmod(0o555)
    try:
        assert runner.run_all("smoke", out=str(ro / "out")) == 2
        assert f"--out {ro / 'out'}: cannot write in {ro} (Permission denied)" in capsys.readouterr().err
        assert not (ro / "out").exists() and ran == []
    finally:
        ro.chmod(0o755)


# ---------------------------------------------------------------- 6: source options


def test_misspelt_source_option_names_it_and_lists_the_known_ones(tmp_path, tiny_omop):
    with pytest.raises(DataError, match=r"unknown option 'drug_type' for an OMOP folder; known: drug_type_concept_id, "
                                        r"ingredient_mapping, visit_concept_id.*allow_no_icd9, allow_no_drugs"):
        data.load_data(f"{tiny_omop}?drug_type=none", get_profile("smoke"), tmp_path / "cache")
    with pytest.raises(DataError, match=r"unknown option 'drug' for a MIMIC-III folder; known: drug_types"):
        data.parse_source("mimic3:/x?drug=MAIN")
    with pytest.raises(DataError, match=r"unknown option 'n' for the synthetic source"):
        data.parse_source("synthetic?n=3")
    assert data.parse_source("postgresql://h/db?schema=omop&allow_no_drugs=true") == (
        "postgresql", "postgresql://h/db?schema=omop", {"allow_no_drugs": "true"})
    assert not (tmp_path / "cache").exists()
    assert cli.main(["data", "--data", f"{tiny_omop}?drug_type=none", "--cache", str(tmp_path / "c")]) == 2


# ---------------------------------------------------------------- 8: folds


def test_folds_checked_before_any_work(ds, tmp_path, capsys):
    for arg, msg in (("0,7", "fold 7 out of range: profile smoke has 3 folds (0 to 2)"),
                     ("-1", "fold -1 out of range"), ("x", "--fold 'x': 'x' is not a fold number")):
        assert cli.main(["run", "dummy", "--profile", "smoke", "--fold", arg, "--cache", str(tmp_path)]) == 2
        assert msg in capsys.readouterr().err
    assert not tmp_path.exists() or not list(tmp_path.iterdir())  # nothing trained, no fold folder made
    with pytest.raises(ValueError, match="fold 2 out of range: profile tiny has 2 folds"):
        E.run("dummy", TINY, ds, folds=[0, 2], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="fold 2 out of range"):
        E.load("dummy", TINY, ds, folds=[2], cache_dir=tmp_path)
    assert not list(tmp_path.rglob("fold*"))
    assert E.check_folds([1, 0, 1], TINY) == [1, 0] and E.check_folds(None, TINY) == [0, 1]


# ---------------------------------------------------------------- 9: gender, no ICD-9 code, no drug


def test_other_gender_concepts_are_counted_and_warned(tmp_path, caplog):
    t = tiny_tables()
    t["person"][0]["gender_concept_id"] = 0  # visits 10 and 11
    t["person"][2]["gender_concept_id"] = 8551  # visit 30
    t["person"][1]["gender_concept_id"] = None  # visits BIG and 40
    with caplog.at_level(logging.WARNING, logger="cacicd.data.omop"):
        ds = omop.load_omop(write_tables(tmp_path / "o", t))
    assert ds.report["gender_other"] == 3 and ds.report["gender_other_concepts"] == {"0": 2, "8551": 1}
    assert ds.report["gender_missing"] == 2
    assert "3 stay(s) with a gender_concept_id other than 8507 (male) or 8532 (female) (0: 2, 8551: 1) and 2 " \
           "without one" in caplog.text
    rep = describe(ds)["report"].set_index("item")["value"]
    assert rep["gender_other"] == "3" and rep["gender_other_concepts.8551"] == "1"
    assert omop.load_omop(write_tables(tmp_path / "t", tiny_tables())).report["gender_other"] == 0


def test_no_icd9_code_or_no_drug_is_refused_unless_allowed(tmp_path):
    prof = get_profile("smoke")
    t = tiny_tables()
    for r in t["condition_occurrence"]:
        r["condition_source_value"], r["condition_source_concept_id"] = "I10", 0
    icd10 = write_tables(tmp_path / "icd10", t)
    with pytest.raises(DataError, match=r"no stay has an ICD-9-CM diagnosis code \(condition_rows 10; "
                                        r"condition_rows_icd10 10\).*allow_no_icd9=true"):
        data.load_data(str(icd10), prof, tmp_path / "cache")
    assert data.load_data(f"{icd10}?allow_no_icd9=true", prof, tmp_path / "cache").codes == []
    t = tiny_tables()
    t["drug_exposure"] = [dict(r, drug_concept_id=3000) for r in t["drug_exposure"]]  # an ATC class: no ingredient
    nodrug = write_tables(tmp_path / "nodrug", t)
    with pytest.raises(DataError, match=r"no stay has a drug feature \(drug_rows 8;.*drug_rows_without_ingredient 6"
                                        r"\), so the models would see sex and age only.*allow_no_drugs=true"):
        data.load_data(str(nodrug), prof, tmp_path / "cache")
    ds = data.load_data(f"{nodrug}?allow_no_drugs=yes", prof, tmp_path / "cache")
    assert ds.features == ["sex", "age"] and len(ds.codes) > 0
    with pytest.raises(DataError, match=r"allow_no_drugs='maybe': expected true or false"):
        data.load_data(f"{nodrug}?allow_no_drugs=maybe", prof, tmp_path / "cache")


# ---------------------------------------------------------------- issue 25: empty drug or condition tables


def _empty(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(columns=list(rows[0]))


@pytest.mark.parametrize("kind", ["omop", "mimic3"])
def test_empty_drug_table_is_refused_unless_allow_no_drugs(tmp_path, kind):
    from test_mimic3 import tiny_mimic3

    prof = get_profile("smoke")
    if kind == "omop":
        t = tiny_tables()
        t["drug_exposure"] = _empty(t["drug_exposure"])
        t["concept_ancestor"] = _empty(t["concept_ancestor"])  # an export without drugs may lack the vocabulary too
        src = str(write_tables(tmp_path / "o", t))
    else:
        t = tiny_mimic3()
        t["prescriptions"] = _empty(t["prescriptions"])
        src = f"mimic3:{write_tables(tmp_path / 'm', t)}"
    with pytest.raises(DataError, match=r"no stay has a drug feature \(drug_rows 0: its table has no row\).*"
                                        r"allow_no_drugs=true"):
        data.load_data(src, prof, tmp_path / "cache")
    ds = data.load_data(f"{src}?allow_no_drugs=true", prof, tmp_path / "cache")
    assert ds.features == ["sex", "age"] and ds.report["drug_rows"] == 0 and len(ds.codes) > 0


def test_empty_condition_table_is_refused_unless_allow_no_icd9(tmp_path):
    prof = get_profile("smoke")
    t = tiny_tables()
    t["condition_occurrence"] = _empty(t["condition_occurrence"])
    src = str(write_tables(tmp_path / "o", t))
    with pytest.raises(DataError, match=r"no stay has an ICD-9-CM diagnosis code \(condition_rows 0: its table has no row\)"):
        data.load_data(src, prof, tmp_path / "cache")
    assert data.load_data(f"{src}?allow_no_icd9=true", prof, tmp_path / "cache").codes == []
    t = tiny_tables()
    t["visit_occurrence"] = _empty(t["visit_occurrence"])  # no stay at all: refused whatever the options
    with pytest.raises(DataError, match=r"visit_occurrence.csv: table visit_occurrence is empty \(0 rows\)"):
        data.load_data(f"{write_tables(tmp_path / 'v', t)}?allow_no_drugs=true&allow_no_icd9=true", prof,
                       tmp_path / "cache")


# ---------------------------------------------------------------- issue 25: option values checked before any work


@pytest.mark.parametrize("source, pattern", [
    ("synthetic?age_encoding=author", r"option age_encoding='author': expected one of float, authors"),
    ("synthetic?ingredient_mapping=ancestors", r"option ingredient_mapping='ancestors': expected one of "
                                               r"concept_ancestor, drug_concept"),
    ("synthetic?drug_type_concept_id=written", r"option drug_type_concept_id='written': expected a concept id, "
                                               r"comma-separated concept ids or none"),
    ("synthetic?visit_concept_id=9201,x", r"option visit_concept_id='9201,x'"),
    ("synthetic?allow_no_drugs=maybe", r"allow_no_drugs='maybe': expected true or false"),
    ("mimic3:{folder}?drug_types=MAIN,SIDE", r"option drug_types='MAIN,SIDE': expected none or comma-separated "
                                             r"PRESCRIPTIONS drug types among MAIN, BASE, ADDITIVE"),
    ("postgresql://alice:pw@h/db?schema=omop&ingredient_mapping=x", r"'postgresql://alice@h/db\?schema=omop&"
                                                                    r"ingredient_mapping=x': option ingredient_mapping"),
    ("postgresql://h/db?age_encoding=bool", r"option age_encoding='bool'"),
])
def test_option_values_checked_before_any_work(fake_repo, tmp_path, capsys, source, pattern):  # noqa: F811
    _, ran, out = fake_repo
    source = source.format(folder=tmp_path)
    with pytest.raises(DataError, match=pattern):
        data.check_source(source)
    assert runner.run_all("smoke", data=source, out=str(out), cache_dir=str(tmp_path / "c")) == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err) and err.count("\n") == 1 and ":pw@" not in err
    assert cli.main(["data", "--profile", "smoke", "--data", source, "--cache", str(tmp_path / "c")]) == 2
    assert re.search(pattern, capsys.readouterr().err)
    assert not out.exists() and ran == [] and not (tmp_path / "c").exists()


def test_good_option_values_pass(tmp_path):
    from cacicd.data import mimic3
    from test_mimic3 import tiny_mimic3

    for s in ("synthetic?age_encoding=authors&ingredient_mapping=drug_concept&drug_type_concept_id=none",
              "synthetic?visit_concept_id=9201,262&allow_no_drugs=yes", "postgresql://h/db?drug_type_concept_id=38000177"):
        data.check_source(s)
    for v in ("main,BASE", "ADDITIVE", None, ["MAIN"]):
        data.check_option_values("mimic3", {"drug_types": v}, "mimic3:x")
    folder = write_tables(tmp_path / "m", tiny_mimic3())
    both = data.load_data(f"mimic3:{folder}?drug_types=main,BASE", get_profile("smoke"), tmp_path / "c")
    assert both.features == mimic3.load_mimic3(folder, drug_types=["MAIN", "BASE"]).features
    assert len(both.features) > len(mimic3.load_mimic3(folder, drug_types="MAIN").features)


# ---------------------------------------------------------------- issue 25: a repeated option is never dropped


def _all_actions(parser) -> list:
    import argparse

    out = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                out += _all_actions(sub)
        else:
            out.append((parser.prog, a))
    return out


def test_repeated_only_accumulates_and_single_valued_options_refuse_a_repetition(fake_repo, capsys):  # noqa: F811
    import argparse

    from cacicd.config import Once

    _, ran, out = fake_repo
    assert runner.main(["--profile", "smoke", "--out", str(out), "--only", "00_a", "--only", "01_b"]) == 0
    assert ran == ["00_a", "01_b"]
    ran.clear()
    assert runner.main(["--profile", "smoke", "--out", str(out), "--only", "00_a", "01_b", "--force"]) == 0
    assert ran == ["00_a", "01_b"]
    for argv in (["--profile", "smoke", "--profile", "default"], ["--data", "synthetic", "--data", "x"],
                 ["--out", "a", "--out", "b"], ["--cache", "a", "--cache", "b"]):
        with pytest.raises(SystemExit) as e:
            runner.main(argv)
        assert e.value.code == 2 and f"{argv[0]} given more than once" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["run", "dummy", "--profile", "smoke", "--fold", "0", "--fold", "1"])
    assert "--fold given more than once" in capsys.readouterr().err
    # every option of both entry points either refuses a repetition or means something repeated
    harmless = (argparse._HelpAction, argparse._StoreTrueAction, argparse._CountAction, argparse._ExtendAction)
    actions = _all_actions(cli.build_parser())
    assert len(actions) > 20
    for prog, a in actions:
        if a.option_strings:
            assert isinstance(a, (Once, *harmless)), (prog, a.option_strings, type(a))
            if isinstance(a, Once):
                with pytest.raises(SystemExit):
                    a(argparse.ArgumentParser(prog=prog), argparse.Namespace(_once_given={a.dest}), "x")
    assert ran == ["00_a", "01_b"]


# ---------------------------------------------------------------- issue 25: the recompute hint names profile, data, cache


SMOKE_SOURCE = "synthetic?age_encoding=authors"


@pytest.fixture(scope="module")
def smoke_cache(tmp_path_factory) -> Path:
    """A cache holding the smoke profile's dataset of SMOKE_SOURCE and dummy fold 0 (copy it to change it)."""
    cache = tmp_path_factory.mktemp("smoke") / "cache"
    assert cli.main(["run", "dummy", "--profile", "smoke", "--data", SMOKE_SOURCE, "--cache", str(cache), "--fold", "0"]) == 0
    return cache


def test_recompute_hint_carries_profile_data_and_cache(smoke_cache, tmp_path, capsys, monkeypatch):
    import shlex
    import shutil

    from cacicd.experiments.results import rerun_command

    cache, src = tmp_path / "cache", SMOKE_SOURCE
    shutil.copytree(smoke_cache, cache)
    args = ["--profile", "smoke", "--data", src, "--cache", str(cache), "--fold", "0"]
    [folder] = cache.glob("smoke/*/dummy/fold0")
    _cut(folder / "test_metrics.csv", 10)
    capsys.readouterr()
    assert cli.main(["evaluate", "dummy", *args]) == 2
    err = capsys.readouterr().err
    hint = f"`cacicd run dummy --profile smoke --fold 0 --data '{src}' --cache {cache}` recomputes it"
    assert hint in err
    assert cli.main(shlex.split(hint.split("`")[1])[1:]) == 0  # the command given does recompute it
    assert cli.main(["evaluate", "dummy", *args]) == 0
    r = E.load("dummy", "smoke", src, 0, cache)[0]
    assert r.source == src and E.run("dummy", "smoke", src, 0, cache)[0].source == src
    # defaults are left out; a password never shown; a dataset tells its source as far as it can
    monkeypatch.setenv("CACICD_CACHE", str(cache))
    assert rerun_command("x", "default", 1, "synthetic", cache) == "`cacicd run x --profile default --fold 1`"
    assert rerun_command("x", "smoke", 0, "postgresql://u:pw@h/db?schema=s", None) == (
        "`cacicd run x --profile smoke --fold 0 --data 'postgresql://u@h/db?schema=s'`")
    assert data.source_string("postgresql://u:pw@h/db") == "postgresql://u@h/db"
    ds = E.load_dataset(src, get_profile("smoke"), cache)
    assert data.source_string(ds) == src and data.source_string(ds.with_age_encoding("float")) == "synthetic"


# ---------------------------------------------------------------- issue 25: a read-only cache, a cache that is a file

_CLI_CALLS = """
import contextlib, io, json, sys
from cacicd import cli
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except BaseException as e:  # a traceback is what must not happen
            rc, err = repr(e), io.StringIO(repr(e))
    out.append([rc, err.getvalue()])
print(json.dumps(out))
"""


def _read_only_cli(cache: Path, calls: list[list[str]]) -> list:
    """(rc, stderr) of each `cacicd` call on `cache` made read-only: by its modes, or for root by dropping the
    capability that lets root write anywhere (setpriv), as a read-only mount would answer."""
    import shutil
    import subprocess
    import sys

    for p in [cache, *cache.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: no way to make a folder read-only")
        caps = "-dac_override,-dac_read_search,-fowner"
        prefix = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", "--"]
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(root / "tests")]))
    try:
        r = subprocess.run([*prefix, sys.executable, "-c", _CLI_CALLS, json.dumps(calls)], capture_output=True,
                           text=True, env=env, cwd=root, timeout=600)
    finally:
        for p in [cache, *cache.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def test_read_only_cache_serves_what_it_holds_and_refuses_the_rest_in_one_line(smoke_cache, tmp_path):
    import shutil

    cache = tmp_path / "ro"
    shutil.copytree(smoke_cache, cache)
    base = ["--profile", "smoke", "--data", SMOKE_SOURCE, "--cache", str(cache)]
    got = _read_only_cli(cache, [["evaluate", "dummy", *base, "--fold", "0"], ["status", *base], ["data", *base],
                                 ["run", "dummy", *base, "--fold", "0"], ["run", "dummy", *base, "--fold", "1"],
                                 ["data", "--profile", "default", "--cache", str(cache)]])
    for rc, err in got[:4]:
        assert rc == 0 and "Traceback" not in err, err
    for (rc, err), folder in zip(got[4:], [cache / "smoke", cache / "synthetic"]):
        assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert re.search(rf"cannot write in {re.escape(str(folder))}\S* \((Permission denied|Read-only file system)\): "
                         rf"--cache {re.escape(str(cache))} must be a folder this user can write in", err), err


def test_cache_path_that_is_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    f = tmp_path / "afile"
    f.write_text("x")
    for argv in (["data"], ["evaluate", "dummy", "--fold", "0"], ["status"], ["run", "dummy", "--fold", "0"]):
        assert cli.main([*argv, "--profile", "smoke", "--cache", str(f)]) == 2
        err = capsys.readouterr().err
        assert err == f"cacicd {argv[0]}: error: {f} is not a folder: --cache {f} must be a folder this user can write " \
                      "in, for what it does not hold yet\n"
    monkeypatch.setenv("CACICD_CACHE", str(f / "below"))
    assert cli.main(["data", "--profile", "smoke"]) == 2
    assert f"{f} is not a folder: the cache {f / 'below'} must be" in capsys.readouterr().err


def test_cache_files_and_folders_follow_the_umask(tmp_path):
    from cacicd.files import atomic_write_text

    old = os.umask(0o002)  # a group sharing a cache
    try:
        atomic_write_text(tmp_path / "a" / "f.txt", "x")
        folder = synthetic.default_folder(50, seed=1, root=tmp_path / "syn")
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "f.txt").stat().st_mode & 0o777 == 0o664
    assert folder.stat().st_mode & 0o777 == 0o775
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o664}


# ---------------------------------------------------------------- issue 25: no warning that is not the user's problem


def test_synthetic_data_raise_no_unknown_code_warning_real_data_still_do(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="cacicd.data.omop"):
        ds = omop.load_omop(synthetic.write_omop(tmp_path / "syn", n_stays=1000, seed=0))  # version 2: 61010, 62630
    assert ds.report["codes_unknown_icd9"] == 0 and ds.report["condition_rows_icd9_unknown"] == 0
    assert "unknown to ICD-9-CM" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="cacicd.data.omop"):
        omop.load_omop(write_tables(tmp_path / "tiny", tiny_tables()))
    assert "1 distinct code(s) unknown to ICD-9-CM dropped: 99999" in caplog.text


def test_kernels_are_shut_down_without_an_interrupt(monkeypatch):
    """jupyter_client sends SIGINT before every shutdown; a finished kernel then logged a KeyboardInterrupt."""
    import asyncio
    import signal

    from jupyter_client import AsyncKernelManager

    sent = []
    real = AsyncKernelManager._async_signal_kernel

    async def spy(self, signum):
        sent.append(signal.Signals(signum).name)
        return await real(self, signum)

    monkeypatch.setattr(AsyncKernelManager, "_async_signal_kernel", spy)

    async def one(cls) -> list[str]:
        km = cls(kernel_name="python3", config=runner.kernel_config())
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            await kc.execute_interactive("x = 1", timeout=60)
            if cls is runner.KernelManagerWithEnv:
                await km.interrupt_kernel()  # an interrupt asked for (a timeout) still reaches the kernel
        finally:
            kc.stop_channels()
            await km.shutdown_kernel()
        return sent[:]

    assert asyncio.run(one(AsyncKernelManager)) == ["SIGINT"]  # what jupyter_client does, the cause
    sent.clear()
    assert asyncio.run(one(runner.KernelManagerWithEnv)) == ["SIGINT"]  # the asked-for one only
