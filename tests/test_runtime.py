"""Inference / training timing on tiny models on the CPU, with a fake clock where exact values matter."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from cacicd.models.network import MLP
from cacicd.paper.runtime import (cpu_name, device_kind, device_name, predict_pass, summarize, summarize_training,
                            table_name,
                            time_inference, time_training_epochs)


@pytest.fixture
def tiny():
    rng = np.random.default_rng(0)
    X = sp.random(50, 8, density=0.3, format="csr", random_state=1, dtype=np.float32)
    Y = sp.csr_matrix((rng.random((50, 5)) < 0.3).astype(np.uint8))
    return X, Y


class Counting(nn.Module):
    """A plain (non-MLP) module that records the batch sizes it sees."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 5)
        self.seen: list[int] = []

    def forward(self, x):
        self.seen.append(x.shape[0])
        return self.lin(x)


def test_any_module_batches_cover_the_data(tiny):
    X, _ = tiny
    m = Counting()
    assert predict_pass(m, X, 16, "cpu") == 50
    assert m.seen == [16, 16, 16, 2]


def test_time_inference_rows_and_warmup(tiny):
    X, _ = tiny
    m = Counting()
    ticks = itertools.count(0.0, 0.5)  # every clock read advances 0.5 s: each timed pass lasts 0.5 s
    t = time_inference(m, X, [16, 64], repeats=3, warmup=1, device="cpu", clock=lambda: next(ticks))
    assert list(t.columns) == ["device", "device_kind", "precision", "batch_size", "repeat", "n_samples", "seconds"]
    assert (t.precision == "float32").all()
    assert len(t) == 6 and set(t.batch_size) == {16, 64} and (t.n_samples == 50).all()
    assert np.allclose(t.seconds, 0.5)
    # 4 passes (1 warm-up + 3) per batch size: 4*4 batches of 16, then 4*1 batch of 50
    assert m.seen == [16, 16, 16, 2] * 4 + [50] * 4
    assert (t.device_kind == "cpu").all() and t.device.iloc[0] == device_name("cpu")


def test_time_inference_mlp_sparse_path(tiny):
    X, _ = tiny
    mlp = MLP(8, 5, units=[6], dropout=[0.2])
    t = time_inference(mlp, X, [7], repeats=2, device="cpu")
    assert len(t) == 2 and (t.seconds > 0).all()


def test_summarize_matches_numpy():
    t = pd.DataFrame({"device": "x", "device_kind": "cpu", "precision": "float32", "batch_size": [16] * 3 + [64] * 3, "repeat": [0, 1, 2] * 2,
                      "n_samples": 100, "seconds": [1.0, 2.0, 4.0, 0.5, 0.5, 0.5]})
    s = summarize(t)
    assert list(s.batch_size) == [16, 64]
    assert s.mean_s.iloc[0] == pytest.approx(7 / 3)
    assert s.std_s.iloc[0] == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert s.std_s.iloc[1] == 0 and s.repeats.iloc[0] == 3
    assert s.samples_per_s.iloc[1] == pytest.approx(200)
    with pytest.raises(ValueError, match="seconds"):
        summarize(t.drop(columns="seconds"))


def test_training_epochs_leave_model_untouched(tiny):
    X, Y = tiny
    mlp = MLP(8, 5, units=[6], dropout=[0.0], batchnorm=True)
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    ticks = itertools.count(0.0, 2.0)
    t = time_training_epochs(mlp, X, Y, epochs=2, batch_size=16, device="cpu", clock=lambda: next(ticks))
    assert list(t.epoch) == [0, 1] and np.allclose(t.seconds, 2.0)
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())
    with pytest.raises(ValueError, match="rows"):
        time_training_epochs(mlp, X, Y[:10], device="cpu")


def test_bfloat16_timing_predicts_what_the_trainer_predicts(tiny):
    """precision="bfloat16" times the products the trainer's bfloat16 path computes, and says so in its rows."""
    from cacicd.models.train import predict_proba

    X, Y = tiny
    mlp = MLP(8, 5, units=[6], dropout=[0.0]).eval()
    t = time_inference(mlp, X, [7], repeats=1, device="cpu", precision="bfloat16")
    assert (t.precision == "bfloat16").all()
    seen = []
    mlp.register_forward_hook(lambda mod, inp, out: seen.append(out.detach().clone()))
    predict_pass(mlp, X, 64, "cpu", torch.bfloat16)
    ours = torch.sigmoid(seen[-1].float()).numpy()
    assert np.array_equal(ours, predict_proba(mlp, X, batch_size=64, device="cpu", precision="bfloat16"))
    tr = time_training_epochs(mlp, X, Y, epochs=1, batch_size=16, device="cpu", precision="bfloat16")
    assert list(tr.precision) == ["bfloat16"]
    with pytest.raises(ValueError, match="precision"):
        time_inference(mlp, X, [7], device="cpu", precision="float16")


def test_clear_errors(tiny):
    X, _ = tiny
    with pytest.raises(TypeError, match="nn.Module"):
        time_inference(object(), X, [4])
    with pytest.raises(TypeError, match="CSR"):
        time_inference(Counting(), X.toarray(), [4])
    with pytest.raises(ValueError, match="batch sizes"):
        time_inference(Counting(), X, [0])


def test_device_names_and_table_name(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Fake CPU 9000 @ 3.0GHz\n")
    assert cpu_name(info).startswith("Fake CPU 9000 @ 3.0GHz (")
    assert cpu_name(tmp_path / "missing")  # falls back to platform, never empty
    assert device_kind("cpu") == "cpu"
    t = pd.DataFrame({"device_kind": ["cpu", "cpu"]})
    assert table_name("runtime_inference", t) == "runtime_inference_cpu"
    with pytest.raises(ValueError, match="one device kind"):
        table_name("runtime_inference", pd.DataFrame({"device_kind": ["cpu", "cuda"]}))


def test_summarize_training_one_row():
    t = pd.DataFrame({"device": "x", "device_kind": "cpu", "precision": "float32", "epoch": [0, 1], "n_samples": 50,
                      "batch_size": 8, "seconds": [1.0, 3.0]})
    s = summarize_training(t)
    assert s.to_dict("records") == [{"device": "x", "device_kind": "cpu", "precision": "float32", "n_samples": 50,
                                     "batch_size": 8, "epochs": 2, "mean_s": 2.0, "std_s": pytest.approx(np.sqrt(2))}]
    with pytest.raises(ValueError, match="one run"):
        summarize_training(t.assign(batch_size=[8, 16]))
