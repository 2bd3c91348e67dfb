"""The Ray executor: the same analyzers as Ray actors, on an existing Ray cluster.

Each actor owns one :class:`~mirflow.run.worker.Worker` (analyzers set up once per actor) and processes
work units sent by the coordinator, which keeps holding the track leases and writing the sidecars.
Actors get ``num_gpus=1`` when a GPU analyzer is in the run and ``--device`` asks for or allows a GPU
and the cluster has one; CPU actors are pinned to one thread each, like the local executor.
Every node must see the dataset at the same path (a shared file system).

Fault isolation is the local executor's (:mod:`mirflow.executors.supervisor`): each actor computes
one chunk at a time; when an actor dies (its process killed, a segfault, a lost node) or overruns
the time limit, it is replaced by a new actor and its chunk is re-run one track at a time to find
the culprit. Actors post each step (which analyzer on which task) to a tiny board actor, so only
the analyzer that was running when its actor died is failed, as in the local executor (where that
post is lost with a node, every analyzer due on the culprit is failed). Actors belong to the driver:
when the coordinator dies, Ray removes them.

    mirflow run /shared/dataset --executor ray --ray-address auto --workers 32
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from typing import Any

from ..run.worker import AnalyzerSpec, WorkUnit, Worker
from ..core.errors import ConfigError
from ..core.sidecar import AnalyzerResult
from .process import THREAD_ENV_VARS
from .supervisor import Event, Supervisor

log = logging.getLogger(__name__)


class _PhaseBoard:
    """A tiny actor where workers post what they are doing (``(task, step, analyzer)``), so the
    driver still knows which analyzer was running after the actor that ran it died."""

    def __init__(self) -> None:
        self.phases: dict[str, tuple[int | None, str, str]] = {}

    def set(self, key: str, task_id: int | None, step: str, name: str) -> None:
        self.phases[key] = (task_id, step, name)

    def get(self, key: str) -> tuple[int | None, str, str] | None:
        return self.phases.get(key)


class _Actor:
    def __init__(self, specs: list[AnalyzerSpec], device: str, board: Any = None,
                 key: str = "") -> None:
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(limits=1)
        self._board, self._key, self._task = board, key, None
        self.worker = Worker(specs, device=device, threads=1, on_phase=self._phase)
        from .. import analyzers as registry

        registry.available_names()  # import the analyzer modules now, not on the first track's time

    def _phase(self, step: str, name: str) -> None:
        if self._board is not None:  # waited for: a crash right after must not lose it (~1 ms)
            import ray

            ray.get(self._board.set.remote(self._key, self._task, step, name))

    def ping(self) -> bool:
        return True

    def process(self, units: list[WorkUnit], task_id: int | None = None
                ) -> list[dict[str, AnalyzerResult]]:
        self._task = task_id
        return self.worker.process(units)


def _actor_death(exc: BaseException) -> str:
    """A user's reason for an actor that died. Ray cannot tell how its process ended (a signal, a
    segfault, ``os._exit``), except when its own memory monitor killed it."""
    if "OutOfMemory" in type(exc).__name__ or "memory monitor" in str(exc):
        return "worker (Ray actor) killed by Ray's memory monitor while analysing this track (out of memory)"
    return ("worker (Ray actor) died while analysing this track (its process was killed, e.g. "
            "out of memory, or crashed in native code; see the Ray worker logs)")


class _RaySlot:
    def __init__(self, actor_cls: Any, specs: list[AnalyzerSpec], device: str, board: Any,
                 index: int) -> None:
        self.actor_cls = actor_cls
        self.specs = specs
        self.device = device
        self.board = board
        self.index = index
        self.starts = 0
        self.key = ""
        self.actor: Any = None
        self.ref: Any = None
        self.ping: Any = None  # answered once the actor is constructed
        self.ready = False
        self.task_id: int | None = None

    def start(self) -> None:
        self.starts += 1
        self.key = f"{self.index}-{self.starts}"
        self.actor = self.actor_cls.remote(self.specs, self.device, self.board, self.key)
        self.ping = self.actor.ping.remote()
        self.ready = False
        self.ref = None

    def send(self, task_id: int, units: list[WorkUnit]) -> None:
        self.task_id = task_id
        self.ref = self.actor.process.remote(units, task_id)

    def kill(self) -> None:
        import ray

        if self.actor is not None:
            try:
                ray.kill(self.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actor = self.ref = None

    def close(self, timeout: float) -> None:
        self.kill()


class _RayBackend:
    def __init__(self, actor_cls: Any, specs: list[AnalyzerSpec], device: str) -> None:
        import ray

        self.actor_cls = actor_cls
        self.specs = specs
        self.device = device
        self.board = ray.remote(num_cpus=0)(_PhaseBoard).remote()

    def new_slot(self, index: int) -> _RaySlot:
        return _RaySlot(self.actor_cls, self.specs, self.device, self.board, index)

    def last_phase(self, slot: _RaySlot) -> Event | None:
        """What the dead actor of ``slot`` last reported doing on its current task."""
        import ray

        try:
            posted = ray.get(self.board.get.remote(slot.key), timeout=10)
        except Exception:  # noqa: BLE001 - no phase: the whole track is blamed
            return None
        if posted is None or posted[0] != slot.task_id:
            return None
        return Event("phase", (posted[1], posted[2]), slot.task_id)

    def close(self) -> None:
        import ray

        try:
            ray.kill(self.board)
        except Exception:  # noqa: BLE001
            pass

    def poll(self, slots: list[_RaySlot], timeout: float) -> list[tuple[_RaySlot, Event]]:
        import ray
        from ray.exceptions import RayTaskError

        by_ref = {s.ref: s for s in slots if s.ref is not None}
        pings = {s.ping: s for s in slots if s.ping is not None and not s.ready}
        if not by_ref:
            time.sleep(timeout)
            return []
        ready, _ = ray.wait([*by_ref, *pings], num_returns=len(by_ref) + len(pings),
                            timeout=timeout, fetch_local=True)
        events = []
        for ref in ready:
            if ref in pings:  # the actor exists: the task's time starts now
                slot = pings[ref]
                slot.ready, slot.ping = True, None
                if slot.ref is not None:
                    events.append((slot, Event("phase", ("ready", ""), slot.task_id)))
                continue
            slot = by_ref[ref]
            slot.ref = None
            try:
                events.append((slot, Event("result", ray.get(ref), slot.task_id)))
            except RayTaskError as exc:  # raised in the actor outside any analyzer
                events.append((slot, Event("error", " ".join(str(exc.cause).split())[:300],
                                           slot.task_id)))
            except Exception as exc:  # noqa: BLE001 - RayActorError, or the object lost with its node
                phase = self.last_phase(slot)
                if phase is not None:
                    events.append((slot, phase))
                events.append((slot, Event("died", _actor_death(exc), slot.task_id)))
        return events


class RayExecutor:
    """Work units on ``workers`` supervised Ray actors; see the module docstring."""

    def __init__(self, specs: list[AnalyzerSpec], *, workers: int, device: str = "auto",
                 address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("the ray executor needs Ray: pip install 'mirflow[ray]'") from None
        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            env = {k: "1" for k in THREAD_ENV_VARS}
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False,
                     include_dashboard=False, ignore_reinit_error=True)
        from .. import analyzers as registry

        wants_gpu = device != "cpu" and any(registry.get(s.name).device == "gpu" for s in specs)
        gpus = ray.cluster_resources().get("GPU", 0) if wants_gpu else 0
        actor_cls = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0, max_restarts=0)(_Actor)
        count = max(1, int(min(workers, gpus)) if gpus else int(workers))
        self._supervisor = Supervisor(_RayBackend(actor_cls, specs, device), count, label="Ray actor")
        self.capacity = count * 2

    def submit(self, units: list[WorkUnit]) -> "Future[list[dict[str, AnalyzerResult]]]":
        return self._supervisor.submit(units)

    @property
    def deaths(self) -> int:
        """Actors lost so far."""
        return self._supervisor.deaths

    def shutdown(self, *, cancel: bool = False) -> None:
        self._supervisor.shutdown(cancel=cancel)
        if self._owns_ray:
            self._ray.shutdown()
