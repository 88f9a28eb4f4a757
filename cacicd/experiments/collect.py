"""What the engine's cache holds, gathered for the comparisons: cached results, tidy metrics, Fig S4's experiments.

The engine (`cacicd.experiments.engine`) runs and caches experiments; `cacicd.evaluation.compare` compares
tidy tables. This module sits between them: it reads the cache (nothing is trained unless asked) and hands
tidy tables to the comparisons.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from cacicd.evaluation.compare import TIDY, tidy_results
from cacicd.experiments import engine as E

logger = logging.getLogger(__name__)


def full_label_experiments() -> list[str]:
    """Trained experiments whose one model scores every code (Fig S4, spec section 12), in declaration order.

    Left out: models trained on a subset of codes (cherry-picked, per level) and the composites assembled
    from them, which would score the codes they never saw with zeros; and the dummy, which is not trained.
    """
    return [e.name for e in E.EXPERIMENTS.values()
            if e.labels == "all" and not e.parts and e.model == "mlp"]


def done_folds(profile, data, cache_dir: str | Path | None = None, names: Iterable[str] | None = None,
               exclude: Iterable[str] = ()) -> dict[str, list[int]]:
    """experiment -> folds with a current cached result (engine's `status`), filtered by names/exclude."""
    st = E.status(profile, data, cache_dir)
    st = st[st["state"].isin(("done", "damaged"))]  # a damaged result is refused by `load`, never left out
    wanted, skip = (None if names is None else set(names)), set(exclude)
    return {name: sorted(int(k) for k in g["fold"]) for name, g in st.groupby("experiment", sort=False)
            if name not in skip and (wanted is None or name in wanted)}


def cached_results(profile, data, cache_dir: str | Path | None = None, names: Iterable[str] | None = None,
                   exclude: Iterable[str] = (), repair: bool = False) -> dict[str, list]:
    """Every experiment × fold with a current result in the engine's cache.

    data: a source string or a `Dataset` (pass the loaded Dataset to avoid reloading it). Returns
    experiment -> list of `RunResult` (folds in order); experiments without any done fold are absent.
    repair: recompute a damaged result (`engine.run`) instead of refusing it (`engine.load`); nothing
    else is computed. Holds every score matrix in memory: for metrics only, use `cached_tidy`.
    """
    done = done_folds(profile, data, cache_dir, names, exclude)
    if repair:
        return {name: E.run(name, profile, data, folds=folds, cache_dir=cache_dir, progress=False)
                for name, folds in done.items()}
    return {name: E.load(name, profile, data, folds=folds, cache_dir=cache_dir) for name, folds in done.items()}


def cached_tidy(profile, data, cache_dir: str | Path | None = None, names: Iterable[str] | None = None,
                exclude: Iterable[str] = (), split: str = "test") -> pd.DataFrame:
    """Tidy per-fold metrics of every cached experiment × fold, loading one experiment at a time."""
    done = done_folds(profile, data, cache_dir, names, exclude)
    parts = [tidy_results({name: E.load(name, profile, data, folds=folds, cache_dir=cache_dir)}, split)
             for name, folds in done.items()]
    logger.info("cache holds %d experiment(s), %d fold result(s)", len(done), sum(map(len, done.values())))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list(TIDY))


def cached_params(profile, data, cache_dir: str | Path | None = None, names: Iterable[str] | None = None,
                  exclude: Iterable[str] = (), repair: bool = True) -> list[tuple[str, int, dict]]:
    """(experiment, fold, best hyperparameters) of every cached experiment × fold, one experiment at a time.

    repair: recompute a damaged result (`engine.run`) instead of refusing it (`engine.load`).
    """
    out = []
    for name, folds in done_folds(profile, data, cache_dir, names, exclude).items():
        runs = (E.run(name, profile, data, folds=folds, cache_dir=cache_dir, progress=False) if repair
                else E.load(name, profile, data, folds=folds, cache_dir=cache_dir))
        out += [(name, r.fold, r.best_params) for r in runs]
    return out


def run_tidy(names: Iterable[str], profile, data, cache_dir: str | Path | None = None) -> pd.DataFrame:
    """Tidy test metrics of experiments run one at a time (trained where the cache lacks them; scores dropped)."""
    return pd.concat([tidy_results({name: E.run(name, profile, data, cache_dir=cache_dir, progress=False)})
                      for name in names], ignore_index=True)
