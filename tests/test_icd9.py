import numpy as np
import pytest

from cacicd import icd9


def test_table1_icd9_column_matches_paper():
    assert icd9.table1_icd9_counts() == {
        "chapter": 19, "subchapter": 154, "3digit": 1234, "4digit": 7473,
        "5digit": 8846, "billing": 12167, "all": 17726,
    }


@pytest.mark.parametrize("raw, norm", [
    ("038.9", "0389"), (" 0389 ", "0389"), ("v15.82", "V1582"), ("E849.0", "E8490"), ("001-139", "001-139"),
])
def test_normalize_accepts_dots_spaces_and_case(raw, norm):
    assert icd9.normalize(raw) == norm
    assert icd9.is_known(raw)


def test_codes_are_strings_not_numbers():
    assert icd9.is_known("0389") and icd9.is_known("389")
    assert icd9.level("389") == "3digit" and icd9.level("0389") == "4digit"
    with pytest.raises(TypeError, match="strings"):
        icd9.normalize(389)


@pytest.mark.parametrize("code, lvl, anc", [
    ("0389", "4digit", ("038", "030-041", "001-139")),
    ("V1582", "5digit", ("V158", "V15", "V10-V19", "V01-V91")),
    ("E8490", "4digit", ("E849", "E846-E849", "E000-E999")),
    ("E849", "3digit", ("E846-E849", "E000-E999")),
    ("001-009", "subchapter", ("001-139",)),
    ("001-139", "chapter", ()),
])
def test_levels_and_ancestors(code, lvl, anc):
    assert icd9.level(code) == lvl
    assert icd9.ancestors(code) == anc
    assert icd9.depth(code) == len(anc) + 1


def test_billing_is_non_ev_leaf():
    assert icd9.is_billing("0389") and icd9.is_billing("4019")
    assert not icd9.is_billing("038")  # has children
    assert not icd9.is_billing("V1582") and not icd9.is_billing("E8490")  # E/V leaves
    assert icd9.level("V1582") == "5digit"  # but they keep their digit level


def test_unknown_codes_are_reported_not_guessed():
    with pytest.raises(icd9.UnknownCodeError, match="'9999X'"):
        icd9.rollup(["0389", "9999X"])
    known, unknown = icd9.split_known(["0389", "A41.9", "V30.00"])
    assert known == ["0389", "V3000"] and unknown == ["A41.9"]


def test_rollup():
    assert icd9.rollup(["0389", "0381"]) == {"0389", "0381", "038", "030-041", "001-139"}


def test_cherry_pick_filter():
    assert icd9.excluded_by_belief("800-999") and icd9.excluded_by_belief("8001")
    assert icd9.excluded_by_belief("V3000") and icd9.excluded_by_belief("E8490")
    # 765 itself stays in (the authors' startswith('765.')); its 4- and 5-digit children are dropped
    assert not icd9.excluded_by_belief("765")
    assert icd9.excluded_by_belief("7651") and icd9.excluded_by_belief("76510") and icd9.excluded_by_belief("76527")
    assert not icd9.excluded_by_belief("764") and not icd9.excluded_by_belief("760-779")
    assert not icd9.excluded_by_belief("7661")  # a neighbour under 764-779, not under 765
    codes = ["4019", "76510", "0389", "765"]
    mask = icd9.cherry_pick_mask(codes, np.array([150, 500, 99, 100]))
    assert mask.tolist() == [True, False, False, True]  # >= 100 occurrences kept, 99 dropped


def test_level_masks_and_edges():
    codes = ["001-139", "030-041", "038", "0389", "V1582"]
    m = icd9.level_masks(codes)
    assert m["billing"].tolist() == [False, False, False, True, False]
    assert m["5digit"].tolist() == [False, False, False, False, True]
    p, c = icd9.hierarchy_edges(codes)
    assert sorted(zip(p.tolist(), c.tolist())) == [(0, 1), (1, 2), (2, 3)]
    A = icd9.ancestor_matrix(codes).toarray()
    assert A[3].tolist() == [1, 1, 1, 1, 0]
    assert icd9.dotted("0389") == "038.9" and icd9.dotted("E8490") == "E849.0"
