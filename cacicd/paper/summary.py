"""Per-fold tables of the paper's summary (§3.6.1) from the engine's results: Tables S4, S6, S7 and S8.

Each function takes the engine's per-fold results (`RunResult`: fold, test_idx, scores, test_metrics)
and the dataset's label matrix, and returns tidy per-fold rows for `cacicd.evaluation.stats.fold_summary`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cacicd.data import splits
from cacicd.evaluation import metrics, stats, thresholds
from cacicd.models.train import predict_proba
from cacicd.paper.report import cell_table, published_columns

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


def threshold_summary(folds: pd.DataFrame, model: str = "experiment",
                      metrics: Sequence[str] = ("precision", "recall", "f1", "threshold")) -> pd.DataFrame:
    """Fold summary (<model>, level, metric, mean, sem, n) of per-fold hard-classification tables (`*_threshold_folds`)."""
    long = folds.melt(id_vars=[model, "fold", "level"], value_vars=list(metrics), var_name="metric")
    return stats.fold_summary(long)


def table_s4(summary: pd.DataFrame, models: Mapping[str, str] | None = None, paper: pd.DataFrame | None = None,
             reported: str = "Hansen et al. (reported)", model: str = "experiment",
             model_order: Sequence[str] | None = None) -> pd.DataFrame:
    """Table S4: level x model 'mean ± SEM' (%) of precision, recall and F1, with the reported rows of the paper.

    summary: fold summary with <model>, level, metric, mean, sem (`threshold_summary`); models: <model> ->
    row label (default: the names as they are); paper: the published values (their Table S4 rows of model
    `reported` are appended as they are; none when None). Columns `S4_COLUMNS`, levels in the paper's order,
    the rows of a level in the order of the labels in `model_order` (default: alphabetical).
    """
    tab = summary[summary["metric"] != "threshold"]
    labels = tab[model] if models is None else tab[model].map(models)
    out = cell_table(tab.assign(model=labels), ["level", "model"]).reset_index()
    if paper is not None:
        hans = published_columns("Table S4", reported, {"precision": "precision", "recall": "recall", "μF1": "f1"},
                                 paper)
        hans = hans.assign(level=hans["level"].str.replace(" (cherry-picked codes)", "", regex=False), model=reported)
        out = pd.concat([out, hans.astype({c: str for c in ("precision", "recall", "f1")})], ignore_index=True)
    order = {"level": {lv: i for i, lv in enumerate(thresholds.TABLE_S4_LEVELS)},
             "model": None if model_order is None else {m: i for i, m in enumerate(model_order)}}
    out = out.sort_values(["level", "model"], key=lambda s: s if order[s.name] is None else s.map(order[s.name]))
    return out[list(S4_COLUMNS)]


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
