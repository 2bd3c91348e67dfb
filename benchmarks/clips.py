"""Short benchmark datasets cut from the real corpus (``make corpus``), shared by the benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def build_dataset(corpus: Path, dest: Path, tracks: int, seconds: float) -> list[Path]:
    """``dest/<track>/full_mix.flac``: the first ``seconds`` of ``tracks`` corpus tracks spread
    evenly over the sorted corpus. Returns the mixes written."""
    files = sorted(corpus.glob("*/full_mix.*"))
    if not files:
        raise SystemExit(f"no tracks in {corpus} (build it with `make corpus`)")
    picked = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(tracks, len(files)))]
    out = []
    for f in picked:
        with sf.SoundFile(str(f)) as src:
            y = src.read(frames=int(seconds * src.samplerate), dtype="float32", always_2d=True)
            sr = src.samplerate
        folder = dest / f.parent.name
        folder.mkdir(parents=True)
        sf.write(folder / "full_mix.flac", y, sr)
        out.append(folder / "full_mix.flac")
    return out
