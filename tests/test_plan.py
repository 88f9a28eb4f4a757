"""`cacicd plan`: the schedule's counts by hand, a family's bound, the wall-time simulation, the FLOP and memory
models, expected epochs read back from a real run's store, and a plan that trains nothing, in seconds."""
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from cacicd import cli
from cacicd.config import Profile, SearchSpace, get_profile
from cacicd.experiments import engine as E
from cacicd.experiments import plan as P
from cacicd.models import search
from test_experiments import TINY
from test_train import make_dataset

SMALL = Profile(name="small", n_stays=0, max_epochs=3, hyperband_factor=3, hyperband_iterations=1,
                executions_per_trial=1)


def counts(rounds):
    return [(r.bracket, r.round, r.budget, r.configurations, r.nodes, r.epochs) for r in rounds]


def test_counts_of_a_small_schedule_by_hand():
    # 3 epochs, factor 3: bracket 1 trains 3 configurations 1 epoch, then the best 1 for 2 more (1 -> 3);
    # bracket 0 trains 2 for 3 epochs: 3 + 2 + 6 = 11 epochs a search per execution
    assert counts(P.round_counts(SMALL)) == [(1, 0, 1, 3, 3, 3), (1, 1, 2, 1, 1, 2), (0, 0, 3, 2, 2, 6)]
    assert P.epochs_bound(SMALL) == 11
    three = SMALL.replace(executions_per_trial=3)
    assert counts(P.round_counts(three)) == [(1, 0, 1, 3, 9, 9), (1, 1, 2, 1, 3, 6), (0, 0, 3, 2, 6, 18)]
    assert P.epochs_bound(three) == 33
    assert P.epochs_bound(SMALL.replace(hyperband_iterations=4)) == 44  # the default profile's, per search


def test_the_papers_search_by_hand():
    paper = get_profile("paper")
    # per iteration: 98x2 + 33x4 + 11x11 + 4x33 + 2x100 + 41x6 + 14x11 + 5x33 + 2x100 + 18x17 + 6x33 + 2x100
    # + 9x50 + 3x100 + 6x150 = 3,900 epochs; 2 iterations, 3 executions
    assert P.epochs_bound(paper) == 3_900 * 2 * 3 == 23_400
    rounds = P.round_counts(paper)
    assert sum(r.configurations for r in rounds if r.round == 0) == 344
    assert sum(r.nodes for r in rounds) == 3 * 2 * (98 + 33 + 11 + 4 + 2 + 41 + 14 + 5 + 2 + 18 + 6 + 2 + 9 + 3 + 6)


def test_a_familys_bound_by_hand():
    # 9 members may promote 9 different configurations, but round 1 of bracket 1 has only 3 to choose from:
    # min(9 x 1, 3) = 3 configurations for 2 epochs: 3 + 6 + 6 = 15
    assert counts(P.round_counts(SMALL, 9)) == [(1, 0, 1, 3, 3, 3), (1, 1, 2, 3, 3, 6), (0, 0, 3, 2, 2, 6)]
    assert P.epochs_bound(SMALL, 2) == 3 + 2 * 2 + 6  # 2 members: min(2 x 1, 3) = 2
    # the paper's naive family (9 members), per iteration and execution:
    # bracket 4: 98x2 + min(297, 98)=98 x4 + min(99, 98)=98 x11 + min(36, 98)=36 x33 + min(18, 36)=18 x100 = 4,654
    # bracket 3: 41x6 + 41x11 + 41x33 + 18x100 = 3,850; bracket 2: 18x17 + 18x33 + 18x100 = 2,700
    # bracket 1: 9x50 + 9x100 = 1,350; bracket 0: 6x150 = 900
    assert P.epochs_bound(get_profile("paper"), 9) == (4_654 + 3_850 + 2_700 + 1_350 + 900) * 2 * 3 == 80_724
    # "continue" promotions: a configuration once per member's checkpoint; after a 1-epoch round with one
    # execution each configuration has one checkpoint: still 3 at most
    cont = SMALL.replace(promotion="continue")
    assert counts(P.round_counts(cont, 9))[1] == (1, 1, 2, 3, 3, 6)
    assert counts(P.round_counts(cont.replace(executions_per_trial=2), 9))[1] == (1, 1, 2, 6, 12, 24)
    # a skipped slot in round 0 (keras-tuner gives up after 21 draws) leaves fewer to promote
    assert counts(P.round_counts(SMALL, 9, first=[1, 2]))[:2] == [(1, 0, 1, 1, 1, 1), (1, 1, 2, 1, 1, 2)]


