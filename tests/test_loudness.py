"""The loudness analyzer against signals with known answers (ITU-R BS.1770-4, EBU Tech 3341/3342)
and against pyloudnorm."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pyloudnorm as pyln
import pytest
import scipy.signal

from mirflow.analyzers import available_names, get
from mirflow.analyzers import loudness as L
from mirflow.core.audio import TrackContext


def sine(seconds: float, *, dbfs: float, sr: int = 48000, freq: float = 1000.0, channels: int = 2,
         phase: float = 0.0) -> np.ndarray:
    """A sine of peak amplitude ``dbfs`` (dBFS) in every channel, ``(channels, n)`` float32."""
    t = np.arange(int(round(seconds * sr))) / sr
    x = 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t + phase)
    return np.repeat(x[None, :], channels, axis=0).astype(np.float32)


def steps(*parts: tuple[float, float], sr: int = 48000) -> np.ndarray:
    """Concatenated 1 kHz stereo sines: ``parts`` are ``(seconds, dBFS)``."""
    return np.concatenate([sine(s, dbfs=d, sr=sr) for s, d in parts], axis=1)


def music_like(seconds: float, *, sr: int, channels: int, seed: int) -> np.ndarray:
    """Seeded noise and tones, coloured and with a slow loudness envelope so the gates matter."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    noise = scipy.signal.lfilter([1.0], [1.0, -0.95], rng.standard_normal((channels, n)), axis=1)
    tones = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (110.0, 440.0, 1750.0))
    envelope = 10 ** ((-25 * (np.sin(2 * np.pi * t / seconds * 3) < -0.6)) / 20)  # quiet passages
    x = (0.02 * noise + 0.1 * tones) * envelope
    return (x / np.abs(x).max() * 0.5).astype(np.float32)


def pyloudnorm_lufs(x: np.ndarray, sr: int, filter_class: str = "K-weighting") -> float:
    return pyln.Meter(sr, filter_class=filter_class).integrated_loudness(x.T.astype(np.float64))


# -- integrated loudness: known answers -------------------------------------------------------
def test_stereo_1khz_sine_reads_its_per_channel_level():
    # EBU Tech 3341 case 1: stereo 1 kHz sine at -23 dBFS per channel -> -23.0 LUFS.
    assert L.measure(sine(20, dbfs=-23), 48000)["lufs"] == pytest.approx(-23.0, abs=0.1)
    assert L.measure(sine(20, dbfs=-20), 48000)["lufs"] == pytest.approx(-20.0, abs=0.1)


def test_full_scale_sine_in_one_channel_reads_minus_3_01():
    # BS.1770-4: a 0 dBFS 1 kHz sine in one of L, R or C reads -3.01 LKFS.
    x = sine(10, dbfs=0.0, channels=1)
    assert L.measure(x, 48000)["lufs"] == pytest.approx(-3.01, abs=0.1)
    stereo_one_side = np.concatenate([x, np.zeros_like(x)])
    assert L.measure(stereo_one_side, 48000)["lufs"] == pytest.approx(-3.01, abs=0.1)


@pytest.mark.parametrize("parts", [
    ((10, -36), (60, -23), (10, -36)),                           # Tech 3341 case 3: relative gate
    ((10, -72), (10, -36), (60, -23), (10, -36), (10, -72)),     # case 4: absolute + relative gate
    ((20, -26), (20.1, -20), (20, -26)),                         # case 5
])
def test_tech_3341_gating_cases_read_minus_23(parts):
    assert L.measure(steps(*parts), 48000)["lufs"] == pytest.approx(-23.0, abs=0.1)


# -- loudness range: EBU Tech 3342 test signals -----------------------------------------------
@pytest.mark.parametrize("parts, expected", [
    (((20, -20), (20, -30)), 10.0),
    (((20, -20), (20, -15)), 5.0),
    (((20, -40), (20, -20)), 20.0),
    (((20, -50), (20, -35), (20, -20), (20, -35), (20, -50)), 15.0),
])
def test_tech_3342_loudness_range(parts, expected):
    assert L.measure(steps(*parts), 48000)["lra"] == pytest.approx(expected, abs=1.0)


