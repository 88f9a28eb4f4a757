"""Training on Dask workers: the same results as in this process, whatever the worker count; a worker killed
mid-search loses only its node; worker counts and GPU assignment."""
import os
import signal
import threading
import time

import numpy as np
import pytest

from cacicd.experiments import cluster as C
from cacicd.experiments import engine as E
from test_experiments import TINY
from test_train import make_dataset

NAMES = ["naive_ndcg", "rollup_ndcg", "focal_ndcg", "per_level_ndcg", "dummy"]


@pytest.fixture(scope="module")
def ds():
    return make_dataset(n=400, n_ingredients=40, n_leaves=50, seed=1)


@pytest.fixture(scope="module")
def in_process(ds, tmp_path_factory):
    return E.run_many(NAMES, TINY, ds, cache_dir=tmp_path_factory.mktemp("alone"), progress=False)


def _same(a, b):
    for name in a:
        for x, y in zip(a[name], b[name]):
            assert x.best_params == y.best_params, name
            np.testing.assert_array_equal(x.scores, y.scores)
            assert x.test_metrics.equals(y.test_metrics), name


def test_workers_keep_freed_memory():
    # Dask's MALLOC_TRIM_THRESHOLD_ makes each batch's tensors fresh mmaps (page faults); workers undo it
    import platform

    assert C.keep_freed_memory() or platform.libc_ver()[0] != "glibc"


def test_worker_counts_and_gpus(monkeypatch):
    assert C.parse_workers(None) is None and C.parse_workers("0") is None and C.parse_workers(3) == 3
    assert C.parse_workers("auto") == "auto"
    for bad in ("-1", "many", "2.5"):
        with pytest.raises(ValueError, match="--workers"):
            C.parse_workers(bad)
    monkeypatch.setattr(C, "visible_gpus", lambda: [])
    monkeypatch.setattr(C, "cpu_count", lambda: 8)
    assert C.auto_workers(1) == 8 and C.auto_workers(2) == 4
    monkeypatch.setattr(C, "visible_gpus", lambda: ["2", "5"])
    assert C.auto_workers(1) == 2  # one worker per GPU
    specs = C.worker_specs(2, ["2", "5"])
    assert [s["options"]["env"] for s in specs.values()] == [{"CUDA_VISIBLE_DEVICES": "2"},
                                                              {"CUDA_VISIBLE_DEVICES": "5"}]
    assert all(s["options"]["nthreads"] == 1 for s in specs.values())
    assert "env" not in C.worker_specs(1, [])["worker-0"]["options"]


@pytest.mark.slow
def test_two_workers_give_what_one_process_gives(ds, in_process, tmp_path):
    _same(in_process, E.run_many(NAMES, TINY, ds, cache_dir=tmp_path, workers=2, progress=False))
    folder = next(tmp_path.glob("tiny/*/_search/all-bce-*/fold0"))
    assert not (folder / "family_data.pkl").exists()  # the workers' copy of the data is gone with the search


def _slow_training(delay: float) -> None:  # runs in each worker process
    from cacicd.models import train

    real = train.Trainer.train_epoch
    train.Trainer.train_epoch = lambda self: time.sleep(delay) or real(self)


@pytest.mark.slow
def test_a_killed_worker_loses_only_its_node(ds, in_process, tmp_path):
    with C.Cluster(workers=2) as cl:
        client = cl.client()
        assert all(client.run(lambda dask_worker: "cacicd-keep-freed-memory" in dask_worker.plugins).values())
        client.run(_slow_training, 0.3)
        out, errors = {}, []

        def run():
            try:
                out.update(E.run_many(NAMES, TINY, ds, cache_dir=tmp_path, scheduler=client.scheduler.address,
                                      progress=False))
            except Exception as e:  # reported below
                errors.append(e)

        t = threading.Thread(target=run)
        t.start()
        killed = None
        deadline = time.time() + 300
        while killed is None and time.time() < deadline and t.is_alive():
            busy = [w for w, keys in client.processing().items() if keys]
            if busy:
                pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed = pid
            time.sleep(0.2)
        t.join(600)
    assert killed is not None and not errors, errors
    _same(in_process, out)