def test_wall_time_simulation_by_hand():
    # 2 workers; search 0: round 0 nodes of 3 s and 1 s, then a round of 2 s; search 1: one node of 1 s.
    # t=0: worker A takes s0's 3 s node, worker B s0's 1 s node; t=1: B takes s1's node; t=2: s1 ends;
    # t=3: s0's round 0 ends, its 2 s node starts: s0 ends at 5
    wall, ends = P.simulate([[[3, 1], [2]], [[1]]], 2)
    assert (wall, ends) == (5.0, [5.0, 2.0])
    assert P.simulate([[[3, 1], [2]], [[1]]], 1)[0] == 7.0  # one worker: the sum
    assert P.simulate([[[3, 1], [2]], [[1]]], 8)[0] == 5.0  # the longest chain of rounds
    assert P.simulate([[[], [2, 2]]], 2) == (2.0, [2.0])  # an empty round ends at once
    with pytest.raises(ValueError, match="workers"):
        P.simulate([[[1]]], 0)


def test_flops_of_a_small_network_by_hand():
    # 10 inputs, 3 active a row; hidden 4 and 5; 6 labels
    # forward: embedding-bag 2x3x4 = 24, dense 2x4x5 = 40, output 2x5x6 = 60: 124
    # training: the embedding-bag twice (forward, weight gradient) 48, dense layers three times 300: 348
    # parameters: 10x4 + 4 + 4x5 + 5 + 5x6 + 6 = 105 (batchnorm: no hidden bias, a scale and shift: 114)
    assert P.network_flops([4, 5], 6, 3, 10) == (124, 348, 105)
    assert P.network_flops([4, 5], 6, 3, 10, batchnorm=True)[2] == 10 * 4 + 8 + 4 * 5 + 10 + 5 * 6 + 6
    assert P.network_flops([], 6, 3, 10) == (36, 72, 66)  # logistic regression: the output is the embedding-bag
    assert P.config_layers({"num_layers": 3, "units": 512, "dropout": 0.1, "batchnorm": True}) == ([512, 512], True)


def test_cost_of_an_epoch_by_hand():
    d = P.SearchData(n_inputs=10, n_labels=6, n_fit=250, n_val=20, n_dev=1030, nnz_x=3.0, nnz_y=2.0)
    inf = math.inf
    only = dict(batch_s=0.0, layer_s=0.0, label_s=0.0, first_s=0.0, pass_s=0.0, train_flops=inf, param_step_s=0.0,
                predict_batch_s=0.0, predict_label_s=0.0, predict_flops=inf, setup_s=0.0, setup_param_s=0.0,
                checkpoint_bytes_s=inf)
    cfg = {"num_layers": 3, "units": 4, "dropout": 0.0, "batchnorm": False}  # hidden 4, 4
    cost = P.CostModel("cpu", "float32", "measured", **{**only, "batch_s": 1.0})
    assert cost.epoch(cfg, d, 100) == 3  # ceil(250 / 100) batches
    cost = P.CostModel("cpu", "float32", "measured", **{**only, "layer_s": 1.0, "label_s": 1.0})
    assert cost.epoch(cfg, d, 100) == 3 * 2 + 250 * 6  # 2 hidden layers a batch; 6 labels a row
    cost = P.CostModel("cpu", "float32", "measured", **{**only, "first_s": 1.0})
    assert cost.epoch(cfg, d, 100) == 3 * 10 * 4  # the first layer's 10 x 4 weights, each batch
    cost = P.CostModel("cpu", "float32", "measured", **{**only, "pass_s": 1.0})
    assert cost.epoch(cfg, d, 100) == 0 and cost.epoch({**cfg, "dropout": 0.5, "batchnorm": True}, d, 100) == 250 * 8 * 2
    cost = P.CostModel("cpu", "float32", "measured", **{**only, "train_flops": 1.0})
    fwd, train, params = P.network_flops([4, 4], 6, 3.0, 10)
    assert cost.epoch(cfg, d, 100) == 250 * train
    cost = P.CostModel("cpu", "float32", "measured", **{**only, "predict_batch_s": 1.0, "predict_flops": 1.0})
    assert cost.epoch(cfg, d, 100, objective_s=7.0) == 1 + 2 + 1050 * fwd + 7  # 1 + 2 prediction batches
    cost = P.CostModel("cpu", "float32", "measured", **{**only, "param_step_s": 1.0, "checkpoint_bytes_s": 4.0})
    assert cost.epoch(cfg, d, 100, extra_batch_s=0.5) == 3 * (0.5 + params) + params
    assert P.CostModel("cpu", "float32", "measured", **{**only, "setup_s": 2.0, "setup_param_s": 1.0}).node_setup(5) == 7
    # workers sharing this machine's cores: every cost scaled by the measured slow-down
    slow = P.CostModel("cpu", "float32", "measured", **{**only, "batch_s": 1.0, "setup_s": 2.0}, contention=1.5)
    assert slow.epoch(cfg, d, 100) == 4.5 and slow.node_setup(5) == 3.0


