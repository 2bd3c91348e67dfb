"""Tonal analyzer: keys of synthetic progressions in all 24 keys, chroma, profiles, edge cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mirflow.analyzers import get
from mirflow.analyzers.tonal import (KEY_PROFILES, PITCH_CLASSES, TonalAnalyzer, chromagram,
                                     estimate_key)
from mirflow.core.audio import TrackContext
from mirflow.core.errors import ConfigError
from mirflow.core.synth import synth_chords, synth_song

SR = 22050


def test_registered():
    assert get("tonal") is TonalAnalyzer


def test_all_24_keys_of_synthetic_progressions():
    analyzer = TonalAnalyzer()
    wrong = []
    for i, key in enumerate(PITCH_CLASSES):
        for scale in ("major", "minor"):
            # Four bars at 120 BPM: one whole four-chord progression (one of four, seeded).
            y = synth_chords(key, scale, seconds=8.0, sr=SR, seed=i * 2 + (scale == "minor"))
            out = analyzer.analyze(TrackContext.from_array(y, SR))
            if (out["key"], out["scale"]) != (key, scale):
                wrong.append(f"{key} {scale} -> {out['key']} {out['scale']}")
    print(f"keys: {24 - len(wrong)}/24 correct; wrong: {wrong}")
    assert len(wrong) <= 2, wrong


def test_keys_of_full_songs_with_drums():
    cases = [("G", "major"), ("C#", "minor"), ("A#", "major"), ("F", "minor")]
    for i, (key, scale) in enumerate(cases):
        y = synth_song(bpm=96 + 10 * i, key=key, scale=scale, seconds=8, sr=SR, seed=40 + i)
        out = TonalAnalyzer().analyze(TrackContext.from_array(y, SR))
        assert (out["key"], out["scale"]) == (key, scale), (key, scale, out)


def test_chroma_mean_of_a_c_major_triad():
    t = np.arange(3 * SR) / SR
    tone = sum(np.sin(2 * np.pi * 440.0 * 2 ** ((m - 69) / 12) * t) for m in (60, 64, 67))
    out = TonalAnalyzer().analyze(TrackContext.from_array((0.2 * tone).astype(np.float32), SR))
    chroma = np.array(out["chroma_mean"])
    assert chroma.shape == (12,) and chroma.sum() == pytest.approx(1.0, abs=1e-9)
    assert set(np.argsort(chroma)[-3:]) == {0, 4, 7}   # C, E, G
    assert out["key"] == "C" and out["scale"] == "major"
    assert 0.9 < out["key_strength"] <= 1.0          # nothing else comes close to a lone triad
    assert 0.5 < out["key_correlation"] <= 1.0
    json.dumps(out, allow_nan=False)


def test_chroma_matches_librosa_chroma_stft():
    import librosa

    ctx = TrackContext.from_array(synth_song(bpm=100, key="B", seconds=5, sr=SR, seed=4), SR)
    ours = chromagram(ctx)
    ref = librosa.feature.chroma_stft(S=ctx.stft() ** 2, sr=SR)   # tuning from every frame
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.mean(axis=1), ref.mean(axis=1), atol=0.01)


@pytest.mark.parametrize("profile", sorted(KEY_PROFILES))
def test_a_profile_is_its_own_key(profile):
    major, minor = KEY_PROFILES[profile]
    assert estimate_key(np.roll(major, 2), profile=profile) == ("D", "major", pytest.approx(1.0))
    assert estimate_key(np.roll(minor, 9), profile=profile) == ("A", "minor", pytest.approx(1.0))
    with pytest.raises(ValueError):
        estimate_key(np.ones(12), profile=profile)


def test_unknown_profile_is_a_config_error():
    with pytest.raises(ConfigError):
        TonalAnalyzer(profile="nope")


def test_silence_noise_and_too_short():
    silent = TonalAnalyzer().analyze(TrackContext.from_array(np.zeros(SR * 2, np.float32), SR))
    assert silent["key"] is None and silent["chroma_mean"] is None and "silent" in silent["_note"]
    short = TonalAnalyzer().analyze(TrackContext.from_array(np.full(500, 0.3, np.float32), SR))
    assert short["key"] is None and "too short" in short["_note"]
    noise = np.random.default_rng(1).standard_normal(2 * SR).astype(np.float32) * 0.1
    out = TonalAnalyzer().analyze(TrackContext.from_array(noise, SR))
    json.dumps(out, allow_nan=False)
    assert out["key_strength"] < 0.3   # noise has no clear key: weight spread over the 24 keys
    assert 0 <= out["key_correlation"] < 0.6


def test_key_strength_is_a_distribution_over_24_keys():
    from mirflow.analyzers.tonal import key_probabilities

    major, _ = KEY_PROFILES["kostka-payne"]
    clear = np.roll(np.asarray(major) / np.sum(major), 7)         # G major, a textbook chroma
    p = key_probabilities(clear)
    assert p.shape == (24,) and p.sum() == pytest.approx(1.0) and int(np.argmax(p)) == 7
    assert p.max() > 0.9
    flat = np.full(12, 1 / 12)
    assert key_probabilities(flat) == pytest.approx(np.full(24, 1 / 24))
    # Blending G major towards a flat chroma lowers the strength step by step.
    strengths = [key_probabilities(a * clear + (1 - a) * flat).max() for a in (1.0, 0.5, 0.2, 0.05)]
    assert strengths == sorted(strengths, reverse=True) and strengths[-1] < 0.2


def test_content_only_above_11_khz_is_not_called_silent():
    sr, n = 48000, 4 * 48000
    fade = np.hanning(2 * 2400)
    w = np.ones(n)
    w[:2400], w[-2400:] = fade[:2400], fade[2400:]
    tone = (0.5 * np.sin(2 * np.pi * 12000 * np.arange(n) / sr) * w).astype(np.float32)
    out = TonalAnalyzer().analyze(TrackContext.from_array(tone, sr))
    assert out["key"] is None and out["_note"].startswith("no content below 11 kHz")
