"""Every experiment of the paper declared once, and `run(name, profile, data, folds)` with an on-disk cache.

A run of one experiment on one fold: search hyperparameters on the dev set (`cacicd.search`), train
the best configuration (`cacicd.train`), predict the test set, expand the predictions to the
dataset's full code list (codes the model never saw score 0), score dev and test per level
(`cacicd.metrics`). Derived experiments reuse others: `base` (roll-up / roll-down post-process the
base model's test predictions, no retraining) and `parts` (per-level models assembled into one
score matrix).

Cache layout: <cache_dir>/<profile>/<dataset hash>/<experiment>/fold<k>/ holding study.db (Optuna,
SQLite), search.json, scores.npy, test_idx.npy, dev/test_metrics.csv, history.csv, model.pt and
result.json, written last (its presence marks a complete result). result.json records the keys
of the experiment declaration and of the profile; a mismatch makes the folder stale (wiped and
recomputed). It also records the size and SHA-256 of every file written before it, whatever its name
(`artefacts`); a result is read only after every one is checked: a damaged or missing artefact is
recomputed under the lock with a warning naming file, experiment and fold (`run`), or refused with
that name (`load`), never read as is. A new dataset hash is a new folder, so a data update
invalidates only what depends on it. The fold folder is locked (`cacicd.io.file_lock`) while it is computed; a second process waits,
then reads the cache. A run killed at any point resumes from its last completed search trial.

Profiles with `search_all_folds=False` search on fold 0 only and train the other folds with fold
0's best hyperparameters (the paper profile searches every fold).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from . import icd9
from .config import Profile, cache_root, get_profile
from .dataset import Dataset
from .io import Damaged, atomic_write_bytes, atomic_write_text, check_files, file_lock, jsonable, record_files

logger = logging.getLogger(__name__)

LABEL_SETS = ("all", "cherry", "chapter", "subchapter", "3digit", "billing")
RESULT_VERSION = 1


@dataclass(frozen=True)
class Experiment:
    """One experiment of the paper: what is trained (labels, loss, model), tuned on what, post-processed how."""

    name: str
    description: str
    labels: str = "all"  # LABEL_SETS
    loss: str = "bce"
    output_rule: str = "identity"  # applied at inference (and to dev predictions during training)
    target: str = "ndcg"
    model: str = "mlp"  # "mlp" | "dummy"
    base: str | None = None  # reuse this experiment's test predictions (no training)
    parts: tuple[str, ...] = ()  # composite of these experiments' predictions

    def key(self) -> str:
        """Hash of the declaration (and of its base/parts): a change invalidates cached results."""
        d = dataclasses.asdict(self)
        d.pop("description")
        deps = [EXPERIMENTS[n].key() for n in ((self.base,) if self.base else ()) + self.parts]
        return hashlib.sha256(json.dumps([d, deps, RESULT_VERSION], sort_keys=True).encode()).hexdigest()[:16]


def _declare(*exps: Experiment) -> dict[str, Experiment]:
    return {e.name: e for e in exps}


_TARGET_TEXT = {"f1_micro": "micro F1", "f1_macro": "macro F1", "ndcg": "NDCG", "auprc_micro": "micro AUPRC",
                "auprc_macro": "macro AUPRC", "auroc_micro": "micro AUROC", "auroc_macro": "macro AUROC"}
LEVEL_PARTS = {"chapter": "level_chapter_ndcg", "subchapter": "level_subchapter_ndcg",
               "3digit": "level_3digit_ndcg", "billing": "level_billing_ndcg"}

EXPERIMENTS: dict[str, Experiment] = _declare(
    Experiment("dummy", "training-set frequency of each code, the same for every stay", model="dummy",
               target="ndcg"),
    *[Experiment(f"naive_{t}", f"naive multitask on all codes, tuned on {txt}", target=t)
      for t, txt in _TARGET_TEXT.items()],
    Experiment("cherry_f1_micro", "Hansen-like: cherry-picked codes only, tuned on micro F1 (unseen codes score 0)",
               labels="cherry", target="f1_micro"),
    *[Experiment(name, f"per-level model on {lv} codes only, tuned on NDCG", labels=lv)
      for lv, name in LEVEL_PARTS.items()],
    Experiment("per_level_ndcg", "four per-level models (chapter, subchapter, 3-digit, billing) assembled",
               parts=tuple(LEVEL_PARTS.values())),
    Experiment("reweighted_ndcg", "re-weighted multitask BCE (equal total weight per level group)",
               loss="reweighted_bce"),
    Experiment("rollup_ndcg", "naive_ndcg's model with roll-up at inference (max over descendants)",
               output_rule="rollup", base="naive_ndcg"),
    Experiment("rolldown_ndcg", "naive_ndcg's model with roll-down at inference (min over ancestors)",
               output_rule="rolldown", base="naive_ndcg"),
    Experiment("mcloss_ndcg", "MCLoss (hierarchy-constrained BCE), roll-up at inference", loss="mcloss",
               output_rule="rollup"),
    Experiment("treemin_ndcg", "TreeMin loss (hierarchy-constrained BCE), plain sigmoid at inference",
               loss="treemin"),
    Experiment("hierl2_ndcg", "BCE + hierarchical L2 between parent and child output weights", loss="hier_l2"),
    Experiment("outl2_ndcg", "BCE + L2 on the output layer's weights", loss="output_l2"),
    Experiment("irw_ndcg", "imbalance-ratio weighted BCE (IRW)", loss="irw"),
    Experiment("irnw_ndcg", "imbalance-ratio normalised weighted BCE (IRNW)", loss="irnw"),
    Experiment("focal_ndcg", "focal loss without alpha", loss="focal"),
)


def _validate() -> None:
    from .train import TARGETS

    for e in EXPERIMENTS.values():
        if e.labels not in LABEL_SETS or e.target not in TARGETS or e.model not in ("mlp", "dummy"):
            raise ValueError(f"experiment {e.name}: bad labels/target/model {e.labels}/{e.target}/{e.model}")
        for dep in ((e.base,) if e.base else ()) + e.parts:
            if dep not in EXPERIMENTS:
                raise ValueError(f"experiment {e.name} depends on unknown experiment {dep!r}")
        if e.base and EXPERIMENTS[e.base].output_rule != "identity":
            raise ValueError(f"experiment {e.name}: its base {e.base} must have output rule identity")


_validate()


def get_experiment(name: str) -> Experiment:
    """The declared experiment of that name, with a clear error for an unknown one."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}") from None


