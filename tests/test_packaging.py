"""The conda environment and pyproject.toml list the same dependencies."""
import re
import tomllib
from pathlib import Path

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
