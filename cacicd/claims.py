"""The paper's claims, checked against this run's numbers, with the wording computed from the result."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .io import atomic_write_text


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and whether this run supports it."""

    section: str  # e.g. "3.1"
    key: str  # short stable identifier, e.g. "cherry_picking_hurts_recall"
    paper: str  # the claim as the paper states it
    supported: bool | None  # None: cannot be checked with this run (e.g. too few folds)
    evidence: str  # the numbers of this run that decide it

    def sentence(self) -> str:
        """A one-line verdict computed from the result."""
        verdict = {True: "SUPPORTED", False: "NOT SUPPORTED", None: "NOT CHECKABLE"}[self.supported]
        return f"[{verdict}] §{self.section} {self.paper} — this run: {self.evidence}"


def check(section: str, key: str, paper: str, supported: bool | None, evidence: str) -> Claim:
    """Build a claim and print its verdict (the notebooks' computed prose)."""
    c = Claim(section, key, paper, None if supported is None else bool(supported), evidence)
    print(c.sentence())
    return c


def save_claims(claims: list[Claim], name: str, tables_dir: str | Path) -> Path:
    """Write claims as tables_dir/claims_<name>.json (the replication report counts them)."""
    path = Path(tables_dir) / f"claims_{name}.json"
    atomic_write_text(path, json.dumps([asdict(c) for c in claims], indent=1))
    return path


def load_claims(tables_dir: str | Path) -> list[Claim]:
    """Every claim saved under tables_dir."""
    out = []
    for p in sorted(Path(tables_dir).glob("claims_*.json")):
        out.extend(Claim(**d) for d in json.loads(p.read_text()))
    return out
