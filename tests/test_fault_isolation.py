"""Fault isolation: a worker's death, a hang or a track too big for memory fails that track only.

The culprits come from the fault-injection plugin (``tests/plugins/mirflow_faults.py``): chosen by
track name, its analyzer SIGKILLs its own process, segfaults in a C call, calls ``os._exit(3)`` or
sleeps forever.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import PLUGINS, mirflow, probe_calls, run_json, sidecar, sine, write_track
from mirflow.core.config import RunOptions
from mirflow.run import limits
from mirflow.run.coordinator import run

CULPRITS = {"song 03-sigkill": "worker killed by signal 9 (SIGKILL) while analysing this track (out of memory?)",
            "song 09-segv": "segmentation fault (SIGSEGV) in native code while analysing this track",
            "song 14-exit": "worker exited with code 3 while analysing this track",
            "song 20-hang": "timed out after 4 s"}
TIMEOUT = "4"


@pytest.fixture
def faults(probe_log: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The probe and fault plugins, in this process and in CLI children; returns the call log."""
    monkeypatch.setenv("MIRFLOW_PLUGINS", "mirflow_probe,mirflow_faults")
    import mirflow_faults  # noqa: F401 - registers the fault analyzers here too

    return probe_log


def _dataset(root: Path, n: int = 24, culprits: dict[str, str] = CULPRITS) -> list[str]:
    names = [f"song {i:02d}" for i in range(n)]
    for c in culprits:
        names[int(c.split()[1][:2])] = c
    for i, name in enumerate(names):
        write_track(root, name, sine(200.0 + 10 * i, 0.3))
    return names


def _innocent(names: list[str], culprits: dict[str, str]) -> list[str]:
    return [n for n in names if n not in culprits]


def _check_outcome(root: Path, names: list[str], culprits: dict[str, str], failures: list,
                   analyzer: str = "fault") -> None:
    """Innocent tracks complete; each culprit has exactly its reason on ``analyzer`` and its other
    analyzer (the probe) completed without it."""
    got = {f["track"] if isinstance(f, dict) else f.track: (f["error"] if isinstance(f, dict) else f.error)
           for f in failures}
    assert got == culprits
    for name in names:
        data = sidecar(root / name)
        rec = data["_mirflow"][analyzer]
        if name in culprits:
            assert rec["status"] == "error" and rec["error"] == culprits[name]
            assert f"{analyzer}_frames" not in data
        else:
            assert rec["status"] == "ok" and data[f"{analyzer}_frames"] == 13230
        assert data["_mirflow"]["probe"]["status"] == "ok"  # the other analyzer is not a victim


def test_local_executor_fails_only_the_culprits_then_retry_fails_them_again(
        dataset: Path, faults: Path) -> None:
    names = _dataset(dataset)
    args = (str(dataset), "-a", "fault,probe", "--workers", "2", "--track-timeout", TIMEOUT)
    proc = mirflow("run", *args, timeout=600)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "20" in proc.stdout and "failed" in proc.stderr  # the summary table and the failure lines
    for reason in CULPRITS.values():
        assert reason.split(" (")[0][:40] in proc.stderr.replace("\n", " ")
    summary = json.loads(mirflow("status", str(dataset), "-a", "fault,probe", "--json").stdout)
    assert summary["analyzers"]["fault"]["done"] == 20 and summary["analyzers"]["fault"]["failed"] == 4
    _check_outcome(dataset, names, CULPRITS, summary["failures"])
    before = {n: (dataset / n / f"{n}.INFO").stat().st_mtime_ns for n in _innocent(names, CULPRITS)}
    calls = len(probe_calls(faults, "analyze-fault"))

    code, again = run_json(*args, "--retry-failed", timeout=600)
    assert code == 1
    assert again["analyzers"]["fault"]["failed"] == 4 and again["analyzers"]["fault"]["skipped"] == 20
    _check_outcome(dataset, names, CULPRITS, again["failures"])
    after = {n: (dataset / n / f"{n}.INFO").stat().st_mtime_ns for n in _innocent(names, CULPRITS)}
    assert after == before  # the innocent tracks were not touched
    retried = Counter(line.split(maxsplit=2)[2] for line in probe_calls(faults, "analyze-fault")[calls:])
    assert set(retried) == set(CULPRITS)
    assert all(n <= 2 for n in retried.values())  # bounded: at most two attempts per culprit


