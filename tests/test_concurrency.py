"""Leases and interrupts with real processes: two runs at once, SIGKILL, SIGINT and SIGTERM."""

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

from conftest import probe_calls, sidecar, sine, write_track


def _dataset(root: Path, n: int) -> Path:
    for i in range(n):
        write_track(root, f"song {i:02d}", sine(200.0 + 20 * i, 0.3))
    return root


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mirflow", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _all_sidecars_valid(root: Path) -> None:
    for info in root.rglob("*.INFO"):
        json.loads(info.read_text())


def test_two_runs_at_once_process_every_track_exactly_once(dataset: Path, probe_log: Path) -> None:
    _dataset(dataset, 12)
    args = (str(dataset), "-a", "probe", "--set", "probe.sleep=0.05", "--workers", "1", "--json")
    a, b = _start(*args), _start(*args)
    out_a, err_a = a.communicate(timeout=120)
    out_b, err_b = b.communicate(timeout=120)
    assert a.returncode == 0, err_a
    assert b.returncode == 0, err_b
    calls = Counter(line.split(maxsplit=2)[2] for line in probe_calls(probe_log))
    assert len(calls) == 12 and set(calls.values()) == {1}, calls
    done = json.loads(out_a)["analyzers"]["probe"]["done"] + json.loads(out_b)["analyzers"]["probe"]["done"]
    assert done == 12
    _all_sidecars_valid(dataset)
    for d in dataset.iterdir():
        assert sidecar(d)["_mirflow"]["probe"]["status"] == "ok"


def test_lease_of_a_killed_worker_does_not_block(dataset: Path, probe_log: Path) -> None:
    _dataset(dataset, 1)
    track = dataset / "song 00"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from filelock import FileLock;"
        f"l = FileLock({str(track / '.mirflow.lock')!r}, timeout=0); l.acquire();"
        "print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    proc = subprocess.run([sys.executable, "-m", "mirflow", "run", str(dataset), "-a", "probe", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout)["analyzers"]["probe"]["locked"] == 1
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    proc = subprocess.run([sys.executable, "-m", "mirflow", "run", str(dataset), "-a", "probe", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout)["analyzers"]["probe"]["done"] == 1


@pytest.mark.parametrize("sig,executor", [(signal.SIGINT, "local"), (signal.SIGTERM, "local"),
                                          (signal.SIGINT, "serial")])
def test_interrupt_stops_cleanly_and_the_next_run_resumes(dataset: Path, probe_log: Path,
                                                          sig: signal.Signals, executor: str) -> None:
    _dataset(dataset, 10)
    proc = _start(str(dataset), "-a", "probe", "--set", "probe.sleep=0.4", "--workers", "2",
                  "--executor", executor, "--json")
    deadline = time.time() + 60
    while len(probe_calls(probe_log)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    summary = json.loads(out)
    assert summary["interrupted"] is True
    first = summary["analyzers"]["probe"]["done"]
    assert 1 <= first < 10
    assert not list(dataset.rglob(".mirflow-tmp-*"))
    _all_sidecars_valid(dataset)
    again = subprocess.run([sys.executable, "-m", "mirflow", "run", str(dataset), "-a", "probe",
                            "--set", "probe.sleep=0.4", "--json"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0
    counts = json.loads(again.stdout)["analyzers"]["probe"]
    assert counts["done"] + counts["skipped"] == 10 and counts["skipped"] == first


def test_second_interrupt_abandons_in_flight_work(dataset: Path, probe_log: Path) -> None:
    _dataset(dataset, 4)
    proc = _start(str(dataset), "-a", "probe", "--set", "probe.sleep=30", "--workers", "2", "--json")
    deadline = time.time() + 60
    while len(probe_calls(probe_log)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)  # far less than the 30 s sleep: work was abandoned
    assert proc.returncode == 130, err
    assert json.loads(out)["analyzers"]["probe"]["done"] == 0
    assert not list(dataset.rglob("*.INFO")) and not list(dataset.rglob(".mirflow-tmp-*"))
