#!/usr/bin/env bash
# A second virtual environment, .venv-tf, for the tests of the optional TensorFlow paths: Essentia's
# TensorflowPredict backend and `mirflow models convert` (tf2onnx). It is separate because
# essentia-tensorflow installs the same `essentia` module as the `essentia` package used by the
# main environment, and TensorFlow must not share a process with essentia-tensorflow's own TF.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${MIRFLOW_TF_VENV:-.venv-tf}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.mirflow-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$0" -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet essentia-tensorflow tensorflow-cpu tf2onnx onnx onnxruntime pytest
  "$VENV/bin/python" -m pip install --quiet -e .
  touch "$stamp"
fi
