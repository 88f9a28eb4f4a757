"""Hyperparameter search as the authors ran it (spec section 6): keras-tuner 1.1's Hyperband, shared by a family.

A *family* is a set of searches that train the same networks and differ only in what judges them: the
seven naive target metrics, roll-up and roll-down all train plain BCE networks on every code. Each search
(a `Member`: target metric and output rule) follows keras-tuner's Hyperband (`cacicd.models.hyperband`):
- round 0 of a bracket samples configurations at random (one `units` value and one dropout rate for every
  hidden layer; a configuration already tried is redrawn, up to 20 times, then its slot is skipped);
- each configuration is trained `executions_per_trial` times (one seed each) with Adam, early stopping
  (patience, strictly better) on the member's target measured on a validation split (the last 5 % of the
  training rows, which are not trained on), for at most the round's epochs;
- the trial's score is the mean over executions of its best dev value (the objective); its checkpoint is
  the weights of the best dev epoch over all executions (keras-tuner's SaveBestEpoch);
- round r > 0 promotes the best `round_size` trials of round r - 1 and trains each for
  `epochs(r) - epochs(r - 1)` epochs: from fresh weights and a fresh optimizer, as keras-tuner 1.1.2 (the
  authors' pin) did (`promotion="restart"`, the profiles' default), or from the trial's checkpoint with a
  fresh optimizer, as keras-tuner >= 1.2 does (`promotion="continue"`);
- the analysed model is the checkpoint of the trial with the best score (not retrained).
A node (one configuration, one seed, one starting point) is trained once for the whole family
(`cacicd.models.curves.CurveStore`), with every member's objective recorded per epoch; each member reads the
prefix its early stopping allows. Training is deterministic (given the profile's torch threads), so a
family gives each member exactly what its search alone would give (tests/test_search.py), whichever
process or machine trains a node: the search only says which nodes a round needs (`NodeJob`) and a
`NodeRunner` trains them (in this process, or on Dask workers: `cacicd.experiments.cluster`).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from cacicd.config import Profile, SearchSpace
from cacicd.files import atomic_write_bytes
from cacicd.models import hyperband, losses, objectives, outputs
from cacicd.models.curves import CurveStore, find_checkpoint, node_of, read_checkpoint, write_checkpoint
from cacicd.models.labels import LabelContext
from cacicd.models.train import DeviceRows, Trainer, predict_proba_tensor, torch_threads

logger = logging.getLogger(__name__)
VALIDATION_SPLIT = 0.05  # Keras validation_split of the authors' fit: the last 5 % of the training rows
MAX_COLLISIONS = 20  # keras-tuner 1.1.2 redraws a configuration already tried this often, then skips the slot


# ---------------------------------------------------------------------------------------------
# configurations

def tuner_value(u: float, low: float, high: float, step: float | None = None, log: bool = False) -> float:
    """keras-tuner 1.1.2's Int/Float value of a uniform draw u in [0, 1) (`cumulative_prob_to_value`).

    u maps linearly (log: geometrically) onto [low, high]; with a step, the value is rounded to the nearest
    grid value low, low + step, ... <= high (ties to the lower one), so the two end values of a grid have
    half the probability of the others. keras-tuner's Int has step 1 unless one is given.
    """
    value = low * (high / low) ** u if log else low + u * (high - low)
    if step is None:
        return float(value)
    grid = np.arange(low, high + 1e-7, step)
    return float(grid[int(np.abs(grid - value).argmin())])


def tuner_choice(u: float, values: Sequence):
    """keras-tuner 1.1.2's Choice (and Boolean: True when u >= 0.5) of a uniform draw u in [0, 1)."""
    return values[min(int(math.floor(u * len(values))), len(values) - 1)]


