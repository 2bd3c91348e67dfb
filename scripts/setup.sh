#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with everything mirflow and its
# tests need. PyTorch is pinned to a CPU build (an unpinned torch pulls GBs of CUDA packages);
# on a GPU machine install the torch build for your accelerator first, then run this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${MIRFLOW_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
stamp="$VENV/.mirflow-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$0" -nt "$stamp" ]; then
  python -m pip install --quiet --upgrade pip
  if ! python -c "import torch" 2>/dev/null; then
    python -m pip install --quiet "torch==${MIRFLOW_TORCH_VERSION:-2.13.0}"
  fi
  python -m pip install --quiet -e ".[separation,classifiers,test]"
  touch "$stamp"
fi
