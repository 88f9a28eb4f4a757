"""What a profile's run will cost, before it trains anything (`cacicd plan`).

Per search (a family of experiments on one fold: 14 families x 3 folds = 42 searches for a whole run) and
in all: the configurations started, the networks (nodes) and epochs the Hyperband schedule trains at most,
those it is expected to train, device-seconds, the wall time on N workers, and the peak memory of the
largest configuration. Nothing here trains a search's network.

- Counts (`round_counts`, pure): one search trains `size_r x executions` nodes of `epochs - initial_epoch`
  epochs in round r. A family's members read the same networks but may promote different configurations,
  so in round r it trains at most min(members x size_r, distinct configurations of round r - 1) of them
  (with "continue" promotions a configuration may also be continued from up to one checkpoint per member).
- Expected epochs (`read_record`, `expected_rounds`): from the finished searches of the same profile that
  the cache holds (any dataset): per family and round of the schedule, the networks and epochs that ran
  over the family's bound, which transfers to new data of that profile; else `ASSUMPTION`.
- Cost of an epoch (`CostModel`): FLOPs at the data's size (`network_flops`: the first layer an
  embedding-bag over the active inputs, then dense layers and the output layer; training = forward +
  backward of the fit rows, then a prediction of the validation split and dev), a per-parameter cost of each
  optimizer step, per-batch overheads, the loss's and the members' objectives' time, a checkpoint written;
  calibrated by timing a few batches of three configurations with the real `Trainer` (`calibrate`), or,
  for CUDA on a machine without it, a stated FLOP-based estimate (`ASSUMED_GPU`).
- Wall time (`simulate`): each search runs its rounds one after another, a round's nodes on any free worker,
  every search at once; list scheduling in submission order.
- Peak memory (`peak_memory`): weights, gradients, Adam state, low-precision copies, a batch's activations
  and logits, an epoch's predictions, the data on the device.
"""
from __future__ import annotations

import dataclasses
import heapq
import json
import math
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import scipy.optimize
import scipy.sparse as sp
import torch

from cacicd.config import Profile, cache_root, cpu_count, get_profile
from cacicd.data.dataset import Dataset
from cacicd.models import hyperband, losses
from cacicd.models.curves import CURVES_FILE, read_records, write_checkpoint
from cacicd.models.labels import LabelContext
from cacicd.models.network import build_mlp, params_to_layers
from cacicd.models.objectives import SplitLabels
from cacicd.models.search import (VALIDATION_SPLIT, FamilyData, Member, TrainSettings, member_scores,
                                  network_params, sample_round)
from cacicd.models.train import DeviceRows, Trainer, predict_proba, resolve_precision, set_threads, torch_threads

from cacicd.experiments.cluster import auto_workers, parse_workers, visible_gpus
from cacicd.experiments.engine import fold_indices, label_columns, load_dataset, search_dir
from cacicd.experiments.registry import EXPERIMENTS, Experiment, family, trained_experiments

GiB = 1024 ** 3
EVAL_BATCH = 1024  # rows a prediction batch of the search's per-epoch scoring holds (predict_proba's default)
CUDA_CONTEXT_BYTES = GiB // 2  # a CUDA context and torch's kernels, per worker (an estimate)
ASSUMPTION = ("every network trains its whole round budget (no early stopping), and a family's members "
              "promote configurations halfway between all the same and all different (its networks halfway "
              "between one search's count and the family's bound)")
ASSUMPTION_WHY = ("without a record of this profile nothing says where early stopping ends a network, which "
                  "depends on the data and, in a family, on the last of its members to stop; the budget is the "
                  "one figure not invented, and so the plan errs long, never short")


@dataclass(frozen=True)
class AssumedGPU:
    """The FLOP-based stand-in for a CUDA device this machine does not have."""

    name: str = "an H100/H200-class GPU (assumed: no CUDA device here)"
    train_flops: float = 2.0e14  # effective bfloat16 FLOP/s of a training batch's matrix products (batch 128)
    predict_flops: float = 3.0e14  # ... of an inference batch (1,024 rows)
    bandwidth: float = 3.0e12  # effective bytes/s of memory-bound work (optimizer, element-wise)
    batch_s: float = 3e-4  # per training batch: kernel launches and Python (input, output layer, loss, optimizer)
    layer_s: float = 6e-5  # per hidden layer of a training batch: about ten more kernels (linear, batchnorm, ReLU,
    # dropout, forward and backward)
    predict_batch_s: float = 2e-4  # per prediction batch
    step_bytes_per_param: float = 36.0  # Adam (read p, g, m, v; write p, m, v), bfloat16 copies of the weights
    first_bytes: float = 8.0  # per first-layer weight: its dense gradient zeroed and written each batch
    pass_bytes: float = 16.0  # per hidden activation and batchnorm or dropout pass, forward and backward
    label_bytes: float = 40.0  # per (row, label) of a batch: logits, targets, loss and gradient, bf16 copies
    memory: int = 80 * 10 ** 9  # bytes (an H100; an H200 has 141 GB)

    def text(self) -> str:
        """The assumption in words."""
        return (f"{self.name}: bfloat16 at {self.train_flops / 1e12:.0f} TFLOP/s effective in training batches and "
                f"{self.predict_flops / 1e12:.0f} in prediction, {self.bandwidth / 1e12:.1f} TB/s for memory-bound work, "
                f"{self.batch_s * 1e3:.1f} ms overhead per training batch and {self.layer_s * 1e3:.2f} ms per hidden "
                f"layer, {self.memory / 1e9:.0f} GB of memory")


ASSUMED_GPU = AssumedGPU()
HOST_LINK = 12e9  # bytes/s between host and GPU (PCIe 4 x16, effective)
FLOAT32_SLOWDOWN = 6.0  # the assumed GPU's float32 matrix products against bfloat16 (no TF32: torch's default)


# ---------------------------------------------------------------------------------------------
# counts of the schedule

@dataclass(frozen=True)
class RoundCount:
    """One round of a search: its budget (epochs each node trains at most), configurations, nodes and epochs."""

    iteration: int
    bracket: int
    round: int
    initial_epoch: int
    epochs_to: int
    budget: int
    configurations: int
    nodes: int
    epochs: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """What identifies the round across iterations and runs of one profile: (bracket, round, from, to)."""
        return self.bracket, self.round, self.initial_epoch, self.epochs_to


def _configurations(rounds: Iterable[tuple[int | None, int, int, int]], members: int,
                    promotion: str) -> Iterator[int]:
    """The distinct configurations of each round, in schedule order, of rounds given as (configurations started
    for a round 0, else None; one member's size; executions; budget): a later round holds at most
    min(members x size, the previous round's); with "continue" promotions each member continues its own
    checkpoint of a configuration (one per execution of the round and epoch of the previous round's budget)."""
    prev, prev_budget = 0, 0
    for first, size, execs, budget in rounds:
        if first is not None:
            d = first
        elif promotion == "restart":
            d = min(members * size, prev)
        else:  # each member continues its own checkpoint of a configuration (one per execution and epoch at most)
            d = min(members * size, prev * min(members, execs * prev_budget))
        yield d
        prev, prev_budget = d, budget


