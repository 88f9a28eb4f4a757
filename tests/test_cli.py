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
    for argv in (["data"], ["run", "naive_ndcg", "--fold", "0"], ["evaluate", "dummy"], ["status"],
                 ["search", "naive_ndcg", "--storage", "postgresql://x/y", "--precision", "float32"]):
        assert p.parse_args(argv).cmd == argv[0]


def test_run_and_search_pass_threads_on(monkeypatch):
    got = {}
    monkeypatch.setattr(E, "run", lambda *a, **k: got.setdefault("run", k["threads"]) and [])
    monkeypatch.setattr(E, "search_worker", lambda *a, **k: got.setdefault("search", k["threads"])
                        and {"store": "s", "nodes": 0, "nodes_mine": 0})
    assert cli.main(["run", "dummy", "--profile", "smoke", "--fold", "0", "--threads", "3"]) == 0
    assert cli.main(["search", "naive_ndcg", "--profile", "smoke", "--storage", "postgresql://x/y", "--threads", "2"]) == 0
    assert got == {"run": 3, "search": 2}
    assert cli.build_parser().parse_args(["run", "dummy"]).threads is None  # default: every CPU (`E.run`)


def test_unknown_experiment_is_a_clear_error(capsys):
    assert cli.main(["run", "nope", "--profile", "smoke"]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err
