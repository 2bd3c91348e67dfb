#!/usr/bin/env bash
# Prepare what a session carries to a lent GPU machine that reaches no network, for issue 14's GPU
# measurements (run there: benchmarks/gpu_session.sh). Run here, where PyPI is reachable:
#
#   bash scripts/gpu-kit.sh [CORPUS] [TRACKS]        (default corpus/orchestral, 20 tracks)
#
# It fills .gpu/ (ignored by git; name it in the device tool's `carry`):
#   .gpu/wheels/  wheels for the device image's Python (3.12, manylinux x86_64) of the packages
#                 mirflow and the benchmarks need that the image lacks; the versions pinned to
#                 those of this project's .venv, so both machines run the same libraries. PyAV
#                 and sphn (35 and 17 MB) are left out: mirflow imports PyAV only for files
#                 libsndfile cannot read, and the benchmarks' (a) variant (the `demucs` command)
#                 is not run there.
#   .gpu/tracks/  the first TRACKS whole tracks of CORPUS, in the dataset layout, re-encoded as
#                 Ogg Vorbis at libsndfile's highest compression (about 55 kbit/s: 20 tracks fit
#                 the tool's 64 MiB; speed does not depend on bitrate).
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:-corpus/orchestral}
TRACKS=${2:-20}
PY=${PYTHON:-.venv/bin/python}
[ -d "$CORPUS" ] || { echo "no corpus at $CORPUS (make corpus)" >&2; exit 2; }
mkdir -p .gpu/wheels .gpu/tracks
pins=$("$PY" - <<'PY'
from importlib.metadata import version
names = ["soundfile", "soxr", "samplerate", "pyloudnorm", "librosa", "audioread", "decorator",
         "pooch", "platformdirs", "pydantic", "pydantic-core", "annotated-types",
         "typing-inspection", "tomlkit", "demucs", "julius", "lameenc", "dill"]
print(" ".join(f"{n}=={version(n)}" for n in names))
PY
)
# shellcheck disable=SC2086
"$PY" -m pip download --quiet --only-binary=:all: --no-deps --implementation cp --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/wheels $pins
"$PY" - "$CORPUS" "$TRACKS" <<'PY'
import sys
from pathlib import Path

import soundfile as sf

corpus, count = Path(sys.argv[1]), int(sys.argv[2])
out = Path(".gpu/tracks")
mixes = sorted(corpus.glob("*/full_mix.*"))[:count]
for mix in mixes:
    dest = out / mix.parent.name / "full_mix.ogg"
    if dest.exists():
        continue
    dest.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(mix) as src, sf.SoundFile(dest.with_suffix(".tmp"), "w", src.samplerate,
                                                src.channels, format="OGG", subtype="VORBIS",
                                                compression_level=1.0) as dst:
        for block in src.blocks(blocksize=src.samplerate, dtype="float32"):
            dst.write(block)  # in blocks: one long Vorbis write crashes libsndfile
    dest.with_suffix(".tmp").rename(dest)
print(f"{len(mixes)} tracks in {out}")
PY
du -sh .gpu/wheels .gpu/tracks
