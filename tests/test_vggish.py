"""The VGGish front end: shapes, framing and a match with Essentia's TensorflowInputVGGish."""

from __future__ import annotations

import numpy as np
import pytest

from mirflow.models import vggish
from mirflow.core.audio import TrackContext

SR = vggish.SAMPLE_RATE


def synthetic_music(seconds: float, *, seed: int = 0) -> np.ndarray:
    """Harmonic tones with a slow tremolo, noise and percussive clicks, peak 0.9, plus a silent lead-in."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = 0.03 * rng.standard_normal(n)
    for f0 in (110.0, 164.8, 220.0, 277.2):
        for h in range(1, 6):
            x += 0.08 / h * np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi))
    clicks = np.zeros(n)
    clicks[:: SR // 2] = 1.0
    x += np.convolve(clicks, np.exp(-np.arange(800) / 60.0) * rng.standard_normal(800))[:n]
    x *= 0.3 + 0.7 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.25 * t))
    x[: SR // 10] *= 1e-6  # near-silent start: Essentia's left-padded silent-frame handling
    return (0.9 * x / np.abs(x).max()).astype(np.float32)


def test_frame_and_patch_counts():
    for n in (1, 159, 160, 161, 15040, 15041, 16000, 16000 * 5 + 37):
        frames = vggish.log_mel_frames(np.zeros(n, np.float32))
        assert frames.shape == (int(np.ceil(n / 160)) + 1, 64) == (vggish.n_frames(n), 64)
        p = vggish.patches_from_frames(frames)
        assert p.shape == (vggish.n_patches(n), 96, 64)
    assert vggish.n_patches(vggish.MIN_SAMPLES - 1) == 0
    assert vggish.n_patches(vggish.MIN_SAMPLES) == 1
    # 10 s: 1001 frames -> patches start at 0, 93, ..., 837 (10 patches), the partial one is dropped
    assert vggish.n_patches(10 * SR) == 10
    assert vggish.log_mel_frames(np.zeros(0, np.float32)).shape == (0, 64)


def test_patches_are_hop_93_views_of_the_frames():
    x = synthetic_music(4.0)
    frames = vggish.log_mel_frames(x)
    p = vggish.patches(x)
    assert p.dtype == np.float32 and p.flags.c_contiguous
    for k in range(len(p)):
        np.testing.assert_array_equal(p[k], frames[93 * k: 93 * k + 96])


def test_silence_is_log_offset_and_tone_lands_in_its_band():
    frames = vggish.log_mel_frames(np.zeros(SR, np.float32))
    np.testing.assert_allclose(frames, np.log(0.01), atol=1e-6)
    t = np.arange(SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    mid = vggish.log_mel_frames(tone)[50]
    centres = 700.0 * (10 ** (np.linspace(2595 * np.log10(1 + 125 / 700), 2595 * np.log10(1 + 7500 / 700),
                                          66)[1:-1] / 2595) - 1)
    assert abs(centres[int(np.argmax(mid))] - 1000.0) < 60.0


def test_track_patches_memoised_once_per_context():
    ctx = TrackContext.from_array(np.tile(synthetic_music(2.0), (2, 1)), SR)
    a = vggish.track_patches(ctx)
    b = vggish.track_patches(ctx)
    assert a is b and ctx.stats["vggish-patches"] == 1


def _essentia_frames(signal: np.ndarray) -> np.ndarray:
    """What TensorflowPredictVGGish feeds its model (skips when essentia is not installed)."""
    pytest.importorskip("essentia")
    from essentia_reference import essentia_reference_frames

    return essentia_reference_frames(signal)


@pytest.mark.parametrize("seconds,seed", [(0.3, 1), (3.33, 2), (12.0, 3)])
def test_matches_essentia_tensorflow_input_vggish(seconds, seed):
    x = synthetic_music(seconds, seed=seed)
    ours = vggish.log_mel_frames(x)
    theirs = _essentia_frames(x)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-3


def test_matches_essentia_on_a_silent_zero_padded_start():
    """Essentia shifts silent left-padded frames (its ADD_NOISE branch); we reproduce it."""
    x = np.zeros(4000, np.float32)
    x[:] = 1e-5 * np.sin(np.arange(4000) * 0.3)
    x[300:] += 0.2 * np.sin(np.arange(3700) * 0.05)
    assert np.abs(vggish.log_mel_frames(x) - _essentia_frames(x)).max() < 1e-3
