"""Per-fold tables of the paper's summary (§3.6.1) from the engine's results: Tables S4, S6, S7 and S8.

Each function takes the engine's per-fold results (`RunResult`: fold, test_idx, scores, test_metrics)
and the dataset's label matrix, and returns tidy per-fold rows for `cacicd.evaluation.stats.fold_summary`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cacicd.data import splits
from cacicd.evaluation import metrics, thresholds
from cacicd.models.train import predict_proba
from cacicd.paper.report import cell_table

S4_COLUMNS = ("level", "model", "precision", "recall", "f1")


def fixed_threshold_folds(runs: Mapping[str, Sequence], Y, level_masks: Mapping[str, np.ndarray],
                          code_mask: np.ndarray, model: str = "experiment") -> list[pd.DataFrame]:
    """Hard classification at 0.5 (`thresholds.fixed_threshold_table`) of each experiment and fold, with <model>, fold.

    runs: experiment -> per-fold results; Y: (n_stays, n_codes) labels of the whole dataset.
    """
    return [thresholds.fixed_threshold_table(Y[r.test_idx], r.scores, level_masks, code_mask)
            .assign(**{model: exp}, fold=r.fold) for exp, rs in runs.items() for r in rs]


def adaptive_threshold_folds(runs: Sequence, dataset, fold_splits: Sequence, level_masks: Mapping[str, np.ndarray],
                             code_mask: np.ndarray, experiment: str = "naive_auprc_micro"
                             ) -> tuple[list[pd.DataFrame], str | None]:
    """Adaptive per-level thresholds (Appendix K) of one experiment's folds: the dev set predicted again by its model.

    Returns (per-fold `thresholds.adaptive_threshold_table`s with experiment, fold; why they stop short:
    None, or the message of the first missing model).
    """
    out = []
    for r in runs:
        try:
            model = r.load_model()
        except FileNotFoundError as exc:
            return out, str(exc)
        _, dev_idx, test_idx = splits.split_indices(dataset, fold_splits[r.fold])
        if not np.array_equal(np.sort(test_idx), np.sort(r.test_idx)):
            raise RuntimeError(f"fold {r.fold}: cached test rows differ from the splits' test rows")
        p_dev = predict_proba(model, dataset.X[dev_idx])
        if p_dev.shape[1] != len(dataset.codes):
            raise RuntimeError(f"{experiment} has {p_dev.shape[1]} outputs, expected {len(dataset.codes)} codes")
        t = thresholds.adaptive_threshold_table(dataset.Y[dev_idx], p_dev, dataset.Y[r.test_idx], r.scores,
                                                level_masks, code_mask)
        out.append(t.assign(experiment=experiment, fold=r.fold))
    return out, None


def table_s4(summary: pd.DataFrame, models: Mapping[str, str], paper: pd.DataFrame,
             reported: str = "Hansen et al. (reported)") -> pd.DataFrame:
    """Table S4: level x model 'mean ± SEM' (%) of precision, recall and F1, with the reported rows of the paper.

    summary: fold summary with experiment, level, metric, mean, sem; models: experiment -> row label;
    paper: the published values (their Table S4 rows of model `reported` are appended as they are).
    """
    tab = summary[summary["metric"] != "threshold"]
    out = cell_table(tab.assign(model=tab["experiment"].map(models)), ["level", "model"]).reset_index()
    hansen = paper[(paper["item"] == "Table S4") & (paper["model"] == reported)]
    hans = hansen.assign(level=hansen["level"].str.replace(" (cherry-picked codes)", "", regex=False),
                         metric=hansen["metric"].map({"precision": "precision", "recall": "recall", "μF1": "f1"}))
    hans = hans.pivot_table(index=["level", "model"], columns="metric", values="value", aggfunc="first").reset_index()
    out = pd.concat([out, hans.astype({c: str for c in ("precision", "recall", "f1")})], ignore_index=True)
    order = {lv: i for i, lv in enumerate(thresholds.TABLE_S4_LEVELS)}
    return out.sort_values(["level", "model"], key=lambda s: s.map(order) if s.name == "level" else s)


def frequent_code_folds(runs: Sequence, Y, frequent: np.ndarray) -> pd.DataFrame:
    """Macro AUROC and AUPRC over the frequent codes (Table S6) per fold: metric, value, fold."""
    parts = [metrics.evaluate(Y[r.test_idx], r.scores, {"frequent": np.ones(Y.shape[1], bool)}, label_mask=frequent,
                              metrics=("auroc_macro", "auprc_macro")).assign(fold=r.fold) for r in runs]
    return pd.concat(parts, ignore_index=True).drop(columns="level")


def level_metric_folds(runs: Mapping[str, Sequence], spec: Mapping[str, list[tuple[str, str, str]]], Y,
                       level_masks: Mapping[str, np.ndarray], levels: Sequence[str],
                       top: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Tables S7 and S8 per fold: each experiment's metrics of `spec` at `levels` and on the `top` code groups.

    spec: experiment -> [(metric, paper metric, unit)] (`report.TABLE_S7`, `TABLE_S8`); the engine's test
    metrics give the levels, the top groups are scored here; RE@R also the authors' way (re_authors@R,
    re_left_out@R) on both. Returns experiment, fold, level, metric, value.
    """
    per_fold = []
    for exp, mets in spec.items():
        names = [m for m, _, _ in mets]
        authors = list(metrics.authors_metrics(names))
        for r in runs[exp]:
            t = r.test_metrics[r.test_metrics["level"].isin(levels) & r.test_metrics["metric"].isin(names)]
            parts = [t, metrics.evaluate(Y[r.test_idx], r.scores, top, metrics=tuple(names))]
            if authors:
                parts.append(metrics.evaluate(Y[r.test_idx], r.scores, {**{lv: level_masks[lv] for lv in levels},
                                                                        **top}, metrics=tuple(authors)))
            per_fold.append(pd.concat(parts).assign(experiment=exp, fold=r.fold))
    return pd.concat(per_fold, ignore_index=True)[["experiment", "fold", "level", "metric", "value"]]
