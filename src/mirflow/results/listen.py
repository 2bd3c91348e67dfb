"""Hear what mirflow measured: the mix with a click on every detected beat.

A doubtful tempo (half or double, a drifting beat grid) is quickest to judge by ear: play the
file :func:`write_beat_check` writes and listen whether the clicks sit on the beat.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.audio import decode, to_stereo
from ..core.dataset import MIX_NAME, SIDECAR_SUFFIX, Track, discover
from ..core.errors import ConfigError, DatasetError
from ..core.fsutil import atomic_path
from ..core.sidecar import read

log = logging.getLogger(__name__)

CLICK_HZ = 1000.0  #: click tone frequency (Hz)
CLICK_S = 0.03  #: click length (s), exponentially decaying


def click(sr: int, *, level_dbfs: float = -3.0) -> np.ndarray:
    """One click: a ``CLICK_HZ`` cosine with a 5 ms decay constant, ``CLICK_S`` long, at
    ``level_dbfs`` peak on its first sample (so the click's onset is exactly its first sample)."""
    n = max(2, int(round(CLICK_S * sr)))
    t = np.arange(n) / sr
    y = np.sin(2 * np.pi * CLICK_HZ * t + np.pi / 2) * np.exp(-t / 0.005)  # cosine: full at t=0
    return (10 ** (level_dbfs / 20) * y).astype(np.float32)


def add_clicks(samples: np.ndarray, sr: int, beats: list[float], *, click_dbfs: float = -3.0,
               mix_gain_db: float = -6.0) -> np.ndarray:
    """``samples`` (``(channels, n)``) lowered by ``mix_gain_db`` with a click starting at sample
    ``round(t * sr)`` of every beat time ``t`` (s) in every channel. Scaled down as a whole if the
    sum would exceed full scale (so nothing clips)."""
    out = samples.astype(np.float32) * np.float32(10 ** (mix_gain_db / 20))
    c = click(sr, level_dbfs=click_dbfs)
    n = out.shape[1]
    for t in beats:
        start = int(round(float(t) * sr))
        if start < 0 or start >= n:
            continue
        end = min(n, start + c.size)
        out[:, start:end] += c[: end - start]
    peak = float(np.abs(out).max()) if out.size else 0.0
    if peak > 1.0:
        log.info("clicked mix peaked at %.2f; scaled down to full scale", peak)
        out /= np.float32(peak)
    return out


def find_track(target: str | os.PathLike[str]) -> Track:
    """The track of a folder holding ``full_mix.*``, or of a mix file itself."""
    path = Path(target)
    if path.is_file():
        if path.stem != MIX_NAME:
            raise DatasetError(f"{path.name} is not a track's mix (full_mix.<ext>); give the track folder")
        return Track(path.parent, path)
    if path.is_dir():
        for track in discover(path):
            if track.dir == path or track.dir.resolve() == path.resolve():
                return track
        raise DatasetError(f"{path} holds no full_mix.<ext> (give one track folder, not a dataset)")
    raise DatasetError(f"{path} does not exist")


def write_beat_check(target: str | os.PathLike[str], output: str | os.PathLike[str], *,
                     click_dbfs: float = -3.0, mix_gain_db: float = -6.0) -> dict[str, Any]:
    """Write the mix of ``target`` with clicks on the beats stored in its sidecar to ``output``
    (WAV/FLAC, 24-bit, the mix's sample rate, mono or stereo). Returns ``{beats, clicks, bpm, sr,
    path}`` (``clicks``: beats that fall inside the audio)."""
    import soundfile as sf

    track = find_track(target)
    data = read(track.sidecar)
    beats = data.get("beats")
    if not isinstance(beats, list):
        raise ConfigError(f"{track.dir.name}{SIDECAR_SUFFIX} has no beats: run `mirflow run DATASET "
                          "-a rhythm` first")
    out = Path(output)
    if out.suffix.lower() not in (".wav", ".flac"):
        raise ConfigError(f"cannot write {out.name}: use a .wav or .flac file name")
    audio = decode(track.mix)
    samples = audio.samples if audio.channels <= 2 else to_stereo(audio.samples)
    times = [float(b) for b in beats if isinstance(b, (int, float))]
    mixed = add_clicks(samples, audio.sr, times, click_dbfs=click_dbfs, mix_gain_db=mix_gain_db)
    placed = sum(1 for t in times if 0 <= round(t * audio.sr) < audio.frames)
    with atomic_path(out) as tmp:
        sf.write(tmp, mixed.T, audio.sr, subtype="PCM_24")
    return {"beats": len(beats), "clicks": placed, "bpm": data.get("bpm"), "sr": audio.sr,
            "path": str(out)}


__all__ = ["add_clicks", "click", "find_track", "write_beat_check"]
