"""Search: keras-tuner's Hyperband schedule, promotions as keras-tuner 1.1.2 (restart) and >= 1.2 (continue),
early stopping and checkpoints as keras-tuner reads them, one store shared by a family giving each member
exactly its search alone, kill-and-resume, a damaged store."""
import logging
import math

import numpy as np
import pytest

from cacicd.models import hyperband as H
from cacicd.models import search as S
from cacicd.config import SearchSpace, get_profile
from cacicd.models.curves import CurveStore
from cacicd.models.labels import LabelContext
from test_train import fake_splits, make_dataset

PAPER_TABLE = [  # (bracket, round, configurations, epochs at the end of the round), keras-tuner 1.1, (150, 3)
    (4, 0, 98, 2), (4, 1, 33, 6), (4, 2, 11, 17), (4, 3, 4, 50), (4, 4, 2, 150),
    (3, 0, 41, 6), (3, 1, 14, 17), (3, 2, 5, 50), (3, 3, 2, 150),
    (2, 0, 18, 17), (2, 1, 6, 50), (2, 2, 2, 150),
    (1, 0, 9, 50), (1, 1, 3, 150),
    (0, 0, 6, 150)]


def test_schedule_of_the_paper_by_hand():
    # s_max + 1 = 5 divisions of 150 by 3 while >= 1; ceil(1 + log3 150) = 6;
    # bracket b starts ceil(6 / (b + 1) * 3^b): 98, 41, 18, 9, 6 = 172 an iteration
    sched = H.schedule(150, 3, 2)
    got = [(r.bracket, r.round, r.size, r.epochs) for r in sched if r.iteration == 0]
    assert got == PAPER_TABLE
    assert [(r.bracket, r.round, r.size, r.epochs) for r in sched if r.iteration == 1] == PAPER_TABLE
    assert [r.size for r in sched if r.round == 0 and r.iteration == 0] == [98, 41, 18, 9, 6]
    assert H.n_configurations(150, 3, 2) == 344 == 2 * (98 + 41 + 18 + 9 + 6)
    first = [r for r in sched if r.iteration == 0 and r.bracket == 4]
    assert [r.initial_epoch for r in first] == [0, 2, 6, 17, 50]  # each round continues the previous one
    assert H.n_configurations(get_profile("paper").max_epochs, 3, get_profile("paper").hyperband_iterations) == 344


def test_schedule_of_the_smaller_profiles():
    # default: 9 epochs: brackets 2, 1, 0; ceil(1 + log3 9) = 3; 9 -> 3 -> 1, 5 -> 2, 3
    assert [(r.bracket, r.round, r.size, r.epochs) for r in H.schedule(9, 3, 1)] == [
        (2, 0, 9, 1), (2, 1, 3, 3), (2, 2, 1, 9), (1, 0, 5, 3), (1, 1, 2, 9), (0, 0, 3, 9)]
    # 3 epochs: brackets 1, 0; ceil(1 + log3 3) = 2; 3 -> 1, then 2: 5 configurations an iteration
    assert [(r.bracket, r.round, r.size, r.epochs) for r in H.schedule(3, 3, 1)] == [(1, 0, 3, 1), (1, 1, 1, 3),
                                                                                     (0, 0, 2, 3)]
    d = get_profile("default")
    assert (d.max_epochs, d.hyperband_factor) == (3, 3)
    assert H.n_configurations(d.max_epochs, d.hyperband_factor, d.hyperband_iterations) == 20  # every search
    assert not hasattr(d, "method_iterations")  # one budget for every search: the comparisons are fair
    # smoke: 2 epochs, factor 2: brackets 1, 0; ceil(1 + log2 2) = 2; 2 -> 1, then 2
    s = get_profile("smoke")
    assert [(r.bracket, r.round, r.size, r.epochs) for r in H.schedule(s.max_epochs, s.hyperband_factor, 1)] == [
        (1, 0, 2, 1), (1, 1, 1, 2), (0, 0, 2, 2)]
    assert H.max_epochs_trained(9, 3, 1) == 9 * 1 + 3 * 2 + 1 * 6 + 5 * 3 + 2 * 6 + 3 * 9
    with pytest.raises(ValueError, match="factor >= 2"):
        H.schedule(9, 1)


