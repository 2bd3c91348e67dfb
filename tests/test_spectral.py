"""Spectral analyzer: agreement with librosa on the same STFT, silent frames, edge cases, and the
one-decode / one-STFT guarantee shared by the spectral, tonal and rhythm analyzers."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest
import soundfile as sf

from mirflow.analyzers import get
from mirflow.analyzers.rhythm import RhythmAnalyzer
from mirflow.analyzers.spectral import SpectralAnalyzer, spectral_frames, zero_crossing_frames
from mirflow.core.stft import active_frames
from mirflow.analyzers.tonal import TonalAnalyzer
from mirflow.core.audio import TrackContext
from mirflow.core.synth import synth_song

SR = 22050


def _sine(freq, seconds, sr=SR, amp=0.5):
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


@pytest.fixture(scope="module")
def song_ctx():
    return TrackContext.from_array(synth_song(bpm=110, key="E", seconds=6, sr=44100, seed=5), 44100)


def test_registered():
    assert get("spectral") is SpectralAnalyzer


def test_per_frame_values_match_librosa(song_ctx):
    mag = song_ctx.stft()
    ours = spectral_frames(mag)
    refs = {
        "centroid": librosa.feature.spectral_centroid(S=mag, sr=SR)[0],
        "bandwidth": librosa.feature.spectral_bandwidth(S=mag, sr=SR)[0],
        "rolloff": librosa.feature.spectral_rolloff(S=mag, sr=SR, roll_percent=0.85)[0],
        "flatness": librosa.feature.spectral_flatness(S=mag)[0],
    }
    for name, ref in refs.items():
        np.testing.assert_allclose(ours[name], ref, rtol=1e-3, atol=1e-6, err_msg=name)
    y = song_ctx.mono(SR)
    np.testing.assert_array_equal(zero_crossing_frames(y),
                                  librosa.feature.zero_crossing_rate(y)[0])


def test_summary_within_one_percent_of_librosa(song_ctx):
    out = SpectralAnalyzer().analyze(song_ctx)
    mag = song_ctx.stft()
    mask = active_frames(song_ctx)
    refs = {
        "spectral_centroid": librosa.feature.spectral_centroid(S=mag, sr=SR)[0],
        "spectral_bandwidth": librosa.feature.spectral_bandwidth(S=mag, sr=SR)[0],
        "spectral_rolloff": librosa.feature.spectral_rolloff(S=mag, sr=SR)[0],
        "spectral_flatness": librosa.feature.spectral_flatness(S=mag)[0],
        "zero_crossing_rate": librosa.feature.zero_crossing_rate(song_ctx.mono(SR))[0],
    }
    for name, ref in refs.items():
        assert out[f"{name}_mean"] == pytest.approx(ref[mask].mean(), rel=0.01), name
        assert out[f"{name}_std"] == pytest.approx(ref[mask].std(), rel=0.01), name
    assert set(out) == set(SpectralAnalyzer.outputs)
    json.dumps(out, allow_nan=False)


def test_known_answers_and_silent_frames_excluded():
    tone = _sine(1000.0, 2.0)
    padded = np.concatenate([np.zeros(SR, np.float32), tone, np.zeros(2 * SR, np.float32)])
    a = SpectralAnalyzer().analyze(TrackContext.from_array(tone, SR))
    b = SpectralAnalyzer().analyze(TrackContext.from_array(padded, SR))
    assert a["spectral_centroid_mean"] == pytest.approx(1000.0, rel=0.01)
    assert a["spectral_rolloff_mean"] == pytest.approx(1000.0, rel=0.02)
    assert a["spectral_flatness_mean"] < 1e-3
    assert a["spectral_flux_mean"] < 0.05
    assert a["zero_crossing_rate_mean"] == pytest.approx(2 * 1000 / SR, rel=0.02)
    # Three seconds of digital silence change nothing (librosa's plain mean would drop to ~40 %).
    for key in ("spectral_centroid_mean", "spectral_rolloff_mean", "zero_crossing_rate_mean"):
        assert b[key] == pytest.approx(a[key], rel=0.02), key

    noise = np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32) * 0.1
    n = SpectralAnalyzer().analyze(TrackContext.from_array(noise, SR))
    assert n["spectral_flatness_mean"] > 0.4
    assert n["spectral_centroid_mean"] == pytest.approx(SR / 4, rel=0.05)
    assert n["spectral_flux_mean"] > 5 * a["spectral_flux_mean"]


@pytest.mark.parametrize("case", ["silence", "one-sample", "empty", "short", "6ch-48k", "8k-mono"])
def test_edge_cases_give_json_safe_values(case):
    song = synth_song(bpm=120, seconds=2, sr=48000, seed=1)
    arrays = {
        "silence": (np.zeros((2, 44100 * 2), np.float32), 44100),
        "one-sample": (np.array([[0.5]], np.float32), 44100),
        "empty": (np.zeros((1, 0), np.float32), 44100),
        "short": (_sine(440.0, 0.01, sr=44100), 44100),
        "6ch-48k": (np.vstack([song, song, song]), 48000),
        "8k-mono": (synth_song(bpm=120, seconds=2, sr=8000, seed=1)[0], 8000),
    }
    samples, sr = arrays[case]
    ctx = TrackContext.from_array(samples, sr)
    for analyzer in (SpectralAnalyzer(), TonalAnalyzer(), RhythmAnalyzer()):
        out = analyzer.analyze(ctx)
        json.dumps(out, allow_nan=False)
        assert set(analyzer.outputs) <= set(out)
        if case in ("silence", "empty"):
            assert all(out[k] is None for k in analyzer.outputs), (analyzer.name, out)
            assert out["_note"]
    spectral = SpectralAnalyzer().analyze(ctx)
    if case in ("6ch-48k", "8k-mono", "short"):
        assert 50 < spectral["spectral_centroid_mean"] < 11025
    if case == "silence":
        assert "silent" in spectral["_note"]


def test_one_decode_and_one_stft_for_all_three(tmp_path):
    path = tmp_path / "song.wav"
    sf.write(path, synth_song(bpm=100, seconds=5, sr=44100, seed=2).T, 44100)
    ctx = TrackContext(path)
    results = {}
    for analyzer in (SpectralAnalyzer(), TonalAnalyzer(), RhythmAnalyzer()):
        results.update(analyzer.analyze(ctx))
    assert results["bpm"] and results["key"] and results["spectral_centroid_mean"]
    assert ctx.stats["decode"] == 1
    assert ctx.stats["stft"] == 1
    assert ctx.stats["resample-mono"] == 1
    for key in ("frame-energy", "frame-levels-db", "chroma", "mel-power", "onset-envelopes"):
        assert ctx.stats[key] == 1, key
    assert max(ctx.stats.values()) == 1, dict(ctx.stats)
