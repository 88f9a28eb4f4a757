"""The per-epoch objectives of a family search: the target metrics (`cacicd.models.train.TARGETS`) after an
output rule, on a split's labels, computed where the model's probabilities are (a torch device).

Every value equals its `cacicd.evaluation.metrics` counterpart to rounding (float64 sums in another order):
`f1` micro and macro of `score > 0.5`, `ndcg` (full list, pessimistic ties), `auprc` and `auroc` micro and
macro, with the same NaN rules (macro over labels with a positive; AUROC: and a negative).

How: each positive needs only counts of its *segment* (its row for NDCG, its label for macro, the whole
matrix for micro): the entries scored >= and > it, and the segment's positives scored >= and > it. The
positives are sorted by (segment, score) (a sort of P keys), which gives the latter; the former come from
searching the segment's sorted scores. Tied positives share their counts, so each value is one float64 sum
over positives (a tie group's DCG and AUPRC step shared evenly among its members) and no positive needs an
order of its own. The sorted scores: on a CUDA device one global sort (micro) whose stable re-sort by label
gives every label's order (macro), and one row sort per output rule (NDCG); on the CPU numpy's sorts of
values (rows, columns and the flat matrix, in cache-sized blocks, AVX-512 where present) on int32 keys
ordered as the scores (a probability's own bits), some 20 times faster than torch's CPU sort, which returns
indices too. `method` picks one of the two anywhere (tests).
"""
from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Collection, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from cacicd.models.labels import TreeLayers
from cacicd.models.train import TARGETS, torch_threads

RULES: tuple[str, ...] = ("identity", "rollup", "rolldown")
METHODS: tuple[str, ...] = ("numpy", "torch")
THRESHOLD = 0.5  # a score is a predicted positive iff score > THRESHOLD (as metrics.f1)
BLOCK = 64  # rows, or labels, sorted (or ruled) at a time on the CPU: a block stays in cache
TILE = 256  # rows per tile when a block of labels is transposed on the CPU
_THRESHOLD_KEY = int(np.float32(THRESHOLD).view(np.int32))  # a positive float's key is its bits
_MICRO = frozenset({"auprc_micro", "auroc_micro"})
_MACRO = frozenset({"auprc_macro", "auroc_macro"})
_F1 = frozenset({"f1_micro", "f1_macro"})


class SplitLabels:
    """A split's 0/1 labels (n, L) on a device: its positives in row order and in label order, and their counts."""

    def __init__(self, y_true: sp.spmatrix | np.ndarray, device: torch.device | str = "cpu"):
        t = sp.csr_matrix(y_true, copy=True)
        t.sum_duplicates()
        t.eliminate_zeros()
        if t.nnz and not np.all(t.data == 1):
            raise ValueError(f"labels must be 0/1, found the value {t.data[t.data != 1][0]}")
        t.sort_indices()
        n, L = t.shape
        self.shape: tuple[int, int] = (int(n), int(L))
        self.device = torch.device(device)
        self.nnz = int(t.nnz)
        row_indptr = t.indptr.astype(np.int64)
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(row_indptr))
        cols = t.indices.astype(np.int64)
        order = np.argsort(cols, kind="stable")
        label_indptr = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=L))]).astype(np.int64)
        self.host_row_indptr, self.host_label_indptr = row_indptr, label_indptr  # for the CPU loops
        on = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)  # noqa: E731
        self.row_indptr, self.label_indptr = on(row_indptr), on(label_indptr)
        self.rows, self.cols = on(rows), on(cols)  # (P,) each positive, row order
        self.flat = on(rows * L + cols)  # (P,) its index in the flattened (n * L) matrix, row order
        self.labels_by_label = on(cols[order])  # (P,) label order
        self.flat_by_label = on((rows * L + cols)[order])
        self.n_pos_row = on(np.diff(row_indptr))  # (n,)
        self.n_pos_label = on(np.diff(label_indptr))  # (L,)


