"""``mirflow demo``: a small synthetic dataset with known answers, analysed end to end.

The tracks are drum + bass + chord songs from :mod:`mirflow.synth` with an exact tempo, key and
integrated loudness, written as FLAC in the dataset layout. After the run, a table compares what
mirflow measured with what the tracks were built with.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.config import RunOptions
from ..run.coordinator import ProgressFn, RunSummary, run
from ..core.sidecar import SidecarError, read

# (bpm, key, scale, integrated loudness in LUFS)
_DEMO_SONGS = [
    (84.0, "A", "minor", -16.0), (96.0, "D", "major", -20.0), (110.0, "F#", "minor", -14.0),
    (124.0, "Bb", "major", -23.0), (140.0, "E", "minor", -12.0), (172.0, "G", "major", -18.0),
    (100.0, "C", "minor", -21.0), (132.0, "Eb", "major", -15.0),
]


@dataclass(frozen=True)
class DemoTruth:
    """What a demo track was built with."""

    name: str
    bpm: float
    key: str
    scale: str
    lufs: float


def make_demo_dataset(dest: str | os.PathLike[str], *, tracks: int = 6, seconds: float = 12.0,
                      sr: int = 44100) -> list[DemoTruth]:
    """Write ``tracks`` synthetic songs under ``dest`` (existing demo tracks are kept as they are)."""
    import soundfile as sf

    from ..core.synth import PITCH_CLASSES, pitch_class, synth_song_stems

    root = Path(dest)
    truths = []
    for i in range(tracks):
        bpm, key, scale, lufs = _DEMO_SONGS[i % len(_DEMO_SONGS)]
        name = f"demo{i + 1:02d}"
        truth = DemoTruth(name, bpm, PITCH_CLASSES[pitch_class(key)], scale, lufs)
        truths.append(truth)
        mix_path = root / name / "full_mix.flac"
        if mix_path.exists():
            continue
        stems = synth_song_stems(bpm=bpm, key=key, scale=scale, seconds=seconds, sr=sr, seed=i,
                                 loudness_lufs=lufs)
        mix = sum(stems.values())
        mix_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = mix_path.with_name(".mirflow-tmp-full_mix.flac")
        sf.write(tmp, mix.T, sr, subtype="PCM_24")
        os.replace(tmp, mix_path)
    return truths


def run_demo(dest: str | os.PathLike[str], truths: list[DemoTruth], *, workers: int = 0,
             analyzers: list[str] | None = None,
             progress: ProgressFn | None = None) -> tuple[RunSummary, list[dict[str, Any]]]:
    """Analyse the demo dataset and compare the results with the known answers."""
    from .. import analyzers as registry

    names = analyzers or registry.available_names()
    summary = run(dest, RunOptions(analyzers=names, workers=workers), progress=progress)
    rows = []
    for t in truths:
        track_dir = Path(dest) / t.name
        try:
            data = read(track_dir / f"{t.name}.INFO")
        except SidecarError:
            data = {}
        row: dict[str, Any] = {"track": t.name}
        row["BPM true"] = f"{t.bpm:g}"
        row["BPM"] = _fmt(data.get("bpm"), "{:.1f}")
        row["key true"] = f"{t.key} {t.scale}"
        row["key"] = f"{data['key']} {data.get('scale', '')}" if data.get("key") else "-"
        row["LUFS true"] = f"{t.lufs:g}"
        row["LUFS"] = _fmt(data.get("lufs"), "{:.2f}")
        rows.append(row)
    return summary, rows


def _fmt(value: Any, pattern: str) -> str:
    return pattern.format(value) if isinstance(value, (int, float)) else "-"


__all__ = ["DemoTruth", "make_demo_dataset", "run_demo"]
