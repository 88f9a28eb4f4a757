"""Time the per-epoch objectives of the naive family (nine members) on val + dev at the paper's size.

    python benchmarks/bench_objectives.py              # 2,449 val + 5,000 dev rows, 9,336 labels
    python benchmarks/bench_objectives.py --small      # 245 + 500 rows, 2,000 labels: seconds
    python benchmarks/bench_objectives.py --threads 1  # torch threads (default: 1 and every CPU, in turn)
    python benchmarks/bench_objectives.py --torch-cpu  # also the torch method on the CPU (slow: why numpy runs there)

Compares what `cacicd.models.search` scored each epoch before `cacicd.models.objectives` (numpy output
rules, then `cacicd.models.train.target_score` per member: `cacicd.evaluation.metrics` on the host) with
`objectives.score_members` on the CPU, and on CUDA when there is one. Prints each piece (output rules, the
four areas (their sorts), the two F1, the three NDCG) and the total, best of --repeats (the two paths take
turns), as wall time and as this process's CPU time (steadier on a shared machine), side by side with the
ratio, and the largest difference between the two paths' values.

Data: a label set of real ICD-9-CM codes (random billing codes with all their ancestors, cut to the label count),
stays with ~13 leaves drawn from Zipf-like frequencies rolled up to every level (~40 positives a stay);
scores like a trained network's: leaf logits from the code frequency, +3 for a true code and N(0, 1)
noise, an ancestor's probability the chance that any child is present (N(0, 0.7) noise on its logit), the
logits rounded to bfloat16 and the sigmoid taken in float32 (as `predict_proba` under bfloat16). Its mean
coverage is close to the published NDCG-tuned naive model's on every code (RE@100 1,696 + ~40 positives).
"""
from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from cacicd import icd9
from cacicd.evaluation import metrics
from cacicd.models import objectives as O
from cacicd.models.labels import LabelContext
from cacicd.models.outputs import make_output_rule
from cacicd.models.train import TARGETS, set_threads, target_score

MEMBERS = [(f"{t}|identity", t, "identity") for t in TARGETS] + [("ndcg|rollup", "ndcg", "rollup"),
                                                                  ("ndcg|rolldown", "ndcg", "rolldown")]


def make_codes(n_labels: int, seed: int = 0) -> list[str]:
    """n_labels ICD-9-CM codes closed under ancestors: random billing codes with their ancestors."""
    rng = np.random.default_rng(seed)
    leaves = [c for c in icd9.all_codes() if icd9.is_billing(c)]
    labels: set[str] = set()
    chosen: list[str] = []
    for i in rng.permutation(len(leaves)):
        c = leaves[i]
        if c in labels:
            continue
        labels |= {c, *icd9.ancestors(c)}
        chosen.append(c)
        if len(labels) >= n_labels:
            break
    parents = {p for c in labels for p in icd9.ancestors(c)}
    drop = [c for c in reversed(chosen) if c not in parents][:len(labels) - n_labels]  # childless: safe to drop
    return sorted(labels - set(drop))


def make_split(codes: list[str], ctx: LabelContext, n: int, per_row: float, seed: int) -> tuple[sp.csr_matrix,
                                                                                                np.ndarray]:
    """(labels (n, L) CSR, float32 probabilities (n, L)) of n synthetic stays."""
    rng = np.random.default_rng(seed)
    L = len(codes)
    tree = ctx.tree()
    is_leaf = np.ones(L, dtype=bool)
    is_leaf[tree.parent_idx] = False
    leaves = np.flatnonzero(is_leaf)
    w = 1.0 / np.arange(1, len(leaves) + 1) ** 1.1
    w = w[np.random.default_rng(0).permutation(len(leaves))]  # one frequency per code, the same in every split
    w /= w.sum()
    k = np.maximum(rng.poisson(per_row / 3.0, n), 1)
    rows = np.repeat(np.arange(n), k)
    cols = leaves[rng.choice(len(leaves), size=len(rows), p=w)]
    leaf_y = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, L))
    Y = ((leaf_y @ ctx.ancestor_matrix()) > 0).astype(np.int8).tocsr()  # every ancestor of a code is present
    freq = np.zeros(L)
    freq[leaves] = w * per_row / 3.0
    y = Y.toarray().astype(bool)
    logit = np.log(np.clip(freq, 1e-6, 0.5) / (1 - np.clip(freq, 1e-6, 0.5)))[None, :] + 3.0 * y \
        + rng.normal(0.0, 1.0, (n, L))
    p = 1 / (1 + np.exp(-logit))
    for par, chi in reversed(tree.layers):  # an ancestor: the chance that any child is present, then noise
        q = np.ones((n, L))
        np.multiply.at(q.T, par, (1 - p[:, chi]).T)
        any_child = np.clip(1 - q[:, np.unique(par)], 1e-9, 1 - 1e-9)
        p[:, np.unique(par)] = 1 / (1 + np.exp(-(np.log(any_child / (1 - any_child))
                                                 + rng.normal(0.0, 0.7, any_child.shape))))
    logit = np.log(p / (1 - p)).astype(np.float32)
    probs = torch.sigmoid(torch.from_numpy(logit).to(torch.bfloat16).float()).numpy()
    return Y, probs


