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
