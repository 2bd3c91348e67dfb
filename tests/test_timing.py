"""Run timing: header durations, the per-analyzer / per-stage report, estimates from rates."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from conftest import sine, write_track
from mirflow.analyzers.base import Analyzer
from mirflow.core.dataset import discover
from mirflow.core.sidecar import AnalyzerResult
from mirflow.run.rates import RateBook
from mirflow.run.timing import AcceleratorMonitor, Timing, device_labels, header_duration


class Cpu(Analyzer):
    name: ClassVar[str] = "cpu_a"


class Gpu(Analyzer):
    name: ClassVar[str] = "gpu_a"
    device: ClassVar[str] = "gpu"


def test_header_duration(dataset: Path) -> None:
    flac = write_track(dataset, "a", sine(seconds=2.5, sr=44100))
    ogg = write_track(dataset, "b", sine(seconds=1.5, sr=48000), 48000, ext="ogg")
    assert header_duration(flac) == pytest.approx(2.5, abs=1e-3)
    assert header_duration(ogg) == pytest.approx(1.5, abs=0.05)
    junk = dataset / "c" / "full_mix.mp3"
    junk.parent.mkdir()
    junk.write_bytes(b"not audio at all" * 10)
    assert header_duration(junk) is None


def test_device_labels_without_accelerator() -> None:
    ans = {"cpu_a": Cpu(), "gpu_a": Gpu()}
    assert device_labels(ans, "cpu") == {"cpu_a": "cpu", "gpu_a": "cpu"}


def _result(seconds: float, status: str = "ok") -> AnalyzerResult:
    return AnalyzerResult(status=status, seconds=seconds)


def test_report_and_rates(dataset: Path, tmp_path: Path) -> None:
    write_track(dataset, "short", sine(seconds=2.0))
    write_track(dataset, "long", sine(seconds=6.0))
    tracks = {t.name: t for t in discover(dataset)}
    ans = {"cpu_a": Cpu(), "gpu_a": Gpu()}
    book = RateBook(tmp_path / "rates.json")
    timing = Timing(ans, unavailable={}, device="cpu", workers=2, rates=book)
    timing.planned(dataset, {t: ("cpu_a", "gpu_a") for t in tracks.values()})
    events: list[tuple[str, dict[str, Any]]] = []
    deadline = time.time() + 10
    while not events and time.time() < deadline:
        timing.poll(lambda e, **d: events.append((e, d)))
        time.sleep(0.01)
    (name, est), = events
    assert name == "estimate" and est["eta_s"] is None  # no rates yet: weighed by audio
    assert est["by"] == "audio duration"
    assert est["weights"] == pytest.approx({"short": 2.0, "long": 6.0}, abs=1e-3)
    timing.track_done(tracks["short"], {"cpu_a": _result(0.2), "gpu_a": _result(0.4)})
    timing.track_done(tracks["long"], {"cpu_a": _result(0.6), "gpu_a": _result(9.0, "error")})
    report = timing.finish(4.0)
    a = report["analyzers"]
    assert a["cpu_a"] == {"tracks": 2, "compute_s": 0.8, "audio_s": 8.0, "device": "cpu",
                          "x_realtime": 10.0}
    assert a["gpu_a"]["tracks"] == 1 and a["gpu_a"]["x_realtime"] == 5.0  # failures not counted
    # on the CPU every analyzer shares the workers: busy 1.2 s of 2 slots x 4 s
    assert report["stages"] == {"workers": {"slots": 2, "busy_s": 1.2, "busy_fraction": 0.15,
                                            "processes": 2}}
    assert report["accelerator"]["busy_fraction"] is None
    assert report["accelerator"]["source"].startswith("n/a")
    assert report["first_result_s"] is not None and report["audio_s"] == 8.0
    # the rates were saved: the next estimate uses them (compute seconds per track / workers)
    book2 = RateBook(tmp_path / "rates.json")
    assert book2.get("cpu_a", "cpu", ans["cpu_a"].params_hash()).per_audio_second == pytest.approx(0.1)
    nxt = Timing(ans, unavailable={}, device="cpu", workers=2, rates=book2)
    est2 = nxt._build_estimate(dataset, [(tracks["long"], ("cpu_a", "gpu_a"))])
    assert est2["by"] == "rates"
    assert est2["weights"]["long"] == pytest.approx(6.0 * (0.1 + 0.2), rel=1e-3)
    # one track, whose analyzers run one after another (neither is concurrent): 2 workers do not
    # halve it; two such tracks take the same time
    assert est2["eta_s"] == pytest.approx(6.0 * 0.3, rel=1e-3)
    est3 = nxt._build_estimate(dataset, [(t, ("cpu_a", "gpu_a")) for t in tracks.values()])
    assert est3["eta_s"] == pytest.approx(max(8.0 * 0.3 / 2, 6.0 * 0.3), rel=1e-3)


def test_stages_declared_by_the_executor(dataset: Path, tmp_path: Path) -> None:
    write_track(dataset, "t", sine(seconds=1.0))
    track = discover(dataset)[0]

    class Exec:
        stages = {"gpu": (1, ["gpu_a"]), "cpu": (3, ["cpu_a"])}

    ans = {"cpu_a": Cpu(), "gpu_a": Gpu()}
    timing = Timing(ans, unavailable={}, workers=3, rates=RateBook(tmp_path / "r.json"))
    timing.track_done(track, {"cpu_a": _result(1.5), "gpu_a": _result(1.0)})
    stages = timing.finish(2.0, Exec())["stages"]
    assert stages["gpu"] == {"slots": 1, "busy_s": 1.0, "busy_fraction": 0.5}
    assert stages["cpu"] == {"slots": 3, "busy_s": 1.5, "busy_fraction": 0.25}
    # an executor that measures its own stages reports them directly
    t2 = Timing(ans, unavailable={}, workers=1, rates=RateBook(tmp_path / "r.json"))
    t2.stage_busy("decode", 1.0, slots=2)
    assert t2.finish(1.0)["stages"] == {"decode": {"slots": 2, "busy_s": 1.0, "busy_fraction": 0.5}}


def test_accelerator_monitor_without_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def fake(name: str, *a: Any, **k: Any) -> Any:
        if name == "pynvml":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    mon = AcceleratorMonitor(0)
    assert mon.start() is False and "nvidia-ml-py" in mon.note
    assert mon.stop() is None


def test_warm_up_phases_from_the_executor(dataset: Path, tmp_path: Path) -> None:
    write_track(dataset, "t", sine(seconds=1.0))
    track = discover(dataset)[0]

    class Exec:
        steps: list = [("setup", "rhythm"), ("setup", "separation")]

        def phases(self) -> list:
            return self.steps

    ex, events = Exec(), []
    timing = Timing({"cpu_a": Cpu()}, unavailable={}, rates=RateBook(tmp_path / "r.json"))
    emit = lambda e, **d: events.append(d["name"]) if e == "phase" else None  # noqa: E731
    timing.poll(emit, ex)
    timing.poll(emit, ex)  # unchanged: not repeated
    ex.steps = [("decode", ""), ("setup", "rhythm")]
    timing.poll(emit, ex)
    ex.steps = [("decode", "")]
    timing.poll(emit, ex)
    timing.track_done(track, {"cpu_a": _result(0.1)})
    ex.steps = [("setup", "tonal")]
    timing.poll(emit, ex)  # after the first track: no more warm-up phases
    assert events == ["warming up: setting up rhythm, separation (loading models, compiling)",
                      "warming up: setting up rhythm (loading models, compiling)",
                      "warming up: decoding the first tracks"]
    timing.poll(emit, object())  # an executor without phases(): nothing, no error


def test_decoding_is_timed_apart_from_the_analyzer_that_first_reads_the_mix(dataset: Path) -> None:
    """The first analyzer to read a track's mix triggers its decode; its compute seconds (and so
    its rate) leave the decode out, which is reported as ``decode_seconds`` instead."""
    from mirflow.core.audio import TrackContext, decode
    from mirflow.core.dataset import Track
    from mirflow.run.worker import AnalyzerSpec, WorkUnit, Worker

    mix = write_track(dataset, "a", sine(seconds=1.0))

    def slow_decode(path: Path):
        time.sleep(0.3)
        return decode(path)

    worker = Worker([AnalyzerSpec("loudness"), AnalyzerSpec("spectral")], device="cpu")
    worker.analyzer("loudness"), worker.analyzer("spectral")  # set up outside the timed calls
    unit = WorkUnit(Track(mix.parent, mix), due=("loudness", "spectral"))
    [res] = worker.process([unit], [TrackContext(mix, loader=slow_decode)])
    assert res["loudness"].status == res["spectral"].status == "ok"
    assert res["loudness"].decode_seconds >= 0.3 and res["loudness"].seconds < 0.3
    assert res["spectral"].decode_seconds == 0.0
    assert "decode_seconds" not in res["loudness"].record()  # not a sidecar field


def test_decode_row_stage_busy_and_decode_rate(dataset: Path, tmp_path: Path) -> None:
    from mirflow.run.rates import DECODE

    write_track(dataset, "t", sine(seconds=4.0))
    track = discover(dataset)[0]
    book = RateBook(tmp_path / "rates.json")
    timing = Timing({"cpu_a": Cpu()}, unavailable={}, device="cpu", workers=1, rates=book)
    timing.track_done(track, {"cpu_a": AnalyzerResult(status="ok", seconds=0.5, decode_seconds=0.2)})
    report = timing.finish(10.0)
    assert report["analyzers"]["cpu_a"]["compute_s"] == 0.5
    assert report["decode"] == {"tracks": 1, "compute_s": 0.2, "audio_s": 4.0, "x_realtime": 20.0}
    assert report["stages"]["workers"]["busy_s"] == pytest.approx(0.7)  # the workers decoded too
    rate = RateBook(tmp_path / "rates.json").get(DECODE, "cpu", "")
    assert rate is not None and rate.per_audio_second == pytest.approx(0.05)


def test_each_tracks_duration_and_compute_feed_the_rates_line(dataset: Path, tmp_path: Path) -> None:
    """Tracks of 2 s and 8 s costing 0.3 s and 0.6 s: 0.2 s per track + 0.05 s per audio second."""
    from mirflow.run.rates import DECODE

    write_track(dataset, "short", sine(seconds=2.0))
    write_track(dataset, "long", sine(seconds=8.0))
    tracks = {t.relpath(dataset): t for t in discover(dataset)}
    book = RateBook(tmp_path / "rates.json")
    timing = Timing({"cpu_a": Cpu()}, unavailable={}, device="cpu", workers=1, rates=book)
    for name, seconds in (("short", 0.3), ("long", 0.6)):
        timing.track_done(tracks[name], {"cpu_a": AnalyzerResult(
            status="ok", seconds=seconds, decode_seconds=seconds / 10)})
    timing.finish(10.0)
    again = RateBook(tmp_path / "rates.json")
    rate = again.get("cpu_a", "cpu", Cpu().params_hash())
    assert rate.fit.n == 2 and rate.fit.line() == (pytest.approx(0.2), pytest.approx(0.05))
    assert rate.seconds(20.0) == pytest.approx(1.2)  # the ratio alone would say 0.9 / 10 * 20 = 1.8
    assert again.get(DECODE, "cpu", "").seconds(20.0) == pytest.approx(0.12)


def test_shared_steps_are_timed_apart_once_and_their_readers_noted(
        dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 22.05 kHz mono view, its STFT and the frame levels are computed by the first analyzer
    that reads them (spectral here): that time is reported apart, once, each step without the
    steps it read; every analyzer that reads a step names it in ``uses``."""
    from mirflow.core.audio import TrackContext, stft_magnitude
    from mirflow.core.dataset import Track
    from mirflow.run.worker import AnalyzerSpec, WorkUnit, Worker

    mix = write_track(dataset, "a", sine(seconds=3.0))  # 44.1 kHz: resampled for the STFT
    steps = {"mono@22050", "stft@22050/2048/512", "frame-levels@22050/2048/512"}
    worker = Worker([AnalyzerSpec(n) for n in ("loudness", "spectral", "tonal")], device="cpu")
    for name in ("loudness", "spectral", "tonal"):
        worker.analyzer(name)  # set up outside the timed calls
    unit = WorkUnit(Track(mix.parent, mix), due=("loudness", "spectral", "tonal"))
    ctx = TrackContext(mix)
    [res] = worker.process([unit], [ctx])
    assert set(res["spectral"].shared_seconds) == steps and set(res["spectral"].uses) == steps
    assert res["tonal"].shared_seconds == {} and set(res["tonal"].uses) == steps
    assert res["loudness"].shared_seconds == {} and res["loudness"].uses == ()
    assert dict(ctx.shared_seconds) == res["spectral"].shared_seconds
    assert "shared_seconds" not in res["spectral"].record() and "uses" not in res["spectral"].record()

    # each step is timed without what it read: the STFT's time leaves out the resampling it waited for
    from mirflow.core import audio

    real_resample = audio.resample

    def slow_resample(*args, **kw):
        time.sleep(0.3)
        return real_resample(*args, **kw)

    monkeypatch.setattr(audio, "resample", slow_resample)
    slow = TrackContext(mix)
    slow.reader = "x"
    slow.stft(sr=22050, n_fft=2048, hop_length=512)
    assert slow.shared_seconds["mono@22050"] >= 0.3 > slow.shared_seconds["stft@22050/2048/512"]
    assert slow.shared_uses == {"x": {"stft@22050/2048/512", "mono@22050"}}
    np.testing.assert_array_equal(slow.stft(), stft_magnitude(slow.mono(22050)))