# ---------------------------------------------------------------------------------------------
# small pieces shared by both methods

def _use_numpy(x: torch.Tensor, method: str | None) -> bool:
    if method is None:
        return x.device.type == "cpu"
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "numpy" and x.device.type != "cpu":
        raise ValueError(f"method 'numpy' needs CPU tensors, got a tensor on {x.device}")
    return method == "numpy"


def _held(numpy: bool) -> contextlib.AbstractContextManager:
    """On the numpy path torch runs only small ops: one thread (its pool's other threads would wait on the sorts)."""
    return torch_threads(1) if numpy else contextlib.nullcontext()


def _checked(probs: torch.Tensor, labels: SplitLabels) -> torch.Tensor:
    if not isinstance(probs, torch.Tensor):
        raise TypeError(f"probabilities must be a torch tensor, got {type(probs).__name__}")
    if probs.dtype != torch.float32:
        raise TypeError(f"probabilities must be float32, got {probs.dtype}")
    if tuple(probs.shape) != labels.shape:
        raise ValueError(f"probabilities have shape {tuple(probs.shape)} but the labels {labels.shape}")
    if probs.device != labels.device:
        raise ValueError(f"probabilities are on {probs.device} but the labels on {labels.device}")
    return probs.contiguous()


def _check_finite(z: torch.Tensor) -> None:
    if z.numel():
        lo, hi = z.aminmax()
        if not bool(torch.isfinite(lo) & torch.isfinite(hi)):  # NaN propagates to both
            raise ValueError("probabilities have NaN or infinite values")


def _bits_ordered(z: torch.Tensor) -> bool:
    """Whether every value of z (CPU, float32) is finite and >= +0.0 (probabilities): then its bits are ordered keys."""
    k = z.numpy().view(np.int32)
    if not k.size:
        return True
    lo, hi = torch.from_numpy(k).aminmax()
    return bool(lo >= 0) and bool(hi < 0x7F800000)


def _keys32(z: torch.Tensor, bits_ordered: bool | None = None) -> np.ndarray:
    """(n, L) int32 keys ordered as z's (CPU, float32) values, -0.0 == 0.0: z's own bits when none is negative."""
    if bits_ordered if bits_ordered is not None else _bits_ordered(z):
        return z.numpy().view(np.int32)
    _check_finite(z)
    k = (z.numpy() + np.float32(0.0)).view(np.int32)  # a copy, -0.0 made +0.0
    k ^= (k >> 31) & 0x7FFFFFFF  # negative floats: flip the magnitude bits
    return k


def _ordkey(v: torch.Tensor) -> torch.Tensor:
    """float32 (P,) -> int64 in [0, 2**32), ordered as the floats (-0.0 == 0.0)."""
    b = (v + 0.0).view(torch.int32).to(torch.int64)
    return (b ^ ((b >> 31) & 0x7FFFFFFF)) + 2**31


def _unkey(k: torch.Tensor) -> torch.Tensor:
    """The float32 of the low 32 bits of `_ordkey` keys."""
    b = (k & 0xFFFFFFFF) - 2**31
    return (b ^ ((b >> 31) & 0x7FFFFFFF)).to(torch.int32).view(torch.float32)


def _sort(x: torch.Tensor, numpy: bool) -> torch.Tensor:
    return torch.from_numpy(np.sort(x.numpy())) if numpy else torch.sort(x).values


