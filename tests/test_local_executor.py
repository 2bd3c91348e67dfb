"""The local executor's GPU lane, exercised on the CPU (the lane logic does not depend on CUDA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import probe_calls, sidecar
from test_fault_isolation import CULPRITS, _dataset, faults  # noqa: F401 - a fixture
from mirflow.core import shared
from mirflow.core.config import RunOptions
from mirflow.run.coordinator import run


def test_gpu_lane_feeds_the_cpu_lane(small_dataset: Path, probe_log: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import mirflow.executors.local as local

    monkeypatch.setattr(local, "accelerator_present", lambda device: True)
    summary = run(small_dataset, RunOptions(analyzers=["probe_gpu", "probe", "stems"], workers=2,
                                            params={"stems": {"analyzers": ["probe"]}}))
    assert summary.failed == 0, summary.failures
    assert summary.counts["probe_gpu"]["done"] == 4 and summary.counts["stems"]["done"] == 4
    gpu_pids = {line.split()[1] for line in probe_calls(probe_log, "analyze-gpu")}
    cpu_pids = {line.split()[1] for line in probe_calls(probe_log)}
    assert len(gpu_pids) == 1 and not gpu_pids & cpu_pids  # one GPU lane process, separate from CPU workers
    assert len(probe_calls(probe_log, "setup-gpu")) == 1
    data = sidecar(small_dataset / "track 0")
    assert data["probe_frames"] > 0 and data["probe_probe_frames"] == data["probe_frames"]


def _record_releases(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The shared-memory hand-offs the coordinator (this process) releases, by file."""
    released: list[str] = []
    release = shared.Shipped.release

    def record(self: shared.Shipped) -> None:
        if self.path is not None:
            released.append(self.path)
        release(self)

    monkeypatch.setattr(shared.Shipped, "release", record)
    return released


def _leftovers() -> list[Path]:
    """Hand-off files this coordinator's children left in shared memory."""
    folder = shared.shared_dir()
    return sorted(folder.glob(f"{shared.PREFIX}{os.getpid()}-*")) if folder else []


def _decodes(log: Path) -> dict[str, int]:
    """``{decoded file name relative to its track folder's parent: times decoded}`` from the decode log."""
    counts: dict[str, int] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        path = Path(line.split(" ", 2)[2])
        key = f"{path.parent.name}/{path.name}"
        counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.parametrize("lane", [True, False], ids=["gpu-lane-forced", "cpu-only"])
