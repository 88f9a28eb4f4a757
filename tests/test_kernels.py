"""The fused training-step kernels (`cacicd.models.kernels`), compiled and eager, against independent formulas."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cacicd.models import kernels as K
from cacicd.models.network import Dropout, MixedLinear, low_precision

BACKENDS = {"compiled": lambda fn, eager, *a: K.run(fn, eager, *a), "eager": lambda fn, eager, *a: eager(*a)}


def _logits_targets(b=64, n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, n, generator=g) * 4 - 3
    z[0, :5] = torch.tensor([-90.0, -41.0, 0.0, 41.0, 90.0])  # tails, zero and both sides of softplus's threshold
    y = (torch.rand(b, n, generator=g) < 0.1).float()
    return z, y


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weighted", ["none", "weight", "both"])
def test_bce_terms_match_torch_in_float64(backend, weighted):
    """Σ of the pairs' losses to 1e-6 and their gradients (σ(z) − y)·f·scale to 1e-7 of torch's float64 BCE."""
    z, y = _logits_targets()
    n = z.shape[1]
    w = torch.rand(n) + 0.5 if weighted != "none" else None
    pw = torch.rand(n) * 5 if weighted == "both" else None
    pw1 = None if pw is None else w * (pw - 1)
    scale = torch.tensor(1.0 / z.numel())
    grad = torch.empty_like(z)
    total = BACKENDS[backend](K.bce_terms, K.bce_terms_eager, z, y, w, pw1, scale, grad)
    zd = z.double().requires_grad_()
    want = F.binary_cross_entropy_with_logits(zd, y.double(), weight=None if w is None else w.double(),
                                              pos_weight=None if pw is None else pw.double(), reduction="sum")
    want.backward()
    assert float(total) == pytest.approx(float(want), rel=1e-6)
    # σ(z) − 1 cancels in float32 where y = 1 and z is large: an absolute error of a float32 ulp of 1 times f
    f_max = 1.0 if w is None else float(w.max()) * (1.0 if pw is None else max(1.0, float(pw.max())))
    np.testing.assert_allclose(grad.numpy(), zd.grad.numpy() / z.numel(), rtol=1e-5, atol=2 ** -22 * f_max / z.numel())


def test_linear_bce_terms_is_bce_terms_of_the_logits():
    """The fused output-layer kernel: the loss of z = out + bias, its gradient rounded to bfloat16, its column sums."""
    z, y = _logits_targets(seed=1)
    out = z.bfloat16()
    bias = torch.randn(z.shape[1])
    scale = torch.tensor(1.0 / z.numel())
    for backend in BACKENDS.values():
        g_lp = torch.empty_like(out)
        total, colsum = backend(K.linear_bce_terms, K.linear_bce_terms_eager, out, bias, y, None, None, scale, g_lp)
        grad = torch.empty_like(z)
        want = K.bce_terms_eager(out.float() + bias, y, None, None, scale, grad)
        assert float(total) == pytest.approx(float(want), rel=1e-6)
        np.testing.assert_allclose(g_lp.float().numpy(), grad.bfloat16().float().numpy(), rtol=2 ** -7, atol=1e-12)
        np.testing.assert_allclose(colsum.numpy(), grad.sum(0).numpy(), rtol=1e-5, atol=1e-9)  # sums that cancel


def _keras_adam(w, grads, lr, eps=1e-7, b1=0.9, b2=0.999):
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
    return w


@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_kernel_steps_as_keras_and_writes_the_low_precision_copy(backend):
    """Keras 2.9's Adam in float32 (relative 2e-5 of a float64 reference), from a bfloat16 gradient; lp = bf16(p)."""
    rng = np.random.default_rng(0)
    w0 = np.zeros(500)  # the step does not depend on the weights: p holds the update in full precision
    grads = [(rng.normal(size=500) * 10.0 ** rng.integers(-6, 0, 500)) for _ in range(20)]
    grads = [torch.tensor(g, dtype=torch.float32).bfloat16() for g in grads]
    p, m, v = torch.tensor(w0, dtype=torch.float32), torch.zeros(500), torch.zeros(500)
    lp = torch.empty(500, dtype=torch.bfloat16)
    for t, g in enumerate(grads, 1):
        scalars = [torch.tensor(x) for x in (2e-4, 0.9, 0.999, 1e-7, 2e-4 / (1 - 0.9 ** t), math.sqrt(1 - 0.999 ** t))]
        BACKENDS[backend](K.adam, K.adam_eager, p, g, m, v, lp, torch.tensor(float(t)), *scalars)
    want = _keras_adam(w0, [g.double().numpy() for g in grads], 2e-4)
    np.testing.assert_allclose(p.double().numpy(), want, rtol=5e-5, atol=1e-12)  # float32 through 20 steps
    assert torch.equal(lp, p.bfloat16())


def test_element_wise_kernels_give_the_same_bits_on_any_thread_count():
    """Adam compiled for 1 and for 2 threads (its own graphs each): the same weights, moments and bfloat16 copy."""
    gen = torch.Generator().manual_seed(0)
    p0, g = torch.randn(70_000, generator=gen), (torch.randn(70_000, generator=gen) * 1e-3).bfloat16()
    threads, out = torch.get_num_threads(), {}
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            p, m, v, lp = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0), torch.empty_like(g)
            for t in range(1, 4):
                scalars = [torch.tensor(x) for x in (2e-4, 0.9, 0.999, 1e-7, 2e-4 / (1 - 0.9 ** t),
                                                     math.sqrt(1 - 0.999 ** t))]
                K.run(K.adam, K.adam_eager, p, g, m, v, lp, torch.tensor(float(t)), *scalars)
            out[n] = (p, m, v, lp)
    finally:
        torch.set_num_threads(threads)
    assert K.adam in K.ELEMENT_WISE and K.bce_terms not in K.ELEMENT_WISE
    assert K.variant(K.adam, 2).__code__ is not K.adam.__code__ and not K._failed
    assert all(torch.equal(a, b) for a, b in zip(out[1], out[2]))


