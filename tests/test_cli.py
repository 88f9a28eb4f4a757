"""The cacicd console script."""

from cacicd import cli
from cacicd.experiments import engine as E


def test_list_prints_every_experiment(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(E.EXPERIMENTS)
    assert any(line.startswith("rollup_ndcg") and "roll-up" in line for line in out)


def test_parser_has_every_subcommand():
    p = cli.build_parser()
    for argv in (["data"], ["run", "naive_ndcg", "--fold", "0"], ["run", "--all", "--workers", "2"], ["evaluate", "dummy"],
                 ["status"]):
        assert p.parse_args(argv).cmd == argv[0]
    for gone in (["search", "naive_ndcg", "--storage", "postgresql://x/y"], ["run", "dummy", "--threads", "2"],
                 ["run", "dummy", "--storage", "postgresql://x/y"]):  # Dask replaced the shared PostgreSQL store
        try:
            p.parse_args(gone)
        except SystemExit:
            continue
        raise AssertionError(f"{gone} still parses")


def test_run_passes_workers_and_scheduler_on(monkeypatch):
    got = []
    monkeypatch.setattr(E, "run_many", lambda names, *a, **k: got.append((names, k["workers"], k["scheduler"])) or {})
    assert cli.main(["run", "dummy", "naive_ndcg", "--profile", "smoke", "--fold", "0", "--workers", "3"]) == 0
    assert cli.main(["run", "--all", "--profile", "smoke", "--scheduler", "tcp://h:8786"]) == 0
    assert got == [(["dummy", "naive_ndcg"], "3", None), (list(E.EXPERIMENTS), "auto", "tcp://h:8786")]
    assert cli.build_parser().parse_args(["run", "dummy"]).workers == "auto"  # the machine's cores or GPUs


def test_run_needs_names_or_all(capsys):
    assert cli.main(["run", "--profile", "smoke"]) == 2
    assert "name the experiment(s) to run, or give --all" in capsys.readouterr().err
    assert cli.main(["run", "dummy", "--workers", "many", "--profile", "smoke"]) == 2
    assert "--workers 'many'" in capsys.readouterr().err


def test_unknown_experiment_is_a_clear_error(capsys):
    assert cli.main(["run", "nope", "--profile", "smoke"]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err
