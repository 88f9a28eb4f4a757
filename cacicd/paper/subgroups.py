"""Analyses of the paper's sections 3.3–3.5: metrics by stay type (Table S9), median rank against code
frequency (Fig S6), paired t-tests over folds (Fig S5), hierarchical consistency of predictions, runtimes.

Per-fold inputs are plain arrays (y_true (n, L) 0/1 dense or sparse, y_score (n, L) float) or tidy
DataFrames with columns (model, fold, level, metric, value), the form of the engine's per-fold test
metrics once a `model` and a `fold` column are added.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cacicd.evaluation import compare
from cacicd.evaluation import metrics as M
from cacicd.evaluation import stats as ST

logger = logging.getLogger(__name__)

REPORTED_STAY_TYPES: tuple[str, ...] = ("newborn", "surgical", "medical")
KNOWN_STAY_TYPES: tuple[str, ...] = REPORTED_STAY_TYPES + ("unknown",)
TABLE_S9_LEVELS: tuple[str, ...] = ("all", "chapter", "subchapter", "3digit", "billing")
TABLE_S9_METRICS: tuple[str, ...] = ("ndcg", "ndcg@15", "re@25", "re@50", "re@75", "re@100")
# Table S9's columns as the authors computed them: ranking metrics of the NDCG-tuned model (RE@R also the
# published way and its left-out share), each soft-classification metric from the model tuned on it
TABLE_S9_MODELS: dict[str, tuple[str, ...]] = {
    "naive_ndcg": TABLE_S9_METRICS + M.authors_metrics(TABLE_S9_METRICS),
    "naive_auroc_micro": ("auroc_micro",), "naive_auroc_macro": ("auroc_macro",),
    "naive_auprc_micro": ("auprc_micro",), "naive_auprc_macro": ("auprc_macro",),
}


# ------------------------------------------------------------------------------ stay types (Table S9)

def stay_type_counts(stay_type: Sequence[str]) -> pd.Series:
    """Number of stays of each known stay type (newborn, surgical, medical, unknown), zeros included."""
    st = _check_stay_type(stay_type, None)
    return pd.Series({t: int(np.sum(st == t)) for t in KNOWN_STAY_TYPES}, name="n_stays")


def has_stay_types(stay_type: Sequence[str]) -> bool:
    """True when at least one stay has a reported type (newborn, surgical or medical)."""
    st = _check_stay_type(stay_type, None)
    return bool(np.isin(st, REPORTED_STAY_TYPES).any())


def _check_stay_type(stay_type, n: int | None) -> np.ndarray:
    st = np.asarray(stay_type).astype(str)
    if st.ndim != 1:
        raise ValueError(f"stay_type must be one-dimensional, got shape {st.shape}")
    if n is not None and len(st) != n:
        raise ValueError(f"stay_type has {len(st)} entries but the score matrix has {n} rows")
    bad = sorted(set(np.unique(st)) - set(KNOWN_STAY_TYPES))
    if bad:
        raise ValueError(f"unknown stay type(s) {bad[:5]}; expected one of {', '.join(KNOWN_STAY_TYPES)}")
    return st


def metrics_by_stay_type(y_true, y_score, stay_type: Sequence[str], groups: Mapping[str, np.ndarray],
                         metrics: Sequence[str] = TABLE_S9_METRICS,
                         types: Sequence[str] = REPORTED_STAY_TYPES, re_float16: bool = False) -> pd.DataFrame:
    """Tidy (stay_type, level, metric, value, n_stays) of `metrics` on the rows of each stay type.

    y_true, y_score: (n, L); stay_type: (n,) one of KNOWN_STAY_TYPES per row; groups: label masks (L,)
    per level (e.g. `icd9.level_masks(codes)` restricted to the levels wanted). Types without a stay
    in these rows are left out (logged). re_float16: for "re_authors@R" metrics, cast scores to float16
    first (the authors' Table S9 read full-precision predictions: False).
    """
    y_score = np.asarray(y_score)
    if y_score.ndim != 2:
        raise ValueError(f"y_score must be (n, L), got shape {y_score.shape}")
    st = _check_stay_type(stay_type, y_score.shape[0])
    t = sp.csr_matrix(y_true) if not sp.issparse(y_true) else y_true.tocsr()
    if t.shape != y_score.shape:
        raise ValueError(f"y_true has shape {t.shape} but y_score {y_score.shape}")
    frames = []
    for typ in types:
        rows = np.flatnonzero(st == typ)
        if rows.size == 0:
            logger.info("no %s stay among these %d rows: left out", typ, len(st))
            continue
        df = M.evaluate(t[rows], y_score[rows], groups, metrics=list(metrics), re_float16=re_float16)
        frames.append(df.assign(stay_type=typ, n_stays=int(rows.size)))
    if not frames:
        return pd.DataFrame(columns=["stay_type", "level", "metric", "value", "n_stays"])
    return pd.concat(frames, ignore_index=True)[["stay_type", "level", "metric", "value", "n_stays"]]


def table_s9_folds(runs: Mapping[str, Sequence], Y, stay_type: Sequence[str], groups: Mapping[str, np.ndarray],
                   models: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Per fold, Table S9's metrics by stay type: tidy (experiment, fold, stay_type, level, metric, value, n_stays).

    runs: experiment -> per-fold results with `fold`, `test_idx` (rows of Y) and `scores` (n_test, L);
    Y: (n_stays, L) labels of the whole dataset; stay_type: (n_stays,); groups: level masks (L,).
    models: experiment -> metrics (default `TABLE_S9_MODELS`); experiments absent from `runs` raise.
    """
    models = TABLE_S9_MODELS if models is None else models
    missing = [e for e in models if e not in runs]
    if missing:
        raise ValueError(f"Table S9 needs the experiment(s) {missing}; got {sorted(runs)}")
    st = np.asarray(stay_type)
    frames = []
    for exp, mets in models.items():
        for r in runs[exp]:
            df = metrics_by_stay_type(Y[r.test_idx], r.scores, st[r.test_idx], groups, metrics=mets)
            frames.append(df.assign(experiment=exp, fold=int(r.fold)))
    cols = ["experiment", "fold", "stay_type", "level", "metric", "value", "n_stays"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def table_s9(folds: pd.DataFrame, levels: Sequence[str] = TABLE_S9_LEVELS) -> pd.DataFrame:
    """Table S9 from `table_s9_folds`: mean ± SEM over folds per (experiment, stay_type, level, metric).

    Returns experiment, stay_type, level, metric, mean, sem, n, mean_test_stays (the stay type's number of
    test stays, mean over folds), sorted by experiment, metric, level (in the order of `levels`), stay type.
    """
    n_test = ST.fold_summary(folds[["stay_type", "fold", "n_stays"]].drop_duplicates(["stay_type", "fold"]),
                             value="n_stays").set_index("stay_type")["mean"]
    t = ST.fold_summary(folds.drop(columns="n_stays"))
    t["mean_test_stays"] = t["stay_type"].map(n_test)
    t["level"] = pd.Categorical(t["level"], list(levels), ordered=True)
    t = t.sort_values(["experiment", "metric", "level", "stay_type"]).reset_index(drop=True)
    t["level"] = t["level"].astype(str)
    return t[["experiment", "stay_type", "level", "metric", "mean", "sem", "n", "mean_test_stays"]]


def stay_type_ttests(folds: pd.DataFrame, pairs: Sequence[tuple[str, str]], experiment: str = "naive_ndcg",
                     metric: str = "ndcg", level: str = "all") -> pd.DataFrame:
    """`paired_ttests` between stay types (as model_a / model_b) of one experiment's metric at one level.

    folds: `table_s9_folds` output; pairs: (stay type a, stay type b), those with a type absent skipped.
    """
    st = folds[(folds["experiment"] == experiment) & (folds["level"] == level) & (folds["metric"] == metric)]
    st = st.drop(columns="experiment").rename(columns={"stay_type": "model"})
    present = set(st["model"])
    return pd.concat([paired_ttests(st, a, b, [metric], [level]) for a, b in pairs if {a, b} <= present],
                     ignore_index=True)


# ------------------------------------------------------------------------------ median rank vs frequency (Fig S6)

def median_rank_vs_frequency(y_true, y_score) -> pd.DataFrame:
    """Per label with >= 1 positive: (label, n_pos, frequency, median_rank) on one test fold.

    label: column index; frequency: n_pos / n rows; median_rank: median over the label's positive rows of
    its rank among the row's L labels (1 = highest score, ties share the worst rank; `metrics.median_ranks`).
    """
    t = sp.csr_matrix(y_true) if not sp.issparse(y_true) else y_true.tocsr()
    y_score = np.asarray(y_score)
    if t.shape != y_score.shape:
        raise ValueError(f"y_true has shape {t.shape} but y_score {y_score.shape}")
    n_pos = np.asarray((t != 0).sum(axis=0)).ravel().astype(np.int64)
    med_pos, _ = M.median_ranks(t, y_score)
    keep = np.flatnonzero(n_pos > 0)
    return pd.DataFrame({"label": keep, "n_pos": n_pos[keep], "frequency": n_pos[keep] / t.shape[0],
                         "median_rank": med_pos[keep]})


def pool_folds(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Mean over folds, per label, of the per-fold tables of `median_rank_vs_frequency` (n_folds: folds with positives)."""
    if not tables:
        raise ValueError("no per-fold table to pool")
    df = pd.concat([t.assign(fold=k) for k, t in enumerate(tables)], ignore_index=True)
    out = df.groupby("label", sort=True).agg(n_pos=("n_pos", "mean"), frequency=("frequency", "mean"),
                                             median_rank=("median_rank", "mean"), n_folds=("fold", "nunique"))
    return out.reset_index()


def lowess_curve(x, y, frac: float = 1 / 3, log: bool = True, n_points: int | None = None) -> pd.DataFrame:
    """LOWESS fit of y on x (statsmodels, `frac`), sorted by x: DataFrame (x, y_fit).

    With log=True the fit runs on (log10 x, log10 y) and is returned on the original scale (the
    figure's log-log axes); non-finite or non-positive pairs are dropped. n_points thins the curve.
    """
    from statsmodels.nonparametric.smoothers_lowess import lowess

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D arrays of equal length, got {x.shape} and {y.shape}")
    if not 0 < frac <= 1:
        raise ValueError(f"frac must lie in (0, 1], got {frac}")
    ok = np.isfinite(x) & np.isfinite(y)
    if log:
        ok &= (x > 0) & (y > 0)
    x, y = x[ok], y[ok]
    if x.size < 3:
        logger.warning("LOWESS needs >= 3 points, got %d: empty curve", x.size)
        return pd.DataFrame({"x": np.array([], dtype=float), "y_fit": np.array([], dtype=float)})
    fx, fy = (np.log10(x), np.log10(y)) if log else (x, y)
    fit = lowess(fy, fx, frac=frac, return_sorted=True)
    if n_points is not None and len(fit) > n_points:
        fit = fit[np.unique(np.linspace(0, len(fit) - 1, n_points).round().astype(int))]
    gx, gy = (10 ** fit[:, 0], 10 ** fit[:, 1]) if log else (fit[:, 0], fit[:, 1])
    return pd.DataFrame({"x": gx, "y_fit": gy})


# ------------------------------------------------------------------------------ paired t-tests over folds (Fig S5)

def paired_ttests(tidy: pd.DataFrame, model_a: str, model_b: str, metrics: Sequence[str],
                  levels: Sequence[str]) -> pd.DataFrame:
    """Paired t-test over folds (scipy `ttest_rel`) of model_a vs model_b, per metric and level.

    tidy: columns (model, fold, level, metric, value). Folds are paired by number; only folds where
    both models have a value count (`compare.paired_differences`). One row per (metric, level), in
    the order given: model_a, model_b, metric, R (for re@R, else NaN), level, mean_a, mean_b,
    mean_diff (a - b), t, p, n_folds. t and p are NaN with fewer than 2 paired folds or when every
    paired difference is equal (no variance: scipy would report an infinite t).
    """
    t = compare.check_tidy(tidy)
    for name in (model_a, model_b):
        if name not in set(t["model"]):
            raise ValueError(f"model {name!r} not in the metrics table (models: {sorted(set(t['model']))})")
    t = t[t["model"].isin([model_a, model_b]) & t["metric"].isin(list(metrics)) & t["level"].isin(list(levels))]
    cols = ["model_a", "model_b", "metric", "R", "level", "mean_a", "mean_b", "mean_diff", "t", "p", "n_folds"]
    if t.empty:
        return pd.DataFrame(columns=cols)
    d = compare.paired_differences(t, model_a, model_b).set_index(["metric", "level"])
    w = t.pivot_table(index=["metric", "level"], columns=["model", "fold"], values="value", dropna=False)
    rows = []
    for metric in metrics:
        for level in levels:
            if (metric, level) not in d.index:
                continue
            r = d.loc[(metric, level)]
            a = w.loc[(metric, level), model_a] if model_a in w.columns.get_level_values(0) else pd.Series(dtype=float)
            b = w.loc[(metric, level), model_b] if model_b in w.columns.get_level_values(0) else pd.Series(dtype=float)
            diffs = (a - b).dropna().to_numpy(float)
            flat = len(diffs) < 2 or np.ptp(diffs) == 0
            rows.append({"model_a": model_a, "model_b": model_b, "metric": metric, "R": compare.re_of(metric),
                         "level": level, "mean_a": r["mean_a"], "mean_b": r["mean_b"], "mean_diff": r["diff"],
                         "t": np.nan if flat else r["statistic"], "p": np.nan if flat else r["pvalue"],
                         "n_folds": int(r["n"])})
    return pd.DataFrame(rows, columns=cols)


def paired_ttests_vs(tidy: pd.DataFrame, models: Sequence[str], reference: str, metrics: Sequence[str],
                     levels: Sequence[str]) -> pd.DataFrame:
    """`paired_ttests` of each of `models` (as model_a) against `reference` (model_b), one table in that order."""
    return pd.concat([paired_ttests(tidy, m, reference, metrics, levels) for m in models], ignore_index=True)


def significant(table: pd.DataFrame, alpha: float = 0.05, min_rel_diff: float = 1e-6) -> pd.DataFrame:
    """Rows of a `paired_ttests` table with p < alpha (NaN p never significant).

    Differences below min_rel_diff·|mean_b| are float32 noise (e.g. a penalty of weight 1e-9), never significant.
    """
    real = table["mean_diff"].abs() > min_rel_diff * table["mean_b"].abs()
    return table[table["p"].lt(alpha) & real]


# ------------------------------------------------------------------------------ hierarchical consistency (section 3.4)

def hierarchy_violations(y_score, parent_idx, child_idx, chunk_rows: int = 2048) -> dict:
    """Fraction of (row, tree edge) pairs whose parent scores strictly below its child.

    y_score: (n, L); parent_idx, child_idx: (E,) label indices of the tree edges (e.g.
    `icd9.hierarchy_edges(codes, nearest=True)`). Returns n_pairs, n_violations, fraction (NaN with no
    pair) and max_gap (largest child - parent score difference, 0 when none).
    """
    s = np.asarray(y_score)
    p = np.asarray(parent_idx, dtype=np.int64)
    c = np.asarray(child_idx, dtype=np.int64)
    if s.ndim != 2:
        raise ValueError(f"y_score must be (n, L), got shape {s.shape}")
    if p.shape != c.shape or p.ndim != 1:
        raise ValueError(f"parent_idx and child_idx must be 1-D of equal length, got {p.shape} and {c.shape}")
    if p.size and (min(p.min(), c.min()) < 0 or max(p.max(), c.max()) >= s.shape[1]):
        raise ValueError(f"edge indices out of range for {s.shape[1]} labels")
    n_viol, gap = 0, 0.0
    for lo in range(0, s.shape[0], chunk_rows):
        block = s[lo:lo + chunk_rows]
        diff = block[:, c].astype(np.float64) - block[:, p]
        n_viol += int(np.count_nonzero(diff > 0))
        if diff.size:
            gap = max(gap, float(diff.max()))
    n_pairs = int(s.shape[0] * p.size)
    return {"n_pairs": n_pairs, "n_violations": n_viol,
            "fraction": n_viol / n_pairs if n_pairs else float("nan"), "max_gap": max(gap, 0.0)}


def hierarchy_consistency(results: Mapping[str, Sequence], parent_idx, child_idx,
                          labels: Mapping[str, str]) -> pd.DataFrame:
    """Per model: mean ± SEM over folds of the share of violated parent→child edges, and the largest violation.

    results: model -> per-fold results (fold, scores); labels: model -> its display name (column method).
    Returns model, method, violation_fraction_mean, violation_fraction_sem, n_folds, max_child_minus_parent,
    n_edges.
    """
    viol = pd.DataFrame([{"model": name, "fold": r.fold, **hierarchy_violations(r.scores, parent_idx, child_idx)}
                         for name, rs in results.items() for r in rs])
    out = ST.fold_summary(viol[["model", "fold", "fraction"]], value="fraction").merge(
        viol.groupby("model", as_index=False).agg(max_gap=("max_gap", "max")), on="model")
    out.insert(1, "method", out.model.map(labels))
    out = out.rename(columns={"mean": "violation_fraction_mean", "sem": "violation_fraction_sem",
                              "n": "n_folds", "max_gap": "max_child_minus_parent"})
    out["n_edges"] = len(parent_idx)
    return out


def frequency_bin_summary(table: pd.DataFrame, edges: Sequence[float] = (0, 1e-3, 1e-2, 1e-1, 1.0),
                          top: int = 10) -> pd.DataFrame:
    """Codes per test-frequency bin (Fig S6): freq_bin, n_codes, median_of_median_rank, codes_in_top<top>.

    table: one row per code with label, frequency and median_rank (`pool_folds`); bins closed on the left
    for the first edge.
    """
    bins = table.assign(freq_bin=pd.cut(table.frequency, list(edges), include_lowest=True).astype(str))
    return bins.groupby("freq_bin", observed=True).agg(
        n_codes=("label", "size"), median_of_median_rank=("median_rank", "median"),
        **{f"codes_in_top{top}": ("median_rank", lambda v: int((v <= top).sum()))}).reset_index()


# ------------------------------------------------------------------------------ runtimes (section 3.3)

def timings_table(results: Mapping[str, Sequence],
                  keys: Sequence[str] = ("search_s", "train_s", "epoch_s", "inference_s")) -> pd.DataFrame:
    """The wall times stored with each model's folds: model, fold, timing, seconds (timings absent are left out)."""
    return pd.DataFrame([{"model": name, "fold": r.fold, "timing": k, "seconds": float(r.timings[k])}
                         for name, rs in results.items() for r in rs for k in keys if k in r.timings])


def sum_of_models(timings: pd.DataFrame, parts: Sequence[str], name: str) -> pd.DataFrame:
    """Rows (name, fold, timing, seconds) summing the `parts` models' seconds per fold and timing.

    Only (fold, timing) pairs present for every part are summed (e.g. the epoch time of four networks).
    """
    missing = sorted(set(parts) - set(timings["model"]))
    if missing:
        raise ValueError(f"no timing for model(s) {missing}")
    sel = timings[timings["model"].isin(list(parts))]
    g = sel.groupby(["fold", "timing"], sort=True)
    out = g["seconds"].sum().to_frame().join(g["model"].nunique().rename("k")).reset_index()
    out = out[out["k"] == len(set(parts))].drop(columns="k")
    return out.assign(model=name)[["model", "fold", "timing", "seconds"]].reset_index(drop=True)


def runtime_table(timings: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Mean ± SEM over folds of each (model, timing) and its ratio to the reference model's mean.

    timings: columns (model, fold, timing, seconds), e.g. timing in search_s, train_s, epoch_s,
    inference_s. Returns (model, timing, mean_s, sem_s, n_folds, ratio_to_reference).
    """
    missing = [c for c in ("model", "fold", "timing", "seconds") if c not in timings.columns]
    if missing:
        raise ValueError(f"timings table lacks column(s) {missing}")
    if reference not in set(timings["model"]):
        raise ValueError(f"reference model {reference!r} has no timing (models: {sorted(set(timings['model']))})")
    out = ST.fold_summary(timings[["model", "timing", "fold", "seconds"]], value="seconds")
    out = out.rename(columns={"mean": "mean_s", "sem": "sem_s", "n": "n_folds"})
    ref = out[out["model"] == reference].set_index("timing")["mean_s"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ratio_to_reference"] = out["mean_s"].to_numpy() / out["timing"].map(ref).to_numpy(float)
    return out


# ------------------------------------------------------------------------------ fold summaries and relative bars

def relative_bar_chart(ax, rel: pd.DataFrame, models: Sequence[str], levels: Sequence[str], reference: str,
                       labels: Mapping[str, str] | None = None, metric: str = "ndcg") -> None:
    """Grouped bars of a `compare.relative` table on a matplotlib axis: x = level, one bar per model, ± rel_sem.

    rel: columns model, level, metric, mean, rel, rel_sem. Each level's tick shows the reference
    model's absolute mean (the paper's Figs 3–5).
    """
    labels = dict(labels or {})
    r = rel[rel["metric"] == metric].set_index(["model", "level"])
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(levels))
    for i, m in enumerate(models):
        vals = [r["rel"].get((m, lv), np.nan) for lv in levels]
        errs = np.nan_to_num(np.asarray([r["rel_sem"].get((m, lv), np.nan) for lv in levels], dtype=float))
        ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, yerr=errs, capsize=3,
               label=labels.get(m, m), color=f"C{i}")
    ref_label = labels.get(reference, reference)
    refs = [r["mean"].get((reference, lv), np.nan) for lv in levels]
    ax.set_xticks(x, [f"{lv}\n{ref_label}: {v:.3f}" for lv, v in zip(levels, refs)], fontsize=8)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_ylabel(f"relative {metric.upper()} vs {ref_label} (%)")
    ax.legend(fontsize=8)
