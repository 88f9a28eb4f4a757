import numpy as np
import pytest
import torch
from torch import nn

from cacicd import icd9
from cacicd.models.labels import LabelContext
from cacicd.models.losses import (LOSS_SPACES, LOSSES, irnw_weights, irw_weights, make_loss, output_rule_for,
                                  reweighted_weights)

from test_outputs import ANC, CODES, DESC, EDGES, real_label_set, slow_sets

# One stay coded 0011 (so 001, 001-009, 001-139 too), one with no code.
Z = [[0.5, -1.0, 2.0, -3.0, 1.0, 0.0, 4.0], [0.3, -0.2, 1.5, 0.7, -2.0, 0.1, -0.4]]
Y = [[1, 1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0]]


def sig(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def np_bce(z, y, w0=1.0, w1=1.0):
    """Mean over all pairs of −[w1·y·log σ(z) + w0·(1−y)·log(1−σ(z))], in float64."""
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.mean(-(w1 * y * np.log(sig(z)) + w0 * (1 - y) * np.log(1 - sig(z)))))


def ctx_of(codes=CODES, counts=None, n_train=10):
    counts = np.zeros(len(codes), dtype=np.int64) if counts is None else np.asarray(counts)
    return LabelContext(list(codes), icd9.levels_of(codes), counts, n_train)


class Head(nn.Module):
    def __init__(self, h, n_labels):
        super().__init__()
        self.output = nn.Linear(h, n_labels)


def t(x, dtype=torch.float64, grad=False):
    return torch.tensor(x, dtype=dtype, requires_grad=grad)


def test_bce_unchanged_and_every_loss_registered():
    assert set(LOSSES) == {"bce", "reweighted_bce", "mcloss", "treemin", "hier_l2", "output_l2", "irw", "irnw", "focal"}
    loss = make_loss("bce", ctx_of())(t(Z), t(Y))
    assert loss.item() == pytest.approx(np_bce(Z, Y), rel=1e-12)


# ---- hierarchical losses: z̃ and gradients by hand -------------------------------------------------

def test_mcloss_constrained_logits_and_gradient_by_hand():
    z = t(Z, grad=True)
    loss_fn = make_loss("mcloss", ctx_of())
    zt = loss_fn.constrained_logits(z, t(Y))
    # stay 1: z̃_j = max over positive descendants if y_j = 1 else max over descendants
    assert zt[0].tolist() == [2.0, 2.0, 2.0, -3.0, 1.0, 4.0, 4.0]
    # stay 2 (no positive): plain max over descendants
    assert zt[1].tolist() == [1.5, 1.5, 1.5, 0.7, -2.0, 0.1, -0.4]
    loss = loss_fn(z, t(Y))
    assert loss.item() == pytest.approx(np_bce(zt.detach().numpy(), Y), rel=1e-12)
    loss.backward()
    n = 14
    g0 = np.zeros(7)
    g0[2] = 3 * (sig(2) - 1) / n  # z̃_0, z̃_1, z̃_2 all come from z_2
    g0[3] = sig(-3) / n
    g0[4] = (sig(1) - 1) / n
    g0[6] = 2 * sig(4) / n  # z̃_5, z̃_6
    g1 = np.zeros(7)
    g1[2] = 3 * sig(1.5) / n  # z̃_0, z̃_1, z̃_2
    g1[3] = sig(0.7) / n
    g1[4] = sig(-2) / n
    g1[5] = sig(0.1) / n
    g1[6] = sig(-0.4) / n
    np.testing.assert_allclose(z.grad.numpy(), [g0, g1], rtol=1e-12, atol=1e-15)
    assert output_rule_for("mcloss") == "rollup"


def test_treemin_constrained_logits_and_gradient_by_hand():
    z = t(Z, grad=True)
    loss_fn = make_loss("treemin", ctx_of())
    zt = loss_fn.constrained_logits(z, t(Y))
    # y_j = 1: min over ancestors; y_j = 0: max over descendants
    assert zt[0].tolist() == [0.5, -1.0, -1.0, -3.0, -1.0, 4.0, 4.0]
    assert zt[1].tolist() == [1.5, 1.5, 1.5, 0.7, -2.0, 0.1, -0.4]
    loss = loss_fn(z, t(Y))
    assert loss.item() == pytest.approx(np_bce(zt.detach().numpy(), Y), rel=1e-12)
    loss.backward()
    n = 14
    g0 = np.zeros(7)
    g0[0] = (sig(0.5) - 1) / n
    g0[1] = 3 * (sig(-1) - 1) / n  # z̃_1, z̃_2, z̃_4
    g0[3] = sig(-3) / n
    g0[6] = 2 * sig(4) / n
    np.testing.assert_allclose(z.grad.numpy()[0], g0, rtol=1e-12, atol=1e-15)
    assert output_rule_for("treemin") == "identity"


