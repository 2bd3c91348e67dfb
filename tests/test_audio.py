"""Decoding (soundfile and the PyAV fallback), resampling and the memoising TrackContext."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import sine, write_track
from mirflow.core.audio import TrackContext, decode, resample, to_stereo
from mirflow.core.errors import DecodeError


def write_m4a(path: Path, samples: np.ndarray, sr: int) -> None:
    """Encode AAC in an MP4 container with PyAV (libsndfile cannot read it)."""
    import av

    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=sr, layout="stereo")
        frame_len = 1024
        for start in range(0, samples.shape[1], frame_len):
            chunk = np.ascontiguousarray(samples[:, start:start + frame_len], dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_decode_keeps_rate_and_channels(tmp_path: Path) -> None:
    six = np.stack([sine(110.0 * (c + 1), 0.5, 48000, channels=1)[0] for c in range(6)])
    path = write_track(tmp_path, "six", six, 48000, ext="wav", subtype="FLOAT")
    audio = decode(path)
    assert audio.sr == 48000 and audio.channels == 6 and audio.frames == 24000
    assert audio.samples.dtype == np.float32 and audio.samples.flags.c_contiguous
    np.testing.assert_allclose(audio.samples, six, atol=1e-7)


def test_pyav_fallback_reads_m4a(tmp_path: Path) -> None:
    y = sine(440.0, 1.0, 44100)
    path = tmp_path / "full_mix.m4a"
    write_m4a(path, y, 44100)
    audio = decode(path)
    assert audio.sr == 44100 and audio.channels == 2
    assert abs(audio.frames - 44100) < 3000  # AAC adds priming/padding frames
    rms = float(np.sqrt(np.mean(audio.samples[:, 4096:-4096] ** 2)))
    assert rms == pytest.approx(0.1 / np.sqrt(2), rel=0.05)


@pytest.mark.parametrize("content,match", [
    (b"", "empty"),
    (b"RIFF\x00\x00\x00\x00WAVEfmt nothing useful here" * 3, "decode"),
    (b"plain text, not audio\n" * 50, "decode"),
])
def test_bad_files_raise_decode_error(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "full_mix.wav"
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=match):
        decode(path)


def test_truncated_flac_decodes_what_is_there_or_fails_clearly(tmp_path: Path) -> None:
    path = write_track(tmp_path, "t", sine(seconds=2.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    try:
        audio = decode(path)
    except DecodeError as exc:
        assert "full_mix.flac" in str(exc)
    else:
        assert 0 < audio.frames < 88200


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="cannot access"):
        decode(tmp_path / "nope.wav")


def test_context_memoises_views_and_decodes_once(tmp_path: Path) -> None:
    path = write_track(tmp_path, "t", sine(seconds=1.0, sr=48000), 48000)
    ctx = TrackContext(path)
    a = ctx.mono(22050)
    b = ctx.mono(22050)
    assert a is b and a.shape == (22050,)
    s1 = ctx.stft(sr=22050)
    assert ctx.stft(sr=22050) is s1 and s1.shape == (1025, 44)
    ctx.stereo(44100)
    assert ctx.stats["decode"] == 1 and ctx.stats["stft"] == 1 and ctx.stats["resample-mono"] == 1


def test_failed_decode_is_not_retried(tmp_path: Path) -> None:
    path = tmp_path / "full_mix.wav"
    path.write_bytes(b"junk" * 100)
    ctx = TrackContext(path)
    for _ in range(3):
        with pytest.raises(DecodeError):
            ctx.audio
    assert ctx.stats["decode"] == 1


def test_nan_samples_are_zeroed_with_a_warning() -> None:
    y = sine(seconds=0.1)
    y[0, 10:20] = np.nan
    y[1, 5] = np.inf
    ctx = TrackContext.from_array(y, 44100)
    assert np.isfinite(ctx.audio.samples).all()
    assert ctx.warnings == ["11 non-finite (NaN/inf) samples replaced by 0"]


def test_resample_and_stereo_mapping() -> None:
    y = sine(1000.0, 1.0, 8000, channels=1)
    up = resample(y, 8000, 22050)
    assert up.shape == (1, 22050) and up.dtype == np.float32
    assert float(np.max(np.abs(up[0, 1000:-1000]))) == pytest.approx(0.1, rel=0.01)
    assert to_stereo(y).shape == (2, 8000)
    six = np.zeros((6, 10), np.float32)
    six[2] = 1.0  # centre channel only
    st = to_stereo(six)
    assert st.shape == (2, 10) and np.allclose(st[0], st[1]) and st[0, 0] > 0


def test_odd_rates_and_one_sample(tmp_path: Path) -> None:
    p = write_track(tmp_path, "hi", sine(seconds=0.2, sr=192000), 192000, ext="wav", subtype="FLOAT")
    ctx = TrackContext(p)
    assert ctx.sr == 192000 and ctx.mono(22050).shape == (4410,)
    one = write_track(tmp_path, "one", np.array([[0.5]], np.float32), 44100, ext="wav")
    ctx = TrackContext(one)
    assert ctx.audio.frames == 1
    assert ctx.mono(22050).shape[0] <= 1
    sf.info(one)


@pytest.mark.parametrize("n", [0, 1, 100, 2047, 2048, 22050, 100_001])
def test_blockwise_stft_matches_librosa(n: int) -> None:
    import warnings

    import librosa

    from mirflow.core.audio import stft_magnitude

    y = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    ours = stft_magnitude(y, block_frames=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.abs(librosa.stft(y, n_fft=2048, hop_length=512, center=True, pad_mode="constant"))
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [1, 2, 3, 512, 2047, 2048])
def test_periodic_hann_is_scipys(n: int) -> None:
    from scipy.signal import get_window

    from mirflow.core.audio import periodic_hann

    window = periodic_hann(n)
    assert window.dtype == np.float32
    np.testing.assert_allclose(window, get_window("hann", n, fftbins=True), atol=1e-7)


def test_loudness_and_spectral_do_not_import_scipy_signal(tmp_path) -> None:
    """``scipy.signal``'s import (scipy.stats, interpolate, ...) is about a second of a worker's
    start-up; a worker with only loudness and spectral has no use for it."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "import mirflow.analyzers as registry\n"
        "from mirflow.core.audio import TrackContext\n"
        "from mirflow.core.synth import synth_song\n"
        "ctx = TrackContext.from_array(synth_song(bpm=120.0, seconds=3.0, sr=44100, seed=1), 44100)\n"
        "for name in ('loudness', 'spectral'):\n"
        "    analyzer = registry.get(name)()\n"
        "    analyzer.setup('cpu')\n"
        "    assert analyzer.analyze(ctx)\n"
        "print(sorted(m for m in sys.modules if m in ('scipy.signal', 'scipy.stats', 'librosa')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
