"""Stem separation: batched inference equals apply_model, stems on disk, one model load, resume, safety.

Every test uses a tiny HTDemucs built and saved as a local Demucs repo by ``tiny_demucs`` (no
weights can be downloaded); clips are a few seconds of synthetic stereo.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
pytest.importorskip("demucs")

from conftest import mirflow, sidecar, write_track  # noqa: E402
from tiny_demucs import SOURCES, clip, save_repo, tiny_htdemucs  # noqa: E402

from mirflow.analyzers.separation import SeparationAnalyzer  # noqa: E402
from mirflow.core import devices  # noqa: E402
from mirflow.core.audio import TrackContext  # noqa: E402
from mirflow.core.errors import ConfigError, DecodeError, ModelUnavailableError  # noqa: E402
from mirflow.core.stems_io import stem_complete, write_stems  # noqa: E402
from mirflow.models import precision as precmod  # noqa: E402

SR = 44100


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models run fastest (and steadiest on a busy machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local Demucs repo with the bag ``tiny`` (one tiny HTDemucs, 1 s segments)."""
    return save_repo(tmp_path_factory.mktemp("demucs-repo"), "tiny", [tiny_htdemucs()])


@pytest.fixture
def load_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts calls of ``demucs.pretrained.get_model`` (the one place the model is constructed)."""
    from demucs import pretrained

    calls: list[str] = []
    real = pretrained.get_model

    def counting(name, repo=None):
        calls.append(name)
        return real(name, repo=repo)

    monkeypatch.setattr(pretrained, "get_model", counting)
    return calls


def make_tracks(root: Path, lengths=(2.0, 3.0, 0.6), *, sr: int = SR) -> list[Path]:
    return [write_track(root, f"track {i}", clip(s, seed=i), sr) for i, s in enumerate(lengths)]


def separator(repo: Path, **params) -> SeparationAnalyzer:
    sep = SeparationAnalyzer(model="tiny", repo=str(repo), **params)
    sep.setup("cpu")
    return sep


# -- the batched engine -------------------------------------------------------------------------------

def test_batched_engine_equals_apply_model() -> None:
    from demucs.apply import apply_model

    from mirflow.models.demucs_batch import separate_stream

    model = tiny_htdemucs()
    mixes = [torch.from_numpy(clip(s, seed=i)) for i, s in enumerate([2.3, 0.4, 3.0])]
    sizes: list[int] = []
    out = dict(separate_stream(model, list(enumerate(mixes)), batch_size=4, on_forward=sizes.append))
    assert sizes == [4, 4, 1]  # 4 + 1 + 4 segments: passes mix segments of several tracks
    lanes = dict(separate_stream(model, list(enumerate(mixes)), batch_size=1, lanes=3))
    for i, mix in enumerate(mixes):
        ref = apply_model(model, mix[None], shifts=0, overlap=0.25)[0]
        assert out[i].shape == ref.shape == (4, 2, mix.shape[-1])
        assert float((out[i] - ref).abs().max()) < 1e-4
        assert float((lanes[i] - ref).abs().max()) < 1e-4  # concurrent passes in threads


def test_elastic_engine_follows_the_allowance_between_passes() -> None:
    """With ``threads`` (the worker's elastic allowance), each forward pass runs with as many
    intra-op threads as the allowance has room for, set in the thread running it: one lane, the
    allowance moving 1 -> 3 -> 2 while a track is separated; and with lanes, at most
    ``min(lanes, allowance)`` passes at once. Outputs stay those of ``apply_model``."""
    import threading

    from demucs.apply import apply_model

    from mirflow.models.demucs_batch import separate_stream

    model = tiny_htdemucs()
    mix = torch.from_numpy(clip(4.0, seed=1))  # 1 s segments: several passes
    ref = apply_model(model, mix[None], shifts=0, overlap=0.25)[0]
    plan = iter([1, 1, 3, 3, 2])
    asked: list[int] = []

    def allowance() -> int:
        asked.append(next(plan, 2))
        return asked[-1]

    used: list[int] = []
    main_threads = torch.get_num_threads()
    try:
        out = dict(separate_stream(model, [(0, mix)], lanes=1, threads=allowance,
                                   on_forward=lambda n: used.append(torch.get_num_threads())))
    finally:
        torch.set_num_threads(main_threads)
    assert used == asked and used[:5] == [1, 1, 3, 3, 2]
    assert float((out[0] - ref).abs().max()) < 1e-4

    running, peak, lock = [0], [0], threading.Lock()
    real_forward = model.forward

    def counting_forward(x):  # noqa: ANN001
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return real_forward(x)
        finally:
            with lock:
                running[0] -= 1

    model.forward = counting_forward
    intra: list[int] = []
    try:
        for allowed, most in ((1, 1), (4, 2)):
            peak[0] = 0
            intra.clear()
            out = dict(separate_stream(model, [(0, mix)], lanes=2, threads=lambda: allowed,
                                       on_forward=lambda n: intra.append(torch.get_num_threads())))
            assert peak[0] <= most and set(intra) == {allowed // most}
            assert float((out[0] - ref).abs().max()) < 1e-4
    finally:
        del model.forward
        torch.set_num_threads(main_threads)


def test_cores_freed_during_a_pass_start_the_next_pass_beside_it() -> None:
    """The tail of a run: a track starts while its neighbour still works (allowance 1), the
    neighbour finishes during the first pass (allowance 2). The second pass must start then, on
    the freed core, not after the first pass (a 2-segment track ran wholly on one core)."""
    import threading
    import time

    from mirflow.models.demucs_batch import separate_stream

    model = tiny_htdemucs()
    mix = torch.from_numpy(clip(2.0, seed=2))  # 1 s segments: a few passes
    allowed, spans, lock = [1], [], threading.Lock()
    real_forward = model.forward

    def timed_forward(x):  # noqa: ANN001
        start = time.monotonic()
        with lock:
            first = not spans
            spans.append([start, None])
            index = len(spans) - 1
        if first:
            time.sleep(0.15)
            allowed[0] = 2  # the neighbour finished its track
            time.sleep(0.6)
        try:
            return real_forward(x)
        finally:
            spans[index][1] = time.monotonic()

    model.forward = timed_forward
    main_threads = torch.get_num_threads()
    try:
        out = dict(separate_stream(model, [(0, mix)], lanes=2, threads=lambda: allowed[0]))
    finally:
        del model.forward
        torch.set_num_threads(main_threads)
    assert len(spans) >= 2 and 0 in out
    assert spans[1][0] < spans[0][1] - 0.3  # started while the first pass still ran


def test_batched_engine_equals_apply_model_for_bag_with_shifts(monkeypatch: pytest.MonkeyPatch) -> None:
    import demucs.apply
    from demucs.apply import BagOfModels, apply_model

    from mirflow.models.demucs_batch import separate_stream

    bag = BagOfModels([tiny_htdemucs(seed=0), tiny_htdemucs(seed=1)],
                      weights=[[1.0, 0.5, 1.0, 1.0], [0.3, 1.0, 1.0, 1.0]])
    mixes = [torch.from_numpy(clip(s, seed=i)) for i, s in enumerate([1.7, 0.5])]
    out = dict(separate_stream(bag, list(enumerate(mixes)), batch_size=3, shifts=2, seed=7))
    for i, mix in enumerate(mixes):
        # apply_model draws shifts from the global `random`, which HTDemucs' forward also consumes;
        # give it the same private stream the batched path uses for each track.
        monkeypatch.setattr(demucs.apply, "random", random.Random(7))
        ref = apply_model(bag, mix[None], shifts=2)[0]
        assert float((out[i] - ref).abs().max()) < 1e-4


# -- the analyzer ---------------------------------------------------------------------------------------

def test_stems_have_names_length_rate_channels(repo: Path, dataset: Path) -> None:
    from demucs.apply import apply_model

    mixes = make_tracks(dataset)
    mixes.append(write_track(dataset, "mono 48k", clip(1.5, seed=9)[:1], 48000))  # resampled + upmixed
    sep = separator(repo, batch=3, stem_format="wav", stem_bits=24)
    ctxs = [TrackContext(p) for p in mixes]
    results = sep.analyze_batch(ctxs)
    for ctx, res in zip(ctxs, results):
        assert not isinstance(res, BaseException), res
        n = ctx.stereo(SR).shape[-1]
        assert res["stems"] == SOURCES and res["separation_sr"] == SR and res["separation_frames"] == n
        assert res["separation_signature"] == "abc00000" and res["separation_precision"] == "fp32"
        folder = ctx.path.parent
        assert sorted(p.name for p in folder.iterdir() if p.name != ctx.path.name) == \
            sorted(f"{s}.wav" for s in SOURCES)
        for s in SOURCES:
            info = sf.info(str(folder / f"{s}.wav"))
            assert (info.samplerate, info.channels, info.frames, info.subtype) == (SR, 2, n, "PCM_24")
        assert sep.outputs_valid(folder, res["_record"])
    # the stems are Demucs' output for the standardised mix (24-bit quantisation aside)
    ctx = ctxs[1]
    wav = torch.from_numpy(ctx.stereo(SR))
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    expected = apply_model(sep._model, ((wav - mean) / std)[None], shifts=0)[0] * std + mean
    drums, _ = sf.read(str(ctx.path.parent / "drums.wav"), dtype="float32")
    assert np.abs(drums.T - expected[0].clamp(-1, 1).numpy()).max() < 1e-4
    sep.teardown()


def test_model_loaded_once_for_many_tracks(repo: Path, dataset: Path, load_counter: list[str]) -> None:
    ctxs = [TrackContext(p) for p in make_tracks(dataset, (1.0, 1.2, 0.8, 1.1, 0.5))]
    sep = separator(repo, batch=2)
    assert all(not isinstance(r, BaseException) for r in sep.analyze_batch(ctxs[:3]))
    assert all(not isinstance(r, BaseException) for r in sep.analyze_batch(ctxs[3:]))
    sep.analyze(ctxs[0])
    assert load_counter == ["tiny"]
    sep.teardown()


def test_cpu_threads_become_concurrent_passes(repo: Path, dataset: Path) -> None:
    torch.set_num_threads(2)
    try:
        sep = separator(repo)
        assert (sep._lanes, torch.get_num_threads()) == (2, 1)
        res = sep.analyze_batch([TrackContext(p) for p in make_tracks(dataset, (1.2, 0.9))])
        assert all(not isinstance(r, BaseException) for r in res)
        sep.teardown()
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(1)


def test_cpu_uses_the_standard_attention_path_with_the_same_stems(repo: Path, dataset: Path) -> None:
    """On CPU the analyzer turns PyTorch's fused attention fast path off (its standard path is
    cheaper for HTDemucs, benchmarks/mha_fastpath.py) while it is set up, and back on at teardown;
    the stems equal those of the fast path."""
    paths = make_tracks(dataset, (1.3,))
    assert torch.backends.mha.get_fastpath_enabled()
    sep = separator(repo)
    try:
        assert not torch.backends.mha.get_fastpath_enabled()
        model = sep._model
        mix = torch.from_numpy(clip(1.3, seed=0))[None]
        from demucs.apply import apply_model

        off = apply_model(model, mix, shifts=0, overlap=0.25)
        torch.backends.mha.set_fastpath_enabled(True)
        on = apply_model(model, mix, shifts=0, overlap=0.25)
        torch.backends.mha.set_fastpath_enabled(False)
        assert float((off - on).abs().max()) < 1e-5
        assert sep.analyze(TrackContext(paths[0]))["separation_model"] == "tiny"
    finally:
        sep.teardown()
    assert torch.backends.mha.get_fastpath_enabled()


def test_an_elastic_worker_sizes_its_lanes_by_the_core_budget(repo: Path, dataset: Path) -> None:
    """In an elastic worker (one thread now, up to 2 when a neighbour idles) separation keeps room
    for 2 concurrent passes and asks the allowance as it goes."""
    from mirflow.core import threads

    asked: list[int] = []
    before = torch.get_num_threads()
    threads.install(lambda: asked.append(1) or 1, 2)
    try:
        sep = separator(repo)
        assert sep._lanes == 2
        res = sep.analyze_batch([TrackContext(p) for p in make_tracks(dataset, (1.2, 0.9))])
        assert all(not isinstance(r, BaseException) for r in res) and asked
        sep.teardown()
    finally:
        threads.uninstall()
        torch.set_num_threads(before)


def test_one_bad_track_fails_alone(repo: Path, dataset: Path) -> None:
    good = make_tracks(dataset, (1.0, 0.7))
    bad = dataset / "bad" / "full_mix.wav"
    bad.parent.mkdir()
    bad.write_bytes(b"RIFF not really audio")
    sep = separator(repo, batch=4)
    results = sep.analyze_batch([TrackContext(good[0]), TrackContext(bad), TrackContext(good[1])])
    assert isinstance(results[1], DecodeError)
    assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
    assert not [p for p in bad.parent.iterdir() if p.name != "full_mix.wav"]
    sep.teardown()


def test_stream_yields_each_track_before_pulling_all_and_equals_the_batch(repo: Path, dataset: Path) -> None:
    """``analyze_stream`` (the GPU lane's): tracks are pulled lazily and come out as soon as they
    are separated, with the stems ``analyze_batch`` writes; a bad track fails alone; the stems are
    left to write when the caller defers writes, and the model input is dropped once used."""
    good = make_tracks(dataset, (1.5, 0.6, 2.0, 1.0))
    bad = dataset / "bad" / "full_mix.wav"
    bad.parent.mkdir()
    bad.write_bytes(b"RIFF not really audio")
    sep = separator(repo, batch=2)
    paths = [good[0], bad, *good[1:]]
    ctxs = [TrackContext(p) for p in paths]
    for ctx in ctxs:
        ctx.defer_writes = True
    events: list[str] = []

    def source():
        for i, ctx in enumerate(ctxs):
            events.append(f"pull {i}")
            yield ctx

    out = []
    for ctx, res in sep.analyze_stream(source()):
        events.append(f"out {ctxs.index(ctx)}")
        out.append((ctx, res))
    assert events.index("out 0") < events.index(f"pull {len(ctxs) - 1}"), events  # streamed
    got = {ctxs.index(c): r for c, r in out}
    assert sorted(got) == list(range(len(ctxs))) and isinstance(got[1], DecodeError)
    for i in (0, 2, 3, 4):
        assert not isinstance(got[i], BaseException), got[i]
        assert not [k for k in ctxs[i]._memo if k[0] == "separation-input"]  # dropped once used
        assert not list(paths[i].parent.glob("drums.*"))  # deferred: nothing written yet
        ctxs[i].files_to_write["separation"].write()
    streamed = {i: sf.read(str(paths[i].parent / "drums.flac"), dtype="float32")[0] for i in (0, 2, 3, 4)}
    batch = sep.analyze_batch([TrackContext(paths[i]) for i in (0, 2, 3, 4)])
    assert all(not isinstance(r, BaseException) for r in batch)
    for i in (0, 2, 3, 4):
        again, _ = sf.read(str(paths[i].parent / "drums.flac"), dtype="float32")
        assert np.abs(again - streamed[i]).max() < 1e-4
    sep.teardown()


def test_failed_write_leaves_no_partial_stems(repo: Path, dataset: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (mix,) = make_tracks(dataset, (1.0,))
    folder = mix.parent
    sep = separator(repo)
    first = sep.analyze(TrackContext(mix))
    before = {s: (folder / f"{s}.flac").read_bytes() for s in SOURCES}

    real_write = sf.SoundFile.write
    calls = {"n": 0}

    def failing_write(self, data):
        calls["n"] += 1
        if calls["n"] == 3:  # the third stem: half written, then the disk "fills up"
            real_write(self, data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(sf.SoundFile, "write", failing_write)
    sep.params["stem_bits"] = 24  # a different output than the stems on disk
    (result,) = sep.analyze_batch([TrackContext(mix)])
    assert isinstance(result, OSError)
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(["full_mix.flac", *(f"{s}.flac" for s in SOURCES)])  # no temporaries
    assert {s: (folder / f"{s}.flac").read_bytes() for s in SOURCES} == before  # old stems untouched
    assert sep.outputs_valid(folder, first["_record"])
    sep.teardown()


def test_interrupt_leaves_only_complete_stems(repo: Path, dataset: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import mirflow.models.demucs_batch as batch_mod

    mixes = make_tracks(dataset, (1.0, 1.0, 1.0))
    real = batch_mod.separate_stream

    def interrupted(*args, **kwargs):
        for n, item in enumerate(real(*args, **kwargs)):
            if n == 1:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(batch_mod, "separate_stream", interrupted)
    sep = separator(repo, batch=1)
    with pytest.raises(KeyboardInterrupt):
        sep.analyze_batch([TrackContext(p) for p in mixes])
    # track 0 was separated before the interrupt: its stems are complete; the others have none
    assert sep.outputs_valid(mixes[0].parent, {})
    for p in mixes[1:]:
        assert [x.name for x in p.parent.iterdir()] == ["full_mix.flac"]
    for p in mixes:
        assert not [x for x in p.parent.iterdir() if x.name.startswith(".mirflow-tmp-")]
    sep.teardown()


def test_outputs_valid_detects_missing_and_truncated_stems(repo: Path, dataset: Path) -> None:
    mixes = make_tracks(dataset, (2.0, 2.0, 2.0))
    sep = separator(repo, batch=2)
    results = sep.analyze_batch([TrackContext(p) for p in mixes])
    records = [r["_record"] for r in results]
    folders = [p.parent for p in mixes]
    assert all(sep.outputs_valid(f, r) for f, r in zip(folders, records))
    assert sep.output_files(folders[0], records[0]) == [folders[0] / f"{s}.flac" for s in SOURCES]
    (folders[0] / "vocals.flac").unlink()
    assert not sep.outputs_valid(folders[0], records[0])
    bass = folders[1] / "bass.flac"  # a cut-off copy: the FLAC header still claims the full length
    bass.write_bytes(bass.read_bytes()[: bass.stat().st_size // 2])
    assert not sep.outputs_valid(folders[1], records[1])
    assert not stem_complete(bass, frames=None, sr=SR)
    wrong = dict(records[2], frames=records[2]["frames"] + 1)  # stems from another mix
    assert not sep.outputs_valid(folders[2], wrong)
    sep.teardown()


def test_write_stems_is_all_or_nothing(tmp_path: Path) -> None:
    stems = {"a": np.zeros((2, 100), np.float32), "b": np.full((2, 100), 2.0, np.float32)}
    out = write_stems(tmp_path, stems, sr=SR)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac", "b.flac"] == sorted(p.name for p in out.values())
    data, _ = sf.read(str(tmp_path / "b.flac"))
    assert data.max() == pytest.approx(1.0, abs=1e-4)  # clipped, not wrapped
    with pytest.raises(KeyError):
        write_stems(tmp_path, {"c": stems["a"]}, sr=SR, bits=12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac", "b.flac"]


# -- configuration and availability -------------------------------------------------------------------

def test_params_hash_ignores_batch_device_and_repo(repo: Path) -> None:
    base = SeparationAnalyzer().params_hash()
    assert SeparationAnalyzer(batch=8, device="cpu").params_hash() == base
    moved = repo.parent / "moved-repo"
    if not moved.exists():
        shutil.copytree(repo, moved)
    assert SeparationAnalyzer(model="tiny", repo=str(moved), batch=2).params_hash() == \
        SeparationAnalyzer(model="tiny", repo=str(repo)).params_hash()  # where the weights are does not matter
    assert SeparationAnalyzer(precision="bf16").params_hash() != base
    assert SeparationAnalyzer(shifts=1).params_hash() != base
    other = save_repo(repo.parent / "other-weights", "tiny", [tiny_htdemucs(seed=3)], sigs=["f00df00d"])
    assert SeparationAnalyzer(model="tiny", repo=str(other)).params_hash() != \
        SeparationAnalyzer(model="tiny", repo=str(repo)).params_hash()  # same name, other weights
    for bad in ({"precision": "int8"}, {"stem_format": "mp3"}, {"stem_bits": 20}, {"overlap": 1.0},
                {"shifts": -1}, {"batch": 0}, {"segment": 0}):
        with pytest.raises(ConfigError):
            SeparationAnalyzer(**bad)


def test_unavailable_reasons_say_how_to_get_weights(repo: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert SeparationAnalyzer(model="tiny", repo=str(repo)).unavailable_reason() is None
    assert SeparationAnalyzer(model="abc00000", repo=str(repo)).unavailable_reason() is None
    msg = SeparationAnalyzer(model="htdemucs", repo=str(repo)).unavailable_reason()
    assert "htdemucs" in msg and "--sep-repo" in msg and "tiny" in msg
    assert "does not exist" in SeparationAnalyzer(repo=str(tmp_path / "nowhere")).unavailable_reason()
    broken = save_repo(tmp_path / "broken", "tiny", [tiny_htdemucs()], sigs=["deadbeef"])
    next(broken.glob("deadbeef*.th")).unlink()
    assert "deadbeef" in SeparationAnalyzer(model="tiny", repo=str(broken)).unavailable_reason()

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    msg = SeparationAnalyzer().unavailable_reason()
    assert "not available offline" in msg and "--sep-repo" in msg and "get_model('htdemucs')" in msg
    ckpt = tmp_path / "torch" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "955717e8-8726e21a.th").write_bytes(b"x")  # htdemucs' weights, as Demucs caches them
    assert SeparationAnalyzer().unavailable_reason() is None
    snap = tmp_path / "hf" / "models--adefossez--HTDemucs-6s" / "snapshots" / "0123"
    snap.mkdir(parents=True)
    (snap / "htdemucs_6s.yaml").write_text("models: ['5c90dfd2']\n")
    (snap / "5c90dfd2.safetensors").write_bytes(b"x")
    assert SeparationAnalyzer(model="htdemucs_6s").unavailable_reason() is None


def test_weights_from_a_models_folder_and_corrupt_weights(repo: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --sep-repo, .th files in a mirflow models folder serve the model (bag from Demucs' own
    catalogue); a weight file whose SHA-256 no longer matches its name is refused when loading."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    mdir = tmp_path / "models"
    mdir.mkdir()
    from tiny_demucs import save_model

    save_model(tiny_htdemucs(), mdir, "955717e8")  # a tiny stand-in under htdemucs' signature
    sep = SeparationAnalyzer(models_dir=str(mdir))
    assert sep.unavailable_reason() is None
    assert sep.hashed_params()["signature"] == "955717e8"
    assert SeparationAnalyzer(models_dir=str(mdir)).params_hash() == SeparationAnalyzer().params_hash()
    sep.setup("cpu")
    assert sep.sources == SOURCES and sep._signature == "955717e8"
    sep.teardown()

    broken = tmp_path / "broken-repo"
    shutil.copytree(repo, broken)
    th = next(broken.glob("abc00000-*.th"))
    data = bytearray(th.read_bytes())
    data[len(data) // 2] ^= 0xFF
    th.write_bytes(bytes(data))
    bad = SeparationAnalyzer(model="tiny", repo=str(broken))
    assert bad.unavailable_reason() is None  # cheap check: the files are there
    with pytest.raises(ModelUnavailableError, match="(?i)checksum.*models verify"):
        bad.setup("cpu")


def test_module_import_does_not_import_torch() -> None:
    code = ("import sys; from mirflow.analyzers.separation import SeparationAnalyzer as S; "
            "S().unavailable_reason(); S().params_hash(); S().output_files(__import__('pathlib').Path('.'), {}); "
            "assert 'torch' not in sys.modules and 'demucs' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_precision_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precmod, "_cpu_flags", lambda: {"avx2", "fma"})
    prec, why = precmod.resolve_precision("bf16", devices.CPU)
    assert prec == "fp32" and "lacks native bf16" in why
    monkeypatch.setattr(precmod, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert precmod.resolve_precision("bf16", devices.CPU) == ("bf16", None)
    prec, why = precmod.resolve_precision("fp16", devices.CPU)
    assert prec == "fp32" and "accelerators" in why
    assert precmod.resolve_precision("fp32", devices.CPU) == ("fp32", None)
    monkeypatch.setattr(precmod, "_cpu_flags", lambda: set())
    assert "cannot read CPU flags" in precmod.resolve_precision("bf16", devices.CPU)[1]
    with pytest.raises(ValueError):
        precmod.resolve_precision("int8", devices.CPU)


def test_separation_device_comes_from_the_one_resolver(repo: Path) -> None:
    """The ``device`` parameter's spelling is checked with the parameters; the device itself by the
    one resolver in setup() (and, in a run, when the options are built); setup() runs on the device
    it is given (already resolved by the run)."""
    assert SeparationAnalyzer(device="cpu").params["device"] == "cpu"
    with pytest.raises(ConfigError, match=r"separation\.device = 'tpu'.*unknown device"):
        SeparationAnalyzer(device="tpu")
    if not any(d.kind == "cuda" and d.index == 7 for d in devices.available()):
        absent = SeparationAnalyzer(model="tiny", repo=str(repo), device="cuda:7")  # spelled right
        with pytest.raises(ConfigError, match=r"'cuda:7' is not available.*it has: cpu"):
            absent.setup("cpu")
        with pytest.raises(ConfigError, match=r"'cuda:7' is not available"):
            SeparationAnalyzer(model="tiny", repo=str(repo)).setup("cuda:7")
    sep = SeparationAnalyzer(model="tiny", repo=str(repo))
    sep.setup(devices.CPU)  # a resolved Device, as the run passes it
    assert sep._device == devices.CPU and next(sep._model.parameters()).device.type == "cpu"
    sep.teardown()


def test_cli_separation_on_a_missing_gpu_exits_2_with_one_line(repo: Path, dataset: Path) -> None:
    """``--set separation.device=cuda:0`` on a machine without that GPU: exit 2, one line, no work."""
    if any(d.kind == "cuda" for d in devices.available()):
        pytest.skip("this machine has a CUDA GPU")
    (mix,) = make_tracks(dataset, (0.5,))
    res = mirflow("run", str(dataset), "-a", "separation", "--sep-repo", str(repo), "--sep-model", "tiny",
                  "--set", "separation.device=cuda:0")
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cuda:0" in lines[0] and "not available" in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in mix.parent.iterdir()) == ["full_mix.flac"]


def test_bf16_path_runs_and_stays_close(repo: Path, dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precmod, "_cpu_flags", lambda: {"avx512_bf16"})  # run autocast even without it
    (mix,) = make_tracks(dataset, (1.5,))
    fp32 = separator(repo, stem_format="wav")
    fp32.analyze(TrackContext(mix))
    ref, _ = sf.read(str(mix.parent / "bass.wav"))
    bf16 = separator(repo, precision="bf16", stem_format="wav")
    res = bf16.analyze(TrackContext(mix))
    out, _ = sf.read(str(mix.parent / "bass.wav"))
    assert res["separation_precision"] == "bf16"
    assert np.abs(out - ref).max() < 0.05 * max(np.abs(ref).max(), 1e-3) + 1e-3
    fp32.teardown()
    bf16.teardown()


# -- end to end through the CLI --------------------------------------------------------------------------

def test_mirflow_run_separates_once_and_resumes(repo: Path, dataset: Path) -> None:
    mixes = make_tracks(dataset, (1.5, 1.0, 2.0, 0.7))
    args = ["-v", "run", str(dataset), "--analyzers", "separation", "--sep-repo", str(repo),
            "--sep-model", "tiny", "--executor", "serial", "--chunk", "4", "--sep-batch", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = mirflow(*args, check=True, env=env)
    assert first.stderr.count("separation: tiny loaded in") == 1  # one model load for 4 tracks
    for p in mixes:
        data = sidecar(p.parent)
        assert data["stems"] == SOURCES and data["_mirflow"]["separation"]["status"] == "ok"
        n = data["separation_frames"]
        for s in SOURCES:
            info = sf.info(str(p.parent / f"{s}.flac"))
            assert (info.samplerate, info.channels, info.frames) == (SR, 2, n)
    second = mirflow(*args, check=True, env=env)
    assert "loaded in" not in second.stderr  # nothing due: the model is not even loaded
    (mixes[1].parent / "drums.flac").unlink()
    third = mirflow(*args, "--json", check=True, env=env)
    summary = json.loads(third.stdout)
    assert summary["analyzers"]["separation"]["done"] == 1
    assert (mixes[1].parent / "drums.flac").exists()


def test_separation_then_per_stem_features_in_one_run(repo: Path, dataset: Path) -> None:
    """The default local executor: stems are written, then per-stem features run on them, same run."""
    mixes = make_tracks(dataset, (1.5, 1.0))
    args = ["run", str(dataset), "--analyzers", "separation,stems,loudness", "--sep-repo", str(repo),
            "--sep-model", "tiny", "--stem-analyzers", "loudness", "--workers", "2", "--json"]
    summary = json.loads(mirflow(*args, check=True).stdout)
    assert summary["analyzers"]["separation"]["done"] == 2 and summary["analyzers"]["stems"]["done"] == 2
    for p in mixes:
        data = sidecar(p.parent)
        assert data["stems_analyzed"] == sorted(SOURCES)
        assert all(f"{s}_lufs" in data and f"{s}_true_peak_dbtp" in data for s in SOURCES)
    again = json.loads(mirflow(*args, check=True).stdout)
    assert again["analyzers"]["stems"]["done"] == 0 and again["analyzers"]["separation"]["done"] == 0
    # re-separating with other parameters rewrites the stems, which makes per-stem features due again
    forced = json.loads(mirflow(*args, "--force", "separation", check=True).stdout)
    assert forced["analyzers"]["stems"]["done"] == 2
