"""Monte-Carlo splits: sizes, independence, reproducibility, person grouping, files."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cacicd.data.dataset import Dataset
from cacicd.data.splits import PAPER_FRACTION, Split, load_splits, make_splits, save_splits, split_indices


def _ids(n, seed=1):
    return np.random.default_rng(seed).choice(10**12, size=n, replace=False) - 5 * 10**11


def test_paper_sizes_and_disjoint_parts():
    ids = _ids(58976)
    splits = make_splits(ids)
    assert len(splits) == 3
    for s in splits:
        assert len(s.dev) == len(s.test) == 5000
        assert np.intersect1d(s.dev, s.test).size == 0
        assert np.isin(s.dev, ids).all() and np.isin(s.test, ids).all()
    # independent draws: different folds overlap only by chance (about 5000 * 5000 / 58976 ≈ 424)
    inter = np.intersect1d(splits[0].test, splits[1].test).size
    assert 300 < inter < 550


def test_reproducible_and_recorded_seed():
    ids = _ids(1000)
    a, b = make_splits(ids, seed=7), make_splits(ids, seed=7)
    assert [s.seed for s in a] == [7, 8, 9]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.dev, y.dev)
        np.testing.assert_array_equal(x.test, y.test)
    # a split is its own seed's draw: fold 1 of seed 7 is fold 0 of seed 8
    np.testing.assert_array_equal(a[1].test, make_splits(ids, n_folds=1, seed=8)[0].test)
    assert not np.array_equal(a[0].test, make_splits(ids, seed=8)[0].test)


def test_small_data_scales_sizes():
    assert len(make_splits(_ids(100), fraction=0.15)[0].dev) == 15
    assert len(make_splits(_ids(5), fraction=0.01)[0].dev) == 1  # at least one stay
    with pytest.raises(ValueError, match="too few"):
        make_splits(_ids(2), fraction=0.1)
    with pytest.raises(ValueError, match="fraction"):
        make_splits(_ids(100), fraction=0.6)
    with pytest.raises(ValueError, match="unique"):
        make_splits([1, 1, 2, 3])


def test_grouped_by_person_keeps_persons_on_one_side():
    rng = np.random.default_rng(3)
    persons = rng.integers(0, 400, size=1200)
    ids = _ids(1200)
    for s in make_splits(ids, fraction=0.1, person_ids=persons, seed=5):
        side = np.zeros(len(ids), dtype=int)
        side[np.isin(ids, s.dev)] = 1
        side[np.isin(ids, s.test)] = 2
        for p in np.unique(persons):
            assert len(set(side[persons == p])) == 1
        assert 120 <= len(s.dev) < 120 + np.bincount(persons).max()
        assert 120 <= len(s.test) < 120 + np.bincount(persons).max()
        assert (side == 0).any() and s.grouped


def test_save_load_roundtrip_and_indices(tmp_path):
    ids = _ids(50)
    splits = make_splits(ids, fraction=0.1, seed=2)
    save_splits(splits, tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "s").iterdir())[:2] == ["fold0_dev.txt", "fold0_test.txt"]
    back = load_splits(tmp_path / "s")
    for a, b in zip(splits, back):
        assert a.seed == b.seed and np.array_equal(a.dev, b.dev) and np.array_equal(a.test, b.test)
    n = len(ids)
    ds = Dataset(sp.csr_matrix((n, 2), dtype=np.float32), sp.csr_matrix((n, 1), dtype=np.uint8), ["sex", "age"],
                 ["001-139"], ids, np.arange(n), np.array(["unknown"] * n, dtype=object))
    tr, dv, te = split_indices(ds, back[0])
    assert len(tr) + len(dv) + len(te) == n
    assert set(ids[dv]) == set(back[0].dev) and set(ids[te]) == set(back[0].test)
    assert len(np.unique(np.concatenate([tr, dv, te]))) == n
    with pytest.raises(ValueError, match="not in the dataset"):
        split_indices(ds, Split(0, 0, np.array([123456789012345]), back[0].test))
    (tmp_path / "s" / "fold1_test.txt").write_text("1\n2\n")
    with pytest.raises(ValueError, match="holds 2 ids"):
        load_splits(tmp_path / "s")


def test_paper_fraction_value():
    assert PAPER_FRACTION == pytest.approx(5000 / 58976)