def test_sampling_shares_units_and_dropout_and_follows_the_space():
    space = SearchSpace(num_layers=(1, 4), units=(256, 1024, 256), dropout=(0.0, 0.8), batchnorm=(False, True))
    cfgs = [S.sample_config(space, {"lam": ("loguniform", 1e-15, 5e-6)}, [0, k]) for k in range(200)]
    assert cfgs[0] == S.sample_config(space, {"lam": ("loguniform", 1e-15, 5e-6)}, [0, 0])  # reproducible
    assert {c["num_layers"] for c in cfgs} == {1, 2, 3, 4} and {c["units"] for c in cfgs} == {256, 512, 768, 1024}
    assert all(0 <= c["dropout"] <= 0.8 and 1e-15 <= c["loss_lam"] <= 5e-6 for c in cfgs)
    p = S.network_params({"num_layers": 3, "units": 512, "dropout": 0.25, "batchnorm": True})
    assert p == {"num_layers": 3, "batchnorm": True, "units_0": 512, "dropout_0": 0.25, "units_1": 512,
                 "dropout_1": 0.25}  # one value for every hidden layer
    assert S.loss_params({"num_layers": 1, "loss_gamma": 2.0}) == {"gamma": 2.0}


def _tuner_grid_probabilities(n: int) -> np.ndarray:
    """keras-tuner 1.1.2's Int on a grid of n values: u -> low + u (high - low), rounded to the nearest value,
    so a value takes an interval of u of width 1 / (n - 1), the two end values half of one."""
    p = np.full(n, 1.0 / (n - 1))
    p[[0, -1]] /= 2
    return p


def test_tuner_value_rounds_to_the_nearest_grid_value_as_keras_tuner_1_1_2():
    assert S.tuner_value(0.0, 1, 8, 1) == 1 and S.tuner_value(0.9999, 1, 8, 1) == 8
    assert S.tuner_value(0.5 / 7 - 1e-9, 1, 8, 1) == 1 and S.tuner_value(0.5 / 7 + 1e-9, 1, 8, 1) == 2
    assert S.tuner_value(1.5 / 7 + 1e-9, 1, 8, 1) == 3  # 1 + u * 7 = 2.5+ -> 3
    assert S.tuner_value(0.5 / 23 - 1e-9, 256, 6144, 256) == 256 and S.tuner_value(0.5 / 23 + 1e-9, 256, 6144,
                                                                                    256) == 512
    assert S.tuner_value(0.25, 0.0, 0.8) == pytest.approx(0.2)  # Float without step: linear
    assert S.tuner_value(0.5, 1e-15, 5e-6, log=True) == pytest.approx(1e-15 * (5e-6 / 1e-15) ** 0.5)
    assert S.tuner_choice(0.4999, (False, True)) is False and S.tuner_choice(0.5, (False, True)) is True
    # the expected probabilities by hand: 8 layer counts, 24 unit counts (ends at half weight)
    np.testing.assert_allclose(_tuner_grid_probabilities(8), [1 / 14] + [1 / 7] * 6 + [1 / 14])
    np.testing.assert_allclose(_tuner_grid_probabilities(24), [1 / 46] + [1 / 23] * 22 + [1 / 46])


def _chi2_p(values: list[int], grid: list[int], probs: np.ndarray) -> float:
    from scipy import stats

    counts = np.array([np.sum(np.asarray(values) == g) for g in grid])
    assert counts.sum() == len(values)  # nothing off the grid
    return float(stats.chisquare(counts, probs * len(values)).pvalue)