def round_counts(profile: Profile, members: int = 1, first: Sequence[int] | None = None) -> list[RoundCount]:
    """Every round of one search of `profile` with the configurations, nodes and epochs it trains at most.

    members: a family's member searches, which may promote different configurations: round r holds at most
    min(members x size_r, distinct configurations of round r - 1) configurations ("continue" promotions: a
    configuration once per member's checkpoint). first: the configurations each round 0 really started
    (`sample_round` may skip a slot), in schedule order; default the rounds' sizes.
    """
    execs = max(1, int(profile.executions_per_trial))
    sched = hyperband.schedule(profile.max_epochs, profile.hyperband_factor, profile.hyperband_iterations)
    firsts = list(first) if first is not None else [r.size for r in sched if r.round == 0]
    if len(firsts) != sum(r.round == 0 for r in sched):
        raise ValueError(f"round_counts: {len(firsts)} first-round counts for "
                         f"{sum(r.round == 0 for r in sched)} brackets")
    budgets = [r.epochs - r.initial_epoch for r in sched]
    started = iter(firsts)
    configs = _configurations([(next(started) if r.round == 0 else None, r.size, execs, b)
                               for r, b in zip(sched, budgets)], members, profile.promotion)
    return [RoundCount(r.iteration, r.bracket, r.round, r.initial_epoch, r.epochs, b, d, d * execs, d * execs * b)
            for r, b, d in zip(sched, budgets, configs)]


def epochs_bound(profile: Profile, members: int = 1) -> int:
    """Epochs one search (a family of `members`) trains when nothing stops early: 23,400 for the paper's, alone."""
    return int(sum(r.epochs for r in round_counts(profile, members)))


# ---------------------------------------------------------------------------------------------
# the record of finished searches, and expected epochs

@dataclass
class Record:
    """What finished searches of a profile trained: per family and round shape, [nodes, their bound, epochs,
    their bound], and per family the searches read and the seconds and epochs of their records."""

    rounds: dict[str, dict[tuple, list[float]]] = field(default_factory=dict)
    searches: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def ratios(self, kind: str) -> dict[tuple, tuple[float, float]] | None:
        """Round shape -> (nodes / bound, epochs / bound) of a family, with None's key for all rounds; None if unread."""
        rows = self.rounds.get(kind)
        if not rows:
            return None
        out = {s: (v[0] / v[1], v[2] / v[3]) for s, v in rows.items() if v[1] and v[3]}
        tot = np.sum(list(rows.values()), axis=0)
        out[None] = (tot[0] / tot[1], tot[2] / tot[3]) if tot[1] and tot[3] else (1.0, 1.0)
        return out


def search_record(saved: dict, records: dict[str, dict]) -> tuple[dict[tuple, list[float]], float, int]:
    """Per round shape of one finished search (its search.json and its store's records): [nodes, their bound,
    epochs, their bound]; and the seconds and epochs its networks' records hold."""
    results = saved["results"]
    promotion = saved.get("meta", {}).get("promotion", "restart")
    members = len(results)
    rounds: dict[tuple, dict] = {}
    for res in results.values():
        for t in res["trials"]:
            key = (t["iteration"], t["bracket"], t["round"])
            r = rounds.setdefault(key, {"shape": (t["bracket"], t["round"], t["initial_epoch"], t["epochs"]),
                                        "budget": t["epochs"] - t["initial_epoch"], "sizes": {}, "configs": set(),
                                        "nodes": set(), "execs": len(t["nodes"])})
            r["sizes"][res["member"]] = r["sizes"].get(res["member"], 0) + 1
            r["configs"].add(json.dumps(t["config"], sort_keys=True))
            r["nodes"].update(t["nodes"])
    out: dict[tuple, list[float]] = {}
    keys = sorted(rounds, key=lambda k: (k[0], -k[1], k[2]))  # keras-tuner's order
    ordered = [rounds[key] for key in keys]
    started = [(len(r["configs"]) if key[2] == 0 else None, max(r["sizes"].values()), r["execs"], r["budget"])
               for key, r in zip(keys, ordered)]
    for r, d in zip(ordered, _configurations(started, members, promotion)):
        if any(n not in records for n in r["nodes"]):
            continue  # a damaged store: this round's record is incomplete
        epochs = sum(min(len(records[n]["epochs"]), r["budget"]) for n in r["nodes"])
        row = out.setdefault(r["shape"], [0.0, 0.0, 0.0, 0.0])
        for i, v in enumerate((len(r["nodes"]), d * r["execs"], epochs, d * r["execs"] * r["budget"])):
            row[i] += v
    seconds = float(sum(e["seconds"] for rec in records.values() for e in rec["epochs"]))
    return out, seconds, int(sum(len(rec["epochs"]) for rec in records.values()))


def family_kind(members: Sequence[Experiment]) -> str:
    """A family's name in the cache (its folder's prefix): '<labels>-<loss>', e.g. 'all-bce'."""
    return f"{members[0].labels}-{members[0].loss}"


def read_record(cache_dir: str | Path, profile: Profile) -> Record:
    """The record of every finished search of `profile` (any dataset) the cache holds; read only."""
    rec = Record()
    root = Path(cache_dir) / profile.name
    for f in sorted(root.glob("*/_search/*/fold*/search.json")):
        kind = f.parent.parent.name.rsplit("-", 1)[0]
        try:
            saved = json.loads(f.read_text())
            rows, seconds, epochs = search_record(saved, read_records(f.parent / CURVES_FILE))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a damaged or foreign file: not a record
        if not rows:
            continue
        for shape, v in rows.items():
            acc = rec.rounds.setdefault(kind, {}).setdefault(shape, [0.0, 0.0, 0.0, 0.0])
            for i in range(4):
                acc[i] += v[i]
        rec.searches[kind] = rec.searches.get(kind, 0) + 1
        s = rec.seconds.setdefault(kind, [0.0, 0])
        s[0] += seconds
        s[1] += epochs
    return rec


def expected_rounds(bound: Sequence[RoundCount], single: Sequence[RoundCount],
                    ratios: dict[tuple, tuple[float, float]] | None) -> list[tuple[float, float]]:
    """(nodes, epochs) expected in each round: the bound times the record's ratios for the round's shape (the
    family's overall ratios for a shape the record lacks), or, without a record, `ASSUMPTION`."""
    out = []
    for b, s in zip(bound, single):
        if ratios is None:
            nodes = (b.nodes + s.nodes) / 2
            out.append((nodes, nodes * b.budget))
        else:
            rn, re_ = ratios.get(b.shape, ratios[None])
            out.append((b.nodes * rn, b.epochs * re_))
    return out


# ---------------------------------------------------------------------------------------------
# the cost model

@dataclass(frozen=True)
class SearchData:
    """The sizes of one search's data that its cost depends on."""

    n_inputs: int
    n_labels: int
    n_fit: int
    n_val: int
    n_dev: int
    nnz_x: float  # mean active inputs of a row
    nnz_y: float  # mean labels of a row

    @classmethod
    def of(cls, X: sp.csr_matrix, Y: sp.csr_matrix, train_idx: np.ndarray, dev_idx: np.ndarray) -> "SearchData":
        """The sizes of a fold (train and dev rows) of X (n, inputs) and a family's labels Y (n, labels)."""
        n_train = len(train_idx)
        n_fit = int(math.floor(n_train * (1 - VALIDATION_SPLIT)))
        row_x = np.diff(X.indptr)
        row_y = np.diff(Y.indptr)
        rows = np.concatenate([train_idx, dev_idx])
        return cls(X.shape[1], Y.shape[1], n_fit, n_train - n_fit, len(dev_idx), float(row_x[rows].mean()),
                   float(row_y[rows].mean()))


