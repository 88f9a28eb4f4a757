"""Replication report: loading, matching, flags and rendering on small hand-made tables."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cacicd.paper import report
from cacicd.paper.claims import Claim, save_claims

PAPER_CSV = """item,level,model,metric,value,sem,unit,source
Table S7,chapter,NDCG-tuned naive multitask,NDCG,92.33,0.08,%,cell 92
Table S7,chapter,NDCG-tuned naive multitask,RE@25,0.404,0.008,count,cell 92
Table S7 per-fold,chapter,NDCG-tuned naive multitask [fold 0],NDCG,0.924,,ratio,cell 92
Table S4,billing (cherry-picked codes),μF1-tuned all codes,μF1,31.39,0.05,%,cell 84
Table 1,all,MIMIC-III,unique codes,9336,,count,paper text
Section 3.6.2,all,T4 GPU batch 1024 (NDCG-tuned naive multitask),runtime_s,1.92,0.19,s,paper text
Fig 6,billing,NDCG-tuned naive multitask (all codes),Recall@30,0.570452,,ratio,cell 71
"""


@pytest.fixture
def paper(tmp_path):
    (tmp_path / "ref").mkdir()
    p = tmp_path / "ref" / "paper_values.csv"
    p.write_text(PAPER_CSV)
    return report.load_paper_values(p)


def test_shipped_reference_is_the_spec():
    df = report.load_paper_values()
    assert len(df) == 1039 and not df.duplicated(list(report.KEY)).any()
    spec = Path(__file__).resolve().parents[2] / "shared" / "spec" / "paper_values.csv"
    if spec.exists():
        assert spec.read_bytes() == report.PAPER_VALUES.read_bytes()
    assert len(report.parse_disagreements(report.PAPER_NOTES.read_text())) == 5


def test_load_errors(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("item,level,model,metric,value,sem,unit,source\nT,a,b,c,abc,,%,x\n")
    with pytest.raises(ValueError, match="non-numeric value 'abc' on row 2"):
        report.load_paper_values(p)
    p.write_text("item,level,model,metric,value,sem,unit,source\nT,a,b,c,1,,furlong,x\n")
    with pytest.raises(ValueError, match="furlong"):
        report.load_paper_values(p)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        report.load_paper_values(tmp_path / "nope.csv")


def test_flag_rules():
    # both SEMs: combined 0.05 (3-4-5), a difference of 0.049 agrees, 0.051 differs
    assert report.flag(1.049, 1.0, 0.03, 0.04)[:2] == (False, pytest.approx(0.05))
    assert report.flag(1.051, 1.0, 0.03, 0.04)[0] is True
    assert report.flag(1.051, 1.0, 0.03, 0.04)[2] == "SEM"
    # a SEM missing: relative tolerance of 5 %
    d, tol, basis = report.flag(104.0, 100.0, np.nan, 0.01)
    assert (d, tol) == (False, pytest.approx(5.0)) and "no SEM of ours" in basis
    assert report.flag(106.0, 100.0)[0] is True and "no SEM" in report.flag(106.0, 100.0)[2]
    assert report.flag(0.0, 0.0)[0] is False and report.flag(0.1, 0.0)[0] is True


def test_compare_matches_converts_and_flags(paper):
    ours = pd.DataFrame([
        # ratio vs %: 0.9240 -> 92.40, diff 0.07 < hypot(0.08, 0.001*100=0.1) -> agrees
        {"item": "Table S7", "level": "Chapter", "model": "NDCG-tuned  naive multitask", "metric": "ndcg",
         "value": 0.9240, "sem": 0.001, "unit": "ratio"},
        # beyond the combined SEMs
        {"item": "Table S7", "level": "chapter", "model": "NDCG-tuned naive multitask", "metric": "RE@25",
         "value": 0.5, "sem": 0.01, "unit": "count"},
        # micro sign (U+00B5) vs Greek mu (U+03BC); no SEM of ours -> 5 % rule: 31.39*0.05 = 1.57
        {"item": "Table S4", "level": "billing (cherry-picked codes)", "model": "\u00b5F1-tuned all codes",
         "metric": "\u00b5F1", "value": 30.0, "sem": np.nan, "unit": "%"},
        # matched through paper_model: another device than the paper's
        {"item": "Section 3.6.2", "level": "all", "model": "Intel CPU batch 1024", "metric": "runtime_s",
         "value": 30.0, "sem": 1.0, "unit": "s", "paper_model": "T4 GPU batch 1024 (NDCG-tuned naive multitask)"},
        {"item": "Fig 6", "level": "billing", "model": "NDCG-tuned naive multitask (all codes)", "metric": "Recall@30",
         "value": np.nan, "sem": np.nan, "unit": "ratio"},
        {"item": "Table S99", "level": "x", "model": "y", "metric": "z", "value": 1.0, "sem": np.nan, "unit": "%"},
    ])
    ours["table"] = "t"
    c = report.compare(paper, ours).set_index(["item", "metric"])
    assert ("Table S7 per-fold", "NDCG") not in c.index  # per-fold rows are not compared
    assert c.loc[("Table S7", "NDCG"), "ours"] == pytest.approx(92.40)
    assert c.loc[("Table S7", "NDCG"), "ours_sem"] == pytest.approx(0.1)
    assert c.loc[("Table S7", "NDCG"), "status"] == "agrees"
    assert c.loc[("Table S7", "RE@25"), "status"] == "differs"
    assert c.loc[("Table S7", "RE@25"), "diff"] == pytest.approx(0.096)
    assert c.loc[("Table S4", "μF1"), "status"] == "agrees"
    assert "5%" in c.loc[("Table S4", "μF1"), "basis"]
    assert c.loc[("Section 3.6.2", "runtime_s"), "status"] == "differs"
    assert c.loc[("Fig 6", "Recall@30"), "status"] == "regenerated as NaN"
    assert c.loc[("Table 1", "unique codes"), "status"] == "not regenerated"
    un = report.unmatched_regenerated(paper, ours)
    assert list(un["item"]) == ["Table S99"]


def test_long_rows_and_read_regenerated(tmp_path, paper):
    tidy = pd.DataFrame({"level": ["chapter"], "metric": ["NDCG"], "mean": [0.9233], "sem": [0.0008]})
    long = report.long_rows(tidy, "Table S7", model="NDCG-tuned naive multitask", value="mean", unit="ratio")
    assert list(long.columns) == ["item", "level", "model", "metric", "value", "sem", "unit"]
    with pytest.raises(ValueError, match="no 'model' column"):
        report.long_rows(tidy, "Table S7", value="mean")
    long.to_csv(tmp_path / "paper_s7.csv", index=False)
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "other.csv", index=False)  # not paper-comparable: ignored
    (tmp_path / "broken.csv").write_bytes(b"\xff\xfe\x00garbage\n\"unterminated")
    ours, used = report.read_regenerated(tmp_path)
    assert used == ["paper_s7.csv"] and ours["table"].tolist() == ["paper_s7"]
    c = report.compare(paper, ours)
    row = c[(c["item"] == "Table S7") & (c["metric"] == "NDCG")].iloc[0]
    assert row["status"] == "agrees" and row["ours"] == pytest.approx(92.33)
    empty, used = report.read_regenerated(tmp_path / "absent")
    assert used == [] and len(empty) == 0
    assert (report.compare(paper, empty)["status"] == "not regenerated").all()


def test_run_log_claims_and_render(tmp_path, paper):
    (tmp_path / "run_log.json").write_text(json.dumps({"00_data": {"key": "k", "wall_s": 12.5, "finished": "t",
                                                                   "profile": "smoke", "data": "synthetic"}}))
    log = report.read_run_log(tmp_path)
    assert log.loc[0, "notebook"] == "00_data" and log.loc[0, "wall_s"] == 12.5
    assert len(report.read_run_log(tmp_path / "none")) == 0
    save_claims([Claim("3.6", "a", "gain at K=30", True, "5 points"),
                 Claim("3.6", "b", "adaptive threshold wins", False, "−1 point"),
                 Claim("3.6", "c", "x", None, "one fold")], "06_summary", tmp_path)
    from cacicd.paper.claims import load_claims

    claims = load_claims(tmp_path)
    assert report.claim_counts(claims) == {"reproduced": 1, "not reproduced": 1, "not checkable": 1, "withheld": 0,
                                           "total": 3}
    ours = report.long_rows(pd.DataFrame({"metric": ["NDCG"], "value": [0.5]}), "Table S7", level="chapter",
                            model="NDCG-tuned naive multitask")
    ours["table"] = "paper_s7"
    c = report.compare(paper, ours)
    md = report.render(c, synthetic=True, provenance={"data": "synthetic (hash abc)", "profile": "smoke"},
                       versions={"numpy": "2.0"}, run_log=log, claims=claims,
                       disagreements=["one", "two"], tables_read=["paper_s7.csv"])
    assert md.index("Synthetic data") < md.index("## Summary")
    assert "for **form only**" in md
    assert "calibrated to these outputs only" in md and "P(V58.61 | warfarin) 11/32" in md  # cacicd.data.synthetic
    assert "- Age. Our models read age as a float" in md
    assert "**1 reproduced**, **1 not reproduced**, 1 not checkable" in md
    assert "Verdict rule: Verdicts are withheld (not checkable) on the smoke profile" in md
    assert "## RE@R like for like" in md and "No published RE@R value was regenerated" in md
    assert "Splits. The authors' split files suggest that their third fold trained on about 44,000" in md
    assert "Published values compared: **1** of 6" in md and "**0 agree**, **1 differ**" in md
    assert "| chapter | NDCG-tuned naive multitask | NDCG | % | 92.33 ± 0.08 | 50 | -42.33 |" in md
    assert "1 published value(s) of Table S7 have no regenerated counterpart" in md
    assert "## Not regenerated in this run" in md and "- Table 1 (1 published values)" in md
    assert "| 00_data | 12.5 | t |" in md and "1. one\n2. two" in md
    md_real = report.render(c, synthetic=False, provenance={}, versions={}, run_log=log.iloc[:0])
    assert "Synthetic data" not in md_real and "No run_log.json" in md_real


def test_parse_disagreements_and_versions():
    md = "# T\n## Where they disagree\nintro\n1. first\n   continued\n2. second\n## Next\n3. not this\n"
    assert report.parse_disagreements(md) == ["first continued", "second"]
    assert report.parse_disagreements("# nothing") == []
    v = report.package_versions(["numpy", "surely-not-a-package-xyz"])
    assert v["numpy"] == np.__version__ and v["surely-not-a-package-xyz"] == "not installed"


def test_top_frequent_and_frequent_masks():
    counts = np.array([5, 9, 1, 9, 7, 3])
    mask = np.array([True, True, True, False, True, True])
    got = report.top_frequent_mask(counts, mask, n=3)
    assert got.tolist() == [True, True, False, False, True, False]  # 9, 7, 5 among the masked
    assert report.top_frequent_mask(counts, mask, n=50).sum() == 5
    assert report.frequent_mask(counts, n_stays=500, min_fraction=0.01).tolist() == [True, True, False, True, True,
                                                                                      False]
    with pytest.raises(ValueError, match="shape"):
        report.top_frequent_mask(counts, mask[:3])


def test_metric_table_rows_scale_and_labels(paper):
    summ = pd.DataFrame({"experiment": ["naive_ndcg", "naive_ndcg", "naive_ndcg", "naive_auroc_micro"],
                         "level": ["chapter", "chapter", "5digit", "chapter"],
                         "metric": ["ndcg", "re@25", "ndcg", "auroc_micro"],
                         "mean": [0.9233, 0.41, 0.5, 0.89], "sem": [0.0008, 0.01, 0.1, 0.001]})
    rows = report.metric_table_rows(summ, "Table S7", report.TABLE_S7, levels={"chapter": "chapter"})
    assert rows[["metric", "value", "unit"]].values.tolist() == [["NDCG", pytest.approx(92.33), "%"],
                                                                 ["RE@25", pytest.approx(0.41), "count"]]
    c = report.compare(paper, rows.assign(table="x"))
    assert set(c.loc[c["status"] != "not regenerated", "metric"]) == {"NDCG", "RE@25"}
    assert rows["value_authors"].isna().all()  # no re_authors@25 in the summary
    s8 = report.metric_table_rows(summ, "Table S8", report.TABLE_S8)
    assert s8[["model", "metric"]].values.tolist() == [["μAUROC-tuned naive multitask", "micro AUROC"]]
    with pytest.raises(ValueError, match="lacks column"):
        report.metric_table_rows(summ.drop(columns="sem"), "Table S7", report.TABLE_S7)


def test_hyperparameter_tables():
    hp = report.hyperparameter_table([
        ("naive_auroc_macro", 0, {"num_layers": 3, "units": 3840, "dropout": 0.72, "batchnorm": True}),
        ("per_level_ndcg", 1, {"level_chapter_ndcg": {"num_layers": 1}}),
        ("focal_ndcg", 2, {"num_layers": 1, "units": 512, "dropout": 0.31, "batchnorm": False, "loss_gamma": 2.5}),
    ])  # best_params as the engine saves them: the search's configuration (one units value, one dropout rate)
    assert len(hp) == 10 and "level_chapter_ndcg.num_layers" in set(hp.parameter)
    s10 = report.table_s10_rows(hp)
    got = {(r.model, r.metric): r.value for r in s10.itertuples()}
    assert got == {("macro-AUROC-tuned naive multitask [fold 0]", "batch normalization"): 1.0,
                   ("macro-AUROC-tuned naive multitask [fold 0]", "number of layers"): 3.0,
                   ("macro-AUROC-tuned naive multitask [fold 0]", "number of units"): 3840.0,
                   ("macro-AUROC-tuned naive multitask [fold 0]", "dropout rate"): 0.72,
                   **{(f"{report.experiment_label('focal_ndcg')} [fold 2]", k): v for k, v in (
                       ("batch normalization", 0.0), ("number of layers", 1.0), ("number of units", 512.0),
                       ("dropout rate", 0.31))}}
    assert s10["value"].notna().all()
    paper = report.load_paper_values()
    c = report.compare(paper, s10.assign(table="s10"))
    hit = c[(c["item"] == "Table S10") & (c["status"] != "not regenerated")]
    assert len(hit) == 4 and (hit["status"] == "agrees").all()  # dropout .72 vs .719302: within 5 %


def test_adapters_for_data_tables(tmp_path):
    pd.DataFrame({"level": ["chapter", "all"], "icd9cm": [19, 17726], "dataset": [19, 9000],
                  "cherry_picked": [16, 1234]}).to_csv(tmp_path / "table1_unique_codes.csv", index=False)
    pd.DataFrame({"level": ["chapter"], "min": [0.0], "max": [16.0], "median": [6.0], "mean": [5.77],
                  "sd": [2.97]}).to_csv(tmp_path / "table2_codes_per_stay.csv", index=False)
    ours, used = report.read_regenerated(tmp_path)
    assert used == ["table1_unique_codes.csv", "table2_codes_per_stay.csv"]
    c = report.compare(report.load_paper_values(), ours)
    t1 = c[(c["item"] == "Table 1") & (c["status"] != "not regenerated")].set_index(["level", "model"])
    assert len(t1) == 6
    assert t1.loc[("all", "MIMIC-III"), "ours"] == 9000 and t1.loc[("all", "MIMIC-III"), "status"] == "agrees"
    assert t1.loc[("all", "cherry-picked subset"), "status"] == "agrees"
    t2 = c[(c["item"] == "Table 2") & (c["status"] != "not regenerated")]
    assert len(t2) == 5 and (t2["status"] == "agrees").all()


def test_re_like_for_like_rows_and_section(tmp_path, paper):
    # our exact RE@25 with the authors' way and the share left out, from a fold summary, through a CSV
    summ = pd.DataFrame({"experiment": ["naive_ndcg"] * 3, "level": ["chapter"] * 3,
                         "metric": ["re@25", "re_authors@25", "re_left_out@25"],
                         "mean": [0.38, 0.41, 0.03], "sem": [0.01, 0.008, 0.001]})
    rows = report.metric_table_rows(summ, "Table S7", report.TABLE_S7, model_suffix="")
    assert rows[["value", "value_authors", "sem_authors", "left_out"]].values.tolist() == [[0.38, 0.41, 0.008, 0.03]]
    rows.to_csv(tmp_path / "paper_x.csv", index=False)
    ours, _ = report.read_regenerated(tmp_path)
    c = report.compare(paper, ours)
    t = report.re_like_for_like(c)
    assert t[["level", "metric", "ours", "ours_authors", "left_out"]].values.tolist() == [
        ["chapter", "RE@25", 0.38, 0.41, 0.03]]
    md = report.render(c, synthetic=False, provenance={}, versions={}, run_log=pd.DataFrame())
    line = next(x for x in md.splitlines() if x.startswith("| Table S7 | chapter |") and "RE@25" in x)
    assert "| 0.38 ± 0.01 | 0.41 ± 0.008 | 3.0 % |" in line and "agrees (SEM)" in line  # published 0.4043 ± 0.0082
    assert "1 published RE@R values regenerated, 1 of them also the authors' way" in md


def test_claims_withheld_under_the_rule(tmp_path, capsys):
    from cacicd.paper import claims as CL

    assert CL.withheld_reason("smoke", 5000) == "smoke profile: its numbers are meaningless by design"
    assert CL.withheld_reason("smoke", 19).endswith("by design; 19 test stays a fold, fewer than 500")
    assert CL.withheld_reason("default", 19) == "19 test stays a fold, fewer than 500"
    assert CL.withheld_reason("default", 875) is None and CL.withheld_reason("paper", 5000) is None
    try:
        CL.configure("default", 19)
        c = CL.check("3.1", "k", "a claim", True, "Recall@30 +4.2 points")
        assert c.supported is None and c.withheld == "19 test stays a fold, fewer than 500"
        assert c.evidence.endswith("numbers: Recall@30 +4.2 points")
        assert "[NOT CHECKABLE]" in capsys.readouterr().out
        CL.save_claims([c], "x", tmp_path)
        cc = report.claim_counts(CL.load_claims(tmp_path))
        assert cc["withheld"] == 1 and cc["not checkable"] == 1 and cc["reproduced"] == 0
    finally:
        CL.configure("default", 10_000)
    assert CL.check("3.1", "k", "a claim", True, "x").supported is True


def test_experiment_display_names_come_from_the_declarations():
    assert report.experiment_label("naive_auprc_micro") == "μAUPRC-tuned naive multitask"
    assert report.experiment_label("cherry_f1_micro") == "μF1-tuned cherry-picked (Hansen-like)"
    assert report.experiment_label("per_level_ndcg") == "per_level_ndcg"  # no label: the name
    assert report.experiment_label("not_an_experiment") == "not_an_experiment"
    assert report.experiment_short("naive_ndcg") == "naive multitask"
    assert report.experiment_short("mcloss_ndcg") == "MCLoss"
    assert report.experiment_tuned_on("naive_auroc_macro") == "macro AUROC"


def test_paper_row_and_table_keep_the_long_columns_first():
    rows = [report.paper_row("Fig 2", "all", "m", "RE@25", 1.5, 0.1, "count", value_authors=1.4),
            report.paper_row("Fig S4", "all", "m", "rho", 0.5, unit="ratio", paper_model="p")]
    t = report.paper_table(rows)
    assert list(t.columns) == [*report.LONG_COLUMNS, "value_authors", "paper_model"]
    assert np.isnan(t.loc[1, "sem"]) and t.loc[0, "value_authors"] == 1.4 and pd.isna(t.loc[0, "paper_model"])
    block = pd.DataFrame([report.paper_row("Table S7", "all", "m", "NDCG", 90.0, 1.0, "%")])
    mixed = report.paper_table([block, rows[0]])
    assert list(mixed["item"]) == ["Table S7", "Fig 2"] and len(mixed.columns) == 8
    empty = report.paper_table([], columns=[*report.LONG_COLUMNS, "paper_model"])
    assert empty.empty and list(empty.columns) == [*report.LONG_COLUMNS, "paper_model"]
    with pytest.raises(ValueError, match="unit"):
        report.paper_row("x", "all", "m", "k", 1.0, unit="points")


def test_paper_value_lookups(paper):
    p = paper
    assert report.paper_value("Section 3.6.2", "runtime_s", paper=p) == 1.92
    assert report.paper_sem("Section 3.6.2", "runtime_s", paper=p) == 0.19
    assert report.paper_value("Table S7", "NDCG", level="chapter", paper=p) == 92.33
    with pytest.raises(KeyError):
        report.paper_value("Table S7", "nothing", paper=p)
    values = report.paper_values_of("Table S7", paper=p)
    assert values[("chapter", "NDCG-tuned naive multitask", "RE@25")] == 0.404
    with pytest.raises(KeyError):
        report.paper_values_of("Table 99", paper=p)


def test_published_values_of_the_notebooks_are_in_the_reference():
    assert report.paper_value("Section 3.1", "Mann-Whitney U p (entropy reduction: filtered-out roots vs "
                              "cherry-picked codes)") == 0.155
    assert report.paper_value("dataset", "stays (visit_occurrence rows; paper calls them ICU stays)") == 58976
    t2 = report.published_columns("Table 2", "MIMIC-III (complete code set)",
                                  {"codes per stay median": "paper_median", "codes per stay mean": "paper_mean"})
    assert list(t2.columns) == ["level", "paper_median", "paper_mean"]
    assert t2.set_index("level").loc["all"].tolist() == [34, 39.54]
    ours = pd.DataFrame({"level": ["all", "nowhere"], "mean": [40.0, 1.0]})
    both = report.table2_with_paper(ours)  # the levels of both, the published columns beside ours
    assert both.columns.tolist() == ["level", "mean", "paper_median", "paper_mean"]
    assert both.values.tolist() == [["all", 40.0, 34, 39.54]]


def test_mean_sem_cells_and_cell_table():
    assert report.mean_sem_cells([0.1234], [0.0056], scale=100) == ["12.34 ± 0.56"]
    assert report.mean_sem_cells([1.23456], [0.0123], fmt=".4g", sem_fmt=".2g") == ["1.235 ± 0.012"]
    s = pd.DataFrame({"level": ["a", "a", "b"], "metric": ["f1", "recall", "f1"], "mean": [0.5, 0.25, 0.125],
                      "sem": [0.01, 0.02, np.nan]})
    t = report.cell_table(s, "level")
    assert t.loc["a", "f1"] == "50.00 ± 1.00" and t.loc["b", "f1"] == "12.50 ± nan" and pd.isna(t.loc["b", "recall"])


def test_baseline_re_rows():
    rel = pd.DataFrame({"level": ["all", "all"], "R": [25, 50], "mean": [3.0, 7.0], "sem": [0.1, 0.2]})
    authors = pd.DataFrame({"level": ["all"] * 4, "metric": ["re_authors@25", "re_left_out@25", "re_authors@50",
                                                            "re_left_out@50"],
                            "mean": [2.5, 0.1, 6.0, 0.2], "sem": [0.05, 0.0, 0.1, 0.0]}).set_index(["level", "metric"])
    rows = report.baseline_re_rows(rel, authors, "Fig 2", ["all"], [25, 50])
    assert [r["metric"] for r in rows] == ["RE@25", "RE@50"]
    assert rows[1] == {"item": "Fig 2", "level": "all", "model": "μF1-tuned naive multitask (baseline)",
                       "metric": "RE@50", "value": 7.0, "sem": 0.2, "unit": "count", "value_authors": 6.0,
                       "sem_authors": 0.1, "left_out": 0.2}


def test_load_paper_values_cached_copy(tmp_path):
    a = report.load_paper_values()
    a.loc[:, "value"] = -1.0  # a caller's change never reaches the cache
    b = report.load_paper_values()
    assert (b["value"] != -1.0).any() and b is not report.load_paper_values()
    p = tmp_path / "values.csv"
    b.head(2).to_csv(p, index=False)
    assert len(report.load_paper_values(p)) == 2
    b.head(3).to_csv(p, index=False)
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # an edited file is read again
    assert len(report.load_paper_values(p)) == 3


def test_report_names_outputs_relative_to_its_folder(tmp_path):
    out = report.output_paths(tmp_path / "run" / "tables", tmp_path / "run" / "figures")
    assert out == {"tables": ". (this report's folder)", "figures": "../figures"}
    assert str(tmp_path) not in "".join(out.values())