def test_sampling_follows_keras_tuner_1_1_2_distribution():
    """100,000 configurations of the paper's space: num_layers and units against keras-tuner's end-at-half-weight
    probabilities (chi-square), dropout uniform, batchnorm half the time, a log-sampled loss parameter uniform in
    log; the default profile's smaller space likewise."""
    from scipy import stats

    space = SearchSpace()
    assert (space.num_layers, space.units) == ((1, 8), (256, 6144, 256))
    n = 100_000
    cfgs = [S.sample_config(space, {"lam": ("loguniform", 1e-15, 5e-6)}, [7, k]) for k in range(n)]
    layers, units = [c["num_layers"] for c in cfgs], [c["units"] for c in cfgs]
    assert _chi2_p(layers, list(range(1, 9)), _tuner_grid_probabilities(8)) > 0.01
    assert _chi2_p(units, list(range(256, 6145, 256)), _tuner_grid_probabilities(24)) > 0.01
    # the uniform alternative is rejected: the ends really are at half weight
    assert _chi2_p(layers, list(range(1, 9)), np.full(8, 1 / 8)) < 1e-6
    assert stats.kstest([c["dropout"] for c in cfgs], stats.uniform(0, 0.8).cdf).pvalue > 0.01
    assert abs(np.mean([c["batchnorm"] for c in cfgs]) - 0.5) < 0.01
    lam = np.log([c["loss_lam"] for c in cfgs])
    assert stats.kstest(lam, stats.uniform(np.log(1e-15), np.log(5e-6) - np.log(1e-15)).cdf).pvalue > 0.01
    small = get_profile("default").space
    assert (small.num_layers, small.units) == ((1, 3), (128, 1024, 128))
    cfgs = [S.sample_config(small, None, [8, k]) for k in range(20_000)]
    assert _chi2_p([c["num_layers"] for c in cfgs], [1, 2, 3], np.array([0.25, 0.5, 0.25])) > 0.01
    assert _chi2_p([c["units"] for c in cfgs], list(range(128, 1025, 128)), _tuner_grid_probabilities(8)) > 0.01


def _epochs(val, dev):
    return [{"val": {"k": v}, "dev": {"k": d}} for v, d in zip(val, dev)]


def test_early_stopping_and_best_epoch_read_by_hand():
    # val improves at epochs 1, 2 then not at 3, 4: patience 2 stops after epoch 4
    eps = _epochs([0.1, 0.3, 0.3, 0.2, 0.9], [0.5, 0.4, 0.6, 0.6, 0.9])
    o = S.read_curve(eps, "k", budget=9, patience=2)
    assert (o.n_read, o.best_epoch, o.best_dev, o.done) == (4, 3, 0.6, True)  # ties keep the first best (strict)
    o = S.read_curve(eps, "k", budget=2, patience=2)  # the round's budget ends first
    assert (o.n_read, o.best_epoch, o.done) == (2, 1, True)
    o = S.read_curve(eps[:3], "k", budget=9, patience=2)  # the curve is too short to know
    assert not o.done and o.n_read == 3
    nan = _epochs([None, None], [None, 0.2])
    o = S.read_curve(nan, "k", budget=9, patience=2)
    assert o.done and o.n_read == 2 and o.best_epoch == 2  # a missing value never improves


@pytest.fixture(scope="module")
def fam_data():
    from cacicd.models import outputs

    ds = make_dataset(n=300, n_ingredients=30, n_leaves=40, seed=3)
    tr, dv, te = fake_splits(ds, n_folds=1)[0]
    ctx = LabelContext.from_labels(ds.codes, ds.Y[tr])
    rules = {"identity": None, "rollup": outputs.make_output_rule("rollup", ctx),
             "rolldown": outputs.make_output_rule("rolldown", ctx)}
    data = S.FamilyData.split(ds.X[tr], ds.Y[tr], ds.X[dv], ds.Y[dv], "bce", ctx, rules)
    return ds, data, te


SMOKE = get_profile("smoke").replace(executions_per_trial=2, learning_rate=3e-3, batch_size=64, max_epochs=3,
                                     hyperband_factor=3)
MEMBERS = [S.Member(f"naive_{t}", t) for t in ("f1_micro", "f1_macro", "ndcg", "auprc_micro", "auprc_macro",
                                              "auroc_micro", "auroc_macro")]
MEMBERS += [S.Member("rollup_ndcg", "ndcg", "rollup"), S.Member("rolldown_ndcg", "ndcg", "rolldown")]


def _search(members, data, path, profile=SMOKE):
    store = CurveStore(path)
    settings = S.TrainSettings(profile.learning_rate, profile.batch_size, profile.patience, "cpu", "float32")
    fs = S.FamilySearch(members, data, profile, store, iterations=profile.hyperband_iterations,
                        seed_material=[0, 0], loss_space=None, settings=settings)
    return fs, fs.run()