def slow_constrained(z, y, desc, anc, method):
    """z̃ by explicit loops over stays and labels from the sets D(j), A(j)."""
    out = np.empty_like(z)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            if method == "mcloss":
                ks = [k for k in desc[j] if y[i, k] == 1] if y[i, j] == 1 else desc[j]
                out[i, j] = max(z[i, k] for k in ks)
            else:
                out[i, j] = min(z[i, k] for k in anc[j]) if y[i, j] == 1 else max(z[i, k] for k in desc[j])
    return out


@pytest.mark.parametrize("method", ["mcloss", "treemin"])
def test_hierarchical_losses_on_random_small_batches_match_loops(method):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(20, 7))
    y = (rng.random((20, 7)) < 0.4).astype(float)  # also hierarchy-inconsistent targets
    want = slow_constrained(z, y, DESC, ANC, method)
    got = make_loss(method, ctx_of()).constrained_logits(t(z), t(y)).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("method", ["mcloss", "treemin"])
def test_hierarchical_losses_gradcheck(method):
    rng = np.random.default_rng(4)
    z = torch.tensor(rng.normal(size=(3, 7)), dtype=torch.float64, requires_grad=True)
    y = t(np.array([Y[0], Y[1], [1, 1, 0, 0, 0, 1, 1]], dtype=float))
    loss_fn = make_loss(method, ctx_of())
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, y), (z,))


@pytest.mark.parametrize("drop", [0.0, 0.3])
@pytest.mark.parametrize("method", ["mcloss", "treemin"])
def test_hierarchical_losses_equal_slow_reference_on_real_hierarchy(method, drop):
    codes = real_label_set(5, drop=drop)
    desc, anc = slow_sets(codes)
    index = {c: i for i, c in enumerate(codes)}
    rng = np.random.default_rng(6)
    leaves = [c for c in codes if not any(index[c] in desc[j] and j != index[c] for j in desc)]
    y = np.zeros((3, len(codes)))
    for i in range(3):  # rolled-up targets: random codes and their ancestors among the labels
        for c in rng.choice(leaves, 5, replace=False):
            y[i, list(anc[index[c]])] = 1
    z = rng.normal(size=y.shape)
    want = slow_constrained(z, y, desc, anc, method)
    loss_fn = make_loss(method, ctx_of(codes))
    np.testing.assert_array_equal(loss_fn.constrained_logits(t(z), t(y)).numpy(), want)
    assert loss_fn(t(z), t(y)).item() == pytest.approx(np_bce(want, y), rel=1e-12)


def test_hierarchical_losses_without_edges_equal_bce():
    codes = ["0010", "0011", "0020"]  # billing codes only: no edges among the labels
    ctx = ctx_of(codes)
    assert ctx.parent_idx.size == 0
    z, y = t([[0.3, -1.0, 2.0]]), t([[1.0, 0.0, 1.0]])
    for name in ("mcloss", "treemin"):
        assert make_loss(name, ctx)(z, y).item() == pytest.approx(np_bce(z, y), rel=1e-12)


# ---- re-weighted multitask ---------------------------------------------------------------------------

def test_reweighted_weights_by_hand():
    # levels: chapter, subchapter, 3digit, 4digit, 4digit, 3digit, 4digit -> groups of size 1, 1, 2, 3
    w = reweighted_weights(icd9.levels_of(CODES))
    raw = np.array([7 / 1, 7 / 1, 7 / 2, 7 / 3, 7 / 3, 7 / 2, 7 / 3])
    np.testing.assert_allclose(w, raw / raw.mean())
    assert w.mean() == pytest.approx(1.0)
    totals = [w[[0]].sum(), w[[1]].sum(), w[[2, 5]].sum(), w[[3, 4, 6]].sum()]
    np.testing.assert_allclose(totals, totals[0])
    loss = make_loss("reweighted_bce", ctx_of())(t(Z), t(Y))
    assert loss.item() == pytest.approx(np_bce(Z, Y, w0=w, w1=w), rel=1e-6)