def network_flops(units: Sequence[int], n_labels: int, nnz: float, n_inputs: int,
                  batchnorm: bool = False) -> tuple[float, float, int]:
    """(forward FLOPs of a row, training FLOPs of a row, parameters) of an MLP with these hidden widths.

    The first layer is an embedding-bag over the `nnz` active inputs (2 nnz width; its backward only the
    weight's gradient: as much again); a dense layer a -> b costs 2ab forward and twice that backward.
    """
    widths = list(units) + [n_labels]
    first = 2.0 * nnz * widths[0]
    dense = sum(2.0 * a * b for a, b in zip(widths[:-1], widths[1:]))
    params = n_inputs * widths[0] + sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    params += sum(2 * u if batchnorm else u for u in units) + n_labels  # biases (batchnorm: its scale and shift)
    return first + dense, 2 * first + 3 * dense, int(params)


def config_layers(cfg: dict) -> tuple[list[int], bool]:
    """(hidden widths, batchnorm) of a search configuration."""
    units, _, bn = params_to_layers(network_params(cfg))
    return units, bn


@dataclass(frozen=True)
class CostModel:
    """Seconds of a training batch, a prediction batch, a node's set-up and a checkpoint, from FLOPs and sizes.

    training batch: batch_s + hidden layers x layer_s + rows x labels x label_s + FLOPs / train_flops + parameters x
    param_step_s (the optimizer's step) + the first layer's weights x first_s (its dense gradient, zeroed and written)
    + rows x hidden units x passes x pass_s (passes: batchnorm and dropout, forward and backward);
    prediction batch: predict_batch_s + rows x labels x predict_label_s + FLOPs / predict_flops;
    a node's set-up: setup_s + parameters x setup_param_s; a checkpoint: 4 bytes a parameter / checkpoint_bytes_s.
    """

    device: str
    precision: str
    kind: str  # "measured" or "estimate"
    batch_s: float
    layer_s: float
    label_s: float
    first_s: float
    pass_s: float
    train_flops: float
    param_step_s: float
    predict_batch_s: float
    predict_label_s: float
    predict_flops: float
    setup_s: float
    setup_param_s: float
    checkpoint_bytes_s: float
    text: str = ""
    contention: float = 1.0  # how much slower a worker runs beside the others on this machine's cores (measured)

    def node_setup(self, params: int) -> float:
        """Seconds to build a node's trainer (model, optimizer, data on the device)."""
        return (self.setup_s + params * self.setup_param_s) * self.contention

    def epoch(self, cfg: dict, d: SearchData, batch_size: int, extra_batch_s: float = 0.0,
              objective_s: float = 0.0) -> float:
        """Seconds of one epoch of a node: training batches, the validation + dev prediction, the members'
        objectives (objective_s) and one checkpoint; extra_batch_s: the loss's own time per batch beyond BCE."""
        units, bn = config_layers(cfg)
        fwd, train, params = network_flops(units, d.n_labels, d.nnz_x, d.n_inputs, bn)
        steps = math.ceil(d.n_fit / batch_size)
        first = d.n_inputs * (units[0] if units else d.n_labels)
        t_train = steps * (self.batch_s + len(units) * self.layer_s + extra_batch_s + params * self.param_step_s +
                           first * self.first_s) + \
            d.n_fit * (train / self.train_flops + d.n_labels * self.label_s + passes(cfg) * sum(units) * self.pass_s)
        n_pred = d.n_val + d.n_dev
        t_pred = (math.ceil(d.n_val / EVAL_BATCH) + math.ceil(d.n_dev / EVAL_BATCH)) * self.predict_batch_s + \
            n_pred * (fwd / self.predict_flops + d.n_labels * self.predict_label_s)
        return (t_train + t_pred + objective_s + 4.0 * params / self.checkpoint_bytes_s) * self.contention


def passes(cfg: dict) -> int:
    """Element-wise passes over each hidden activation beyond ReLU: batchnorm and dropout, when the configuration
    has them."""
    return int(bool(cfg.get("batchnorm"))) + int(float(cfg.get("dropout", 0.0)) > 0)


