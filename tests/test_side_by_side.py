"""Analyzers of one track side by side, in threads, when a worker has idle cores to use: a context
computes every view once for all threads and times each thread apart; the worker runs
``concurrent`` analyzers at once only while its thread allowance lets it, keeps results and timing
as one after another would, and runs a retried unit (``solo``) one analyzer at a time; the
supervisor retries a unit whose worker died while several ran, one at a time, so that the next
death names the analyzer at fault."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from conftest import sine, write_track
from mirflow import analyzers as registry
from mirflow.analyzers.base import Analyzer
from mirflow.core import threads
from mirflow.core.audio import TrackContext
from mirflow.core.dataset import discover
from mirflow.run.worker import AnalyzerSpec, Worker, WorkUnit

SLEEP = 0.4


class _Sleepy(Analyzer):
    """Reads the shared STFT, then sleeps (a stand-in for compute that releases the GIL)."""

    concurrent: ClassVar[bool] = True
    spans: ClassVar[dict[str, tuple[float, float]]] = {}

    def analyze(self, ctx: TrackContext) -> dict[str, Any]:
        start = time.perf_counter()
        frames = ctx.stft().shape[1]
        time.sleep(SLEEP)
        self.spans[self.name] = (start, time.perf_counter())
        return {f"{self.name}_frames": frames}


class SideA(_Sleepy):
    name: ClassVar[str] = "side_a"


class SideB(_Sleepy):
    name: ClassVar[str] = "side_b"


class Alone(_Sleepy):
    name: ClassVar[str] = "side_alone"
    concurrent: ClassVar[bool] = False


@pytest.fixture()
def side_analyzers(monkeypatch: pytest.MonkeyPatch) -> None:
    for cls in (SideA, SideB, Alone):
        monkeypatch.setitem(registry._REGISTRY, cls.name, cls)
    _Sleepy.spans.clear()


@pytest.fixture()
def allowance() -> Any:
    """Make this process elastic with an allowance the test sets (``allowance.value``)."""
    holder = type("Holder", (), {"value": 1})()
    threads.install(lambda: holder.value, 4)
    yield holder
    threads.uninstall()


def _overlap(a: str, b: str) -> float:
    (s1, e1), (s2, e2) = _Sleepy.spans[a], _Sleepy.spans[b]
    return min(e1, e2) - max(s1, s2)


def _units(dataset: Path, names: tuple[str, ...], **kw: Any) -> list[WorkUnit]:
    write_track(dataset, "t", sine(330.0, 2.0))
    return [WorkUnit(track=discover(dataset)[0], due=names, **kw)]


# -- the context ------------------------------------------------------------------------------------
def test_a_view_is_computed_once_for_all_threads_and_each_thread_is_timed_apart() -> None:
    ctx = TrackContext.from_array(sine(440.0, 1.0), 44100)
    calls = []

    def slow() -> int:
        calls.append(threading.get_ident())
        time.sleep(0.3)
        return 7

    start = threading.Barrier(3)
    tallies: dict[str, Any] = {}

    def reader(label: str) -> None:
        start.wait()
        ctx.reader = label
        assert ctx.shared("slow-step", ("slow",), slow) == 7
        tallies[label] = ctx.apart()

    workers = [threading.Thread(target=reader, args=(f"r{i}",)) for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(calls) == 1 and ctx.stats["slow"] == 1
    computed = [t for t in tallies.values() if t.shared.get("slow-step")]
    waited = [t for t in tallies.values() if not t.shared.get("slow-step")]
    assert len(computed) == 1 and len(waited) == 2
    # the step counts once, for the thread that computed it; the others only waited for it
    assert ctx.shared_seconds["slow-step"] == pytest.approx(computed[0].shared["slow-step"])
    assert computed[0].shared["slow-step"] >= 0.25 and computed[0].waited == 0
    assert all(0.1 < t.waited < 0.5 and t.total == t.waited for t in waited)
    assert set(ctx.shared_uses) == {"r0", "r1", "r2"}  # every reader noted, each in its thread
    assert ctx.reader == ""  # this thread never set one


def test_the_decode_happens_once_however_many_threads_ask(tmp_path: Path) -> None:
    path = write_track(tmp_path, "t", sine(220.0, 3.0))
    ctx = TrackContext(path)
    start = threading.Barrier(4)
    got = []

    def read() -> None:
        start.wait()
        got.append(ctx.audio.samples.shape)

    workers = [threading.Thread(target=read) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert ctx.stats["decode"] == 1 and len(set(got)) == 1 and len(got) == 4
    assert ctx.decode_seconds > 0


# -- the worker -------------------------------------------------------------------------------------
def test_concurrent_analyzers_run_side_by_side_only_with_idle_cores(
        dataset: Path, side_analyzers: None, allowance: Any) -> None:
    names = ("side_a", "side_b", "side_alone")
    units = _units(dataset, names)
    worker = Worker([AnalyzerSpec(n) for n in names])
    try:
        allowance.value = 1  # every core busy: one after another
        first = worker.process(units)[0]
        assert worker.most_at_once == 0 and _overlap("side_a", "side_b") < 0

        allowance.value = 2  # a neighbour's core idles: the two concurrent ones at once
        _Sleepy.spans.clear()
        second = worker.process(units)[0]
        assert worker.most_at_once == 2
        assert _overlap("side_a", "side_b") > SLEEP / 2
        # one that is not concurrent never runs beside another
        assert _overlap("side_a", "side_alone") < 0 and _overlap("side_b", "side_alone") < 0
        for name in names:
            assert second[name].status == "ok" and second[name].features == first[name].features
            # compute excludes the shared STFT (timed once, for the analyzer that computed it)
            # and the wait for it
            assert SLEEP * 0.9 < second[name].seconds < SLEEP * 2
        stft = [r.shared_seconds.get("stft@22050/2048/512", 0.0) for r in second.values()]
        assert sum(1 for s in stft if s > 0) == 1

        _Sleepy.spans.clear()  # a retried unit: one at a time whatever the allowance
        worker.most_at_once = 0
        worker.process([WorkUnit(track=units[0].track, due=names, solo=True)])
        assert worker.most_at_once == 0 and _overlap("side_a", "side_b") < 0
    finally:
        worker.close()


def test_phases_name_every_analyzer_running_side_by_side(
        dataset: Path, side_analyzers: None, allowance: Any) -> None:
    phases: list[tuple[str, str]] = []
    allowance.value = 2
    worker = Worker([AnalyzerSpec(n) for n in ("side_a", "side_b")],
                    on_phase=lambda step, name: phases.append((step, name)))
    try:
        worker.process(_units(dataset, ("side_a", "side_b")))
    finally:
        worker.close()
    assert ("analyze", "side_a+side_b") in phases
    # set-ups ran before either started, alone, so a crash there is named as the set-up's
    first_analyze = next(i for i, (step, _) in enumerate(phases) if step == "analyze")
    assert {name for step, name in phases[:first_analyze] if step == "setup"} == {"side_a", "side_b"}


# -- the whole run: a worker that dies while two analyzers run side by side ------------------------
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="side by side needs two cores")
def test_a_death_side_by_side_is_retried_one_at_a_time_and_names_the_culprit(
        dataset: Path, probe_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import mirflow, probe_calls, sidecar

    monkeypatch.setenv("MIRFLOW_PLUGINS", "mirflow_faults,mirflow_probe")
    write_track(dataset, "song-segv", sine(330.0, 1.0))
    # one track, one worker, the machine's cores: its allowance is 2 or more, so the two run side by side
    proc = mirflow("run", str(dataset), "-a", "fault_side,probe_side", "--json")
    assert proc.returncode == 1, proc.stderr
    record = sidecar(dataset / "song-segv")["_mirflow"]
    assert record["probe_side"]["status"] == "ok"  # the innocent one, retried alone
    assert record["fault_side"]["status"] == "error"
    assert "SIGSEGV" in record["fault_side"]["error"] or "segmentation" in record["fault_side"]["error"].lower()
    assert "lost" in proc.stderr and "fault_side+probe_side" in proc.stderr
    # side by side, then alone (the second death names fault_side), then probe_side once more
    assert len(probe_calls(probe_log, "analyze-fault_side")) == 2


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="side by side needs two cores")
def test_a_lone_track_runs_its_features_side_by_side_with_the_same_results(dataset: Path) -> None:
    from conftest import mirflow, run_json, sidecar

    write_track(dataset, "lone", sine(220.0, 4.0))
    code, side = run_json(str(dataset), "-a", "loudness,spectral,tonal,rhythm")
    assert code == 0 and side["timing"]["stages"]["workers"]["slots"] == os.cpu_count()
    first = {k: v for k, v in sidecar(dataset / "lone").items() if not k.startswith("_")}
    code, alone = run_json(str(dataset), "-a", "loudness,spectral,tonal,rhythm", "-j", "1",
                           "--force", "all")
    assert code == 0 and alone["timing"]["stages"]["workers"]["slots"] == 1
    again = {k: v for k, v in sidecar(dataset / "lone").items() if not k.startswith("_")}
    assert again == first  # one worker with one core: one after another, the same features
    planned = json.loads(mirflow("plan", str(dataset), "-a", "loudness,spectral,tonal,rhythm",
                                 "--force", "all", "--json").stdout)
    assert planned["workers"] == 1 and planned["threads_per_track"] == os.cpu_count()
    assert planned["eta_s"] is not None
    # -j 1 --cores 2: one worker on two cores, planned and run so
    code, lent = run_json(str(dataset), "-a", "loudness,spectral,tonal,rhythm", "-j", "1",
                          "--cores", "2", "--force", "all")
    assert code == 0 and lent["timing"]["stages"]["workers"]["slots"] == 2
    assert {k: v for k, v in sidecar(dataset / "lone").items() if not k.startswith("_")} == first
    planned = json.loads(mirflow("plan", str(dataset), "-a", "loudness", "-j", "1", "--cores", "2",
                                 "--force", "all", "--json").stdout)
    assert planned["workers"] == 1 and planned["threads_per_track"] == 2
    bad = mirflow("run", str(dataset), "-a", "loudness", "-j", "2", "--cores", "1")
    assert bad.returncode == 2 and "--cores 1 is fewer than --workers 2" in bad.stderr
    # each shared step was computed once either way
    for summary in (side, alone):
        assert {s: r["tracks"] for s, r in summary["timing"]["shared"].items()} == {
            "frame-levels@22050/2048/512": 1, "mono@22050": 1, "stft@22050/2048/512": 1}


class _Spread(Analyzer):
    """An elastic analyzer that spreads 0.3 s of CPU work over two threads (a separation running
    two passes at once)."""

    name: ClassVar[str] = "spread_work"
    elastic: ClassVar[bool] = True

    def analyze(self, ctx: TrackContext) -> dict[str, Any]:
        def spin() -> None:  # hashlib releases the GIL: the two threads really run at once
            import hashlib

            block, end = b"x" * (1 << 20), time.thread_time() + 0.3
            while time.thread_time() < end:
                hashlib.sha256(block).digest()

        pair = [threading.Thread(target=spin) for _ in range(2)]
        for t in pair:
            t.start()
        for t in pair:
            t.join()
        return {"spread_done": 1}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two threads at once need two cores")
def test_an_elastic_analyzers_compute_is_its_work_not_its_wall_time(
        dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """0.6 s of CPU work in about 0.3 s of wall time on two threads: rated as 0.6 s, one thread's
    work, so estimates that spread elastic work over a track's threads do not count it twice; on an
    accelerator the wall time stands."""
    monkeypatch.setitem(registry._REGISTRY, _Spread.name, _Spread)
    units = _units(dataset, (_Spread.name,))
    on_cpu = Worker([AnalyzerSpec(_Spread.name)], device="cpu").process(units)[0][_Spread.name]
    assert on_cpu.status == "ok" and on_cpu.seconds >= 0.55
    start = time.perf_counter()
    on_gpu = Worker([AnalyzerSpec(_Spread.name)], device="cuda:0").process(units)[0][_Spread.name]
    assert on_gpu.status == "ok" and on_gpu.seconds <= time.perf_counter() - start  # wall time