def sample_config(space: SearchSpace, loss_space: dict | None, key: Sequence[int]) -> dict:
    """A random configuration drawn from (seed material) `key` as keras-tuner 1.1.2 draws the authors' space.

    num_layers (Int, step 1), units (Int with a step), dropout (Float), batchnorm (Boolean) and the loss's
    parameters (Float, 'loguniform' as sampling="log", 'uniform' as linear): one uniform draw each through
    `tuner_value` / `tuner_choice`.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))
    lo, hi = space.num_layers
    ulo, uhi, ustep = space.units
    bn = (False, True) if set(space.batchnorm) == {False, True} else tuple(space.batchnorm)  # Boolean's order
    cfg = {"num_layers": int(tuner_value(rng.random(), lo, hi, 1)),
           "units": int(tuner_value(rng.random(), ulo, uhi, ustep)),
           "dropout": tuner_value(rng.random(), *space.dropout),
           "batchnorm": bool(tuner_choice(rng.random(), bn))}
    for name, (kind, low, high) in sorted((loss_space or {}).items()):
        if kind not in ("loguniform", "uniform"):
            raise ValueError(f"loss parameter {name!r}: unknown kind {kind!r} (loguniform or uniform)")
        cfg[f"loss_{name}"] = tuner_value(rng.random(), low, high, log=kind == "loguniform")
    return cfg


def sample_round(space: SearchSpace, loss_space: dict | None, seed_material: Sequence, rnd: hyperband.Round,
                 tried: set[str]) -> list[dict]:
    """The configurations a search starts in round 0 `rnd`, as keras-tuner 1.1.2 draws them; `tried` is updated.

    Slot k draws from [*seed_material, iteration, bracket, k, attempt]: a configuration already in `tried` is
    redrawn (MAX_COLLISIONS times at most: 21 draws), then the slot is skipped.
    """
    cfgs = []
    for slot in range(rnd.size):
        for attempt in range(MAX_COLLISIONS + 1):  # keras-tuner gives up after 20 collisions: 21 draws
            cfg = sample_config(space, loss_space, [*seed_material, rnd.iteration, rnd.bracket, slot, attempt])
            h = _hash(cfg)
            if h not in tried:
                tried.add(h)
                cfgs.append(cfg)
                break
    return cfgs


def network_params(cfg: dict) -> dict:
    """`cacicd.models.network.build_mlp` parameters: the one units/dropout value repeated for each hidden layer."""
    n = int(cfg["num_layers"])
    p = {"num_layers": n, "batchnorm": bool(cfg.get("batchnorm", False))}
    for i in range(n - 1):
        p[f"units_{i}"], p[f"dropout_{i}"] = int(cfg["units"]), float(cfg["dropout"])
    return p


def loss_params(cfg: dict) -> dict:
    """The loss's own parameters of a configuration (keys prefixed 'loss_' in it)."""
    return {k[5:]: v for k, v in cfg.items() if k.startswith("loss_")}


def describe(cfg: dict) -> str:
    """A short text of a configuration, e.g. '2 layers x 512, dropout 0.31, BN, lam=1e-07'."""
    s = f"{cfg['num_layers']} layer(s)"
    if cfg["num_layers"] > 1:
        s += f" x {cfg['units']}, dropout {cfg['dropout']:.2f}" + (", BN" if cfg.get("batchnorm") else "")
    return s + "".join(f", {k}={v:.3g}" for k, v in loss_params(cfg).items())


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# members and what they read of a curve

@dataclass(frozen=True)
class Member:
    """One search of a family: an experiment tuned on `target`, its output rule applied to what it sees."""

    name: str
    target: str
    rule: str = "identity"

    @property
    def key(self) -> str:
        """The name of this member's objective in node records ('<target>|<rule>')."""
        return f"{self.target}|{self.rule}"


@dataclass(frozen=True)
class Outcome:
    """What one member reads of one node: epochs read, best dev epoch (1-based, local) and value."""

    n_read: int
    best_epoch: int
    best_dev: float
    done: bool


def read_curve(epochs: list[dict], key: str, budget: int, patience: int) -> Outcome:
    """Early stopping on epochs[i]['val'][key] (patience, strictly better) and the best epochs[i]['dev'][key].

    done is False when the record is too short to know where this reader stops.
    """
    best_val, wait, best_dev, best_epoch = -math.inf, 0, -math.inf, 0
    for i, e in enumerate(epochs[:budget]):
        d, v = e["dev"][key], e["val"][key]
        if d is not None and d > best_dev:
            best_dev, best_epoch = d, i + 1
        if v is not None and v > best_val:
            best_val, wait = v, 0
        else:
            wait += 1
            if wait >= patience:
                return Outcome(i + 1, best_epoch, best_dev, True)
    n = min(len(epochs), budget)
    return Outcome(n, best_epoch, best_dev, n == budget)