def trained_experiments() -> list[str]:
    """Names of the experiments that train a network (no base, no parts, model mlp)."""
    return [e.name for e in EXPERIMENTS.values() if e.model == "mlp" and not e.base and not e.parts]


# ---------------------------------------------------------------------------------------------
# results

@dataclass
class RunResult:
    """One experiment on one fold. scores: (n_test, n_codes) float32 over `codes`; test_idx: dataset rows."""

    experiment: str
    profile: str
    fold: int
    dataset_hash: str
    codes: list[str]
    test_idx: np.ndarray
    scores: np.ndarray
    dev_metrics: pd.DataFrame  # tidy: level, metric, value
    test_metrics: pd.DataFrame
    best_params: dict = field(default_factory=dict)
    history: pd.DataFrame = field(default_factory=pd.DataFrame)  # epoch, loss, dev, seconds
    timings: dict = field(default_factory=dict)  # search_s, train_s, epoch_s, inference_s, total_s
    info: dict = field(default_factory=dict)
    path: Path | None = None
    artefacts: dict = field(default_factory=dict)  # name -> {bytes, sha256}, as recorded in result.json

    def y_true(self, dataset: Dataset) -> sp.csr_matrix:
        """(n_test, n_codes) test labels of this fold."""
        return dataset.Y[self.test_idx]

    def load_model(self, device: str | None = None) -> torch.nn.Module:
        """The trained network (weights of the best epoch), on `device` (default CPU)."""
        if self.path is None or not (self.path / "model.pt").exists():
            raise FileNotFoundError(f"{self.experiment} fold {self.fold}: no trained model saved")
        from .models import MLP

        f = self.path / "model.pt"
        data = f.read_bytes()
        want = self.artefacts.get("model.pt")
        if want is None or len(data) != want["bytes"] or hashlib.sha256(data).hexdigest() != want["sha256"]:
            raise Damaged(f"cached result of {self.experiment} fold {self.fold} is damaged: {f} differs from what "
                          f"result.json recorded; `cacicd run {self.experiment} --fold {self.fold}` recomputes it",
                          [f])
        blob = torch.load(io.BytesIO(data), map_location=device or "cpu", weights_only=True)
        cfg = json.loads(blob["config"])
        model = MLP(cfg["n_inputs"], cfg["n_labels"], cfg["units"], cfg["dropout"], cfg["batchnorm"])
        model.load_state_dict(blob["state_dict"])
        return model.eval().to(device or "cpu")


