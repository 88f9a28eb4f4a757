"""Training loop: learning, early stopping, determinism, plug-in losses and output rules.

Also holds the helpers the other engine tests import: a small random Dataset over real ICD-9 codes
and random folds.
"""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cacicd import icd9
from cacicd.data.dataset import Dataset
from cacicd.models.labels import LabelContext


def make_dataset(n: int = 600, n_ingredients: int = 60, n_leaves: int = 80, seed: int = 0) -> Dataset:
    """A random Dataset whose leaves depend on the ingredients; real ICD-9 codes rolled up."""
    rng = np.random.default_rng(seed)
    pool = [c for c in icd9.all_codes() if icd9.is_billing(c)]
    leaves = sorted(rng.choice(pool, size=n_leaves, replace=False))
    drugs = (rng.random((n, n_ingredients)) < 0.08).astype(np.float32)
    causes = np.zeros((n_ingredients, n_leaves))
    causes[rng.integers(0, n_ingredients, (2, n_leaves)), np.arange(n_leaves)] = 1  # 2 causes per leaf
    logits = -5.0 + 7.0 * (drugs @ causes > 0)
    has = rng.random((n, n_leaves)) < 1 / (1 + np.exp(-logits))
    rows = [icd9.rollup([leaves[j] for j in np.flatnonzero(h)]) for h in has]
    codes = sorted(set().union(*rows))
    index = {c: i for i, c in enumerate(codes)}
    Y = sp.lil_matrix((n, len(codes)), dtype=np.uint8)
    for i, r in enumerate(rows):
        for c in r:
            Y[i, index[c]] = 1
    sex = rng.integers(0, 2, n).astype(np.float32)
    age = rng.random(n).astype(np.float32)
    X = sp.csr_matrix(np.column_stack([sex, age, drugs]).astype(np.float32))
    return Dataset(X, Y.tocsr(), ["sex", "age"] + [f"ing{i}" for i in range(n_ingredients)], codes,
                   np.arange(n) + 1000, np.arange(n) // 2, np.array(["medical"] * n, dtype=object), "random")


def fake_splits(dataset: Dataset, n_folds: int = 3, frac: float = 0.2, seed: int = 0):
    """Random folds (not `cacicd.data.splits`'): fold k -> (train, dev, test) index arrays."""
    out = []
    for k in range(n_folds):
        perm = np.random.default_rng(seed + k).permutation(dataset.n_stays)
        m = int(frac * dataset.n_stays)
        out.append((np.sort(perm[2 * m:]), np.sort(perm[:m]), np.sort(perm[m:2 * m])))
    return out


@pytest.fixture(scope="module")
def data():
    ds = make_dataset()
    tr, dv, te = fake_splits(ds)[0]
    return ds, tr, dv, te


PARAMS = {"num_layers": 2, "units_0": 32, "dropout_0": 0.1, "batchnorm": False}


def _train(data, seed=0, params=PARAMS, loss="bce", target="ndcg", **kw):
    from cacicd.models import losses
    from cacicd.models.train import train

    ds, tr, dv, _ = data
    ctx = LabelContext.from_labels(ds.codes, ds.Y[tr])
    kw = {"max_epochs": 4, "lr": 3e-3, "batch_size": 64, "patience": 2, "device": "cpu", **kw}
    return train(ds.X[tr], ds.Y[tr], ds.X[dv], ds.Y[dv], params, losses.make_loss(loss, ctx), target, seed=seed, **kw)


def test_torch_threads_holds_the_count_for_the_block_only():
    from cacicd.config import cpu_count
    from cacicd.models.train import torch_threads

    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads() as n:
        assert n == torch.get_num_threads() == cpu_count()
    assert torch.get_num_threads() == before


def test_training_learns_beyond_dummy(data):
    from cacicd.models.network import DummyModel
    from cacicd.models.train import predict_proba, target_score

    ds, tr, dv, te = data
    res = _train(data, max_epochs=12, params={"num_layers": 1}, lr=1e-2)
    p = predict_proba(res.model, ds.X[te])
    assert p.shape == (len(te), len(ds.codes)) and p.dtype == np.float32
    dummy = DummyModel.fit(ds.Y[tr]).predict(len(te))
    assert target_score("auroc_macro", ds.Y[te], p) > target_score("auroc_macro", ds.Y[te], dummy) + 0.1
    assert target_score("ndcg", ds.Y[te], p) > target_score("ndcg", ds.Y[te], dummy) + 0.05
    assert [h["epoch"] for h in res.history] == list(range(1, len(res.history) + 1))
    assert res.best_value == max(h["dev"] for h in res.history)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_cpu_training_is_deterministic(data, precision):
    from cacicd.models.train import predict_proba

    ds, _, _, te = data
    params = {"num_layers": 3, "units_0": 32, "dropout_0": 0.3, "units_1": 16, "dropout_1": 0.2, "batchnorm": True}
    runs = [_train(data, seed=s, params=params, precision=precision, max_epochs=2).model for s in (3, 3, 4)]
    a, b, c = (predict_proba(m, ds.X[te], precision=precision) for m in runs)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_early_stopping_keeps_best_epoch(data, monkeypatch):
    """A scripted dev curve: stop `patience` epochs after the best, and restore the best epoch's weights."""
    from cacicd.models import train as T

    curve = iter([0.1, 0.5, 0.3, 0.2, 0.9, 0.95])
    snapshots = []
    real_step = T.Trainer.train_epoch

    def fake_score(target, y, p):
        return next(curve)

    def spy(self):
        out = real_step(self)
        snapshots.append({k: v.clone() for k, v in self.model.state_dict().items()})
        return out

    monkeypatch.setattr(T, "target_score", fake_score)
    monkeypatch.setattr(T.Trainer, "train_epoch", spy)
    res = _train(data, max_epochs=6, patience=2)
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]  # best at 2, stop after 2 worse epochs
    assert res.best_epoch == 2 and res.best_value == 0.5
    for k, v in res.model.state_dict().items():
        assert torch.equal(v, snapshots[1][k])