def test_every_track_is_decoded_once_and_stems_never(lane: bool, dataset: Path,
                                                     tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Separation, per-stem features and mix features in one run: each mix is decoded exactly once
    (across the GPU lane and the CPU workers), the stems reach the per-stem analyzers in memory
    (no stem file is decoded), and the per-stem features equal those computed from the files."""
    pytest.importorskip("torch")
    pytest.importorskip("demucs")
    from tiny_demucs import SOURCES, clip, save_repo, tiny_htdemucs

    from conftest import write_track
    import mirflow.executors.local as local
    from mirflow.core.audio import DECODE_LOG_ENV

    repo = save_repo(tmp_path / "repo", "tiny", [tiny_htdemucs()])
    for i, seconds in enumerate((1.5, 1.0, 0.7)):
        write_track(dataset, f"track {i}", clip(seconds, seed=i), 44100)
    log = tmp_path / "decodes.log"
    monkeypatch.setenv(DECODE_LOG_ENV, str(log))
    monkeypatch.setattr(local, "accelerator_present", lambda device: lane)
    released = _record_releases(monkeypatch)
    params = {"separation": {"model": "tiny", "repo": str(repo)},
              "stems": {"analyzers": ["loudness", "spectral"]}}
    summary = run(dataset, RunOptions(analyzers=["separation", "stems", "loudness", "spectral"],
                                      workers=2, params=params))
    assert summary.failed == 0, summary.failures
    # with the lane, each track (mix and unwritten stems) went to its CPU worker in shared memory
    assert len(released) == (3 if lane and shared.shared_dir() else 0)
    assert _leftovers() == []
    assert summary.counts["separation"]["done"] == 3 and summary.counts["stems"]["done"] == 3
    counts = _decodes(log)
    mixes = {k: v for k, v in counts.items() if k.split("/")[1].startswith("full_mix")}
    assert mixes == {f"track {i}/{next(dataset.joinpath(f'track {i}').glob('full_mix.*')).name}": 1
                     for i in range(3)}, counts
    assert counts == mixes, "stem files were decoded"
    # the timing report counts each decode once, wherever it happened (lane or CPU worker)
    assert summary.timing["decode"]["tracks"] == 3 and summary.timing["decode"]["compute_s"] > 0
    in_memory = {i: sidecar(dataset / f"track {i}") for i in range(3)}
    assert all(in_memory[i]["stems_analyzed"] == sorted(SOURCES) for i in range(3))
    # the same per-stem features from the stem files on disk (decoded this time)
    log.unlink()
    again = run(dataset, RunOptions(analyzers=["stems"], workers=1, params=params,
                                    force=frozenset({"stems"})))
    assert again.failed == 0 and again.counts["stems"]["done"] == 3
    assert len(_decodes(log)) == 3 * len(SOURCES)
    for i in range(3):
        from_files = sidecar(dataset / f"track {i}")
        keys = [k for k in from_files if k.split("_")[0] in SOURCES]
        assert keys and {k: from_files[k] for k in keys} == {k: in_memory[i][k] for k in keys}


def _faults_with_the_lane(dataset: Path, monkeypatch: pytest.MonkeyPatch,
                          analyzers: list[str]) -> tuple[list[str], dict[str, str], Path]:
    """24 tracks with the fault plugin's 4 culprits (3 s time limit) through ``analyzers`` (a GPU
    one and a CPU one), the lane forced on the CPU: exactly the culprits fail, with their reasons,
    and both analyzers complete on every other track. Returns the names, the culprits and the
    decode log."""
    import mirflow.executors.local as local
    from mirflow.core.audio import DECODE_LOG_ENV

    monkeypatch.setattr(local, "accelerator_present", lambda device: True)
    log = dataset.parent / "decodes.log"
    monkeypatch.setenv(DECODE_LOG_ENV, str(log))
    culprits = {k: v.replace("4 s", "3 s") for k, v in CULPRITS.items()}
    names = _dataset(dataset, culprits=culprits)
    summary = run(dataset, RunOptions(analyzers=analyzers, workers=2, track_timeout=3))
    assert {f.track: f.error for f in summary.failures} == culprits
    assert sorted(summary.counts[n]["done"] for n in analyzers) == [20, 24]
    return names, culprits, log


def test_streaming_lane_isolates_culprits_and_hands_tracks_on(dataset: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               faults: Path) -> None:
    """The lane streams many tracks at once; its deaths and hangs still fail only their culprits
    (the tracks in flight with them are re-run alone), and the CPU analyzer runs on the track the
    lane decoded and handed on."""
    import mirflow.executors.local as local

    names, culprits, log = _faults_with_the_lane(dataset, monkeypatch, ["fault_gpu", "probe"])
    for name in names:
        assert sidecar(dataset / name)["_mirflow"]["probe"]["status"] == "ok"
    # a track is decoded again only when a lane died with it in flight and it was re-run alone
    decodes = _decodes(log)
    innocent = {k: v for k, v in decodes.items() if k.split("/")[0] not in culprits}
    assert len(innocent) == 20 and set(innocent.values()) <= {1, 2} and 1 in innocent.values()
    assert sum(v - 1 for v in decodes.values()) <= 4 * 2 * local.LANE_WINDOW


def test_a_cpu_worker_killed_on_a_handed_track_fails_only_that_track(dataset: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      faults: Path) -> None:
    """The CPU workers die (SIGKILL, segfault, exit) or hang on tracks the lane handed them through
    shared memory: each such track is re-run alone from the same hand-off (not decoded again) and
    fails with its own reason; every other track completes; no hand-off file is left."""
    released = _record_releases(monkeypatch)
    names, culprits, log = _faults_with_the_lane(dataset, monkeypatch, ["probe_gpu", "fault"])
    for name in names:
        assert sidecar(dataset / name)["_mirflow"]["probe_gpu"]["status"] == "ok"
    assert set(_decodes(log).values()) == {1}  # retries opened the hand-off again
    if shared.shared_dir():
        assert len(released) == 24
    assert _leftovers() == []


def test_a_handed_write_is_not_followed_by_running_its_analyzer_again(
        tmp_path: Path, probe_log: Path) -> None:
    """A track handed on by the GPU lane: the CPU worker knows every analyzer, but an analyzer whose
    outputs it was handed to write is not run again there."""
    import numpy as np

    from conftest import write_track
    from mirflow.core.audio import Audio
    from mirflow.core.dataset import Track
    from mirflow.run.worker import AnalyzerSpec, Decoded, WorkUnit, Worker

    class Writer:
        def __init__(self) -> None:
            self.calls = 0

        def write(self) -> dict:
            self.calls += 1
            return {}

        def keep_in(self, ctx, paths) -> None:  # noqa: ANN001
            pass

    mix = write_track(tmp_path, "a", np.zeros((2, 4410), np.float32), 44100)
    writer = Writer()
    decoded = Decoded(Audio(np.zeros((2, 4410), np.float32), 44100), writes={"probe_gpu": writer})
    unit = WorkUnit(Track(mix.parent, mix), due=("probe_gpu", "probe"), decoded=decoded)
    worker = Worker([AnalyzerSpec("probe_gpu"), AnalyzerSpec("probe")], device="cpu")
    (res,) = worker.process([unit])
    assert writer.calls == 1 and "probe_gpu" not in res and res["probe"].status == "ok"
    assert not probe_calls(probe_log, "analyze-gpu") and len(probe_calls(probe_log)) == 1


# -- elastic threads ----------------------------------------------------------------------------------

def _threads_seen(log: Path) -> dict[str, list[tuple[int, int | None]]]:
    """``{track: [(allowance, BLAS threads read back), ...]}`` in the order the probe applied them."""
    seen: dict[str, list[tuple[int, int | None]]] = {}
    for line in probe_calls(log, "threads"):
        _, _pid, track, allowance, blas = line.split()
        seen.setdefault(track, []).append((int(allowance), None if blas == "None" else int(blas)))
    return seen


def _wait_for(condition, what: str, limit_s: float = 120.0) -> None:
    """Wait until ``condition()`` holds (a deadline against a hang, not a timing assertion)."""
    import time

    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def test_a_worker_alone_takes_the_idle_cores_and_gives_them_back(dataset: Path, probe_log: Path,
                                                                  tmp_path: Path) -> None:
    """2 workers, 2 cores: track a runs alone (2 threads), b arrives (1 each), b ends (a: 2 again).
    The probe re-applies the allowance while it holds, as separation does between passes, and reads
    the BLAS pool's thread count back from the library."""
    from conftest import sine, write_track
    from mirflow.core.dataset import Track
    from mirflow.executors.local import LocalExecutor
    from mirflow.run.worker import AnalyzerSpec, WorkUnit

    hold = tmp_path / "hold"
    hold.mkdir()
    units = {}
    for name in ("a", "b"):
        mix = write_track(dataset, name, sine(seconds=0.2))
        units[name] = WorkUnit(Track(mix.parent, mix), due=("probe_threads",))
    ex = LocalExecutor([AnalyzerSpec("probe_threads", {"hold": str(hold)})], workers=2, device="cpu")
    try:
        seen = lambda: _threads_seen(probe_log)  # noqa: E731
        fut_a = ex.submit([units["a"]])
        _wait_for(lambda: seen().get("a", [])[-1:] == [(2, 2)], "a alone with 2 threads")
        fut_b = ex.submit([units["b"]])
        _wait_for(lambda: seen().get("a", [])[-1:] == [(1, 1)] and seen().get("b") == [(1, 1)],
                  "a and b with 1 thread each")
        (hold / "release-b").touch()
        assert fut_b.result(timeout=120)[0]["probe_threads"].status == "ok"
        _wait_for(lambda: seen()["a"][-1:] == [(2, 2)], "a alone again with 2 threads")
        (hold / "release-a").touch()
        (res_a,) = fut_a.result(timeout=120)
    finally:
        ex.shutdown()
    assert res_a["probe_threads"].status == "ok"
    assert seen() == {"a": [(2, 2), (1, 1), (2, 2)], "b": [(1, 1)]}


