"""Experiment registry, cache, derived experiments, locking, and kill-and-resume with SIGKILL."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cacicd.experiments import engine as E
from cacicd.experiments import registry
from cacicd import icd9
from cacicd.config import Profile, SearchSpace
from test_train import make_dataset

TINY = Profile(name="tiny", n_stays=0, n_folds=2, split_fraction=0.2, max_epochs=3, patience=1, learning_rate=3e-3,
               batch_size=64, hyperband_iterations=1, executions_per_trial=1,
               space=SearchSpace(num_layers=(1, 2), units=(16, 32, 16), dropout=(0.0, 0.3), batchnorm=(False,)))


@pytest.fixture(scope="module")
def ds():
    return make_dataset(n=400, n_ingredients=40, n_leaves=50, seed=1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_every_paper_experiment_is_declared():
    names = set(E.EXPERIMENTS)
    want = {"dummy", "cherry_f1_micro", "per_level_ndcg", "reweighted_ndcg", "rollup_ndcg", "rolldown_ndcg",
            "mcloss_ndcg", "treemin_ndcg", "hierl2_ndcg", "outl2_ndcg", "irw_ndcg", "irnw_ndcg", "focal_ndcg"}
    want |= {f"naive_{t}" for t in ("f1_micro", "f1_macro", "ndcg", "auprc_micro", "auprc_macro", "auroc_micro",
                                   "auroc_macro")}
    want |= {f"level_{lv}_ndcg" for lv in ("chapter", "subchapter", "3digit", "billing")}
    assert want <= names
    assert len(registry.trained_experiments()) == 22  # 7 targets, roll-up, roll-down, cherry, 4 levels, 8 methods
    assert E.EXPERIMENTS["mcloss_ndcg"].output_rule == "rollup" and E.EXPERIMENTS["rollup_ndcg"].output_rule == "rollup"
    naive = {e.name for e in E.family(E.EXPERIMENTS["naive_ndcg"])}
    assert naive == {f"naive_{t}" for t in ("f1_micro", "f1_macro", "ndcg", "auprc_micro", "auprc_macro",
                                            "auroc_micro", "auroc_macro")} | {"rollup_ndcg", "rolldown_ndcg"}
    assert [e.name for e in E.family(E.EXPERIMENTS["mcloss_ndcg"])] == ["mcloss_ndcg"]
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        E.get_experiment("nope")


def test_run_caches_and_expands_predictions(ds, cache, monkeypatch):
    rs = E.run("naive_ndcg", TINY, ds, cache_dir=cache, progress=False)
    assert [r.fold for r in rs] == [0, 1]
    r = rs[0]
    assert r.scores.shape == (len(r.test_idx), len(ds.codes)) and r.scores.dtype == np.float32
    assert set(r.test_metrics.columns) >= {"level", "metric", "value"} and "all" in set(r.test_metrics["level"])
    assert r.best_params["num_layers"] in (1, 2) and len(r.history) >= 1
    assert {"search_s", "train_s", "inference_s", "epoch_s"} <= set(r.timings)
    assert r.timings["search_s"] > 0 and rs[1].timings["search_s"] > 0  # every fold has its own search
    # the search's time is its networks' training seconds summed (its cost, whatever the workers), not its wall time
    from cacicd.models.curves import CurveStore

    stores = [f.parent for f in Path(cache).rglob("curves.jsonl")
              if f.parent.name == "fold0" and f.parent.parent.name == r.info["family"]]
    assert len(stores) == 1
    trained = sum(e["seconds"] for rec in CurveStore(stores[0]).records().values() for e in rec["epochs"])
    assert r.timings["search_s"] == pytest.approx(trained, rel=1e-12) and r.timings["train_s"] <= trained
    assert r.info["n_configurations"] == 5 and r.info["best_epoch"] >= 1
    assert (r.path / "result.json").exists() and r.path.parent.name == "naive_ndcg"
    # a second call reads the cache: training would fail
    monkeypatch.setattr(E, "train_fold", lambda *a, **k: pytest.fail("recomputed a cached result"))
    again = E.run("naive_ndcg", TINY, ds, cache_dir=cache, folds=0, progress=False)
    np.testing.assert_array_equal(again[0].scores, r.scores)
    np.testing.assert_array_equal(again[0].test_idx, r.test_idx)
    # the saved model reproduces the saved test predictions
    from cacicd.models.train import predict_proba

    np.testing.assert_allclose(predict_proba(again[0].load_model(), ds.X[r.test_idx]), r.scores, rtol=1e-6)


def test_rollup_and_rolldown_are_searches_of_the_naive_family(ds, cache, monkeypatch):
    from cacicd.models import search
    from cacicd.models.train import predict_proba

    E.run("naive_ndcg", TINY, ds, cache_dir=cache, folds=0, progress=False)
    monkeypatch.setattr(search, "train_node", lambda *a, **k: pytest.fail("the family's store was not shared"))
    up = E.run("rollup_ndcg", TINY, ds, cache_dir=cache, folds=0, progress=False)[0]
    down = E.run("rolldown_ndcg", TINY, ds, cache_dir=cache, folds=0, progress=False)[0]
    index = {c: i for i, c in enumerate(ds.codes)}
    for r, agg in ((up, "max"), (down, "min")):
        raw = predict_proba(r.load_model(), ds.X[r.test_idx])  # the search's own top model, rule not applied
        for j in range(0, len(ds.codes), 7):  # brute force over the hierarchy
            c = ds.codes[j]
            if agg == "max":
                cols = [index[d] for d in ds.codes if d == c or c in icd9.ancestors(d)]
                np.testing.assert_allclose(r.scores[:, j], raw[:, cols].max(axis=1), rtol=1e-6)
            else:
                cols = [j] + [index[a] for a in icd9.ancestors(c) if a in index]
                np.testing.assert_allclose(r.scores[:, j], raw[:, cols].min(axis=1), rtol=1e-6)


def test_dummy_cherry_and_per_level(ds, cache):
    d = E.run("dummy", TINY, ds, cache_dir=cache, folds=0, progress=False)[0]
    tr, _, _ = E.fold_indices(ds, TINY, 0, cache)
    np.testing.assert_allclose(d.scores[0], np.asarray(ds.Y[tr].mean(axis=0)).ravel(), rtol=1e-6)
    assert (d.scores == d.scores[0]).all()
    ch = E.run("cherry_f1_micro", TINY, ds, cache_dir=cache, folds=0, progress=False)[0]
    unseen = ~ds.cherry_mask()
    assert unseen.any() and (~unseen).any()
    assert not ch.scores[:, unseen].any() and ch.scores[:, ~unseen].all()
    pl = E.run("per_level_ndcg", TINY, ds, cache_dir=cache, folds=0, progress=False)[0]
    bill = E.run("level_billing_ndcg", TINY, ds, cache_dir=cache, folds=0, progress=False)[0]
    chap = E.run("level_chapter_ndcg", TINY, ds, cache_dir=cache, folds=0, progress=False)[0]
    masks = icd9.level_masks(ds.codes)
    np.testing.assert_array_equal(pl.scores[:, masks["billing"]], bill.scores[:, masks["billing"]])
    np.testing.assert_array_equal(pl.scores[:, masks["chapter"]], chap.scores[:, masks["chapter"]])
    own = chap.test_metrics[chap.test_metrics.level == "chapter"].reset_index(drop=True)
    got = pl.test_metrics[pl.test_metrics.level == "chapter"].reset_index(drop=True)
    assert got["value"].tolist() == own["value"].tolist()


def test_changed_declaration_or_data_invalidates(ds, cache, monkeypatch):
    r0 = E.run("dummy", TINY, ds, cache_dir=cache, folds=0, progress=False)[0]
    calls = []
    real = E.train_fold
    monkeypatch.setattr(E, "train_fold", lambda *a, **k: calls.append(1) or real(*a, **k))
    changed = dict(E.EXPERIMENTS, dummy=E.Experiment("dummy", "changed", model="dummy", target="f1_micro"))
    monkeypatch.setattr(E, "EXPERIMENTS", changed)
    monkeypatch.setattr(registry, "EXPERIMENTS", changed)
    assert E.status(TINY, ds, cache).set_index(["experiment", "fold"]).loc[("dummy", 0), "state"] == "stale"
    E.run("dummy", TINY, ds, cache_dir=cache, folds=0, progress=False)
    assert calls == [1]
    other = make_dataset(n=400, n_ingredients=40, n_leaves=50, seed=2)
    r2 = E.run("dummy", TINY, other, cache_dir=cache, folds=0, progress=False)[0]
    assert calls == [1, 1] and r2.path != r0.path and r2.dataset_hash != r0.dataset_hash


def test_run_trains_with_the_profiles_threads_for_the_call_only(ds, tmp_path, monkeypatch):
    import torch

    seen = []
    real = E.train_fold
    monkeypatch.setattr(E, "train_fold", lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
    torch.set_num_threads(2)
    E.run("dummy", TINY, ds, cache_dir=tmp_path, folds=0, progress=False)
    E.run("dummy", TINY.replace(threads=3), ds, cache_dir=tmp_path, folds=0, progress=False)
    assert seen == [1, 3] and torch.get_num_threads() == 2  # a training's bits depend on its thread count
    assert TINY.threads == 1


def test_concurrent_runs_compute_once(ds, tmp_path, monkeypatch):
    calls = []
    real = E.train_fold

    def slow(*a, **k):
        calls.append(1)
        time.sleep(0.5)
        return real(*a, **k)

    monkeypatch.setattr(E, "train_fold", slow)
    out = []
    ts = [threading.Thread(target=lambda: out.append(E.run("dummy", TINY, ds, cache_dir=tmp_path, folds=0,
                                                          progress=False)[0])) for _ in range(2)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert len(calls) == 1 and len(out) == 2
    np.testing.assert_array_equal(out[0].scores, out[1].scores)


CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
from test_train import make_dataset
from test_experiments import TINY
from cacicd.experiments import engine as E
from cacicd.models import train as T
real = T.Trainer.train_epoch
def slow(self):
    time.sleep(0.4)
    return real(self)
T.Trainer.train_epoch = slow
E.run("naive_ndcg", TINY, make_dataset(n=400, n_ingredients=40, n_leaves=50, seed=1), cache_dir={cache!r},
      folds=0, progress=False)
"""