def test_a_kernel_that_cannot_compile_runs_eagerly_with_a_warning(monkeypatch):
    """No C++ compiler (here: torch.compile raising): one warning, then the eager operators, same values."""
    def fn(z, y, w, pw1, scale, grad):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(K, "_compiled_fn", lambda f: fn)
    z, y = _logits_targets()
    scale, grad, want = torch.tensor(1.0 / z.numel()), torch.empty_like(z), torch.empty_like(z)
    with pytest.warns(RuntimeWarning, match="could not compile"):
        total = K.run(K.bce_terms, K.bce_terms_eager, z, y, None, None, scale, grad)
    assert float(total) == float(K.bce_terms_eager(z, y, None, None, scale, want)) and torch.equal(grad, want)
    K._failed.discard(K.bce_terms)


@pytest.mark.parametrize("weights", [False, True])
def test_fused_output_bce_is_the_output_layer_then_the_loss(weights):
    """MixedLinear.bce(h, y) = BCE of the layer's own logits, and the same gradients for h, W and b (bfloat16)."""
    from cacicd.models.losses import BCELoss

    torch.manual_seed(0)
    lin = MixedLinear(24, 40)
    h = torch.randn(16, 24)
    y = (torch.rand(16, 40) < 0.2).float()
    w = torch.rand(40) + 0.5 if weights else None
    pw = torch.rand(40) * 4 if weights else None
    ref = copy.deepcopy(lin)
    h1, h2 = h.clone().requires_grad_(), h.clone().requires_grad_()
    with low_precision(torch.bfloat16):
        assert lin.fuses_bce()
        fused = lin.bce(h1, y, w, pw)
        plain = BCELoss(None).bce(ref(h2), y, w, pw)
    fused.backward()
    plain.backward()
    assert float(fused) == pytest.approx(float(plain), rel=1e-6)
    # the fused path rounds the logits' gradient to bfloat16 once, as the unfused layer does with its input gradient
    torch.testing.assert_close(h1.grad, h2.grad, rtol=1e-2, atol=1e-6)
    torch.testing.assert_close(lin.weight.grad, ref.weight.grad, rtol=1e-2, atol=1e-6)
    torch.testing.assert_close(lin.bias.grad, ref.bias.grad, rtol=1e-5, atol=1e-9)


def test_dropout_keeps_one_minus_p_and_scales():
    """The mask keeps a fraction 1 − p of the units (binomial bounds) and scales them by 1 / (1 − p); eval: identity."""
    torch.manual_seed(0)
    d = Dropout(0.3)
    x = torch.ones(200, 500)
    out = d(x)
    kept = (out != 0).float().mean().item()
    assert abs(kept - 0.7) < 4 * math.sqrt(0.7 * 0.3 / x.numel())
    assert torch.allclose(out[out != 0], torch.tensor(1 / 0.7))
    assert torch.equal(d.eval()(x), x)


def test_trainings_of_any_label_count_and_batch_stay_compiled(recwarn):
    """Label counts, batch sizes, weights and precisions vary from one training to the next in a worker: every kernel
    stays compiled (dynamic shapes: no graph per label count, no fall-back to the eager twins past dynamo's limit)."""
    import scipy.sparse as sp

    from cacicd import icd9
    from cacicd.models import losses
    from cacicd.models.labels import LabelContext
    from cacicd.models.train import Trainer

    from torch._dynamo.eval_frame import _debug_get_cache_entry_list  # noqa: PLC2701 - the compiled graphs

    def graphs() -> dict[str, int]:  # of each kernel, all its thread counts' variants together
        return {f.__name__: sum(len(_debug_get_cache_entry_list(K.variant(f, t).__code__)) for t in (1, 2))
                for f in (K.bce_terms, K.linear_bce_terms, K.adam)}

    before = graphs()
    rng = np.random.default_rng(0)
    for i, (n_labels, n_rows, loss, precision) in enumerate([(5, 70, "bce", "bfloat16"), (9, 45, "irw", "bfloat16"),
                                                             (13, 83, "reweighted_bce", "float32"),
                                                             (7, 61, "bce", "bfloat16"), (11, 99, "focal", "bfloat16"),
                                                             (17, 52, "bce", "float32"), (6, 77, "irnw", "bfloat16"),
                                                             (21, 66, "bce", "bfloat16"), (8, 90, "bce", "bfloat16")]):
        X = sp.csr_matrix(rng.random((n_rows, 12)) < 0.3, dtype=np.float32)
        Y = sp.csr_matrix(rng.random((n_rows, n_labels)) < 0.3, dtype=np.float32)
        codes = [c for c in icd9.all_codes() if icd9.is_billing(c)][:n_labels]
        ctx = LabelContext.from_labels(codes, Y)
        params = {"num_layers": 2 + i % 2, "units_0": 8 + i, "units_1": 6, "dropout_0": 0.1, "dropout_1": 0.0}
        Trainer(X, Y, X[:10], Y[:10], params, losses.make_loss(loss, ctx), "ndcg", batch_size=16 + i, device="cpu",
                precision=precision).step()
    assert not K._failed and not [w for w in recwarn if "could not compile" in str(w.message)]
    # at most one graph per variant (weights or none, small or large, dtypes), none per label count or batch size
    assert all(graphs()[f] - before[f] <= 4 for f in before), (before, graphs())
