"""The GPU lane's stream (:mod:`mirflow.run.stream`): tracks held in memory stay within the budget.

In process first (exact, fast), then through ``mirflow run --max-memory`` with the lane forced on
the CPU, read from the lane's hold/release log.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from conftest import probe_calls, sine, write_track
from mirflow.core.config import RunOptions
from mirflow.core.dataset import Track
from mirflow.run import limits
from mirflow.run.coordinator import run
from mirflow.run.stream import LANE_LOG_ENV, StreamWorker
from mirflow.run.worker import AnalyzerSpec, WorkUnit, Worker


def _units(root: Path, n: int, seconds: float = 1.0) -> list[WorkUnit]:
    mixes = [write_track(root, f"t{i:02d}", sine(200.0 + 20 * i, seconds)) for i in range(n)]
    return [WorkUnit(Track(m.parent, m), ("probe",)) for m in mixes]


def _stream(units: list[WorkUnit], budget: float) -> tuple[StreamWorker, dict[int, dict]]:
    """Give every unit (one task each) to a stream whose analyzer sleeps 50 ms per track; wait."""
    got: dict[int, dict] = {}
    lock = threading.Lock()

    def send(kind: str, task: int, data) -> None:  # noqa: ANN001
        if kind == "result":
            with lock:
                got[task] = data[0]

    stream = StreamWorker(Worker([AnalyzerSpec("probe", {"sleep": 0.05})], device="cpu"), send,
                          held_budget=budget)
    for i, unit in enumerate(units):
        stream.submit(i, [unit])
    stream.close()
    return stream, got


def test_tracks_held_never_exceed_the_budget_with_a_floor_of_one(dataset: Path, probe_log: Path) -> None:
    units = _units(dataset, 10)
    per_track = limits.held_bytes(limits.audio_info(units[0].track.mix), ("probe",))
    assert per_track == 44100 * 2 * 4  # one second of decoded float32 stereo
    bounded, got = _stream(units, 2.5 * per_track)
    assert sorted(got) == list(range(10)) and all(r["probe"].status == "ok" for r in got.values())
    assert bounded.peak_items == 2  # two decode threads: both admitted, then the bound holds
    floor, got = _stream(units, 0.5 * per_track)  # less than one track: one at a time, never none
    assert sorted(got) == list(range(10)) and floor.peak_items == 1
    unbounded, _ = _stream(units, 0.0)  # no budget: the decoders run ahead of the slow analyzer
    assert unbounded.peak_items > 2


def test_held_bytes_count_the_mix_and_the_stems() -> None:
    info = limits.AudioInfo(frames=48000 * 60, sr=48000, channels=1)
    mix = 48000 * 60 * 4
    stereo_44k = 44100 * 60 * 2 * 4
    assert limits.held_bytes(info, ("classifiers",)) == mix
    assert limits.held_bytes(info, ("separation",)) == mix + 5 * stereo_44k  # model input, 4 stems
    assert limits.held_bytes(None, ()) > 0  # unreadable header: counted as a long track
    assert limits.lane_budget(8 * limits.GIB) == 2 * limits.GIB and limits.lane_budget(0) == 0


def test_lane_forced_on_cpu_holds_no_more_than_max_memory_allows(dataset: Path, tmp_path: Path,
                                                                 probe_log: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole run with a small ``--max-memory``: the coordinator keeps 5 tracks in flight (its
    estimate: twice the decoded mix each), the lane's share (a quarter) allows 2 held at once; the
    log shows more tracks in the lane than held, and never more than 2 held."""
    import mirflow.executors.local as local

    monkeypatch.setattr(local, "accelerator_present", lambda device: True)
    log = tmp_path / "lane.log"
    monkeypatch.setenv(LANE_LOG_ENV, str(log))
    for i in range(12):
        write_track(dataset, f"t{i:02d}", sine(200.0 + 20 * i, 1.0))
    per_track = 44100 * 2 * 4
    budget = 10 * per_track
    summary = run(dataset, RunOptions(analyzers=["probe_gpu", "probe"], workers=1, max_memory=budget,
                                      params={"probe_gpu": {"sleep": 0.2}}))
    assert summary.failed == 0, summary.failures
    assert summary.counts["probe_gpu"]["done"] == 12 and summary.counts["probe"]["done"] == 12
    events = [line.split() for line in log.read_text().splitlines()]
    holds = [e for e in events if e[0] == "hold"]
    assert len(holds) == 12 and {int(e[4]) for e in events} == {int(limits.lane_budget(budget))}
    assert max(int(e[2]) for e in events) <= 2
    assert max(int(e[5]) for e in events) > 2  # the bound, not a lack of tracks, kept it there
    assert len(probe_calls(probe_log)) == 12


