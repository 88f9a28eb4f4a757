"""Where the searches' nodes train: Dask workers, on a local cluster started here or on an existing one.

`--workers N` starts a local Dask cluster of N worker processes of one thread each (one per GPU where
there are GPUs, each seeing only its own device); `--workers auto` picks N from this machine's GPUs, else
its cores (`auto_workers`); `--scheduler tcp://HOST:8786` joins a cluster started elsewhere (`dask
scheduler` and `dask worker` under SLURM, PBS, dask-jobqueue...), whose workers must see the cache folder
(a shared file system). The cluster starts on the first node to train, so a run on a warm cache starts
none. Workers only train nodes (`cacicd.models.search.train_job`): they read the family's data and
parent checkpoints from the cache folder, write checkpoint files there and return the node's record;
the driver alone writes the curve stores. A worker that dies loses only the node it was training: Dask
runs it again on another worker.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from distributed import WorkerPlugin

from cacicd.config import cpu_count
from cacicd.models.search import NodeJob, NodeRunner, train_job

logger = logging.getLogger(__name__)


def visible_gpus() -> list[str]:
    """Ids of the CUDA devices this process may use (as CUDA_VISIBLE_DEVICES names them), [] without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    n = torch.cuda.device_count()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in env.split(",") if s.strip()] if env else [str(i) for i in range(n)]
    return ids[:n]


def auto_workers(threads: int = 1) -> int:
    """A sensible local worker count: one per GPU where there are GPUs, else one per `threads` CPU cores."""
    return len(visible_gpus()) or max(1, cpu_count() // max(1, threads))


def parse_workers(value: str | int | None) -> int | str | None:
    """--workers' value checked: None (0: train in this process), a positive count, or "auto" (`auto_workers`)."""
    if value is None:
        return None
    if isinstance(value, str):
        v = value.strip().lower()
        if v == "auto":
            return "auto"
        if not v.lstrip("-").isdigit():
            raise ValueError(f"--workers {value!r}: give a number of worker processes, 0 (none: train in this "
                             "process) or auto")
        value = int(v)
    if value < 0:
        raise ValueError(f"--workers {value}: must be >= 0")
    return value or None


def add_worker_arguments(p: argparse.ArgumentParser) -> None:
    """The --workers and --scheduler options of the commands that train (run_all.sh, cacicd run)."""
    p.add_argument("--workers", default="auto",
                   help="train on a local Dask cluster of N worker processes (one per GPU where there are GPUs); "
                        "auto (default): as many as this machine's GPUs, else its cores; 0: in this process")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:8786",
                   help="train on an existing Dask cluster instead (its workers must see the cache folder)")


def keep_freed_memory() -> bool:
    """Let glibc's allocator keep and reuse freed blocks of up to 32 MiB in this process; False where it cannot.

    Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also freezes glibc's mmap threshold at 128 KiB:
    every (batch, labels) tensor of a training step is then a fresh mmap, some 74,000 page faults and 10 % of a
    default-size epoch. This puts the threshold where glibc's own adaptive rule would take it.
    """
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(libc.mallopt(m_trim_threshold, 2**30))


class KeepFreedMemory(WorkerPlugin):
    """A worker plugin: `keep_freed_memory` in each worker process, local or on a cluster."""

    def setup(self, worker) -> None:
        """Called by Dask in every worker (and every restarted one)."""
        keep_freed_memory()


def worker_specs(n: int, gpus: list[str]) -> dict[str, dict]:
    """Dask SpecCluster worker specs: n one-thread Nanny workers, worker i seeing only GPU gpus[i] when given."""
    from distributed import Nanny

    specs = {}
    for i in range(n):
        options: dict = {"nthreads": 1, "silence_logs": logging.WARNING}
        if gpus:
            options["env"] = {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}
        specs[f"worker-{i}"] = {"cls": Nanny, "options": options}
    return specs


class Cluster:
    """The Dask client of a run (started lazily), or None of it when nodes train in this process.

    workers: local worker processes (None: none); scheduler: the address (tcp://HOST:8786) or scheduler file
    of an existing cluster (wins).
    """

    def __init__(self, workers: int | None = None, scheduler: str | None = None):
        self.workers, self.scheduler = workers, scheduler
        self._client = None
        self._cluster = None
        self._lock = threading.Lock()  # the searches' threads ask for the client at once
        self._levels: dict[str, int] = {}

    @property
    def active(self) -> bool:
        """Whether nodes train on Dask workers (else in this process)."""
        return bool(self.workers) or bool(self.scheduler)

    def client(self):
        """The Dask client, starting the local cluster or connecting to the scheduler on first use."""
        with self._lock:
            if self._client is None:
                self._start()
        return self._client

    def _start(self) -> None:
        from distributed import Client, Scheduler, SpecCluster

        for name in ("distributed", "bokeh", "tornado"):  # Dask's INFO lines are not this run's news
            lg = logging.getLogger(name)
            self._levels[name] = lg.level
            lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
        if self.scheduler:
            where = f"the Dask cluster at {self.scheduler}"
            kw = {"scheduler_file": self.scheduler} if Path(self.scheduler).is_file() else {"address": self.scheduler}
            try:
                self._client = Client(timeout="30s", **kw)
            except (OSError, TimeoutError) as e:
                raise ConnectionError(f"cannot reach the Dask scheduler {self.scheduler} ({e}); start one "
                                      "(`dask scheduler`) or give its address (tcp://HOST:8786) or scheduler file") from None
        else:
            gpus = visible_gpus()
            self._cluster = SpecCluster(
                workers=worker_specs(self.workers, gpus[:self.workers]),
                scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
                silence_logs=logging.ERROR, name="cacicd")
            self._client = Client(self._cluster)
            where = (f"a local Dask cluster of {self.workers} worker process(es)"
                     + (f", GPU {', '.join(gpus[:self.workers])}" if gpus else ", 1 thread each"))
        self._client.register_plugin(KeepFreedMemory(), name="cacicd-keep-freed-memory")
        link = getattr(self._client, "dashboard_link", None)
        print(f"[cacicd] training on {where}" + (f"; dashboard: {link}" if link else ""), flush=True)

    def runner(self, data_file: str | Path, ckpt_dir: str | Path, priority: int = 0) -> NodeRunner:
        """A NodeRunner training jobs on the workers from the FamilyData saved at `data_file`; a search's jobs of a
        higher `priority` run first (so that searches end one after another, not all at the end)."""
        def run(jobs: list[NodeJob]) -> Iterator[tuple[NodeJob, dict]]:
            if not jobs:
                return
            from distributed import as_completed

            client = self.client()
            futures = {client.submit(train_job, job, str(data_file), str(ckpt_dir), pure=False, priority=priority,
                                     key=f"node-{job.node.key[:16]}-{os.urandom(4).hex()}"): job for job in jobs}
            try:
                for fut in as_completed(list(futures)):
                    yield futures[fut], fut.result()
            finally:  # a failed or interrupted round: its other nodes are not wanted any more
                for fut in futures:
                    if not fut.done():
                        fut.cancel()
        return run

    def close(self) -> None:
        """Close the client and the local cluster, if started."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        self._levels.clear()

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
