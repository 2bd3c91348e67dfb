"""Run estimates from rates: the slowest stage bounds a run, a track's time with lent threads, and
a run's cost added up track by track (CPU, GPU lane, the longest track)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from mirflow.analyzers.base import Analyzer
from mirflow.run.estimate import AnalyzerCost, RunCost, run_seconds, track_seconds
from mirflow.run.rates import DECODE, RateBook, shared_name


def test_run_seconds_the_slowest_stage_bounds_a_run() -> None:
    # serial: one thread does everything, one part after the other
    assert run_seconds(6.0, 2.0, 1.0, workers=4, cores=4, executor="serial") == 9.0
    # local: the CPU work spread over the workers...
    assert run_seconds(8.0, 1.0, 0.5, workers=4, cores=8) == 2.0
    # ... or the GPU lane, or the coordinator when tracks are many and light ...
    assert run_seconds(8.0, 3.0, 0.5, workers=4, cores=8) == 3.0
    assert run_seconds(0.4, 0.0, 5.0, workers=2, cores=2) == 5.0
    # ... or the cores the workers and the coordinator share (more workers than cores)
    assert run_seconds(8.0, 0.0, 2.0, workers=8, cores=2) == 5.0
    # a cluster's workers do not share this machine's cores with the coordinator
    assert run_seconds(8.0, 0.0, 2.0, workers=8, cores=2, executor="ray") == 2.0


def test_a_tracks_time_with_lent_threads() -> None:
    shared = {"stft": 3.0, "mono": 0.5}
    loudness = AnalyzerCost(5.0, frozenset(), concurrent=True)
    spectral = AnalyzerCost(4.0, frozenset({"stft", "mono"}), concurrent=True)
    rhythm = AnalyzerCost(1.0, frozenset({"stft", "mono"}), concurrent=True)
    costs = [loudness, spectral, rhythm]
    assert track_seconds(4.0, shared, costs, threads=1) == 17.5  # one after another
    # two threads: the decode, then the longest branch (spectral after the STFT it reads)
    assert track_seconds(4.0, shared, costs, threads=2) == pytest.approx(4.0 + 7.5)
    # with more threads than branches, still the longest branch
    assert track_seconds(4.0, shared, costs, threads=8) == pytest.approx(11.5)
    # separation spreads its passes over the threads; an analyzer not concurrent runs alone
    separation = AnalyzerCost(10.0, elastic=True)
    alone = AnalyzerCost(2.0, frozenset({"mono"}))
    assert track_seconds(4.0, shared, [separation, *costs, alone], threads=2) == pytest.approx(
        4.0 + 10.0 / 2 + 7.5 + 2.0)
    # never more than one after another
    assert track_seconds(0.0, {}, [AnalyzerCost(1.0), AnalyzerCost(1.0)], threads=4) == 2.0
    # an elastic analyzer uses at most its own number of threads (separation: 4 passes)
    capped = AnalyzerCost(16.0, elastic=True, max_threads=4)
    assert track_seconds(0.0, {}, [capped], threads=16) == pytest.approx(4.0)
    assert track_seconds(0.0, {}, [capped], threads=2) == pytest.approx(8.0)


def test_the_longest_track_ends_up_with_every_core_of_the_local_budget() -> None:
    from mirflow.run.estimate import lone_track_threads

    assert lone_track_threads("local", 8) == 8
    assert lone_track_threads("serial", 8) == 1 and lone_track_threads("ray", 8) == 1



class _Cpu(Analyzer):
    name: ClassVar[str] = "est_cpu"
    concurrent: ClassVar[bool] = True


class _Other(Analyzer):
    name: ClassVar[str] = "est_other"
    concurrent: ClassVar[bool] = True


class _Gpu(Analyzer):
    name: ClassVar[str] = "est_gpu"
    device: ClassVar[str] = "gpu"
    elastic: ClassVar[bool] = True


def test_a_runs_cost_track_by_track(tmp_path: Path) -> None:
    book = RateBook(tmp_path / "rates.json")
    ans = {"est_cpu": _Cpu(), "est_other": _Other(), "est_gpu": _Gpu()}
    for name, rate in (("est_cpu", 0.2), ("est_other", 0.1), ("est_gpu", 0.5)):
        book.observe(name, "cuda:X" if name == "est_gpu" else "cpu", ans[name].params_hash(),
                     compute_s=rate * 100, audio_s=100.0, tracks=1,
                     uses=("stft",) if name == "est_other" else ())
    book.observe(DECODE, "cpu", "", compute_s=1.0, audio_s=100.0, tracks=1)
    book.observe(shared_name("stft"), "cpu", "", compute_s=5.0, audio_s=100.0, tracks=1)
    book.save()
    labels = {"est_cpu": "cpu", "est_other": "cpu", "est_gpu": "cuda:X"}
    cost = RunCost(RateBook(tmp_path / "rates.json"), ans, labels, threads=2)
    # a 100 s track: decode 1 s, the STFT 5 s, est_cpu 20 s beside est_other 10 s (after the STFT)
    # on the CPU; est_gpu 50 s in the GPU lane
    assert cost.add(100.0, ["est_cpu", "est_other", "est_gpu"]) == pytest.approx(1 + 5 + 20 + 10 + 50)
    assert cost.add(10.0, ["est_cpu"]) == pytest.approx(0.1 + 2.0)
    assert not cost.missing
    assert cost.cpu_s == pytest.approx(36.0 + 2.1) and cost.gpu_s == pytest.approx(50.0)
    assert cost.decode_s == pytest.approx(1.1) and cost.shared_s == pytest.approx(5.0)
    # the longest track with 2 threads: decode, then the longer of est_cpu (20 s) and the STFT
    # with est_other (15 s), or the three over the threads (17.5 s)
    assert cost.longest_s == pytest.approx(1.0 + 20.0)
    # 4 workers' cores: the GPU lane (50 s) is the bound
    assert cost.seconds(0.0, workers=4, cores=4) == pytest.approx(50.0)
    # an analyzer nobody measured: noted, counted as nothing
    other = RunCost(RateBook(tmp_path / "nothing.json"), ans, labels)
    other.add(10.0, ["est_cpu"])
    assert other.missing == {"est_cpu"} and other.cpu_s == 0.0
    # a shared step an analyzer reads that no run measured: the shared steps are missing
    book.observe("est_other", "cpu", ans["est_other"].params_hash(), compute_s=10.0,
                 audio_s=100.0, tracks=1, uses=("never measured",))
    book.save()
    unmeasured = RunCost(RateBook(tmp_path / "rates.json"), ans, labels)
    unmeasured.add(10.0, ["est_other"])
    assert unmeasured.missing == {"shared steps"}


def test_a_runs_cost_uses_the_part_per_track(tmp_path: Path) -> None:
    from mirflow.run.rates import Fit

    book = RateBook(tmp_path / "rates.json")
    ans = {"est_cpu": _Cpu()}
    fit = Fit()  # 2 s per track + 0.1 s per audio second
    for duration in (10.0, 100.0):
        fit = fit.add(duration, 2.0 + 0.1 * duration)
    book.observe("est_cpu", "cpu", ans["est_cpu"].params_hash(), compute_s=15.0, audio_s=110.0,
                 tracks=2, fit=fit)
    book.observe(DECODE, "cpu", "", compute_s=0.0011, audio_s=110.0, tracks=2,
                 fit=Fit().add(10.0, 0.0001).add(100.0, 0.001))
    book.save()
    cost = RunCost(RateBook(tmp_path / "rates.json"), ans, {"est_cpu": "cpu"})
    assert cost.add(30.0, ["est_cpu"]) == pytest.approx(2.0 + 3.0 + 0.0003)
    assert cost.add(300.0, ["est_cpu"]) == pytest.approx(2.0 + 30.0 + 0.003)
    assert cost.compute == {"est_cpu": pytest.approx(37.0)}