def test_one_track_gets_every_core_of_the_budget(small_dataset: Path, probe_log: Path) -> None:
    """One track, ``workers=2``: the run starts one worker, which still gets both cores' threads;
    with ``workers=1`` it is not elastic and keeps one, unless ``cores=2`` (``-j 1 --cores 2``)
    gives its one worker both cores."""
    import shutil

    for extra in ("track 1", "track 2", "track 3"):
        shutil.rmtree(small_dataset / extra)
    for workers, cores, allowance, blas in ((2, 0, 2, 2), (1, 0, None, 1), (1, 2, 2, 2)):
        summary = run(small_dataset, RunOptions(analyzers=["probe_threads"], workers=workers,
                                                cores=cores, force=frozenset({"probe_threads"})))
        assert summary.failed == 0 and summary.counts["probe_threads"]["done"] == 1, summary.failures
        data = sidecar(small_dataset / "track 0")
        assert (data["probe_threads_allowance"], data["probe_threads_blas"]) == (allowance, blas)


def test_a_run_removes_hand_offs_left_by_a_killed_run(small_dataset: Path) -> None:
    """Hand-off files whose coordinator is gone (a run killed with SIGKILL) are removed by the next
    local run, with or without a GPU lane; those of a live coordinator stay."""
    import subprocess
    import sys

    folder = shared.shared_dir()
    if folder is None:
        pytest.skip("no writable /dev/shm here")
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)
    stale = folder / f"{shared.PREFIX}{dead}-{dead}-0-test"
    live = folder / f"{shared.PREFIX}{os.getppid()}-1-0-test"
    stale.write_bytes(b"x")
    live.write_bytes(b"x")
    try:
        summary = run(small_dataset, RunOptions(analyzers=["loudness"], workers=1))
        assert summary.failed == 0
        assert not stale.exists() and live.exists()
    finally:
        stale.unlink(missing_ok=True)
        live.unlink(missing_ok=True)