def best_of(fs: list[Callable[[], object]], repeats: int,
            sync: Callable[[], None] = lambda: None) -> list[tuple[float, float, object]]:
    """(best wall seconds, best CPU seconds of this process, last result) of each f, the fs taking turns each repeat."""
    # Taking turns exposes each to the same background load; CPU time is the steadier figure on a shared machine.
    best = [[float("inf"), float("inf"), None] for _ in fs]
    for _ in range(repeats):
        for b, f in zip(best, fs):
            sync()
            w0, c0 = time.perf_counter(), time.process_time()
            b[2] = f()
            sync()
            b[0], b[1] = min(b[0], time.perf_counter() - w0), min(b[1], time.process_time() - c0)
    return [tuple(b) for b in best]


def old_scores(p_val: np.ndarray, p_dev: np.ndarray, Y_val, Y_dev, ctx: LabelContext) -> tuple[dict, dict]:
    """What search._scores computed before objectives: numpy rules, then target_score per member."""
    val, dev = {}, {}
    for rule in sorted({r for _, _, r in MEMBERS}):
        fn = None if rule == "identity" else make_output_rule(rule, ctx)
        pv, pd_ = (fn(p_val), fn(p_dev)) if fn is not None else (p_val, p_dev)
        for key, target, r in MEMBERS:
            if r == rule:
                val[key], dev[key] = target_score(target, Y_val, pv), target_score(target, Y_dev, pd_)
    return val, dev


def pieces_old(p: list[np.ndarray], Y: list, ctx: LabelContext) -> dict[str, Callable[[], object]]:
    """The old path cut into the pieces the table shows (each over val and dev)."""
    rules = {r: make_output_rule(r, ctx) for r in ("rollup", "rolldown")}
    ruled = [{r: fn(x) for r, fn in rules.items()} for x in p]
    return {
        "output rules (2)": lambda: [fn(x) for x in p for fn in rules.values()],
        "AUPRC/AUROC micro+macro": lambda: [target_score(t, y, x) for x, y in zip(p, Y) for t in TARGETS
                                            if t.startswith("au")],
        "F1 micro+macro": lambda: [target_score(t, y, x) for x, y in zip(p, Y) for t in ("f1_micro", "f1_macro")],
        "NDCG x 3 rules": lambda: [target_score("ndcg", y, z) for x, y, r in zip(p, Y, ruled)
                                   for z in (x, r["rollup"], r["rolldown"])],
    }