# ---------------------------------------------------------------------------------------------
# training a node

@dataclass
class FamilyData:
    """What the nodes of a family train and are judged on (one fold); pickled for workers without its rules."""

    X_fit: sp.csr_matrix
    Y_fit: sp.csr_matrix
    X_val: sp.csr_matrix
    Y_val: sp.csr_matrix
    X_dev: sp.csr_matrix
    Y_dev: sp.csr_matrix
    loss: str
    ctx: LabelContext
    rules: dict[str, Callable[[np.ndarray], np.ndarray] | None] = field(default_factory=dict)

    @classmethod
    def split(cls, X_train, Y_train, X_dev, Y_dev, loss: str, ctx: LabelContext,
              rules: Iterable[str] = ("identity",)) -> "FamilyData":
        """Hold out the last VALIDATION_SPLIT of the training rows for early stopping (Keras validation_split)."""
        n_fit = int(math.floor(X_train.shape[0] * (1 - VALIDATION_SPLIT)))
        if n_fit < 1 or n_fit == X_train.shape[0]:
            raise ValueError(f"{X_train.shape[0]} training rows cannot give a {VALIDATION_SPLIT:.0%} validation split")
        X_train, Y_train = sp.csr_matrix(X_train), sp.csr_matrix(Y_train)
        return cls(X_train[:n_fit], Y_train[:n_fit], X_train[n_fit:], Y_train[n_fit:], sp.csr_matrix(X_dev),
                   sp.csr_matrix(Y_dev), loss, ctx, _make_rules(rules, ctx))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "rules": sorted(self.rules)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, rules=_make_rules(state["rules"], state["ctx"]))

    def save(self, path: str | Path) -> None:
        """Write this data for workers (atomically)."""
        atomic_write_bytes(path, pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))


def _make_rules(names: Iterable[str], ctx: LabelContext) -> dict:
    return {n: None if n == "identity" else outputs.make_output_rule(n, ctx) for n in names}


@functools.lru_cache(maxsize=4)
def _family_data_file(path: str, size: int, mtime_ns: int) -> FamilyData:
    with open(path, "rb") as f:
        return pickle.load(f)


