"""Comparisons across models and folds: tidy metrics, relative improvements, Recall@K curves, Spearman matrices.

The common currency is the tidy table with columns ``model, fold, level, metric, value`` (one row per
value; `TIDY`). Build it from the engine's results (`tidy_results`; `cacicd.experiments.collect.cached_tidy`
reads the whole cache) or by scoring
score matrices again on other label groups (`evaluate_folds`, e.g. cherry-picked billing codes).
Everything downstream is a pure function of tidy tables:

* `summarise` — mean ± SEM (ddof = 1) over folds (`cacicd.evaluation.stats.fold_summary`);
* `relative` — relative improvement vs a reference model, 100·(m/m_ref − 1), negated for RE@R,
  coverage, ECE, MCE and Brier so that positive is better, SEM scaled by 100/|m_ref|
  (`cacicd.evaluation.stats.relative_to`); keeps the reference's absolute mean (`ref_mean`) for labels;
* `recall_curves` — Recall@K per model and level as (model, level, k, mean, sem, n);
* `paired_differences` — per-fold difference of two models (mean ± SEM and paired t-test);
* `spearman_matrix` — Spearman ρ between scalar metrics and RE@R, one observation per (model, fold);
  `best_correlated` names the metric that agrees best with each RE@R (the models Fig S4 correlates:
  `cacicd.experiments.collect.full_label_experiments`).

Model names are free strings (usually experiment names); folds are integers.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cacicd.evaluation import metrics as M
from cacicd.evaluation import stats


TIDY: tuple[str, ...] = ("model", "fold", "level", "metric", "value")
RE_FIGURE: tuple[int, ...] = (25, 50, 75, 90, 100)  # the R shown in Figs 2 and S3
# Fig S4's scalar metrics (those of `cacicd.evaluation.metrics.evaluate` that are not RE@R or Recall@K)
SCALAR_METRICS: tuple[str, ...] = (
    "ndcg", "ndcg@15", "lrap", "coverage", "auprc_micro", "auprc_macro", "auroc_micro", "auroc_macro",
    "f1_micro", "f1_macro", "f1_samples", "precision_micro", "precision_macro", "precision_samples",
    "recall_micro", "recall_macro", "recall_samples", "ece", "mce", "brier",
)
_RECALL = re.compile(r"^recall@(\d+)$")
_RE = re.compile(r"^re@(\d+(?:\.\d+)?)$")


def check_tidy(df: pd.DataFrame, what: str = "metrics table") -> pd.DataFrame:
    """`df` with the `TIDY` columns only, or a clear error naming the missing ones / duplicated keys."""
    missing = [c for c in TIDY if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {list(df.columns)}")
    out = df[list(TIDY)].copy()
    dup = out.duplicated(["model", "fold", "level", "metric"])
    if dup.any():
        raise ValueError(f"{what}: {int(dup.sum())} duplicated (model, fold, level, metric) rows, first "
                         f"{out.loc[dup].iloc[0, :4].to_dict()}")
    out["value"] = out["value"].astype(np.float64)
    return out


def tidy_results(results: Mapping[str, Sequence], split: str = "test") -> pd.DataFrame:
    """Tidy table of several models' per-fold metrics.

    results: model name -> per-fold results, each either a `cacicd.experiments.results.RunResult`-like object
    (attributes `fold` and `test_metrics` / `dev_metrics`, tidy level, metric, value) or a DataFrame
    with those three columns (its fold is its position in the list).
    """
    if split not in ("test", "dev"):
        raise ValueError(f"split must be 'test' or 'dev', got {split!r}")
    parts = []
    for model, folds in results.items():
        for k, r in enumerate(folds):
            df = r if isinstance(r, pd.DataFrame) else getattr(r, f"{split}_metrics")
            fold = k if isinstance(r, pd.DataFrame) else int(r.fold)
            missing = [c for c in ("level", "metric", "value") if c not in df.columns]
            if missing:
                raise ValueError(f"{split} metrics of model {model!r} fold {fold} lack column(s) {missing}")
            parts.append(df[["level", "metric", "value"]].assign(model=model, fold=fold))
    if not parts:
        return pd.DataFrame(columns=list(TIDY))
    return check_tidy(pd.concat(parts, ignore_index=True), "tidy_results")


def identical_groups(results: Mapping[str, Sequence]) -> list[list[str]]:
    """Groups of two or more models whose test scores are equal on every fold (the same model was chosen)."""
    def fingerprint(runs) -> tuple:
        return tuple((int(r.fold), hashlib.sha256(np.ascontiguousarray(r.scores).tobytes()).hexdigest())
                     for r in sorted(runs, key=lambda r: int(r.fold)))

    groups: dict[tuple, list[str]] = {}
    for name, runs in results.items():
        groups.setdefault(fingerprint(runs), []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def evaluate_folds(y_trues: Sequence, scores: Sequence, groups: Mapping[str, np.ndarray], *,
                   model: str, metrics: Sequence[str], label_mask: np.ndarray | None = None,
                   folds: Sequence[int] | None = None, threshold: float = 0.5) -> pd.DataFrame:
    """Tidy table of `metrics` of one model on each label group, per fold (`cacicd.evaluation.metrics.evaluate`).

    y_trues[k], scores[k]: (n_k, n_codes) test labels and scores of fold k; groups: name -> (n_codes,)
    mask (e.g. level masks); label_mask: (n_codes,) restricts every group (e.g. cherry-picked codes).
    Ranking metrics rank each stay's codes within the group.
    """
    if len(y_trues) != len(scores):
        raise ValueError(f"evaluate_folds({model}): {len(y_trues)} label matrices but {len(scores)} score matrices")
    folds = list(range(len(scores))) if folds is None else list(folds)
    if len(folds) != len(scores):
        raise ValueError(f"evaluate_folds({model}): {len(folds)} fold ids for {len(scores)} folds")
    parts = [M.evaluate(t, s, groups, label_mask=label_mask, metrics=metrics, threshold=threshold)
             .assign(model=model, fold=int(k)) for k, t, s in zip(folds, y_trues, scores)]
    return check_tidy(pd.concat(parts, ignore_index=True), f"evaluate_folds({model})")


def summarise(tidy: pd.DataFrame) -> pd.DataFrame:
    """Mean ± SEM (ddof = 1) and n over folds: columns model, level, metric, mean, sem, n."""
    return stats.fold_summary(check_tidy(tidy))


def relative(tidy: pd.DataFrame, reference: str, metrics: Sequence[str] | None = None,
             levels: Sequence[str] | None = None) -> pd.DataFrame:
    """Relative improvement (%) of every model vs `reference`, per level and metric.

    Returns model, level, metric, mean, sem, n, rel, rel_sem, ref_mean (the reference's absolute mean);
    rel > 0 means better (lower-is-better metrics negated, spec section 5). Reference rows have rel 0.
    """
    t = check_tidy(tidy)
    if metrics is not None:
        t = t[t["metric"].isin(list(metrics))]
    if levels is not None:
        t = t[t["level"].isin(list(levels))]
    if reference not in set(t["model"]):
        raise ValueError(f"reference model {reference!r} has no row for these metrics/levels; "
                         f"models: {sorted(set(tidy['model']))}")
    s = stats.fold_summary(t)
    out = stats.relative_to(s, reference)
    out["rel"] = out["rel"] + 0.0  # no "-0" for the reference's own rows
    ref = s[s["model"] == reference][["level", "metric", "mean"]].rename(columns={"mean": "ref_mean"})
    return out.merge(ref, on=["level", "metric"], how="left")


def recall_curves(tidy: pd.DataFrame) -> pd.DataFrame:
    """Recall@K rows of a tidy table summarised over folds: model, level, k, mean, sem, n (sorted by k)."""
    t = check_tidy(tidy)
    k = t["metric"].str.extract(_RECALL, expand=False)
    t = t[k.notna()].assign(k=k[k.notna()].astype(int)).drop(columns="metric")
    if t.empty:
        raise ValueError("recall_curves: the table has no recall@K metric")
    return stats.fold_summary(t).sort_values(["model", "level", "k"], ignore_index=True)


def paired_differences(tidy: pd.DataFrame, model_a: str, model_b: str) -> pd.DataFrame:
    """Per (level, metric): mean ± SEM over folds of value(a) − value(b), and the paired t-test.

    Returns level, metric, mean_a, mean_b, diff, diff_sem, statistic, pvalue, n, compared. Only folds
    where both models have a value count.
    """
    t = check_tidy(tidy)
    for m in (model_a, model_b):
        if m not in set(t["model"]):
            raise ValueError(f"paired_differences: model {m!r} not in the table ({sorted(set(t['model']))})")
    w = t[t["model"].isin([model_a, model_b])].pivot_table(index=["level", "metric", "fold"], columns="model",
                                                            values="value", dropna=False)
    rows = []
    for (level, metric), g in w.groupby(level=[0, 1], sort=False):
        a, b = g[model_a].to_numpy(float), g[model_b].to_numpy(float)
        ok = np.isfinite(a) & np.isfinite(b)
        d, dsem, n = stats.mean_sem(a[ok] - b[ok])
        test = stats.paired_ttest(a[ok], b[ok], f"{model_a} vs {model_b}, {metric} at level {level}")
        rows.append({"level": level, "metric": metric, "mean_a": stats.mean_sem(a[ok])[0],
                     "mean_b": stats.mean_sem(b[ok])[0], "diff": d, "diff_sem": dsem,
                     "statistic": test.statistic, "pvalue": test.pvalue, "n": n, "compared": test.compared})
    return pd.DataFrame(rows)


def spearman_matrix(tidy: pd.DataFrame, level: str = "all", scalar_metrics: Sequence[str] | None = None,
                    r_values: Sequence[float] = M.RE_R) -> pd.DataFrame:
    """Spearman ρ (and p-value) between each scalar metric and each RE@R over the (model, fold) pairs at one level.

    Returns metric, target (re@R), rho, pvalue, n, compared. Metrics absent from the table are skipped;
    with fewer than 3 observations ρ is NaN.
    """
    t = check_tidy(tidy)
    t = t[t["level"] == level]
    if t.empty:
        raise ValueError(f"spearman_matrix: no row at level {level!r}")
    w = t.pivot_table(index=["model", "fold"], columns="metric", values="value", dropna=False)
    scalars = [m for m in (SCALAR_METRICS if scalar_metrics is None else scalar_metrics) if m in w.columns]
    targets = [f"re@{r:g}" for r in r_values if f"re@{r:g}" in w.columns]
    if not scalars or not targets:
        raise ValueError(f"spearman_matrix: need scalar metrics and re@R columns; have {list(w.columns)[:20]}…")
    rows = []
    for m in scalars:
        for tg in targets:
            r = stats.spearman(w[m].to_numpy(float), w[tg].to_numpy(float),
                               f"{m} vs {tg} at level {level} over (model, fold) pairs")
            rows.append({"metric": m, "target": tg, "rho": r.statistic, "pvalue": r.pvalue, "n": r.n,
                         "compared": r.compared})
    return pd.DataFrame(rows)


def best_correlated(spearman: pd.DataFrame, exclude: Sequence[str] = ()) -> pd.DataFrame:
    """Per RE@R target, the scalar metric that agrees best with it: target, metric, rho, agreement.

    agreement = −ρ for higher-is-better metrics and +ρ for lower-is-better ones (ECE, MCE, Brier,
    coverage), so a metric that ranks models as RE@R does scores near 1 and one that ranks them the
    other way near −1 (a large |ρ| of the wrong sign is not a good target). `exclude`: metrics left out.
    """
    s = spearman_agreement(spearman)
    s = s[~s["metric"].isin(list(exclude))].dropna(subset=["agreement"])
    if s.empty:
        return pd.DataFrame(columns=["target", "metric", "rho", "agreement"])
    idx = s.groupby("target", sort=False)["agreement"].idxmax()
    return s.loc[idx, ["target", "metric", "rho", "agreement"]].reset_index(drop=True)


def spearman_agreement(spearman: pd.DataFrame) -> pd.DataFrame:
    """`spearman_matrix` output with `agreement` = ρ signed so that positive means "ranks models as RE@R does"."""
    sign = np.where([M.lower_is_better(m) for m in spearman["metric"]], 1.0, -1.0)
    return spearman.assign(agreement=sign * spearman["rho"].to_numpy(float))


def re_of(metric: str) -> float:
    """R of an 're@R' metric name (NaN otherwise)."""
    m = _RE.match(metric)
    return float(m.group(1)) if m else float("nan")



def recall_differences(tidy: pd.DataFrame, model_a: str, model_b: str) -> pd.DataFrame:
    """`paired_differences` of two models' Recall@K rows with their K (column k), sorted by level and K."""
    d = paired_differences(tidy, model_a, model_b)
    d["k"] = d["metric"].str.slice(len("recall@")).astype(int)
    return d.sort_values(["level", "k"], ignore_index=True)


def mean_agreement(spearman: pd.DataFrame, exclude: Sequence[str] = ()) -> pd.Series:
    """Each scalar metric's mean agreement with RE@R over the targets (`spearman_agreement`), best first."""
    agree = spearman_agreement(spearman)
    return (agree[~agree["metric"].isin(list(exclude))].groupby("metric")["agreement"].mean()
            .sort_values(ascending=False))