def test_shared_step_rows_rates_and_uses(dataset: Path, tmp_path: Path) -> None:
    from mirflow.run.rates import shared_name

    write_track(dataset, "t", sine(seconds=4.0))
    track = discover(dataset)[0]
    book = RateBook(tmp_path / "rates.json")
    timing = Timing({"cpu_a": Cpu()}, unavailable={}, device="cpu", workers=1, rates=book)
    timing.track_done(track, {"cpu_a": AnalyzerResult(
        status="ok", seconds=0.5, shared_seconds={"stft@x": 0.4}, uses=("stft@x",))})
    report = timing.finish(10.0)
    assert report["shared"] == {"stft@x": {"tracks": 1, "compute_s": 0.4, "audio_s": 4.0,
                                           "x_realtime": 10.0}}
    assert report["stages"]["workers"]["busy_s"] == pytest.approx(0.9)
    again = RateBook(tmp_path / "rates.json")
    assert again.get(shared_name("stft@x"), "cpu", "").per_audio_second == pytest.approx(0.1)
    assert again.get("cpu_a", "cpu", Cpu().params_hash()).uses == ("stft@x",)
    assert again.shared_rate("stft@x").seconds(10.0) == pytest.approx(1.0)
    assert again.shared_rate("never measured") is None


def test_startup_is_the_first_result_less_its_compute(dataset: Path, tmp_path: Path) -> None:
    from mirflow.run.rates import startup_key

    write_track(dataset, "t", sine(seconds=4.0))
    track = discover(dataset)[0]
    book = RateBook(tmp_path / "rates.json")
    timing = Timing({"cpu_a": Cpu()}, unavailable={}, device="cpu", workers=1, rates=book,
                    started=time.perf_counter() - 2.0)  # the first result comes 2 s after the start
    timing.planned(dataset, {track: ("cpu_a",)})
    timing.track_done(track, {"cpu_a": AnalyzerResult(status="ok", seconds=0.5, decode_seconds=0.2,
                                                      shared_seconds={"stft@x": 0.3})})
    report = timing.finish(3.0)
    assert report["startup_s"] == pytest.approx(2.0 - 1.0, abs=0.05)
    assert RateBook(tmp_path / "rates.json").startup(startup_key({"cpu_a": "cpu"})) == \
        pytest.approx(1.0, abs=0.05)


