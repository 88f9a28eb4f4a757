"""The store of learning curves that the searches of one family share: a folder of plain files.

A *node* is one training run of one configuration with one seed, from scratch or from a parent
checkpoint (`"<node>@<epoch>"`). Its record holds, per epoch, the training loss and every member
search's objective on the validation split and on dev. Records are lines of `curves.jsonl`, each
carrying the SHA-256 of its text: only the search's driver appends to it, a later line of a node
replaces an earlier one, and a damaged line (a cut write, a damaged disk) is dropped with a warning
naming the file, so its node is trained again; every sound line is kept. Checkpoints (weights at an
epoch) are files `checkpoints/<node>@<epoch>.<sha256[:16]>.pt`, of any size, written atomically by
whichever process trained the node (workers of other machines see them through a shared cache
folder), checked against their name when read, and deleted once no search needs them.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

from cacicd.files import atomic_write_text, created_mode, file_record

logger = logging.getLogger(__name__)

CURVES_FILE = "curves.jsonl"
CHECKPOINT_DIR = "checkpoints"
_HASH_CHARS = 16  # hex digits of a checkpoint file's SHA-256 in its name


def _line(obj: dict) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return f"{hashlib.sha256(text.encode()).hexdigest()[:16]} {text}\n"


def _parse(line: bytes) -> dict | None:
    """The object of a line written by `_line` (its line break cut off), or None when the line is damaged."""
    try:
        digest, _, text = line.decode("utf-8").partition(" ")
    except UnicodeDecodeError:
        return None
    if len(digest) != 16 or hashlib.sha256(text.encode()).hexdigest()[:16] != digest:
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and isinstance(obj.get("node"), str) else None


def _scan(lines: Iterable[bytes]) -> tuple[dict[str, dict], int]:
    """Node -> record of the sound lines (a later line of a node wins), and how many lines are damaged."""
    out: dict[str, dict] = {}
    bad = 0
    for b in lines:
        obj = _parse(b)
        if obj is None:
            bad += 1
        else:
            out[obj["node"]] = obj["record"]
    return out, bad


def node_of(ckpt: str) -> str:
    """The node of a checkpoint name "<node>@<epoch>"."""
    return ckpt.rsplit("@", 1)[0]


class _HashingWriter(io.RawIOBase):
    """A binary file that also hashes what is written to it."""

    def __init__(self, f):
        self.f, self.sha = f, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.sha.update(b)
        return self.f.write(b)


def write_checkpoint(folder: str | Path, ckpt: str, model: torch.nn.Module) -> Path:
    """Save a model's weights as `<folder>/<ckpt>.<sha256[:16]>.pt` (atomically, streamed: no copy in memory)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{ckpt}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), created_mode())  # mkstemp makes it 0600, private to its owner
            w = _HashingWriter(f)
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, w)
        path = folder / f"{ckpt}.{w.sha.hexdigest()[:_HASH_CHARS]}.pt"
        os.replace(tmp, path)
        return path
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def checkpoint_files(folder: str | Path) -> dict[str, Path]:
    """{checkpoint name: file} of the checkpoint files in `folder` (temporary files aside)."""
    out = {}
    for p in Path(folder).glob("*.pt"):
        stem = p.name[:-3]
        name, dot, digest = stem.rpartition(".")
        if dot and len(digest) == _HASH_CHARS and "@" in name:
            out[name] = p
    return out


def find_checkpoint(folder: str | Path, ckpt: str) -> Path | None:
    """The file of checkpoint `ckpt` ("<node>@<epoch>") in `folder` (the first by name if several), else None."""
    return min(Path(folder).glob(f"{ckpt}.*.pt"), default=None)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The state dict saved in a checkpoint file, or None when its bytes do not match the hash in its name."""
    path = Path(path)
    if file_record(path)["sha256"][:_HASH_CHARS] != path.name[:-3].rpartition(".")[2]:
        logger.warning("checkpoint %s is damaged (its content does not match its name); it is rebuilt", path)
        return None
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def read_records(path: str | Path) -> dict[str, dict]:
    """Node -> record of every sound line of a `curves.jsonl` (a later line of a node wins), read only: a damaged
    line is skipped, nothing is rewritten; {} when the file is absent."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return {}
    return _scan(raw.split(b"\n"))[0]  # an unterminated last line too (CurveStore drops it: it appends)


class CurveStore:
    """Node records and checkpoint files of one family search, in `folder` (one writer: the search's driver)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / CURVES_FILE
        self.checkpoint_dir = self.folder / CHECKPOINT_DIR
        self._records: dict[str, dict] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a line break; else a line cut by a kill (dropped)
        self._records, bad = _scan(lines)
        bad += int(bool(tail))
        if bad:
            logger.warning("curve store %s: %d of %d line(s) damaged and dropped (%d network(s) kept); what they "
                           "held is trained again", self.path, bad, len(lines) + int(bool(tail)), len(self._records))
            self._rewrite()

    def _rewrite(self) -> None:
        atomic_write_text(self.path, "".join(_line({"node": k, "record": r}) for k, r in self._records.items()))

    def record(self, node: str) -> dict | None:
        """The record of a trained node, else None."""
        return self._records.get(node)

    def records(self) -> dict[str, dict]:
        """Every trained node's record."""
        return dict(self._records)

    def put(self, record: dict) -> None:
        """Append a trained node's record (replacing an earlier, shorter one of the same node)."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(_line({"node": record["node"], "record": record}))
            f.flush()
            os.fsync(f.fileno())
        self._records[record["node"]] = record

    def checkpoint_path(self, ckpt: str) -> Path | None:
        """The file of checkpoint `ckpt` ("<node>@<epoch>"), else None."""
        return find_checkpoint(self.checkpoint_dir, ckpt)

    def checkpoint(self, ckpt: str) -> dict[str, torch.Tensor] | None:
        """The weights saved as `ckpt`, else None (absent, or damaged: then its file is removed)."""
        p = self.checkpoint_path(ckpt)
        if p is None:
            return None
        state = read_checkpoint(p)
        if state is None:
            p.unlink(missing_ok=True)
        return state

    def checkpoint_names(self) -> set[str]:
        """Names of the checkpoints kept."""
        return set(checkpoint_files(self.checkpoint_dir))

    def keep_checkpoints(self, keep: Iterable[str]) -> int:
        """Delete every checkpoint file not named in `keep` (and leftovers of killed writers); returns how many."""
        keep = set(keep)
        n = 0
        for name, p in checkpoint_files(self.checkpoint_dir).items():
            if name not in keep:
                p.unlink(missing_ok=True)
                n += 1
        for p in self.checkpoint_dir.glob(".*.tmp"):
            p.unlink(missing_ok=True)
        return n

    def compact(self) -> None:
        """Rewrite `curves.jsonl` with one line per node (the replaced lines dropped)."""
        if self.path.exists():
            self._rewrite()