class _Positives:
    """A split's positives sorted by (segment, score): segment, score, and the segment's positives >= / > it."""

    def __init__(self, okey: torch.Tensor, seg: torch.Tensor, seg_indptr: torch.Tensor, numpy: bool):
        """okey: (P,) int64 in [0, 2**32), ordered as the positives' scores (`_ordkey`)."""
        key = _sort((seg << 32) | okey, numpy)
        self.seg, self.okey = key >> 32, key & 0xFFFFFFFF
        P = len(key)
        idx = torch.arange(P, device=key.device)
        new = torch.ones(P, dtype=torch.bool, device=key.device)
        new[1:] = key[1:] != key[:-1]
        first = torch.cummax(torch.where(new, idx, 0), 0).values
        end = torch.ones_like(new)
        end[:-1] = new[1:]
        stop = torch.where(end, idx + 1, P).flip(0).cummin(0).values.flip(0)
        seg_end = seg_indptr[self.seg + 1]
        self.ge, self.gt = seg_end - first, seg_end - stop  # positives of the segment >= and > it

    @property
    def v(self) -> torch.Tensor:
        """(P,) float32 scores."""
        return _unkey(self.okey)

    @property
    def k32(self) -> np.ndarray:
        """(P,) int32 keys, as `_keys32` (CPU)."""
        return (self.okey - 2**31).to(torch.int32).numpy()


def _positives(z: torch.Tensor, k: np.ndarray | None, flat: torch.Tensor, seg: torch.Tensor,
               seg_indptr: torch.Tensor, numpy: bool) -> _Positives:
    """The positives at `flat` (indices into the flattened matrix) of z, or of its int32 keys k (CPU)."""
    if numpy:
        okey = torch.from_numpy(k.reshape(-1)[flat.numpy()].astype(np.int64) + 2**31)
    else:
        okey = _ordkey(z.reshape(-1)[flat])
    return _Positives(okey, seg, seg_indptr, numpy)


def _segment_search(flat: torch.Tensor, start: torch.Tensor, length: int, v: torch.Tensor, right: bool) -> torch.Tensor:
    """(P,) entries of the sorted runs flat[start:start+length] that are < v (<= v if right), by bisection."""
    lo = torch.zeros_like(start)
    hi = torch.full_like(start, length)
    for _ in range(max(int(length), 1).bit_length()):
        mid = (lo + hi) >> 1
        x = flat[start + mid.clamp(max=max(length - 1, 0))]
        go = (x <= v) if right else (x < v)
        active = lo < hi
        lo = torch.where(active & go, mid + 1, lo)
        hi = torch.where(active & ~go, mid, hi)
    return lo


def _discount_cumsum(L: int, device: torch.device) -> torch.Tensor:
    """(L + 1,) float64: 0, then the running sum of 1 / log2(rank + 1) (as metrics' NDCG)."""
    disc = 1.0 / np.log2(np.arange(L) + 2.0)
    return torch.from_numpy(np.concatenate([[0.0], np.cumsum(disc)])).to(device)


def _nan(device: torch.device) -> torch.Tensor:
    return torch.tensor(math.nan, dtype=torch.float64, device=device)


# ---------------------------------------------------------------------------------------------
# NDCG

def _floors(indptr: np.ndarray, v: np.ndarray, cap: int | None = None) -> np.ndarray:
    """(segments,) int32: one key below each segment's lowest positive (v sorted by segment, then key), at most cap."""
    # Raising a segment's keys to its floor changes no count a positive needs (entries < it, <= it; and > cap)
    # and leaves most entries equal, which numpy sorts several times faster.
    top = np.iinfo(np.int32).max - 1 if cap is None else cap
    floor = np.full(len(indptr) - 1, top, dtype=np.int32)
    has = np.flatnonzero(np.diff(indptr))
    floor[has] = np.minimum(v[indptr[has]].astype(np.int64) - 1, top)  # finite keys: no overflow
    return floor


