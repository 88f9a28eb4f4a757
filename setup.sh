#!/usr/bin/env bash
# One set-up command: a Python 3.11 virtual environment in .venv with cacicd, JupyterLab and the test tools.
# PyTorch: without an NVIDIA GPU (Linux), the small CPU build from PyTorch's CPU wheel index when it answers,
# else PyPI's default wheel (on Linux it brings several GB of CUDA libraries), saying so. Overrides (README):
# CACICD_TORCH_INDEX installs torch from that index; CACICD_TORCH is the pip requirement installed first
# (a local wheel file, "torch==2.13.0", ...).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
CPU_INDEX=https://download.pytorch.org/whl/cpu
command -v "$PYTHON" >/dev/null || { echo "setup.sh: $PYTHON not found; install Python 3.11 or set PYTHON=" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
PIP="$PY -m pip"

has_nvidia_gpu() {  # an NVIDIA driver that sees at least one GPU
  { command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; } ||
    [ -n "$(ls -A /proc/driver/nvidia/gpus 2>/dev/null)" ]
}

reachable() {  # the URL answers within a few seconds (DNS included)
  timeout 10 "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" "$1" 2>/dev/null
}

if [ -n "${CACICD_TORCH_INDEX:-}" ]; then
  $PIP install -q --index-url "$CACICD_TORCH_INDEX" "${CACICD_TORCH:-torch}"
elif [ -n "${CACICD_TORCH:-}" ]; then
  $PIP install -q "$CACICD_TORCH"
elif "$PY" -c "import torch" 2>/dev/null; then
  echo "setup.sh: PyTorch $("$PY" -c 'import torch; print(torch.__version__)') already in $VENV, kept"
elif [ "$(uname -s)" != Linux ]; then
  :  # macOS and Windows: PyPI's default wheel has no CUDA libraries
elif has_nvidia_gpu; then
  echo "setup.sh: NVIDIA GPU found: PyPI's default PyTorch wheel (CUDA build)"
elif reachable "$CPU_INDEX/torch/" && $PIP install -q --index-url "$CPU_INDEX" torch; then
  echo "setup.sh: no NVIDIA GPU: installed the CPU build of PyTorch from $CPU_INDEX"
else
  echo "setup.sh: no NVIDIA GPU, but PyTorch's CPU build could not be fetched from $CPU_INDEX;" \
       "falling back to PyPI's default torch wheel (on Linux: several GB of CUDA libraries)." \
       "CACICD_TORCH_INDEX or CACICD_TORCH choose another build (see README)."
fi
$PIP install -q -e ".[dev]"
"$PY" -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "setup.sh: ready. Activate with: . $VENV/bin/activate"
