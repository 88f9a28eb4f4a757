"""The decision rules of the paper's claims: this run's numbers -> a verdict (True, False, or None: undecidable).

Each function decides one kind of claim from the tables a notebook computed; the notebook words the
claim and its evidence and passes the verdict to `cacicd.paper.claims.check`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd


def share_above(pct: float, n: int, threshold: float) -> bool | None:
    """Is a share (%) of n items above `threshold` (%)? None when there is no item."""
    return None if n == 0 else bool(pct > threshold)


def share_all(pct: float, n: int) -> bool | None:
    """Is a share (%) of n items 100 %? None when there is no item."""
    return None if n == 0 else bool(pct == 100)


def not_significant(pvalue: float, alpha: float = 0.05) -> bool | None:
    """Is a test's p-value above alpha (no significant difference)? None when it is NaN."""
    return None if np.isnan(pvalue) else bool(pvalue > alpha)


def positive(x: float) -> bool | None:
    """Is x above 0? None when it is NaN."""
    return None if np.isnan(x) else bool(x > 0)


def largest_gap_points(diff) -> float:
    """Largest |difference| in percentage points of ratio differences (1-D; NaN for none)."""
    diff = np.asarray(diff, dtype=float)
    return float(np.nanmax(np.abs(100 * diff))) if len(diff) else np.nan


def equivalent(gap_points: float, tolerance_points: float) -> bool | None:
    """Are two curves equivalent: their largest gap within the tolerance (points)? None when the gap is NaN."""
    return None if np.isnan(gap_points) else bool(gap_points <= tolerance_points)


def ahead_from(k: Sequence[int], diff) -> int | None:
    """The smallest K from which the difference is positive at every larger K (k ascending; None: never)."""
    ahead = np.asarray(diff, dtype=float) > 0
    return next((int(kk) for i, kk in enumerate(k) if ahead[i:].all()), None)


def ahead_everywhere(diff, gain: float) -> bool:
    """Is a model ahead at every K (mean differences over folds `diff`) and its gain at the quoted K positive?"""
    return bool((np.asarray(diff, dtype=float) > 0).all()) and gain > 0


def all_better(rel: pd.DataFrame, same_model: bool = False) -> bool | None:
    """Is every relative improvement positive? None when all are NaN or the models are one and the same."""
    return None if rel.isna().all().all() or same_model else bool((rel > 0).all().all())


def mean_relative(rel_wide: pd.DataFrame, reference: str) -> pd.Series:
    """Each model's mean relative improvement over the columns (model x R table), the reference counted as 0."""
    a0 = rel_wide.copy()
    a0.loc[reference] = 0.0
    return a0.mean(axis=1)


