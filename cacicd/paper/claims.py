"""The paper's claims, checked against this run's numbers, with the wording computed from the result.

Verdict rule (`RULE`): a run gives verdicts only where its numbers can support one. On the smoke profile
(numbers meaningless by design) and on data whose test folds hold fewer than `MIN_TEST_STAYS` stays
(the MIMIC-III demo: 129 stays, about 19 a fold) every claim is "not checkable", saying why; its numbers
are kept in the evidence. A notebook states its run once with `configure(profile, test_stays)`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cacicd.files import atomic_write_text

MIN_TEST_STAYS = 500
RULE = (f"Verdicts are withheld (not checkable) on the smoke profile, whose numbers are meaningless by design, "
        f"and when a test fold holds fewer than {MIN_TEST_STAYS} stays (too few for the differences the paper "
        "reports; the MIMIC-III demo has about 19 a fold); the numbers are kept in the evidence.")
_withheld: str | None = None


def withheld_reason(profile: str, test_stays: int) -> str | None:
    """Why a run's verdicts are withheld under `RULE` (None: they are given)."""
    why = (["smoke profile: its numbers are meaningless by design"] if profile == "smoke" else []) + (
        [f"{test_stays} test stays a fold, fewer than {MIN_TEST_STAYS}"] if test_stays < MIN_TEST_STAYS else [])
    return "; ".join(why) or None


def configure(profile: str, test_stays: int) -> str | None:
    """Apply `RULE` to the claims checked from now on in this process; returns the reason verdicts are withheld."""
    global _withheld
    _withheld = withheld_reason(profile, int(test_stays))
    if _withheld:
        print(f"Verdicts withheld in this run: {_withheld}.")
    return _withheld


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and whether this run supports it."""

    section: str  # e.g. "3.1"
    key: str  # short stable identifier, e.g. "cherry_picking_hurts_recall"
    paper: str  # the claim as the paper states it
    supported: bool | None  # None: cannot be checked with this run (e.g. too few folds, or withheld)
    evidence: str  # the numbers of this run that decide it
    withheld: str = ""  # why `RULE` withheld the verdict ("" when it did not)

    def sentence(self) -> str:
        """A one-line verdict computed from the result."""
        verdict = {True: "SUPPORTED", False: "NOT SUPPORTED", None: "NOT CHECKABLE"}[self.supported]
        return f"[{verdict}] §{self.section} {self.paper} — this run: {self.evidence}"


def check(section: str, key: str, paper: str, supported: bool | None, evidence: str) -> Claim:
    """Build a claim (its verdict withheld under `RULE` when `configure` said so) and print it."""
    if _withheld:
        c = Claim(section, key, paper, None, f"verdict withheld ({_withheld}); numbers: {evidence}", _withheld)
    else:
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