def test_logistic_regression_and_plugin_losses(data):
    """num_layers=1 has no hidden layer; every registered loss trains through the same loop."""
    from cacicd.models import losses
    from cacicd.models.train import predict_proba

    ds, _, _, te = data
    res = _train(data, params={"num_layers": 1}, max_epochs=2)
    assert len(res.model.hidden) == 0 and res.model.output.in_features == ds.X.shape[1]
    for name in sorted(losses.LOSSES):
        res = _train(data, loss=name, max_epochs=1, params=PARAMS)
        assert np.isfinite(res.history[0]["loss"]), name
        assert np.isfinite(predict_proba(res.model, ds.X[te])).all()


def test_output_rule_applies_to_dev_scores(data, monkeypatch):
    """The dev metric is computed on the post-processed probabilities."""
    from cacicd.models import train as T

    seen = []
    monkeypatch.setattr(T, "target_score", lambda t, y, p: seen.append(p.copy()) or 0.5)
    _train(data, max_epochs=1, output_rule=lambda p: np.zeros_like(p))
    assert len(seen) == 1 and not seen[0].any()


def test_sparse_and_dense_first_layer_agree(data):
    from cacicd.models.network import MLP
    from cacicd.models.train import to_tensor

    ds = data[0]
    torch.manual_seed(0)
    m = MLP(ds.X.shape[1], 7, [16], [0.0]).eval()
    xs = ds.X[:50]
    with torch.no_grad():
        a = m(to_tensor(xs, torch.device("cpu"), sparse=True))
        b = m(to_tensor(xs, torch.device("cpu"), sparse=False))
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_bad_input_is_named(data):
    ds, tr, dv, _ = data
    from cacicd.models import losses
    from cacicd.models.train import train

    ctx = LabelContext.from_labels(ds.codes, ds.Y[tr])
    with pytest.raises(ValueError, match="target metric"):
        train(ds.X[tr], ds.Y[tr], ds.X[dv], ds.Y[dv], PARAMS, losses.make_loss("bce", ctx), "accuracy")
    with pytest.raises(ValueError, match="rows"):
        train(ds.X[tr], ds.Y[dv], ds.X[dv], ds.Y[dv], PARAMS, losses.make_loss("bce", ctx), "ndcg")


