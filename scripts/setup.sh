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
# Chromium for the HTML report's browser test (tests/test_report.py): Debian's package, driven by
# Playwright through its executable path (no `playwright install` download). Needs root and apt;
# elsewhere the test is skipped with the reason. MIRFLOW_NO_CHROMIUM=1 skips this step.
if [ ! -x /usr/bin/chromium ] && [ "${MIRFLOW_NO_CHROMIUM:-0}" != 1 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; } ||
      echo "setup: could not install chromium; the report's browser test will be skipped" >&2
  else
    echo "setup: no /usr/bin/chromium (apt-get install chromium, as root); the report's browser test will be skipped" >&2
  fi
fi
