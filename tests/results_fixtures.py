"""A small analysed dataset shared by the results tests (export, API, report): three short tracks
with clicks at a known tempo, one with stem files, one broken file, and a user key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from conftest import write_track

SR = 22050


def click_song(bpm: float, seconds: float, *, sr: int = SR, level: float = 0.5) -> np.ndarray:
    """Stereo: a 220 Hz tone plus a 5 ms 2 kHz click on every beat at ``bpm``."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    y = 0.1 * np.sin(2 * np.pi * 220 * t)
    burst = level * np.sin(2 * np.pi * 2000 * np.arange(int(0.005 * sr)) / sr)
    for start in np.arange(0, seconds, 60.0 / bpm):
        i = int(start * sr)
        y[i:i + burst.size] += burst[: n - i]
    return np.tile(y.astype(np.float32), (2, 1))


def make_analysed_dataset(root: Path) -> Path:
    import mirflow

    root.mkdir(parents=True, exist_ok=True)
    write_track(root, "a/song one", click_song(120.0, 6.0), SR)
    write_track(root, "song two", click_song(100.0, 5.0), SR, ext="wav", subtype="PCM_16")
    song = click_song(90.0, 5.0)
    stems_dir = write_track(root, "with stems", song, SR).parent
    import soundfile as sf

    sf.write(stems_dir / "drums.flac", (song * 0.8).T, SR)
    sf.write(stems_dir / "bass.flac", (song * 0.1).T, SR)
    (root / "broken").mkdir()
    (root / "broken" / "full_mix.ogg").write_bytes(b"OggS but not really" * 4)
    mirflow.run(root, analyzers=["loudness", "spectral", "tonal", "rhythm", "stems"], executor="serial")
    info = root / "song two" / "song two.INFO"
    data = json.loads(info.read_text())
    data["my_label"] = "keep"
    info.write_text(json.dumps(data))
    return root
