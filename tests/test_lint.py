"""The tree stays as the architecture says: ruff clean, import-linter contracts kept, no private name imported."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("cacicd", "tests", "notebooks", "benchmarks")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_is_clean():
    """The ruff configuration of pyproject.toml (pyflakes, no relative imports, no private imports) passes."""
    r = _run("-m", "ruff", "check", "--no-cache", *SOURCES)
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_contracts_are_kept():
    """import-linter: the layers of pyproject.toml hold and no package has an import cycle among its children."""
    r = _run("-c", "import sys; from importlinter.cli import lint_imports_command; sys.argv = ['lint-imports', "
             "'--no-cache']; lint_imports_command()")
    assert r.returncode == 0 and "0 broken" in r.stdout, r.stdout + r.stderr


def _private(dotted: str) -> bool:
    return any(p.startswith("_") and not p.startswith("__") for p in dotted.split("."))


def private_imports(source: str, name: str) -> list[str]:
    """`from cacicd… import _name` and imports of private cacicd modules in a source (ruff's PLC2701 passes them)."""
    out = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cacicd"):
            out += [f"{name}:{node.lineno}: from {node.module} import {a.name}" for a in node.names if _private(a.name)]
            if _private(node.module):
                out.append(f"{name}:{node.lineno}: import of private module {node.module}")
        elif isinstance(node, ast.Import):
            out += [f"{name}:{node.lineno}: import of private module {a.name}" for a in node.names
                    if a.name.startswith("cacicd") and _private(a.name)]
    return out


def test_no_private_name_imported_from_another_module():
    """A name with a leading underscore is private to its module: no file of the tree imports one."""
    found = [line for d in SOURCES for p in sorted((ROOT / d).rglob("*.py"))
             for line in private_imports(p.read_text(), str(p.relative_to(ROOT)))]
    assert not found, "\n".join(found)


def test_private_import_detector():
    """The detector flags a private name and private modules, and passes public imports."""
    found = private_imports("from cacicd.data.omop import _isnull, query\nimport cacicd._hidden\n"
                            "from cacicd._x import y\nfrom cacicd import icd9\nfrom os import _exit\n", "probe.py")
    assert found == ["probe.py:1: from cacicd.data.omop import _isnull", "probe.py:2: import of private module "
                     "cacicd._hidden", "probe.py:3: import of private module cacicd._x"]


def test_architecture_doc_lists_every_module():
    """docs/architecture.md has a line for every module of cacicd, and names no module that does not exist."""
    import re

    doc = (ROOT / "docs" / "architecture.md").read_text()
    listed = set(re.findall(r"^\| `([a-z_.0-9]+)` \|", doc, re.M))
    modules = {".".join(p.relative_to(ROOT / "cacicd").with_suffix("").parts).removesuffix(".__init__")
               for p in (ROOT / "cacicd").rglob("*.py")}
    modules -= {"__init__", "data", "models", "evaluation", "experiments", "paper"}
    assert modules - listed == set(), "modules missing from docs/architecture.md"
    assert listed - modules == set(), "docs/architecture.md lists modules that do not exist"
