"""The per-epoch objectives on the model's device equal cacicd.evaluation.metrics (through target_score), on
every path (numpy on the CPU; torch on the CPU and on CUDA), on ties, bfloat16 scores and degenerate labels."""
import math
import zlib

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cacicd import icd9
from cacicd.models import objectives as O
from cacicd.models.labels import LabelContext
from cacicd.models.outputs import make_output_rule
from cacicd.models.train import TARGETS, predict_proba, predict_proba_tensor, target_score

METHODS = [("numpy", "cpu"), ("torch", "cpu"),
           pytest.param(("torch", "cuda"), marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
SHAPES = [(1, 1), (1, 6), (6, 1), (3, 4), (40, 30), (257, 70), (700, 300)]
SCORES = ["uniform", "levels", "bf16_probs", "bf16_logits", "signed", "zeros", "ones"]
LABELS = ["random", "empty_columns", "empty_rows", "single_positive", "no_positive", "all_positive", "dense"]


def seed(*case) -> int:
    """A seed of its own for each case, stable across runs (unlike hash())."""
    return zlib.crc32(repr(case).encode())


def make_scores(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """float32 scores of a kind: continuous, a few levels (ties), bfloat16-rounded, signed with -0.0, constant."""
    if kind == "uniform":
        s = rng.random(shape)
    elif kind == "levels":
        s = np.round(rng.random(shape) * 4) / 4  # 5 values: many ties, some exactly at the 0.5 threshold
    elif kind == "bf16_probs":
        s = torch.from_numpy(rng.random(shape).astype(np.float32) ** 3).to(torch.bfloat16).float().numpy()
    elif kind == "bf16_logits":  # what predict_proba gives under bfloat16: float32 sigmoid of bfloat16 logits
        z = torch.from_numpy(rng.normal(-2.0, 6.0, shape).astype(np.float32)).to(torch.bfloat16).float()
        s = torch.sigmoid(z).numpy()  # saturates to 0 and 1: ties at both ends
    elif kind == "signed":
        s = rng.normal(0.0, 1.0, shape)
        s[s > 1.0] = np.round(s[s > 1.0])
        s.ravel()[::5], s.ravel()[::7] = -0.0, 0.0
    elif kind == "zeros":
        s = np.zeros(shape)
    elif kind == "ones":
        s = np.full(shape, 0.5)  # exactly the threshold: never a predicted positive
    return np.ascontiguousarray(s, dtype=np.float32)


def make_labels(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> sp.csr_matrix:
    """0/1 labels (CSR) of a kind: random, with empty columns or rows, one positive, none, all, dense."""
    n, L = shape
    y = rng.random(shape) < 0.25
    if kind == "empty_columns":
        y[:, ::2] = False
    elif kind == "empty_rows":
        y[::2] = False
    elif kind == "single_positive":
        y[:] = False
        y[rng.integers(n), rng.integers(L)] = True
    elif kind == "no_positive":
        y[:] = False
    elif kind == "all_positive":
        y[:] = True
    elif kind == "dense":
        y = rng.random(shape) < 0.8
    return sp.csr_matrix(y.astype(np.int8))


def reference(Y: sp.csr_matrix, s: np.ndarray, targets=TARGETS) -> dict[str, float]:
    return {t: target_score(t, Y, s) for t in targets}


def assert_same(got: dict, ref: dict, tol: float = 1e-9) -> None:
    assert got.keys() == ref.keys()
    for t, r in ref.items():
        g = got[t]
        if math.isnan(r):
            assert g is None or math.isnan(g), (t, g, r)
        else:
            assert g is not None and abs(g - r) <= tol, (t, g, r)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: "-".join(m))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("scores", SCORES)
def test_every_target_equals_metrics_on_every_score_kind(method, shape, scores):
    rng = np.random.default_rng(seed(shape, scores))
    s, Y = make_scores(scores, shape, rng), make_labels("random", shape, rng)
    how, device = method
    got = O.objectives(torch.from_numpy(s).to(device), O.SplitLabels(Y, device), TARGETS, method=how)
    assert_same(got, reference(Y, s))


@pytest.mark.parametrize("method", METHODS, ids=lambda m: "-".join(m))
@pytest.mark.parametrize("shape", SHAPES[1:-1], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("labels", LABELS)
@pytest.mark.parametrize("scores", ["bf16_logits", "levels", "zeros"])
def test_every_target_equals_metrics_on_degenerate_labels(method, shape, labels, scores):
    rng = np.random.default_rng(seed(shape, labels, scores))
    s, Y = make_scores(scores, shape, rng), make_labels(labels, shape, rng)
    how, device = method
    got = O.objectives(torch.from_numpy(s).to(device), O.SplitLabels(Y, device), TARGETS, method=how)
    assert_same(got, reference(Y, s))


@pytest.mark.parametrize("method", METHODS, ids=lambda m: "-".join(m))
def test_any_subset_of_targets_gives_the_same_values(method):
    rng = np.random.default_rng(7)
    s, Y = make_scores("levels", (60, 25), rng), make_labels("empty_columns", (60, 25), rng)
    how, device = method
    p, labels = torch.from_numpy(s).to(device), O.SplitLabels(Y, device)
    ref = reference(Y, s)
    for subset in (["f1_macro"], ["f1_micro", "auroc_macro"], ["auprc_micro"], ["ndcg", "f1_micro"],
                   ["auprc_macro", "auroc_micro", "f1_macro"]):
        assert_same(O.objectives(p, labels, subset, method=how), {t: ref[t] for t in subset})


def test_hand_worked_ties():
    # one row, labels 0 and 2 positive; scores tie the positive 0 with the negative 1 at 0.5
    s = np.array([[0.5, 0.5, 0.9, 0.1]], dtype=np.float32)
    Y = sp.csr_matrix(np.array([[1, 0, 1, 0]]))
    got = O.objectives(torch.from_numpy(s), O.SplitLabels(Y), TARGETS)
    # pessimistic ranks 1 (0.9) and 3 (0.5 after the tied negative): DCG 1 + 1/2, IDCG 1 + 1/log2(3)
    assert got["ndcg"] == pytest.approx(1.5 / (1 + 1 / math.log2(3)), abs=1e-12)
    # predictions > 0.5: only label 2; micro tp 1, fp 0, fn 1 -> F1 2/3
    assert got["f1_micro"] == pytest.approx(2 / 3, abs=1e-12)
    # micro AUROC: positives 0.9 and 0.5 against negatives 0.5 and 0.1: (2 + 1.5) / 4
    assert got["auroc_micro"] == pytest.approx(3.5 / 4, abs=1e-12)
    assert got["f1_macro"] == pytest.approx(0.5, abs=1e-12)  # label 0: F1 0 (0.5 is not > 0.5); label 2: F1 1
    assert math.isnan(got["auroc_macro"])  # one row: no label has both classes


@pytest.fixture(scope="module")
def tree_data():
    """Real ICD-9-CM codes (a few leaves and all their ancestors), labels rolled up, bfloat16-logit scores."""
    rng = np.random.default_rng(0)
    pool = [c for c in icd9.all_codes() if icd9.is_billing(c)]
    leaves = sorted(rng.choice(pool, size=25, replace=False))
    codes = sorted(icd9.rollup(leaves))
    index = {c: i for i, c in enumerate(codes)}
    ctx = LabelContext.from_labels(codes, sp.csr_matrix((1, len(codes))))

    def split(n):
        y = np.zeros((n, len(codes)), dtype=np.int8)
        for i in range(n):
            for c in icd9.rollup(rng.choice(leaves, size=rng.integers(0, 4), replace=False)):
                y[i, index[c]] = 1
        return sp.csr_matrix(y), make_scores("bf16_logits", (n, len(codes)), rng)

    return ctx, split(90), split(130)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: "-".join(m))
@pytest.mark.parametrize("rule", ["rollup", "rolldown"])
def test_rules_equal_the_numpy_output_rules_bit_for_bit(tree_data, method, rule):
    ctx, (_, s), _ = tree_data
    how, device = method
    got = O.apply_rule(rule, torch.from_numpy(s).to(device), ctx.tree(), method=how).cpu().numpy()
    np.testing.assert_array_equal(got, make_output_rule(rule, ctx)(s))
    x = torch.from_numpy(s)
    assert O.apply_rule("identity", x, ctx.tree()) is x


@pytest.mark.parametrize("method", METHODS, ids=lambda m: "-".join(m))
def test_score_members_is_what_the_search_scored_before(tree_data, method):
    """Each member's value as numpy rules + target_score per member gave (the former search._scores)."""
    ctx, (Y_val, s_val), (Y_dev, s_dev) = tree_data
    members = [(f"{t}|identity", t, "identity") for t in TARGETS]
    members += [(f"{t}|{r}", t, r) for r in ("rollup", "rolldown") for t in ("ndcg", "auroc_macro", "f1_micro")]
    how, device = method
    threads = torch.get_num_threads()
    val, dev = O.score_members(torch.from_numpy(s_val).to(device), torch.from_numpy(s_dev).to(device),
                               O.SplitLabels(Y_val, device), O.SplitLabels(Y_dev, device), members, ctx.tree(),
                               method=how)
    assert torch.get_num_threads() == threads  # held at one on the numpy path only while it runs
    for got, Y, s in ((val, Y_val, s_val), (dev, Y_dev, s_dev)):
        ref = {}
        for key, target, rule in members:
            x = s if rule == "identity" else make_output_rule(rule, ctx)(s)
            ref[key] = target_score(target, Y, x)
        assert_same(got, ref)


def test_score_members_gives_none_for_undefined_values():
    Y = sp.csr_matrix(np.zeros((4, 3), dtype=np.int8))  # no positive: the areas and macro F1 are undefined
    s = torch.rand(4, 3)
    members = [(t, t, "identity") for t in TARGETS]
    val, dev = O.score_members(s, s, O.SplitLabels(Y), O.SplitLabels(Y), members, None)
    assert val == dev
    assert {k for k, v in val.items() if v is None} == {"f1_macro", "auprc_micro", "auprc_macro", "auroc_micro",
                                                         "auroc_macro"}
    assert val["ndcg"] == 0.0 and val["f1_micro"] == 0.0


@pytest.mark.parametrize("how", ["numpy", "torch"])
def test_bad_inputs_are_refused(how):
    Y = sp.csr_matrix(np.eye(3, dtype=np.int8))
    labels = O.SplitLabels(Y)
    s = torch.rand(3, 3)
    with pytest.raises(ValueError, match="0/1"):
        O.SplitLabels(sp.csr_matrix(2 * np.eye(3)))
    with pytest.raises(ValueError, match="shape"):
        O.objectives(torch.rand(3, 4), labels, ["ndcg"], method=how)
    with pytest.raises(TypeError, match="float32"):
        O.objectives(s.double(), labels, ["ndcg"], method=how)
    with pytest.raises(ValueError, match="unknown target"):
        O.objectives(s, labels, ["ndcg@15"], method=how)
    with pytest.raises(ValueError, match="unknown output rule"):
        O.apply_rule("rollsideways", s, None, method=how)
    with pytest.raises(ValueError, match="unknown method"):
        O.objectives(s, labels, ["ndcg"], method="jax")
    for bad in (math.nan, math.inf, -math.inf):
        x = s.clone()
        x[1, 2] = bad
        for targets in (["ndcg"], ["f1_micro"], TARGETS):
            with pytest.raises(ValueError, match="NaN or infinite"):
                O.objectives(x, labels, targets, method=how)
        with pytest.raises(ValueError, match="NaN or infinite"):
            O.score_members(x, s, labels, labels, [("ndcg", "ndcg", "identity")], None, method=how)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_predict_proba_tensor_gives_predict_probas_values(precision):
    from cacicd.models.network import build_mlp

    torch.manual_seed(0)
    X = sp.random(300, 40, density=0.1, format="csr", dtype=np.float32, random_state=0)
    model = build_mlp(40, 17, {"num_layers": 2, "units_0": 32, "dropout_0": 0.1})
    a = predict_proba(model, X, batch_size=64, precision=precision)
    b = predict_proba_tensor(model, X, batch_size=64, precision=precision)
    assert isinstance(b, torch.Tensor) and b.device == next(model.parameters()).device and b.dtype == torch.float32
    np.testing.assert_array_equal(b.numpy(), a)