def test_device_rows_cut_batches_like_scipy():
    """take (any rows), span (contiguous rows) and dense agree with scipy slicing, empty rows included."""
    from cacicd.models.train import DeviceRows

    rng = np.random.default_rng(0)
    X = sp.random(40, 30, density=0.1, format="csr", dtype=np.float32, random_state=1)
    scale = rng.random((40, 1)) + 0.5
    scale[5] = 0  # an empty row
    X = sp.csr_matrix(X.multiply(scale), dtype=np.float32)
    X.eliminate_zeros()
    rows = DeviceRows(X, "cpu")
    idx = np.array([0, 5, 7, 8, 39])
    part = rows.take(torch.from_numpy(idx), rows.nnz(idx))
    np.testing.assert_array_equal(rows.dense(part).numpy(), X[idx].toarray())
    np.testing.assert_array_equal(rows.sparse(part).to_dense().numpy(), X[idx].toarray())
    np.testing.assert_array_equal(rows.dense(rows.span(3, 11)).numpy(), X[3:11].toarray())
    dup = sp.csr_matrix((np.array([1.0, 2.0], np.float32), np.array([2, 2]), np.array([0, 2, 2])), shape=(2, 4))
    np.testing.assert_array_equal(DeviceRows(dup, "cpu").dense(DeviceRows(dup, "cpu").span(0, 2)).numpy(),
                                  dup.toarray())  # duplicates summed, as scipy does


def test_precision_names_and_detection():
    from cacicd.config import Profile
    from cacicd.models.train import native_bfloat16, resolve_precision

    assert resolve_precision("float32", "cpu") == torch.float32
    assert resolve_precision("bfloat16", "cpu") == torch.bfloat16
    assert resolve_precision("auto", "cpu") == (torch.bfloat16 if native_bfloat16("cpu") else torch.float32)
    assert native_bfloat16("meta") is False
    with pytest.raises(ValueError, match="'float16'"):
        resolve_precision("float16", "cpu")
    with pytest.raises(ValueError, match="precision 'half'"):
        Profile(name="x", n_stays=1, precision="half")
    assert Profile(name="x", n_stays=1).precision == "auto"


def test_precision_environment_override(monkeypatch):
    from cacicd.config import PROFILES, get_profile

    monkeypatch.setenv("CACICD_PRECISION", "float32")
    assert get_profile("smoke").precision == "float32" and PROFILES["smoke"].precision == "auto"
    monkeypatch.setenv("CACICD_PRECISION", "fp8")
    with pytest.raises(ValueError, match="'fp8'"):
        get_profile("smoke")


def test_train_epoch_returns_the_mean_training_loss(data):
    """lr=0, no dropout, float32: the epoch's mean loss is the BCE of the untrained model on the whole set."""
    from cacicd.models import losses
    from cacicd.models.network import MLP
    from cacicd.models.train import Trainer

    ds, tr, dv, _ = data
    ctx = LabelContext.from_labels(ds.codes, ds.Y[tr])
    t = Trainer(ds.X[tr], ds.Y[tr], ds.X[dv], ds.Y[dv], {"num_layers": 2, "units_0": 16, "dropout_0": 0.0},
                losses.make_loss("bce", ctx), "ndcg", lr=0.0, batch_size=64, device="cpu", precision="float32")
    x = torch.from_numpy(ds.X[tr].toarray())
    y = torch.from_numpy(ds.Y[tr].toarray().astype(np.float32))
    with torch.no_grad():
        expected = torch.nn.functional.binary_cross_entropy_with_logits(t.model(x), y).item()
    assert t.train_epoch() == pytest.approx(expected, rel=1e-5)
    assert isinstance(t.model, MLP)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_model_parameters_are_the_source_of_truth(data, precision):
    """load_state_dict on trainer.model (right after construction or after epochs) is what predicts and trains."""
    from cacicd.models import losses
    from cacicd.models.network import build_mlp
    from cacicd.models.train import Trainer, predict_proba

    ds, tr, dv, te = data
    ctx = LabelContext.from_labels(ds.codes, ds.Y[tr])

    def trainer(seed):
        return Trainer(ds.X[tr], ds.Y[tr], ds.X[dv], ds.Y[dv], PARAMS, losses.make_loss("bce", ctx), "ndcg",
                       lr=3e-3, batch_size=64, device="cpu", seed=seed, precision=precision)

    donor = trainer(1)
    donor.train_epoch()
    state = {k: v.clone() for k, v in donor.model.state_dict().items()}
    t = trainer(2)
    t.train_epoch()  # builds its low-precision copies from its own weights
    t.model.load_state_dict(state)
    plain = build_mlp(ds.X.shape[1], len(ds.codes), PARAMS)
    plain.load_state_dict(state)
    want = predict_proba(plain, ds.X[te], precision=precision)
    np.testing.assert_array_equal(predict_proba(t.model, ds.X[te], precision=precision), want)
    np.testing.assert_array_equal(t.dev_scores(), predict_proba(plain, ds.X[dv], precision=precision))
    assert t.train_epoch() > 0 and not np.array_equal(predict_proba(t.model, ds.X[te], precision=precision), want)


