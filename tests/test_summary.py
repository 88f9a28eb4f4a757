"""Per-fold tables of the summary (cacicd.paper.summary), on hand-made results."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cacicd.evaluation import thresholds
from cacicd.evaluation.metrics import evaluate
from cacicd.paper import summary


def _runs():
    rng = np.random.default_rng(0)
    Y = sp.csr_matrix((rng.random((40, 6)) < 0.4).astype(np.int8))
    runs = [SimpleNamespace(fold=k, test_idx=np.arange(20 * k, 20 * k + 20), scores=rng.random((20, 6)))
            for k in range(2)]
    return Y, runs


def test_fixed_threshold_folds_label_each_table():
    Y, runs = _runs()
    masks = {lv: np.ones(6, bool) for lv in thresholds.TABLE_S4_LEVELS}
    code_mask = np.array([1, 1, 0, 1, 0, 1], bool)
    out = summary.fixed_threshold_folds({"a": runs}, Y, masks, code_mask, model="model")
    assert len(out) == 2 and list(out[1].columns[-2:]) == ["model", "fold"] and out[1]["fold"].iloc[0] == 1
    want = thresholds.fixed_threshold_table(Y[runs[1].test_idx], runs[1].scores, masks, code_mask)
    pd.testing.assert_frame_equal(out[1].drop(columns=["model", "fold"]), want)


def test_frequent_code_folds_score_only_the_frequent_codes():
    Y, runs = _runs()
    freq = np.array([1, 1, 1, 0, 0, 1], bool)
    t = summary.frequent_code_folds(runs, Y, freq)
    assert list(t.columns) == ["metric", "value", "fold"] and sorted(set(t.metric)) == ["auprc_macro", "auroc_macro"]
    want = evaluate(Y[runs[0].test_idx][:, freq], runs[0].scores[:, freq], {"f": np.ones(4, bool)},
                    metrics=("auroc_macro",))["value"].item()
    assert t[(t.fold == 0) & (t.metric == "auroc_macro")].value.item() == pytest.approx(want)


def test_level_metric_folds_levels_from_the_engine_top_groups_scored():
    Y, runs = _runs()
    for r in runs:
        r.test_metrics = pd.DataFrame({"level": ["all", "all", "chapter"], "metric": ["ndcg", "lrap", "ndcg"],
                                       "value": [0.5, 0.4, 0.3]})
    top = {"all (top50)": np.array([1, 1, 1, 0, 0, 0], bool)}
    t = summary.level_metric_folds({"m": runs}, {"m": [("ndcg", "NDCG", "%")]}, Y, {"all": np.ones(6, bool)},
                                   ["all"], top)
    assert list(t.columns) == ["experiment", "fold", "level", "metric", "value"]
    assert set(zip(t.level, t.metric)) == {("all", "ndcg"), ("all (top50)", "ndcg")}  # lrap, chapter left out
    want = evaluate(Y[runs[1].test_idx], runs[1].scores, top, metrics=("ndcg",))["value"].item()
    assert t[(t.fold == 1) & (t.level == "all (top50)")].value.item() == pytest.approx(want)


def test_table_s4_cells_and_reported_rows():
    s = pd.DataFrame({"experiment": ["a", "a", "a", "a"], "level": ["billing", "billing", "billing", "chapter"],
                      "metric": ["precision", "f1", "threshold", "f1"], "mean": [0.5, 0.25, 0.3, 0.75],
                      "sem": [0.01, 0.02, 0.0, 0.03]})
    paper = pd.DataFrame({"item": ["Table S4"] * 3, "level": ["billing (cherry-picked codes)"] * 3,
                          "model": ["Hansen et al. (reported)"] * 3, "metric": ["μF1", "recall", "precision"],
                          "value": [31.4, 20.0, 60.0]})
    t = summary.table_s4(s, {"a": "A"}, paper)
    assert list(t["level"]) == ["chapter", "billing", "billing"]  # the paper's level order
    row = t[(t.level == "billing") & (t.model == "A")].iloc[0]
    assert row["precision"] == "50.00 ± 1.00" and row["f1"] == "25.00 ± 2.00"
    hansen = t[t.model == "Hansen et al. (reported)"].iloc[0]
    assert hansen["f1"] == "31.4" and hansen["recall"] == "20.0"


def test_threshold_summary_and_table_s4_without_paper():
    folds = pd.DataFrame({"model": ["a", "a", "b", "b"], "fold": [0, 1, 0, 1], "level": "billing",
                          "precision": [0.5, 0.7, 0.2, 0.2], "recall": [0.1, 0.3, 0.4, 0.4], "f1": [0.2, 0.2, 0.3, 0.3],
                          "threshold": 0.5})
    s = summary.threshold_summary(folds, model="model", metrics=["precision", "recall", "f1"])
    assert list(s.columns) == ["model", "level", "metric", "mean", "sem", "n"] and set(s.metric) == {"precision",
                                                                                                       "recall", "f1"}
    assert s[(s.model == "a") & (s.metric == "precision")]["mean"].item() == pytest.approx(0.6)
    t = summary.table_s4(s, model="model")
    assert list(t.columns) == list(summary.S4_COLUMNS) and list(t.model) == ["a", "b"]
    assert t.iloc[0]["precision"] == "60.00 ± 10.00"
    assert list(summary.table_s4(s, model="model", model_order=["b", "a"]).model) == ["b", "a"]
