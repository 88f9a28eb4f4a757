"""MLP structure (spec section 6) and the dummy model."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from cacicd.models.network import MLP, DummyModel, MixedLinear, SparseInputLinear, build_mlp, low_precision, params_to_layers


def test_mlp_blocks_and_output_name():
    m = build_mlp(10, 7, {"num_layers": 3, "units_0": 8, "dropout_0": 0.2, "units_1": 4, "dropout_1": 0.0,
                          "batchnorm": True})
    kinds = [type(b).__name__ for b in m.hidden]
    assert kinds == ["SparseInputLinear", "BatchNorm1d", "ReLU", "Dropout", "MixedLinear", "BatchNorm1d", "ReLU"]
    assert isinstance(m.output, nn.Linear) and (m.output.in_features, m.output.out_features) == (4, 7)
    assert m(torch.zeros(5, 10)).shape == (5, 7)


def test_one_layer_is_logistic_regression():
    m = MLP(6, 3)
    x = torch.randn(4, 6)
    expected = x @ m.output.weight.T + m.output.bias
    torch.testing.assert_close(m(x), expected)
    assert len(m.hidden) == 0


def test_bad_params_are_named():
    with pytest.raises(ValueError, match="units_1"):
        params_to_layers({"num_layers": 3, "units_0": 8})
    with pytest.raises(ValueError, match="dropout"):
        MLP(4, 2, [3], [1.2])


def test_dummy_is_training_frequency():
    Y = sp.csr_matrix(np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0], [1, 0, 0]], dtype=np.uint8))
    p = DummyModel.fit(Y).predict(2)
    np.testing.assert_allclose(p, [[1, 0.25, 0.25]] * 2)
    assert p.dtype == np.float32


def _csr(x: torch.Tensor) -> torch.Tensor:
    return x.to_sparse_csr()


def test_sparse_first_layer_is_a_weighted_bag_matching_dense():
    """Embedding-bag of the active inputs (with float values, e.g. age) = dense x W^T + b, values and grads."""
    torch.manual_seed(0)
    lin = SparseInputLinear(12, 5)
    assert lin.weight.shape == (5, 12) and lin.weight.t().is_contiguous()  # input-major storage
    x = (torch.rand(6, 12) < 0.3).float()
    x[:, 0] = torch.rand(6)  # a float column
    x[3] = 0  # an empty row
    out_sparse = lin(_csr(x))
    (out_sparse ** 2).sum().backward()
    g_sparse = lin.weight.grad.clone()
    lin.weight.grad = None
    expected = x @ lin.weight.detach().T + lin.bias.detach()
    torch.testing.assert_close(out_sparse.detach(), expected, rtol=1e-6, atol=1e-6)
    (lin(x) ** 2).sum().backward()
    torch.testing.assert_close(g_sparse, lin.weight.grad, rtol=1e-5, atol=1e-6)


def test_state_dict_is_plain_linear_layers():
    """Keys and shapes as nn.Linear (saved models load into MLP); the bf16 cache is not state."""
    import copy
    import pickle

    m = MLP(10, 7, [8, 4], [0.0, 0.0])
    with low_precision():
        m(torch.rand(3, 10))  # builds the low-precision copies
    sd = m.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == {
        "hidden.0.weight": (8, 10), "hidden.0.bias": (8,), "hidden.2.weight": (4, 8), "hidden.2.bias": (4,),
        "output.weight": (7, 4), "output.bias": (7,)}
    plain = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 7))
    m.load_state_dict({k: v for k, v in zip(sd, plain.state_dict().values())})
    x = torch.rand(3, 10)
    torch.testing.assert_close(m(x), plain(x))
    assert m.output._shadow is not None
    assert copy.deepcopy(m).output._shadow is None and pickle.loads(pickle.dumps(m)).output._shadow is None


def test_mixed_linear_matches_bfloat16_autocast_values_and_grads():
    """bf16 forward and the float32 weight gradient agree with torch.autocast's bf16 linear."""
    torch.manual_seed(1)
    lin = MixedLinear(64, 48)
    x = torch.randn(16, 64, requires_grad=True)
    g = torch.randn(16, 48)
    with low_precision(torch.bfloat16):
        out = lin(x)
    assert out.dtype == torch.float32
    out.backward(g)
    gw, gb, gx = lin.weight.grad.clone(), lin.bias.grad.clone(), x.grad.clone()
    assert gw.dtype == torch.float32
    lin.weight.grad = lin.bias.grad = x.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = torch.nn.functional.linear(x, lin.weight, lin.bias)
    ref.float().backward(g)
    torch.testing.assert_close(out.detach(), ref.detach().float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gw, lin.weight.grad, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gb, g.sum(0))
    torch.testing.assert_close(gx, x.grad.float(), rtol=2e-2, atol=2e-2)
    exact = x.detach() @ lin.weight.detach().T + lin.bias.detach()  # bf16 is close to float32
    assert (out.detach() - exact).abs().max() < 0.05 * exact.abs().max()