def test_bfloat16_predictions_close_to_float32(data):
    """The same trained weights score alike in both precisions (bf16 has 8 mantissa bits)."""
    from cacicd.models.train import predict_proba, target_score

    ds, _, _, te = data
    model = _train(data, max_epochs=3).model
    p32 = predict_proba(model, ds.X[te], precision="float32")
    p16 = predict_proba(model, ds.X[te], precision="bfloat16")
    assert p16.dtype == np.float32 and p16.shape == p32.shape
    np.testing.assert_allclose(p16, p32, atol=0.02)
    assert abs(target_score("ndcg", ds.Y[te], p16) - target_score("ndcg", ds.Y[te], p32)) < 0.01


def test_dense_input_path_matches_sparse(data):
    from cacicd.models.train import predict_proba

    ds, _, _, te = data
    model = _train(data, max_epochs=1).model
    a = predict_proba(model, ds.X[te], precision="float32", sparse_input=True)
    b = predict_proba(model, ds.X[te], precision="float32", sparse_input=False)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _keras_adam_reference(w0: np.ndarray, grads: list[np.ndarray], lr: float, eps: float = 1e-7,
                          b1: float = 0.9, b2: float = 0.999) -> np.ndarray:
    """Keras 2.9 Adam (optimizer_v2 adam.py): w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)."""
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
    return w


@pytest.mark.parametrize("fused", [False, True])
def test_adam_steps_as_keras(fused):
    """KerasAdam = Keras's Adam (epsilon 1e-7 added before the bias correction), on gradients from 1e-8 to 1,
    compiled (float32) and eager (float64: torch's fused Adam kernel); torch's own Adam with the same epsilon
    differs where gradients are tiny."""
    from cacicd.models.train import KerasAdam

    rng = np.random.default_rng(0)
    scales = 10.0 ** rng.integers(-8, 1, 64)
    w0 = np.zeros(64)  # Adam's step does not depend on the weights: the result is the update, in full precision
    grads = [rng.normal(size=64) * scales for _ in range(30)]
    dtype = torch.float32 if fused else torch.float64

    def run(opt_cls, **kw):
        w = torch.nn.Parameter(torch.tensor(w0, dtype=dtype))
        opt = opt_cls([w], lr=2e-4, **kw)
        for g in grads:
            w.grad = torch.tensor(g, dtype=dtype)
            opt.step()
        return w.detach().double().numpy(), opt

    want = _keras_adam_reference(w0, grads, 2e-4)
    got, opt = run(KerasAdam)
    assert opt.defaults["eps"] == 1e-7 and [int(s["step"]) for s in opt.state.values()] == [30]
    np.testing.assert_allclose(got, want, rtol=2e-5 if fused else 1e-12)
    plain, _ = run(torch.optim.Adam, eps=1e-7, fused=fused)
    assert np.abs(plain - want).max() > 0.1 * np.abs(want).max()  # torch's placement: visibly not Keras


