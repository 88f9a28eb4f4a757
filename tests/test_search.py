"""Search: Hyperband budget, sampling, exact trial budget, and a two-worker study on a real PostgreSQL server."""
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cacicd import search
from cacicd.config import SearchSpace, get_profile


def test_hyperband_budget_by_hand():
    # s_max = floor(log3 150) = 4: ceil(5/5*81) + ceil(5/4*27) + ceil(5/3*9) + ceil(5/2*3) + 5 = 81+34+15+8+5
    assert search.hyperband_budget(150, 3, 1) == 143
    assert search.hyperband_budget(150, 3, 2) == 286
    assert search.hyperband_budget(9, 3, 1) == 9 + 5 + 3  # s_max 2: 9, ceil(3/2*3)=5, 3
    assert search.trial_budget(get_profile("paper")) == 286


def test_sample_params_follow_space():
    space = SearchSpace(num_layers=(1, 4), units=(256, 1024, 256), dropout=(0.0, 0.8), batchnorm=(False, True))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        t = study.ask()
        p = search.sample_params(t, space, {"lam": ("loguniform", 1e-15, 5e-6)})
        n = p["num_layers"]
        assert 1 <= n <= 4 and all(p[f"units_{i}"] % 256 == 0 and 256 <= p[f"units_{i}"] <= 1024 for i in range(n - 1))
        assert f"units_{n - 1}" not in p and 1e-15 <= p["loss_lam"] <= 5e-6
        net, loss = search.split_params(p)
        assert loss == {"lam": p["loss_lam"]} and "loss_lam" not in net
        study.tell(t, 0.0)


def test_budget_is_exact_and_failed_trials_do_not_count(tmp_path):
    profile = get_profile("smoke").replace(max_epochs=3)
    study = search.create_study("s", tmp_path / "s.db", profile)
    calls = []

    def objective(trial):
        calls.append(trial.number)
        search.sample_params(trial, profile.space)
        if trial.number == 1:
            raise RuntimeError("boom")
        for e in range(1, 4):
            trial.report(0.1 * e, e)
        return 0.3

    with pytest.raises(RuntimeError):
        search.run_study(study, objective, 4)
    search.run_study(study, objective, 4)
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 4
    assert states.count(TrialState.FAIL) == 1
    # a second call with the budget reached trains nothing
    n = len(calls)
    search.run_study(study, objective, 4)
    assert len(calls) == n
    params, value = search.best_params(study)
    assert value == 0.3 and "num_layers" in params


def test_recover_marks_running_trials_failed(tmp_path):
    study = search.create_study("r", tmp_path / "r.db", get_profile("smoke"))
    study.ask()  # left RUNNING, as by a killed process
    assert search.recover(study) == 1
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]


WORKER = """
import sys, time
sys.path.insert(0, {tests!r})
from test_train import ensure_metrics, make_dataset
from test_experiments import TINY
ensure_metrics()
from cacicd import experiments as E, train as T
real = T.Trainer.step
def slow(self):
    time.sleep(0.3)
    return real(self)
T.Trainer.step = slow
import os, pathlib
ds = make_dataset(n=400, n_ingredients=40, n_leaves=50, seed=1)
ready = pathlib.Path({cache!r}) / "ready"
ready.mkdir(parents=True, exist_ok=True)
(ready / str(os.getpid())).touch()
t0 = time.time()
while len(list(ready.iterdir())) < 2 and time.time() - t0 < 120:  # start together, however loaded the machine
    time.sleep(0.1)
out = E.search_worker("naive_ndcg", {url!r}, TINY.replace(max_epochs=3, patience=3),
                      ds, fold=0, n_trials=6,
                      cache_dir={cache!r}, progress=False)
print("RESULT", out["n_counted"], out["n_mine"], out["study"])
"""


def _fresh_database(url: str) -> str:
    """A new empty database on the server of `url`, so that no earlier study is found."""
    import uuid

    import psycopg

    name = f"cacicd_search_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    base, _, query = url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_share_one_postgres_study(tmp_path):
    url = os.environ.get("CACICD_TEST_PG_URL")
    if not url:
        pytest.skip("CACICD_TEST_PG_URL is unset: `source .ci/start_postgres.sh` starts a throwaway PostgreSQL")
    url = _fresh_database(url)
    root = Path(__file__).parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    code = WORKER.format(tests=str(Path(__file__).parent), url=url, cache=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outs)
    res = [line.split() for o in outs for line in o.splitlines() if line.startswith("RESULT")]
    assert len(res) == 2 and res[0][3] == res[1][3]
    study = optuna.load_study(study_name=res[0][3], storage=search.make_storage(url))
    trials = study.get_trials(states=search.COUNTED)
    workers = {t.user_attrs["worker"] for t in trials}
    print("trials per worker:", {w: sum(t.user_attrs["worker"] == w for t in trials) for w in workers})
    assert len(trials) == 6 and len(workers) == 2
    assert sum(int(r[2]) for r in res) == 6


def test_trial_seeded_sampler_resumes_without_repeating_and_is_reproducible(tmp_path):
    from cacicd.search import TrialSeededSampler

    def objective(trial):
        return trial.suggest_float("x", 0, 1) + trial.suggest_int("n", 1, 100)

    def values(study):
        return [(t.params["x"], t.params["n"]) for t in sorted(study.trials, key=lambda t: t.number)]

    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = optuna.create_study(study_name="s", storage=url, sampler=TrialSeededSampler(0))
    first.optimize(objective, n_trials=3)
    resumed = optuna.load_study(study_name="s", storage=url, sampler=TrialSeededSampler(0))  # a new process
    resumed.optimize(objective, n_trials=3)
    got = values(resumed)
    assert len(set(got)) == 6  # the resumed trials did not restart the stream
    fresh = optuna.create_study(sampler=TrialSeededSampler(0))
    fresh.optimize(objective, n_trials=6)
    assert values(fresh) == got  # trial k's point depends on (seed, k) only
    other = optuna.create_study(sampler=TrialSeededSampler(1))
    other.optimize(objective, n_trials=2)
    assert values(other) != got[:2]