def test_contention_is_one_for_one_worker():
    from cacicd.config import get_profile

    assert P.contention(get_profile("smoke"), {"num_layers": 1}, None, None, [], workers=1) == 1.0


def test_peak_memory_by_hand():
    d = P.SearchData(n_inputs=10, n_labels=6, n_fit=100, n_val=10, n_dev=20, nnz_x=3.0, nnz_y=2.0)
    cfg = {"num_layers": 3, "units": 4, "dropout": 0.0, "batchnorm": False}
    params = P.network_flops([4, 4], 6, 3.0, 10)[2]
    m = P.peak_memory(cfg, d, 8, bfloat16=True, device="cuda")
    dev, host = m["device"], m["host"]
    # MixedLinear layers 4 -> 4 and 4 -> 6: bfloat16 weight and gradient copies (4 bytes a weight); their float32
    # gradients are never made (KerasAdam reads the bfloat16 ones)
    assert (dev["weights"], dev["gradients"], dev["adam"]) == (4 * params, 4 * (params - 16 - 24), 8 * params)
    assert dev["low_precision_copies"] == 4 * 16 + 4 * 24
    assert dev["logits"] == 18 * 8 * 6 and dev["cuda_context"] == P.CUDA_CONTEXT_BYTES
    assert host["predictions"] == 4 * 30 * 6 * 2  # val + dev probabilities, identity and one rule
    assert P.peak_memory(cfg, d, 8, bfloat16=False, device="cuda")["device"]["low_precision_copies"] == 0
    cpu = P.peak_memory(cfg, d, 8, bfloat16=True, device="cpu")
    assert cpu["device"] == {} and cpu["host"]["weights"] == 4 * params and "cuda_context" not in cpu["host"]


def test_workers_as_the_run_picks_them():
    assert P.resolve_workers("3", "cpu", 1) == 3 and P.resolve_workers(0, "cpu", 1) == 1
    assert P.resolve_workers("auto", "cuda", 1) >= 1
    with pytest.raises(ValueError, match="--workers"):
        P.resolve_workers("many", "cpu", 1)


# ---------------------------------------------------------------------------------------------
# against a real run

@pytest.fixture(scope="module")
def ds():
    return make_dataset(n=400, n_ingredients=40, n_leaves=50, seed=1)


@pytest.fixture(scope="module")
def ran(ds, tmp_path_factory):
    """A tiny run of the naive family on both folds: its cache."""
    cache = tmp_path_factory.mktemp("cache")
    E.run_many(["naive_ndcg"], TINY, ds, cache_dir=cache, progress=False)
    return cache


def _searches(cache: Path) -> list[tuple[dict, dict]]:
    from cacicd.models.curves import read_records

    out = []
    for f in sorted(cache.glob("tiny/*/_search/all-bce-*/fold*/search.json")):
        out.append((json.loads(f.read_text()), read_records(f.parent / "curves.jsonl")))
    return out


