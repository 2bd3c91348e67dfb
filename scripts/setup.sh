#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with everything mirflow and its
# tests need. PyTorch is pinned to a CPU build (an unpinned torch pulls GBs of CUDA packages;
# MIRFLOW_TORCH_VERSION and MIRFLOW_TORCH_INDEX change the pin and the index); on a GPU machine
# install the torch build for your accelerator first, then run this script.
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
    # The CPU build from PyTorch's own CPU index, as PyTorch documents for machines without a GPU
    # (PyPI's Linux wheel is the CUDA build, GBs of packages); where that index cannot be reached,
    # the plain pin (PyPI, or a mirror's wheel).
    torch_pin="torch==${MIRFLOW_TORCH_VERSION:-2.13.0}"
    python -m pip install --quiet --timeout 20 --retries 1 \
        --index-url "${MIRFLOW_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" "$torch_pin" ||
      python -m pip install --quiet "$torch_pin"
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
