"""MLP structure (spec section 6) and the dummy model."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from cacicd.models import MLP, DummyModel, build_mlp, params_to_layers


def test_mlp_blocks_and_output_name():
    m = build_mlp(10, 7, {"num_layers": 3, "units_0": 8, "dropout_0": 0.2, "units_1": 4, "dropout_1": 0.0,
                          "batchnorm": True})
    kinds = [type(b).__name__ for b in m.hidden]
    assert kinds == ["SparseInputLinear", "BatchNorm1d", "ReLU", "Dropout", "Linear", "BatchNorm1d", "ReLU"]
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