def test_expected_epochs_read_back_from_a_runs_store(ran):
    saved = _searches(ran)
    assert len(saved) == 2  # the naive family, folds 0 and 1
    rec = P.read_record(ran, TINY)
    assert rec.searches == {"all-bce": 2}
    rows = rec.rounds["all-bce"]
    nodes, epochs = sum(v[0] for v in rows.values()), sum(v[2] for v in rows.values())
    assert nodes == sum(s["meta"]["nodes_in_store"] for s, _ in saved)  # every network of the stores, once
    assert epochs == sum(s["meta"]["epochs_in_store"] for s, _ in saved)
    bound = P.round_counts(TINY, 9)
    assert {r.shape for r in bound} == set(rows)
    assert sum(v[3] for v in rows.values()) == 2 * sum(r.epochs for r in bound)  # the family's bound, twice
    # each search's own rounds: what ran, against its bound
    one, _, n_epochs = P.search_record(*saved[0])
    assert sum(v[2] for v in one.values()) == saved[0][0]["meta"]["epochs_in_store"] == n_epochs
    # the ratios give back what ran, on the same profile
    ratios = rec.ratios("all-bce")
    exp = P.expected_rounds(bound, P.round_counts(TINY, 1), ratios)
    assert sum(e for _, e in exp) * 2 == pytest.approx(epochs)
    assert sum(n for n, _ in exp) * 2 == pytest.approx(nodes)
    assert P.read_record(ran, TINY.replace(name="other")).searches == {}  # another profile: no record


def test_expected_epochs_without_a_record_are_the_stated_assumption():
    bound, one = P.round_counts(SMALL, 9), P.round_counts(SMALL, 1)
    exp = P.expected_rounds(bound, one, None)
    # whole budgets; networks halfway between one search's (3, 1, 2) and the family's (3, 3, 2)
    assert exp == [(3.0, 3.0), (2.0, 4.0), (2.0, 6.0)]


@pytest.fixture(scope="module")
def planned(ds, ran):
    def fail(*a, **k):
        raise AssertionError("the plan trained a search's network")

    before = sorted(str(p) for p in ran.rglob("*") if "_search" in p.parts)
    mp = pytest.MonkeyPatch()
    mp.setattr(search, "train_node", fail)
    mp.setattr(search, "train_job", fail)
    try:
        t0 = time.perf_counter()
        plan = P.make_plan(TINY, ds, ran, workers=2, device="cpu")
        seconds = time.perf_counter() - t0
    finally:
        mp.undo()
    after = sorted(str(p) for p in ran.rglob("*") if "_search" in p.parts)
    return plan, seconds, before, after


def test_the_plan_trains_nothing_and_runs_in_seconds(planned):
    plan, seconds, before, after = planned
    assert before == after  # nothing written into (or removed from) a search's folder
    assert seconds < 60, f"the plan of a tiny profile took {seconds:.0f} s"  # a few seconds unloaded
    assert plan.seconds <= seconds


def test_the_plan_of_a_tiny_run(planned, ran, ds):
    plan = planned[0]
    assert plan.totals["searches"] == len(plan.searches) == 14 * 2 and not plan.skipped
    naive = [s for s in plan.searches if s.family == "all-bce"]
    assert [s.fold for s in naive] == [0, 1] and all(s.cached for s in naive)
    assert not any(s.cached for s in plan.searches if s.family != "all-bce")
    assert len(naive[0].members) == 9 and naive[0].epochs_bound == P.epochs_bound(TINY, 9)
    other = next(s for s in plan.searches if s.family == "all-focal")
    assert (other.configurations, other.nodes, other.epochs_bound) == (5, 6, 11)
    # the configurations the plan says each search starts are those the run's search started
    for s, (saved, _) in zip(naive, _searches(ran)):
        trials = saved["results"]["naive_ndcg"]["trials"]
        assert [r["config"] for r in s.round0] == [t["config"] for t in trials if t["round"] == 0]
        assert all(r["epoch_s"] > 0 for r in s.round0)
    # expected epochs: the naive family's from the record (what ran, over both folds), the others assumed
    assert plan.expected["from_record"] == ["all-bce"] and "all-focal" in plan.expected["assumed"]
    ran_epochs = sum(saved["meta"]["epochs_in_store"] for saved, _ in _searches(ran))
    assert sum(s.epochs_expected for s in naive) == pytest.approx(ran_epochs)
    assert other.epochs_expected == other.epochs_bound  # assumed: whole budgets
    t = plan.totals
    assert t["epochs_bound"] == sum(s.epochs_bound for s in plan.searches)
    assert 0 < t["device_hours_expected"] and 0 < t["wall_hours_expected"] <= t["device_hours_expected"]
    assert t["wall_hours_expected"] >= t["device_hours_expected"] / plan.workers - 1e-9
    assert plan.calibration["kind"] == "measured" and plan.calibration["train_flops"] > 0
    assert plan.peak_memory["fits"] and plan.peak_memory["host_bytes_per_worker"] > 4 * 4 * plan.peak_memory["params"]
    doc = json.loads(json.dumps(plan.as_dict(), default=str))
    assert {"family", "fold", "configurations", "nodes", "epochs_bound", "epochs_expected",
            "seconds_expected"} <= set(doc["searches"][0])
    assert {"totals", "device", "workers", "calibration", "peak_memory"} <= set(doc)