def _stored_nodes(store: Path) -> int:
    return len(store.read_text().splitlines()) if store.exists() else 0


@pytest.mark.slow
def test_sigkill_mid_search_then_resume(ds, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(Path(__file__).parent), cache=str(tmp_path))],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    done_before, store = 0, None
    while time.time() < deadline and child.poll() is None:
        stores = list(tmp_path.glob("tiny/*/_search/all-bce-*/fold0/curves.jsonl"))
        if stores:
            store = stores[0]
            done_before = _stored_nodes(store)
            if done_before >= 2:
                break
        time.sleep(0.05)
    assert child.poll() is None, child.stdout.read().decode()[-3000:]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done_before = _stored_nodes(store)
    folder = E.fold_dir(tmp_path, TINY, ds.content_hash(), "naive_ndcg", 0)
    assert not (folder / "result.json").exists() and not (store.parent / "search.json").exists()
    r = E.run("naive_ndcg", TINY, ds, cache_dir=tmp_path, folds=0, progress=False)[0]
    meta = json.loads((store.parent / "search.json").read_text())["meta"]
    assert meta["nodes_trained_here"] == meta["nodes_in_store"] - done_before  # finished nodes were not retrained
    # the resumed search is the search run without interruption
    fresh = E.run("naive_ndcg", TINY, ds, cache_dir=tmp_path / "fresh", folds=0, progress=False)[0]
    assert fresh.best_params == r.best_params
    np.testing.assert_array_equal(fresh.scores, r.scores)


def test_display_names_do_not_change_the_key():
    import dataclasses

    e = E.EXPERIMENTS["naive_ndcg"]
    bare = dataclasses.replace(e, description="", label="", short="", tuned_on="")
    assert bare.key() == e.key()
    assert dataclasses.replace(e, loss="focal").key() != e.key()
    assert e.label == "NDCG-tuned naive multitask" and e.short == "naive multitask" and e.tuned_on == "NDCG"
    assert E.EXPERIMENTS["naive_f1_macro"].label == "macro-F1-tuned naive multitask"
    assert E.EXPERIMENTS["irw_ndcg"].short == "IRW" and E.EXPERIMENTS["dummy"].label.startswith("dummy")
