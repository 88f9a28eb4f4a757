"""The claims' decision rules (cacicd.paper.verdicts), on hand-made numbers."""
import numpy as np
import pandas as pd
import pytest

from cacicd.paper import verdicts as V


@pytest.mark.parametrize("pct, n, thr, want", [(80.0, 10, 75, True), (75.0, 10, 75, False), (99.0, 0, 75, None)])
def test_share_above(pct, n, thr, want):
    assert V.share_above(pct, n, thr) is want


@pytest.mark.parametrize("pct, n, want", [(100.0, 3, True), (99.9, 3, False), (100.0, 0, None)])
def test_share_all(pct, n, want):
    assert V.share_all(pct, n) is want


@pytest.mark.parametrize("p, want", [(0.155, True), (0.05, False), (0.01, False), (np.nan, None)])
def test_not_significant(p, want):
    assert V.not_significant(p) is want


@pytest.mark.parametrize("x, want", [(0.1, True), (0.0, False), (-1.0, False), (np.nan, None)])
def test_positive(x, want):
    assert V.positive(x) is want


def test_gap_and_equivalence():
    assert V.largest_gap_points([0.001, -0.007, np.nan]) == pytest.approx(0.7)
    assert np.isnan(V.largest_gap_points([]))
    assert V.equivalent(0.7, 2.0) is True and V.equivalent(2.5, 2.0) is False
    assert V.equivalent(np.nan, 2.0) is None


def test_ahead_from_and_everywhere():
    k = [1, 2, 3, 4, 5]
    assert V.ahead_from(k, [-0.1, 0.2, -0.1, 0.1, 0.3]) == 4
    assert V.ahead_from(k, [0.1] * 5) == 1
    assert V.ahead_from(k, [0.1, 0.1, 0.1, 0.1, -0.1]) is None
    assert V.ahead_everywhere([0.1, 0.2], 0.05) is True
    assert V.ahead_everywhere([0.1, -0.2], 0.05) is False
    assert V.ahead_everywhere([0.1, 0.2], -0.05) is False


def test_all_better():
    rel = pd.DataFrame({25: [1.0, 2.0], 50: [0.5, 0.1]}, index=["a", "b"])
    assert V.all_better(rel) is True
    worse = rel.copy()
    worse[50] = [0.5, -0.1]
    assert V.all_better(worse) is False
    assert V.all_better(rel, same_model=True) is None
    assert V.all_better(rel * np.nan) is None


def test_mean_relative_counts_the_reference_as_zero():
    rel = pd.DataFrame({25: [np.nan, 2.0], 50: [np.nan, 4.0]}, index=["ref", "b"])
    m = V.mean_relative(rel, "ref")
    assert m["ref"] == 0 and m["b"] == 3
    assert rel.loc["ref"].isna().all()  # the input is left as it was


def test_pairs_and_below():
    pairs = [("mic1", "mac1"), ("mic2", "mac2")]
    assert V.distinct_pairs(pairs, {"mic1": ["mic1", "mac1"]}) == [("mic2", "mac2")]
    m = pd.Series({"mic1": 1.0, "mac1": 0.5, "mic2": 2.0, "mac2": 1.0})
    assert V.below_for_every_pair(m, pairs) is True
    assert V.below_for_every_pair(m.replace({0.5: 3.0}), pairs) is False
    assert V.below_for_every_pair(m, []) is None
    assert V.below_for_every_pair(m.replace({0.5: np.nan}), pairs) is None


def test_is_first_and_lower():
    r = pd.Series({"ndcg": 0.9, "lrap": 0.8})
    assert V.is_first(r, "ndcg", 10) is True and V.is_first(r, "lrap", 10) is False
    assert V.is_first(r, "ndcg", 2) is None and V.is_first(pd.Series(dtype=float), "ndcg", 10) is None
    e = pd.Series({"a": 0.01, "b": 0.02})
    assert V.lower(e, "a", "b") is True and V.lower(e, "b", "a") is False
    assert V.lower(e, "a", "b", same_model=True) is None and V.lower(e.replace({0.02: np.nan}), "a", "b") is None


def test_level_rules():
    lv = ["chapter", "billing"]
    assert V.significantly_worse_everywhere({"chapter": -1, "billing": -2}, {"chapter": 0.01, "billing": 0.02}, lv)
    assert not V.significantly_worse_everywhere({"chapter": -1, "billing": -2}, {"chapter": 0.01, "billing": 0.2}, lv)
    # per level worse at both levels (rel <= 0), one difference beyond 2 SEM but not significant: within bounds
    assert V.not_worse_within_error({"chapter": -1, "billing": -5}, {"chapter": 1, "billing": 1},
                                    {"chapter": 0.5, "billing": 0.3}, lv)
    # a significant difference beyond 2 SEM breaks it
    assert not V.not_worse_within_error({"chapter": -1, "billing": -5}, {"chapter": 1, "billing": 1},
                                        {"chapter": 0.5, "billing": 0.01}, lv)
    # better for the other model at both levels breaks it too
    assert not V.not_worse_within_error({"chapter": 1, "billing": 1}, {"chapter": 1, "billing": 1},
                                        {"chapter": 0.5, "billing": 0.5}, lv)


