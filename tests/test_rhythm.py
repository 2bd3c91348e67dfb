"""Rhythm analyzer: tempo of synthetic songs from 70 to 180 BPM, beat positions, onsets, tempo
refinement, edge cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mirflow.analyzers import get
from mirflow.analyzers.rhythm import FRAME_RATE, RhythmAnalyzer, refine_tempo
from mirflow.core.audio import TrackContext
from mirflow.core.synth import beat_times, synth_song

SR = 22050


def test_registered():
    assert get("rhythm") is RhythmAnalyzer


def test_tempo_within_2_percent_on_90_percent_of_songs_70_to_180_bpm():
    import librosa

    from mirflow.analyzers.rhythm import onset_envelopes

    tempos = np.linspace(70.0, 180.0, 20)
    analyzer = RhythmAnalyzer()
    wrong, librosa_hits = [], 0
    for i, bpm in enumerate(tempos):
        y = synth_song(bpm=float(bpm), key=i % 12, scale=("major", "minor")[i % 2], seconds=12,
                       sr=SR, seed=100 + i)
        ctx = TrackContext.from_array(y, SR)
        got = analyzer.analyze(ctx)["bpm"]
        if abs(got / bpm - 1.0) > 0.02:     # half or double tempo count as wrong
            wrong.append(f"{bpm:.1f} -> {got}")
        # librosa's default tempo estimate, on the same onset envelope, for comparison.
        ref, _ = librosa.beat.beat_track(onset_envelope=onset_envelopes(ctx)[0], sr=SR)
        librosa_hits += abs(float(np.atleast_1d(ref)[0]) / bpm - 1.0) <= 0.02
    print(f"tempo within 2 %: {len(tempos) - len(wrong)}/{len(tempos)} "
          f"(librosa beat_track defaults: {librosa_hits}/{len(tempos)}); wrong: {wrong}")
    assert len(wrong) <= 2, wrong
    assert len(tempos) - len(wrong) > librosa_hits


def test_beats_land_on_the_true_beat_grid():
    bpm, seconds = 123.0, 10.0
    y = synth_song(bpm=bpm, key="D", scale="minor", seconds=seconds, sr=44100, seed=9)
    out = RhythmAnalyzer().analyze(TrackContext.from_array(y, 44100))
    assert out["bpm"] == pytest.approx(bpm, rel=0.005)
    assert 0.6 < out["bpm_confidence"] <= 1.0
    beats = np.array(out["beats"])
    assert out["beat_count"] == len(beats) >= 0.8 * seconds * bpm / 60
    assert all(isinstance(t, float) and round(t, 3) == t for t in out["beats"])
    assert np.all(np.diff(beats) > 0)
    truth = beat_times(bpm=bpm, seconds=seconds)
    error = np.abs(beats[:, None] - truth[None, :]).min(axis=1)
    assert np.max(error) < 0.07      # the usual 70 ms beat-tracking tolerance
    # Onsets: kick/snare on every beat plus hi-hats between them, about 2 per beat.
    assert out["onset_count"] == pytest.approx(2 * seconds * bpm / 60, rel=0.25)
    assert out["onset_rate"] == pytest.approx(out["onset_count"] / seconds, rel=1e-6)
    assert out["onset_strength_mean"] > 0
    json.dumps(out, allow_nan=False)


def test_refine_tempo_ignores_gaps_and_sections_at_another_tempo():
    period = 60 * FRAME_RATE / 97.3                        # 97.3 BPM in frames
    steady = np.round(np.arange(60) * period)              # quantised to whole frames
    steady = np.delete(steady, [10, 11, 30])               # skipped beats leave gaps
    other = steady[-1] + np.round(np.arange(1, 15) * 60 * FRAME_RATE / 130.0)
    beats = np.concatenate([steady, other])
    assert refine_tempo(beats, 95.0) == pytest.approx(97.3, rel=0.002)
    assert refine_tempo(beats[:3], 95.0) == 95.0          # too few beats: the coarse tempo
    assert refine_tempo(beats, 70.0) == 70.0               # a >10 % jump is refused


def test_silence_short_steady_tone_and_noise():
    silent = RhythmAnalyzer().analyze(TrackContext.from_array(np.zeros(SR * 4, np.float32), SR))
    assert all(silent[k] is None for k in RhythmAnalyzer.outputs) and "silent" in silent["_note"]

    short = synth_song(bpm=120, seconds=2.0, sr=SR, seed=1)
    out = RhythmAnalyzer().analyze(TrackContext.from_array(short, SR))
    assert out["bpm"] is None and out["beats"] is None and "too short" in out["_note"]
    assert out["onset_count"] >= 4 and out["onset_rate"] > 0

    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(5 * SR) / SR)).astype(np.float32)
    out = RhythmAnalyzer().analyze(TrackContext.from_array(tone, SR))
    json.dumps(out, allow_nan=False)
    assert out["bpm"] is None and out["beats"] == [] and "no rhythmic onsets" in out["_note"]
    assert out["onset_count"] <= 1

    noise = np.random.default_rng(3).standard_normal(6 * SR).astype(np.float32) * 0.1
    out = RhythmAnalyzer().analyze(TrackContext.from_array(noise, SR))
    json.dumps(out, allow_nan=False)
    assert out["bpm_confidence"] is None or out["bpm_confidence"] < 0.4


def test_bpm_candidates_offer_the_other_metrical_level():
    bpm = 96.0
    y = synth_song(bpm=bpm, key="E", scale="major", seconds=12, sr=SR, seed=21)
    out = RhythmAnalyzer().analyze(TrackContext.from_array(y, SR))
    cands = out["bpm_candidates"]
    assert len(cands) == 2 and cands[0]["bpm"] == out["bpm"]
    assert out["bpm"] == pytest.approx(bpm, rel=0.02)
    ratio = cands[1]["bpm"] / cands[0]["bpm"]
    assert min(abs(ratio / r - 1) for r in (0.5, 2.0, 1 / 3, 3.0)) <= 0.03
    assert cands[0]["salience"] + cands[1]["salience"] == pytest.approx(1.0, abs=2e-3)
    assert cands[0]["salience"] > cands[1]["salience"]
    json.dumps(out, allow_nan=False)


def test_metrical_candidates_pick_the_strongest_relative():
    from mirflow.analyzers.rhythm import metrical_candidates

    grid = np.arange(40.0, 200.01, 0.05)
    score = np.zeros_like(grid)
    score[np.argmin(abs(grid - 90))] = 3.0
    score[np.argmin(abs(grid - 181))] = 1.0      # double tempo, 0.6 % off
    score[np.argmin(abs(grid - 45))] = 0.5       # half tempo, weaker
    score[np.argmin(abs(grid - 130))] = 2.0      # not a metrical relative: ignored
    cands = metrical_candidates(score, grid, int(np.argmax(score)))
    assert [round(b) for b, _ in cands] == [90, 181]
    assert cands[0][1] == pytest.approx(0.75) and cands[1][1] == pytest.approx(0.25)
    lone = np.zeros_like(grid)
    lone[np.argmin(abs(grid - 150))] = 1.0        # 75 and 50 BPM have no evidence at all
    assert metrical_candidates(lone, grid, int(np.argmax(lone))) == [(pytest.approx(150.0), 1.0)]


def _hf_tone(sr: int, seconds: float = 4.0, hz: float = 12000.0) -> np.ndarray:
    """A tone above 11.025 kHz with 50 ms fades (no click that would reach the 22.05 kHz view)."""
    n = int(seconds * sr)
    fade = np.hanning(2 * int(0.05 * sr))
    w = np.ones(n)
    w[:fade.size // 2], w[-(fade.size // 2):] = fade[:fade.size // 2], fade[fade.size // 2:]
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(n) / sr) * w).astype(np.float32)


def test_content_only_above_11_khz_is_not_called_silent():
    out = RhythmAnalyzer().analyze(TrackContext.from_array(_hf_tone(48000), 48000))
    assert all(out[k] is None for k in RhythmAnalyzer.outputs)
    assert out["_note"].startswith("no content below 11 kHz") and "48 kHz mix" in out["_note"]
    quiet = RhythmAnalyzer().analyze(TrackContext.from_array(1e-5 * _hf_tone(48000), 48000))
    assert quiet["_note"].startswith("silent")
