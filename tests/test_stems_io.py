"""Stems handed on in memory equal the stem files read back (core/stems_io.as_written, StemsToWrite)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mirflow.core.audio import TrackContext, decode
from mirflow.core.stems_io import StemsToWrite, as_written


@pytest.mark.parametrize("fmt, bits, tol", [("flac", 16, 0.0), ("flac", 24, 0.0),
                                            ("wav", 16, 2.0 ** -15), ("wav", 24, 2.0 ** -23)])
def test_in_memory_stems_equal_the_files_read_back(tmp_path: Path, fmt: str, bits: int, tol: float) -> None:
    rng = np.random.default_rng(3)
    stems = {"drums": (rng.standard_normal((2, 4410)) * 0.4).astype(np.float32),
             "bass": (rng.standard_normal((2, 4410)) * 0.4).astype(np.float32)}
    stems["drums"][0, :4] = [1.7, -1.3, 0.99999, -1.0]  # beyond full scale: clipped on both sides
    writer = StemsToWrite(tmp_path, stems, sr=44100, fmt=fmt, bits=bits)
    ctx = TrackContext(tmp_path / "full_mix.flac")
    writer.keep_in(ctx, paths := writer.write())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.{fmt}" for n in stems)
    for name, path in paths.items():
        from_file = decode(path).samples
        kept = ctx.stem(name, path).audio.samples
        assert kept.dtype == np.float32 and kept.shape == from_file.shape
        assert np.max(np.abs(kept - from_file)) <= tol
        assert np.max(np.abs(kept - np.clip(stems[name], -1, 1))) <= 2.0 ** -(bits - 1)  # one step
    # a stem at another path (e.g. a dataset's own stem file) is decoded, not taken from memory
    other = tmp_path / "elsewhere" / "drums.flac"
    other.parent.mkdir()
    sf.write(str(other), np.zeros((100, 2), np.float32), 44100)
    assert ctx.stem("drums", other).audio.frames == 100


def test_as_written_clips_to_the_pcm_range() -> None:
    x = np.array([2.0, -2.0, 0.5, 1.0 - 2.0 ** -16], np.float32)
    assert as_written(x, 16).tolist() == [1.0 - 2.0 ** -15, -1.0, 0.5, 1.0 - 2.0 ** -15]
