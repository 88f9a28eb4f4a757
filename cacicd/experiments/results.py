"""The result store: one experiment on one fold as `RunResult`, written and read back with its integrity record.

Layout: <cache_dir>/<profile>/<dataset hash>/<experiment>/fold<k>/ holds scores.npy, test_idx.npy,
dev/test_metrics.csv, history.csv, model.pt and result.json, written last (its presence marks a complete
result). result.json records the keys of the experiment declaration and of the profile (a mismatch makes
the folder stale) and the size and SHA-256 of every file written before it (`artefacts`), checked
whenever the result is read: a damaged or missing artefact raises `Damaged` naming file, experiment and fold.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from cacicd.config import Profile, cache_root
from cacicd.data.dataset import Dataset
from cacicd.data.sources import source_string
from cacicd.experiments.registry import RESULT_VERSION, Experiment
from cacicd.files import Damaged, atomic_write_bytes, atomic_write_text, check_files, jsonable, record_files
from cacicd.models.network import MLP
from cacicd.models.search import describe

logger = logging.getLogger(__name__)


RESULT_FILE = "result.json"  # a fold folder's completion marker, written last; records the keys and every artefact
MODEL_FILE = "model.pt"  # the trained network of a fold
LOCK_FILE = ".lock"  # held while a fold folder or a family search is computed


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
    source: str | None = None  # the data source string it was computed from, when known (for messages)

    def y_true(self, dataset: Dataset) -> sp.csr_matrix:
        """(n_test, n_codes) test labels of this fold."""
        return dataset.Y[self.test_idx]

    def load_model(self, device: str | None = None) -> torch.nn.Module:
        """The trained network (weights of the best epoch), on `device` (default CPU)."""
        if self.path is None or not (self.path / MODEL_FILE).exists():
            raise FileNotFoundError(f"{self.experiment} fold {self.fold}: no trained model saved")
        f = self.path / MODEL_FILE
        data = f.read_bytes()
        want = self.artefacts.get(MODEL_FILE)
        if want is None or len(data) != want["bytes"] or hashlib.sha256(data).hexdigest() != want["sha256"]:
            hint = rerun_command(self.experiment, self.profile, self.fold, self.source, self.path.parents[3],
                                 self.dataset_hash)
            raise Damaged(f"cached result of {self.experiment} fold {self.fold} is damaged: {f} differs from what "
                          f"result.json recorded; {hint} recomputes it", [f])
        blob = torch.load(io.BytesIO(data), map_location=device or "cpu", weights_only=True)
        cfg = json.loads(blob["config"])
        model = MLP(cfg["n_inputs"], cfg["n_labels"], cfg["units"], cfg["dropout"], cfg["batchnorm"])
        model.load_state_dict(blob["state_dict"])
        return model.eval().to(device or "cpu")


def rerun_command(experiment: str, profile: str, fold: int, data: str | Dataset | None, cache_dir: str | Path | None,
                  dataset_hash: str = "") -> str:
    """The `cacicd run` command that recomputes one fold: its --profile, --data and --cache unless the defaults."""
    source = None if data is None else source_string(data)
    cmd = f"cacicd run {experiment} --profile {shlex.quote(profile)} --fold {fold}"
    if source is None:
        cmd += f" --data <the source of dataset {dataset_hash}>"
    elif source.strip() != "synthetic":
        cmd += f" --data {shlex.quote(source)}"
    if cache_dir is not None and Path(cache_dir).resolve() != cache_root():
        cmd += f" --cache {shlex.quote(str(cache_dir))}"
    return f"`{cmd}`"


def profile_key(profile: Profile) -> str:
    d = dataclasses.asdict(profile)
    for k in ("description", "inference_batch_sizes", "inference_repeats"):
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fold_dir(cache_dir: Path, profile: Profile, dataset_hash: str, name: str, fold: int) -> Path:
    """<cache_dir>/<profile>/<dataset hash>/<experiment>/fold<k>."""
    return Path(cache_dir) / profile.name / dataset_hash / name / f"fold{fold}"


def result_keys(exp: Experiment, profile: Profile, dataset_hash: str, fold: int) -> dict:
    return {"experiment": exp.name, "experiment_key": exp.key(), "profile": profile.name,
            "profile_key": profile_key(profile), "dataset_hash": dataset_hash, "fold": fold,
            "version": RESULT_VERSION}


def cached_meta(folder: Path, keys: dict, content: bool = True) -> dict | None:
    """result.json's content when complete and current (else None), once every artefact it records is checked.

    Raises `Damaged` (naming file, experiment and fold) when result.json is unreadable or records no
    artefacts, or when an artefact is missing or differs in size or (content=True) SHA-256.
    """
    f = folder / RESULT_FILE
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


def artefact_names(folder: Path) -> list[str]:
    """Files of a fold folder that result.json vouches for: all but result.json and hidden files."""
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and p.name != RESULT_FILE
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def _save_array(path: Path, a: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def save_result(folder: Path, r: RunResult, keys: dict, model: torch.nn.Module | None) -> None:
    _save_array(folder / "scores.npy", np.ascontiguousarray(r.scores, dtype=np.float32))
    _save_array(folder / "test_idx.npy", np.asarray(r.test_idx, dtype=np.int64))
    atomic_write_text(folder / "dev_metrics.csv", r.dev_metrics.to_csv(index=False))
    atomic_write_text(folder / "test_metrics.csv", r.test_metrics.to_csv(index=False))
    atomic_write_text(folder / "history.csv", r.history.to_csv(index=False))
    if model is not None:
        buf = io.BytesIO()
        cfg = dict(model.config, n_inputs=model.n_inputs, n_labels=model.n_labels)
        torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "config": json.dumps(cfg)}, buf)
        atomic_write_bytes(folder / MODEL_FILE, buf.getvalue())
    r.artefacts = record_files(folder, artefact_names(folder))
    meta = dict(keys, best_params=r.best_params, timings=r.timings, info=r.info, codes_hash=codes_hash(r.codes),
                artefacts=r.artefacts)
    atomic_write_text(folder / RESULT_FILE, json.dumps(meta, indent=1, default=jsonable))  # last: marks complete


def load_result(folder: Path, meta: dict, codes: list[str]) -> RunResult:
    """The RunResult of a folder whose artefacts `cached_meta` checked against meta (result.json)."""
    def csv(name):
        p = folder / name
        return pd.read_csv(p) if p.exists() and p.stat().st_size > 1 else pd.DataFrame()

    return RunResult(meta["experiment"], meta["profile"], meta["fold"], meta["dataset_hash"], list(codes),
                     np.load(folder / "test_idx.npy"), np.load(folder / "scores.npy"), csv("dev_metrics.csv"),
                     csv("test_metrics.csv"), meta.get("best_params", {}), csv("history.csv"),
                     meta.get("timings", {}), meta.get("info", {}), folder, meta["artefacts"])


def discard(folder: Path, damaged: Damaged) -> None:
    """Remove a damaged result's result.json and damaged files, so that the fold is recomputed."""
    for p in [folder / RESULT_FILE, *damaged.paths]:
        if p.is_relative_to(folder) and p.is_file():
            p.unlink()


