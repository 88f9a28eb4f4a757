"""The conda environment and pyproject.toml list the same dependencies."""
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"python-duckdb": "duckdb", "pytorch": "torch"}


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)$", req)
    return m.group(1).lower(), m.group(3).replace(" ", "")


def test_environment_matches_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    py = dict(_split(r) for r in meta["dependencies"] + meta["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {}
    for dep in env["dependencies"]:
        reqs = dep["pip"] if isinstance(dep, dict) else [dep]
        for r in reqs:
            name, spec = _split(r.replace("=", "==", 1) if re.match(r"^[\w\-]+=[^=]", r) else r)
            conda[CONDA_NAMES.get(name, name)] = spec
    assert conda.pop("python") == "==3.11"
    conda.pop("pip")
    assert conda == py


def test_python_version_is_311():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["requires-python"] == ">=3.11,<3.12"


def test_notebook_packages_declared():
    """JupyterLab and jupytext (which carries its JupyterLab extension) are dependencies, with the kernel."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_split(r)[0] for r in meta["dependencies"]}
    assert {"jupyterlab", "jupytext", "ipykernel", "papermill"} <= names


FAKE_PYTHON = """#!/usr/bin/env bash
# stands in for the venv's python: records pip commands; torch absent; the CPU index answers if FAKE_REACHABLE=1
case "$*" in
  "-m pip "*) echo "pip ${*:3}" >> "$FAKE_LOG" ;;
  *"import torch"*) exit 1 ;;
  *urlopen*) [ "$FAKE_REACHABLE" = 1 ] ;;
esac
"""


def _setup(tmp_path, gpu: bool, reachable: bool, **flags) -> tuple[list[str], str]:
    """Run setup.sh against a fake venv and a fake nvidia-smi: the pip commands it ran, and its output."""
    import os
    import subprocess

    venv, bin_dir = tmp_path / "venv", tmp_path / "bin"
    (venv / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    (venv / "bin" / "python").write_text(FAKE_PYTHON)
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n" if gpu else "#!/bin/sh\nexit 9\n")
    for p in (venv / "bin" / "python", bin_dir / "nvidia-smi"):
        p.chmod(0o755)
    log = tmp_path / "pip.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACICD_TORCH")}
    env.update(VENV=str(venv), FAKE_LOG=str(log), FAKE_REACHABLE="1" if reachable else "0",
               PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", **flags)
    out = subprocess.run(["bash", str(ROOT / "setup.sh")], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return log.read_text().splitlines(), out.stdout


linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="setup.sh chooses a PyTorch build on Linux only")
no_real_gpu = pytest.mark.skipif(any(Path("/proc/driver/nvidia/gpus").glob("*")), reason="this machine has an NVIDIA GPU")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@linux
@no_real_gpu
def test_setup_cpu_build_without_gpu(tmp_path):
    pips, out = _setup(tmp_path, gpu=False, reachable=True)
    assert pips[0] == f"pip install -q --index-url {CPU_INDEX} torch" and "CPU build" in out
    assert pips[1] == "pip install -q -e .[dev]"


@linux
@no_real_gpu
def test_setup_falls_back_to_default_wheel_saying_so(tmp_path):
    pips, out = _setup(tmp_path, gpu=False, reachable=False)
    assert pips == ["pip install -q -e .[dev]"] and "falling back to PyPI's default torch wheel" in out


@linux
def test_setup_default_wheel_with_gpu(tmp_path):
    pips, out = _setup(tmp_path, gpu=True, reachable=True)
    assert pips == ["pip install -q -e .[dev]"] and "NVIDIA GPU found" in out


@pytest.mark.parametrize("flags, first", [
    ({"CACICD_TORCH": "torch==2.13.0"}, "pip install -q torch==2.13.0"),
    ({"CACICD_TORCH_INDEX": "https://example.org/whl"}, "pip install -q --index-url https://example.org/whl torch"),
])
def test_setup_flags_override(tmp_path, flags, first):
    pips, _ = _setup(tmp_path, gpu=False, reachable=True, **flags)
    assert pips == [first, "pip install -q -e .[dev]"]