def _row_lt_numpy(k: np.ndarray, indptr: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(P,) entries of each positive's row keyed < it (keys k, positives' keys v); rows sorted BLOCK at a time."""
    n = k.shape[0]
    ip = indptr.tolist()
    floor = _floors(indptr, v)[:, None]
    lt = np.empty(len(v), dtype=np.int64)
    for a in range(0, n, BLOCK):
        b = min(n, a + BLOCK)
        if ip[b] == ip[a]:
            continue
        srt = np.maximum(k[a:b], floor[a:b])
        srt.sort(axis=1)
        for i in range(a, b):
            s0, s1 = ip[i], ip[i + 1]
            if s1 > s0:
                lt[s0:s1] = srt[i - a].searchsorted(v[s0:s1], side="left")
    return lt


def _search_distinct(srt: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """searchsorted(srt, v) left and right for sorted v, searching each distinct value once (a large srt misses cache)."""
    if len(v) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    new = np.ones(len(v), dtype=bool)
    new[1:] = v[1:] != v[:-1]
    u = v[new]
    group = np.cumsum(new) - 1
    return srt.searchsorted(u, side="left")[group], srt.searchsorted(u, side="right")[group]


def _ndcg(z: torch.Tensor, k: np.ndarray | None, labels: SplitLabels, numpy: bool) -> torch.Tensor:
    n, L = labels.shape
    dev = z.device
    if n == 0:
        return _nan(dev)
    pos = _positives(z, k, labels.flat, labels.rows, labels.row_indptr, numpy)
    if numpy:
        lt = torch.from_numpy(_row_lt_numpy(k, labels.host_row_indptr, pos.k32))
    else:
        rs = torch.sort(z, dim=1).values.reshape(-1)
        lt = _segment_search(rs, pos.seg * L, L, pos.v, right=False)
    all_ge = L - lt
    g = pos.ge - pos.gt  # the positive's tie group: ranks all_ge - g + 1 .. all_ge, pessimistically
    C = _discount_cumsum(L, dev)
    idcg = C[torch.clamp(labels.n_pos_row, max=L)]
    gain = (C[all_ge] - C[all_ge - g]) / g / idcg[pos.seg]
    return gain.sum() / n


# ---------------------------------------------------------------------------------------------
# AUPRC, AUROC (micro and macro) and the F1 counts

def _label_counts_numpy(k: np.ndarray, indptr: np.ndarray, v: np.ndarray,
                        want_pred: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(P,) entries of each positive's label keyed < and <= it; (L,) entries > THRESHOLD of each label with a positive."""
    # k: (n, L) int32 keys; v: (P,) the positives' keys, by label. Labels are sorted BLOCK at a time, each block
    # transposed TILE rows at a time (a tile stays in cache).
    n, L = k.shape
    ip = indptr.tolist()
    m = np.diff(indptr)
    extra = int(want_pred)  # a label's searches: its keys, the same + 1 (integer keys: <= v is < v + 1), threshold + 1
    base = 2 * indptr[:-1] + extra * np.arange(L)
    at = np.arange(len(v)) - np.repeat(indptr[:-1], m) + np.repeat(base, m)
    needles = np.empty(2 * len(v) + extra * L, dtype=np.int32)
    needles[at], needles[at + np.repeat(m, m)] = v, v + 1  # finite keys: no overflow
    if want_pred:
        needles[base + 2 * m] = _THRESHOLD_KEY + 1
    cuts = np.concatenate([base, [len(needles)]]).tolist()
    floor = _floors(indptr, v, _THRESHOLD_KEY if want_pred else None)[:, None]
    lt = np.empty(len(v), dtype=np.int64)
    le = np.empty(len(v), dtype=np.int64)
    n_pred = np.zeros(L, dtype=np.int64) if want_pred else None
    buf = np.empty((BLOCK, n), dtype=np.int32)
    for a in range(0, L, BLOCK):
        b = min(L, a + BLOCK)
        if ip[b] == ip[a]:
            continue
        blk = buf[:b - a]
        for r in range(0, n, TILE):
            blk[:, r:r + TILE] = k[r:r + TILE, a:b].T
        np.maximum(blk, floor[a:b], out=blk)
        blk.sort(axis=1)
        for j in range(a, b):
            s0, s1 = ip[j], ip[j + 1]
            if s1 > s0:
                got = blk[j - a].searchsorted(needles[cuts[j]:cuts[j + 1]])
                lt[s0:s1], le[s0:s1] = got[:s1 - s0], got[s1 - s0:2 * (s1 - s0)]
                if want_pred:
                    n_pred[j] = n - got[-1]
    return lt, le, n_pred


