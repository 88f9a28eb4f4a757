#!/usr/bin/env bash
# One set-up command: a Python 3.11 virtual environment in .venv with cacicd and its test tools.
# PyTorch: PyPI's Linux wheel of torch brings several GB of CUDA libraries. On a CPU-only machine
# set CACICD_TORCH_INDEX to PyTorch's CPU wheel index (see README) to get the small CPU build, or
# CACICD_TORCH to a pip requirement (a local wheel file, "torch==2.13.0", ...) installed first.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
command -v "$PYTHON" >/dev/null || { echo "setup.sh: $PYTHON not found; install Python 3.11 or set PYTHON=" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
if [ -n "${CACICD_TORCH_INDEX:-}" ]; then
  $PIP install -q --index-url "$CACICD_TORCH_INDEX" "${CACICD_TORCH:-torch}"
elif [ -n "${CACICD_TORCH:-}" ]; then
  $PIP install -q "$CACICD_TORCH"
fi
$PIP install -q -e ".[dev]"
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "setup.sh: ready. Activate with: . $VENV/bin/activate"