def test_reweighted_groups_4_and_5_digit_codes_together():
    w = reweighted_weights(np.array(["chapter", "4digit", "5digit", "5digit"], dtype=object))
    np.testing.assert_allclose(w, np.array([4, 4 / 3, 4 / 3, 4 / 3]) / 2.0)
    np.testing.assert_allclose(reweighted_weights(np.array(["5digit"] * 4, dtype=object)), 1.0)


# ---- class imbalance ---------------------------------------------------------------------------------

COUNTS = [8, 6, 5, 2, 0, 1, 10]  # n_j, with N_train = 10


def test_irw_weights_by_hand():
    w0, w1 = irw_weights(COUNTS, 10, cap=5.0)
    np.testing.assert_allclose(w0, 1.0)
    # IR = 10/n − 1: 0.25, 2/3, 1, 4, inf (n=0 -> cap), 9 (-> cap), 0
    np.testing.assert_allclose(w1, [0.25, 2 / 3, 1.0, 4.0, 5.0, 5.0, 0.0])
    loss = make_loss("irw", ctx_of(counts=COUNTS), cap=5.0)(t(Z), t(Y))
    assert loss.item() == pytest.approx(np_bce(Z, Y, w0=w0, w1=w1), rel=1e-6)


def test_irnw_weights_by_hand():
    # COUNTS = [8, 6, 5, 2, 0, 1, 10], N_train = 10, cap 5: IRW w1 = [0.25, 2/3, 1, 4, 5 (cap), 5 (cap), 0]
    # divisor 1 + f(w1 − 1), f = n/10: [0.4, 0.8, 1.0, 1.6, 1.0, 1.4, 0 -> 1]; only w1 is divided (spec 9)
    w0, w1 = irnw_weights(COUNTS, 10, cap=5.0)
    np.testing.assert_array_equal(w0, np.ones(7))
    np.testing.assert_allclose(w1, [0.625, 0.8333333333333334, 1.0, 2.5, 5.0, 3.5714285714285716, 0.0], rtol=1e-15)
    loss = make_loss("irnw", ctx_of(counts=COUNTS), cap=5.0)(t(Z), t(Y))
    assert loss.item() == pytest.approx(np_bce(Z, Y, w0=w0, w1=w1), rel=1e-6)
    irw = make_loss("irw", ctx_of(counts=COUNTS), cap=5.0)(t(Z), t(Y))
    assert loss.item() != pytest.approx(irw.item())


def test_weighted_losses_equal_bce_when_weights_are_one():
    ctx = ctx_of(counts=[5] * 7)  # IR = 1 everywhere
    bce = np_bce(Z, Y)
    for name in ("irw", "irnw"):
        assert make_loss(name, ctx, cap=3.0)(t(Z), t(Y)).item() == pytest.approx(bce, rel=1e-6)
    assert make_loss("irw", ctx_of(counts=COUNTS), cap=1.0)(t(Z), t(Y)).item() != pytest.approx(bce)
    one_level = ctx_of(["0010", "0011", "0020"])
    z, y = t([[0.3, -1.0, 2.0]]), t([[1.0, 0.0, 1.0]])
    assert make_loss("reweighted_bce", one_level)(z, y).item() == pytest.approx(np_bce(z, y), rel=1e-6)


def test_focal_by_hand_and_gamma_zero_is_bce():
    z, y = np.array(Z), np.array(Y, dtype=float)
    assert make_loss("focal", ctx_of(), gamma=0.0)(t(z), t(y)).item() == pytest.approx(np_bce(z, y), rel=1e-12)
    p = sig(z)
    pt = np.where(y == 1, p, 1 - p)
    want = np.mean(-(1 - pt) ** 2.5 * np.log(pt))
    assert make_loss("focal", ctx_of(), gamma=2.5)(t(z), t(y)).item() == pytest.approx(want, rel=1e-10)


