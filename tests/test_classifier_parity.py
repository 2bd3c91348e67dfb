"""Classifier input parity with Essentia's documented inference pipeline.

Essentia's model pages run ``MonoLoader(filename, sampleRate=16000, resampleQuality=4)`` then
``TensorflowPredictVGGish``. mirflow's default 16 kHz view (``resampler="linear"``) must give the
same samples, hence the same log-mel patches and the same scores; ``resampler="soxr"`` must keep
the band-limited behaviour. Needs the ``essentia`` package (the ``test`` extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mirflow.analyzers import classifiers as clf
from mirflow.core.audio import TrackContext
from mirflow.models import registry as models, vggish

import tiny_models as tm

es = pytest.importorskip("essentia.standard")
sf = pytest.importorskip("soundfile")


def bright(sr: int, channels: int, seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    """``(channels, n)`` float32: tones sweeping 3-10 kHz, a 7 kHz tone and noise, so that a lot of
    energy lies near and above the 8 kHz Nyquist frequency of the 16 kHz view."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    chans = []
    for c in range(channels):
        sweep = np.sin(2 * np.pi * (3000 * t + 875 * t**2 * (1 + 0.1 * c)))
        x = 0.25 * sweep + 0.2 * np.sin(2 * np.pi * (7000 + 300 * c) * t)
        x += 0.05 * rng.standard_normal(n)
        chans.append(x * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t)))
    return np.stack(chans).astype(np.float32)


def write(tmp_path: Path, sr: int, channels: int) -> Path:
    path = tmp_path / f"bright_{sr}_{channels}.wav"
    sf.write(path, bright(sr, channels).T, sr, subtype="FLOAT")
    return path


def essentia_16k(path: Path) -> np.ndarray:
    return es.MonoLoader(filename=str(path), sampleRate=16000, resampleQuality=4)()


@pytest.mark.parametrize("sr,channels", [(44100, 2), (48000, 2), (22050, 1)])
def test_linear_view_equals_essentia_monoloader(tmp_path, sr, channels):
    path = write(tmp_path, sr, channels)
    ref = essentia_16k(path)
    ctx = TrackContext(path)
    ours = ctx.mono(vggish.SAMPLE_RATE, resampler="linear")
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-6, rtol=0)
    # the band-limited converter differs clearly on this bright signal (what the option keeps)
    soxr_view = ctx.mono(vggish.SAMPLE_RATE, resampler="soxr")
    m = min(soxr_view.size, ref.size)
    assert np.abs(soxr_view[:m] - ref[:m]).max() > 1e-2


def test_scores_equal_the_essentia_pipeline_and_soxr_stays_available(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(models.ENV_VAR, raising=False)
    path = write(tmp_path, 44100, 2)
    want = tm.reference("classifier", vggish.patches(essentia_16k(path)))[:, 0].mean()
    tm.install_single_stage(tmp_path / "models")
    scores = {}
    for resampler in ("linear", "soxr"):
        a = clf.ClassifiersAnalyzer(models_dir=str(tmp_path / "models"), resampler=resampler)
        a.setup("cpu")
        scores[resampler] = a.analyze(TrackContext(path))["danceability"]
    assert scores["linear"] == pytest.approx(want, abs=1e-5)
    assert abs(scores["soxr"] - want) > 1e-3
    assert clf.ClassifiersAnalyzer().params["resampler"] == "linear"
    assert (clf.ClassifiersAnalyzer(resampler="soxr").hashed_params()["resampler"]
            != clf.ClassifiersAnalyzer().hashed_params()["resampler"])


@pytest.mark.skipif(not clf.essentia_tensorflow_installed(),
                    reason="needs essentia-tensorflow (the .venv-tf test environment)")
def test_essentia_tensorflow_pipeline_gives_mirflow_scores(tmp_path, monkeypatch):
    """Essentia's own documented pipeline, MonoLoader(16 kHz, resampleQuality=4) then
    TensorflowPredictVGGish, on a .pb classifier, against mirflow's analyzer on the same file."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(models.ENV_VAR, raising=False)
    path = write(tmp_path, 44100, 2)
    folder = tmp_path / "models"
    tm.install_single_stage(folder, formats=("pb",), keys=("danceability",))
    graph = folder / "danceability-vggish-audioset-1.pb"
    predict = es.TensorflowPredictVGGish(graphFilename=str(graph), output="model/Sigmoid")
    want = float(np.asarray(predict(essentia_16k(path)))[:, 0].mean())
    scores = {}
    for resampler in ("linear", "soxr"):
        a = clf.ClassifiersAnalyzer(models_dir=str(folder), backend="essentia", resampler=resampler)
        a.setup("cpu")
        scores[resampler] = a.analyze(TrackContext(path))["danceability"]
    assert scores["linear"] == pytest.approx(want, abs=1e-5)
    assert abs(scores["soxr"] - want) > 1e-3
