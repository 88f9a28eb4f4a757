"""Execute the paper's notebooks in order with papermill, skipping those whose inputs did not change."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
from jupyter_client import AsyncKernelManager
from traitlets import Dict
from traitlets.config import Config

from cacicd.config import StrictParser, cache_root, get_profile
from cacicd.data.pg import split_password
from cacicd.data.sources import check_source, parse_source
from cacicd.experiments import engine
from cacicd.experiments.cluster import add_worker_arguments, parse_workers
from cacicd.files import atomic_write_text, file_record, unwritable

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"


@dataclass(frozen=True)
class OutputDirs:
    """Where one run writes its executed notebooks, figures and tables."""

    notebooks: Path
    figures: Path
    tables: Path

    @classmethod
    def for_run(cls, profile: str, out: str | Path | None = None) -> "OutputDirs":
        """figures/<profile>, tables/<profile>, runs/<profile> by default; DIR/figures … with --out DIR."""
        if out is None:
            return cls(ROOT / "runs" / profile, ROOT / "figures" / profile, ROOT / "tables" / profile)
        out = Path(out).resolve()
        return cls(out / "notebooks", out / "figures", out / "tables")


def notebooks() -> list[str]:
    """Names of the notebooks (jupytext sources under notebooks/), in execution order."""
    return sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))


def trains(name: str) -> bool:
    """Whether a notebook runs experiments (and so needs their searches in the cache)."""
    return "E.run(" in (NOTEBOOK_DIR / f"{name}.py").read_text()


def _hash_files(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def data_key(data: str) -> str:
    """A cheap identity of a data source: file sizes and times of a folder; the name otherwise."""
    path = Path(data.split(":", 1)[1] if data.startswith("mimic3:") else data)
    if data != "synthetic" and path.exists():
        stats = sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                       for p in path.rglob("*") if p.is_file())
        return hashlib.sha256(json.dumps(stats).encode()).hexdigest()
    return data


def input_key(name: str, profile: str, data: str, upstream: list[str]) -> str:
    """The cache key of one notebook: its source, the library's source, profile, data and upstream keys."""
    payload = {
        "notebook": _hash_files([NOTEBOOK_DIR / f"{name}.py"]),
        "library": _hash_files((ROOT / "cacicd").rglob("*.py")),
        "profile": repr(get_profile(profile)),
        "data": data_key(data),
        "upstream": upstream,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


class KernelManagerWithEnv(AsyncKernelManager):
    """A kernel manager whose kernels get `extra_env` on top of this process's environment, and no SIGINT at shutdown."""

    extra_env = Dict(config=True, help="environment variables added to the kernel's")

    async def start_kernel(self, **kw):
        """Start the kernel with `extra_env` added to its environment."""
        kw["env"] = {**kw.get("env", os.environ), **self.extra_env}
        return await super().start_kernel(**kw)

    async def _async_interrupt_kernel(self) -> None:
        """Interrupt the kernel, except on its way out (a finished kernel would log a KeyboardInterrupt)."""
        # jupyter_client 8 interrupts (SIGINT) before every shutdown; a kernel that does not answer the
        # shutdown request is still killed after `shutdown_wait_time`, and timeouts interrupt as before.
        if self.shutting_down:
            return
        await super()._async_interrupt_kernel()


def kernel_config(env: dict[str, str] | None = None) -> Config:
    """Kernels talk over CurveZMQ-encrypted TCP where jupyter_client and pyzmq can (no plain-TCP warning in the
    log), and get `env` added to their environment."""
    cfg = Config({"NotebookClient": {"kernel_manager_class": KernelManagerWithEnv},
                  "KernelManagerWithEnv": {"extra_env": dict(env or {})}})
    if zmq.has("curve") and AsyncKernelManager.class_traits().get("transport_encryption") is not None:
        cfg.KernelManager.transport_encryption = "auto"
    return cfg


def execute(name: str, dirs: OutputDirs, params: dict, kernel: str = "python3",
            env: dict[str, str] | None = None) -> None:
    """Convert a jupytext source to a notebook and execute it with papermill; `env` is added to the kernel's environment."""
    import jupytext
    import papermill as pm

    nb = jupytext.read(NOTEBOOK_DIR / f"{name}.py")
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": "Python 3", "language": "python"}
    dirs.notebooks.mkdir(parents=True, exist_ok=True)
    src = dirs.notebooks / f".{name}.source.ipynb"
    jupytext.write(nb, src)
    try:
        pm.execute_notebook(str(src), str(dirs.notebooks / f"{name}.ipynb"), parameters=params,
                            kernel_name=kernel, cwd=str(NOTEBOOK_DIR), progress_bar=False,
                            log_output=False, request_save_on_cell_execute=True, config=kernel_config(env))
    finally:
        src.unlink(missing_ok=True)


def without_password(data: str) -> tuple[str, str | None]:
    """(a PostgreSQL source without its password, the password or None); other sources: (as they are, None).

    `run_all` hands the password to the notebooks' kernels as PGPASSWORD in their environment, so notebook
    parameters, run logs and input keys never hold it.
    """
    if parse_source(data)[0] != "postgresql":
        return data, None
    return split_password(data)


def absolute_source(data: str) -> str:
    """The source with a relative folder made absolute (notebooks run with notebooks/ as working directory)."""
    kind, loc, _ = parse_source(data)
    if kind not in ("omop", "mimic3") or not loc or Path(loc).is_absolute():
        return data
    s = data.strip()
    prefix = next((p for p in ("omop:", "mimic3:") if s.startswith(p)), "")
    return prefix + str(Path(loc).resolve()) + s[len(prefix) + len(loc):]


def check_arguments(profile: str, data: str, out: str | None, only: list[str] | None,
                    cache_dir: str | None, workers: str | int | None = None) -> list[str]:
    """One line per bad argument (profile, data source, notebook names, output and cache folders, workers);
    nothing is made."""
    errors = []
    try:
        parse_workers(workers)
    except ValueError as e:
        errors.append(str(e))
    try:
        get_profile(profile)
    except ValueError as e:
        errors.append(f"--profile: {e}")
    try:
        check_source(data)
    except ValueError as e:
        errors.append(f"--data: {e}")
    names = notebooks()
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        errors.append(f"unknown notebook(s) {', '.join(unknown)}; known: {', '.join(names)}")
    if out:
        if why := unwritable(Path(out).resolve()):
            errors.append(f"--out {out}: {why}")
    elif not errors:
        dirs = OutputDirs.for_run(profile, out)
        errors += [f"output folder {d}: {why}" for d in (dirs.notebooks, dirs.figures, dirs.tables)
                   if (why := unwritable(d))]
    cache = Path(cache_dir).resolve() if cache_dir else cache_root()
    if why := unwritable(cache):
        errors.append(f"{'--cache' if cache_dir else 'cache folder'} {cache}: {why}")
    return errors


def run_all(profile: str, data: str = "synthetic", out: str | None = None, only: list[str] | None = None,
            force: bool = False, cache_dir: str | None = None, workers: str | int | None = None,
            scheduler: str | None = None) -> int:
    """Train every experiment (on Dask workers: `workers`, `scheduler`), then run the notebooks in order on the
    warm cache; stop at the first failure. Returns a shell exit code.

    Every argument is checked before any notebook starts or folder is made. A notebook is up to date
    only if its last execution succeeded with the same input key and its executed notebook is the
    one that execution wrote: its run_log entry is removed before it runs, written back on success.
    The experiments are trained first only when a notebook that runs them is to run.
    """
    errors = check_arguments(profile, data, out, only, cache_dir, workers)
    if errors:
        for e in errors:
            print(f"run_all: {e}", file=sys.stderr)
        return 2
    source = absolute_source(data)  # with its password, for the training in this process
    data, password = without_password(source)
    env = {"PGPASSWORD": password} if password is not None else {}
    dirs = OutputDirs.for_run(profile, out)
    for d in (dirs.notebooks, dirs.figures, dirs.tables):
        d.mkdir(parents=True, exist_ok=True)
    names = notebooks()
    params = {"profile": profile, "data": data, "figures_dir": str(dirs.figures),
              "tables_dir": str(dirs.tables)}
    if cache_dir:
        params["cache_dir"] = str(Path(cache_dir).resolve())
    log_path = dirs.tables / "run_log.json"
    run_log = json.loads(log_path.read_text()) if log_path.exists() else {}
    upstream: list[str] = []
    t_all = time.perf_counter()
    todo = []
    for name in names:
        key = input_key(name, profile, data, upstream)
        upstream.append(key)
        if only and name not in only:
            continue
        done = dirs.notebooks / f"{name}.ipynb"
        last = run_log.get(name, {})
        if (not force and last.get("key") == key and done.exists()
                and last.get("notebook_sha256") == file_record(done)["sha256"]):
            print(f"[run_all] {name}: up to date, skipped (use --force to rerun)", flush=True)
            continue
        todo.append((name, key, done))
    if any(trains(name) for name, _, _ in todo):
        print("[run_all] training every experiment (a warm cache is only read) …", flush=True)
        t0 = time.perf_counter()
        try:
            engine.run_many(list(engine.EXPERIMENTS), profile, source, cache_dir=cache_dir, workers=workers,
                            scheduler=scheduler, keep=False)
        except Exception as exc:
            print(f"[run_all] training FAILED after {time.perf_counter() - t0:.0f} s: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return 1
        run_log["training"] = {"wall_s": round(time.perf_counter() - t0, 1), "workers": str(workers),
                               "scheduler": scheduler, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                               "profile": profile, "data": data}
        atomic_write_text(log_path, json.dumps(run_log, indent=1))
        print(f"[run_all] training: done in {time.perf_counter() - t0:.0f} s", flush=True)
    for name, key, done in todo:
        if run_log.pop(name, None) is not None:  # until it succeeds again, it is not up to date
            atomic_write_text(log_path, json.dumps(run_log, indent=1))
        print(f"[run_all] {name}: running …", flush=True)
        t0 = time.perf_counter()
        try:
            execute(name, dirs, params, env=env)
        except Exception as exc:  # papermill raises PapermillExecutionError with the cell's error
            msg = str(exc).strip().splitlines()
            print(f"[run_all] {name} FAILED after {time.perf_counter() - t0:.0f} s. "
                  f"The executed notebook, with the failing cell, is {done}.", file=sys.stderr)
            print("\n".join(msg[-15:]), file=sys.stderr)
            return 1
        wall = time.perf_counter() - t0
        run_log[name] = {"key": key, "wall_s": round(wall, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                         "profile": profile, "data": data, "notebook_sha256": file_record(done)["sha256"]}
        atomic_write_text(log_path, json.dumps(run_log, indent=1))
        print(f"[run_all] {name}: done in {wall:.0f} s", flush=True)
    print(f"[run_all] finished in {time.perf_counter() - t_all:.0f} s. Produced:")
    for d in (dirs.figures, dirs.tables, dirs.notebooks):
        files = sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))
        print(f"  {d}  ({len(files)} files)")
        for p in files:
            print(f"    {p.relative_to(d)}")
    report = dirs.tables / "REPORT.md"
    if report.exists():
        print(f"[run_all] replication report: {report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line of run_all.sh."""
    ap = StrictParser(prog="run_all.sh", description=__doc__)
    ap.add_argument("--profile", default="default", help="smoke, default or paper")
    ap.add_argument("--data", default="synthetic",
                    help="synthetic (default), an OMOP CDM folder, mimic3:PATH or postgresql://…")
    ap.add_argument("--out", default=None, help="write DIR/notebooks, DIR/figures, DIR/tables")
    ap.add_argument("--only", nargs="+", action="extend", default=None, metavar="NAME",
                    help="run only these notebooks (repeatable)")
    ap.add_argument("--force", action="store_true", help="rerun notebooks that are up to date")
    ap.add_argument("--cache", default=None, help="cache folder (default: $CACICD_CACHE or ./cache)")
    add_worker_arguments(ap)
    a = ap.parse_args(argv)
    return run_all(a.profile, a.data, a.out, a.only, a.force, a.cache, a.workers, a.scheduler)


if __name__ == "__main__":
    sys.exit(main())