def codes_hash(codes) -> str:
    return hashlib.sha256("\n".join(codes).encode()).hexdigest()[:16]


def wipe_if_stale(folder: Path, keys: dict, force: bool) -> None:
    """Remove a previous declaration's/profile's files (a study of other settings must not be resumed)."""
    kf = folder / "key.json"
    try:
        old = json.loads(kf.read_text()) if kf.exists() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        old = "unreadable"
    if force or (old is not None and old != keys):
        for p in folder.iterdir():
            if p.name != LOCK_FILE:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    (folder / RESULT_FILE).unlink(missing_ok=True)


def search_choices(results: dict[str, list[RunResult]]) -> pd.DataFrame:
    """One row per (experiment, fold): the configuration its search chose, the trial, best epoch and dev value."""
    rows = []
    for name, runs in results.items():
        for r in runs:
            if not r.best_params or "num_layers" not in r.best_params:
                continue
            t = r.info.get("best_trial", {})
            rows.append({"experiment": name, "fold": r.fold, "configuration": describe(r.best_params),
                         **{k: r.best_params.get(k) for k in ("num_layers", "units", "dropout", "batchnorm")},
                         "bracket": t.get("bracket"), "round": t.get("round"), "best_epoch": r.info.get("best_epoch"),
                         "score": r.info.get("best_value"), "dev_at_checkpoint": r.info.get("final_dev"),
                         "configurations_searched": r.info.get("n_configurations")})
    return pd.DataFrame(rows)