def test_focal_is_stable_at_extreme_logits():
    z = t([[-200.0, 200.0, -200.0, 200.0, 0, 0, 0]], dtype=torch.float32, grad=True)
    y = t([[1, 0, 0, 1, 1, 0, 1]], dtype=torch.float32)
    loss = make_loss("focal", ctx_of(), gamma=2.0)(z, y)
    loss.backward()
    # two confidently wrong pairs give ≈ 200 each, the three at z = 0 give 0.5² · log 2 each
    assert loss.item() == pytest.approx((400 + 3 * 0.25 * np.log(2)) / 7, rel=1e-6)
    assert torch.isfinite(z.grad).all()


# ---- output-layer penalties --------------------------------------------------------------------------

def test_hier_l2_penalty_by_hand():
    torch.manual_seed(0)
    model = Head(3, 7).double()
    w, b = model.output.weight.detach().numpy(), model.output.bias.detach().numpy()
    wb = np.hstack([w, b[:, None]])
    pen = sum(np.sum((wb[p] - wb[c]) ** 2) for p, c in EDGES)
    z, y = model.output(torch.ones(2, 3, dtype=torch.float64)), t(Y)
    loss = make_loss("hier_l2", ctx_of(), lam=1e-3)(z, y, model)
    assert loss.item() == pytest.approx(np_bce(z.detach().numpy(), Y) + 1e-3 * pen, rel=1e-12)
    # the penalty's gradient on W: 2·Σ over the edges touching the row
    make_loss("hier_l2", ctx_of(), lam=1.0).penalty(model).backward()
    g = np.zeros_like(w)
    for p, c in EDGES:
        g[p] += 2 * (w[p] - w[c])
        g[c] -= 2 * (w[p] - w[c])
    np.testing.assert_allclose(model.output.weight.grad.numpy(), g, rtol=1e-12)


def test_hier_l2_penalty_gradcheck():
    torch.manual_seed(1)
    model = Head(3, 7).double()
    loss_fn = make_loss("hier_l2", ctx_of(), lam=0.5)
    w = model.output.weight.detach().clone().requires_grad_(True)
    b = model.output.bias.detach().clone().requires_grad_(True)
    del model.output.weight, model.output.bias

    def penalty(w, b):
        model.output.weight, model.output.bias = w, b  # plain tensors in place of the parameters
        return loss_fn.penalty(model)

    assert torch.autograd.gradcheck(penalty, (w, b))


def test_output_l2_penalises_weights_not_bias():
    torch.manual_seed(0)
    model = Head(3, 7).double()
    with torch.no_grad():
        model.output.bias.fill_(100.0)
    w = model.output.weight.detach().numpy()
    loss = make_loss("output_l2", ctx_of(), lam=0.01)(t(Z), t(Y), model)
    assert loss.item() == pytest.approx(np_bce(Z, Y) + 0.01 * np.sum(w ** 2), rel=1e-12)


def test_penalties_need_the_model():
    for name in ("hier_l2", "output_l2"):
        with pytest.raises(ValueError, match="model whose `.output`"):
            make_loss(name, ctx_of())(t(Z), t(Y), None)
        with pytest.raises(ValueError, match="has 5 outputs"):
            make_loss(name, ctx_of())(t(Z), t(Y), Head(3, 5))


# ---- interface ---------------------------------------------------------------------------------------

def test_loss_spaces_match_spec_and_sampled_values_are_accepted():
    assert LOSS_SPACES == {
        "hier_l2": {"lam": ("loguniform", 1e-15, 5e-6)},
        "output_l2": {"lam": ("loguniform", 1e-14, 1e-4)},
        "irw": {"cap": ("loguniform", 1, 200)},
        "irnw": {"cap": ("loguniform", 1, 200)},
        "focal": {"gamma": ("uniform", 1, 4)},
    }
    ctx = ctx_of(counts=COUNTS)
    model = Head(3, 7)
    z, y = torch.randn(2, 7, requires_grad=True), t(Y, dtype=torch.float32)
    for name, space in LOSS_SPACES.items():
        for values in ({k: lo for k, (_, lo, hi) in space.items()}, {k: hi for k, (_, lo, hi) in space.items()}):
            loss = make_loss(name, ctx, **values)(z, y, model)
            assert loss.ndim == 0 and torch.isfinite(loss)