def distinct_pairs(pairs: Iterable[tuple[str, str]], same_of: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """The (a, b) pairs whose models differ (`same_of`: model -> the models identical to it)."""
    return [(a, b) for a, b in pairs if b not in same_of.get(a, ())]


def below_for_every_pair(mean_rel: pd.Series, pairs: Sequence[tuple[str, str]]) -> bool | None:
    """Is b's mean below a's for every (a, b) pair? None when a mean is NaN or there is no pair."""
    if mean_rel.isna().any() or not pairs:
        return None
    return all(bool(mean_rel[b] < mean_rel[a]) for a, b in pairs)


def is_first(ranking: pd.Series, name: str, n: int, min_n: int = 3) -> bool | None:
    """Is `name` first of a ranking (best first)? None when it is empty or rests on fewer than min_n observations."""
    return None if ranking.empty or n < min_n else bool(ranking.index[0] == name)


def lower(values: pd.Series, a: str, b: str, same_model: bool = False) -> bool | None:
    """Is values[a] below values[b]? None when a value is NaN or the two models are one and the same."""
    return None if values.isna().any() or same_model else bool(values[a] < values[b])


def significantly_worse_everywhere(rel: Mapping[str, float], pvalue: Mapping[str, float], levels: Sequence[str],
                                   alpha: float = 0.05) -> bool:
    """Is the relative change negative and significant (p < alpha) at every level?"""
    return all(rel[lv] < 0 and pvalue[lv] < alpha for lv in levels)


def not_worse_within_error(rel: Mapping[str, float], rel_sem: Mapping[str, float], pvalue: Mapping[str, float],
                           levels: Sequence[str], alpha: float = 0.05) -> bool:
    """Is the reference at least as good at half the levels or more, every difference within error bounds?

    rel: relative change of the other model vs the reference per level; a difference is within error
    bounds when |rel| <= 2 SEM or its paired test is not significant.
    """
    within = [abs(rel[lv]) <= 2 * np.nan_to_num(rel_sem[lv]) or not pvalue[lv] < alpha for lv in levels]
    return sum(rel[lv] <= 0 for lv in levels) >= len(levels) / 2 and all(within)


def better_significant_only_at(ttests: pd.DataFrame, sig: pd.DataFrame, level: str = "billing",
                               min_r: float = 75) -> bool:
    """Is model a better (mean_diff < 0) in most cells, significant somewhere, and only at `level` for R >= min_r?

    ttests, sig: a `subgroups.paired_ttests` table (columns level, R, mean_diff) and its significant rows.
    """
    better = ttests["mean_diff"] < 0
    return bool(better.mean() >= 0.5 and len(sig) > 0 and (sig["level"] == level).all() and (sig["R"] >= min_r).all())


def all_above_one(ratios: Mapping[str, float], keys: Sequence[str]) -> bool:
    """Is every ratio of `keys` above 1?"""
    return bool(all(ratios[k] > 1 for k in keys))


def none_significant(sig: pd.DataFrame) -> bool:
    """Is no difference significant (no row in a table of significant tests)?"""
    return sig.empty


def all_positive(diff) -> bool:
    """Is there a difference, and is every one positive?"""
    diff = np.asarray(diff, dtype=float)
    return bool(len(diff) and (diff > 0).all())


def significantly_greater(mean_diff: float | None, pvalue: float | None, alpha: float = 0.05) -> bool | None:
    """Is a paired difference positive and significant? None when the test was not run (None)."""
    return None if mean_diff is None else bool(mean_diff > 0 and pvalue < alpha)


def all_hold(verdicts: Sequence[bool | None]) -> bool | None:
    """Do all verdicts hold? None when one of them is undecidable."""
    return None if None in verdicts else all(verdicts)


def model_shape(hp: pd.DataFrame, experiments: Sequence[str]) -> dict:
    """Hidden layers, units and dropout of some experiments' best models: n, share with 2-3 hidden layers, means.

    hp: `report.hyperparameter_table` (experiment, fold, parameter, value) of the search's configurations:
    num_layers (counting the output layer) and one `units` and one `dropout` shared by every hidden layer.
    The means are over the n_hidden models with a hidden layer (a logistic regression has neither).
    """
    top = hp[hp["experiment"].isin(list(experiments))]
    wide = top.pivot_table(index=["experiment", "fold"], columns="parameter", values="value", aggfunc="first")

    def column(name: str) -> pd.Series:
        return (pd.to_numeric(wide[name], errors="coerce") if name in wide.columns
                else pd.Series(np.nan, index=wide.index, dtype=float))

    hidden = (column("num_layers") - 1).dropna()
    deep = hidden.index[hidden >= 1]
    units, drop = column("units").loc[deep].dropna(), column("dropout").loc[deep].dropna()
    return {"n": len(hidden), "n_hidden": len(deep),
            "share_2_3_layers": float(hidden.between(2, 3).mean()) if len(hidden) else float("nan"),
            "mean_units": float(units.mean()) if len(units) else float("nan"),
            "mean_dropout": float(drop.mean()) if len(drop) else float("nan")}


def shape_evidence(shape: Mapping) -> str:
    """The evidence sentence of `model_shape`'s summary: models, share with 2-3 hidden layers, mean units and dropout."""
    if not shape["n"]:
        return "no model of the seven target metrics in the cache"
    means = (f"over the {shape['n_hidden']} with hidden layers, mean units {shape['mean_units']:.0f}, mean dropout "
             f"{shape['mean_dropout']:.2f}" if shape["n_hidden"] else "none has a hidden layer")
    return f"{shape['n']} models: {100 * shape['share_2_3_layers']:.0f} % with 2–3 hidden layers; " + means


def space_reaches(num_layers: Sequence[int], units: Sequence[int], dropout: Sequence[float],
                  layers: tuple[float, float] = (2, 3), min_units: float = 2000, min_dropout: float = 0.5) -> bool:
    """Can a search space (num_layers counting the output layer; units, dropout ranges) reach shallow wide models?"""
    lo, hi = num_layers[0], num_layers[1]
    return lo - 1 <= layers[1] and hi - 1 >= layers[0] and units[1] >= min_units and dropout[1] >= min_dropout


def shallow_wide(shape: Mapping, reachable: bool, units: tuple[float, float] = (2000, 3000),
                 dropout: tuple[float, float] = (0.5, 0.7)) -> bool | None:
    """Are most models 2-3 hidden layers deep, units and dropout in range on average? None: no model or unreachable."""
    if not shape["n"] or not reachable:
        return None
    return bool(shape["share_2_3_layers"] >= 0.5 and units[0] <= shape["mean_units"] <= units[1]
                and dropout[0] <= shape["mean_dropout"] <= dropout[1])


def within_spread(ours: float, paper: float, paper_spread: float, our_spread: float,
                  comparable: bool = True) -> bool | None:
    """Is ours within the combined spreads (sqrt(a² + b²)) of the published value? None when not comparable."""
    if not comparable:
        return None
    return bool(abs(ours - paper) <= np.hypot(paper_spread, our_spread if np.isfinite(our_spread) else 0))


def higher_everywhere(a: pd.Series, b: pd.Series) -> bool:
    """Is a above b at every index (e.g. level)?"""
    return bool((a > b).all())