def pieces_new(p: list[torch.Tensor], labels: list[O.SplitLabels], tree, method: str | None = None
               ) -> dict[str, Callable[[], object]]:
    """The new path cut into the same pieces."""
    ruled = [{r: O.apply_rule(r, x, tree, method) for r in ("rollup", "rolldown")} for x in p]
    aucs = [t for t in TARGETS if t.startswith("au")]
    return {
        "output rules (2)": lambda: [O.apply_rule(r, x, tree, method) for x in p for r in ("rollup", "rolldown")],
        "AUPRC/AUROC micro+macro": lambda: [O.objectives(x, y, aucs, method) for x, y in zip(p, labels)],
        "F1 micro+macro": lambda: [O.objectives(x, y, ("f1_micro", "f1_macro"), method) for x, y in zip(p, labels)],
        "NDCG x 3 rules": lambda: [O.objectives(z, y, ("ndcg",), method) for x, y, r in zip(p, labels, ruled)
                                   for z in (x, r["rollup"], r["rolldown"])],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="245 + 500 rows, 2,000 labels instead of 2,449 + 5,000, 9,336")
    ap.add_argument("--threads", type=int, action="append", help="torch thread count(s) (default: 1, then all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-old", action="store_true", help="time only the new path")
    ap.add_argument("--torch-cpu", action="store_true", help="also time objectives' torch method on the CPU, once")
    a = ap.parse_args()
    n_val, n_dev, L = (245, 500, 2000) if a.small else (2449, 5000, 9336)
    t0 = time.perf_counter()
    codes = make_codes(L)
    Y_any = sp.csr_matrix((1, len(codes)))
    ctx = LabelContext.from_labels(codes, Y_any)
    Y_val, p_val = make_split(codes, ctx, n_val, 40.0, seed=1)
    Y_dev, p_dev = make_split(codes, ctx, n_dev, 40.0, seed=2)
    cov = metrics.coverage(Y_dev, p_dev)
    print(f"labels {L} ({', '.join(f'{k} {v}' for k, v in zip(*np.unique(ctx.levels, return_counts=True)))}); "
          f"val {n_val} + dev {n_dev} rows; {Y_dev.nnz / n_dev:.1f} positives a dev row; dev coverage {cov:.0f} "
          f"(RE@100 {cov - Y_dev.nnz / n_dev:.0f}); {len(np.unique(p_dev))} distinct dev scores; "
          f"data built in {time.perf_counter() - t0:.0f} s\n")
    tree = ctx.tree()
    threads = a.threads or sorted({1, torch.get_num_threads()})
    cpu_val, cpu_dev = torch.from_numpy(p_val), torch.from_numpy(p_dev)
    for th in threads:
        set_threads(th)
        print(f"torch threads: {torch.get_num_threads()} (numpy's sorts and searches run on one)")
        (t_lab, _, labels), = best_of([lambda: [O.SplitLabels(Y_val), O.SplitLabels(Y_dev)]], a.repeats)
        new_pieces = pieces_new([cpu_val, cpu_dev], labels, tree)
        old_pieces = pieces_old([p_val, p_dev], [Y_val, Y_dev], ctx)
        rows = []
        for name, f in new_pieces.items():
            fs = [f] if a.skip_old else [old_pieces[name], f]
            got = best_of(fs, a.repeats)
            rows.append((name, *(got[0][:2] if not a.skip_old else (math.nan, math.nan)), *got[-1][:2]))
        fs = [lambda: O.score_members(cpu_val, cpu_dev, *labels, MEMBERS, tree)]
        if not a.skip_old:
            fs.insert(0, lambda: old_scores(p_val, p_dev, Y_val, Y_dev, ctx))
        got = best_of(fs, a.repeats)
        (nv, nd) = got[-1][2]
        if a.skip_old:
            diff, old_t = math.nan, (math.nan, math.nan)
        else:
            (ov, od), old_t = got[0][2], got[0][:2]
            diff = max(abs(x[k] - y[k]) for x, y in ((ov, nv), (od, nd)) for k, _, _ in MEMBERS)
        rows.append(("total: nine members, val + dev", *old_t, *got[-1][:2]))
        print(f"{'piece (val + dev)':31s} {'wall s: before':>14s} {'objectives':>10s} {'ratio':>6s}   "
              f"{'CPU s: before':>13s} {'objectives':>10s} {'ratio':>6s}")
        for name, ow, oc, nw, nc in rows:
            print(f"{name:31s} {ow:14.3f} {nw:10.3f} {ow / nw:6.1f}   {oc:13.3f} {nc:10.3f} {oc / nc:6.1f}")
        print(f"largest |difference| between the two paths' values: {diff:.1e}; "
              f"SplitLabels of val + dev (once per node): {t_lab:.3f} s")
        if a.torch_cpu:
            (w, c, (tv, td)), = best_of([lambda: O.score_members(cpu_val, cpu_dev, *labels, MEMBERS, tree,
                                                                 method="torch")], 1)
            diff = max(abs(x[k] - y[k]) for x, y in ((tv, nv), (td, nd)) for k, _, _ in MEMBERS)
            print(f"objectives' torch method on the CPU (torch's sorts), total: {w:.3f} s wall, {c:.3f} s CPU "
                  f"(|difference| {diff:.1e})")
        print()
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        sync = torch.cuda.synchronize
        labels = [O.SplitLabels(Y_val, dev), O.SplitLabels(Y_dev, dev)]
        cpu_labels = [O.SplitLabels(Y_val), O.SplitLabels(Y_dev)]
        pv, pd_ = cpu_val.to(dev), cpu_dev.to(dev)
        print(f"CUDA: {torch.cuda.get_device_name(dev)}; CPU with {torch.get_num_threads()} torch threads")
        cpu_pieces = pieces_new([cpu_val, cpu_dev], cpu_labels, tree)
        print(f"{'piece (val + dev)':31s} {'objectives CPU s':>16s} {'CUDA s':>9s} {'ratio':>7s}")
        rows = []
        for name, f in pieces_new([pv, pd_], labels, tree).items():
            f()
            t_cpu, t_gpu = best_of([cpu_pieces[name]], a.repeats)[0][0], best_of([f], a.repeats + 2, sync)[0][0]
            rows.append((name, t_cpu, t_gpu))
        t_cpu, _, (cv, cd) = best_of([lambda: O.score_members(cpu_val, cpu_dev, *cpu_labels, MEMBERS, tree)],
                                     a.repeats)[0]
        t_gpu, _, (gv, gd) = best_of([lambda: O.score_members(pv, pd_, *labels, MEMBERS, tree)], a.repeats + 2,
                                     sync)[0]
        rows.append(("total: nine members, val + dev", t_cpu, t_gpu))
        for name, tc, tg in rows:
            print(f"{name:31s} {tc:16.3f} {tg:9.4f} {tc / tg:7.1f}")
        diff = max(abs(x[k] - y[k]) for x, y in ((gv, cv), (gd, cd)) for k, _, _ in MEMBERS)
        print(f"largest |difference| CUDA vs CPU: {diff:.1e}")


if __name__ == "__main__":
    main()