def test_steady_signal_has_zero_range():
    assert L.measure(sine(10, dbfs=-20), 48000)["lra"] == pytest.approx(0.0, abs=0.05)


# -- true peak --------------------------------------------------------------------------------
def test_true_peak_finds_the_inter_sample_peak_of_a_quarter_rate_sine():
    # f = fs/4 at 45 degrees: every sample sits at A/sqrt(2); the waveform reaches A in between.
    sr = 44100
    x = sine(1, dbfs=-1.0, sr=sr, freq=sr / 4, phase=np.pi / 4)
    out = L.measure(x, sr)
    assert out["peak_dbfs"] == pytest.approx(-1.0 - 3.01, abs=0.01)
    assert out["true_peak_dbtp"] == pytest.approx(-1.0, abs=0.2)
    assert out["true_peak_dbtp"] > out["peak_dbfs"] + 2.8


@pytest.mark.parametrize("n", [1, 5, 1000, 2500])
def test_true_peak_streaming_equals_one_shot_oversampling(n, monkeypatch):
    import soxr

    monkeypatch.setattr(L, "_CHUNK", 512)          # several chunks, so the seams are checked
    rng = np.random.default_rng(n)
    x = rng.uniform(-1, 1, (2, n)).astype(np.float32)
    one_shot = max(np.abs(soxr.resample(ch, 44100, 4 * 44100, quality="HQ")).max() for ch in x)
    assert L.true_peak(x, 44100) == pytest.approx(max(one_shot, np.abs(x).max()), rel=1e-5)