def _area_sums(pos: _Positives, all_gt: torch.Tensor, all_ge: torch.Tensor, n_pos: torch.Tensor,
               n_total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per positive (float64): its share of its segment's AUPRC and of its AUROC (0 where no negative)."""
    f = torch.float64
    gt, ge, all_gt, all_ge, n_pos = pos.gt.to(f), pos.ge.to(f), all_gt.to(f), all_ge.to(f), n_pos.to(f)
    prev = torch.where(all_gt > 0, gt / all_gt.clamp(min=1), 1.0)  # precision just above the tie group
    pr = (prev + ge / all_ge) / 2 / n_pos  # the group's trapezoid, shared evenly
    n_neg = n_total - n_pos
    neg_lt = (n_total - all_ge) - (n_pos - ge)
    neg_eq = (all_ge - all_gt) - (ge - gt)
    roc = torch.where(n_neg > 0, (neg_lt + 0.5 * neg_eq) / (n_pos * n_neg.clamp(min=1)), 0.0)
    return pr, roc


def _curves(z: torch.Tensor, k: np.ndarray | None, labels: SplitLabels, micro: bool, macro: bool, want_pred: bool,
            numpy: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
    """AUPRC/AUROC micro and/or macro; per-label and total counts of entries > THRESHOLD if the sorts gave them."""
    n, L = labels.shape
    N = n * L
    dev = z.device
    out: dict[str, torch.Tensor] = {}
    flat = z.reshape(-1)
    n_pred = total_pred = None
    if not numpy:
        sv, idx = torch.sort(flat)
        if want_pred:
            total_pred = N - torch.searchsorted(sv, torch.tensor([THRESHOLD], device=dev), right=True)[0]
    if micro:
        pos = _positives(z, k, labels.flat, torch.zeros_like(labels.flat), labels.row_indptr[[0, -1]], numpy)
        if numpy:
            v = pos.k32
            fs = np.maximum(k.reshape(-1), _floors(np.array([0, len(v)]), v, _THRESHOLD_KEY)[0])  # a copy
            fs.sort()
            total_pred = torch.tensor(N - int(fs.searchsorted(_THRESHOLD_KEY, side="right")))
            lt, le = (torch.from_numpy(x) for x in _search_distinct(fs, v))
        else:
            v = pos.v
            lt, le = torch.searchsorted(sv, v), torch.searchsorted(sv, v, right=True)
        P = labels.nnz
        pr, roc = _area_sums(pos, N - le, N - lt, torch.full_like(lt, P), N)
        out["auprc_micro"] = pr.sum() if P else _nan(dev)
        out["auroc_micro"] = roc.sum() if 0 < P < N else _nan(dev)
    if macro:
        pos = _positives(z, k, labels.flat_by_label, labels.labels_by_label, labels.label_indptr, numpy)
        if numpy:
            lt, le, pred = _label_counts_numpy(k, labels.host_label_indptr, pos.k32, want_pred)
            lt, le = torch.from_numpy(lt), torch.from_numpy(le)
            n_pred = None if pred is None else torch.from_numpy(pred)
        else:
            lab = (idx % L).to(torch.int32)
            cs = sv[torch.sort(lab, stable=True).indices]  # every label's scores, ascending, label after label
            v = pos.v
            lt = _segment_search(cs, pos.seg * n, n, v, right=False)
            le = _segment_search(cs, pos.seg * n, n, v, right=True)
        n_pos = labels.n_pos_label[pos.seg]
        pr, roc = _area_sums(pos, n - le, n - lt, n_pos, n)
        has_pos = labels.n_pos_label > 0
        both = has_pos & (labels.n_pos_label < n)
        k_pr, k_roc = has_pos.sum(), both.sum()
        out["auprc_macro"] = torch.where(k_pr > 0, pr.sum() / k_pr.clamp(min=1), math.nan)
        out["auroc_macro"] = torch.where(k_roc > 0, roc.sum() / k_roc.clamp(min=1), math.nan)
    return out, n_pred, total_pred


def _f1(z: torch.Tensor, labels: SplitLabels, n_pred: torch.Tensor | None, total_pred: torch.Tensor | None,
        numpy: bool) -> dict[str, torch.Tensor]:
    """F1 micro and macro; n_pred (valid where a label has a positive) and total_pred are counted here if None."""
    n, L = labels.shape
    dev = z.device
    if n_pred is None:
        if numpy:
            n_pred = torch.from_numpy(np.count_nonzero(z.numpy() > np.float32(THRESHOLD), axis=0).astype(np.int64))
        else:
            n_pred = (z > THRESHOLD).sum(0)
        total_pred = n_pred.sum() if total_pred is None else total_pred
    if total_pred is None:
        total_pred = torch.tensor(int(np.count_nonzero(z.numpy() > np.float32(THRESHOLD)))) if numpy \
            else (z > THRESHOLD).sum()
    hit = (z.reshape(-1)[labels.flat] > THRESHOLD).to(torch.int64)
    tp = torch.zeros(L, dtype=torch.int64, device=dev).index_add_(0, labels.cols, hit)  # integer: exact
    f = torch.float64
    TP, FP, FN = tp.sum().to(f), (total_pred - tp.sum()).to(f), (labels.nnz - tp.sum()).to(f)
    den = 2 * TP + FP + FN
    micro = torch.where(den > 0, 2 * TP / den.clamp(min=1), 0.0)
    has = labels.n_pos_label > 0  # macro: labels with a positive, where 2 tp + fp + fn >= 1
    tp, fp, fn = tp.to(f), (n_pred - tp).to(f), (labels.n_pos_label - tp).to(f)
    per = torch.where(has, 2 * tp / (2 * tp + fp + fn).clamp(min=1), 0.0)
    k = has.sum()
    macro = torch.where(k > 0, per.sum() / k.clamp(min=1), math.nan)
    return {"f1_micro": micro, "f1_macro": macro}


# ---------------------------------------------------------------------------------------------
# output rules

_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _plan(tree: TreeLayers, device: torch.device) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Roll-up as steps (parents, one child each), deepest layer first; roll-down as layers (parents, children)."""
    per_tree = _PLANS.setdefault(tree, {})
    if device not in per_tree:
        up = []
        for p, c in reversed(tree.layers):
            rank = np.arange(len(p)) - np.searchsorted(p, p, side="left")  # p is sorted: i-th child of its parent
            up += [(p[rank == r], c[rank == r]) for r in range(int(rank.max(initial=-1)) + 1)]
        on = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
        per_tree[device] = {"rollup": [(on(p), on(c)) for p, c in up],
                            "rolldown": [(on(p), on(c)) for p, c in tree.layers]}
    return per_tree[device]


@torch.inference_mode()
def apply_rule(rule: str, probs: torch.Tensor, tree: TreeLayers | None, method: str | None = None) -> torch.Tensor:
    """(n, L) probabilities after an output rule (identity: the same tensor; rollup, rolldown: a new one)."""
    if rule == "identity":
        return probs
    if rule not in RULES:
        raise ValueError(f"unknown output rule {rule!r}; known: {', '.join(RULES)}")
    if tree is None:
        raise ValueError(f"output rule {rule!r} needs the label tree")
    numpy = _use_numpy(probs, method)
    steps = _plan(tree, torch.device("cpu") if numpy else probs.device)[rule]
    if numpy:
        out = probs.numpy().copy()  # a C-ordered copy, whatever the strides of probs
        steps = [(p.numpy(), c.numpy()) for p, c in steps]
        for a in range(0, out.shape[0], BLOCK):
            blk = out[a:a + BLOCK]
            for p, c in steps:
                if rule == "rollup":
                    blk[:, p] = np.maximum(blk[:, p], blk[:, c])
                else:
                    blk[:, c] = np.minimum(blk[:, c], blk[:, p])
        return torch.from_numpy(out)
    out = probs.clone()
    for p, c in steps:
        if rule == "rollup":
            out.index_copy_(1, p, torch.maximum(out.index_select(1, p), out.index_select(1, c)))
        else:
            out.index_copy_(1, c, torch.minimum(out.index_select(1, c), out.index_select(1, p)))
    return out


# ---------------------------------------------------------------------------------------------
# the public entry points

def _values(z: torch.Tensor, labels: SplitLabels, targets: Collection[str], numpy: bool,
            bits_ordered: bool | None = None) -> dict[str, torch.Tensor]:
    """The wanted targets as 0-dim tensors; bits_ordered: z already checked (finite), its bits ordered or not."""
    want = set(targets)
    unknown = want - set(TARGETS)
    if unknown:
        raise ValueError(f"unknown target(s) {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    z = _checked(z, labels)
    k = _keys32(z, bits_ordered) if numpy and want - _F1 else None  # checks finiteness
    if k is None and bits_ordered is None:
        _check_finite(z)
    out: dict[str, torch.Tensor] = {}
    n_pred = total_pred = None
    if want & (_MICRO | _MACRO):
        areas, n_pred, total_pred = _curves(z, k, labels, bool(want & _MICRO), bool(want & _MACRO),
                                            bool(want & _F1), numpy)
        out.update(areas)
    if "ndcg" in want:
        out["ndcg"] = _ndcg(z, k, labels, numpy)
    if want & _F1:
        out.update(_f1(z, labels, n_pred, total_pred, numpy))
    return {t: out[t] for t in TARGETS if t in want}


@torch.inference_mode()
def objectives(probs: torch.Tensor, labels: SplitLabels, targets: Collection[str],
               method: str | None = None) -> dict[str, float]:
    """{target: value} of the wanted TARGETS on (n, L) float32 probabilities and a split's labels, on their device."""
    # method: "numpy" (CPU tensors only) or "torch"; None: numpy on the CPU, torch elsewhere.
    numpy = _use_numpy(probs, method)
    with _held(numpy):
        vals = _values(probs, labels, targets, numpy)
    got = torch.stack([v.to(torch.float64).reshape(()) for v in vals.values()]).tolist() if vals else []
    return dict(zip(vals, got))


@torch.inference_mode()
def score_members(p_val: torch.Tensor, p_dev: torch.Tensor, val: SplitLabels, dev: SplitLabels,
                  members: Sequence[tuple[str, str, str]], tree: TreeLayers | None,
                  method: str | None = None) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Each member's (key, target, output rule) value on val and dev (None where not finite); each rule applied once."""
    rules: dict[str, set[str]] = {}
    for _, target, rule in members:
        rules.setdefault(rule, set()).add(target)
    res = []
    for p, labels in ((p_val, val), (p_dev, dev)):
        numpy = _use_numpy(p, method)
        p = _checked(p, labels)
        vals: dict[tuple[str, str], torch.Tensor] = {}
        with _held(numpy):
            ordered = _bits_ordered(p) if numpy else False  # the rules keep scores finite and >= 0: checked once
            if not ordered:
                _check_finite(p)
            for rule in sorted(rules):
                z = apply_rule(rule, p, tree, method)
                vals.update({(t, rule): v for t, v in _values(z, labels, rules[rule], numpy, ordered).items()})
        got = dict(zip(vals, torch.stack([v.to(torch.float64).reshape(()) for v in vals.values()]).tolist()))
        res.append({key: (got[(t, r)] if math.isfinite(got[(t, r)]) else None) for key, t, r in members})
    return res[0], res[1]
