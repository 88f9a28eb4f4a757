"""Atomic file writes, a per-key file lock, and size + SHA-256 records of written files, checked when read.

Files and folders are created with the modes the umask allows (as `open` would), so a cache can be
shared by a group of users.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def umask() -> int:
    """This process's umask (read from /proc where it can be, without changing it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def created_mode(folder: bool = False) -> int:
    """The mode `open` (0o666) or `mkdir` (0o777) would give a new file or folder under the umask."""
    return (0o777 if folder else 0o666) & ~umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write bytes to `path` through a temporary file, fsync and rename; the file's mode follows the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, created_mode())  # mkstemp makes it 0600, private to its owner
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


def unwritable(folder: str | Path) -> str | None:
    """Why `folder` cannot be created or written to (its nearest existing ancestor is tried), or None."""
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        return f"{p} is not a folder"
    try:
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as e:
        return f"cannot write in {p} ({e.strerror or e})"
    return None


def folder_error(e: OSError, folder: str | Path, name: str) -> str:
    """One line for an OSError met under `folder` (named `name`, e.g. --cache), saying which folder cannot be written."""
    folder = Path(folder).resolve()
    where = Path(e.filename).resolve() if e.filename else folder
    if not where.is_relative_to(folder):
        return str(e)
    why = unwritable(where.parent if where != folder else folder) or unwritable(folder)
    why = why or f"{e.strerror or e}: {where}"
    return f"{why}: {name} {folder} must be a folder this user can write in, for what it does not hold yet"


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