def test_gpu_lane_replacement_reloads_models_and_isolates(dataset: Path, faults: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import mirflow.executors.local as local

    monkeypatch.setattr(local, "accelerator_present", lambda device: True)
    culprits = {k: v.replace("4 s", "3 s") for k, v in CULPRITS.items()}
    names = _dataset(dataset, culprits=culprits)
    summary = run(dataset, RunOptions(analyzers=["fault_gpu", "probe"], workers=2, track_timeout=3))
    got = {f.track: f.error for f in summary.failures}
    assert got == culprits
    assert summary.counts["fault_gpu"]["done"] == 20 and summary.counts["probe"]["done"] == 24
    for name in _innocent(names, culprits):
        assert sidecar(dataset / name)["fault_gpu_frames"] == 13230
    gpu_pids = {line.split()[1] for line in probe_calls(faults, "analyze-fault_gpu")}
    setups = [line.split()[1] for line in probe_calls(faults, "setup-fault_gpu")]
    assert len(setups) == len(set(setups)) == len(gpu_pids) > 1  # each replacement set up once
    cpu_pids = {line.split()[1] for line in probe_calls(faults)}
    assert not gpu_pids & cpu_pids  # still one lane apart from the CPU workers


def test_serial_executor_bounds_hangs(dataset: Path, faults: Path) -> None:
    """In one process only what can be interrupted is isolated: a hang (a crash would end it)."""
    culprits = {"song 05-hang": "timed out after 2 s"}
    names = _dataset(dataset, 8, culprits)
    summary = run(dataset, RunOptions(analyzers=["fault", "probe"], executor="serial", track_timeout=2))
    assert {f.track: f.error for f in summary.failures} == culprits
    _check_outcome(dataset, names, culprits, summary.failures)


def test_setup_that_kills_workers_is_failed_after_two_deaths(dataset: Path, faults: Path) -> None:
    names = _dataset(dataset, 6, {})
    summary = run(dataset, RunOptions(analyzers=["fault", "probe"], workers=1,
                                      params={"fault": {"setup_fault": "segv"}}))
    assert summary.counts["fault"]["failed"] == 6 and summary.counts["probe"]["done"] == 6
    assert {f.error for f in summary.failures} == {
        "setup failed: segmentation fault (SIGSEGV) in native code"}
    assert len(probe_calls(faults, "setup-fault")) == 2  # not one crash per track
    assert len(names) == 6


def test_ray_executor_isolates_actor_deaths(dataset: Path, faults: Path) -> None:
    pytest.importorskip("ray")
    culprits = {"song 03-sigkill": "", "song 06-segv": "", "song 08-exit": "", "song 10-hang": ""}
    _dataset(dataset, 12, culprits)
    # "local": a Ray instance of its own, never a cluster another process on this machine started
    summary = run(dataset, RunOptions(analyzers=["fault", "probe"], executor="ray", workers=2,
                                      track_timeout=6, ray_address="local"))
    got = {(f.track, f.analyzer): f.error for f in summary.failures}
    assert {t for t, _ in got} == set(culprits)
    assert got[("song 10-hang", "fault")] == "timed out after 6 s"
    for track in ("song 03-sigkill", "song 06-segv", "song 08-exit"):
        assert got[(track, "fault")].startswith("worker (Ray actor) died while analysing this track")
    # actors post which analyzer they run: only that one fails, the probe completes on every track
    assert summary.counts["fault"]["done"] == 8 and summary.counts["probe"]["done"] == 12


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to list processes")
@pytest.mark.parametrize("gpu_lane", [False, True])
def test_no_process_survives_a_killed_coordinator(dataset: Path, faults: Path, gpu_lane: bool) -> None:
    _dataset(dataset, 8, {})
    script = (
        "import sys, time\n"
        "from mirflow.core.config import RunOptions\n"
        "import mirflow.executors.local as local\n"
        f"local.accelerator_present = lambda device: {gpu_lane}\n"
        "from mirflow.run.coordinator import run\n"
        "if __name__ == '__main__':\n"
        f"    run({str(dataset)!r}, RunOptions(analyzers=['fault_gpu', 'probe'], workers=2,"
        "            params={'probe': {'sleep': 60.0}}))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")])}
    coordinator = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 120
        while len(probe_calls(faults)) < 2 and time.time() < deadline:
            time.sleep(0.2)
        assert len(probe_calls(faults)) >= 2, "the workers never started"
        workers = _children(coordinator.pid)
        assert len(workers) >= (3 if gpu_lane else 2)
    finally:
        coordinator.send_signal(signal.SIGKILL)
        coordinator.wait()
    deadline = time.time() + 10
    while any(_alive(p) for p in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not [p for p in workers if _alive(p)]


def test_named_unavailable_analyzer_exits_2_default_set_reports_and_strict_fails(
        dataset: Path, faults: Path) -> None:
    write_track(dataset, "song", sine(440.0, 0.5))
    proc = mirflow("run", str(dataset), "-a", "fault_missing,probe")
    assert proc.returncode == 2
    assert "fault_missing cannot run here" in proc.stderr and "mirflow models download" in proc.stderr
    assert not (dataset / "song" / "song.INFO").exists()  # checked before any work
    args = (str(dataset), "--set", "probe.sleep=0", "--executor", "serial")
    plain = mirflow("run", *args, "--json")
    assert plain.returncode == 0, plain.stderr
    assert "fault_missing" in json.loads(plain.stdout)["unavailable"]
    strict = mirflow("run", *args, "--strict")
    assert strict.returncode == 1 and "fault_missing" in strict.stderr


def test_track_over_the_memory_budget_is_failed_with_the_reason(dataset: Path, faults: Path) -> None:
    write_track(dataset, "big", sine(440.0, 2.0))
    write_track(dataset, "small", sine(440.0, 0.2))
    budget = limits.parse_size("700K")
    summary = run(dataset, RunOptions(analyzers=["probe"], executor="serial", max_memory=budget))
    assert [f.track for f in summary.failures] == ["big"]
    assert summary.failures[0].error.startswith("needs about 0.0013 GiB, budget 0.00067 GiB")
    assert summary.counts["probe"]["done"] == 1
    # a budget that holds one track at a time still runs them all (dispatch waits, never stalls)
    one = run(dataset, RunOptions(analyzers=["probe"], workers=2, max_memory=limits.parse_size("1.45M"),
                                  force=frozenset({"probe"})))
    assert one.failed == 0 and one.counts["probe"]["done"] == 2


def test_default_limits_scale_with_duration() -> None:
    hour = limits.AudioInfo(frames=3600 * 44100, sr=44100, channels=2)
    assert limits.track_timeout(hour) == 36000.0
    assert limits.track_timeout(limits.AudioInfo(441000, 44100, 2)) == limits.MIN_TIMEOUT_S
    assert limits.track_timeout(None) == limits.UNKNOWN_DURATION_TIMEOUT_S
    assert limits.track_timeout(hour, 30) == 30.0
    assert hour.decoded_bytes == 3600 * 44100 * 2 * 4
    need = limits.memory_needed(hour, ("loudness",))
    assert 2 * hour.decoded_bytes < need < 2 * hour.decoded_bytes + (32 << 20)  # loudness streams
    assert limits.memory_needed(hour, ("separation",)) > 6 * hour.decoded_bytes
    assert limits.parse_size("16G") == limits.parse_size("16GiB") == 16 * 2 ** 30
    assert limits.parse_size("512M") == 512 * 2 ** 20 and limits.parse_size(2) == 2 * 2 ** 30
    with pytest.raises(Exception, match="16G"):
        limits.parse_size("lots")


def test_limits_from_the_configuration_file_and_the_command_line(faults: Path) -> None:
    from mirflow.core.config import validate
    from mirflow.run.options import build_options

    cfg = validate({"run": {"track_timeout": 120, "max_memory": "2G"}})
    opts = build_options(cfg, analyzers=None)
    assert opts.track_timeout == 120 and opts.max_memory == 2 * 2 ** 30
    assert not opts.explicit_analyzers  # the default set: unavailable analyzers are only reported
    opts = build_options(cfg, analyzers=["probe"], track_timeout=5, max_memory="512M")
    assert opts.track_timeout == 5 and opts.max_memory == 512 * 2 ** 20 and opts.explicit_analyzers
    assert build_options(validate({"run": {"analyzers": ["probe"]}})).explicit_analyzers
    with pytest.raises(Exception, match="track_timeout"):
        validate({"run": {"track_timeout": -1}})


def test_stems_follow_the_umask_like_sidecars(tmp_path: Path) -> None:
    import numpy as np

    from mirflow.core.stems_io import write_stems

    old = os.umask(0o022)
    try:
        paths = write_stems(tmp_path, {"drums": np.zeros((2, 4410), np.float32)}, sr=44100)
    finally:
        os.umask(old)
    assert paths["drums"].stat().st_mode & 0o777 == 0o644


def test_workers_for_memory() -> None:
    from mirflow.run.limits import WORKER_MODELS_SHARE, workers_for_memory

    gib = 1 << 30
    assert WORKER_MODELS_SHARE == 0.5
    assert workers_for_memory(8, int(1.5 * gib), 8 * gib) == 2  # 4 GiB for copies of 1.5 GiB
    assert workers_for_memory(2, int(1.5 * gib), 8 * gib) == 2  # never more than asked
    assert workers_for_memory(8, 4 * gib, 2 * gib) == 1  # never fewer than one
    assert workers_for_memory(8, 0, 2 * gib) == 8  # no models
    assert workers_for_memory(8, gib, 0.0) == 8  # budget unknown