def _profile_key(profile: Profile) -> str:
    d = dataclasses.asdict(profile)
    for k in ("description", "inference_batch_sizes", "inference_repeats"):
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fold_dir(cache_dir: Path, profile: Profile, dataset_hash: str, name: str, fold: int) -> Path:
    """<cache_dir>/<profile>/<dataset hash>/<experiment>/fold<k>."""
    return Path(cache_dir) / profile.name / dataset_hash / name / f"fold{fold}"


def _keys(exp: Experiment, profile: Profile, dataset_hash: str, fold: int) -> dict:
    return {"experiment": exp.name, "experiment_key": exp.key(), "profile": profile.name,
            "profile_key": _profile_key(profile), "dataset_hash": dataset_hash, "fold": fold,
            "version": RESULT_VERSION}


def _cached(folder: Path, keys: dict, content: bool = True) -> dict | None:
    """result.json's content when complete and current (else None), once every artefact it records is checked.

    Raises `Damaged` (naming file, experiment and fold) when result.json is unreadable or records no
    artefacts, or when an artefact is missing or differs in size or (content=True) SHA-256.
    """
    f = folder / "result.json"
    if not f.exists():
        return None
    what = f"cached result of {keys['experiment']} fold {keys['fold']}"
    try:
        meta = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Damaged(f"{what} is damaged: {f} is not valid JSON", [f]) from None
    if not isinstance(meta, dict) or not all(meta.get(k) == v for k, v in keys.items()):
        return None
    if not isinstance(meta.get("artefacts"), dict):
        raise Damaged(f"{what} cannot be verified: {f} records no artefact sizes and hashes "
                      "(written by an older version)", [f])
    bad = check_files(folder, meta["artefacts"], content)
    if bad:
        raise Damaged(f"{what} is damaged: " + "; ".join(f"{p} is {why}" for p, why in bad), [p for p, _ in bad])
    return meta


def _artefact_names(folder: Path) -> list[str]:
    """Files of a fold folder that result.json vouches for: all but result.json, hidden files and SQLite journals."""
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and p.name != "result.json" and not p.name.endswith(("-journal", "-wal", "-shm"))
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def _save_array(path: Path, a: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _save_result(folder: Path, r: RunResult, keys: dict, model: torch.nn.Module | None) -> None:
    _save_array(folder / "scores.npy", np.ascontiguousarray(r.scores, dtype=np.float32))
    _save_array(folder / "test_idx.npy", np.asarray(r.test_idx, dtype=np.int64))
    atomic_write_text(folder / "dev_metrics.csv", r.dev_metrics.to_csv(index=False))
    atomic_write_text(folder / "test_metrics.csv", r.test_metrics.to_csv(index=False))
    atomic_write_text(folder / "history.csv", r.history.to_csv(index=False))
    if model is not None:
        buf = io.BytesIO()
        cfg = dict(model.config, n_inputs=model.n_inputs, n_labels=model.n_labels)
        torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "config": json.dumps(cfg)}, buf)
        atomic_write_bytes(folder / "model.pt", buf.getvalue())
    r.artefacts = record_files(folder, _artefact_names(folder))
    meta = dict(keys, best_params=r.best_params, timings=r.timings, info=r.info, codes_hash=_codes_hash(r.codes),
                artefacts=r.artefacts)
    atomic_write_text(folder / "result.json", json.dumps(meta, indent=1, default=jsonable))  # last: marks complete


def _load_result(folder: Path, meta: dict, codes: list[str]) -> RunResult:
    """The RunResult of a folder whose artefacts `_cached` checked against meta (result.json)."""
    def csv(name):
        p = folder / name
        return pd.read_csv(p) if p.exists() and p.stat().st_size > 1 else pd.DataFrame()

    return RunResult(meta["experiment"], meta["profile"], meta["fold"], meta["dataset_hash"], list(codes),
                     np.load(folder / "test_idx.npy"), np.load(folder / "scores.npy"), csv("dev_metrics.csv"),
                     csv("test_metrics.csv"), meta.get("best_params", {}), csv("history.csv"),
                     meta.get("timings", {}), meta.get("info", {}), folder, meta["artefacts"])