def load_family_data(path: str | Path) -> FamilyData:
    """The FamilyData a driver saved at `path` (the last few read are kept in memory)."""
    st = os.stat(path)
    return _family_data_file(str(path), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class TrainSettings:
    """Training settings of the profile (torch threads per training included), plus this run's device and precision."""

    lr: float
    batch_size: int
    patience: int
    device: str | None = None
    precision: str = "auto"
    threads: int = 1


@dataclass(frozen=True)
class Node:
    """One training run: a configuration, an execution (seed), a starting checkpoint or None."""

    key: str
    config: dict
    execution: int
    parent: str | None
    seed: int

    @classmethod
    def make(cls, config: dict, execution: int, parent: str | None, seed_material: Sequence) -> "Node":
        """The node of (config, execution, parent) under some seed material (profile seed, fold[, round])."""
        h = _hash([list(seed_material), config, execution, parent])
        return cls(h[:32], config, execution, parent, int(h[32:40], 16))

    @classmethod
    def of_record(cls, rec: dict) -> "Node":
        """The node a record was trained for."""
        return cls(rec["node"], rec["config"], rec["execution"], rec["parent"], rec["seed"])


@dataclass(frozen=True)
class NodeJob:
    """A node to train until every reader (member key -> epoch budget) knows where it stops, and what it needs.

    extra_epochs: epochs whose checkpoints are wanted whatever the readers; ancestors: the nodes of its
    parent chain (to rebuild a parent checkpoint that is missing).
    """

    node: Node
    members: tuple[Member, ...]
    settings: TrainSettings
    demands: tuple[tuple[str, int], ...]
    extra_epochs: tuple[int, ...] = ()
    ancestors: tuple[Node, ...] = ()

    @property
    def epochs_bound(self) -> int:
        """Epochs this job trains at most."""
        return max([b for _, b in self.demands] + list(self.extra_epochs), default=0)


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load weights read by `cacicd.models.curves.read_checkpoint` (or any state dict)."""
    model.load_state_dict(state)


def member_scores(model: torch.nn.Module, val_rows: DeviceRows, dev_rows: DeviceRows, data: FamilyData,
                  members: Sequence[Member], settings: TrainSettings,
                  labels: tuple[objectives.SplitLabels, objectives.SplitLabels]) -> tuple[dict, dict]:
    """Every member's objective of a model on the validation split and on dev, as a node scores each epoch.

    labels: the splits' labels on the model's device (a node builds them once).
    """
    p_val = predict_proba_tensor(model, val_rows, device=settings.device, precision=settings.precision)
    p_dev = predict_proba_tensor(model, dev_rows, device=settings.device, precision=settings.precision)
    return objectives.score_members(p_val, p_dev, *labels, [(m.key, m.target, m.rule) for m in members],
                                    data.ctx.tree())


def _read_file(ckpt_dir: Path, ckpt: str) -> dict[str, torch.Tensor] | None:
    """The weights of checkpoint `ckpt` from its file in `ckpt_dir`, else None (missing, or damaged: then left there)."""
    p = find_checkpoint(ckpt_dir, ckpt)
    return read_checkpoint(p) if p is not None else None


def _parent_state(ckpt: str, job: NodeJob, data: FamilyData, ckpt_dir: Path) -> dict[str, torch.Tensor]:
    """The weights of checkpoint `ckpt` from its file, rebuilt by training its node again when missing or damaged."""
    state = _read_file(ckpt_dir, ckpt)
    if state is not None:
        return state
    key, epoch = ckpt.rsplit("@", 1)
    node = next((a for a in job.ancestors if a.key == key), None)
    if node is None:
        raise KeyError(f"checkpoint {ckpt} is missing from {ckpt_dir} and its node is unknown: it cannot be rebuilt")
    logger.info("rebuilding checkpoint %s", ckpt)
    train_node(NodeJob(node, job.members, job.settings, (), (int(epoch),), job.ancestors), data, ckpt_dir)
    state = _read_file(ckpt_dir, ckpt)
    if state is None:
        raise RuntimeError(f"checkpoint {ckpt} rebuilt in {ckpt_dir} does not read back")
    return state


def train_node(job: NodeJob, data: FamilyData, ckpt_dir: str | Path) -> dict:
    """Train `job.node` until every reader knows where it stops; returns its record (per epoch: loss, seconds, val
    and dev objective of every member).

    The checkpoints of each reader's best dev epoch (and of `job.extra_epochs`) are left in `ckpt_dir` as files
    '<node>@<epoch>.<sha>.pt' (written when the epoch is reached, deleted when no reader needs it any more).
    """
    ckpt_dir = Path(ckpt_dir)
    node, settings = job.node, job.settings
    with torch_threads(settings.threads):
        parent = _parent_state(node.parent, job, data, ckpt_dir) if node.parent is not None else None  # first: RNG
        loss = losses.make_loss(data.loss, data.ctx, **loss_params(node.config))
        trainer = Trainer(data.X_fit, data.Y_fit, data.X_val, data.Y_val, network_params(node.config), loss, "ndcg",
                          lr=settings.lr, batch_size=settings.batch_size, patience=settings.patience, seed=node.seed,
                          device=settings.device, precision=settings.precision)
        if parent is not None:
            load_state(trainer.model, parent)
            del parent
        dev_rows = DeviceRows(data.X_dev, trainer.device)  # the validation rows are the trainer's (trainer.X_dev)
        labels = objectives.SplitLabels(data.Y_val, trainer.device), objectives.SplitLabels(data.Y_dev, trainer.device)
        epochs: list[dict] = []
        files: dict[int, Path] = {}
        extra = set(job.extra_epochs)
        need_until = max(extra, default=0)
        while True:
            t0 = time.perf_counter()
            tr_loss = trainer.train_epoch()
            val, dev = member_scores(trainer.model, trainer.X_dev, dev_rows, data, job.members, settings, labels)
            epochs.append({"epoch": len(epochs) + 1, "loss": float(tr_loss), "seconds": time.perf_counter() - t0,
                           "val": val, "dev": dev})
            outs = [read_curve(epochs, k, b, settings.patience) for k, b in job.demands]
            keep = {o.best_epoch for o in outs} | extra
            if len(epochs) in keep:
                files[len(epochs)] = write_checkpoint(ckpt_dir, f"{node.key}@{len(epochs)}", trainer.model)
            for e in [e for e in files if e not in keep]:
                files.pop(e).unlink(missing_ok=True)
            if all(o.done for o in outs) and len(epochs) >= need_until:
                break
    return {"node": node.key, "config": node.config, "execution": node.execution, "parent": node.parent,
            "seed": node.seed, "epochs": epochs}


def train_job(job: NodeJob, data_file: str, ckpt_dir: str) -> dict:
    """A worker's task: train `job` on the FamilyData saved at `data_file`, checkpoints into `ckpt_dir`."""
    return train_node(job, load_family_data(data_file), ckpt_dir)


NodeRunner = Callable[[list[NodeJob]], Iterator[tuple[NodeJob, dict]]]  # trains jobs, yields (job, record) as done


def in_process(data: FamilyData, ckpt_dir: str | Path) -> NodeRunner:
    """A NodeRunner training one job after another in this process."""
    def run(jobs: list[NodeJob]) -> Iterator[tuple[NodeJob, dict]]:
        for job in jobs:
            yield job, train_node(job, data, ckpt_dir)
    return run


# ---------------------------------------------------------------------------------------------
# the family search

@dataclass
class Trial:
    """One trial of one member's search: a configuration trained for one round."""

    index: int
    iteration: int
    bracket: int
    round: int
    initial_epoch: int
    epochs: int
    config: dict
    parent: str | None  # the checkpoint it continues ("continue" promotions), else None
    nodes: list[str]
    score: float
    checkpoint: str
    best_epoch: int  # keras-tuner's epoch label of the checkpoint: initial_epoch + local epoch
    best_dev: float
    promoted_from: int | None = None  # index of the trial of the previous round it was promoted from

    def as_dict(self) -> dict:
        """JSON-ready."""
        return dict(self.__dict__)


def _rank(x: float) -> float:
    return x if x is not None and math.isfinite(x) else -math.inf


@dataclass
class Progress:
    """What a search reports as it goes: rounds, nodes and epochs done of those planned."""

    rounds: int = 0
    rounds_done: int = 0
    nodes_planned: int = 0
    nodes_done: int = 0
    epochs_planned: int = 0
    epochs_done: int = 0


class FamilySearch:
    """keras-tuner Hyperband for every member of a family at once, on one shared curve store.

    run_nodes: how nodes are trained (default: `in_process`; the engine passes Dask workers'); the search
    alone writes the store. on_progress: called with the search's `Progress` after each round and node.
    """

    def __init__(self, members: Sequence[Member], data: FamilyData, profile: Profile, store: CurveStore, *,
                 iterations: int, seed_material: Sequence, loss_space: dict | None, settings: TrainSettings,
                 run_nodes: NodeRunner | None = None, on_progress: Callable[[Progress], None] | None = None):
        if not members:
            raise ValueError("a family search needs at least one member")
        self.members, self.data, self.profile, self.store = tuple(members), data, profile, store
        self.iterations, self.seed_material, self.loss_space = iterations, list(seed_material), loss_space
        self.settings = settings
        self.run_nodes = run_nodes or in_process(data, store.checkpoint_dir)
        self.on_progress = on_progress or (lambda p: None)
        self.nodes_trained = 0
        self.epochs_trained = 0
        self.seconds = 0.0

    # -- nodes ---------------------------------------------------------------------------------
    def _covered(self, record: dict | None, demands: dict[str, int]) -> bool:
        return record is not None and all(read_curve(record["epochs"], k, b, self.settings.patience).done
                                          for k, b in demands.items())

    def _ancestors(self, node: Node) -> tuple[Node, ...]:
        out, ckpt = [], node.parent
        while ckpt is not None:
            rec = self.store.record(node_of(ckpt))
            if rec is None:
                break
            out.append(Node.of_record(rec))
            ckpt = rec["parent"]
        return tuple(out)

    def _job(self, node: Node, demands: dict[str, int]) -> NodeJob:
        old = self.store.record(node.key)
        if old is not None:  # extend a shorter record: train again (deterministic) and keep what it served
            for m in self.members:
                o = read_curve(old["epochs"], m.key, len(old["epochs"]), self.settings.patience)
                demands.setdefault(m.key, o.n_read)
        return NodeJob(node, self.members, self.settings, tuple(sorted(demands.items())),
                       ancestors=self._ancestors(node))

    def _ensure(self, nodes: dict[str, tuple[Node, dict[str, int]]], scheduled: tuple[int, int]) -> dict[str, dict]:
        """Train every node of a round not yet in the store (through `run_nodes`); returns their records.

        scheduled: (nodes, epochs) the round was planned at in `self.progress`, replaced by what it needs.
        """
        jobs = [self._job(node, dict(demands)) for key, (node, demands) in nodes.items()
                if not self._covered(self.store.record(key), demands)]
        p = self.progress
        p.nodes_planned += len(nodes) - scheduled[0]
        p.epochs_planned += sum(j.epochs_bound for j in jobs) - scheduled[1]
        p.nodes_done += len(nodes) - len(jobs)
        self.on_progress(p)
        for job, record in self.run_nodes(jobs):
            self.store.put(record)
            n = len(record["epochs"])
            self.nodes_trained += 1
            self.epochs_trained += n
            p.nodes_done += 1
            p.epochs_done += n
            p.epochs_planned -= job.epochs_bound - n  # early stopping ended it sooner
            self.on_progress(p)
            logger.debug("node %s (%s, execution %d) trained %d epochs", job.node.key[:8], describe(job.node.config),
                         job.node.execution, n)
        return {key: self.store.record(key) for key in nodes}

    def checkpoint(self, ckpt: str) -> dict[str, torch.Tensor]:
        """The weights `ckpt` names; a deleted or damaged one is rebuilt by training its node again (deterministic)."""
        state = self.store.checkpoint(ckpt)
        if state is not None:
            return state
        key, epoch = ckpt.rsplit("@", 1)
        rec = self.store.record(key)
        if rec is None:
            raise KeyError(f"checkpoint {ckpt}: node {key} has no record in {self.store.path}")
        node = Node.of_record(rec)
        logger.info("rebuilding checkpoint %s", ckpt)
        train_node(NodeJob(node, self.members, self.settings, (), (int(epoch),), self._ancestors(node)), self.data,
                   self.store.checkpoint_dir)
        state = self.store.checkpoint(ckpt)
        if state is None:
            raise RuntimeError(f"checkpoint {ckpt} rebuilt in {self.store.checkpoint_dir} does not read back")
        return state

    # -- the schedule ------------------------------------------------------------------------
    def _material(self, rnd: hyperband.Round) -> list:
        """Seed material of a round's nodes: a restarted promotion is a fresh initialisation of its own."""
        if rnd.round == 0 or self.profile.promotion == "continue":
            return self.seed_material
        return [*self.seed_material, "restart", rnd.iteration, rnd.bracket, rnd.round]

    def run(self) -> dict[str, dict]:
        """Run (or resume) the search; returns member name -> result (best trial, every trial, costs)."""
        t_start = time.perf_counter()
        sched = hyperband.schedule(self.profile.max_epochs, self.profile.hyperband_factor, self.iterations)
        execs = max(1, int(self.profile.executions_per_trial))
        continue_ = self.profile.promotion == "continue"
        planned = [(r.size * execs, r.size * execs * (r.epochs - r.initial_epoch)) for r in sched]
        self.progress = Progress(len(sched), 0, sum(n for n, _ in planned), 0, sum(e for _, e in planned), 0)
        self.on_progress(self.progress)
        tried: set[str] = set()
        trials: dict[str, list[Trial]] = {m.name: [] for m in self.members}
        last: dict[str, list[Trial]] = {m.name: [] for m in self.members}
        for rnd, scheduled in zip(sched, planned):
            budget = rnd.epochs - rnd.initial_epoch
            material = self._material(rnd)
            if rnd.round == 0:
                cfgs = sample_round(self.profile.space, self.loss_space, self.seed_material, rnd, tried)
                plan = {m.name: [(c, None, None) for c in cfgs] for m in self.members}
            else:
                plan = {m.name: [(t.config, t.checkpoint if continue_ else None, t.index) for t in
                                 sorted(last[m.name], key=lambda t: -_rank(t.score))[:rnd.size]]
                        for m in self.members}
            nodes: dict[str, tuple[Node, dict[str, int]]] = {}
            for m in self.members:
                for cfg, parent, _ in plan[m.name]:
                    for e in range(execs):
                        node = Node.make(cfg, e, parent, material)
                        d = nodes.setdefault(node.key, (node, {}))[1]
                        d[m.key] = max(d.get(m.key, 0), budget)
            records = self._ensure(nodes, scheduled)
            for m in self.members:
                this = []
                for cfg, parent, source in plan[m.name]:
                    keys = [Node.make(cfg, e, parent, material).key for e in range(execs)]
                    outs = [read_curve(records[k]["epochs"], m.key, budget, self.settings.patience) for k in keys]
                    best, ckpt, epoch = -math.inf, None, 0
                    for k, o in zip(keys, outs):
                        if o.best_dev > best:
                            best, ckpt, epoch = o.best_dev, f"{k}@{o.best_epoch}", o.best_epoch
                    if ckpt is None:  # no finite dev value: the last epoch read of the last execution
                        ckpt, epoch = f"{keys[-1]}@{outs[-1].n_read}", outs[-1].n_read
                    devs = [o.best_dev for o in outs]
                    score = float(np.mean(devs)) if all(math.isfinite(d) for d in devs) else float("nan")
                    this.append(Trial(len(trials[m.name]), rnd.iteration, rnd.bracket, rnd.round, rnd.initial_epoch,
                                      rnd.epochs, cfg, parent, keys, score, ckpt, rnd.initial_epoch + epoch,
                                      float(best) if math.isfinite(best) else float("nan"), source))
                    trials[m.name].append(this[-1])
                last[m.name] = this
            keep = {self.best(trials[m.name]).checkpoint for m in self.members if trials[m.name]}
            if continue_:  # the next round continues from these
                keep |= {t.checkpoint for m in self.members for t in last[m.name]}
            self.store.keep_checkpoints(keep)
            self.progress.rounds_done += 1
            self.on_progress(self.progress)
        self.store.keep_checkpoints({self.best(trials[m.name]).checkpoint for m in self.members})
        self.store.compact()
        out = {}
        for m in self.members:
            best = self.best(trials[m.name])
            out[m.name] = {"member": m.name, "target": m.target, "rule": m.rule, "best": best.as_dict(),
                           "trials": [t.as_dict() for t in trials[m.name]],
                           "n_configurations": sum(1 for t in trials[m.name] if t.round == 0),
                           "n_trials": len(trials[m.name])}
        self.seconds = time.perf_counter() - t_start
        return out

    @staticmethod
    def best(trials: Sequence[Trial]) -> Trial:
        """The trial with the best score (the first one on ties), as keras-tuner's oracle ranks them."""
        if not trials:
            raise RuntimeError("the search has no trial")
        return max(trials, key=lambda t: (_rank(t.score), -t.index))

    def lineage(self, ckpt: str) -> list[dict]:
        """Per-epoch history of a checkpoint's training: its ancestors' epochs up to each fork, then its node's."""
        chain = []
        while ckpt is not None:
            key, epoch = ckpt.rsplit("@", 1)
            rec = self.store.record(key)
            if rec is None:
                raise KeyError(f"checkpoint {ckpt}: node {key} has no record in {self.store.path}")
            chain.append((rec, int(epoch)))
            ckpt = rec["parent"]
        rows, offset = [], 0
        for rec, epoch in reversed(chain):
            for e in rec["epochs"][:epoch]:
                rows.append({"epoch": offset + e["epoch"], "node": rec["node"][:8], "loss": e["loss"],
                             "seconds": e["seconds"], **{f"val_{k}": v for k, v in e["val"].items()},
                             **{f"dev_{k}": v for k, v in e["dev"].items()}})
            offset += epoch
        return rows
