"""Hyperparameter search with Optuna (spec section 6): random sampling with a HyperbandPruner standing
for keras-tuner's Hyperband (max epochs = max resource, reduction factor 3), the dev target metric
as objective (maximised), `executions_per_trial` models per trial trained in lockstep and averaged.

Storage: an SQLite file (the run's cache folder) by default, or a PostgreSQL URL shared by several
workers (processes or machines). The budget counts COMPLETE and PRUNED trials; a trial whose
number lies past the budget fails at once without training and stops its worker, so workers
sharing a study stop at exactly `n_trials` counted trials. `recover` marks trials left RUNNING by a
dead process as FAIL (not counted) before resuming; with PostgreSQL, heartbeats do the same.
Sampling: `TrialSeededSampler` draws trial k's point from (profile seed, k), so a resumed search does not
repeat finished points and workers sharing a study draw distinct, reproducible ones.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from .config import Profile, SearchSpace

logger = logging.getLogger(__name__)
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


class BudgetReached(Exception):
    """Raised inside a trial whose number lies past the search budget."""


def hyperband_budget(max_epochs: int, factor: int = 3, iterations: int = 1) -> int:
    """Number of models keras-tuner's Hyperband trains: Σ over brackets s of ceil((s_max+1)/(s+1)·factor^s)."""
    s_max = int(math.floor(math.log(max_epochs, factor) + 1e-9)) if max_epochs >= 1 else 0
    per_iter = sum(math.ceil((s_max + 1) / (s + 1) * factor ** s) for s in range(s_max + 1))
    return per_iter * iterations


def trial_budget(profile: Profile) -> int:
    """The profile's trial budget: n_trials, or the Hyperband count when n_trials is None."""
    if profile.n_trials is not None:
        return int(profile.n_trials)
    return hyperband_budget(profile.max_epochs, profile.hyperband_factor, profile.hyperband_iterations)


def sample_params(trial: optuna.Trial, space: SearchSpace, loss_space: dict | None = None) -> dict:
    """Sample num_layers, units_i, dropout_i (i < num_layers − 1), batchnorm and the loss's own parameters."""
    lo, hi = space.num_layers
    params = {"num_layers": trial.suggest_int("num_layers", lo, hi)}
    ulo, uhi, ustep = space.units
    for i in range(params["num_layers"] - 1):
        params[f"units_{i}"] = trial.suggest_int(f"units_{i}", ulo, uhi, step=ustep)
        params[f"dropout_{i}"] = trial.suggest_float(f"dropout_{i}", *space.dropout)
    bn = tuple(space.batchnorm)
    params["batchnorm"] = bool(trial.suggest_categorical("batchnorm", bn)) if len(bn) > 1 else bool(bn[0])
    for name, (kind, low, high) in (loss_space or {}).items():
        if kind not in ("loguniform", "uniform"):
            raise ValueError(f"loss parameter {name!r}: unknown kind {kind!r} (loguniform or uniform)")
        params[f"loss_{name}"] = trial.suggest_float(f"loss_{name}", low, high, log=kind == "loguniform")
    return params


def split_params(params: dict) -> tuple[dict, dict]:
    """(network params, loss params) from a flat params dict (loss params are prefixed 'loss_')."""
    net = {k: v for k, v in params.items() if not k.startswith("loss_")}
    loss = {k[5:]: v for k, v in params.items() if k.startswith("loss_")}
    return net, loss


def make_storage(storage: str | Path) -> optuna.storages.BaseStorage:
    """Optuna storage from an SQLite file path, an sqlite:/// URL or a postgresql:// URL (with heartbeats)."""
    s = str(storage)
    if s.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        if s.startswith(("postgresql://", "postgres://")):
            s = "postgresql+psycopg://" + s.split("://", 1)[1]  # the installed driver is psycopg 3
        return _retry(lambda: optuna.storages.RDBStorage(s, heartbeat_interval=30, grace_period=120,
                                                         engine_kwargs={"pool_pre_ping": True}))
    if not s.startswith("sqlite:///"):
        path = Path(s).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        s = f"sqlite:///{path}"
    return optuna.storages.RDBStorage(s, engine_kwargs={"connect_args": {"timeout": 60}})


def _retry(make, attempts: int = 5):
    """Call `make`, retrying when workers race to create the same storage schema or study."""
    import random
    import time

    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for i in range(attempts):
        try:
            return make()
        except (IntegrityError, ProgrammingError, optuna.exceptions.DuplicatedStudyError):
            if i == attempts - 1:
                raise
            time.sleep(0.5 + random.random())