def test_trainer_uses_keras_adam(data):
    from cacicd.models import losses
    from cacicd.models.train import KerasAdam, Trainer

    ds, tr, dv, _ = data
    loss = losses.make_loss("bce", LabelContext.from_labels(ds.codes, ds.Y[tr]))
    t = Trainer(ds.X[tr], ds.Y[tr], ds.X[dv], ds.Y[dv], PARAMS, loss, "ndcg", batch_size=64, device="cpu")
    assert isinstance(t.optimizer, KerasAdam) and t.optimizer.defaults["eps"] == 1e-7
    t.step()
    steps = {int(s["step"]) for s in t.optimizer.state.values()}
    assert steps == {-(-len(tr) // 64)}  # one Keras step a batch, every parameter
def test_epoch_batches_reach_the_network_and_loss_as_scipy_cuts_them(data):
    """Each batch's sparse input and dense targets (the reused block) are its rows of X and Y, last batch included."""
    from cacicd.models import losses
    from cacicd.models.train import Trainer

    ds, tr, dv, _ = data
    ctx = LabelContext.from_labels(ds.codes, ds.Y[tr])
    loss = losses.make_loss("bce", ctx)
    t = Trainer(ds.X[tr], ds.Y[tr], ds.X[dv], ds.Y[dv], PARAMS, loss, "ndcg", batch_size=100, device="cpu")
    Xt, Yt = ds.X[tr], ds.Y[tr]
    seen, batches = [], []
    assert t.fused_output  # the hidden layers, then the output layer and the loss in one (`BCELoss.on_output`)
    real_batches, real_hidden, real_loss = t._batches, t.model.hidden.forward, loss.on_output
    t._batches = lambda: batches.extend(real_batches()) or batches
    t.model.hidden.forward = lambda x: seen.append([x.to_dense()]) or real_hidden(x)
    loss.on_output = lambda o, h, y, m: seen[-1].append(y.clone()) or real_loss(o, h, y, m)
    for _ in range(2):
        batches.clear()
        seen.clear()
        t.train_epoch()
        assert len(batches) == len(seen) == 4 and len(batches[-1][0]) == len(tr) - 300
        for (idx, _, _), (x, y) in zip(batches, seen):
            np.testing.assert_array_equal(x.numpy(), Xt[idx].toarray())
            np.testing.assert_array_equal(y.numpy(), Yt[idx].toarray())


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_train_epoch_steps_like_plain_adam(data, precision):
    """One batch, no dropout: the trainer's step (fused, first layer through a contiguous view) is KerasAdam's."""
    import copy

    from cacicd.models import losses
    from cacicd.models.network import low_precision
    from cacicd.models.train import KerasAdam, Trainer, memory_order, to_tensor

    ds, tr, dv, _ = data
    ctx = LabelContext.from_labels(ds.codes, ds.Y[tr])
    params = {"num_layers": 3, "units_0": 16, "dropout_0": 0.0, "units_1": 8, "dropout_1": 0.0}
    t = Trainer(ds.X[tr], ds.Y[tr], ds.X[dv], ds.Y[dv], params, losses.make_loss("bce", ctx), "ndcg", lr=1e-2,
                batch_size=len(tr), device="cpu", precision=precision)
    first = t.model.hidden[0].weight
    assert not first.is_contiguous() and [(p is first) for p, _, _ in t.grad_views] == [True]
    view, dims = memory_order(first)
    assert view.is_contiguous() and view.data_ptr() == first.data_ptr() and torch.equal(view, first.permute(dims))
    plain = copy.deepcopy(t.model)
    opt = KerasAdam(plain.parameters(), lr=1e-2)  # float32 gradients, its own weight copies: the unfused path
    x = to_tensor(ds.X[tr], torch.device("cpu"), sparse=True)
    y = torch.from_numpy(ds.Y[tr].toarray().astype(np.float32))
    for _ in range(3):
        t.train_epoch()
        opt.zero_grad()
        with low_precision(t.dtype):  # the output layer and the loss as the trainer runs them (fused in bfloat16)
            losses.make_loss("bce", ctx).on_output(plain.output, plain.hidden(x), y, plain).backward()
        opt.step()
        for (name, a), b in zip(t.model.named_parameters(), plain.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
