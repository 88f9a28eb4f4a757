"""The curve store's files: checkpoints of any size written atomically, content-named and checked when read;
records as checksummed lines that survive damage line by line."""
import resource
import time

import numpy as np
import pytest
import torch

from cacicd.config import PAPER_STAYS, get_profile
from cacicd.models.curves import CurveStore, checkpoint_files, read_checkpoint, write_checkpoint
from cacicd.models.network import MLP


def test_records_are_lines_that_survive_a_cut_write(tmp_path):
    store = CurveStore(tmp_path)
    recs = [{"node": f"n{i}", "epochs": [{"epoch": 1, "loss": 0.5 + i}]} for i in range(3)]
    for r in recs:
        store.put(r)
    longer = dict(recs[1], epochs=recs[1]["epochs"] * 2)
    store.put(longer)  # a later line of a node replaces the earlier one
    assert CurveStore(tmp_path).records() == {"n0": recs[0], "n1": longer, "n2": recs[2]}
    with open(tmp_path / "curves.jsonl", "a") as f:
        f.write('0123456789abcdef {"node": "n3", "rec')  # a writer killed mid-line
    again = CurveStore(tmp_path)
    assert again.records() == {"n0": recs[0], "n1": longer, "n2": recs[2]}
    again.compact()
    assert len((tmp_path / "curves.jsonl").read_text().splitlines()) == 3


def test_checkpoints_are_content_named_and_checked(tmp_path):
    torch.manual_seed(0)
    m = MLP(20, 7, [8], [0.1], batchnorm=True)
    p = write_checkpoint(tmp_path, "abc@3", m)
    assert p.name.startswith("abc@3.") and p.suffix == ".pt" and checkpoint_files(tmp_path) == {"abc@3": p}
    assert write_checkpoint(tmp_path, "abc@3", m) == p  # the same weights, the same file
    state = read_checkpoint(p)
    for k, v in m.state_dict().items():
        assert torch.equal(state[k], v)
    raw = bytearray(p.read_bytes())
    raw[-10] ^= 1
    p.write_bytes(bytes(raw))
    assert read_checkpoint(p) is None  # damaged: refused, never loaded
    store = CurveStore(tmp_path.parent / "s")
    write_checkpoint(store.checkpoint_dir, "n@1", m)
    write_checkpoint(store.checkpoint_dir, "n@2", m)
    (store.checkpoint_dir / ".n@3.junk.tmp").write_bytes(b"left by a killed writer")
    assert store.keep_checkpoints({"n@2"}) == 1 and store.checkpoint_names() == {"n@2"}
    assert not list(store.checkpoint_dir.glob(".*.tmp"))


@pytest.mark.slow
def test_largest_configuration_of_the_paper_round_trips(tmp_path):
    # num_layers 8 -> 7 hidden blocks of 6,144 units, 1,166 inputs, 9,336 labels: 291 M parameters, 1.16 GB in
    # float32 (more than SQLite's or PostgreSQL's largest value)
    space = get_profile("paper").space
    n_hidden, units = space.num_layers[1] - 1, space.units[1]
    assert PAPER_STAYS and (n_hidden, units) == (7, 6144)
    torch.manual_seed(0)
    with torch.no_grad():
        m = MLP(1166, 9336, [units] * n_hidden, [0.5] * n_hidden, batchnorm=True)
    n_params = sum(p.numel() for p in m.parameters())
    assert 290e6 < n_params < 292e6
    t0 = time.perf_counter()
    p = write_checkpoint(tmp_path, "largest@1", m)
    t_write = time.perf_counter() - t0
    assert p.stat().st_size > 1.16e9
    t0 = time.perf_counter()
    state = read_checkpoint(p)
    t_read = time.perf_counter() - t0
    for k, v in m.state_dict().items():
        assert torch.equal(state[k], v), k
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"largest configuration: {n_params / 1e6:.1f} M parameters, {p.stat().st_size / 1e9:.2f} GB file, "
          f"written in {t_write:.1f} s, read back and checked in {t_read:.1f} s; peak RSS {peak:.2f} GiB")
    assert np.isfinite(peak)
