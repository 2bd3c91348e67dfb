"""The Ray executor: the same analyzers as Ray actors, on an existing Ray cluster.

Each actor owns one :class:`~mirflow.run.worker.Worker` (analyzers set up once per actor) and processes
work units sent by the coordinator, which keeps holding the track leases and writing the sidecars.
Actors get ``num_gpus=1`` when a GPU analyzer is in the run and ``--device`` asks for or allows a GPU
and the cluster has one; CPU actors are pinned to one thread each, like the local executor.
Every node must see the dataset at the same path (a shared file system).

Fault isolation is the local executor's (:mod:`mirflow.executors.supervisor`): each actor computes
one chunk at a time; when an actor dies (its process killed, a segfault, a lost node) or overruns
the time limit, it is replaced by a new actor and its chunk is re-run one track at a time to find
the culprit. An actor does not report which analyzer it was running, so a culprit track gets the
reason on every analyzer that was due on it. Actors belong to the driver: when the coordinator dies,
Ray removes them.

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


class _Actor:
    def __init__(self, specs: list[AnalyzerSpec], device: str) -> None:
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(limits=1)
        self.worker = Worker(specs, device=device, threads=1)
        from .. import analyzers as registry

        registry.available_names()  # import the analyzer modules now, not on the first track's time

    def ping(self) -> bool:
        return True

    def process(self, units: list[WorkUnit]) -> list[dict[str, AnalyzerResult]]:
        return self.worker.process(units)


def _actor_death(exc: BaseException) -> str:
    """A user's reason for an actor that died. Ray cannot tell how its process ended (a signal, a
    segfault, ``os._exit``), except when its own memory monitor killed it."""
    if "OutOfMemory" in type(exc).__name__ or "memory monitor" in str(exc):
        return "worker (Ray actor) killed by Ray's memory monitor while analysing this track (out of memory)"
    return ("worker (Ray actor) died while analysing this track (its process was killed, e.g. "
            "out of memory, or crashed in native code; see the Ray worker logs)")


class _RaySlot:
    def __init__(self, actor_cls: Any, specs: list[AnalyzerSpec], device: str) -> None:
        self.actor_cls = actor_cls
        self.specs = specs
        self.device = device
        self.actor: Any = None
        self.ref: Any = None
        self.ping: Any = None  # answered once the actor is constructed
        self.ready = False
        self.task_id: int | None = None

    def start(self) -> None:
        self.actor = self.actor_cls.remote(self.specs, self.device)
        self.ping = self.actor.ping.remote()
        self.ready = False
        self.ref = None

    def send(self, task_id: int, units: list[WorkUnit]) -> None:
        self.task_id = task_id
        self.ref = self.actor.process.remote(units)

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
        self.actor_cls = actor_cls
        self.specs = specs
        self.device = device

    def new_slot(self, index: int) -> _RaySlot:
        return _RaySlot(self.actor_cls, self.specs, self.device)

    def poll(self, slots: list[_RaySlot], timeout: float) -> list[tuple[_RaySlot, Event]]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

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
            except RayActorError as exc:
                events.append((slot, Event("died", _actor_death(exc), slot.task_id)))
            except Exception as exc:  # noqa: BLE001 - e.g. the object was lost with its node
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
