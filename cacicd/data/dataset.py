"""The modelling dataset: sparse features and rolled-up labels of hospital stays (spec section 1)."""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from cacicd import icd9
from cacicd.files import Damaged, atomic_write_bytes, atomic_write_text, check_files, jsonable, record_files

DATA_FILES = ("X.npz", "Y.npz", "ids.npz")  # what `Dataset.save` writes before meta.json
# How the "age" feature reaches the model (a loader option, `cacicd.data.sources.load_data`; spec section 1)
AGE_ENCODINGS = {
    "float": "age in years clipped to [0, 89], divided by 89 (our decision)",
    "authors": "1[age > 0], as the authors' models saw it (their input layer was boolean)",
}
DEFAULT_AGE_ENCODING = "float"


@dataclass
class Dataset:
    """Stays as rows. X: [sex, age/89, one column per ingredient]; Y: one column per code, rolled up.

    X: float32 CSR (n_stays, 2 + n_ingredients); Y: uint8 CSR (n_stays, n_codes), all levels.
    codes: undotted ICD-9-CM codes (see `cacicd.icd9`), sorted; features: "sex", "age", then
    ingredient keys. stay_type: one of `cacicd.data.stays.STAY_TYPES` per stay. report: what the loader
    dropped and why.
    """

    X: sp.csr_matrix
    Y: sp.csr_matrix
    features: list[str]
    codes: list[str]
    visit_ids: np.ndarray
    person_ids: np.ndarray
    stay_type: np.ndarray
    source: str = ""
    report: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.X.shape[0]
        checks = {
            "Y rows": self.Y.shape[0],
            "visit_ids": len(self.visit_ids),
            "person_ids": len(self.person_ids),
            "stay_type": len(self.stay_type),
        }
        bad = {k: v for k, v in checks.items() if v != n}
        if bad:
            raise ValueError(f"dataset has {n} stays in X but {bad}")
        if self.X.shape[1] != len(self.features):
            raise ValueError(f"X has {self.X.shape[1]} columns but {len(self.features)} feature names")
        if self.Y.shape[1] != len(self.codes):
            raise ValueError(f"Y has {self.Y.shape[1]} columns but {len(self.codes)} codes")
        if len(np.unique(self.visit_ids)) != n:
            raise ValueError("dataset has duplicated visit ids")

    @property
    def n_stays(self) -> int:
        """Number of stays (rows)."""
        return self.X.shape[0]

    @property
    def levels(self) -> np.ndarray:
        """Level of each label column."""
        return icd9.levels_of(self.codes)

    def level_masks(self) -> dict[str, np.ndarray]:
        """Boolean label masks per report level (chapter … 5digit, billing, all)."""
        return icd9.level_masks(self.codes)

    def code_counts(self) -> np.ndarray:
        """Number of stays carrying each code (after roll-up)."""
        return np.asarray(self.Y.sum(axis=0)).ravel().astype(np.int64)

    def cherry_mask(self, min_count: int = icd9.CHERRY_MIN_COUNT) -> np.ndarray:
        """Mask of the cherry-picked codes (spec section 3)."""
        return icd9.cherry_pick_mask(self.codes, self.code_counts(), min_count)

    def with_age_encoding(self, encoding: str) -> "Dataset":
        """The dataset with its age feature encoded as `encoding` (a key of AGE_ENCODINGS), said in its report."""
        if encoding not in AGE_ENCODINGS:
            raise ValueError(f"unknown age encoding {encoding!r}; choose one of {', '.join(AGE_ENCODINGS)}")
        X = self.X
        if encoding == "authors":
            X = self.X.tocsr(copy=True)
            m = X.indices == self.features.index("age")
            X.data[m] = (X.data[m] > 0).astype(X.dtype)
            X.eliminate_zeros()
        report = {**self.report, "age_encoding": f"{encoding}: {AGE_ENCODINGS[encoding]}"}
        return Dataset(X, self.Y, self.features, self.codes, self.visit_ids, self.person_ids, self.stay_type,
                       self.source, report)

    def subset(self, rows: np.ndarray) -> "Dataset":
        """The dataset restricted to some rows (labels and features unchanged)."""
        rows = np.asarray(rows)
        return Dataset(self.X[rows], self.Y[rows], self.features, self.codes, self.visit_ids[rows],
                       self.person_ids[rows], self.stay_type[rows], self.source, self.report)

    def content_hash(self) -> str:
        """A short SHA-256 over every array and name: equal data, equal hash."""
        h = hashlib.sha256()
        for m in (self.X, self.Y):
            m = m.tocsr()
            m.sort_indices()
            for a in (m.indptr, m.indices, m.data):
                h.update(np.ascontiguousarray(a).tobytes())
        for a in (self.visit_ids, self.person_ids):
            h.update(np.asarray(a, dtype=np.int64).tobytes())
        h.update(json.dumps([self.features, self.codes, [str(s) for s in self.stay_type]]).encode())
        return h.hexdigest()[:16]

    def save(self, folder: str | Path) -> Path:
        """Write the dataset to a folder (npz + json), atomically per file."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, m in (("X", self.X), ("Y", self.Y)):
            buf = io.BytesIO()
            sp.save_npz(buf, m.tocsr(), compressed=True)
            atomic_write_bytes(folder / f"{name}.npz", buf.getvalue())
        buf = io.BytesIO()
        np.savez_compressed(buf, visit_ids=np.asarray(self.visit_ids, dtype=np.int64),
                            person_ids=np.asarray(self.person_ids, dtype=np.int64),
                            stay_type=np.asarray(self.stay_type, dtype="U8"))
        atomic_write_bytes(folder / "ids.npz", buf.getvalue())
        meta = {"features": self.features, "codes": self.codes, "source": self.source,
                "report": self.report, "hash": self.content_hash(),
                "files": record_files(folder, list(DATA_FILES))}
        # meta.json is written last: its presence marks a complete dataset; it records its files' sizes and hashes
        atomic_write_text(folder / "meta.json", json.dumps(meta, indent=1, default=jsonable))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Dataset":
        """Read a dataset written by `save`, its files checked first (`Damaged` names a damaged one)."""
        folder = Path(folder)
        f = folder / "meta.json"
        if not f.exists():
            raise FileNotFoundError(f"no complete dataset in {folder} (meta.json missing)")
        try:
            meta = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Damaged(f"dataset {folder} is damaged: {f} is not valid JSON", [f]) from None
        if not isinstance(meta, dict) or set(meta.get("files") or ()) != set(DATA_FILES):
            raise Damaged(f"dataset {folder} cannot be verified: {f} records no sizes and hashes of "
                          f"{', '.join(DATA_FILES)} (written by an older version)", [f])
        bad = check_files(folder, meta["files"])
        if bad:
            raise Damaged(f"dataset {folder} is damaged: " + "; ".join(f"{p} is {why}" for p, why in bad),
                          [p for p, _ in bad])
        ids = np.load(folder / "ids.npz", allow_pickle=False)
        return cls(sp.load_npz(folder / "X.npz").tocsr(), sp.load_npz(folder / "Y.npz").tocsr(),
                   meta["features"], meta["codes"], ids["visit_ids"], ids["person_ids"],
                   ids["stay_type"].astype(object), meta.get("source", ""), meta.get("report", {}))
