"""The classifiers analyzer on tiny models with the real interfaces (ONNX, and Essentia when installed)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mirflow.models import registry as models, vggish
from mirflow.analyzers import classifiers as clf
from mirflow.core.audio import TrackContext
from mirflow.core.errors import DecodeError, ModelUnavailableError

import tiny_models as tm

SR = vggish.SAMPLE_RATE
KEYS = ["danceability", "atonality", "instrumentalness", "vocal_gender_female"]
HEAD_SEEDS = {"danceability": 11, "atonality": 12, "instrumentalness": 13, "vocal_gender_female": 14}


def track(seconds: float, seed: int) -> TrackContext:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = 0.05 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * (200 + 100 * seed) * t)
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * (0.2 + 0.1 * seed) * t)
    return TrackContext.from_array(np.stack([x, 0.8 * x]).astype(np.float32), SR)


def install_heads(d, *, formats=("onnx",), seeds=True):
    tm.install(d, "audioset-vggish-3", "embedding", formats=formats)
    for spec in models.REGISTRY.values():
        if spec.role == "head":
            tm.install(d, spec.name, "head", formats=formats, labels=list(spec.labels),
                       seed=HEAD_SEEDS[spec.key] if seeds else None)


def expected_single(ctx: TrackContext) -> np.ndarray:
    """Per-patch P(positive) of the tiny single-stage classifier (column 0 for every registry entry)."""
    return tm.reference("classifier", vggish.patches(ctx.mono(SR)))[:, 0]


def expected_two_stage(ctx: TrackContext, key: str) -> np.ndarray:
    emb = tm.reference("embedding", vggish.patches(ctx.mono(SR)))
    return tm.reference("head", emb, seed=HEAD_SEEDS[key])[:, 0]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(models.ENV_VAR, raising=False)


def test_importing_mirflow_loads_no_inference_runtime():
    code = ("import sys, mirflow, mirflow.models.registry, mirflow.models.vggish, mirflow.analyzers.classifiers, "
            "mirflow.cli.models\n"
            "a = mirflow.analyzers.classifiers.ClassifiersAnalyzer(models_dir='/nonexistent')\n"
            "a.unavailable_reason(); a.hashed_params()\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('onnxruntime', 'essentia', 'tensorflow', 'onnx')]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_model_is_unavailable_with_the_download_command(tmp_path):
    a = clf.ClassifiersAnalyzer(models_dir=str(tmp_path))
    reason = a.unavailable_reason()
    assert reason and ("mirflow models download audioset-vggish-3 danceability-audioset-vggish-1 "
                       "tonal_atonal-audioset-vggish-1") in reason
    assert str(tmp_path) in reason
    with pytest.raises(ModelUnavailableError):
        a.setup("cpu")


def test_pb_only_install_explains_convert_or_essentia(tmp_path, monkeypatch):
    monkeypatch.setattr(clf, "essentia_tensorflow_installed", lambda: False)
    tm.install(tmp_path, "danceability-vggish-audioset-1", "classifier", formats=("pb",))
    reason = clf.ClassifiersAnalyzer(models_dir=str(tmp_path)).unavailable_reason()
    assert "mirflow models convert danceability-vggish-audioset-1" in reason
    assert "pip install essentia-tensorflow" in reason


def test_single_stage_scores_are_patch_means_with_series(tmp_path):
    tm.install_single_stage(tmp_path)
    a = clf.ClassifiersAnalyzer(models_dir=str(tmp_path), series=True)
    a.setup("cpu")
    ctx = track(5.0, 1)
    out = a.analyze(ctx)
    want = expected_single(ctx)
    for key in KEYS:
        assert out[key] == pytest.approx(want.mean(), abs=1e-5)
        assert 0.0 <= out[key] <= 1.0
        np.testing.assert_allclose(out[f"{key}_series"], want, atol=1e-5)
        assert len(out[f"{key}_series"]) == vggish.n_patches(5 * SR) == 5
    assert out["_record"]["models"]["danceability"] == "danceability-vggish-audioset-1"
    assert out["_record"]["backends"]["danceability"] == "onnx"
    assert "_note" not in out


def test_two_stage_preferred_and_embedding_runs_once_per_track(tmp_path):
    tm.install_single_stage(tmp_path)
    install_heads(tmp_path)
    a = clf.ClassifiersAnalyzer(models_dir=str(tmp_path), batch=8)
    a.setup("cpu")
    ctxs = [track(4.0, 1), track(7.5, 2), track(2.0, 3)]
    outs = a.analyze_batch(ctxs)
    total = sum(vggish.n_patches(len(c.mono(SR))) for c in ctxs)
    emb = a.runners["audioset-vggish-3"]
    assert emb.rows == total and emb.calls == -(-total // 8)  # each patch embedded once, batches of 8
    assert "danceability-vggish-audioset-1" not in a.runners  # single stage not even loaded
    for name, runner in a.runners.items():
        if name != "audioset-vggish-3":
            assert runner.rows == total and runner.calls == 1  # heads: one call for the whole batch
    for ctx, out in zip(ctxs, outs):
        assert ctx.stats["vggish-patches"] == 1 and ctx.stats["vggish-embeddings"] == 1
        for key in KEYS:
            assert out[key] == pytest.approx(expected_two_stage(ctx, key).mean(), abs=1e-5)
        assert out["_record"]["models"]["atonality"] == \
            "audioset-vggish-3 + tonal_atonal-audioset-vggish-1"
    assert len({round(outs[0][k], 6) for k in KEYS}) == 4  # each head answers its own key


def test_batched_equals_one_track_at_a_time(tmp_path):
    tm.install_single_stage(tmp_path)
    ctx_args = [(3.0, 1), (6.2, 2), (1.5, 3), (9.0, 4)]
    batched = clf.ClassifiersAnalyzer(models_dir=str(tmp_path), batch=5, series=True)
    batched.setup("cpu")
    outs = batched.analyze_batch([track(*a) for a in ctx_args])
    single = clf.ClassifiersAnalyzer(models_dir=str(tmp_path), batch=64, series=True)
    single.setup("cpu")
    for args, out in zip(ctx_args, outs):
        ref = single.analyze(track(*args))
        for key in KEYS:
            assert out[key] == pytest.approx(ref[key], abs=1e-6)
            np.testing.assert_allclose(out[f"{key}_series"], ref[f"{key}_series"], atol=1e-6)


def test_sessions_created_once_for_many_tracks(tmp_path, monkeypatch):
    import onnxruntime as ort

    tm.install_single_stage(tmp_path)
    install_heads(tmp_path)
    created = []
    real = ort.InferenceSession

    def counting(path, *a, **kw):
        created.append(path)
        return real(path, *a, **kw)

    monkeypatch.setattr(ort, "InferenceSession", counting)
    a = clf.ClassifiersAnalyzer(models_dir=str(tmp_path))
    a.setup("cpu")
    for i in range(3):
        a.analyze_batch([track(2.0, i), track(1.2, i + 5)])
        a.analyze(track(1.0, i + 9))
    assert len(created) == 5 == len(set(created))  # embedding + 4 heads, once each
    assert set(a.sessions_created.values()) == {1}


def test_thread_count_is_passed_by_the_worker_not_read_from_the_environment(tmp_path, monkeypatch):
    from mirflow.run.worker import AnalyzerSpec, Worker

    tm.install_single_stage(tmp_path, keys=("danceability",))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # ignored: the executor's plan arrives as `threads`
    worker = Worker([AnalyzerSpec("classifiers", {"models_dir": str(tmp_path)})], device="cpu",
                    threads=1)
    a = worker.analyzer("classifiers")
    opts = a.runners["danceability-vggish-audioset-1"].session.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    b = clf.ClassifiersAnalyzer(models_dir=str(tmp_path))
    b.setup("cpu")  # no count given: ONNX Runtime's default (0)
    assert b.runners["danceability-vggish-audioset-1"].session.get_session_options().intra_op_num_threads == 0


def test_providers_follow_the_resolved_device():
    assert clf.onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert clf.onnx_providers("mps") == ["CPUExecutionProvider"]  # ONNX Runtime has no MPS provider
    cuda = clf.onnx_providers("cuda:1")
    assert cuda[-1] == "CPUExecutionProvider"
    assert all(p[1] == {"device_id": 1} for p in cuda[:-1])


def test_short_audio_gives_none_with_a_reason_and_bad_audio_fails_alone(tmp_path):
    tm.install_single_stage(tmp_path)
    a = clf.ClassifiersAnalyzer(models_dir=str(tmp_path), series=True)
    a.setup("cpu")
    short = TrackContext.from_array(np.full(vggish.MIN_SAMPLES - 1, 0.1, np.float32), SR)
    bad = TrackContext(tmp_path / "missing.flac")
    good = track(2.0, 1)
    outs = a.analyze_batch([short, bad, good])
    assert all(outs[0][k] is None for k in KEYS) and outs[0]["danceability_series"] is None
    assert "too short" in outs[0]["_note"] and "0.94 s" in outs[0]["_note"]
    assert isinstance(outs[1], DecodeError)
    assert outs[2]["danceability"] is not None
    one_patch = TrackContext.from_array(np.full(vggish.MIN_SAMPLES, 0.1, np.float32), SR)
    assert len(a.analyze(one_patch)["danceability_series"]) == 1


def test_partial_install_fills_what_it_can_and_names_the_rest(tmp_path):
    tm.install_single_stage(tmp_path, keys=("danceability",))
    a = clf.ClassifiersAnalyzer(models_dir=str(tmp_path))
    assert a.unavailable_reason() is None
    a.setup("cpu")
    out = a.analyze(track(2.0, 1))
    assert out["danceability"] is not None and out["atonality"] is None
    assert "mirflow models download tonal_atonal-vggish-audioset-1" in out["_note"]
    assert list(out["_record"]["models"]) == ["danceability"]


def test_label_order_from_metadata_picks_the_positive_column(tmp_path):
    tm.install(tmp_path, "danceability-vggish-audioset-1", "classifier",
               labels=["not_danceable", "danceable"])
    a = clf.ClassifiersAnalyzer(models_dir=str(tmp_path))
    a.setup("cpu")
    ctx = track(3.0, 2)
    want = tm.reference("classifier", vggish.patches(ctx.mono(SR)))[:, 1].mean()
    assert a.analyze(ctx)["danceability"] == pytest.approx(want, abs=1e-5)


def test_params_hash_tracks_model_files_not_batch_or_device(tmp_path):
    tm.install_single_stage(tmp_path)
    h = clf.ClassifiersAnalyzer(models_dir=str(tmp_path)).params_hash()
    assert clf.ClassifiersAnalyzer(models_dir=str(tmp_path), batch=7, device="cpu").params_hash() == h
    assert clf.ClassifiersAnalyzer(models_dir=str(tmp_path), series=True).params_hash() != h
    tm.install(tmp_path, "gender-vggish-audioset-1", "classifier", seed=99)  # a changed model file
    assert clf.ClassifiersAnalyzer(models_dir=str(tmp_path)).params_hash() != h
    install_heads(tmp_path)  # the two-stage form takes over
    assert "audioset-vggish-3" in json.dumps(
        clf.ClassifiersAnalyzer(models_dir=str(tmp_path)).hashed_params())


def test_bad_params_are_config_errors():
    from mirflow.core.errors import ConfigError

    with pytest.raises(ConfigError):
        clf.ClassifiersAnalyzer(backend="tensorflow")
    with pytest.raises(ConfigError):
        clf.ClassifiersAnalyzer(batch=0)


@pytest.mark.skipif(not clf.essentia_tensorflow_installed(),
                    reason="needs essentia-tensorflow (pip install essentia-tensorflow)")
def test_essentia_backend_gives_the_onnx_scores(tmp_path):
    tm.install_single_stage(tmp_path, formats=("onnx", "pb"))
    install_heads(tmp_path / "two", formats=("onnx", "pb"), seeds=False)
    ctxs = [track(3.0, 1), track(5.5, 2)]
    for d in (tmp_path, tmp_path / "two"):
        results = {}
        for backend in ("onnx", "essentia"):
            a = clf.ClassifiersAnalyzer(models_dir=str(d), backend=backend, batch=4, series=True)
            a.setup("cpu")
            results[backend] = a.analyze_batch(ctxs)
            assert set(results[backend][0]["_record"]["backends"].values()) == {backend}
        for o, e in zip(results["onnx"], results["essentia"]):
            for key in KEYS:
                assert abs(o[key] - e[key]) < 1e-4
                np.testing.assert_allclose(o[f"{key}_series"], e[f"{key}_series"], atol=1e-4)


def test_corrupt_model_file_fails_setup_with_a_verify_hint(tmp_path):
    tm.install_single_stage(tmp_path, keys=("danceability",))
    (tmp_path / "danceability-vggish-audioset-1.onnx").write_bytes(b"not a model")
    a = clf.ClassifiersAnalyzer(models_dir=str(tmp_path))
    with pytest.raises(ModelUnavailableError, match="mirflow models verify danceability-vggish-audioset-1"):
        a.setup("cpu")


def test_fixed_batch_model_is_fed_padded_batches(tmp_path):
    tm.install_single_stage(tmp_path, keys=("danceability",))
    tm.build_onnx("classifier", tmp_path / "danceability-vggish-audioset-1.onnx", batch=4)
    a = clf.ClassifiersAnalyzer(models_dir=str(tmp_path), batch=64, series=True)
    a.setup("cpu")
    runner = a.runners["danceability-vggish-audioset-1"]
    assert runner.fixed_batch == 4
    ctx = track(6.0, 3)  # 6 patches: calls of 4 + 4 (2 padded rows dropped)
    out = a.analyze(ctx)
    assert runner.calls == 2
    np.testing.assert_allclose(out["danceability_series"], expected_single(ctx), atol=1e-5)
