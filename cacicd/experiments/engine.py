"""The engine: `run_many(names, profile, data, folds)` searches, trains, scores and caches experiments' folds.

A run of one experiment on one fold: the Hyperband search of its family (`cacicd.models.search`: the
experiments with the same labels and loss share one store of trained networks), the search's top model
(not retrained), its predictions on the test set expanded to the dataset's full code list (codes the
model never saw score 0), dev and test scored per level (`cacicd.evaluation.metrics`). `parts` experiments
assemble per-level models into one score matrix. Nodes train in this process, or on Dask workers
(`cacicd.experiments.cluster`), where every search of a run progresses at once, each in a thread of
this process (the driver), which alone writes the curve stores and results.

Cache layout: <cache_dir>/<profile>/<dataset hash>/_search/<family>/fold<k>/ holds a family's store of
curves (curves.jsonl and checkpoints/, `cacicd.models.curves`) and its finished search (search.json), which
is read only if the store still holds its models' networks; <cache_dir>/<profile>/<dataset
hash>/<experiment>/fold<k>/ holds scores.npy, test_idx.npy, dev/test_metrics.csv, history.csv, model.pt and
result.json, written last (its presence marks a complete result). result.json records the keys
of the experiment declaration and of the profile; a mismatch makes the folder stale (wiped and
recomputed). It also records the size and SHA-256 of every file written before it, whatever its name
(`artefacts`); a result is read only after every one is checked: a damaged or missing artefact is
recomputed under the lock with a warning naming file, experiment and fold (`run`), or refused with
that name (`load`), never read as is. A new dataset hash is a new folder, so a data update
invalidates only what depends on it. The fold folder is locked (`cacicd.files.file_lock`) while it is
computed; a second process waits, then reads the cache. A run killed at any point resumes from its last
trained network (node).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from cacicd import icd9
from cacicd.config import Profile, cache_root, get_profile
from cacicd.data import splits
from cacicd.data.dataset import Dataset
from cacicd.data.sources import get_splits, load_data, source_string
from cacicd.evaluation import metrics
from cacicd.files import Damaged, atomic_write_text, file_lock, jsonable
from cacicd.models import losses
from cacicd.models.curves import CURVES_FILE, CurveStore, node_of
from cacicd.models.labels import LabelContext
from cacicd.models.network import DummyModel, build_mlp
from cacicd.models.search import (FamilyData, FamilySearch, Member, TrainSettings, load_state,
                                  network_params)
from cacicd.models.train import predict_proba, torch_threads

from cacicd.experiments.cluster import Cluster, auto_workers, parse_workers
from cacicd.experiments.progress import Board
from cacicd.experiments.registry import EXPERIMENTS, LABEL_SETS, RESULT_VERSION, Experiment, family, get_experiment
from cacicd.experiments.results import (LOCK_FILE, RESULT_FILE, RunResult, cached_meta, discard,
                                       fold_dir, load_result, profile_key, rerun_command, result_keys, save_result,
                                       wipe_if_stale)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# data, folds, labels

def load_dataset(data: str | Dataset, profile: Profile, cache_dir: Path) -> Dataset:
    """A Dataset as is, or `cacicd.data.sources.load_data(source, profile, cache_dir)`."""
    if isinstance(data, Dataset):
        return data
    return load_data(data, profile, cache_dir)


def fold_indices(dataset: Dataset, profile: Profile, fold: int, cache_dir: Path) -> tuple[np.ndarray, ...]:
    """(train_idx, dev_idx, test_idx) of one fold, from `cacicd.data.splits` (saved split files when available)."""
    all_splits = get_splits(dataset, profile, cache_dir)
    if not 0 <= fold < len(all_splits):
        raise ValueError(f"fold {fold} out of range: profile {profile.name} has {len(all_splits)} folds")
    return tuple(np.asarray(a) for a in splits.split_indices(dataset, all_splits[fold]))


def check_folds(folds: int | list[int] | None, profile: Profile) -> list[int]:
    """The fold numbers asked for (None: all of the profile's), each checked, before any work starts."""
    if folds is None:
        return list(range(profile.n_folds))
    out: list[int] = []
    for k in [folds] if isinstance(folds, (int, np.integer, str)) else folds:
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"fold {k!r} is not a fold number; profile {profile.name} has folds "
                             f"0 to {profile.n_folds - 1}")
        if not 0 <= k < profile.n_folds:
            raise ValueError(f"fold {k} out of range: profile {profile.name} has {profile.n_folds} folds "
                             f"(0 to {profile.n_folds - 1})")
        if int(k) not in out:
            out.append(int(k))
    return out


