"""The notebooks the way a student uses them: `jupyter lab notebooks/` from the venv, each .py source opened
as a notebook through the server (jupytext), set-up cells run in a kernel the server starts; and a quiet run log."""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import jupytext
import pytest

from cacicd import runner

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
TRANSPORT_WARNING = "Kernel is running over TCP without encryption"


class Lab:
    """A running `jupyter lab` server: its URL, token and log file."""

    def __init__(self, url: str, token: str, log: Path):
        self.url, self.token, self.log = url, token, log

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        """One REST call; the parsed JSON answer ({} when empty)."""
        req = urllib.request.Request(self.url + path, method=method, headers={"Authorization": f"token {self.token}"},
                                     data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
        return json.loads(text) if text.strip().startswith(("{", "[")) else {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    """The README's `jupyter lab notebooks/`, headless, with Jupyter's and the project's state in a temporary folder."""
    pytest.importorskip("jupyter_server", reason="jupyter_server is not installed in this environment "
                        "(JupyterLab is a dependency: rerun ./setup.sh)")
    jupyter = Path(sys.executable).parent / "jupyter"
    assert jupyter.exists(), f"no `jupyter` command next to {sys.executable}: rerun ./setup.sh"
    home = tmp_path_factory.mktemp("jupyter")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), IPYTHONDIR=str(home / "ipython"),
               CACICD_CACHE=str(home / "cache"))
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [str(jupyter), "lab", "notebooks/", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI often run as root; Jupyter refuses without it
    log = home / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Lab(f"http://127.0.0.1:{port}", token, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                server.api("GET", "/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_lab_loads_jupytext(lab):
    """The JupyterLab page carries jupytext's extension, and the server its contents manager."""
    req = urllib.request.Request(lab.url + "/lab", headers={"Authorization": f"token {lab.token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        page = r.read().decode()
    assert "jupyterlab-jupytext" in page
    assert "jupyterlab_jupytext | extension was successfully loaded" in lab.log.read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_source_opens_as_notebook(lab, path):
    """Each .py source, asked for as a notebook through the contents API, comes back as jupytext reads it."""
    model = lab.api("GET", f"/api/contents/{path.name}?type=notebook&content=1")
    assert model["type"] == "notebook" and model["name"] == path.name
    cells = model["content"]["cells"]
    expected = jupytext.read(path).cells
    assert [(c["cell_type"], c["source"]) for c in cells] == [(c.cell_type, c.source) for c in expected]
    assert cells[0]["cell_type"] == "markdown" and "**Run time**" in cells[0]["source"]
    assert any("parameters" in c["metadata"].get("tags", []) for c in cells)
    assert model["content"]["metadata"]["kernelspec"]["name"] == "python3"


async def _execute(ws, session: str, code: str, timeout: float) -> list[dict]:
    """Run code in the kernel over the server's websocket; the cell's output messages (streams, results, errors)."""
    msg_id = uuid.uuid4().hex
    await ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": session, "username": "test",
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    outputs, replied, idle = [], False, False
    deadline = time.monotonic() + timeout
    while not (replied and idle):
        raw = await asyncio.wait_for(ws.read_message(), timeout=max(deadline - time.monotonic(), 0.1))
        assert raw is not None, "the kernel's websocket closed"
        msg = json.loads(raw)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "execute_reply":
            replied = True
        elif kind == "status":
            idle = msg["content"]["execution_state"] == "idle"
        elif kind in ("stream", "execute_result", "display_data", "error"):
            outputs.append(msg)
    return outputs


def _text(outputs: list[dict]) -> str:
    parts = []
    for m in outputs:
        c = m["content"]
        parts.append(c.get("text") or c.get("data", {}).get("text/plain", "")
                     or "\n".join([c.get("ename", ""), c.get("evalue", "")] + c.get("traceback", [])))
    return "".join(parts)


def test_setup_cells_run_in_a_server_kernel(lab, tmp_path):
    """00_data's cells up to `setup(...)` run, smoke profile, in the project's kernel started by the server."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    cells = lab.api("GET", "/api/contents/00_data.py?type=notebook&content=1")["content"]["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    i_params = next(i for i, c in enumerate(code) if "parameters" in c["metadata"].get("tags", []))
    i_setup = next(i for i, c in enumerate(code) if "setup(" in c["source"])
    injected = (f"profile = 'smoke'\nfigures_dir = {str(tmp_path / 'figures')!r}\n"
                f"tables_dir = {str(tmp_path / 'tables')!r}\ncache_dir = {str(tmp_path / 'cache')!r}")
    sources = [code[i_params]["source"], injected] + [c["source"] for c in code[i_params + 1:i_setup + 1]]
    probe = "import sys, cacicd; print(P.name, sys.prefix, cacicd.__file__, CACHE, sep='\\n')"

    session = lab.api("POST", "/api/sessions", {"path": "00_data.py", "name": "00_data.py", "type": "notebook",
                                                "kernel": {"name": "python3"}})
    kernel = session["kernel"]["id"]

    async def run() -> list[str]:
        url = lab.url.replace("http", "ws", 1) + f"/api/kernels/{kernel}/channels?session_id={session['id']}"
        ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {lab.token}"}))
        try:
            texts = []
            for src in sources + [probe]:
                outputs = await _execute(ws, session["id"], src, timeout=120)
                errors = [m for m in outputs if m["msg_type"] == "error"]
                assert not errors, f"cell failed in the server's kernel:\n{src}\n{_text(errors)}"
                texts.append(_text(outputs))
            return texts
        finally:
            ws.close()

    try:
        texts = asyncio.run(run())
    finally:
        lab.api("DELETE", f"/api/sessions/{session['id']}")
    assert "Data: synthetic data" in "".join(texts[:-1])  # setup()'s notice
    name, prefix, module, cache = texts[-1].split("\n")[:4]
    assert name == "smoke" and cache == str(tmp_path / "cache")
    assert Path(prefix).resolve() == Path(sys.prefix).resolve(), "the kernel is not this environment's Python"
    assert Path(module).resolve().is_relative_to(ROOT), f"cacicd imported from {module}, not this checkout"


def test_run_log_has_no_kernel_transport_warning(tmp_path, monkeypatch, capfd):
    """run_all's notebook kernels do not print the plain-TCP warning; what a kernel writes to stderr still shows."""
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "00_t.py").write_text(
        "# %% tags=['parameters']\nx = 0\n\n# %%\nimport os\nos.write(2, b'kernel stderr still shown\\n')\n")
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", tmp_path / "nb")
    runner.execute("00_t", runner.OutputDirs.for_run("smoke", tmp_path / "out"), {"x": 1})
    err = capfd.readouterr().err
    assert "kernel stderr still shown" in err
    assert TRANSPORT_WARNING not in err


def test_run_times_stated_from_the_table():
    """Each notebook's first Markdown cell states the run times of benchmarks/run_times.csv."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_times.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr + "\nrun: python benchmarks/run_times.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_defines_no_function_and_imports_no_private_name(path):
    """Notebooks narrate, set parameters and plot: what they compute is a call into the library."""
    import ast

    tree = ast.parse(path.read_text())
    defs = [n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    assert defs == [], f"{path.name} defines {defs}: move them into cacicd/"
    private = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
               if a.name.startswith("_")]
    assert private == [], f"{path.name} imports private names {private}"