def _discard(folder: Path, damaged: Damaged) -> None:
    """Remove a damaged result's result.json and damaged files, so that the fold is recomputed."""
    for p in [folder / "result.json", *damaged.paths]:
        if p.is_relative_to(folder) and p.is_file():
            p.unlink()


def _codes_hash(codes) -> str:
    return hashlib.sha256("\n".join(codes).encode()).hexdigest()[:16]



# ---------------------------------------------------------------------------------------------
# data, folds, labels

def load_dataset(data: str | Dataset, profile: Profile, cache_dir: Path) -> Dataset:
    """A Dataset as is, or `cacicd.data.load_data(source, profile, cache_dir)`."""
    if isinstance(data, Dataset):
        return data
    from .data import load_data  # lazy: a parallel module

    return load_data(data, profile, cache_dir)


def fold_indices(dataset: Dataset, profile: Profile, fold: int, cache_dir: Path) -> tuple[np.ndarray, ...]:
    """(train_idx, dev_idx, test_idx) of one fold, from `cacicd.splits` (saved split files when available)."""
    from . import splits  # lazy: parallel modules

    try:
        from .data import get_splits

        all_splits = get_splits(dataset, profile, cache_dir)
    except ImportError:
        all_splits = splits.make_splits(dataset.visit_ids, profile.n_folds, profile.split_fraction, profile.seed,
                                        dataset.person_ids if profile.group_by_person else None)
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
    elif labels in ("chapter", "subchapter", "3digit", "billing"):
        cols = np.flatnonzero(icd9.level_masks(dataset.codes)[labels])
    else:
        raise ValueError(f"unknown label set {labels!r}; choose one of {', '.join(LABEL_SETS)}")
    if cols.size == 0:
        raise ValueError(f"label set {labels!r} is empty on this dataset ({dataset.n_stays} stays)")
    return cols


def evaluate(y_true: sp.spmatrix, scores: np.ndarray, codes: list[str]) -> pd.DataFrame:
    """Tidy (level, metric, value) metrics per level of (n, n_codes) scores, via cacicd.metrics.evaluate."""
    from . import metrics  # lazy: a parallel module

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
class _Ctx:
    profile: Profile
    dataset: Dataset
    dataset_hash: str
    cache_dir: Path
    storage: str | None
    progress: bool
    device: str | None
    amp: bool


def _study_name(keys: dict) -> str:
    return (f"{keys['profile']}-{keys['dataset_hash']}-{keys['experiment']}-fold{keys['fold']}-"
            f"{keys['experiment_key'][:8]}{keys['profile_key'][:8]}")


def _search(exp: Experiment, c: _Ctx, fold: int, Xs, Ys, ctx, rule) -> dict:
    """Run (or resume, or read) the search of `exp` on `fold`; returns search.json's content."""
    from . import search

    folder = fold_dir(c.cache_dir, c.profile, c.dataset_hash, exp.name, fold)
    f = folder / "search.json"
    keys = _keys(exp, c.profile, c.dataset_hash, fold)
    if f.exists():
        meta = json.loads(f.read_text())
        if all(meta.get(k) == v for k, v in keys.items()):
            return meta
    t0 = time.perf_counter()
    n_trials = search.trial_budget(c.profile)
    storage = c.storage or folder / "study.db"
    study_name = _study_name(keys)
    study = search.create_study(study_name, storage, c.profile)
    if c.storage is None:
        search.recover(study)  # we hold the folder lock: anything RUNNING belongs to a dead process
    objective = search.make_objective(Xs[0], Ys[0], Xs[1], Ys[1], profile=c.profile, loss_name=exp.loss, ctx=ctx,
                                      target=exp.target, output_rule=rule, device=c.device, amp=c.amp)
    search.run_study(study, objective, n_trials, progress=c.progress)
    if c.storage is not None:
        search.wait_for_budget(study, n_trials)
    params, value = search.best_params(study)
    from optuna.trial import TrialState

    states = [t.state for t in study.get_trials(deepcopy=False)]
    meta = dict(keys, best_params=params, best_value=value, n_trials=n_trials,
                n_complete=states.count(TrialState.COMPLETE), n_pruned=states.count(TrialState.PRUNED),
                n_failed=states.count(TrialState.FAIL), search_s=time.perf_counter() - t0)
    atomic_write_text(f, json.dumps(meta, indent=1, default=jsonable))
    return meta


