"""``mirflow demo``: a small synthetic dataset with known answers, analysed end to end.

The tracks are drum + bass + chord songs from :mod:`mirflow.synth` with an exact tempo, key and
integrated loudness, written as FLAC in the dataset layout. After the run, a table compares what
mirflow measured with what the tracks were built with.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.config import RunOptions
from ..core.errors import DatasetError
from ..core.fsutil import atomic_path
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
    """Write ``tracks`` synthetic songs under ``dest`` (existing demo tracks are kept as they are).

    Raises :class:`DatasetError` when ``dest`` holds tracks the demo did not make: the demo never
    adds its songs to (and analyses) someone's dataset.
    """
    import soundfile as sf

    from ..core.synth import PITCH_CLASSES, pitch_class, synth_song_stems

    root = Path(dest)
    made = _check_demo_folder(root)
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
        with atomic_path(mix_path) as tmp:
            sf.write(tmp, mix.T, sr, subtype="PCM_24")
        made.add(name)
        _write_marker(root, made)
    return truths


#: Hidden file in a demo dataset listing the tracks the demo wrote.
DEMO_MARKER = ".mirflow-demo.json"
_DEMO_NAME = re.compile(r"demo\d{2}")


def _check_demo_folder(root: Path) -> set[str]:
    """The demo tracks already in ``root``; raises :class:`DatasetError` if it holds others."""
    from ..core.dataset import discover

    if not root.exists():
        return set()
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    marker = root / DEMO_MARKER
    try:
        made = set(json.loads(marker.read_text(encoding="utf-8"))["tracks"]) if marker.is_file() else set()
    except (OSError, ValueError, KeyError, TypeError):
        made = set()
    foreign = []
    for track in discover(root):
        rel = track.relpath(root)
        # demo folders from before the marker: demoNN/full_mix.flac
        if rel not in made and not (_DEMO_NAME.fullmatch(rel) and track.mix.name == "full_mix.flac"):
            foreign.append(rel)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise DatasetError(f"{root} already holds {len(foreign)} track(s) the demo did not make "
                           f"({shown}); the demo adds its songs only to a new or empty folder or to "
                           "an earlier demo: give another DEST")
    return {t.relpath(root) for t in discover(root)}


def _write_marker(root: Path, made: set[str]) -> None:
    from ..core.fsutil import atomic_write_bytes

    atomic_write_bytes(root / DEMO_MARKER, json.dumps({"tracks": sorted(made)}).encode())


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
