"""The on-disk dataset cache that the loaders share: keys over the input files' bytes, and the cached build."""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

from cacicd.data.dataset import Dataset
from cacicd.files import Damaged, file_lock, file_record

log = logging.getLogger(__name__)

_HASHES: dict[tuple, str] = {}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (memoized per process on path, size and mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = file_record(path)["sha256"]
    return _HASHES[key]


def cache_key(files: dict[str, Path], options: dict, kind: str) -> str:
    """A key over the loader version `kind`, the options and the bytes of every input file."""
    h = hashlib.sha256()
    h.update(json.dumps({"loader": kind, "options": options}, sort_keys=True, default=str).encode())
    for table in sorted(files):
        h.update(f"{table}:{files[table].name}:{file_sha256(files[table])}\n".encode())
    return h.hexdigest()[:24]


def cached(cache_dir: str | Path, key: str, build: Callable[[], Dataset]) -> Dataset:
    """The dataset stored under cache_dir/key, built by `build()` and saved when absent."""
    folder = Path(cache_dir) / key
    if (folder / "meta.json").exists():  # read without the lock (a read-only cache): meta.json is written last
        try:
            return Dataset.load(folder)
        except Exception:  # damaged, or being replaced: looked at again under the lock
            pass
    with file_lock(Path(cache_dir) / f"{key}.lock"):
        if (folder / "meta.json").exists():
            try:
                ds = Dataset.load(folder)
                log.info("dataset read from cache %s", folder)
                return ds
            except Exception as e:  # a damaged cache entry is rebuilt
                log.warning("%s; rebuilding it", e if isinstance(e, Damaged) else f"cache {folder} unreadable ({e})")
        ds = build()
        ds.save(folder)
        return ds


def with_defaults(defaults: dict, options: dict, what: str) -> dict:
    """`defaults` updated with `options`, refusing an option `defaults` does not name (TypeError naming `what`)."""
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(f"{what} got unknown option(s) {sorted(unknown)}; known: {sorted(defaults)}")
    return {**defaults, **options}