def test_better_significant_only_at():
    tt = pd.DataFrame({"level": ["billing", "billing", "chapter"], "R": [75, 90, 75], "mean_diff": [-1, -2, 1]})
    assert V.better_significant_only_at(tt, tt.iloc[[0, 1]]) is True
    assert V.better_significant_only_at(tt, tt.iloc[[2]]) is False  # significant elsewhere
    assert V.better_significant_only_at(tt, tt.iloc[[]]) is False  # nothing significant
    low = pd.DataFrame({"level": ["billing"], "R": [50], "mean_diff": [-1]})
    assert V.better_significant_only_at(low, low) is False  # below R = 75


def test_simple_rules():
    assert V.all_above_one({"epoch_s": 1.5, "inference_s": 2.0, "train_s": 0.5}, ["epoch_s", "inference_s"]) is True
    assert V.all_above_one({"epoch_s": 0.9, "inference_s": 2.0}, ["epoch_s", "inference_s"]) is False
    assert V.none_significant(pd.DataFrame()) is True and V.none_significant(pd.DataFrame({"p": [0.01]})) is False
    assert V.all_positive([1, 2]) is True and V.all_positive([1, -2]) is False and V.all_positive([]) is False
    assert V.significantly_greater(0.1, 0.01) is True and V.significantly_greater(0.1, 0.2) is False
    assert V.significantly_greater(-0.1, 0.01) is False and V.significantly_greater(None, None) is None
    assert V.all_hold([True, True]) is True and V.all_hold([True, False]) is False
    assert V.all_hold([True, None]) is None


def _hp(rows):
    return pd.DataFrame([{"experiment": e, "fold": f, "parameter": p, "value": v} for e, f, p, v in rows])


def test_model_shape_and_shallow_wide():
    """The search's shared `units` / `dropout` (best_params as the engine saves them), through
    `report.hyperparameter_table`; means over the models with a hidden layer; no NaN where a number exists."""
    from cacicd.paper import report

    hp = report.hyperparameter_table([
        ("naive_ndcg", 0, {"num_layers": 3, "units": 2000, "dropout": 0.6, "batchnorm": True}),
        ("naive_ndcg", 1, {"num_layers": 5, "units": 3000, "dropout": 0.5, "batchnorm": False}),
        ("naive_f1_micro", 0, {"num_layers": 1, "units": 6144, "dropout": 0.1, "batchnorm": False}),  # no hidden layer
        ("focal_ndcg", 0, {"num_layers": 9, "units": 256, "dropout": 0.0, "batchnorm": False, "loss_gamma": 2.0}),
        ("per_level_ndcg", 0, {"level_chapter_ndcg": {"num_layers": 2, "units": 512, "dropout": 0.2}})])
    shape = V.model_shape(hp, ["naive_ndcg", "naive_f1_micro", "per_level_ndcg"])
    assert shape == {"n": 3, "n_hidden": 2, "share_2_3_layers": pytest.approx(1 / 3), "mean_units": 2500.0,
                     "mean_dropout": pytest.approx(0.55)}  # 2, 4 and 0 hidden layers; the composite has its own
    shape = V.model_shape(hp, ["naive_ndcg"])
    assert shape["share_2_3_layers"] == 0.5 and all(np.isfinite(v) for v in shape.values())
    assert V.shallow_wide(shape, True) is True
    assert V.shallow_wide(shape, False) is None
    assert V.shallow_wide(dict(shape, mean_units=500.0), True) is False
    lr = V.model_shape(hp, ["naive_f1_micro"])
    assert (lr["n"], lr["n_hidden"], lr["share_2_3_layers"]) == (1, 0, 0.0) and V.shallow_wide(lr, True) is False
    assert V.shallow_wide(V.model_shape(hp, ["nothing"]), True) is None


def test_shape_evidence_in_its_three_cases():
    """The §3.6.2 claim's evidence: no model, models without a hidden layer, and means over those with one."""
    assert V.shape_evidence({"n": 0}) == "no model of the seven target metrics in the cache"
    assert V.shape_evidence({"n": 1, "n_hidden": 0, "share_2_3_layers": 0.0}) == (
        "1 models: 0 % with 2–3 hidden layers; none has a hidden layer")
    shape = {"n": 3, "n_hidden": 2, "share_2_3_layers": 1 / 3, "mean_units": 2500.0, "mean_dropout": 0.55}
    assert V.shape_evidence(shape) == ("3 models: 33 % with 2–3 hidden layers; over the 2 with hidden layers, "
                                       "mean units 2500, mean dropout 0.55")


def test_space_reaches():
    assert V.space_reaches((2, 5), (16, 4096), (0.0, 0.8)) is True
    assert V.space_reaches((2, 3), (16, 512), (0.0, 0.8)) is False  # units too small
    assert V.space_reaches((5, 8), (16, 4096), (0.0, 0.8)) is False  # too deep


def test_within_spread():
    assert V.within_spread(2.0, 1.92, 0.19, 0.05) is True
    assert V.within_spread(2.5, 1.92, 0.19, np.nan) is False  # NaN spread of ours counts 0
    assert V.within_spread(2.0, 1.92, 0.19, 0.05, comparable=False) is None


def test_higher_everywhere():
    a, b = pd.Series({"chapter": 0.5, "billing": 0.3}), pd.Series({"chapter": 0.4, "billing": 0.2})
    assert V.higher_everywhere(a, b) is True and V.higher_everywhere(b, a) is False