def test_bad_names_and_hyperparameters_are_clear_errors():
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        make_loss("nope", ctx_of())
    with pytest.raises(ValueError, match=r"loss 'focal' takes hyperparameters \['gamma'\], got \['lam'\]"):
        make_loss("focal", ctx_of(), lam=1.0)
    with pytest.raises(ValueError, match="takes hyperparameters none"):
        make_loss("mcloss", ctx_of(), gamma=1.0)
    with pytest.raises(ValueError, match="cap must be"):
        make_loss("irw", ctx_of(), cap=0.0)
    with pytest.raises(ValueError, match="train_counts has shape"):
        LabelContext(CODES, icd9.levels_of(CODES), np.zeros(3), 10)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_runs_in_float32_and_gives_finite_gradients(name):
    ctx = ctx_of(counts=COUNTS)
    model = Head(4, 7)
    z = model.output(torch.randn(5, 4))
    y = torch.tensor(np.random.default_rng(0).random((5, 7)) < 0.3, dtype=torch.float32)
    loss = make_loss(name, ctx)(z, y, model)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(model.output.weight.grad).all()


# ---- the softplus formulation against PyTorch's log-sigmoid formulas ----------------------------------

def old_bce(z, y, weight=None, pos_weight=None):
    """The formula the losses used before: PyTorch's BCE with logits (through log-sigmoid)."""
    return torch.nn.functional.binary_cross_entropy_with_logits(z, y, weight=weight, pos_weight=pos_weight)


def old_focal(z, y, gamma):
    """The focal loss as it was written with log-sigmoid."""
    sz = (2 * y - 1) * z
    log_pt = torch.nn.functional.logsigmoid(sz)
    return -(torch.exp(gamma * torch.nn.functional.logsigmoid(-sz)) * log_pt).mean()


def logits_and_targets(dtype, shape=(64, 300), seed=0):
    """Trained-looking logits (mostly negative, some extreme) and sparse 0/1 targets."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-4.0, 3.0, shape)
    z.flat[rng.choice(z.size, 40, replace=False)] = rng.choice([-120.0, -30.0, 25.0, 90.0], 40)
    y = (rng.random(shape) < 0.05).astype(float)
    y.flat[rng.choice(z.size, 20, replace=False)] = 1.0  # some of them on the extreme logits
    return torch.tensor(z, dtype=dtype), torch.tensor(y, dtype=dtype)


def value_and_grad(fn, z, y):
    z = z.clone().requires_grad_(True)
    loss = fn(z, y)
    loss.backward()
    return loss.detach(), z.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weights", ["none", "weight", "pos_weight", "both"])
def test_bce_equals_the_log_sigmoid_formula_with_its_gradient(dtype, weights):
    """softplus((1 − 2y)·z) with σ(z) − y as gradient: PyTorch's values and gradients to 1e-6."""
    from cacicd.models.losses import LogitLoss

    z, y = logits_and_targets(dtype)
    rng = np.random.default_rng(1)
    w = torch.tensor(rng.random(300) * 3, dtype=dtype) if weights in ("weight", "both") else None
    pw = torch.tensor(rng.random(300) * 20, dtype=dtype) if weights in ("pos_weight", "both") else None
    if pw is not None:
        pw[:3] = torch.tensor([0.0, 1.0, 200.0], dtype=dtype)
    new, g_new = value_and_grad(lambda a, b: LogitLoss().bce(a, b, w, pw), z, y)
    old, g_old = value_and_grad(lambda a, b: old_bce(a, b, w, pw), z, y)
    assert new.dtype == dtype and new.item() == pytest.approx(old.item(), rel=1e-6 if dtype == torch.float32 else 1e-13)
    torch.testing.assert_close(g_new, g_old, rtol=1e-6, atol=1e-6 * g_old.abs().max().item())
    z64, y64 = z.double(), y.double()  # both against float64
    exact = old_bce(z64, y64, None if w is None else w.double(), None if pw is None else pw.double()).item()
    assert new.item() == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0, 2.7, 4.0])