def _test_scores(fs, result, ds, te, data):
    from cacicd.models.network import build_mlp
    from cacicd.models.train import predict_proba

    best = result["best"]
    m = build_mlp(ds.X.shape[1], len(ds.codes), S.network_params(best["config"]))
    S.load_state(m, fs.checkpoint(best["checkpoint"]))
    p = predict_proba(m, ds.X[te], precision="float32")
    rule = data.rules.get(result["rule"])
    return rule(p) if rule is not None else p


@pytest.mark.parametrize("promotion", ["restart", "continue"])
def test_promoted_nodes_by_hand(fam_data, tmp_path, promotion):
    # (3 epochs, factor 3): bracket 1 trains 3 configurations 1 epoch, promotes the best for 3 - 1 = 2 more
    # epochs; bracket 0 trains 2 configurations 3 epochs. A patience of 9 stops nothing early.
    ds, data, te = fam_data
    prof = SMOKE.replace(executions_per_trial=1, patience=9, promotion=promotion)
    fs, res = _search([MEMBERS[2]], data, tmp_path, prof)
    trials = res["naive_ndcg"]["trials"]
    assert [(t["bracket"], t["round"], t["initial_epoch"], t["epochs"]) for t in trials] == [
        (1, 0, 0, 1), (1, 0, 0, 1), (1, 0, 0, 1), (1, 1, 1, 3), (0, 0, 0, 3), (0, 0, 0, 3)]
    recs = fs.store.records()
    nodes = [recs[t["nodes"][0]] for t in trials]
    assert [len(r["epochs"]) for r in nodes] == [1, 1, 1, 2, 3, 3]  # epochs trained: epochs - initial_epoch
    promoted = trials[3]
    first = max(trials[:3], key=lambda t: (t["score"], -t["index"]))
    assert promoted["config"] == first["config"] and promoted["promoted_from"] == first["index"]
    assert promoted["best_epoch"] in (2, 3)  # keras-tuner's label: initial_epoch + the local epoch
    if promotion == "restart":  # keras-tuner 1.1.2: a fresh initialisation (its own seed), no parent
        assert all(r["parent"] is None for r in nodes) and promoted["parent"] is None
        assert nodes[3]["seed"] != recs[first["nodes"][0]]["seed"]
        assert len(recs) == 6
    else:  # keras-tuner >= 1.2: continues the first round's checkpoint
        assert nodes[3]["parent"] == promoted["parent"] == first["checkpoint"]
        assert [r["parent"] for r in nodes[:3] + nodes[4:]] == [None] * 5
        assert S.FamilySearch.lineage(fs, promoted["checkpoint"])[0]["epoch"] == 1  # history from the parent on
    assert res["naive_ndcg"]["n_configurations"] == 5 and res["naive_ndcg"]["n_trials"] == 6


@pytest.mark.slow
@pytest.mark.parametrize("promotion", ["restart", "continue"])
def test_family_search_equals_each_search_alone(fam_data, tmp_path, promotion):
    ds, data, te = fam_data
    prof = SMOKE.replace(promotion=promotion)
    fs, shared = _search(MEMBERS, data, tmp_path / "shared", prof)
    epochs_shared = sum(len(r["epochs"]) for r in fs.store.records().values())
    epochs_alone = 0
    for m in MEMBERS:
        one, alone = _search([m], data, tmp_path / m.name, prof)
        epochs_alone += sum(len(r["epochs"]) for r in one.store.records().values())
        a, b = alone[m.name], shared[m.name]
        for k in ("config", "best_epoch", "best_dev", "score", "checkpoint", "index"):
            assert a["best"][k] == b["best"][k], (m.name, k)
        assert [t["config"] for t in a["trials"]] == [t["config"] for t in b["trials"]]
        np.testing.assert_array_equal(_test_scores(one, a, ds, te, data), _test_scores(fs, b, ds, te, data))
    assert b["n_configurations"] == 5 and b["n_trials"] == 6  # smoke: 3 + 2 configurations, 1 promotion
    assert epochs_shared < epochs_alone
    assert len({shared[m.name]["best"]["checkpoint"] for m in MEMBERS}) >= 1


