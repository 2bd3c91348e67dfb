"""Synthetic songs: shapes, determinism, stems summing to the mix, loudness target, beat grid."""

from __future__ import annotations

import numpy as np
import pytest

from mirflow.core.synth import beat_times, pitch_class, synth_chords, synth_song, synth_song_stems


def test_shapes_dtype_and_length():
    y = synth_song(bpm=100, key="D", scale="minor", seconds=2.5, sr=22050, seed=3)
    assert y.shape == (2, round(2.5 * 22050))
    assert y.dtype == np.float32
    assert np.isfinite(y).all()
    assert np.max(np.abs(y)) == pytest.approx(10 ** (-1 / 20), rel=1e-4)  # peak -1 dBFS
    chords = synth_chords("F#", "major", seconds=1.0, sr=16000)
    assert chords.shape == (2, 16000) and chords.dtype == np.float32


def test_deterministic_and_seeded():
    a = synth_song(bpm=120, seconds=2, sr=22050, seed=7)
    b = synth_song(bpm=120, seconds=2, sr=22050, seed=7)
    c = synth_song(bpm=120, seconds=2, sr=22050, seed=8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_stems_sum_to_the_mix_and_are_distinct():
    stems = synth_song_stems(bpm=90, key="A", scale="minor", seconds=3, sr=22050, seed=1)
    assert set(stems) == {"drums", "bass", "other"}
    mix = synth_song(bpm=90, key="A", scale="minor", seconds=3, sr=22050, seed=1)
    np.testing.assert_allclose(stems["drums"] + stems["bass"] + stems["other"], mix, atol=1e-6)

    def centroid(x):
        spec = np.abs(np.fft.rfft(x.mean(axis=0)))
        freqs = np.fft.rfftfreq(x.shape[1], 1 / 22050)
        return float((spec * freqs).sum() / spec.sum())

    # The bass sits lowest; the drums (hi-hats, snare noise) reach highest.
    assert centroid(stems["bass"]) < centroid(stems["other"]) < centroid(stems["drums"])


def test_loudness_target():
    import pyloudnorm

    y = synth_song(bpm=128, seconds=4, sr=44100, seed=2, loudness_lufs=-20.0)
    assert pyloudnorm.Meter(44100).integrated_loudness(y.T) == pytest.approx(-20.0, abs=0.05)


def test_kicks_and_snares_fall_on_the_beat_grid():
    sr, bpm = 22050, 100.0
    drums = synth_song_stems(bpm=bpm, seconds=6, sr=sr, seed=0)["drums"].mean(axis=0)
    beats = beat_times(bpm=bpm, seconds=6)
    assert beats[1] == pytest.approx(0.6) and len(beats) == 10
    win = int(0.02 * sr)
    for t in beats[1:]:
        i = int(round(t * sr))
        before = np.sqrt(np.mean(drums[i - win:i] ** 2))
        after = np.sqrt(np.mean(drums[i:i + win] ** 2))
        assert after > 2 * before, t


def test_key_names_and_bad_arguments():
    assert pitch_class("Bb") == pitch_class("A#") == 10
    assert pitch_class(13) == 1
    with pytest.raises(ValueError):
        pitch_class("H")
    with pytest.raises(ValueError):
        synth_song(bpm=0, seconds=1)
    with pytest.raises(ValueError):
        synth_song(bpm=120, seconds=1, scale="dorian")