def test_focal_equals_the_log_sigmoid_formula_with_its_gradient(dtype, gamma):
    from cacicd.models.losses import LogitLoss

    z, y = logits_and_targets(dtype, seed=2)
    z = z.clamp(-80, 80)  # the old formula's exp(γ·log σ) has no finite gradient where σ underflows
    new, g_new = value_and_grad(lambda a, b: LogitLoss().focal(a, b, gamma), z, y)
    old, g_old = value_and_grad(lambda a, b: old_focal(a, b, gamma), z, y)
    assert new.item() == pytest.approx(old.item(), rel=1e-6)
    torch.testing.assert_close(g_new, g_old, rtol=1e-6, atol=1e-6 * g_old.abs().max().item())


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_equals_its_log_sigmoid_form(name):
    """Each registered loss, value and logits gradient, against its formula with PyTorch's BCE (1e-6)."""
    codes = real_label_set(4, drop=0.0)
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 40, len(codes))
    ctx = ctx_of(codes, counts=counts, n_train=40)
    z, y = logits_and_targets(torch.float32, shape=(16, len(codes)), seed=5)
    torch.manual_seed(0)
    model = Head(3, len(codes))
    params = {"hier_l2": {"lam": 1e-3}, "output_l2": {"lam": 1e-3}, "irw": {"cap": 7.0}, "irnw": {"cap": 7.0},
              "focal": {"gamma": 2.0}}.get(name, {})
    loss_fn = make_loss(name, ctx, **params)

    def old(a, b):
        if name == "focal":
            return old_focal(a, b, 2.0)
        if name in ("mcloss", "treemin"):
            return old_bce(loss_fn.constrained_logits(a, b), b)
        if name == "reweighted_bce":
            return old_bce(a, b, weight=loss_fn.weight)
        if name in ("irw", "irnw"):
            return old_bce(a, b, weight=loss_fn.weight, pos_weight=loss_fn.pos_weight)
        extra = (loss_fn.lam * loss_fn.penalty(model) if name == "hier_l2" else
                 loss_fn.lam * model.output.weight.square().sum() if name == "output_l2" else 0)
        return old_bce(a, b) + extra

    if name == "focal":
        z = z.clamp(-80, 80)
    new, g_new = value_and_grad(lambda a, b: loss_fn(a, b, model), z, y)
    ref, g_ref = value_and_grad(old, z, y)
    assert new.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(g_new, g_ref, rtol=1e-6, atol=1e-6 * g_ref.abs().max().item())


def test_reused_temporaries_never_mix_two_live_graphs():
    """Two losses alive at once, a retained graph, no-grad calls and copies: each gradient is its own."""
    import copy
    import pickle

    from cacicd.models.losses import LogitLoss

    loss_fn = LogitLoss()
    z1, y1 = logits_and_targets(torch.float32, seed=7)
    z2, y2 = logits_and_targets(torch.float32, seed=8)
    a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    (loss_fn.bce(a, y1) + 2 * loss_fn.bce(b, y2)).backward()  # both graphs hold temporaries at once
    _, g1 = value_and_grad(old_bce, z1, y1)
    _, g2 = value_and_grad(old_bce, z2, y2)
    torch.testing.assert_close(a.grad, g1)
    torch.testing.assert_close(b.grad, 2 * g2)
    c = z1.clone().requires_grad_(True)
    loss = loss_fn.bce(c, y1)
    loss.backward(retain_graph=True)
    with torch.no_grad():
        loss_fn.bce(z2, y2)  # reuses a free set in between
    loss_fn.bce(z2.clone().requires_grad_(True), y2).backward()
    loss.backward()
    torch.testing.assert_close(c.grad, 2 * g1)
    for other in (copy.deepcopy(loss_fn), pickle.loads(pickle.dumps(loss_fn))):
        assert other.bce(z1, y1).item() == loss_fn.bce(z1, y1).item()
    with pytest.raises(ValueError, match="targets of shape"):
        loss_fn.bce(z1, y1[:3])


def test_losses_allocate_no_large_tensor_per_batch():
    """In a training loop the loss's temporaries alternate between two sets: no new (B, L) tensor per batch."""
    from cacicd.models.losses import LogitLoss

    loss_fn = LogitLoss()
    lend = loss_fn.scratch.lend
    used = []

    def spy(like, n):
        loan = lend(like, n)
        used.append(tuple(t.data_ptr() for t in loan.tensors))
        return loan

    loss_fn.scratch.lend = spy
    z, y = logits_and_targets(torch.float32)
    x = z.clone().requires_grad_(True)
    for _ in range(8):  # as the trainer: the previous batch's loss lives until the next one replaces it
        loss = loss_fn.bce(x, y, pos_weight=torch.full((300,), 2.0))
        x.grad = None
        loss.backward()
    assert len(used) == 8 and len(set(used)) == 2