def test_cuda_without_a_gpu_is_a_stated_estimate(ds, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plan = P.make_plan(TINY, ds, tmp_path, workers=8, device="cuda")
    c = plan.calibration
    assert c["kind"] == "estimate" and "assumed" in c["text"] and c["train_flops"] == P.ASSUMED_GPU.train_flops
    assert plan.workers == 8 and plan.peak_memory["capacity_bytes"] == P.ASSUMED_GPU.memory
    assert "cuda_context" in plan.peak_memory["parts"]["device"]
    assert plan.expected["source"] == "assumption"


def test_cli_prints_the_plan_and_its_json(planned, monkeypatch, capsys):
    plan = planned[0]
    got = []
    monkeypatch.setattr(P, "make_plan", lambda *a, **k: got.append((a, k)) or plan)
    assert cli.main(["plan", "--profile", "paper", "--workers", "8", "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    assert got[0][0] == ("paper", "synthetic", None) and got[0][1]["workers"] == "8" and got[0][1]["device"] == "cuda"
    for text in ("schedule: Hyperband over 3 epochs", "expected epochs: from the record", "expected epochs of",
                 "in all: 28 searches (2 already in the cache)", "wall time on 2 worker(s)", "peak memory",
                 "trained no network"):
        assert text in out
    assert cli.main(["plan", "--profile", "paper", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"]["searches"] == 28 and len(doc["searches"][0]["round0"]) == 5
    assert cli.main(["plan", "--configs"]) == 0
    assert "all-bce fold 0: 5 configurations started" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["plan", "--device", "tpu"])


def test_sample_round_draws_as_the_search_did():
    space = SearchSpace(num_layers=(1, 2), units=(16, 32, 16), dropout=(0.0, 0.3), batchnorm=(False,))
    from cacicd.models import hyperband

    rnd = hyperband.schedule(3, 3, 1)[0]
    tried: set[str] = set()
    a = search.sample_round(space, None, [0, 1], rnd, tried)
    assert len(a) == 3 and len(tried) == 3
    assert search.sample_round(space, None, [0, 1], rnd, set()) == a  # drawn from the seed
    # a space of 2 configurations: the third slot finds none new in 21 draws and is skipped
    tiny = SearchSpace(num_layers=(1, 1), units=(16, 16, 16), dropout=(0.0, 0.0), batchnorm=(False, True))
    assert len(search.sample_round(tiny, None, [0], rnd, set())) == 2


def test_the_calibration_fit_recovers_known_costs():
    # timings made from known coefficients (batch, hidden layer, (row, label), first-layer weight, pass, FLOP)
    truth = np.array([1e-3, 5e-4, 2e-8, 1e-9, 3e-8, 1 / 3e11])
    pts = [{"layers": h, "labels": L, "first": f, "activations": a, "train_flops": F}
           for h, L, f, a, F in [(0, 9000, 9e6, 0, 1e8), (1, 9000, 3e6, 0, 2e10), (2, 9000, 7e6, 0, 7e10),
                                 (0, 19, 2e4, 0, 3e5), (1, 19, 3e6, 0, 1e8), (7, 19, 3e5, 2e5, 1e8),
                                 (1, 19, 3e6, 8e5, 1e8)]]
    A = np.array([[1, p["layers"], 128 * p["labels"], p["first"], p["activations"], p["train_flops"]] for p in pts])
    y = A @ truth
    x, out = P.fit_batches(pts, y, 128)
    np.testing.assert_allclose(x, truth, rtol=1e-6)
    assert out == []
    # a timing taken while the machine was busy is left out where enough others remain to judge it
    A = np.column_stack([np.ones(6), np.arange(6.0)])
    y = 1 + 2 * np.arange(6.0)
    y[3] *= 3
    x, out = P.fit_times(A, y)
    assert out == [3]
    np.testing.assert_allclose(x, [1, 2], rtol=1e-9)
