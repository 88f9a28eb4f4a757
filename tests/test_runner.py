"""run_all's stale-work skipping: input keys and reruns, with `execute` faked (no notebook runs)."""
from __future__ import annotations

import json
import os

import pytest

from cacicd import runner


@pytest.fixture
def fake_repo(tmp_path, monkeypatch):
    """A repository with two tiny notebooks and a one-file library; `execute` records what it ran."""
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "cacicd").mkdir()
    (root / "cacicd" / "lib.py").write_text("x = 1\n")
    for name in ("00_a", "01_b"):
        (root / "notebooks" / f"{name}.py").write_text(f"# %%\nprint('{name}')\n")
    monkeypatch.setattr(runner, "ROOT", root)
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", root / "notebooks")
    ran: list[str] = []

    def fake_execute(name, dirs, params, kernel="python3", env=None):
        ran.append(name)
        (dirs.notebooks / f"{name}.ipynb").write_text("{}")

    monkeypatch.setattr(runner, "execute", fake_execute)
    return root, ran, tmp_path / "out"


def test_input_key_changes_only_with_its_inputs(fake_repo):
    root, _, _ = fake_repo
    k = runner.input_key("00_a", "smoke", "synthetic", [])
    assert runner.input_key("00_a", "smoke", "synthetic", []) == k  # deterministic
    assert runner.input_key("00_a", "default", "synthetic", []) != k  # profile
    assert runner.input_key("00_a", "smoke", "synthetic", ["up"]) != k  # upstream keys
    assert runner.input_key("00_a", "smoke", str(root / "notebooks"), []) != k  # data source
    (root / "notebooks" / "01_b.py").write_text("# %%\nprint('changed')\n")  # another notebook: no effect
    assert runner.input_key("00_a", "smoke", "synthetic", []) == k
    (root / "notebooks" / "00_a.py").write_text("# %%\nprint('changed')\n")  # its own source
    k2 = runner.input_key("00_a", "smoke", "synthetic", [])
    assert k2 != k
    (root / "cacicd" / "lib.py").write_text("x = 2\n")  # the library
    assert runner.input_key("00_a", "smoke", "synthetic", []) != k2


def test_reruns_only_stale_notebooks(fake_repo, capsys):
    root, ran, out = fake_repo
    assert runner.run_all("smoke", out=str(out)) == 0
    assert ran == ["00_a", "01_b"]
    log = json.loads((out / "tables" / "run_log.json").read_text())
    assert set(log) == {"00_a", "01_b"} and all("wall_s" in v and "key" in v for v in log.values())
    ran.clear()
    assert runner.run_all("smoke", out=str(out)) == 0
    assert ran == [] and "up to date, skipped" in capsys.readouterr().out
    (root / "notebooks" / "01_b.py").write_text("# %%\nprint('edited')\n")
    runner.run_all("smoke", out=str(out))
    assert ran == ["01_b"]  # the upstream notebook is untouched
    ran.clear()
    (root / "notebooks" / "00_a.py").write_text("# %%\nprint('edited')\n")
    runner.run_all("smoke", out=str(out))
    assert ran == ["00_a", "01_b"]  # a changed upstream key reruns what follows
    ran.clear()
    runner.run_all("smoke", out=str(out), force=True)
    assert ran == ["00_a", "01_b"]
    ran.clear()
    runner.run_all("default", out=str(out))  # another profile: stale
    assert ran == ["00_a", "01_b"]
    ran.clear()
    runner.run_all("default", out=str(out), only=["01_b"], force=True)
    assert ran == ["01_b"]


def test_missing_output_reruns(fake_repo):
    _, ran, out = fake_repo
    runner.run_all("smoke", out=str(out))
    ran.clear()
    (out / "notebooks" / "00_a.ipynb").unlink()
    runner.run_all("smoke", out=str(out))
    assert ran == ["00_a"]


def test_unknown_only_names_a_clear_error(fake_repo, capsys):
    _, ran, out = fake_repo
    assert runner.run_all("smoke", out=str(out), only=["99_nope", "00_a"]) == 2
    err = capsys.readouterr().err
    assert "unknown notebook(s) 99_nope" in err and "known: 00_a, 01_b" in err
    assert ran == []
    assert runner.main(["--profile", "bogus"]) == 2
    assert "unknown profile 'bogus'" in capsys.readouterr().err


def test_failure_stops_the_run(fake_repo, monkeypatch, capsys):
    _, ran, out = fake_repo

    def failing(name, dirs, params, kernel="python3", env=None):
        ran.append(name)
        raise RuntimeError("cell 3 exploded")

    monkeypatch.setattr(runner, "execute", failing)
    assert runner.run_all("smoke", out=str(out)) == 1
    assert ran == ["00_a"] and "cell 3 exploded" in capsys.readouterr().err


def test_relative_folder_sources_become_absolute(tmp_path, monkeypatch):
    from cacicd.runner import absolute_source

    monkeypatch.chdir(tmp_path)
    assert absolute_source("synthetic") == "synthetic"
    assert absolute_source("postgresql://u@h/db?schema=omop") == "postgresql://u@h/db?schema=omop"
    assert absolute_source("omop_dump") == str(tmp_path / "omop_dump")
    assert absolute_source("mimic3:demo?drug_types=MAIN") == f"mimic3:{tmp_path / 'demo'}?drug_types=MAIN"
    assert absolute_source("/abs/omop") == "/abs/omop"


def test_cache_root_is_anchored_at_the_project_root(tmp_path, monkeypatch):
    from cacicd.config import cache_root

    (tmp_path / "cacicd").mkdir()
    (tmp_path / "run_all.sh").write_text("")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.delenv("CACICD_CACHE", raising=False)
    monkeypatch.chdir(tmp_path / "notebooks")
    assert cache_root() == tmp_path.resolve() / "cache"  # a notebook opened in notebooks/ shares run_all's cache
    monkeypatch.setenv("CACICD_CACHE", str(tmp_path / "elsewhere"))
    assert cache_root() == tmp_path.resolve() / "elsewhere"


def test_password_reaches_the_kernels_environment_not_ours(fake_repo, monkeypatch):
    """run_all hands a URL's password to `execute` for the kernel's environment; this process's stays as it was."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    _, ran, out = fake_repo
    envs = []
    monkeypatch.setattr(runner, "execute", lambda name, dirs, params, kernel="python3", env=None:
                        envs.append((env, params["data"])) or (dirs.notebooks / f"{name}.ipynb").write_text("{}"))
    monkeypatch.setattr(runner, "check_arguments", lambda *a: [])  # no server to check the source against
    assert runner.run_all("smoke", data="postgresql://alice:s3cret@h/db?schema=omop", out=str(out)) == 0
    assert envs == [({"PGPASSWORD": "s3cret"}, "postgresql://alice@h/db?schema=omop")] * 2
    assert "PGPASSWORD" not in os.environ


def test_kernel_gets_the_extra_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("CACICD_TEST_KERNEL_ENV", raising=False)
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "00_t.py").write_text(
        "# %%\nimport os, pathlib\n"
        f"pathlib.Path({str(tmp_path / 'seen.txt')!r}).write_text(os.environ.get('CACICD_TEST_KERNEL_ENV', '-'))\n")
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", tmp_path / "nb")
    runner.execute("00_t", runner.OutputDirs.for_run("smoke", tmp_path / "out"), {}, env={"CACICD_TEST_KERNEL_ENV": "x1"})
    assert (tmp_path / "seen.txt").read_text() == "x1" and "CACICD_TEST_KERNEL_ENV" not in os.environ
