#!/usr/bin/env bash
# Regenerate every figure and table of the paper: executes notebooks/NN_*.py in order with papermill.
# Usage: ./run_all.sh [--profile smoke|default|paper] [--data SRC] [--out DIR] [--only NAME ...] [--force]
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && [ -z "${VIRTUAL_ENV:-}" ]; then PY=.venv/bin/python; fi
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
exec "$PY" -m cacicd.runner "$@"