class TrialSeededSampler(optuna.samplers.RandomSampler):
    """Random sampling where a parameter's value depends only on (seed, trial number, parameter name).

    A resumed search never repeats the points of its finished trials (one seeded stream would restart
    from its first point), and workers sharing a study sample distinct, reproducible points.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.seed = int(seed)

    def sample_independent(self, study, trial, param_name, param_distribution):
        key = np.random.SeedSequence([self.seed, trial.number, zlib.crc32(param_name.encode())])
        one = optuna.samplers.RandomSampler(seed=int(key.generate_state(1)[0]))
        return one.sample_independent(study, trial, param_name, param_distribution)


def create_study(name: str, storage: str | Path, profile: Profile) -> optuna.Study:
    """Create or load the study `name`: random sampler seeded by the profile, Hyperband pruner, maximise."""
    pruner = optuna.pruners.HyperbandPruner(min_resource=max(1, profile.min_epochs), max_resource=profile.max_epochs,
                                            reduction_factor=profile.hyperband_factor)
    sampler = TrialSeededSampler(profile.seed)
    return _retry(lambda: optuna.create_study(study_name=name, storage=make_storage(storage), sampler=sampler,
                                              pruner=pruner, direction="maximize", load_if_exists=True))


def recover(study: optuna.Study) -> int:
    """Mark trials left RUNNING (by a killed process) as FAIL; returns how many. Call under the run's lock."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    if stale:
        logger.info("study %s: %d trial(s) left running by a dead process marked failed", study.study_name, len(stale))
    return len(stale)


def counted_trials(study: optuna.Study) -> int:
    """COMPLETE + PRUNED trials (those that count toward the budget)."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def run_study(study: optuna.Study, objective: Callable[[optuna.Trial], float], n_trials: int,
              progress: bool = False) -> optuna.Study:
    """Run trials until `n_trials` COMPLETE+PRUNED trials exist (shared with any other worker)."""
    worker = f"{socket.gethostname()}:{os.getpid()}"

    def guarded(trial: optuna.Trial) -> float:
        before = [t for t in study.get_trials(deepcopy=False, states=COUNTED + (TrialState.RUNNING,))
                  if t.number < trial.number]
        if len(before) >= n_trials:
            study.stop()
            raise BudgetReached(f"trial {trial.number}: budget of {n_trials} trials reached")
        trial.set_user_attr("worker", worker)
        return objective(trial)

    from tqdm.auto import tqdm

    done = counted_trials(study)
    bar = tqdm(total=n_trials, initial=min(done, n_trials), desc=f"trials {study.study_name}", leave=False,
               disable=not progress)

    def tick(st: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        bar.n = min(counted_trials(st), n_trials)
        bar.refresh()

    try:
        while counted_trials(study) < n_trials:
            study.optimize(guarded, n_trials=n_trials - counted_trials(study), catch=(BudgetReached,),
                           callbacks=[tick], gc_after_trial=False)
            if _budget_closed(study, n_trials):
                break
    finally:
        bar.close()
    return study


def _budget_closed(study: optuna.Study, n_trials: int) -> bool:
    """True when counted + running trials of other workers already fill the budget."""
    live = study.get_trials(deepcopy=False, states=COUNTED + (TrialState.RUNNING,))
    return len(live) >= n_trials


def wait_for_budget(study: optuna.Study, n_trials: int, poll_s: float = 2.0, timeout_s: float | None = None) -> None:
    """Block until the study holds `n_trials` counted trials (other workers finishing theirs)."""
    import time

    t0 = time.monotonic()
    while counted_trials(study) < n_trials:
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            raise RuntimeError(f"study {study.study_name}: {counted_trials(study)} of {n_trials} trials and none running")
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"study {study.study_name}: budget not reached in {timeout_s}s")
        time.sleep(poll_s)


def best_params(study: optuna.Study) -> tuple[dict, float]:
    """(params, value) of the best COMPLETE trial (pruned trials reached fewer epochs; never chosen)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    if not done:
        raise RuntimeError(f"study {study.study_name} has no complete trial")
    best = max(done, key=lambda t: (t.value, -t.number))
    return dict(best.params), float(best.value)


def make_objective(X_train, Y_train, X_dev, Y_dev, *, profile: Profile, loss_name: str, ctx, target: str,
                   output_rule=None, device=None, amp: bool = False) -> Callable[[optuna.Trial], float]:
    """Optuna objective: sample params, train executions_per_trial models in lockstep, report per epoch."""
    from . import losses
    from .train import train_many

    loss_space = getattr(losses, "LOSS_SPACES", {}).get(loss_name, {})

    def objective(trial: optuna.Trial) -> float:
        params = sample_params(trial, profile.space, loss_space)
        _, loss_kw = split_params(params)

        def report(epoch: int, value: float) -> None:
            trial.report(value if np.isfinite(value) else 0.0, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        seeds = [profile.seed * 1000 + trial.number * 10 + e for e in range(profile.executions_per_trial)]
        results = train_many(X_train, Y_train, X_dev, Y_dev, split_params(params)[0],
                             lambda: losses.make_loss(loss_name, ctx, **loss_kw), target, seeds=seeds,
                             max_epochs=profile.max_epochs, on_epoch=report, lr=profile.learning_rate,
                             batch_size=profile.batch_size, patience=profile.patience, output_rule=output_rule,
                             device=device, amp=amp)
        trial.set_user_attr("best_epochs", [r.best_epoch for r in results])
        value = float(np.mean([r.best_value for r in results]))
        return value if np.isfinite(value) else 0.0

    return objective
