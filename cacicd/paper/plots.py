"""The paper's recurring plots on a matplotlib axis: Recall@K curves, ECDFs, relative bars, heat maps.

Each function draws what a prepared table holds (nothing is computed but the drawing) and returns the axis.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns


def recall_at_k(ax, curves: pd.DataFrame, models: Sequence[str], level: str, labels: Mapping[str, str],
                colors: Mapping[str, str], model: str = "model", title: str = ""):
    """Recall@K (%) of some models at one level, bands ± SEM: curves with columns <model>, level, k, mean, sem."""
    for m in models:
        c = curves[(curves["level"] == level) & (curves[model] == m)].sort_values("k")
        sem = c["sem"].fillna(0)
        ax.plot(c["k"], 100 * c["mean"], color=colors[m], label=labels[m])
        ax.fill_between(c["k"], 100 * (c["mean"] - sem), 100 * (c["mean"] + sem), color=colors[m], alpha=0.25, lw=0)
    return _frame(ax, "K (codes proposed)", f"Recall@K on {level} codes (%)", (1, 50), (0, 100), title)


def ecdf(ax, values: Mapping[str, np.ndarray], colors: Mapping[str, object] | None = None,
         xlabel: str = "", xlim: tuple[float, float] = (0, 1), title: str = ""):
    """Empirical CDFs of several samples (label -> 1-D values; NaN dropped), one line each (`seaborn.ecdfplot`)."""
    for i, (label, x) in enumerate(values.items()):
        x = np.asarray(x, dtype=float)
        x = x[np.isfinite(x)]
        if len(x):
            sns.ecdfplot(x=x, ax=ax, color=(colors or {}).get(label, f"C{i}"), label=f"{label} (n = {len(x)})")
    return _frame(ax, xlabel, "cumulative share of codes", xlim, (0, 1.02), title)


def _frame(ax, xlabel: str, ylabel: str, xlim: tuple[float, float], ylim: tuple[float, float], title: str):
    """Labels, limits, grid, a lower-right legend and the title of a curve plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def relative_bars(ax, rel: pd.DataFrame, models: Sequence[str], rs: Sequence[int], reference: str,
                  labels: Mapping[str, str], colors: Mapping[str, str], reference_label: str, title: str = ""):
    """Grouped bars of relative RE@R: x = R, one bar per model ± rel_sem; ticks carry the reference's RE@R.

    rel: a `compare.relative` table of one level with a column R.
    """
    width = 0.8 / len(models)
    x = np.arange(len(rs))
    for i, m in enumerate(models):
        g = rel[rel["model"] == m].set_index("R").reindex(rs)
        ax.bar(x + (i - (len(models) - 1) / 2) * width, g["rel"], width, yerr=g["rel_sem"].fillna(0), capsize=2,
               color=colors[m], label=labels[m], error_kw={"lw": 0.8})
    ref = rel[rel["model"] == reference].set_index("R").reindex(rs)["mean"]
    ax.set_xticks(x, [f"RE@{r}\n{reference_label}: {v:.1f}" for r, v in zip(rs, ref)], fontsize=8)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_ylabel(f"relative RE@R improvement vs {reference_label} (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return ax


def heatmap(ax, table: pd.DataFrame, label: str = "", vmin: float = -1, vmax: float = 1):
    """An annotated heat map of a numeric table (rows x columns), diverging colours (`seaborn.heatmap`)."""
    sns.heatmap(table.astype(float), ax=ax, cmap="RdBu_r", vmin=vmin, vmax=vmax, annot=True, fmt=".2f",
                annot_kws={"fontsize": 7}, cbar_kws={"label": label})
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.tick_params(labelsize=8)
    return ax
