"""Fold aggregation, relative improvements and the paper's scipy tests (spec sections 5 and 12).

Tidy tables hold one value per row (columns such as model, level, metric, fold, value).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as _st

from cacicd.evaluation.metrics import lower_is_better

logger = logging.getLogger(__name__)


def _require(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"{what}: table lacks column(s) {missing}; it has {list(df.columns)}")


def mean_sem(values) -> tuple[float, float, int]:
    """Mean, standard error (ddof=1; NaN for one value) and count of the non-NaN `values` (1-D)."""
    a = np.asarray(values, dtype=np.float64).ravel()
    a = a[~np.isnan(a)]
    n = len(a)
    if n == 0:
        return float("nan"), float("nan"), 0
    sem = float(np.std(a, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return float(a.mean()), sem, n


def fold_summary(df: pd.DataFrame, value: str = "value", fold: str = "fold") -> pd.DataFrame:
    """Mean, SEM (ddof=1) and n over folds, grouped by every column but `fold` and `value`."""
    _require(df, [value, fold], "fold_summary")
    keys = [c for c in df.columns if c not in (value, fold)]
    dup = df.duplicated(keys + [fold])
    if dup.any():
        raise ValueError(f"fold_summary: {int(dup.sum())} duplicated rows for the same {keys + [fold]}, "
                         f"first: {df.loc[dup].iloc[0].to_dict()}")
    if not keys:
        m, s, n = mean_sem(df[value])
        return pd.DataFrame({"mean": [m], "sem": [s], "n": [n]})
    rows = [(*(k if isinstance(k, tuple) else (k,)), *mean_sem(g[value]))
            for k, g in df.groupby(keys, sort=False, dropna=False)]
    return pd.DataFrame(rows, columns=keys + ["mean", "sem", "n"])


def relative_improvement(m, m_ref, sem=None, lower_better: bool = False):
    """100·(m/m_ref − 1) (negated when lower is better) and SEM·100/|m_ref|; NaN where m_ref is 0.

    Arrays broadcast; returns (rel, rel_sem) with rel_sem NaN when `sem` is None.
    """
    m, m_ref = np.asarray(m, dtype=np.float64), np.asarray(m_ref, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.where(m_ref == 0, np.nan, m_ref)
        rel = 100.0 * (m / ref - 1.0)
        rel_sem = np.full(np.broadcast(m, ref).shape, np.nan) if sem is None else \
            np.asarray(sem, dtype=np.float64) * 100.0 / np.abs(ref)
    return (-rel if lower_better else rel), rel_sem


def relative_to(summary: pd.DataFrame, reference, by: str = "model", metric: str = "metric") -> pd.DataFrame:
    """Add `rel` and `rel_sem` to a `fold_summary` table: each row vs the row of `by == reference`.

    Rows are matched on every other key column; RE@R, coverage, ECE, MCE and Brier are negated
    so that positive is better (spec section 5). The reference rows get 0.
    """
    _require(summary, [by, metric, "mean", "sem"], "relative_to")
    keys = [c for c in summary.columns if c not in (by, "mean", "sem", "n")]
    ref = summary.loc[summary[by] == reference, keys + ["mean"]].rename(columns={"mean": "_ref"})
    if ref.empty:
        raise ValueError(f"relative_to: no row with {by} == {reference!r}; "
                         f"values are {sorted(map(str, summary[by].unique()))}")
    out = summary.merge(ref, on=keys, how="left", validate="many_to_one")
    lower = out[metric].astype(str).map(lower_is_better).to_numpy(bool)
    rel, rel_sem = relative_improvement(out["mean"], out["_ref"], out["sem"])
    out["rel"] = np.where(lower, -rel, rel)
    out["rel_sem"] = rel_sem
    return out.drop(columns="_ref")


@dataclass(frozen=True)
class TestResult:
    """One scipy test: name, statistic, two-sided p-value, sample size and what was compared."""

    test: str
    statistic: float
    pvalue: float
    n: int
    compared: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _vec(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    return a


def _pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _vec(a, "a"), _vec(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired values must have the same length, got {len(a)} and {len(b)}")
    ok = ~(np.isnan(a) | np.isnan(b))
    return a[ok], b[ok]


def paired_ttest(a, b, compared: str = "") -> TestResult:
    """Paired t-test (scipy ttest_rel, two-sided) of a vs b (1-D, same length; NaN pairs dropped)."""
    a, b = _pairs(a, b)
    if len(a) < 2:
        return TestResult("ttest_rel", float("nan"), float("nan"), len(a), compared)
    r = _st.ttest_rel(a, b)
    return TestResult("ttest_rel", float(r.statistic), float(r.pvalue), len(a), compared)


def mann_whitney(a, b, compared: str = "") -> TestResult:
    """Two-sided Mann-Whitney U test of a vs b (1-D; NaN dropped); n = len(a) + len(b)."""
    a, b = _vec(a, "a"), _vec(b, "b")
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        return TestResult("mannwhitneyu", float("nan"), float("nan"), len(a) + len(b), compared)
    r = _st.mannwhitneyu(a, b, alternative="two-sided")
    return TestResult("mannwhitneyu", float(r.statistic), float(r.pvalue), len(a) + len(b), compared)


def spearman(a, b, compared: str = "") -> TestResult:
    """Spearman rho of a and b (1-D, same length; NaN pairs dropped) with its two-sided p-value."""
    a, b = _pairs(a, b)
    if len(a) < 3:
        return TestResult("spearmanr", float("nan"), float("nan"), len(a), compared)
    r = _st.spearmanr(a, b)
    return TestResult("spearmanr", float(r.statistic), float(r.pvalue), len(a), compared)