def test_a_model_the_lane_holds_counts_once_not_per_track(dataset: Path, tmp_path: Path,
                                                          probe_log: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The lane holds one copy of its model for every track: ``--max-memory`` counts it once, so a
    budget with room for the model and two tracks keeps two tracks in flight (counted per track it
    would keep one), and never more; a model bigger than the budget fails every track, saying so."""
    import mirflow.executors.local as local
    import mirflow_probe

    monkeypatch.setattr(local, "accelerator_present", lambda device: True)
    in_flight, most = [0], [0]
    lock = threading.Lock()
    submit = local.LocalExecutor.submit

    def counting(self, units):  # the coordinator's tracks in flight, as it hands them out
        with lock:
            in_flight[0] += len(units)
            most[0] = max(most[0], in_flight[0])
        fut = submit(self, units)

        def done(_f) -> None:
            with lock:
                in_flight[0] -= len(units)

        fut.add_done_callback(done)
        return fut

    monkeypatch.setattr(local.LocalExecutor, "submit", counting)
    for i in range(6):
        write_track(dataset, f"t{i:02d}", sine(200.0 + 20 * i, 1.0))
    per_track = 2 * limits.audio_info(next(dataset.glob("t00/full_mix.*"))).decoded_bytes
    monkeypatch.setattr(mirflow_probe.ProbeGPU, "model_memory", 3 * per_track)
    summary = run(dataset, RunOptions(analyzers=["probe_gpu", "probe"], workers=1, chunk=1,
                                      max_memory=5 * per_track, params={"probe_gpu": {"sleep": 0.3}}))
    assert summary.failed == 0, summary.failures
    assert most[0] == 2
    monkeypatch.setattr(mirflow_probe.ProbeGPU, "model_memory", 5 * per_track)
    again = run(dataset, RunOptions(analyzers=["probe_gpu"], workers=1, max_memory=5 * per_track,
                                    force=frozenset({"probe_gpu"})))
    assert again.failed == 6 and all("budget" in f.error for f in again.failures)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to start fewer workers than cores")
def test_mirflow_starts_no_more_workers_than_their_model_copies_fit(
        dataset: Path, probe_log: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Each worker keeps the models it ran: with copies of 0.3 of the budget, half the budget holds
    one, so mirflow starts one worker and lends it every core; the user's ``--workers`` stands, with
    a warning, and the models are then counted per track in flight as before."""
    import logging

    import mirflow_probe

    cores = os.cpu_count() or 1
    for i in range(4):
        write_track(dataset, f"t{i}", sine(200.0 + 20 * i, 0.5))
    budget = 1 << 30
    monkeypatch.setattr(mirflow_probe.Probe, "model_memory", int(0.3 * budget))
    with caplog.at_level(logging.WARNING):
        fitted = run(dataset, RunOptions(analyzers=["probe"], max_memory=budget))
    assert fitted.failed == 0, fitted.failures
    assert len({line.split()[1] for line in probe_calls(probe_log, "analyze")}) == 1
    assert fitted.timing["stages"]["workers"]["slots"] == cores  # the cores are kept
    assert fitted.timing["stages"]["workers"]["processes"] == 1
    assert f"starting 1 worker(s) on {cores} cores" in caplog.text
    from mirflow.run.forecast import plan

    planned = plan(dataset, RunOptions(analyzers=["probe"], max_memory=budget,
                                       force=frozenset({"probe"})))
    assert planned.workers == 1 and planned.threads_per_track == cores  # the plan does the same
    assert planned.workers_before_memory == cores
    probe_log.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        chosen = run(dataset, RunOptions(analyzers=["probe"], workers=2, max_memory=budget,
                                         force=frozenset({"probe"}), params={"probe": {"sleep": 0.3}}))
    assert chosen.failed == 0, chosen.failures
    assert len({line.split()[1] for line in probe_calls(probe_log, "analyze")}) == 2
    assert "--workers 2: each worker keeps a copy of probe" in caplog.text