def test_an_undecodable_track_handed_on_by_the_lane_fails_alone_with_its_reason(
        dataset: Path, tmp_path: Path, probe_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A corrupt and an empty file go through the lane like any track: the lane's decode fails,
    the failure travels with the hand-off, and the CPU analyzer reports the same reason without
    decoding again; the good tracks are done and nothing is left in shared memory."""
    import mirflow.executors.local as local
    from conftest import sine, write_track
    from mirflow.core.audio import DECODE_LOG_ENV

    monkeypatch.setattr(local, "accelerator_present", lambda device: True)
    log = tmp_path / "decodes.log"
    monkeypatch.setenv(DECODE_LOG_ENV, str(log))
    for i in range(3):
        write_track(dataset, f"good {i}", sine(300.0 + 50 * i, 1.0))
    (dataset / "corrupt").mkdir()
    (dataset / "corrupt" / "full_mix.flac").write_bytes(b"fLaC" + os.urandom(4000))
    (dataset / "empty").mkdir()
    (dataset / "empty" / "full_mix.wav").write_bytes(b"")
    summary = run(dataset, RunOptions(analyzers=["probe_gpu", "loudness"], workers=2))
    failed = {(f.track, f.analyzer): f.error for f in summary.failures}
    assert {t for t, _ in failed} == {"corrupt", "empty"}
    for track in ("corrupt", "empty"):
        assert failed[(track, "loudness")] == failed[(track, "probe_gpu")]  # the lane's decode error
        assert "DecodeError" in failed[(track, "loudness")], failed
    assert summary.counts["loudness"]["done"] == 3 and summary.counts["probe_gpu"]["done"] == 3
    assert set(_decodes(log).values()) == {1}  # the log records decodes that succeed
    assert _leftovers() == []


def test_gpu_analyzers_that_cannot_use_the_accelerator_run_on_the_cpu_workers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With an accelerator, only the GPU analyzers that would compute on it go to the GPU lane:
    classifiers with ONNX Runtime lacking a GPU provider (or on the Essentia backend), or an
    analyzer whose own ``device`` parameter is ``cpu``, run on the CPU workers, many at once,
    instead of on one thread of the lane; and the timing report labels them ``cpu``."""
    import onnxruntime as ort

    import mirflow.executors.local as local
    from mirflow.run.timing import device_labels
    from mirflow.run.worker import AnalyzerSpec

    monkeypatch.setattr(local, "accelerator_present", lambda device: True)

    def lane(*specs: AnalyzerSpec) -> frozenset[str]:
        ex = local.LocalExecutor(list(specs), workers=1, device="cuda:0")
        try:
            return ex._gpu_names
        finally:
            ex.shutdown()

    sep, clf, loud = AnalyzerSpec("separation"), AnalyzerSpec("classifiers"), AnalyzerSpec("loudness")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert lane(sep, clf, loud) == {"separation"}
    assert lane(AnalyzerSpec("separation", {"device": "cpu"}), clf) == frozenset()
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert lane(sep, clf, loud) == {"separation", "classifiers"}
    assert lane(sep, AnalyzerSpec("classifiers", {"backend": "essentia"})) == {"separation"}

    class FakeDevice:
        accelerator, kind, name = True, "cuda", "Test GPU"

        def __str__(self) -> str:
            return "cuda:0"

    from mirflow.core import devices
    monkeypatch.setattr(devices, "resolve", lambda requested: FakeDevice())
    built = {n: s.build() for n, s in (("separation", sep), ("classifiers", clf), ("loudness", loud))}
    assert device_labels(built, "cuda:0") == {"separation": "cuda:Test GPU",
                                              "classifiers": "cuda:Test GPU", "loudness": "cpu"}
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert device_labels(built, "cuda:0") == {"separation": "cuda:Test GPU", "classifiers": "cpu",
                                              "loudness": "cpu"}