def test_the_progress_estimate_borrows_the_start_up_of_the_closest_set(dataset: Path,
                                                                       tmp_path: Path) -> None:
    """The progress bar counts down the same start-up as the plan: for a set never run, the
    closest measured one's (here a larger set), within the run's executor."""
    from mirflow.run.rates import startup_key

    write_track(dataset, "t", sine(seconds=2.0))
    track = discover(dataset)[0]
    book = RateBook(tmp_path / "rates.json")
    book.observe_startup(startup_key({"cpu_a": "cpu", "other": "cpu"}), 1.7)
    book.observe_startup(startup_key({"cpu_a": "cpu"}, "serial"), 0.05)
    book.save()
    for executor, expected in (("local", 1.7), ("serial", 0.05), ("ray", None)):
        timing = Timing({"cpu_a": Cpu()}, unavailable={}, device="cpu", workers=1,
                        rates=RateBook(tmp_path / "rates.json"), executor=executor)
        timing.due_names = {"cpu_a"}
        assert timing._build_estimate(dataset, [(track, ("cpu_a",))])["startup_s"] == expected


def test_coordinator_row_and_its_per_track_rate(dataset: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    for i in range(4):
        write_track(dataset, f"t{i}", sine(seconds=1.0))
    tracks = discover(dataset)
    ans = {"cpu_a": Cpu()}
    path = tmp_path / "rates.json"
    timing = Timing(ans, unavailable={}, device="cpu", workers=2, rates=RateBook(path))
    for track in tracks:
        timing.track_done(track, {"cpu_a": _result(0.001)})
    timing.coordinator_busy(0.8, 1.0)  # a run of many light tracks: the coordinator is the bound
    report = timing.finish(1.2)
    assert report["coordinator"] == {"tracks": 4, "busy_s": 0.8, "busy_fraction": 0.667,
                                     "ms_per_track": 200.0}
    book = RateBook(path)
    assert book.coordinator_per_track("local") == pytest.approx(0.2)
    # the next estimate: 4 tracks x 0.2 s of the coordinator outweigh 4 ms of compute on 2 workers
    est = Timing(ans, unavailable={}, device="cpu", workers=2, rates=book)._build_estimate(
        dataset, [(t, ("cpu_a",)) for t in tracks])
    assert est["by"] == "rates" and est["eta_s"] == pytest.approx(0.8)

    # a run where the coordinator mostly waited on the workers is reported, but not rated: its
    # per-track figure would carry time-based costs (the progress display) into later estimates
    heavy_path = tmp_path / "heavy.json"
    heavy = Timing(ans, unavailable={}, device="cpu", workers=2, rates=RateBook(heavy_path))
    heavy.track_done(tracks[0], {"cpu_a": _result(30.0)})
    heavy.coordinator_busy(0.5, 31.0)
    assert heavy.finish(31.0)["coordinator"]["tracks"] == 1
    assert RateBook(heavy_path).coordinator_per_track("local") is None
