import numpy as np
import pytest
import torch

from cacicd import icd9
from cacicd.models.labels import LabelContext, TreeLayers
from cacicd.models.outputs import OUTPUT_RULES, make_output_rule

# Small tree: 001-139 > 001-009 > {001 > {0010, 0011}, 002 > 0020}
CODES = ["001-139", "001-009", "001", "0010", "0011", "002", "0020"]
EDGES = [(0, 1), (1, 2), (2, 3), (2, 4), (1, 5), (5, 6)]
DESC = {0: {0, 1, 2, 3, 4, 5, 6}, 1: {1, 2, 3, 4, 5, 6}, 2: {2, 3, 4}, 3: {3}, 4: {4}, 5: {5, 6}, 6: {6}}
ANC = {0: {0}, 1: {0, 1}, 2: {0, 1, 2}, 3: {0, 1, 2, 3}, 4: {0, 1, 2, 4}, 5: {0, 1, 5}, 6: {0, 1, 5, 6}}


def small_ctx(codes=CODES):
    return LabelContext(list(codes), icd9.levels_of(codes), np.zeros(len(codes), dtype=np.int64), 10)


def test_small_tree_edges_match_hand_written_tree():
    ctx = small_ctx()
    assert sorted(zip(ctx.parent_idx.tolist(), ctx.child_idx.tolist())) == sorted(EDGES)
    assert ctx.tree().depth.tolist() == [0, 1, 2, 3, 3, 2, 3]


def test_rollup_and_rolldown_by_hand():
    ctx = small_ctx()
    p = np.array([[0.8, 0.2, 0.3, 0.9, 0.05, 0.4, 0.6]], dtype=np.float32)
    before = p.copy()
    up = make_output_rule("rollup", ctx)(p)
    down = make_output_rule("rolldown", ctx)(p)
    np.testing.assert_allclose(up, [[0.9, 0.9, 0.9, 0.9, 0.05, 0.6, 0.6]])
    np.testing.assert_allclose(down, [[0.8, 0.2, 0.2, 0.2, 0.05, 0.2, 0.2]])
    assert up.dtype == np.float32 and down.dtype == np.float32
    np.testing.assert_array_equal(p, before)  # input untouched


@pytest.mark.parametrize("rule", OUTPUT_RULES)
def test_rules_properties_on_random_probs(rule):
    ctx = small_ctx()
    rng = np.random.default_rng(0)
    p = rng.random((50, len(CODES))).astype(np.float32)
    f = make_output_rule(rule, ctx)
    q = f(p)
    np.testing.assert_array_equal(f(q), q)  # idempotent
    par, chi = ctx.parent_idx, ctx.child_idx
    if rule == "identity":
        np.testing.assert_array_equal(q, p)
    else:  # both make p(parent) >= p(child): roll-up by raising parents, roll-down by lowering children
        assert np.all(q[:, par] >= q[:, chi])
        assert np.all(q >= p) if rule == "rollup" else np.all(q <= p)
    # on probabilities already consistent with the tree, every rule changes nothing
    consistent = make_output_rule("rollup", ctx)(p)
    np.testing.assert_array_equal(f(consistent), consistent)
    consistent = make_output_rule("rolldown", ctx)(p)
    np.testing.assert_array_equal(f(consistent), consistent)


def test_bad_rule_and_bad_shape_are_clear_errors():
    ctx = small_ctx()
    with pytest.raises(ValueError, match="unknown output rule 'rollsideways'"):
        make_output_rule("rollsideways", ctx)
    with pytest.raises(ValueError, match=r"expected \(n, 7\)"):
        make_output_rule("rollup", ctx)(np.zeros((3, 6), dtype=np.float32))


def test_tree_layers_reject_non_trees():
    with pytest.raises(ValueError, match="several parents"):
        TreeLayers(np.array([0, 1]), np.array([2, 2]), 3)
    with pytest.raises(ValueError, match="cycle"):
        TreeLayers(np.array([0, 1]), np.array([1, 0]), 2)
    with pytest.raises(ValueError, match="out of range"):
        TreeLayers(np.array([0]), np.array([5]), 3)


def test_nearest_present_ancestor_is_the_parent_when_the_parent_is_missing():
    codes = ["001-139", "0010", "0011", "002"]  # 001-009 and 001 missing
    par, chi = icd9.hierarchy_edges(codes, nearest=True)
    assert sorted(zip(par.tolist(), chi.tolist())) == [(0, 1), (0, 2), (0, 3)]
    assert icd9.hierarchy_edges(codes)[0].size == 0  # default: direct parents only (unchanged)
    ctx = small_ctx(codes)
    p = np.array([[0.1, 0.7, 0.2, 0.3]], dtype=np.float32)
    np.testing.assert_allclose(make_output_rule("rollup", ctx)(p), [[0.7, 0.7, 0.2, 0.3]])
    np.testing.assert_allclose(make_output_rule("rolldown", ctx)(p), [[0.1, 0.1, 0.1, 0.1]])


def icd9_leaves() -> set[str]:
    """The ICD-9-CM codes without children."""
    codes = icd9.all_codes()
    return set(codes) - {icd9.parent(c) for c in codes}


def real_label_set(seed: int, n_leaves: int = 300, drop: float = 0.0) -> list[str]:
    """Codes rolled up from random ICD-9-CM leaves, optionally with a fraction of inner codes dropped."""
    rng = np.random.default_rng(seed)
    is_leaf = icd9_leaves()
    leaves = [c for c in icd9.all_codes() if c in is_leaf]
    codes = sorted(icd9.rollup(rng.choice(leaves, n_leaves, replace=False)))
    if drop:
        codes = [c for c in codes if c in is_leaf or rng.random() >= drop]
    return list(rng.permutation(codes))


def slow_sets(codes):
    """D(j) and A(j) among the labels, straight from icd9.ancestors, by Python loops."""
    index = {c: i for i, c in enumerate(codes)}
    anc = {i: {i} | {index[a] for a in icd9.ancestors(c) if a in index} for i, c in enumerate(codes)}
    desc = {i: set() for i in range(len(codes))}
    for k, a in anc.items():
        for j in a:
            desc[j].add(k)
    return desc, anc


@pytest.mark.parametrize("drop", [0.0, 0.3])
def test_rules_equal_slow_reference_on_real_hierarchy(drop):
    codes = real_label_set(1, drop=drop)
    desc, anc = slow_sets(codes)
    ctx = small_ctx(codes)
    rng = np.random.default_rng(2)
    p = rng.random((4, len(codes))).astype(np.float32)
    want_up = np.array([[max(row[k] for k in desc[j]) for j in range(len(codes))] for row in p])
    want_down = np.array([[min(row[k] for k in anc[j]) for j in range(len(codes))] for row in p])
    np.testing.assert_array_equal(make_output_rule("rollup", ctx)(p), want_up)
    np.testing.assert_array_equal(make_output_rule("rolldown", ctx)(p), want_down)
    tree = ctx.tree()
    np.testing.assert_array_equal(tree.max_down(torch.from_numpy(p)).numpy(), want_up)
    np.testing.assert_array_equal(tree.min_up(torch.from_numpy(p)).numpy(), want_down)
