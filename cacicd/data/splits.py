"""Monte-Carlo dev/test splits (spec section 4), drawn from recorded seeds and saved as id files.

Split k is drawn independently of the others with numpy.random.default_rng(seed + k). Dev and test
each hold round(fraction · n_stays) stays (at least 1; the paper: 5,000 of 58,976); train is the
rest. With person_ids, whole persons are drawn in a random order, filling dev and then test until
each reaches its size (so a part may exceed it by the last person's other stays), and every stay of
one person falls in one part. Files: fold<k>_dev.txt and fold<k>_test.txt (one visit id a line)
and splits.json (seeds, sizes, options).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cacicd.config import PAPER_SPLIT, PAPER_STAYS
from cacicd.data.dataset import Dataset
from cacicd.files import atomic_write_text

PAPER_FRACTION = PAPER_SPLIT / PAPER_STAYS


@dataclass(frozen=True)
class Split:
    """One Monte-Carlo split: dev and test visit ids (sorted int64); train is every other stay."""

    fold: int
    seed: int
    dev: np.ndarray
    test: np.ndarray
    grouped: bool = False


def _part_size(n: int, fraction: float) -> int:
    if not 0 < fraction < 0.5:
        raise ValueError(f"split fraction must be in (0, 0.5), got {fraction}")
    size = max(1, int(round(fraction * n)))
    if 2 * size >= n:
        raise ValueError(f"{n} stays are too few for dev and test sets of {size} stays each and a train set")
    return size


def make_splits(visit_ids, n_folds: int = 3, fraction: float = PAPER_FRACTION, seed: int = 0,
                person_ids=None) -> list[Split]:
    """n_folds independent dev/test draws over visit_ids (n,), optionally grouped by person_ids (n,)."""
    ids = np.asarray(visit_ids, dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError("visit ids must be unique to be split")
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    size = _part_size(len(ids), fraction)
    if person_ids is not None:
        persons = np.asarray(person_ids)
        if persons.shape != ids.shape:
            raise ValueError(f"person_ids has shape {persons.shape}, visit_ids {ids.shape}")
        uniq, inverse = np.unique(persons, return_inverse=True)
        if len(uniq) < 3:
            raise ValueError(f"{len(uniq)} persons are too few for person-grouped train, dev and test sets")
    out = []
    for k in range(n_folds):
        rng = np.random.default_rng(seed + k)
        if person_ids is None:
            perm = rng.permutation(len(ids))
            dev, test = ids[perm[:size]], ids[perm[size:2 * size]]
        else:
            order = rng.permutation(len(uniq))
            counts = np.bincount(inverse, minlength=len(uniq))[order]
            cum = np.cumsum(counts)
            n_dev = int(np.searchsorted(cum, size) + 1)  # persons until dev reaches its size
            n_test = int(np.searchsorted(cum, cum[n_dev - 1] + size) + 1) - n_dev
            if n_dev + n_test >= len(uniq):  # keep at least one person for train
                raise ValueError(f"{len(uniq)} persons are too few for dev and test sets of {size} stays each")
            part = np.full(len(uniq), 0)
            part[order[:n_dev]] = 1
            part[order[n_dev:n_dev + n_test]] = 2
            dev, test = ids[part[inverse] == 1], ids[part[inverse] == 2]
        out.append(Split(k, seed + k, np.sort(dev), np.sort(test), person_ids is not None))
    return out


def save_splits(splits: list[Split], folder: str | Path) -> Path:
    """Write fold<k>_dev.txt, fold<k>_test.txt and splits.json (written last) to folder."""
    folder = Path(folder)
    for s in splits:
        for part in ("dev", "test"):
            atomic_write_text(folder / f"fold{s.fold}_{part}.txt", "".join(f"{int(i)}\n" for i in getattr(s, part)))
    meta = {"n_folds": len(splits), "folds": [{"fold": s.fold, "seed": s.seed, "dev": len(s.dev),
                                                "test": len(s.test), "grouped_by_person": s.grouped} for s in splits]}
    atomic_write_text(folder / "splits.json", json.dumps(meta, indent=1))
    return folder


def load_splits(folder: str | Path) -> list[Split]:
    """Read splits written by `save_splits` (checks the id files against splits.json)."""
    folder = Path(folder)
    if not (folder / "splits.json").exists():
        raise FileNotFoundError(f"no splits in {folder} (splits.json missing)")
    meta = json.loads((folder / "splits.json").read_text())
    out = []
    for f in meta["folds"]:
        parts = {}
        for part in ("dev", "test"):
            path = folder / f"fold{f['fold']}_{part}.txt"
            if not path.exists():
                raise FileNotFoundError(f"{path} missing (listed in {folder / 'splits.json'})")
            lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            try:
                parts[part] = np.array([int(x) for x in lines], dtype=np.int64)
            except ValueError:
                raise ValueError(f"{path}: every line must be one integer visit id") from None
            if len(parts[part]) != f[part]:
                raise ValueError(f"{path} holds {len(parts[part])} ids, splits.json says {f[part]}")
        out.append(Split(f["fold"], f["seed"], parts["dev"], parts["test"], f.get("grouped_by_person", False)))
    return out


def split_indices(dataset: Dataset, split: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, dev, test) row indices of the dataset for a split (sorted int64 arrays)."""
    ids = np.asarray(dataset.visit_ids, dtype=np.int64)
    order = np.argsort(ids)
    rows = {}
    for part in ("dev", "test"):
        want = np.asarray(getattr(split, part), dtype=np.int64)
        pos = np.searchsorted(ids[order], want)
        pos = np.minimum(pos, len(ids) - 1)
        ok = ids[order][pos] == want
        if not ok.all():
            raise ValueError(f"split {split.fold}: {int((~ok).sum())} {part} visit id(s) are not in the dataset "
                             f"(e.g. {', '.join(str(x) for x in want[~ok][:3])})")
        rows[part] = np.sort(order[pos])
    if np.intersect1d(rows["dev"], rows["test"]).size:
        raise ValueError(f"split {split.fold}: dev and test share stays")
    mask = np.ones(len(ids), dtype=bool)
    mask[rows["dev"]] = False
    mask[rows["test"]] = False
    return np.flatnonzero(mask), rows["dev"], rows["test"]
