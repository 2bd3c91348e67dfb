#!/usr/bin/env bash
# Issue 14's GPU measurements as one command, for a lent GPU machine that reaches no network.
# Prepare here (PyPI reachable): bash scripts/gpu-kit.sh  (fills .gpu/: wheels and 20 small tracks)
# Run there, from the repository root, with .gpu carried (the device tool: carry [".gpu"]):
#
#   bash benchmarks/gpu_session.sh [BUDGET_S]      (default 500: leaves room in a 10-minute call)
#
# Stages, in order of what the issue needs most, each cut off when the budget runs out:
#   1. the executor and separation tests on this machine (the lane, shared-memory hand-off and
#      tiny-model separation then run on CUDA: device auto), at most 150 s;
#   2. benchmarks/handoff.py (the lane's hand-off to a CPU worker, pipes vs shared memory);
#   3. benchmarks/pipeline.py --variants s,c in fp32 on the whole tracks: separation-only vs the
#      whole pipeline (goal: within 15 %), x realtime, accelerator busy fraction (goal >= 90 %);
#   4. the same in bf16 (goal: separation >= 100x realtime in fp16/bf16);
#   5. the seed's optimized design (b) on the same tracks, for (c) >= 3x (b): last, as its
#      classifiers run on ONNX Runtime's CPU provider there and take minutes.
# Output under $OUT (the device tool's folder; else ./gpu-out): session.log and one JSON per
# pipeline stage (at most 8 files come back). Environment: DEVICE (cuda), TRACKS (20),
# SECONDS_PER_TRACK (0: whole tracks), CORPUS (.gpu/tracks), PY (python3).
set -uo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:-500}
OUT=${OUT:-gpu-out}
DEVICE=${DEVICE:-cuda}
TRACKS=${TRACKS:-20}
SECONDS_PER_TRACK=${SECONDS_PER_TRACK:-0}
CORPUS=${CORPUS:-.gpu/tracks}
PY=${PY:-python3}
mkdir -p "$OUT"
LOG="$OUT/session.log"
start=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - start))); }
say() { echo "== $(date -u +%H:%M:%S) [$(left) s left] $*" | tee -a "$LOG"; }
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1

say "setup"
if compgen -G ".gpu/wheels/*.whl" >/dev/null; then
  "$PY" -m pip install --quiet --no-index --no-deps .gpu/wheels/*.whl 2>&1 | tail -3 | tee -a "$LOG"
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  "$PY" -c "import torch, demucs, librosa, mirflow; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  nproc; } 2>&1 | tee -a "$LOG"

stage() {  # stage NAME MIN_SECONDS_LEFT COMMAND...
  local name=$1 need=$2; shift 2
  if [ "$(left)" -lt "$need" ]; then say "$name: skipped (under $need s left)"; return; fi
  say "$name: $*"
  timeout --signal=INT --kill-after=10 "$(left)" "$@" 2>&1 | tee -a "$LOG"
  say "$name: exit ${PIPESTATUS[0]}"
}

stage tests 200 timeout 150 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_shared.py \
    tests/test_stream.py tests/test_local_executor.py tests/test_separation.py
stage handoff 60 "$PY" benchmarks/handoff.py --tracks 20 --repeat 2
common=(--corpus "$CORPUS" --tracks "$TRACKS" --seconds "$SECONDS_PER_TRACK" --device "$DEVICE")
stage pipeline-fp32 120 "$PY" benchmarks/pipeline.py "${common[@]}" --variants s,c --out "$OUT/fp32"
stage pipeline-bf16 90 "$PY" benchmarks/pipeline.py "${common[@]}" --variants s,c --precision bf16 \
    --out "$OUT/bf16"
stage pipeline-b 120 "$PY" benchmarks/pipeline.py "${common[@]}" --variants b --out "$OUT/b"
for p in fp32 bf16 b; do  # flat: what comes back is at most 8 files, 2 folders down
  [ -f "$OUT/$p/pipeline.json" ] && mv "$OUT/$p/pipeline.json" "$OUT/pipeline-$p.json"
  rm -rf "${OUT:?}/$p"
done
say "done"