def _train_fold(exp: Experiment, c: _Ctx, fold: int) -> tuple[RunResult, torch.nn.Module | None]:
    from . import losses, outputs
    from .models import DummyModel
    from .train import predict_proba, train

    ds = c.dataset
    t_start = time.perf_counter()
    train_idx, dev_idx, test_idx = fold_indices(ds, c.profile, fold, c.cache_dir)
    cols = label_columns(ds, exp.labels)
    codes = [ds.codes[j] for j in cols]
    Y = ds.Y[:, cols].tocsr() if cols.size != len(ds.codes) else ds.Y
    n_codes = len(ds.codes)
    timings: dict = {}
    info: dict = {"n_labels": int(cols.size), "n_train": int(len(train_idx)), "n_dev": int(len(dev_idx)),
                  "n_test": int(len(test_idx))}
    model, params, history = None, {}, pd.DataFrame(columns=["epoch", "loss", "dev", "seconds"])
    if exp.model == "dummy":
        t0 = time.perf_counter()
        dummy = DummyModel.fit(Y[train_idx])
        timings["train_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        p_dev, p_test = dummy.predict(len(dev_idx)), dummy.predict(len(test_idx))
        timings["inference_s"] = time.perf_counter() - t0
    else:
        ctx = losses.LabelContext.from_labels(codes, Y[train_idx])
        rule = None if exp.output_rule == "identity" else outputs.make_output_rule(exp.output_rule, ctx)
        X = ds.X.tocsr()
        Xs, Ys = (X[train_idx], X[dev_idx]), (Y[train_idx], Y[dev_idx])
        search_fold = fold if c.profile.search_all_folds else 0
        if search_fold != fold:  # reuse fold 0's search (under fold 0's lock)
            folder0 = fold_dir(c.cache_dir, c.profile, c.dataset_hash, exp.name, 0)
            with file_lock(folder0 / ".lock"):
                tr0, dv0, _ = fold_indices(ds, c.profile, 0, c.cache_dir)
                ctx0 = losses.LabelContext.from_labels(codes, Y[tr0])
                rule0 = None if rule is None else outputs.make_output_rule(exp.output_rule, ctx0)
                s = _search(exp, c, 0, (X[tr0], X[dv0]), (Y[tr0], Y[dv0]), ctx0, rule0)
            timings["search_s"] = 0.0
            info["search_fold"] = 0
        else:
            s = _search(exp, c, fold, Xs, Ys, ctx, rule)
            timings["search_s"] = s["search_s"]
            info["search_fold"] = fold
        info.update({k: s[k] for k in ("best_value", "n_trials", "n_complete", "n_pruned", "n_failed")})
        params = s["best_params"]
        from .search import split_params

        net, loss_kw = split_params(params)
        t0 = time.perf_counter()
        res = train(Xs[0], Ys[0], Xs[1], Ys[1], net, losses.make_loss(exp.loss, ctx, **loss_kw), exp.target,
                    seed=c.profile.seed * 1000 + 7919 * (fold + 1), max_epochs=c.profile.max_epochs,
                    lr=c.profile.learning_rate, batch_size=c.profile.batch_size, patience=c.profile.patience,
                    output_rule=rule, device=c.device, amp=c.amp, progress=c.progress)
        timings["train_s"] = time.perf_counter() - t0
        timings["epoch_s"] = float(np.mean([h["seconds"] for h in res.history]))
        info["best_epoch"], info["final_dev"] = res.best_epoch, res.best_value
        history = pd.DataFrame(res.history)
        model = res.model
        p_dev = predict_proba(model, X[dev_idx], device=c.device, amp=c.amp)
        t0 = time.perf_counter()
        p_test = predict_proba(model, X[test_idx], device=c.device, amp=c.amp)
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


def _derived_fold(exp: Experiment, c: _Ctx, fold: int) -> RunResult:
    """Roll-up / roll-down of a base model's predictions, or the assembly of per-level parts."""
    from . import losses, outputs

    ds = c.dataset
    t_start = time.perf_counter()
    train_idx, dev_idx, test_idx = fold_indices(ds, c.profile, fold, c.cache_dir)
    if exp.base:
        base = _run_fold(get_experiment(exp.base), c, fold)
        cols = label_columns(ds, exp.labels)
        codes = [ds.codes[j] for j in cols]
        ctx = losses.LabelContext.from_labels(codes, ds.Y[train_idx][:, cols])
        rule = outputs.make_output_rule(exp.output_rule, ctx)
        t0 = time.perf_counter()
        scores = _expand(rule(base.scores[:, cols]), cols, len(ds.codes))
        timings = {"search_s": 0.0, "train_s": 0.0, "inference_s": base.timings.get("inference_s", 0.0)
                   + time.perf_counter() - t0}
        params, history, info = base.best_params, base.history, {"base": exp.base}
        dev_m = pd.DataFrame(columns=["level", "metric", "value"])
        if rule is not None and base.path is not None and (base.path / "model.pt").exists():
            from .train import predict_proba

            p_dev = predict_proba(base.load_model(c.device), ds.X[dev_idx], device=c.device)
            dev_m = evaluate(ds.Y[dev_idx], _expand(rule(p_dev[:, cols] if p_dev.shape[1] != len(cols) else p_dev),
                                                    cols, len(ds.codes)), ds.codes)
    else:
        parts = [_run_fold(get_experiment(p), c, fold) for p in exp.parts]
        scores = np.zeros((len(test_idx), len(ds.codes)), dtype=np.float32)
        masks = icd9.level_masks(ds.codes)
        for p in parts:  # later parts win on shared codes (billing over 3-digit for 3-digit leaves)
            cols = label_columns(ds, get_experiment(p.experiment).labels)
            scores[:, cols] = p.scores[:, cols]
        timings = {k: float(sum(p.timings.get(k, 0.0) for p in parts)) for k in ("search_s", "train_s", "inference_s")}
        params = {p.experiment: p.best_params for p in parts}
        history = pd.concat([p.history.assign(part=p.experiment) for p in parts], ignore_index=True)
        info = {"parts": list(exp.parts)}
        dev_m = pd.concat([p.dev_metrics[p.dev_metrics["level"] == get_experiment(p.experiment).labels]
                           for p in parts], ignore_index=True)
        del masks
    test_m = evaluate(ds.Y[test_idx], scores, ds.codes)
    if exp.parts:  # each part's own level is scored with its own model's predictions
        own = {get_experiment(p.experiment).labels: p.test_metrics for p in parts}
        test_m = pd.concat([test_m[~test_m["level"].isin(list(own))]]
                           + [m[m["level"] == lv] for lv, m in own.items()], ignore_index=True)
    timings["total_s"] = time.perf_counter() - t_start
    return RunResult(exp.name, c.profile.name, fold, c.dataset_hash, list(ds.codes), test_idx, scores, dev_m,
                     test_m, params, history, timings, info)


def _run_fold(exp: Experiment, c: _Ctx, fold: int, force: bool = False) -> RunResult:
    folder = fold_dir(c.cache_dir, c.profile, c.dataset_hash, exp.name, fold)
    keys = _keys(exp, c.profile, c.dataset_hash, fold)
    if not force:
        with contextlib.suppress(Damaged):  # checked again, and repaired, under the lock
            if (meta := _cached(folder, keys)) is not None:
                return _load_result(folder, meta, c.dataset.codes)
    for dep in ((exp.base,) if exp.base else ()) + exp.parts:  # dependencies first, outside our lock
        _run_fold(get_experiment(dep), c, fold)
    with file_lock(folder / ".lock"):
        if not force:
            try:
                if (meta := _cached(folder, keys)) is not None:  # another process finished it
                    return _load_result(folder, meta, c.dataset.codes)
            except Damaged as e:
                logger.warning("%s; recomputing it", e)
                _discard(folder, e)
        _wipe_if_stale(folder, keys, force)
        atomic_write_text(folder / "key.json", json.dumps(keys))
        logger.info("running %s fold %d (profile %s, data %s)", exp.name, fold, c.profile.name, c.dataset_hash)
        if exp.base or exp.parts:
            r, model = _derived_fold(exp, c, fold), None
        else:
            r, model = _train_fold(exp, c, fold)
        _save_result(folder, r, keys, model)
        r.path = folder
        logger.info("%s fold %d done in %.1fs", exp.name, fold, r.timings.get("total_s", 0.0))
        return r


def _wipe_if_stale(folder: Path, keys: dict, force: bool) -> None:
    """Remove a previous declaration's/profile's files (a study of other settings must not be resumed)."""
    kf = folder / "key.json"
    try:
        old = json.loads(kf.read_text()) if kf.exists() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        old = "unreadable"
    if force or (old is not None and old != keys):
        for p in folder.iterdir():
            if p.name != ".lock":
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    (folder / "result.json").unlink(missing_ok=True)


def _context(profile, data, cache_dir, storage, progress, device, amp) -> _Ctx:
    profile = get_profile(profile) if isinstance(profile, str) else profile
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
    ds = load_dataset(data, profile, cache_dir)
    return _Ctx(profile, ds, ds.content_hash(), cache_dir, storage, progress, device, amp)


def run(name: str, profile: str | Profile = "default", data: str | Dataset = "synthetic",
        folds: int | list[int] | None = None, cache_dir: str | Path | None = None, *, storage: str | None = None,
        force: bool = False, progress: bool = True, device: str | None = None, amp: bool = False) -> list[RunResult]:
    """Run (or read from the cache) experiment `name` on some folds (None: all); one RunResult per fold.

    data: a source string for `cacicd.data.load_data` ("synthetic", an OMOP folder, ...) or a Dataset.
    storage: None for the run folder's SQLite study, or a PostgreSQL URL shared with `cacicd search` workers.
    """
    exp = get_experiment(name)
    profile = get_profile(profile) if isinstance(profile, str) else profile
    folds = check_folds(folds, profile)
    c = _context(profile, data, cache_dir, storage, progress, device, amp)
    from .train import set_threads

    set_threads()
    return [_run_fold(exp, c, int(k), force=force) for k in folds]


def search_worker(name: str, storage: str, profile: str | Profile = "default", data: str | Dataset = "synthetic",
                  fold: int = 0, n_trials: int | None = None, cache_dir: str | Path | None = None,
                  progress: bool = True, device: str | None = None, amp: bool = False) -> dict:
    """Join the shared search of (`name`, fold) in `storage` until the study holds n_trials counted trials.

    n_trials defaults to the profile's budget. Returns {study, n_counted, n_mine}. Start one per worker;
    then `run(name, ..., storage=storage)` trains the best configuration.
    """
    from . import losses, outputs, search
    from .train import set_threads

    exp = get_experiment(name)
    if exp.model != "mlp" or exp.base or exp.parts:
        raise ValueError(f"experiment {name} has no search of its own (model {exp.model}, base/parts)")
    c = _context(profile, data, cache_dir, storage, progress, device, amp)
    set_threads()
    tr, dv, _ = fold_indices(c.dataset, c.profile, fold, c.cache_dir)
    cols = label_columns(c.dataset, exp.labels)
    codes = [c.dataset.codes[j] for j in cols]
    Y, X = c.dataset.Y[:, cols].tocsr(), c.dataset.X.tocsr()
    ctx = losses.LabelContext.from_labels(codes, Y[tr])
    rule = None if exp.output_rule == "identity" else outputs.make_output_rule(exp.output_rule, ctx)
    keys = _keys(exp, c.profile, c.dataset_hash, fold)
    study_name = _study_name(keys)
    study = search.create_study(study_name, storage, c.profile)
    objective = search.make_objective(X[tr], Y[tr], X[dv], Y[dv], profile=c.profile, loss_name=exp.loss, ctx=ctx,
                                      target=exp.target, output_rule=rule, device=device, amp=amp)
    budget = n_trials if n_trials is not None else search.trial_budget(c.profile)
    import os
    import socket

    search.run_study(study, objective, budget, progress=progress)
    me = f"{socket.gethostname()}:{os.getpid()}"
    trials = study.get_trials(deepcopy=False, states=search.COUNTED)
    return {"study": study_name, "n_counted": len(trials),
            "n_mine": sum(t.user_attrs.get("worker") == me for t in trials)}


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
            keys = _keys(exp, profile, h, k)
            try:
                state = "done" if _cached(folder, keys, content=False) is not None else None
            except Damaged:
                state = "damaged"
            if state is None:
                stale = (folder / "result.json").exists() or any(
                    (p / exp.name / f"fold{k}" / "result.json").exists()
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
    c = _context(profile, data, cache_dir, None, False, None, False)
    out = []
    for k in folds:
        folder = fold_dir(c.cache_dir, c.profile, c.dataset_hash, exp.name, k)
        try:
            meta = _cached(folder, _keys(exp, c.profile, c.dataset_hash, k))
        except Damaged as e:
            raise Damaged(f"{e}; `cacicd run {name} --fold {k}` recomputes it", e.paths) from None
        if meta is None:
            raise FileNotFoundError(f"no current cached result for {name} fold {k} in {folder}; run it first")
        out.append(_load_result(folder, meta, c.dataset.codes))
    return out
