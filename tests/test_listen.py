"""`mirflow listen TRACK --beats`: the mix with a click starting exactly on every beat's sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from conftest import mirflow, sine, write_track
from mirflow.results.listen import add_clicks, click


def _onsets(y: np.ndarray, sr: int, threshold: float = 0.05) -> list[int]:
    """First sample above ``threshold`` of each burst (bursts at least 0.1 s apart)."""
    above = np.flatnonzero(np.abs(y) > threshold)
    out: list[int] = []
    for i in above:
        if not out or i - out[-1] > 0.1 * sr:
            out.append(int(i))
    return out


def test_clicks_start_on_the_beat_samples(dataset: Path, tmp_path: Path) -> None:
    sr = 22050
    mix = sine(220.0, 3.0, sr, dbfs=-12.0)
    folder = write_track(dataset, "song", mix, sr, ext="wav", subtype="FLOAT").parent
    beats = [0.5, 1.25, 2.0, 2.99, 7.0]  # the last is past the end: ignored
    (folder / "song.INFO").write_text(json.dumps({"beats": beats, "bpm": 80.0}))
    out = tmp_path / "check.wav"
    proc = mirflow("listen", str(folder), "--beats", "-o", str(out), check=True)
    assert "4 beat clicks at 80 BPM" in proc.stderr
    y, got_sr = sf.read(out, always_2d=True, dtype="float32")
    assert got_sr == sr and y.shape == (mix.shape[1], 2)
    residual = y[:, 0] - mix[0] * 10 ** (-6 / 20)  # the mix lowered by 6 dB, plus clicks
    assert _onsets(residual, sr) == [round(t * sr) for t in beats[:4]]
    assert np.abs(residual[: round(0.5 * sr)]).max() < 1e-4  # nothing before the first beat
    c = click(sr)
    start = round(1.25 * sr)
    np.testing.assert_allclose(residual[start:start + c.size], c, atol=1e-4)


def test_no_clipping_and_errors(dataset: Path, tmp_path: Path) -> None:
    loud = np.ones((1, 1000), np.float32)
    out = add_clicks(loud, 1000, [0.1], mix_gain_db=0.0)
    assert np.abs(out).max() <= 1.0 + 1e-6
    folder = write_track(dataset, "nobeats", sine(440.0, 1.0)).parent
    proc = mirflow("listen", str(folder), "--beats", "-o", str(tmp_path / "x.wav"))
    assert proc.returncode == 2 and "has no beats" in proc.stderr and "-a rhythm" in proc.stderr
    proc = mirflow("listen", str(folder), "-o", str(tmp_path / "x.wav"))
    assert proc.returncode == 2 and "--beats" in proc.stderr
