"""Atomic file writes, a per-key file lock, and size + SHA-256 records of written files, checked when read."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes to `path` through a temporary file, fsync and rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `path` (created if needed) for the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def jsonable(o):
    """JSON fallback for numpy scalars and arrays (anything else as str)."""
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


class Damaged(ValueError):
    """Files that differ from the record written with them; the message names them, `paths` lists them."""

    def __init__(self, message: str, paths: list[Path] | tuple[Path, ...] = ()):
        super().__init__(message)
        self.paths = [Path(p) for p in paths]


def file_record(path: str | Path) -> dict:
    """{"bytes": size, "sha256": hex digest} of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return {"bytes": Path(path).stat().st_size, "sha256": h.hexdigest()}


def record_files(folder: str | Path, names: list[str]) -> dict[str, dict]:
    """{name: file_record} of files of `folder` (names relative to it, with / separators)."""
    return {n: file_record(Path(folder) / n) for n in sorted(names)}


def check_files(folder: str | Path, record: dict[str, dict], content: bool = True) -> list[tuple[Path, str]]:
    """(path, what differs) for each recorded file now missing, of another size, or (content) of other bytes."""
    bad = []
    for name, want in sorted(record.items()):
        p = Path(folder) / name
        if not p.is_file():
            bad.append((p, "missing"))
        elif (size := p.stat().st_size) != want["bytes"]:
            bad.append((p, f"{size:,} bytes, {want['bytes']:,} when written"))
        elif content and file_record(p)["sha256"] != want["sha256"]:
            bad.append((p, "same size, other content (SHA-256 differs)"))
    return bad
