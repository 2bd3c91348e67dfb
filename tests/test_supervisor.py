"""The supervisor's isolation rules on an in-process fake backend (no processes: fast and exact).

A fake worker "crashes" on a unit whose track name contains ``crash`` (while running the analyzer
named after ``@``, e.g. ``t3-crash@fault``), "hangs" on ``hang`` and otherwise returns one ok result
per due analyzer. Every task a worker receives is logged, so the tests can check how many times
each unit ran and with which analyzers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import PLUGINS  # noqa: F401 - puts the test plugins on sys.path
from mirflow.core.dataset import Track
from mirflow.core.sidecar import AnalyzerResult
from mirflow.executors.supervisor import MAX_DEATHS, Event, Supervisor
from mirflow.run.worker import WorkUnit


@pytest.fixture(autouse=True)
def _plugins(probe_log: Path) -> None:
    import mirflow_faults  # noqa: F401 - registers "fault"


class FakeSlot:
    def __init__(self, backend: "FakeBackend", index: int) -> None:
        self.backend, self.index = backend, index
        self.task: tuple[int, list[WorkUnit]] | None = None
        self.dead = False

    def start(self) -> None:
        self.backend.starts += 1
        if self.backend.fail_start_after is not None and self.backend.starts > self.backend.fail_start_after:
            raise OSError("cannot start a process: out of process slots")
        self.dead = False

    def send(self, task_id: int, units: list[WorkUnit]) -> None:
        self.task = (task_id, units)
        self.announced = False
        self.backend.log.append([(u.track.dir.name, u.due) for u in units])

    def kill(self) -> None:
        self.dead = True

    def close(self, timeout: float) -> None:
        self.dead = True


class FakeBackend:
    def __init__(self, fail_start_after: int | None = None) -> None:
        self.starts = 0
        self.log: list[list[tuple[str, tuple[str, ...]]]] = []
        self.fail_start_after = fail_start_after

    def new_slot(self, index: int) -> FakeSlot:
        return FakeSlot(self, index)

    def poll(self, slots: list[FakeSlot], timeout: float) -> list[tuple[FakeSlot, Event]]:
        events = []
        for slot in slots:
            if slot.task is None:
                continue
            task_id, units = slot.task
            if not slot.announced:  # a started worker first reports what it is doing
                slot.announced = True
                events.append((slot, Event("phase", ("analyze", units[0].due[0]), task_id)))
                continue
            results = []
            for unit in units:
                name = unit.track.dir.name
                if "hang" in name:
                    break
                if "crash" in name:
                    culprit = name.split("@")[1] if "@" in name else ""
                    if not culprit or culprit in unit.due:
                        events.append((slot, Event("phase", ("analyze", culprit), task_id)))
                        events.append((slot, Event("died", "segmentation fault", task_id)))
                        break
                results.append({n: AnalyzerResult("ok", {n: 1}) for n in unit.due})
            else:
                events.append((slot, Event("result", results, task_id)))
            if events and events[-1][0] is slot:
                slot.task = None
        return events


def unit(name: str, due: tuple[str, ...] = ("fault",), timeout: float = 0.0) -> WorkUnit:
    return WorkUnit(Track(Path("/data") / name, Path("/data") / name / "full_mix.flac"), due,
                    timeout=timeout)


def runs_of(backend: FakeBackend, name: str) -> list[tuple[str, ...]]:
    return [due for task in backend.log for n, due in task if n == name]


def test_a_crash_in_a_chunk_fails_only_the_culprit_after_isolating_it() -> None:
    backend = FakeBackend()
    sup = Supervisor(backend, 1)
    names = ["a", "b-crash@fault", "c", "d"]
    results = sup.submit([unit(n, ("fault", "probe")) for n in names]).result(timeout=10)
    sup.shutdown()
    assert [r["fault"].status for r in results] == ["ok", "error", "ok", "ok"]
    assert results[1]["fault"].error == "segmentation fault"
    assert results[1]["probe"].status == "ok"  # retried without the analyzer that crashed
    assert runs_of(backend, "a") == [("fault", "probe")] * 2  # the chunk, then alone
    assert runs_of(backend, "b-crash@fault") == [("fault", "probe")] * MAX_DEATHS + [("probe",)]
    assert sup.deaths == MAX_DEATHS


def test_a_unit_that_always_kills_its_worker_is_bounded() -> None:
    backend = FakeBackend()
    sup = Supervisor(backend, 2)
    res = sup.submit([unit("x-crash", ("fault",))]).result(timeout=10)
    sup.shutdown()
    assert res[0]["fault"].status == "error" and len(runs_of(backend, "x-crash")) == MAX_DEATHS


def test_a_hang_alone_is_failed_at_once_with_its_time_limit() -> None:
    backend = FakeBackend()
    sup = Supervisor(backend, 1)
    fut = sup.submit([unit("h-hang", ("fault",), timeout=0.5), unit("ok", ("fault",), timeout=0.5)])
    results = fut.result(timeout=30)
    sup.shutdown()
    assert results[0]["fault"].error == "timed out after 0 s"  # (0.5 s, shown in whole seconds)
    assert results[1]["fault"].status == "ok"
    assert len(runs_of(backend, "h-hang")) == 2  # in the chunk, then alone: failed, not retried
    assert backend.starts == 3  # one worker, replaced after each timeout


def test_a_supervisor_that_cannot_start_workers_fails_the_chunks_instead_of_hanging() -> None:
    backend = FakeBackend(fail_start_after=1)
    sup = Supervisor(backend, 1)
    fut = sup.submit([unit("x-crash", ("fault",))])
    with pytest.raises(RuntimeError, match="cannot start a process"):
        fut.result(timeout=10)
    sup.shutdown()


def test_a_worker_that_cannot_start_fails_the_run_not_every_track() -> None:
    class Broken(FakeBackend):
        def poll(self, slots, timeout):  # every worker dies before reporting anything
            return [(s, Event("died", "worker exited with code 1 while analysing this track", s.task[0]))
                    for s in slots if s.task is not None]

    backend = Broken()
    sup = Supervisor(backend, 1)
    fut = sup.submit([unit("a"), unit("b")])
    with pytest.raises(RuntimeError, match=r"cannot be started \(worker exited with code 1, 3 times"):
        fut.result(timeout=10)
    sup.shutdown()
    assert len(backend.log) == 3  # the tracks were not blamed, retried, or failed one by one