def _nnls(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares, columns scaled for conditioning."""
    scale = np.maximum(np.abs(A).max(axis=0), 1e-30)
    x, _ = scipy.optimize.nnls(A / scale, y)
    return x / scale


def fit_times(A: np.ndarray, y: np.ndarray, max_drop: int = 2) -> tuple[np.ndarray, list[int]]:
    """Non-negative coefficients x with A x ~ y in relative terms (timings span orders of magnitude), and the rows
    left out: while a row is off by more than half its time and enough rows remain, the worst is dropped (a
    timing taken while the machine was busy)."""
    A, y = np.asarray(A, dtype=float), np.asarray(y, dtype=float)
    keep = list(range(len(y)))
    while True:
        w = 1.0 / np.maximum(y[keep], 1e-9)
        x = _nnls(A[keep] * w[:, None], y[keep] * w)
        rel = np.abs(A[keep] @ x - y[keep]) * w
        if len(y) - len(keep) >= max_drop or len(keep) <= A.shape[1] + 1 or rel.max() <= 0.5:
            return x, [i for i in range(len(y)) if i not in keep]
        keep.pop(int(rel.argmax()))


def fit_batches(points: Sequence[dict], y: np.ndarray, batch_size: int) -> tuple[np.ndarray, list[int]]:
    """Coefficients (batch, hidden layer, (row, label), first-layer weight, activation pass, FLOP) of training
    batches' times y, and the points left out. In two stages where there are points at few labels: their
    times (where FLOPs and labels cost little) give the first, per-batch and per-layer coefficients; the points
    at many labels then give the per-label and per-FLOP ones (else all at once)."""
    A = np.array([[1.0, pt["layers"], batch_size * pt["labels"], pt["first"], pt["activations"], pt["train_flops"]]
                  for pt in points])
    few = np.array([pt["labels"] for pt in points]) < max(pt["labels"] for pt in points)
    if few.sum() < 4 or (~few).sum() < 2:
        return fit_times(A, y)
    local, glob = [0, 1, 3, 4], [2, 5]
    x = np.zeros(A.shape[1])
    for _ in range(50):  # alternately, each stage with the other's part of the times taken off
        before = x.copy()
        x[local], out_few = fit_times(A[few][:, local], y[few] - A[few][:, glob] @ x[glob])
        x[glob], out_many = fit_times(A[~few][:, glob], y[~few] - A[~few][:, local] @ x[local], max_drop=0)
        if np.allclose(x, before, rtol=1e-9, atol=0):
            break
    idx_few, idx_many = np.flatnonzero(few), np.flatnonzero(~few)
    return x, sorted([int(idx_few[i]) for i in out_few] + [int(idx_many[i]) for i in out_many])


def _typical_time(fn, min_total: float = 0.3, max_reps: int = 5, once: float = 2.0) -> float:
    """The median time of `fn()` over repetitions (what a long run sees, where the least would be optimistic):
    two at least (one if it took over `once` seconds), more while they add up to under min_total."""
    times: list[float] = []
    while (len(times) < 2 and sum(times) < once) or (sum(times) < min_total and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def calibration_configs(profile: Profile) -> list[dict]:
    """Three configurations of the profile's space of different sizes: the smallest, a middle one, a large one."""
    lo, hi = profile.space.num_layers
    ulo, uhi, ustep = profile.space.units
    mid_units = int(ulo + round((uhi - ulo) / 2 / ustep) * ustep)
    base = {"dropout": 0.0, "batchnorm": False}
    out = [{"num_layers": lo, "units": ulo, **base}, {"num_layers": max(lo, min(hi, 2)), "units": mid_units, **base},
           {"num_layers": max(lo, min(hi, 3)), "units": uhi, **base}]
    return [c for i, c in enumerate(out) if c not in out[:i]]


def _middle(cfgs: Sequence[dict]) -> dict:
    """The middle one of `calibration_configs` (the only one where the space has one size)."""
    return cfgs[min(1, len(cfgs) - 1)]


def deep_configs(profile: Profile, cfgs: Sequence[dict] | None = None) -> list[dict]:
    """Configurations with dropout and (where the space has it) batchnorm: the deepest narrow one, which tells a
    hidden layer's own cost, and the middle one, which tells the passes' (timed on few labels, they cost little).
    cfgs: the profile's `calibration_configs`, where the caller has them."""
    bn = True in profile.space.batchnorm
    mid = dict(_middle(calibration_configs(profile) if cfgs is None else cfgs))
    out = [{"num_layers": profile.space.num_layers[1], "units": profile.space.units[0], "dropout": 0.5, "batchnorm": bn},
           {**mid, "dropout": 0.5, "batchnorm": bn}]
    return [c for c in out if c["num_layers"] > 1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inverse(x: float) -> float:
    return 1.0 / x if x > 0 else math.inf


def _throwaway_trainer(profile: Profile, cfg: dict, X: sp.csr_matrix, Y: sp.csr_matrix, codes: Sequence[str],
                       device: torch.device | str, precision: str) -> tuple[Trainer, float]:
    """A BCE `Trainer` of `cfg` on X, Y (its dev set their first two rows), to time; and the seconds building it
    took (the loss's label context not counted)."""
    bce = losses.make_loss("bce", LabelContext.from_labels(codes, Y))
    t0 = time.perf_counter()
    tr = Trainer(X, Y, X[:2], Y[:2], network_params(cfg), bce, "ndcg", lr=profile.learning_rate,
                 batch_size=profile.batch_size, seed=0, device=device, precision=precision)
    _sync(tr.device)
    return tr, time.perf_counter() - t0


def time_config(profile: Profile, cfg: dict, X: sp.csr_matrix, Y: sp.csr_matrix, codes: Sequence[str],
                X_pred: sp.csr_matrix, device: torch.device, precision: str) -> dict:
    """Timings of one configuration with the real `Trainer` on X, Y (a few batches' rows): its set-up, a training
    batch, an optimizer step, a prediction batch of X_pred. Trains only this throwaway model."""
    B = profile.batch_size
    tr, setup = _throwaway_trainer(profile, cfg, X, Y, codes, device, precision)
    tr.train_epoch()  # warm-up
    t_batch = _typical_time(tr.train_epoch) / math.ceil(X.shape[0] / B)

    def step() -> None:
        tr.optimizer.step()
        _sync(device)
    t_step = _typical_time(step, 0.1)
    rows = DeviceRows(X_pred, device)
    predict_proba(tr.model, rows, EVAL_BATCH, device, precision)
    t_pred = _typical_time(lambda: predict_proba(tr.model, rows, EVAL_BATCH, device, precision)) / \
        math.ceil(X_pred.shape[0] / EVAL_BATCH)
    units, bn = config_layers(cfg)
    _, train, params = network_flops(units, Y.shape[1], X.nnz / X.shape[0], X.shape[1], bn)
    fwd_p = network_flops(units, Y.shape[1], X_pred.nnz / X_pred.shape[0], X.shape[1], bn)[0]
    rows_p = min(EVAL_BATCH, X_pred.shape[0])
    return {"config": cfg, "labels": int(Y.shape[1]), "params": params, "train_flops": train * B,
            "layers": len(units), "first": X.shape[1] * (units[0] if units else Y.shape[1]),
            "activations": B * sum(units) * passes(cfg),
            "predict_flops": fwd_p * rows_p, "predict_rows": rows_p, "setup_s": setup, "batch_s": t_batch,
            "step_s": t_step, "predict_batch_s": t_pred, "model": tr.model}


def calibrate(profile: Profile, X: sp.csr_matrix, label_sets: Sequence[tuple[sp.csr_matrix, Sequence[str]]],
              X_pred: sp.csr_matrix, device: str, scratch: str | Path | None = None) -> tuple[CostModel, list[dict]]:
    """A `CostModel` fitted to timings (`time_config`) of `calibration_configs` on `device`, in the profile's
    precision and torch threads; or, for CUDA where there is none, `ASSUMED_GPU`'s estimate. Returns it and
    the points it was fitted to.

    X: a family's fit rows (the first few batches are used); label_sets: (Y rows as X's, their codes) of the
    family with the most labels and of the one with the fewest (`deep_configs` too), which tells the per-label
    cost from the per-batch and per-layer ones (`fit_batches`); X_pred: rows to predict.
    scratch: a folder where a checkpoint is written and timed (the cache's, where the run writes them).
    """
    estimate = device == "cuda" and not torch.cuda.is_available()
    dev = torch.device("cpu" if estimate else device)
    B = profile.batch_size
    n_rows = min(X.shape[0], 2 * B)
    Xc = sp.csr_matrix(X[:n_rows], dtype=np.float32)
    Xp = sp.csr_matrix(X_pred[:min(X_pred.shape[0], 2 * EVAL_BATCH)], dtype=np.float32)
    cfgs = calibration_configs(profile)
    if estimate:  # the assumed GPU multiplies bfloat16 natively
        precision = "float32" if profile.precision == "float32" else "bfloat16"
    else:
        precision = "bfloat16" if resolve_precision(profile.precision, dev) == torch.bfloat16 else "float32"
    (Y_big, codes_big), (Y_small, codes_small) = label_sets[0], label_sets[-1]
    points: list[dict] = []
    with torch_threads(profile.threads):
        if estimate:  # the model is built on the host, then copied to the GPU: time its building here
            for cfg in cfgs:
                units, bn = config_layers(cfg)
                params = network_flops(units, Y_big.shape[1], 1.0, X.shape[1], bn)[2]
                t0 = time.perf_counter()
                model = build_mlp(X.shape[1], Y_big.shape[1], network_params(cfg))
                points.append({"config": cfg, "labels": int(Y_big.shape[1]), "params": params,
                               "setup_s": time.perf_counter() - t0})
        else:
            todo = [(c, Y_big[:n_rows], codes_big) for c in cfgs]
            deep = deep_configs(profile, cfgs)
            small = cfgs + deep if Y_small.shape[1] != Y_big.shape[1] else deep
            todo += [(c, Y_small[:n_rows], codes_small) for c in small]
            time_config(profile, cfgs[0], Xc, Y_small[:n_rows], codes_small, Xp, dev, precision)  # warm-up
            for i, (c, Y, codes) in enumerate(todo):  # Y: rows of a CSR matrix
                points.append(time_config(profile, c, Xc, Y, codes, Xp, dev, precision))
                trained = points[-1].pop("model")
                if i == len(cfgs) - 1:  # the largest configuration at the most labels: its checkpoint is timed
                    model = trained
        with tempfile.TemporaryDirectory(dir=scratch) as tmp:  # where the run writes checkpoints, when writable
            t0 = time.perf_counter()
            write_checkpoint(tmp, "calibration@1", model)
            ckpt_bytes_s = 4.0 * points[len(cfgs) - 1]["params"] / max(time.perf_counter() - t0, 1e-6)
    P = np.array([pt["params"] for pt in points], dtype=float)
    setup = fit_times(np.column_stack([np.ones_like(P), P]), np.array([pt["setup_s"] for pt in points]))[0]
    if estimate:
        g = ASSUMED_GPU
        slow = 1.0 if precision == "bfloat16" else FLOAT32_SLOWDOWN
        return CostModel(
            "cuda", precision, "estimate", g.batch_s, g.layer_s, g.label_bytes / g.bandwidth,
            g.first_bytes / g.bandwidth, g.pass_bytes / g.bandwidth, g.train_flops / slow,
            g.step_bytes_per_param / g.bandwidth, g.predict_batch_s, 10.0 / g.bandwidth + 4.0 / HOST_LINK,
            g.predict_flops / slow, float(setup[0]) + 0.05, float(setup[1]) + 4.0 / HOST_LINK, ckpt_bytes_s,
            f"a FLOP-based estimate for {g.text()}" + (f", float32 {FLOAT32_SLOWDOWN:g} times slower" if slow > 1 else "")
            + "; set-up (the model is built on the host, then copied) and checkpoint writes timed here; losses' "
            "own costs beyond BCE not counted"), points
    # the optimizer's step per parameter, timed on its own; the rest of a batch's cost fitted (the FLOPs of a
    # dense layer are 6 x batch x its weights: its per-parameter costs besides the optimizer count as FLOPs)
    step = float(np.median([pt["step_s"] / pt["params"] for pt in points]))
    y = np.array([pt["batch_s"] - pt["params"] * step for pt in points])
    fit, out = fit_batches(points, y, B)
    fit_p, out_p = fit_times(np.column_stack([np.ones(len(points)), [pt["predict_rows"] * pt["labels"] for pt in points],
                                              [pt["predict_flops"] for pt in points]]),
                             np.array([pt["predict_batch_s"] for pt in points]))
    for i, pt in enumerate(points):
        pt["left_out"] = [k for k, o in (("training", out), ("prediction", out_p)) if i in o]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    return CostModel(str(dev), precision, "measured", *map(float, fit[:5]), _inverse(fit[5]), step,
                     float(fit_p[0]), float(fit_p[1]), _inverse(fit_p[2]), float(setup[0]), float(setup[1]),
                     ckpt_bytes_s,
                     f"timed here on {name} ({precision}, {profile.threads} torch thread(s)): a few batches of "
                     f"{len(points)} configurations with the real Trainer, at {Y_big.shape[1]:,} and "
                     f"{Y_small.shape[1]:,} labels"), points


def _epoch_times(profile: Profile, cfg: dict, X: sp.csr_matrix, Y: sp.csr_matrix, codes: Sequence[str],
                 start_at: float, window: float) -> list[float]:
    """Seconds of the epochs (of X's few batches) one trainer runs from `start_at` for `window` seconds."""
    set_threads(profile.threads)
    tr, _ = _throwaway_trainer(profile, cfg, X, Y, codes, "cpu", profile.precision)
    tr.train_epoch()  # warm-up
    time.sleep(max(0.0, start_at - time.time()))
    out: list[float] = []
    while time.time() < start_at + window or len(out) < 3:
        t0 = time.perf_counter()
        tr.train_epoch()
        out.append(time.perf_counter() - t0)
    return out


def contention(profile: Profile, cfg: dict, X: sp.csr_matrix, Y: sp.csr_matrix, codes: Sequence[str],
               workers: int, window: float = 3.0) -> float:
    """How much slower a training runs when `workers` worker processes train at once on this machine's CPUs
    (median epoch time of one of them, against the same process alone; 1 for one worker)."""
    if workers <= 1:
        return 1.0
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        list(pool.map(_epoch_times, *zip(*[(profile, cfg, X[:4], Y[:4], codes, 0.0, 0.0)] * workers)))  # imports
        alone = pool.submit(_epoch_times, profile, cfg, X, Y, codes, time.time() + 1.0, window).result()
        start = time.time() + 2.0
        together = [f.result() for f in [pool.submit(_epoch_times, profile, cfg, X, Y, codes, start, window)
                                         for _ in range(workers)]]
    return max(1.0, float(np.median(np.concatenate(together)) / np.median(alone)))


class RandomLogits(torch.nn.Module):
    """A stand-in model giving random logits (n_labels of them a row): to time objectives, never trained."""

    def __init__(self, n_labels: int, seed: int = 0):
        super().__init__()
        self.n_labels = n_labels
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_labels) standard normal logits."""
        return torch.randn(x.shape[0], self.n_labels, generator=self.gen).to(x.device)


def objective_seconds(data: FamilyData, members: Sequence[Member], device: str, precision: str) -> float:
    """Seconds the members' objectives of one epoch take at this family's validation + dev size (random
    probabilities, scored as a node scores each epoch: `cacicd.models.search.member_scores`)."""
    dev = torch.device(device if device == "cpu" or torch.cuda.is_available() else "cpu")
    settings = TrainSettings(0.0, 1, 1, str(dev), precision, 1)
    model = RandomLogits(data.Y_val.shape[1]).to(dev)
    val = DeviceRows(sp.csr_matrix((data.Y_val.shape[0], 1), dtype=np.float32), dev)  # inputs the model ignores
    dv = DeviceRows(sp.csr_matrix((data.Y_dev.shape[0], 1), dtype=np.float32), dev)
    labels = SplitLabels(data.Y_val, dev), SplitLabels(data.Y_dev, dev)  # built once per node, not per epoch
    t_all = _typical_time(lambda: member_scores(model, val, dv, data, members, settings, labels), 0.2, 3)

    def stand_in() -> None:  # the stand-in's own predictions are no part of it
        predict_proba(model, val, device=settings.device, precision=precision)
        predict_proba(model, dv, device=settings.device, precision=precision)
    return max(t_all - _typical_time(stand_in, 0.2, 3), 0.0)


def output_weights(cfg: dict, n_inputs: int, n_labels: int) -> int:
    """Weights of a configuration's output layer (what an output penalty such as hier_l2 reads each batch)."""
    units, _ = config_layers(cfg)
    return (units[-1] if units else n_inputs) * n_labels


def loss_extra_seconds(loss: str, ctx: LabelContext, Y: sp.csr_matrix, models: Sequence[torch.nn.Module],
                       batch_size: int, device: str) -> tuple[float, float]:
    """(seconds, seconds per output weight) a training batch of `loss` takes beyond plain BCE (forward and
    backward, its penalty on the output layer included), fitted on `models` (built for Y's labels, of
    different output sizes)."""
    dev = torch.device(device)
    logits = torch.randn(batch_size, Y.shape[1], device=dev, requires_grad=True)
    yb = torch.from_numpy(sp.csr_matrix(Y[:batch_size]).toarray().astype(np.float32)).to(dev)
    rows = []
    for model in models:
        times = []
        for name in ("bce", loss):
            fn = losses.make_loss(name, ctx).to(dev)

            def run() -> None:
                model.zero_grad(set_to_none=True)
                fn(logits, yb, model).backward()
                _sync(dev)
            run()
            times.append(_typical_time(run, 0.05))
        rows.append((model.output.weight.numel(), max(times[1] - times[0], 0.0)))
    A = np.array([[1.0, w] for w, _ in rows])
    fit = _nnls(A, np.array([t for _, t in rows])) if len({w for w, _ in rows}) > 1 else \
        np.array([float(np.mean([t for _, t in rows])), 0.0])
    return float(fit[0]), float(fit[1])


# ---------------------------------------------------------------------------------------------
# memory

def peak_memory(cfg: dict, d: SearchData, batch_size: int, bfloat16: bool, device: str, rules: int = 1,
                family_cache: int = 4) -> dict[str, dict[str, int]]:
    """Bytes one worker holds at its peak training `cfg` on `d`, by part, on the device and on the host.

    rules: output rules a family's scoring applies beyond identity (each a copy of the predictions);
    family_cache: families' data a worker keeps in memory (`cacicd.models.search.load_family_data`).
    """
    units, bn = config_layers(cfg)
    _, _, P = network_flops(units, d.n_labels, d.nnz_x, d.n_inputs, bn)
    widths = list(units) + [d.n_labels]
    mixed = list(zip(widths[:-1], widths[1:]))  # MixedLinear layers: every one after the first
    B, L = batch_size, d.n_labels
    n_pred = d.n_val + d.n_dev

    def rows(n: int, nnz: float) -> int:  # a CSR block on the device: int64 offsets and indices, float32 values
        return int(8 * (n + 1) + 12 * n * nnz)
    deferred = sum(a * b for a, b in mixed) if bfloat16 else 0  # weights whose gradient KerasAdam reads in bfloat16
    dev = {"weights": 4 * P, "gradients": 4 * (P - deferred), "adam": 8 * P,
           "low_precision_copies": 4 * deferred,  # bfloat16 weight and weight-gradient copies
           "activations": int(B * sum(units) * 4 * (3 + bn) + (2 if bfloat16 else 4) * B * sum(a for a, _ in mixed)),
           "logits": 18 * B * L,  # logits, dense targets, the loss's terms and gradient (float32), a bfloat16 copy
           "prediction_batch": 6 * EVAL_BATCH * L,
           "data": rows(d.n_fit, d.nnz_x) + rows(d.n_fit, d.nnz_y) + rows(d.n_val, d.nnz_x) + rows(d.n_dev, d.nnz_x)}
    host = {"predictions": 4 * n_pred * L * (1 + rules),  # an epoch's val + dev probabilities, after each rule
            "objective_workspace": 16 * d.n_dev * L,  # a sort's keys and order over the dev scores
            "family_data": family_cache * int((d.n_fit + n_pred) * (8 * d.nnz_x + 5 * d.nnz_y + 16))}
    if device == "cuda":
        dev["cuda_context"] = CUDA_CONTEXT_BYTES
        host["model_built_on_host"] = 4 * P  # then copied to the GPU; a checkpoint is copied back as large
        return {"device": dev, "host": host}
    return {"device": {}, "host": {**dev, **host}}


def host_memory() -> int:
    """Bytes of physical memory of this machine."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


# ---------------------------------------------------------------------------------------------
# wall time

def simulate(searches: Sequence[Sequence[Sequence[float]]], workers: int) -> tuple[float, list[float]]:
    """Wall time of searches run at once on `workers` workers, and when each ends.

    searches[s][r]: the seconds of each node of round r of search s. A round's nodes are submitted when the
    search's previous round has ended (all at t = 0 for the first rounds, search by search); a free worker
    takes the node submitted first (list scheduling in submission order).
    """
    if workers < 1:
        raise ValueError(f"simulate: workers must be >= 1, got {workers}")
    queue: deque = deque()
    nxt = [0] * len(searches)
    left = [0] * len(searches)
    ends = [0.0] * len(searches)

    def submit(s: int, now: float) -> None:
        while nxt[s] < len(searches[s]) and not len(searches[s][nxt[s]]):
            nxt[s] += 1  # an empty round ends at once
        if nxt[s] == len(searches[s]):
            ends[s] = now
            return
        nodes = searches[s][nxt[s]]
        nxt[s] += 1
        left[s] = len(nodes)
        queue.extend((s, float(t)) for t in nodes)

    for s in range(len(searches)):
        submit(s, 0.0)
    running: list[tuple[float, int, int]] = []
    idle, now, seq = workers, 0.0, 0
    while queue or running:
        while idle and queue:
            s, t = queue.popleft()
            heapq.heappush(running, (now + t, seq, s))
            seq += 1
            idle -= 1
        now, _, s = heapq.heappop(running)
        idle += 1
        left[s] -= 1
        if not left[s]:
            submit(s, now)
    return max(ends, default=0.0), ends


# ---------------------------------------------------------------------------------------------
# the plan

@dataclass
class SearchPlan:
    """One search of the run (a family on one fold) as planned."""

    family: str
    members: list[str]
    fold: int
    labels: str
    loss: str
    data: SearchData
    configurations: int
    nodes: int
    epochs_bound: int
    nodes_expected: float
    epochs_expected: float
    seconds_bound: float
    seconds_expected: float
    objective_s: float
    loss_extra_s: tuple[float, float]  # per training batch beyond BCE: seconds, and seconds per output weight
    round0: list[dict]  # {"config", "epoch_s"} of every configuration started, in draw order
    cached: bool  # its search.json is already in the cache for this data
    rounds: list[dict] = field(default_factory=list)  # per round: bound and expected nodes and epochs

    def as_dict(self, configs: bool = True) -> dict:
        """JSON-ready (without the configurations unless `configs`)."""
        d = asdict(self)
        if not configs:
            d.pop("round0")
            d.pop("rounds")
        return d


@dataclass
class Plan:
    """What a run of a profile will cost: its searches and totals, how expected epochs and costs were had."""

    profile: str
    source: str
    dataset: dict
    device: str
    workers: int
    schedule: str
    searches: list[SearchPlan]
    totals: dict
    expected: dict
    calibration: dict
    peak_memory: dict
    skipped: dict  # families whose label set is empty on this data: the run fails on them
    seconds: float = 0.0

    def as_dict(self, configs: bool = True) -> dict:
        """JSON-ready (per search without its configurations unless `configs`)."""
        d = {k: v for k, v in self.__dict__.items() if k != "searches"}
        d["searches"] = [s.as_dict(configs) for s in self.searches]
        return d


def families() -> list[list[Experiment]]:
    """The run's families (experiments searched together), in the registry's order."""
    out: list[list[Experiment]] = []
    for e in map(EXPERIMENTS.__getitem__, trained_experiments()):
        if not any(e in f for f in out):
            out.append(family(e))
    return out


def resolve_workers(workers: int | str | None, device: str, threads: int) -> int:
    """The worker count a plan simulates: N; "auto" as `cacicd run` picks it (GPUs for cuda, 1 when none here;
    cores for cpu); 0 or None: 1, the calling process."""
    w = parse_workers(workers)
    if w == "auto":
        return (len(visible_gpus()) or 1) if device == "cuda" else auto_workers(threads)
    return int(w or 1)


def _round_costs(counts: Sequence[RoundCount], expected: Sequence[tuple[float, float]], round0: list[dict],
                 execs: int) -> tuple[list[list[float]], list[list[float]]]:
    """Node seconds of each round (bound, expected): round 0 nodes of each configuration, later rounds' nodes at
    the mean cost of their bracket's first configurations."""
    bound_rounds, exp_rounds = [], []
    k = 0
    bracket: list[dict] = []
    for c, (n_exp, e_exp) in zip(counts, expected):
        if c.round == 0:
            bracket = round0[k:k + int(c.configurations)]
            k += int(c.configurations)
        if not bracket or c.nodes == 0:
            bound_rounds.append([])
            exp_rounds.append([])
            continue
        if c.round == 0:  # every configuration started, each execution a node: its own cost
            per_node = e_exp / c.nodes
            bound_rounds.append([x["setup_s"] + c.budget * x["epoch_s"] for x in bracket for _ in range(execs)])
            exp_rounds.append([x["setup_s"] + per_node * x["epoch_s"] for x in bracket for _ in range(execs)])
        else:  # promoted configurations, unknown before the run: the mean of their bracket's
            setup = float(np.mean([x["setup_s"] for x in bracket]))
            epoch = float(np.mean([x["epoch_s"] for x in bracket]))
            n = max(1, int(round(n_exp))) if e_exp > 0 else 0
            bound_rounds.append([setup + c.budget * epoch] * int(c.nodes))
            exp_rounds.append([setup + e_exp / n * epoch] * n if n else [])
    return bound_rounds, exp_rounds


def member_keys(members: Sequence[Experiment]) -> tuple[str, ...]:
    """The objectives a family scores each epoch ('<target>|<rule>' of each member), sorted."""
    return tuple(sorted(Member(e.name, e.target, e.output_rule).key for e in members))


def family_timings(p: Profile, fams: Sequence[Sequence[Experiment]], X: sp.csr_matrix, Ys: dict[str, sp.csr_matrix],
                   codes: Sequence[str], cols: dict[str, np.ndarray], train_idx: np.ndarray, dev_idx: np.ndarray,
                   cost: CostModel, device: str) -> tuple[dict[tuple, float], dict[tuple, tuple[float, float]]]:
    """Per family, on one fold: the seconds of its members' objectives of an epoch (by (labels, member keys)),
    and its loss's own time per training batch beyond BCE (by (labels, loss); measured devices only)."""
    objective: dict[tuple, float] = {}
    loss_extra: dict[tuple, tuple[float, float]] = {}
    ctxs: dict[str, LabelContext] = {}
    models: dict[str, list[torch.nn.Module]] = {}
    X_train, X_dev = X[train_idx], X[dev_idx]
    Y_train: dict[str, sp.csr_matrix] = {}
    for f in fams:
        lab, loss = f[0].labels, f[0].loss
        members = [Member(e.name, e.target, e.output_rule) for e in f]
        sig = (lab, member_keys(f))
        Y = Ys[lab]
        if lab not in ctxs:
            Y_train[lab] = Y[train_idx]
            ctxs[lab] = LabelContext.from_labels([codes[j] for j in cols[lab]], Y_train[lab])
        if sig not in objective:
            fd = FamilyData.split(X_train, Y_train[lab], X_dev, Y[dev_idx], "bce", ctxs[lab],
                                  sorted({m.rule for m in members}))
            objective[sig] = objective_seconds(fd, members, device, cost.precision)
        if loss != "bce" and cost.kind == "measured":
            with torch_threads(p.threads):
                if lab not in models:  # the two smaller calibration configurations: different output layers
                    models[lab] = [build_mlp(X.shape[1], Y.shape[1], network_params(c)).to(cost.device)
                                   for c in calibration_configs(p)[:2]]
                loss_extra[(lab, loss)] = loss_extra_seconds(loss, ctxs[lab], Y_train[lab], models[lab],
                                                             p.batch_size, cost.device)
    return objective, loss_extra


def make_plan(profile: str | Profile = "default", data: str | Dataset = "synthetic",
              cache_dir: str | Path | None = None, *, workers: int | str | None = "auto", device: str | None = None,
              progress: Callable[[str], None] | None = None) -> Plan:
    """The plan of a whole run of `profile` on `data` (loaded from the cache or built as `cacicd data` does):
    counts, expected epochs, costs calibrated on `device` (default: cuda where there is one, else cpu), wall
    time on `workers`, peak memory. Trains no search's network; writes the splits (as a run would) and one
    checkpoint in a temporary folder of the cache (timed, then removed).

    progress: called with a line of text at each stage (None: silent).
    """
    t_start = time.perf_counter()
    say = progress or (lambda s: None)
    p = get_profile(profile) if isinstance(profile, str) else profile
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device {device!r}: choose cpu or cuda")
    n_workers = resolve_workers(workers, device, p.threads)
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
    say("loading the dataset")
    t0 = time.perf_counter()
    ds = load_dataset(data, p, cache_dir)
    data_s = time.perf_counter() - t0
    h = ds.content_hash()
    X = ds.X.tocsr()
    execs = max(1, int(p.executions_per_trial))
    folds = list(range(p.n_folds))
    idx = {k: fold_indices(ds, p, k, cache_dir) for k in folds}
    fams, cols, skipped = [], {}, {}
    for f in families():
        try:
            cols[f[0].labels] = label_columns(ds, f[0].labels)
            fams.append(f)
        except ValueError as e:  # the run fails on it too
            skipped[family_kind(f)] = str(e)
    Ys = {lab: (ds.Y[:, c].tocsr() if c.size != len(ds.codes) else ds.Y.tocsr()) for lab, c in cols.items()}

    say("calibrating the cost model")
    t0 = time.perf_counter()
    train0, dev0, _ = idx[0]
    by_size = sorted({f[0].labels for f in fams}, key=lambda lab: -cols[lab].size)
    sets = [(Ys[lab][train0], [ds.codes[j] for j in cols[lab]]) for lab in (by_size[0], by_size[-1])]
    writable = cache_dir if os.access(cache_dir, os.W_OK) else None
    cost, points = calibrate(p, X[train0], sets, X[dev0], device, writable)
    if cost.kind == "measured" and cost.device == "cpu" and n_workers > 1 and n_workers <= cpu_count():
        n_rows = min(len(train0), 2 * p.batch_size)
        mid = _middle(calibration_configs(p))
        cost = dataclasses.replace(cost, contention=contention(p, mid, X[train0[:n_rows]], sets[0][0][:n_rows],
                                                               sets[0][1], n_workers))
    bf16 = cost.precision == "bfloat16"
    calib_s = time.perf_counter() - t0

    say("timing the objectives and losses")
    t0 = time.perf_counter()
    objective, loss_extra = family_timings(p, fams, X, Ys, ds.codes, cols, train0, dev0, cost, device)
    objectives_s = time.perf_counter() - t0

    say("planning the searches")
    record = read_record(cache_dir, p)
    ratios = {family_kind(f): record.ratios(family_kind(f)) for f in fams}  # None: a family the record lacks
    sched = hyperband.schedule(p.max_epochs, p.hyperband_factor, p.hyperband_iterations)
    searches: list[SearchPlan] = []
    node_secs_bound, node_secs_exp = [], []
    largest: tuple | None = None  # (bytes, config, family, data, parts, parameters)
    draws: dict[tuple, list[dict]] = {}
    for f in fams:
        lab, loss = f[0].labels, f[0].loss
        kind = family_kind(f)
        sig = (lab, member_keys(f))
        loss_space = losses.LOSS_SPACES.get(loss, {})
        rules = len({e.output_rule for e in f} - {"identity"})
        for k in folds:
            train_idx, dev_idx, _ = idx[k]
            sd = SearchData.of(X, Ys[lab], train_idx, dev_idx)
            dkey = (json.dumps(loss_space, sort_keys=True), k)
            if dkey not in draws:  # as the search draws them (engine: seed material [seed, fold])
                tried: set[str] = set()
                draws[dkey] = [sample_round(p.space, loss_space, [p.seed, k], r, tried) for r in sched if r.round == 0]
            per_round = draws[dkey]
            cfgs = [c for cs in per_round for c in cs]
            counts = round_counts(p, len(f), [len(cs) for cs in per_round])
            one = round_counts(p, 1, [len(cs) for cs in per_round])
            exp = expected_rounds(counts, one, ratios[kind])
            extra = loss_extra.get((lab, loss), (0.0, 0.0))
            round0 = []
            for c in cfgs:
                units, bn = config_layers(c)
                params = network_flops(units, sd.n_labels, sd.nnz_x, sd.n_inputs, bn)[2]
                extra_s = extra[0] + extra[1] * output_weights(c, sd.n_inputs, sd.n_labels)
                round0.append({"config": c, "epoch_s": cost.epoch(c, sd, p.batch_size, extra_s, objective[sig]),
                               "setup_s": cost.node_setup(params)})
                mem = peak_memory(c, sd, p.batch_size, bf16, device, rules)
                need = sum(mem["device" if device == "cuda" else "host"].values())
                if largest is None or need > largest[0]:
                    largest = (need, c, kind, sd, mem, params)
            b_rounds, e_rounds = _round_costs(counts, exp, round0, execs)
            node_secs_bound.append(b_rounds)
            node_secs_exp.append(e_rounds)
            searches.append(SearchPlan(
                kind, [e.name for e in f], k, lab, loss, sd, len(cfgs), int(sum(c.nodes for c in counts)),
                int(sum(c.epochs for c in counts)), float(sum(n for n, _ in exp)), float(sum(e for _, e in exp)),
                float(sum(map(sum, b_rounds))), float(sum(map(sum, e_rounds))), objective[sig], extra,
                [{"config": x["config"], "epoch_s": x["epoch_s"]} for x in round0],
                (search_dir(cache_dir, p, h, f[0], k) / "search.json").exists(),
                [{"iteration": c.iteration, "bracket": c.bracket, "round": c.round, "budget": c.budget,
                  "nodes": c.nodes, "epochs": c.epochs, "nodes_expected": n, "epochs_expected": e}
                 for c, (n, e) in zip(counts, exp)]))
    wall_bound = simulate(node_secs_bound, n_workers)[0]
    wall_exp = simulate(node_secs_exp, n_workers)[0]

    _, cfg, kind, sd, mem, params = largest
    dev_bytes, host_bytes = sum(mem["device"].values()), sum(mem["host"].values())
    dataset_bytes = int(ds.X.data.nbytes + ds.X.indices.nbytes + ds.X.indptr.nbytes + ds.Y.data.nbytes +
                        ds.Y.indices.nbytes + ds.Y.indptr.nbytes)
    ram = host_memory()
    if device == "cuda":
        if torch.cuda.is_available():
            cap, cap_src = torch.cuda.get_device_properties(0).total_memory, torch.cuda.get_device_name(0)
        else:
            cap, cap_src = ASSUMED_GPU.memory, ASSUMED_GPU.name
        fits = dev_bytes <= cap
    else:
        cap, cap_src = ram, "this machine's RAM"
        fits = n_workers * host_bytes + dataset_bytes <= cap
    peak = {"config": cfg, "family": kind, "params": params, "device_bytes": dev_bytes,
              "host_bytes_per_worker": host_bytes, "parts": mem, "dataset_bytes": dataset_bytes,
              "host_bytes_all_workers": n_workers * host_bytes + dataset_bytes, "host_ram": ram,
              "capacity_bytes": int(cap), "capacity_of": cap_src, "fits": bool(fits)}

    src = "record" if record.searches else "assumption"
    kinds = {s.family for s in searches}
    from_record = sorted(k for k in kinds if k in record.searches)
    assumed = sorted(k for k in kinds if k not in record.searches)
    expected = {"source": src if not (from_record and assumed) else "record and assumption",
                "from_record": from_record, "assumed": assumed,
                "assumption": ASSUMPTION if assumed else None, "why": ASSUMPTION_WHY if assumed else None,
                "record": {k: {"searches": record.searches[k], "nodes_ratio": ratios[k][None][0],
                               "epochs_ratio": ratios[k][None][1],
                               "seconds_per_epoch": record.seconds[k][0] / max(record.seconds[k][1], 1)}
                           for k in from_record},
                "record_folders": sum(record.searches.values())}
    totals = {"searches": len(searches), "cached": sum(s.cached for s in searches),
              "configurations": sum(s.configurations for s in searches),
              "nodes": sum(s.nodes for s in searches), "nodes_expected": sum(s.nodes_expected for s in searches),
              "epochs_bound": sum(s.epochs_bound for s in searches),
              "epochs_expected": sum(s.epochs_expected for s in searches),
              "device_hours_bound": sum(s.seconds_bound for s in searches) / 3600,
              "device_hours_expected": sum(s.seconds_expected for s in searches) / 3600,
              "wall_hours_bound": wall_bound / 3600, "wall_hours_expected": wall_exp / 3600}
    calibration = {**asdict(cost), "points": points, "objective_s": {f"{k[0]}:{','.join(k[1])}": v
                                                                     for k, v in objective.items()},
                   "loss_extra_batch_s": {f"{k[0]}-{k[1]}": {"s": v[0], "s_per_output_weight": v[1]}
                                          for k, v in loss_extra.items()},
                   "seconds": {"dataset": data_s, "calibration": calib_s, "objectives": objectives_s}}
    dataset = {"hash": h, "stays": int(ds.n_stays), "features": int(ds.X.shape[1]), "codes": len(ds.codes),
               "source": str(ds.source)}
    return Plan(p.name, data if isinstance(data, str) else str(ds.source), dataset, device, n_workers,
                hyperband.budget_text(p), searches, totals, expected, calibration, peak, skipped,
                time.perf_counter() - t_start)