def label_columns(dataset: Dataset, labels: str) -> np.ndarray:
    """Column indices (into dataset.codes) of a label set: all, cherry, or one level."""
    if labels == "all":
        cols = np.arange(len(dataset.codes))
    elif labels == "cherry":
        cols = np.flatnonzero(dataset.cherry_mask())
    elif labels in LABEL_SETS:  # one level
        cols = np.flatnonzero(icd9.level_masks(dataset.codes)[labels])
    else:
        raise ValueError(f"unknown label set {labels!r}; choose one of {', '.join(LABEL_SETS)}")
    if cols.size == 0:
        raise ValueError(f"label set {labels!r} is empty on this dataset ({dataset.n_stays} stays)")
    return cols


def evaluate(y_true: sp.spmatrix, scores: np.ndarray, codes: list[str]) -> pd.DataFrame:
    """Tidy (level, metric, value) metrics per level of (n, n_codes) scores, via cacicd.evaluation.metrics.evaluate."""
    return metrics.evaluate(y_true, scores, icd9.level_masks(codes))


def _expand(pred: np.ndarray, cols: np.ndarray, n_codes: int) -> np.ndarray:
    if pred.shape[1] == n_codes and np.array_equal(cols, np.arange(n_codes)):
        return np.ascontiguousarray(pred, dtype=np.float32)
    out = np.zeros((pred.shape[0], n_codes), dtype=np.float32)
    out[:, cols] = pred
    return out


# ---------------------------------------------------------------------------------------------
# running

@dataclass
class RunContext:
    """What every fold of a run shares: profile, dataset (and its hash), cache folder, device, precision, where
    nodes train, the progress board."""

    profile: Profile
    dataset: Dataset
    dataset_hash: str
    cache_dir: Path
    device: str | None
    precision: str
    cluster: Cluster = field(default_factory=Cluster)
    board: Board = field(default_factory=lambda: Board(enabled=False))
    priorities: dict[Path, int] = field(default_factory=dict)  # search folder -> its nodes' priority on Dask


def _family_id(members: list[Experiment], profile: Profile) -> str:
    d = [[e.name, e.key()] for e in members]
    return members[0].labels + "-" + members[0].loss + "-" + hashlib.sha256(
        json.dumps([d, profile_key(profile), RESULT_VERSION]).encode()).hexdigest()[:12]


def search_dir(cache_dir: str | Path, profile: Profile, dataset_hash: str, exp: Experiment, fold: int) -> Path:
    """<cache_dir>/<profile>/<dataset hash>/_search/<family>/fold<k>: the folder of the family search of `exp` on
    `fold`, its curve store, checkpoints and search.json."""
    return Path(cache_dir) / profile.name / dataset_hash / "_search" / _family_id(family(exp), profile) / f"fold{fold}"


@dataclass
class _Family:
    search: FamilySearch
    results: dict  # member name -> result (best trial, trials)
    meta: dict  # costs of the whole family


def family_data(exp: Experiment, ds: Dataset, profile: Profile, fold: int, cache_dir: str | Path) -> FamilyData:
    """What the family search of `exp` trains and scores on for `fold`: its level's labels, the training rows (less
    the validation split) and dev rows, the label context and the members' output rules."""
    train_idx, dev_idx, _ = fold_indices(ds, profile, fold, cache_dir)
    cols = label_columns(ds, exp.labels)
    Y = ds.Y[:, cols].tocsr() if cols.size != len(ds.codes) else ds.Y.tocsr()
    X = ds.X.tocsr()
    ctx = LabelContext.from_labels([ds.codes[j] for j in cols], Y[train_idx])
    return FamilyData.split(X[train_idx], Y[train_idx], X[dev_idx], Y[dev_idx], exp.loss, ctx,
                            sorted({e.output_rule for e in family(exp)}))