def test_true_peak_matches_band_limited_interpolation():
    # Random band-limited noise (flat to 0.8 of Nyquist): the oversampled maximum must be close to
    # the peak of the ideal (FFT) 32x interpolation, and well above the sample peak on average.
    sr = 48000
    rng = np.random.default_rng(7)
    spectrum = np.fft.rfft(rng.standard_normal(sr // 2))
    spectrum[int(0.8 * len(spectrum)):] = 0
    x = np.fft.irfft(spectrum, n=sr // 2)
    x = (0.5 * x / np.abs(x).max()).astype(np.float32)[None, :]
    ideal = np.abs(scipy.signal.resample(x[0].astype(np.float64), 32 * x.shape[1])).max()
    out = L.measure(x, sr)
    assert out["true_peak_dbtp"] == pytest.approx(20 * np.log10(ideal), abs=0.1)
    assert out["true_peak_dbtp"] >= out["peak_dbfs"]


def test_true_peak_is_never_below_the_sample_peak():
    x = np.full((1, 4800), 0.5, dtype=np.float32)
    out = L.measure(x, 48000)
    assert out["true_peak_dbtp"] >= out["peak_dbfs"]


# -- agreement with pyloudnorm ------------------------------------------------------------------
@pytest.mark.parametrize("sr", [44100, 48000, 192000, 8000])
@pytest.mark.parametrize("channels", [1, 2])
def test_integrated_loudness_agrees_with_pyloudnorm(sr, channels):
    x = music_like(10, sr=sr, channels=channels, seed=sr + channels)
    lufs = L.measure(x, sr)["lufs"]
    # Same K-weighting design (the BS.1770 analogue prototypes): agreement to rounding.
    assert lufs == pytest.approx(pyloudnorm_lufs(x, sr, "DeMan"), abs=0.01)
    # pyloudnorm's default RBJ-cookbook K-weighting drifts from the standard as the rate falls.
    assert lufs == pytest.approx(pyloudnorm_lufs(x, sr), abs=0.1 if sr >= 44100 else 0.35)


def test_5_1_agrees_with_pyloudnorm_and_ignores_the_lfe():
    sr = 48000
    x = music_like(10, sr=sr, channels=6, seed=6)
    x[4:] *= 0.5                                               # quieter surrounds, weighted 1.41
    lufs = L.measure(x, sr)["lufs"]
    five = x[[0, 1, 2, 4, 5]]                                  # pyloudnorm: L R C Ls Rs, no LFE
    assert lufs == pytest.approx(pyloudnorm_lufs(five, sr, "DeMan"), abs=0.01)
    assert lufs == pytest.approx(pyloudnorm_lufs(five, sr), abs=0.1)
    loud_lfe = x.copy()
    loud_lfe[3] = 0.9 * np.sin(2 * np.pi * 50 * np.arange(x.shape[1]) / sr)
    assert L.measure(loud_lfe, sr)["lufs"] == lufs


def test_channel_weights():
    assert L.channel_weights(2).tolist() == [1.0, 1.0]
    assert L.channel_weights(6).tolist() == [1.0, 1.0, 1.0, 0.0, 1.41, 1.41]
    assert L.channel_weights(4).tolist() == [1.0] * 4


# -- sample peak and RMS --------------------------------------------------------------------
def test_rms_and_peak_conventions():
    out = L.measure(sine(1, dbfs=0.0), 48000)
    assert out["rms_dbfs"] == pytest.approx(-3.01, abs=0.01)     # full-scale sine reads -3.01 dBFS
    assert out["peak_dbfs"] == pytest.approx(0.0, abs=0.01)
    square = np.sign(sine(1, dbfs=0.0, freq=100.0) + 1e-9).astype(np.float32)
    assert L.measure(square, 48000)["rms_dbfs"] == pytest.approx(0.0, abs=0.01)


# -- edge cases -------------------------------------------------------------------------------
def _assert_clean(out: dict) -> None:
    json.dumps(out, allow_nan=False)                              # no NaN, no inf
    for key in ("lufs", "lra", "true_peak_dbtp", "peak_dbfs", "rms_dbfs"):
        assert out[key] is None or (isinstance(out[key], float) and math.isfinite(out[key]))


def test_digital_silence_gives_none_and_a_note():
    out = L.measure(np.zeros((2, 48000 * 5), dtype=np.float32), 48000)
    _assert_clean(out)
    assert all(out[k] is None for k in ("lufs", "lra", "true_peak_dbtp", "peak_dbfs", "rms_dbfs"))
    assert "silent" in out["_note"] and "digital silence" in out["_note"]


def test_everything_below_the_absolute_gate_keeps_the_peaks():
    out = L.measure(sine(5, dbfs=-80), 48000)
    _assert_clean(out)
    assert out["lufs"] is None and out["lra"] is None
    assert "-70 LUFS" in out["_note"]
    assert out["peak_dbfs"] == pytest.approx(-80.0, abs=0.01)
    assert out["true_peak_dbtp"] == pytest.approx(-80.0, abs=0.1)


@pytest.mark.parametrize("frames", [1, 100, 19199])
def test_audio_shorter_than_a_gating_block(frames):
    x = np.full((1, frames), 0.5, dtype=np.float32)
    out = L.measure(x, 48000)
    _assert_clean(out)
    assert out["lufs"] is None and out["lra"] is None
    assert "400 ms" in out["_note"]
    assert out["peak_dbfs"] == pytest.approx(-6.021, abs=0.001)
    assert out["true_peak_dbtp"] >= out["peak_dbfs"]


def test_audio_shorter_than_a_short_term_block_has_lufs_but_no_range():
    out = L.measure(sine(1, dbfs=-20), 48000)
    assert out["lufs"] == pytest.approx(-20.0, abs=0.1)
    assert out["lra"] is None and "3 s" in out["_note"]


@pytest.mark.parametrize("sr", [8000, 11025, 22050, 192000])
def test_odd_and_extreme_rates(sr):
    # 11025 Hz: 100 ms is 1102.5 samples, so the cell grid alternates 1102 and 1103.
    out = L.measure(sine(4, dbfs=-20, sr=sr, freq=997.0), sr)
    assert out["lufs"] == pytest.approx(-20.0, abs=0.15)
    assert out["lra"] == pytest.approx(0.0, abs=0.05)


def test_analyzer_through_the_registry_and_nan_samples():
    assert "loudness" in available_names()
    analyzer = get("loudness")()
    assert analyzer.device == "cpu"
    x = sine(5, dbfs=-20)
    x[0, 1000:1010] = np.nan
    x[1, 5] = np.inf
    ctx = TrackContext.from_array(x, 48000)
    out = analyzer.analyze(ctx)
    _assert_clean(out)
    assert set(analyzer.outputs) <= set(out)
    assert out["lufs"] == pytest.approx(-20.0, abs=0.1)
    assert out["peak_dbfs"] == pytest.approx(-20.0, abs=0.01)
    assert ctx.warnings and "non-finite" in ctx.warnings[0]


# -- start-up: the K-weighting without importing scipy.signal --------------------------------
@pytest.mark.parametrize("sr", [8000, 11025, 22050, 44100, 48000, 96000, 192000, 12345])
def test_k_weighting_design_is_pyloudnorms_deman_design_to_the_bit(sr):
    from pyloudnorm.iirfilter import IIRfilter

    shelf = IIRfilter(3.99984385397, 0.7071752369554193, 1681.9744509555319, sr, "high_shelf_DeMan")
    high_pass = IIRfilter(0.0, 0.5003270373253953, 38.13547087613982, sr, "high_pass_DeMan")
    expected = np.array([np.r_[shelf.b, shelf.a], np.r_[high_pass.b, high_pass.a]])
    assert np.array_equal(L.k_weighting_sos(sr), expected)
    if sr == 48000:  # BS.1770-4 Table 1, to 11 decimals
        assert L.k_weighting_sos(sr)[0] == pytest.approx(
            [1.53512485958697, -2.69169618940638, 1.19839281085285, 1.0, -1.69065929318241,
             0.73248077421585], abs=1e-11)


@pytest.mark.parametrize("kernel", [L.sos_kernel, lambda: L._public_sos_kernel])
def test_the_filter_kernel_is_scipy_signal_sosfilt_to_the_bit(kernel, monkeypatch):
    x = music_like(3.0, sr=44100, channels=3, seed=4)
    sos = L.k_weighting_sos(44100)
    expected = scipy.signal.sosfilt(sos, x, axis=-1)
    got, state = np.empty_like(expected), np.zeros((3, 2, 2))
    for start in range(0, x.shape[1], 10000):  # in chunks, the state carried across the seams
        chunk = np.array(x[:, start:start + 10000], dtype=np.float64, order="C")
        kernel()(sos, chunk, state)
        got[:, start:start + 10000] = chunk
    assert np.array_equal(got, expected)
    monkeypatch.setattr(L, "sos_kernel", lambda: L._public_sos_kernel)  # the fallback, end to end
    public = L.measure(x, 44100)
    monkeypatch.undo()
    assert L.measure(x, 44100) == public


def test_a_loudness_worker_never_imports_scipy_signal():
    """``scipy.signal``'s import is 1-1.5 s of a loudness-only worker's start-up; its kernel is loaded
    alone, and ``scipy.signal`` imported later (another analyzer) still works beside it."""
    code = ("import sys\n"
            "import numpy as np\n"
            "from mirflow.analyzers.loudness import LoudnessAnalyzer, measure\n"
            "LoudnessAnalyzer().setup()\n"
            "x = np.random.default_rng(0).standard_normal((2, 96000)).astype(np.float32) * 0.1\n"
            "first = measure(x, 48000)\n"
            "print('scipy.signal' in sys.modules)\n"
            "import scipy.signal\n"
            "from mirflow.analyzers import loudness\n"
            "loudness.sos_kernel.cache_clear()\n"
            "assert measure(x, 48000) == first\n"
            "print(scipy.signal.sosfilt(loudness.k_weighting_sos(48000), x).shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["False", "(2, 96000)"]
