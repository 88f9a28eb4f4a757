"""Reading the engine's cache for the comparisons (cacicd.experiments.collect)."""
import pandas as pd

from cacicd.evaluation.compare import tidy_results
from cacicd.experiments import collect


def test_cached_tidy_reads_every_done_experiment(tmp_path):
    from test_experiments import TINY
    from test_train import make_dataset

    from cacicd.experiments import engine as E

    ds = make_dataset(n=200, n_ingredients=20, n_leaves=30, seed=2)
    assert collect.cached_tidy(TINY, ds, tmp_path).empty  # nothing cached yet, nothing computed
    rs = E.run("dummy", TINY, ds, cache_dir=tmp_path, folds=[1], progress=False)
    t = collect.cached_tidy(TINY, ds, tmp_path)
    assert set(t["model"]) == {"dummy"} and set(t["fold"]) == {1}
    pd.testing.assert_frame_equal(t.reset_index(drop=True), tidy_results({"dummy": rs}).reset_index(drop=True))
    assert collect.cached_tidy(TINY, ds, tmp_path, exclude=["dummy"]).empty
    res = collect.cached_results(TINY, ds, tmp_path, names=["dummy"])
    assert [r.fold for r in res["dummy"]] == [1] and res["dummy"][0].scores.shape[1] == len(ds.codes)


def test_full_label_experiments_leave_out_subset_models():
    from cacicd.experiments import engine as E

    names = collect.full_label_experiments()
    assert "naive_ndcg" in names and "mcloss_ndcg" in names and "irnw_ndcg" in names
    for left in ("dummy", "cherry_f1_micro", "per_level_ndcg", "level_chapter_ndcg", "level_billing_ndcg"):
        assert left not in names
    assert all(E.EXPERIMENTS[n].labels == "all" and not E.EXPERIMENTS[n].parts for n in names)


def test_cached_results_repair_runs_what_is_done(tmp_path):
    from test_experiments import TINY
    from test_train import make_dataset

    from cacicd.experiments import engine as E

    ds = make_dataset(n=200, n_ingredients=20, n_leaves=30, seed=2)
    assert collect.done_folds(TINY, ds, tmp_path) == {}
    E.run("dummy", TINY, ds, cache_dir=tmp_path, folds=[0], progress=False)
    assert collect.done_folds(TINY, ds, tmp_path) == {"dummy": [0]}
    res = collect.cached_results(TINY, ds, tmp_path, repair=True)
    assert list(res) == ["dummy"] and [r.fold for r in res["dummy"]] == [0]
    t = collect.run_tidy(["dummy"], TINY, ds, tmp_path)
    assert set(t["model"]) == {"dummy"}


def test_cached_params_lists_every_cached_fold(tmp_path):
    from test_experiments import TINY
    from test_train import make_dataset

    from cacicd.experiments import engine as E

    ds = make_dataset(n=200, n_ingredients=20, n_leaves=30, seed=2)
    assert collect.cached_params(TINY, ds, tmp_path) == []
    rs = E.run("dummy", TINY, ds, cache_dir=tmp_path, progress=False)
    got = collect.cached_params(TINY, ds, tmp_path, repair=False)
    assert [(n, k) for n, k, _ in got] == [("dummy", r.fold) for r in rs]
    assert [p for _, _, p in got] == [r.best_params for r in rs]