def test_mixed_linear_accumulates_with_other_uses_of_its_weight():
    """A penalty on the same weight (losses' hier_l2/output_l2) adds to the bf16 path's gradient, each step anew."""
    torch.manual_seed(2)
    lin = MixedLinear(8, 5)
    x, g = torch.randn(4, 8), torch.randn(4, 5)
    for _ in range(2):  # the second step must not keep the first one's gradient
        lin.weight.grad = None
        with low_precision(torch.bfloat16):
            out = lin(x)
        ((out * g).sum() + (lin.weight ** 2).sum()).backward()
        w16 = lin.weight.detach().bfloat16().float()
        expected = (g.bfloat16().float().T @ x.bfloat16().float()) + 2 * lin.weight.detach()
        torch.testing.assert_close(lin.weight.grad, expected, rtol=1e-2, atol=1e-2)
        assert torch.equal(lin._shadow.weight.float(), w16)
    lin.weight.grad = torch.zeros_like(lin.weight)  # zero_grad(set_to_none=False) also works
    with low_precision(torch.bfloat16):
        (lin(x) * g).sum().backward()
    torch.testing.assert_close(lin.weight.grad, g.bfloat16().float().T @ x.bfloat16().float(), rtol=1e-2, atol=1e-2)


def test_low_precision_copy_follows_the_weights():
    """The bf16 copy is rebuilt after a fused optimizer step (no version bump), load_state_dict and eval()."""
    torch.manual_seed(3)
    m = MLP(6, 4, [5], [0.0])
    x = torch.rand(3, 6)

    def run(model):
        with torch.no_grad(), low_precision(torch.bfloat16):
            return model(x)

    def fresh_copy():
        other = MLP(6, 4, [5], [0.0])
        other.load_state_dict(m.state_dict())
        return run(other.eval())

    m.eval()
    run(m)
    opt = torch.optim.Adam(m.parameters(), lr=0.1, fused=True)
    m.train()
    with low_precision(torch.bfloat16):
        m(x).sum().backward()
    opt.step()
    m.eval()  # the fused step left versions unchanged; eval() forgets the copy
    torch.testing.assert_close(run(m), fresh_copy(), rtol=0, atol=0)
    m.load_state_dict(MLP(6, 4, [5], [0.0]).state_dict())  # in eval mode: version bump
    torch.testing.assert_close(run(m), fresh_copy(), rtol=0, atol=0)
    with pytest.raises(ValueError, match="dtype"):
        with low_precision(torch.float16):
            pass


def _linears(m: MLP) -> list[nn.Linear]:
    return [x for x in m.modules() if isinstance(x, nn.Linear)]