def _family_search(exp: Experiment, c: RunContext, fold: int) -> _Family:
    """The family search of `exp` on `fold`: read it when finished, else run or resume it."""
    members = family(exp)
    folder = search_dir(c.cache_dir, c.profile, c.dataset_hash, exp, fold)
    fid = folder.parent.name
    label = f"{exp.labels}/{exp.loss} fold {fold}"
    data = family_data(exp, c.dataset, c.profile, fold, c.cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    p = c.profile
    settings = TrainSettings(p.learning_rate, p.batch_size, p.patience, c.device, c.precision, p.threads)
    f = folder / "search.json"

    def make(store: CurveStore, run_nodes=None) -> FamilySearch:
        return FamilySearch([Member(e.name, e.target, e.output_rule) for e in members], data, p, store,
                            iterations=p.hyperband_iterations, seed_material=[p.seed, fold],
                            loss_space=losses.LOSS_SPACES.get(exp.loss, {}), settings=settings, run_nodes=run_nodes,
                            on_progress=lambda pr: c.board.update(label, pr))

    def finished() -> _Family | None:
        if not f.exists():
            return None
        try:
            saved = json.loads(f.read_text())
            results, meta = saved["results"], saved["meta"]
            store = CurveStore(folder)
            lost = [r["best"]["checkpoint"] for r in results.values()
                    if store.record(node_of(r["best"]["checkpoint"])) is None]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            logger.warning("search of %s fold %d: %s is damaged; the search is read again from its store", exp.name,
                           fold, f)
            f.unlink(missing_ok=True)
            return None
        if lost:
            logger.warning("search of %s fold %d: %s names network(s) that its store %s no longer holds (%s); the "
                           "search is run again from what the store still holds", exp.name, fold, f,
                           folder / CURVES_FILE, ", ".join(x[:12] for x in lost))
            f.unlink(missing_ok=True)
            return None
        return _Family(make(store), results, meta)

    def search() -> _Family:
        logger.info("searching %s (%d member(s): %s)", label, len(members), ", ".join(e.name for e in members))
        store = CurveStore(folder)
        run_nodes = None
        if c.cluster.active:  # workers read the data from the cache folder
            data_file = folder / "family_data.pkl"
            data.save(data_file)
            run_nodes = c.cluster.runner(data_file, store.checkpoint_dir, c.priorities.get(folder, 0))
        fs = make(store, run_nodes)
        results = fs.run()
        recs = store.records()
        # search_s: the seconds its networks trained, summed (what the search costs, however many workers shared
        # it); wall_s: from its start to its end here (with other searches running beside it on a cluster)
        meta = {"family": fid, "members": [e.name for e in members],
                "search_s": float(sum(e["seconds"] for r in recs.values() for e in r["epochs"])), "wall_s": fs.seconds,
                "nodes_in_store": len(recs), "epochs_in_store": int(sum(len(r["epochs"]) for r in recs.values())),
                "nodes_trained_here": fs.nodes_trained, "epochs_trained_here": fs.epochs_trained,
                "iterations": fs.iterations, "promotion": p.promotion, "threads": p.threads}
        atomic_write_text(f, json.dumps({"results": results, "meta": meta}, indent=1, default=jsonable))
        (folder / "family_data.pkl").unlink(missing_ok=True)
        c.board.done(label, f"search {label} ({len(members)} member(s)) done: {meta['nodes_in_store']} networks, "
                            f"{meta['epochs_in_store']} epochs, {fs.seconds:.0f} s")
        return _Family(fs, results, meta)

    if (done := finished()) is not None:
        return done
    with file_lock(folder / LOCK_FILE):
        if (done := finished()) is not None:  # another process finished it
            return done
        return search()


def train_fold(exp: Experiment, c: RunContext, fold: int) -> tuple[RunResult, torch.nn.Module | None]:
    """One fold of an experiment without parts (dummy model, or its family's search and top model), scored; no cache."""
    ds = c.dataset
    t_start = time.perf_counter()
    train_idx, dev_idx, test_idx = fold_indices(ds, c.profile, fold, c.cache_dir)
    cols = label_columns(ds, exp.labels)
    n_codes = len(ds.codes)
    timings: dict = {}
    info: dict = {"n_labels": int(cols.size), "n_train": int(len(train_idx)), "n_dev": int(len(dev_idx)),
                  "n_test": int(len(test_idx))}
    model, params, history = None, {}, pd.DataFrame(columns=["epoch", "loss", "val", "dev", "seconds"])
    if exp.model == "dummy":
        Y = ds.Y[:, cols].tocsr() if cols.size != n_codes else ds.Y
        t0 = time.perf_counter()
        dummy = DummyModel.fit(Y[train_idx])
        timings["train_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        p_dev, p_test = dummy.predict(len(dev_idx)), dummy.predict(len(test_idx))
        timings["inference_s"] = time.perf_counter() - t0
    else:
        fam = _family_search(exp, c, fold)
        res = fam.results[exp.name]
        best = res["best"]
        params = dict(best["config"])
        model = build_mlp(ds.X.shape[1], int(cols.size), network_params(params))
        load_state(model, fam.search.checkpoint(best["checkpoint"]))
        rows = fam.search.lineage(best["checkpoint"])
        model.eval()
        key = Member(exp.name, exp.target, exp.output_rule).key
        history = pd.DataFrame([{"epoch": r["epoch"], "loss": r["loss"], "val": r.get(f"val_{key}"),
                                 "dev": r.get(f"dev_{key}"), "seconds": r["seconds"]} for r in rows])
        timings["search_s"] = float(fam.meta["search_s"])
        timings["train_s"] = float(history["seconds"].sum()) if len(history) else 0.0
        timings["epoch_s"] = float(history["seconds"].mean()) if len(history) else float("nan")
        info.update({"best_value": best["score"], "final_dev": best["best_dev"], "best_epoch": best["best_epoch"],
                     "best_trial": {k: best[k] for k in ("index", "iteration", "bracket", "round")},
                     "n_configurations": res["n_configurations"], "n_trials": res["n_trials"],
                     "family": fam.meta["family"], "family_members": fam.meta["members"],
                     "nodes_in_store": fam.meta["nodes_in_store"], "epochs_in_store": fam.meta["epochs_in_store"]})
        rule = fam.search.data.rules.get(exp.output_rule)
        X = ds.X.tocsr()
        p_dev = predict_proba(model, X[dev_idx], device=c.device, precision=c.precision)
        t0 = time.perf_counter()
        p_test = predict_proba(model, X[test_idx], device=c.device, precision=c.precision)
        timings["inference_s"] = time.perf_counter() - t0
        if rule is not None:
            p_dev, p_test = rule(p_dev), rule(p_test)
    dev_scores, test_scores = _expand(p_dev, cols, n_codes), _expand(p_test, cols, n_codes)
    t0 = time.perf_counter()
    dev_m = evaluate(ds.Y[dev_idx], dev_scores, ds.codes)
    test_m = evaluate(ds.Y[test_idx], test_scores, ds.codes)
    timings["metrics_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    r = RunResult(exp.name, c.profile.name, fold, c.dataset_hash, list(ds.codes), test_idx, test_scores, dev_m,
                  test_m, params, history, timings, info)
    return r, model


def _derived_fold(exp: Experiment, c: RunContext, fold: int, parts: list[RunResult]) -> RunResult:
    """The assembly of per-level parts (their results, in `exp.parts` order) into one score matrix."""
    ds = c.dataset
    t_start = time.perf_counter()
    _, _, test_idx = fold_indices(ds, c.profile, fold, c.cache_dir)
    labels = {p.experiment: get_experiment(p.experiment).labels for p in parts}
    scores = np.zeros((len(test_idx), len(ds.codes)), dtype=np.float32)
    for p in parts:  # later parts win on shared codes (billing over 3-digit for 3-digit leaves)
        cols = label_columns(ds, labels[p.experiment])
        scores[:, cols] = p.scores[:, cols]
    timings = {k: float(sum(p.timings.get(k, 0.0) for p in parts)) for k in ("search_s", "train_s", "inference_s")}
    params = {p.experiment: p.best_params for p in parts}
    history = pd.concat([p.history.assign(part=p.experiment) for p in parts], ignore_index=True)
    info = {"parts": list(exp.parts)}
    dev_m = pd.concat([p.dev_metrics[p.dev_metrics["level"] == labels[p.experiment]] for p in parts],
                      ignore_index=True)
    test_m = evaluate(ds.Y[test_idx], scores, ds.codes)
    own = {labels[p.experiment]: p.test_metrics for p in parts}
    test_m = pd.concat([test_m[~test_m["level"].isin(list(own))]] + [m[m["level"] == lv] for lv, m in own.items()],
                       ignore_index=True)
    timings["total_s"] = time.perf_counter() - t_start
    return RunResult(exp.name, c.profile.name, fold, c.dataset_hash, list(ds.codes), test_idx, scores, dev_m,
                     test_m, params, history, timings, info)


def _run_fold(exp: Experiment, c: RunContext, fold: int, force: bool = False) -> RunResult:
    folder = fold_dir(c.cache_dir, c.profile, c.dataset_hash, exp.name, fold)
    keys = result_keys(exp, c.profile, c.dataset_hash, fold)
    if not force:
        with contextlib.suppress(Damaged):  # checked again, and repaired, under the lock
            if (meta := cached_meta(folder, keys)) is not None:
                return load_result(folder, meta, c.dataset.codes)
    parts = [_run_fold(get_experiment(dep), c, fold) for dep in exp.parts]  # dependencies first, outside our lock
    with file_lock(folder / LOCK_FILE):
        if not force:
            try:
                if (meta := cached_meta(folder, keys)) is not None:  # another process finished it
                    return load_result(folder, meta, c.dataset.codes)
            except Damaged as e:
                logger.warning("%s; recomputing it", e)
                discard(folder, e)
        logger.info("running %s fold %d (profile %s, data %s)", exp.name, fold, c.profile.name, c.dataset_hash)
        if exp.parts:
            r, model = _derived_fold(exp, c, fold, parts), None
        else:
            r, model = train_fold(exp, c, fold)
        wipe_if_stale(folder, keys, force)  # only now: a failed recomputation leaves the previous result as it was
        atomic_write_text(folder / "key.json", json.dumps(keys))
        save_result(folder, r, keys, model)
        r.path = folder
        logger.info("%s fold %d done in %.1fs", exp.name, fold, r.timings.get("total_s", 0.0))
        return r


def _context(profile: str | Profile, data: str | Dataset, cache_dir: str | Path | None, device: str | None = None,
             precision: str | None = None) -> RunContext:
    profile = get_profile(profile) if isinstance(profile, str) else profile
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
    ds = load_dataset(data, profile, cache_dir)
    return RunContext(profile, ds, ds.content_hash(), cache_dir, device,
                      precision if precision is not None else profile.precision)


def _with_parts(exps: list[Experiment]) -> list[Experiment]:
    """The experiments and, before each, the parts it assembles (each once)."""
    out: list[Experiment] = []
    for e in exps:
        for dep in _with_parts([get_experiment(d) for d in e.parts]) + [e]:
            if dep not in out:
                out.append(dep)
    return out


def run_many(names: list[str], profile: str | Profile = "default", data: str | Dataset = "synthetic",
             folds: int | list[int] | None = None, cache_dir: str | Path | None = None, *,
             workers: int | str | None = None, scheduler: str | None = None, force: bool = False,
             progress: bool = True, device: str | None = None, precision: str | None = None, keep: bool = True
             ) -> dict[str, list[RunResult]]:
    """Run (or read from the cache) experiments on some folds (None: all); name -> one RunResult per fold.

    data: a source string for `cacicd.data.sources.load_data` ("synthetic", an OMOP folder, ...) or a Dataset.
    workers: None or 0 trains in this process, one network after another; N (or "auto") on a local Dask
    cluster of N worker processes, every search of the run at once (`cacicd.experiments.cluster`);
    scheduler: the address of an existing Dask cluster instead. Results do not depend on either: every
    training runs with the profile's torch threads, wherever it runs.
    precision: None for the profile's; "float32", "bfloat16" or "auto".
    force: recompute the named experiments' results (their searches are read from the cache).
    keep: return the results; False returns {} and holds none in memory (a run of everything, for the cache).
    """
    exps = [get_experiment(n) for n in names]
    profile = get_profile(profile) if isinstance(profile, str) else profile
    folds = check_folds(folds, profile)
    n_workers = parse_workers(workers)
    if n_workers == "auto":
        n_workers = auto_workers(profile.threads)
    c = _context(profile, data, cache_dir, device, precision)
    icd9.level_masks(c.dataset.codes)  # the hierarchy read once, before any thread needs it
    todo = [(e, k) for e in _with_parts(exps) for k in folds]
    done: dict[tuple[str, int], RunResult] = {}

    def one(e: Experiment, k: int) -> None:
        r = _run_fold(e, c, k, force=force and e in exps)
        done[e.name, k] = r if keep else None

    with torch_threads(profile.threads), Cluster(n_workers, scheduler) as cluster:
        c.cluster, c.board = cluster, Board(enabled=progress)
        try:
            searched: dict[Path, list[tuple[Experiment, int]]] = {}
            for e, k in todo:
                if e.model == "mlp" and not e.parts:
                    searched.setdefault(search_dir(c.cache_dir, c.profile, c.dataset_hash, e, k), []).append((e, k))
            # the largest families first; a search's nodes outrank those of the searches after it, so that the
            # searches end one after another (their results computed here meanwhile) rather than all at the end
            order = sorted(searched, key=lambda f: (-len(family(searched[f][0][0])), searched[f][0][1]))
            c.priorities = {f: len(order) - i for i, f in enumerate(order)}
            if cluster.active and len(searched) > 1:  # every search at once: their nodes share the workers
                with ThreadPoolExecutor(len(searched), thread_name_prefix="search") as pool:
                    for fut in [pool.submit(lambda items: [one(e, k) for e, k in items], searched[f])
                                for f in order]:
                        fut.result()
            for e, k in todo:
                if (e.name, k) not in done:
                    one(e, k)
        finally:
            c.board.close()
    if not keep:
        return {}
    source = source_string(data)
    for r in done.values():
        r.source = source
    return {e.name: [done[e.name, k] for k in folds] for e in exps}


def run(name: str, profile: str | Profile = "default", data: str | Dataset = "synthetic",
        folds: int | list[int] | None = None, cache_dir: str | Path | None = None, **kw) -> list[RunResult]:
    """Run (or read from the cache) experiment `name` on some folds (None: all); one RunResult per fold.

    kw: workers, scheduler, force, progress, device, precision (see `run_many`).
    """
    return run_many([name], profile, data, folds, cache_dir, **kw)[name]


def status(profile: str | Profile = "default", data: str | Dataset = "synthetic",
           cache_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per (experiment, fold): state done | damaged | stale | missing for the current data and declarations.

    damaged: complete, but an artefact is missing or of another size than result.json recorded (`run`
    recomputes it); contents are checked when a result is read.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
    ds = load_dataset(data, profile, cache_dir)
    h = ds.content_hash()
    rows = []
    for exp in EXPERIMENTS.values():
        for k in range(profile.n_folds):
            folder = fold_dir(cache_dir, profile, h, exp.name, k)
            keys = result_keys(exp, profile, h, k)
            try:
                state = "done" if cached_meta(folder, keys, content=False) is not None else None
            except Damaged:
                state = "damaged"
            if state is None:
                stale = (folder / RESULT_FILE).exists() or any(
                    (fold_dir(cache_dir, profile, p.name, exp.name, k) / RESULT_FILE).exists()
                    for p in (Path(cache_dir) / profile.name).glob("*") if p.name != h)
                state = "stale" if stale else "missing"
            rows.append({"experiment": exp.name, "fold": k, "state": state})
    return pd.DataFrame(rows)


def load(name: str, profile: str | Profile = "default", data: str | Dataset = "synthetic",
         folds: int | list[int] | None = None, cache_dir: str | Path | None = None) -> list[RunResult]:
    """Cached results only (no computation); FileNotFoundError names what is missing, `Damaged` what is damaged."""
    exp = get_experiment(name)
    profile = get_profile(profile) if isinstance(profile, str) else profile
    folds = check_folds(folds, profile)
    c = _context(profile, data, cache_dir)
    source = source_string(data)
    out = []
    for k in folds:
        folder = fold_dir(c.cache_dir, c.profile, c.dataset_hash, exp.name, k)
        try:
            meta = cached_meta(folder, result_keys(exp, c.profile, c.dataset_hash, k))
        except Damaged as e:
            hint = rerun_command(name, c.profile.name, k, data, c.cache_dir, c.dataset_hash)
            raise Damaged(f"{e}; {hint} recomputes it", e.paths) from None
        if meta is None:
            raise FileNotFoundError(f"no current cached result for {name} fold {k} in {folder}; run it first")
        out.append(load_result(folder, meta, c.dataset.codes))
        out[-1].source = source
    return out
