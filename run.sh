#!/usr/bin/env bash
# The two quick-start commands (each sets up .venv first, needs only Python 3.10+ and bash):
#   ./run.sh demo    synthesise a small dataset with known answers and analyse it
#   ./run.sh test    run the whole test suite (what CI runs)
set -euo pipefail
cd "$(dirname "$0")"
case "${1:-}" in
  demo)
    bash scripts/setup.sh
    exec .venv/bin/mirflow demo "${2:-mirflow-demo}"
    ;;
  test)
    bash scripts/setup.sh
    .venv/bin/python -m pytest -q
    # the optional TensorFlow paths (Essentia backend, models convert) in their own environment
    bash scripts/setup-tf.sh
    exec .venv-tf/bin/python -m pytest -q tests/test_classifiers.py tests/test_models.py tests/test_vggish.py \
      tests/test_classifier_parity.py
    ;;
  *)
    echo "usage: ./run.sh demo [DEST] | test" >&2
    exit 2
    ;;
esac