def test_initialisation_is_keras_glorot_uniform_with_zero_biases():
    """Every linear layer as Keras's Dense: weights U(-b, b), b = sqrt(6 / (fan_in + fan_out)), biases 0."""
    torch.manual_seed(0)
    m = MLP(300, 200, [400, 250], [0.0, 0.0])
    layers = _linears(m)
    assert [type(x).__name__ for x in layers] == ["SparseInputLinear", "MixedLinear", "MixedLinear"]
    for lin in layers + [SparseInputLinear(500, 100), MixedLinear(100, 700)]:
        fan_out, fan_in = lin.weight.shape
        bound = (6 / (fan_in + fan_out)) ** 0.5
        w = lin.weight.detach()
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.99 * bound  # uses the whole range (not torch's 1/sqrt(fan_in))
        assert float(w.var()) == pytest.approx(bound ** 2 / 3, rel=0.03)  # variance of U(-b, b)
        assert float(w.mean()) == pytest.approx(0, abs=0.01 * bound)
        assert lin.bias is not None and torch.count_nonzero(lin.bias) == 0


def test_batchnorm_as_keras_and_no_bias_before_it():
    """Hidden layers lose their bias under batchnorm (the authors' use_bias=not batchnorm); BatchNormalization
    momentum 0.99 (torch 0.01) and epsilon 1e-3; the output keeps its bias; dense, sparse and bfloat16 paths run."""
    torch.manual_seed(0)
    m = build_mlp(10, 7, {"num_layers": 3, "units_0": 8, "dropout_0": 0.2, "units_1": 4, "dropout_1": 0.2,
                          "batchnorm": True})
    hidden = [x for x in m.hidden if isinstance(x, nn.Linear)]
    assert [x.bias for x in hidden] == [None, None] and m.output.bias is not None
    bns = [x for x in m.hidden if isinstance(x, nn.BatchNorm1d)]
    assert len(bns) == 2 and all(b.momentum == 0.01 and b.eps == 1e-3 for b in bns)
    assert all(x.bias is not None for x in _linears(build_mlp(10, 7, {"num_layers": 2, "units_0": 8})))
    x = (torch.rand(6, 10) < 0.4).float()
    with low_precision(torch.bfloat16):  # MixedLinear without a bias: training (autograd) and inference
        m(_csr(x)).sum().backward()
        assert m.hidden[4].weight.grad is not None and m.output.bias.grad is not None
        m.eval()
        with torch.no_grad():
            low = m(_csr(x)).float()
    torch.testing.assert_close(m(x), m(_csr(x)))
    torch.testing.assert_close(low, m(x), rtol=0.05, atol=0.05)


def test_saved_batchnorm_model_reloads(tmp_path):
    """A model without hidden biases goes through state_dict, results.save_result and RunResult.load_model."""
    import pandas as pd

    from cacicd.experiments.results import RunResult, save_result

    torch.manual_seed(1)
    m = MLP(12, 5, [6, 3], [0.1, 0.1], batchnorm=True)
    assert "hidden.0.bias" not in m.state_dict() and "hidden.1.running_var" in m.state_dict()
    with torch.no_grad():
        for b in (x for x in m.hidden if isinstance(x, nn.BatchNorm1d)):
            b.running_mean.uniform_(-1, 1)
            b.running_var.uniform_(0.5, 2)
    again = MLP(12, 5, **m.config)
    again.load_state_dict(m.state_dict())
    r = RunResult("x", "smoke", 0, "h", [f"c{i}" for i in range(5)], np.arange(3), np.zeros((3, 5), np.float32),
                  pd.DataFrame(), pd.DataFrame())
    save_result(tmp_path, r, {"experiment": "x", "profile": "smoke", "fold": 0, "dataset_hash": "h"}, m)
    r.path = tmp_path
    loaded = r.load_model()
    x = torch.rand(4, 12)
    m.eval()
    torch.testing.assert_close(loaded(x), m(x))
    torch.testing.assert_close(again.eval()(x), m(x))
