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
- round r > 0 continues the best `round_size` trials of round r - 1 from their checkpoints, with a fresh
  optimizer, for `epochs(r) - epochs(r - 1)` epochs;
- the analysed model is the checkpoint of the trial with the best score (not retrained).
A node (one configuration, one seed, one starting point) is trained once for the whole family
(`cacicd.models.curves.CurveStore`), with every member's objective recorded per epoch; each member reads the
prefix its early stopping allows. Training is deterministic, so a family gives each member exactly what
its search alone would give (tests/test_search.py).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from cacicd.config import Profile, SearchSpace
from cacicd.models import hyperband, losses, objectives
from cacicd.models.curves import CurveStore
from cacicd.models.labels import LabelContext
from cacicd.models.train import DeviceRows, Trainer, predict_proba_tensor

logger = logging.getLogger(__name__)
VALIDATION_SPLIT = 0.05  # Keras validation_split of the authors' fit: the last 5 % of the training rows
MAX_COLLISIONS = 20  # keras-tuner redraws a configuration already tried at most this often


def worker_id() -> str:
    """host:pid, the name of this process in a shared store."""
    return f"{socket.gethostname()}:{os.getpid()}"


# ---------------------------------------------------------------------------------------------
# configurations

def sample_config(space: SearchSpace, loss_space: dict | None, key: Sequence[int]) -> dict:
    """A random configuration drawn from (seed material) `key`: num_layers, units, dropout, batchnorm, loss_*."""
    rng = np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))
    lo, hi = space.num_layers
    ulo, uhi, ustep = space.units
    cfg = {"num_layers": int(rng.integers(lo, hi + 1)),
           "units": int(ulo + ustep * rng.integers(0, (uhi - ulo) // ustep + 1)),
           "dropout": float(rng.uniform(*space.dropout)),
           "batchnorm": bool(space.batchnorm[int(rng.integers(len(space.batchnorm)))])}
    for name, (kind, low, high) in sorted((loss_space or {}).items()):
        if kind == "loguniform":
            cfg[f"loss_{name}"] = float(math.exp(rng.uniform(math.log(low), math.log(high))))
        elif kind == "uniform":
            cfg[f"loss_{name}"] = float(rng.uniform(low, high))
        else:
            raise ValueError(f"loss parameter {name!r}: unknown kind {kind!r} (loguniform or uniform)")
    return cfg


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
    return s + "".join(f", {k[5:]}={v:.3g}" for k, v in loss_params(cfg).items())


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
    """What the nodes of a family train and are judged on (one fold)."""

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
    def split(cls, X_train, Y_train, X_dev, Y_dev, loss: str, ctx: LabelContext, rules: dict) -> "FamilyData":
        """Hold out the last VALIDATION_SPLIT of the training rows for early stopping (Keras validation_split)."""
        n_fit = int(math.floor(X_train.shape[0] * (1 - VALIDATION_SPLIT)))
        if n_fit < 1 or n_fit == X_train.shape[0]:
            raise ValueError(f"{X_train.shape[0]} training rows cannot give a {VALIDATION_SPLIT:.0%} validation split")
        X_train, Y_train = sp.csr_matrix(X_train), sp.csr_matrix(Y_train)
        return cls(X_train[:n_fit], Y_train[:n_fit], X_train[n_fit:], Y_train[n_fit:], sp.csr_matrix(X_dev),
                   sp.csr_matrix(Y_dev), loss, ctx, rules)


@dataclass(frozen=True)
class TrainSettings:
    """Training settings of the profile, plus the device and precision of this run."""

    lr: float
    batch_size: int
    patience: int
    device: str | None = None
    precision: str = "auto"


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
        """The node of (config, execution, parent) under a family's seed material (profile seed, fold)."""
        h = _hash([list(seed_material), config, execution, parent])
        return cls(h[:32], config, execution, parent, int(h[32:40], 16))


def state_bytes(model: torch.nn.Module) -> bytes:
    """A model's weights (state dict) as bytes."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def load_state(model: torch.nn.Module, data: bytes) -> None:
    """Load weights saved by `state_bytes`."""
    model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))


def _scores(model, val_rows: DeviceRows, dev_rows: DeviceRows, labels: tuple[objectives.SplitLabels, ...],
            data: FamilyData, members: Sequence[Member], settings: TrainSettings) -> tuple[dict, dict]:
    p_val = predict_proba_tensor(model, val_rows, device=settings.device, precision=settings.precision)
    p_dev = predict_proba_tensor(model, dev_rows, device=settings.device, precision=settings.precision)
    return objectives.score_members(p_val, p_dev, *labels, [(m.key, m.target, m.rule) for m in members],
                                    data.ctx.tree())


def train_node(node: Node, data: FamilyData, members: Sequence[Member], settings: TrainSettings,
               demands: dict[str, int], load_parent: Callable[[str], bytes], *, extra_epochs: Sequence[int] = (),
               heartbeat: Callable[[], None] | None = None) -> tuple[dict, dict[str, bytes]]:
    """Train `node` until every reader (member key -> epoch budget) knows where it stops.

    Returns the node's record (per epoch: loss, seconds, val and dev objective of every member) and the
    checkpoints of each reader's best dev epoch (and of `extra_epochs`), named '<node>@<epoch>'.
    """
    parent = load_parent(node.parent) if node.parent is not None else None  # first: a rebuild trains (RNG)
    loss = losses.make_loss(data.loss, data.ctx, **loss_params(node.config))
    trainer = Trainer(data.X_fit, data.Y_fit, data.X_val, data.Y_val, network_params(node.config), loss, "ndcg",
                      lr=settings.lr, batch_size=settings.batch_size, patience=settings.patience, seed=node.seed,
                      device=settings.device, precision=settings.precision)
    if parent is not None:
        load_state(trainer.model, parent)
    dev_rows = DeviceRows(data.X_dev, trainer.device)  # the validation rows are the trainer's (trainer.X_dev)
    labels = objectives.SplitLabels(data.Y_val, trainer.device), objectives.SplitLabels(data.Y_dev, trainer.device)
    epochs: list[dict] = []
    snaps: dict[int, bytes] = {}
    need_until = max(extra_epochs, default=0)
    while True:
        t0 = time.perf_counter()
        tr_loss = trainer.train_epoch()
        val, dev = _scores(trainer.model, trainer.X_dev, dev_rows, labels, data, members, settings)
        epochs.append({"epoch": len(epochs) + 1, "loss": float(tr_loss), "seconds": time.perf_counter() - t0,
                       "val": val, "dev": dev})
        outs = [read_curve(epochs, k, b, settings.patience) for k, b in demands.items()]
        keep = {o.best_epoch for o in outs} | set(extra_epochs)
        if len(epochs) in keep:
            snaps[len(epochs)] = state_bytes(trainer.model)
        snaps = {e: s for e, s in snaps.items() if e in keep}
        if heartbeat is not None:
            heartbeat()
        if all(o.done for o in outs) and len(epochs) >= need_until:
            break
    record = {"node": node.key, "config": node.config, "execution": node.execution, "parent": node.parent,
              "seed": node.seed, "epochs": epochs}
    return record, {f"{node.key}@{e}": s for e, s in snaps.items()}


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
    parent: str | None
    nodes: list[str]
    score: float
    checkpoint: str
    best_epoch: int  # keras-tuner's epoch label of the checkpoint: initial_epoch + local epoch
    best_dev: float

    def as_dict(self) -> dict:
        """JSON-ready."""
        return dict(self.__dict__)


def _rank(x: float) -> float:
    return x if x is not None and math.isfinite(x) else -math.inf


class FamilySearch:
    """keras-tuner Hyperband for every member of a family at once, on one shared curve store."""

    def __init__(self, members: Sequence[Member], data: FamilyData, profile: Profile, store: CurveStore, *,
                 iterations: int, seed_material: Sequence, loss_space: dict | None, settings: TrainSettings,
                 worker: str | None = None, poll_s: float = 1.0, progress: bool = False):
        if not members:
            raise ValueError("a family search needs at least one member")
        self.members, self.data, self.profile, self.store = list(members), data, profile, store
        self.iterations, self.seed_material, self.loss_space = iterations, list(seed_material), loss_space
        self.settings, self.worker, self.poll_s, self.progress = settings, worker or worker_id(), poll_s, progress
        self.nodes_trained = 0
        self.epochs_trained = 0
        self.seconds_training = 0.0

    # -- nodes ---------------------------------------------------------------------------------
    def _covered(self, record: dict | None, demands: dict[str, int]) -> bool:
        return record is not None and all(read_curve(record["epochs"], k, b, self.settings.patience).done
                                          for k, b in demands.items())

    def _train(self, node: Node, demands: dict[str, int]) -> None:
        old = self.store.record(node.key)
        if old is not None:  # extend a shorter record: train again (deterministic) and keep what it served
            for m in self.members:
                o = read_curve(old["epochs"], m.key, len(old["epochs"]), self.settings.patience)
                demands.setdefault(m.key, o.n_read)
        t0 = time.perf_counter()
        record, ckpts = train_node(node, self.data, self.members, self.settings, demands, self.checkpoint,
                                   heartbeat=lambda: self.store.heartbeat(node.key, self.worker))
        self.store.finish(node.key, self.worker, record, ckpts)
        self.nodes_trained += 1
        self.epochs_trained += len(record["epochs"])
        self.seconds_training += time.perf_counter() - t0
        logger.debug("node %s (%s, execution %d) trained %d epochs", node.key[:8], describe(node.config),
                     node.execution, len(record["epochs"]))

    def checkpoint(self, ckpt: str) -> bytes:
        """The weights `ckpt` names; a deleted one is rebuilt by training its node again (deterministic)."""
        data = self.store.checkpoint(ckpt)
        if data is not None:
            return data
        key, epoch = ckpt.rsplit("@", 1)
        rec = self.store.record(key)
        if rec is None:
            raise KeyError(f"checkpoint {ckpt}: node {key} has no record in store {self.store.store}")
        node = Node(key, rec["config"], rec["execution"], rec["parent"], rec["seed"])
        logger.info("rebuilding checkpoint %s", ckpt)
        record, ckpts = train_node(node, self.data, self.members, self.settings, {}, self.checkpoint,
                                   extra_epochs=[int(epoch)])
        self.store.put_checkpoint(ckpt, ckpts[ckpt])
        return ckpts[ckpt]

    def _ensure(self, nodes: dict[str, tuple[Node, dict[str, int]]]) -> dict[str, dict]:
        """Train (or wait for other workers to train) every node of a round; returns their records."""
        records: dict[str, dict] = {}
        pending = list(nodes)
        while pending:
            progressed = False
            for key in pending:
                node, demands = nodes[key]
                rec = self.store.record(key)
                if self._covered(rec, demands):
                    records[key] = rec
                    continue
                if self.store.claim(key, self.worker):
                    self._train(node, dict(demands))
                    records[key] = self.store.record(key)
                    progressed = True
            pending = [k for k in pending if k not in records]
            if pending and not progressed:
                time.sleep(self.poll_s)
        return records

    # -- the schedule ------------------------------------------------------------------------
    def _sample_round(self, rnd: hyperband.Round, tried: set[str]) -> list[dict]:
        cfgs = []
        for slot in range(rnd.size):
            for attempt in range(MAX_COLLISIONS):
                cfg = sample_config(self.profile.space, self.loss_space,
                                    [*self.seed_material, rnd.iteration, rnd.bracket, slot, attempt])
                h = _hash(cfg)
                if h not in tried:
                    tried.add(h)
                    cfgs.append(cfg)
                    break
        return cfgs

    def run(self) -> dict[str, dict]:
        """Run (or resume, or join) the search; returns member name -> result (best trial, every trial, costs)."""
        from tqdm.auto import tqdm

        t_start = time.perf_counter()
        sched = hyperband.schedule(self.profile.max_epochs, self.profile.hyperband_factor, self.iterations)
        execs = max(1, int(self.profile.executions_per_trial))
        tried: set[str] = set()
        trials: dict[str, list[Trial]] = {m.name: [] for m in self.members}
        last: dict[str, list[Trial]] = {m.name: [] for m in self.members}
        for rnd in tqdm(sched, desc="Hyperband rounds", leave=False, disable=not self.progress):
            budget = rnd.epochs - rnd.initial_epoch
            if rnd.round == 0:
                cfgs = self._sample_round(rnd, tried)
                plan = {m.name: [(c, None) for c in cfgs] for m in self.members}
            else:
                plan = {m.name: [(t.config, t.checkpoint) for t in
                                 sorted(last[m.name], key=lambda t: -_rank(t.score))[:rnd.size]]
                        for m in self.members}
            nodes: dict[str, tuple[Node, dict[str, int]]] = {}
            for m in self.members:
                for cfg, parent in plan[m.name]:
                    for e in range(execs):
                        node = Node.make(cfg, e, parent, self.seed_material)
                        d = nodes.setdefault(node.key, (node, {}))[1]
                        d[m.key] = max(d.get(m.key, 0), budget)
            records = self._ensure(nodes)
            for m in self.members:
                this = []
                for cfg, parent in plan[m.name]:
                    keys = [Node.make(cfg, e, parent, self.seed_material).key for e in range(execs)]
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
                                      float(best) if math.isfinite(best) else float("nan")))
                    trials[m.name].append(this[-1])
                last[m.name] = this
            keep = {t.checkpoint for m in self.members for t in last[m.name]}
            keep |= {self.best(trials[m.name]).checkpoint for m in self.members if trials[m.name]}
            self.store.keep_checkpoints(keep)
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