def test_top_model_is_the_checkpoint_of_the_best_execution(fam_data, tmp_path):
    ds, data, te = fam_data
    fs, res = _search([MEMBERS[2]], data, tmp_path / "one")
    r = res["naive_ndcg"]
    best = max(r["trials"], key=lambda t: (t["score"], -t["index"]))
    assert r["best"] == best
    recs = fs.store.records()
    outs = [S.read_curve(recs[k]["epochs"], "ndcg|identity", best["epochs"] - best["initial_epoch"], SMOKE.patience)
            for k in best["nodes"]]
    assert math.isclose(best["score"], np.mean([o.best_dev for o in outs]))  # executions averaged
    i = int(np.argmax([o.best_dev for o in outs]))
    assert best["checkpoint"] == f"{best['nodes'][i]}@{outs[i].best_epoch}"
    # the kept checkpoint predicts what the search scored on dev
    from cacicd.models.network import build_mlp
    from cacicd.models.train import predict_proba, target_score

    m = build_mlp(ds.X.shape[1], len(ds.codes), S.network_params(best["config"]))
    S.load_state(m, fs.checkpoint(best["checkpoint"]))
    assert math.isclose(target_score("ndcg", data.Y_dev, predict_proba(m, data.X_dev, precision="float32")),
                        best["best_dev"], rel_tol=1e-6)
    assert fs.store.checkpoint_names() == {best["checkpoint"]}  # only what a search still needs is kept
    # a checkpoint deleted to save room, or damaged, is rebuilt identically by training its node again
    for damage in ("delete", "flip"):
        path = fs.store.checkpoint_path(best["checkpoint"])
        if damage == "delete":
            fs.store.keep_checkpoints(set())
        else:
            raw = bytearray(path.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            path.write_bytes(bytes(raw))
        m2 = build_mlp(ds.X.shape[1], len(ds.codes), S.network_params(best["config"]))
        S.load_state(m2, fs.checkpoint(best["checkpoint"]))
        for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
            assert (a == b).all()
        assert fs.store.checkpoint_path(best["checkpoint"]) == path  # the same content, the same name


def test_resume_trains_only_what_is_missing(fam_data, tmp_path):
    ds, data, te = fam_data
    fs, first = _search(MEMBERS[:3], data, tmp_path)
    n = fs.nodes_trained
    lines = (tmp_path / "curves.jsonl").read_text().splitlines(keepends=True)
    # as if the process had been killed while training the last node: its record was never written
    (tmp_path / "curves.jsonl").write_text("".join(lines[:-1]))
    fs2, again = _search(MEMBERS[:3], data, tmp_path)
    assert fs2.nodes_trained == 1 and n > 1
    assert again == first


def test_damaged_store_keeps_what_is_sound(fam_data, tmp_path, caplog):
    ds, data, te = fam_data
    fs, first = _search(MEMBERS[:3], data, tmp_path)
    n = fs.nodes_trained
    f = tmp_path / "curves.jsonl"
    raw = bytearray(f.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 200] = b"\x00" * 200  # a damaged disk block in the middle of the file
    f.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="cacicd.models.curves"):
        fs2, again = _search(MEMBERS[:3], data, tmp_path)
    assert f"curve store {f}:" in caplog.text and "damaged and dropped" in caplog.text
    assert 1 <= fs2.nodes_trained < n  # only the networks of the damaged lines are trained again
    assert again == first
    f.write_bytes(b"\x00" * 1000)  # nothing sound left: the whole search is trained again, same result
    fs3, third = _search(MEMBERS[:3], data, tmp_path)
    assert fs3.nodes_trained == n and third == first


def test_readme_states_what_each_profile_runs():
    from pathlib import Path

    from cacicd.config import PROFILES

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for p in PROFILES.values():
        assert f"- {p.name}: {H.budget_text(p)}\n" in readme, p.name
    assert "20 configurations for every search" in H.budget_text(PROFILES["default"])
    assert "344 configurations for every search, 3 execution(s)" in H.budget_text(PROFILES["paper"])
