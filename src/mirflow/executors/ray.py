"""The Ray executor: mirflow's analyzers as Ray actors on a Ray cluster.

Two pools, the same stage split as the local executor's GPU lane:

* **GPU actors**, one per GPU of the cluster (``num_gpus=1``, one CPU), hold the GPU analyzers
  (one model copy per GPU, loaded once per actor, batching across the tracks of a chunk). They are
  used when the run holds a GPU analyzer, ``--device`` is not ``cpu`` and the *cluster* has GPUs
  (the driver's own machine may have none). Ray gives each such actor one GPU and makes it the
  actor's ``cuda:0``; the actor resolves ``auto``/``cuda``/``cuda:N`` to that GPU itself. Which
  GPU analyzers can use a GPU at all (classifiers need an ONNX Runtime GPU provider) is asked of
  the GPU nodes before the pools start (:func:`accelerated_here`); the others run in the CPU actors.
* **CPU actors**, as many as the cluster has free CPUs (at most ``--workers``; ``num_cpus=1``
  each, every BLAS/OpenMP/numba/torch pool pinned to one thread) run every other analyzer, and the
  GPU analyzers too when there is no GPU actor. A track with GPU work goes to a GPU actor first,
  then its CPU part to a CPU actor, so the GPUs never wait for CPU features. The GPU actor hands
  the decoded mix and the stems it made on: it puts them in Ray's object store and returns a
  reference with its results, which the driver passes to the CPU actor, so the CPU actor decodes
  nothing again and the arrays go from node to node, never through the driver.

Dispatch is pull-based: each pool is a :class:`~mirflow.executors.supervisor.Supervisor` holding a
queue of chunks; a chunk is sent to an actor only when that actor is free (one chunk in flight per
actor; completions are collected with ``ray.wait``), and the coordinator keeps at most
``capacity`` chunks queued, so memory stays bounded however large the dataset.

The coordinator stays the only writer of sidecars and the holder of the track leases: actors only
compute and return results. Fault isolation is the local executor's: when an actor dies (its process
killed, a segfault, its node lost) or overruns the time limit, the supervisor starts a replacement and
re-runs the dead chunk one track at a time to find the culprit; a result arrives at most once per
chunk, so no track is lost and none written twice. Ray's own ``max_restarts``/``max_task_retries``
are off on purpose: a blind retry would run the culprit's chunk again on the fresh actor (killing it
too) and cannot isolate the culprit. When a node is lost and the cluster has no room for a
replacement, the slot is retired and the pool shrinks. Actors post each step (which analyzer on
which chunk) to a tiny board actor pinned to the driver's node, so only the analyzer that was
running when its actor died is failed (where that post is lost with a node, every analyzer due on
the culprit is failed). Actors belong to the driver: when the coordinator dies, Ray removes them.

Before the first chunk is sent, one tiny task per node reads the first track, so a node that does
not see the dataset (every node must mount it at the same path) is an error naming that node.

Ray Data (``map_batches`` with actor pools) is not used: the coordinator must decide per track what
is due under a lease and write each sidecar atomically as its results arrive, a crash must fail one
track (not a block of a dataset), and there is no tabular dataset to stream, so an actor pool with
this supervisor is both simpler and what the fault-isolation rules need.

    mirflow run /shared/dataset --executor ray --ray-address auto
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

from ..core.errors import ConfigError, HandOffLost
from ..core.sidecar import AnalyzerResult
from ..run.worker import HANDOFF, AnalyzerSpec, Decoded, HandedTrack, WorkUnit, Worker, describe
from .lanes import accelerated_names, accelerated_specs, ok_names, then_cpu
from .process import THREAD_ENV_VARS
from .supervisor import Event, Supervisor

log = logging.getLogger(__name__)

#: Seconds a replacement actor waits for the resources of the one it replaces to be released
#: before its slot is retired (the cluster shrank, e.g. a node was lost).
RELEASE_WAIT_S = 5.0
#: Seconds the start-up check waits for every node to read the first track.
ACCESS_CHECK_S = 60.0
#: Seconds the GPU nodes have to say which GPU analyzers can use their GPUs (:func:`accelerated_here`).
GPU_CHECK_S = 60.0
#: Seconds a CPU actor waits for a handed-on track from the object store before decoding it itself.
FETCH_TIMEOUT_S = 120.0


def actor_env() -> dict[str, str]:
    """Environment of every actor: one thread per numeric library, and the driver's ``MIRFLOW_*``
    settings (plugins, log level, cache folders)."""
    env = {k: "1" for k in THREAD_ENV_VARS}
    env.update({k: v for k, v in os.environ.items() if k.startswith("MIRFLOW_")})
    return env


def actor_device(requested: str, gpu_ids: list[Any]) -> str:
    """The device an actor uses for ``requested``: an actor given a GPU by Ray sees it as
    ``cuda:0`` (Ray sets ``CUDA_VISIBLE_DEVICES``), whatever index the driver named."""
    if requested == "cpu":
        return "cpu"
    if gpu_ids:
        return "cuda:0"
    from ..core.devices import resolve

    return str(resolve(requested))


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
    """One pool member: a :class:`Worker` for the pool's analyzers, kept for the actor's life."""

    def __init__(self, specs: list[AnalyzerSpec], device: str, board: Any = None,
                 key: str = "") -> None:
        import ray
        from threadpoolctl import threadpool_limits

        from ..core import logsetup

        logsetup.configure_from_env()  # -v on the driver: the actors' messages reach it too
        self._limits = threadpool_limits(limits=1)
        self._board, self._key, self._task = board, key, None
        self.node = node_label()
        self.device = actor_device(device, ray.get_gpu_ids())
        from .process import import_analyzers

        import_analyzers()
        self.worker = Worker(specs, device=self.device, threads=1, on_phase=self._phase)
        log.info("Ray actor %s on node %s (%s) ready", key, self.node, self.device)

    def _phase(self, step: str, name: str) -> None:
        if self._board is not None:  # waited for: a crash right after must not lose it (~1 ms)
            import ray

            try:
                ray.get(self._board.set.remote(self._key, self._task, step, name), timeout=10)
            except Exception:  # noqa: BLE001 - a lost board only costs the analyzer attribution
                self._board = None

    def ping(self) -> bool:
        return True

    def process(self, units: list[WorkUnit], task_id: int | None = None
                ) -> tuple[str, float, list[dict[str, AnalyzerResult]]]:
        """``(node address, seconds, results)`` for a chunk. A track handed on (the decoded mix and
        stems of a GPU actor) goes into Ray's object store here and travels as an object reference:
        the driver forwards the reference, and the CPU actor fetches the arrays straight from this
        node's store, not through the driver."""
        import ray

        self._task = task_id
        start = time.perf_counter()
        results = self.worker.process(units)
        for res in results:
            if HANDOFF in res:
                res[HANDOFF] = Stored(ray.put(res[HANDOFF]))  # type: ignore[assignment]
        return self.node, time.perf_counter() - start, results


@dataclass(frozen=True)
class Stored(HandedTrack):
    """A handed-on track in Ray's object store, owned by the GPU actor that put it there. The GPU
    actor wrote its stems itself (nothing left to write), so a track lost with its owner is decoded
    again from its files by the CPU actor (:meth:`Worker._open_handed`)."""

    ref: Any

    def open(self) -> Decoded:
        import ray

        try:
            return ray.get(self.ref, timeout=FETCH_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - ObjectLostError, OwnerDiedError, GetTimeoutError
            raise HandOffLost(f"the track handed on by the GPU actor is lost ({type(exc).__name__})") from exc


def node_label() -> str:
    """This Ray node as the timing report and errors name it: ``address (node id prefix)`` (the
    id tells apart nodes sharing an address, as in a simulated cluster)."""
    import ray

    return f"{ray.util.get_node_ip_address()} ({ray.get_runtime_context().get_node_id()[:8]})"


def accelerated_here(specs: list[AnalyzerSpec], device: str) -> tuple[str, list[str]]:
    """``(this node, the analyzers of specs that would compute on device here)``. Run on every GPU
    node before the pools start: what can use a GPU depends on the node's installation (an ONNX
    Runtime with a CUDA provider), which the driver's machine, often a CPU-only head node, may not
    share."""
    from .process import import_analyzers

    import_analyzers()
    return node_label(), sorted(accelerated_names(specs, device))


def read_check(path: str) -> tuple[str, str | None]:
    """``(node, None)`` when this node can read ``path``, else ``(node, error)``."""
    node = node_label()
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        return node, f"{type(exc).__name__}: {exc}"
    return node, None


def _actor_death(exc: BaseException) -> str:
    """A user's reason for an actor that died. Ray cannot tell how its process ended (a signal, a
    segfault, ``os._exit``), except when its own memory monitor killed it."""
    if "OutOfMemory" in type(exc).__name__ or "memory monitor" in str(exc):
        return "worker (Ray actor) killed by Ray's memory monitor while analysing this track (out of memory)"
    return ("worker (Ray actor) died while analysing this track (its process was killed, e.g. "
            "out of memory, crashed in native code, or its node was lost; see the Ray worker logs)")


class _RaySlot:
    """One actor place of a pool (see :class:`~mirflow.executors.supervisor.Slot`)."""

    def __init__(self, backend: "_RayBackend", index: int) -> None:
        self.backend = backend
        self.index = index
        self.starts = 0
        self.key = ""
        self.actor: Any = None
        self.ref: Any = None
        self.ping: Any = None  # answered once the actor is constructed
        self.ready = False
        self.retired = False  # no room for it in the cluster any more: the supervisor skips it
        self.task_id: int | None = None

    def start(self) -> None:
        self.ref = None
        self.ready = False
        if self.starts and not self.backend.room_for_replacement(self):
            self.retired = True
            self.actor = self.ping = None
            log.warning("Ray %s actor %d not replaced: the cluster has no room for it (a node was "
                        "lost?); the pool goes on with fewer actors", self.backend.pool, self.index)
            return
        self.starts += 1
        self.key = f"{self.backend.pool}-{self.index}-{self.starts}"
        self.actor = self.backend.actor_cls.options(
            name=f"mirflow-{self.backend.run_id}-{self.key}").remote(
            self.backend.specs, self.backend.device, self.backend.board, self.key)
        self.ping = self.actor.ping.remote()

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
    """Where a pool's actors live (see :class:`~mirflow.executors.supervisor.Backend`)."""

    def __init__(self, pool: str, actor_cls: Any, specs: list[AnalyzerSpec], device: str,
                 board: Any, run_id: str, need: dict[str, float], nodes: dict[str, dict[str, float]]
                 ) -> None:
        self.pool = pool
        self.actor_cls = actor_cls
        self.specs = specs
        self.device = device
        self.board = board
        self.run_id = run_id
        self.need = need  # resources of one actor
        self.nodes = nodes  # node address -> {"tracks", "busy_s"}, shared by the pools
        self.slots: list[_RaySlot] = []

    def new_slot(self, index: int) -> _RaySlot:
        slot = _RaySlot(self, index)
        self.slots.append(slot)
        return slot

    def room_for_replacement(self, slot: _RaySlot) -> bool:
        """Whether the cluster can place a new actor for ``slot`` (the last live slot of a pool is
        always replaced: it waits for room rather than leaving the pool empty)."""
        import ray

        if not any(s is not slot and not s.retired for s in self.slots):
            return True
        deadline = time.monotonic() + RELEASE_WAIT_S
        while True:
            free = ray.available_resources()
            if all(free.get(k, 0.0) >= v for k, v in self.need.items() if v):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.25)

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
                node, seconds, results = ray.get(ref)
            except RayTaskError as exc:  # raised in the actor outside any analyzer
                events.append((slot, Event("error", " ".join(str(exc.cause).split())[:300],
                                           slot.task_id)))
                continue
            except Exception as exc:  # noqa: BLE001 - RayActorError, or the object lost with its node
                phase = self.last_phase(slot)
                if phase is not None:
                    events.append((slot, phase))
                events.append((slot, Event("died", _actor_death(exc), slot.task_id)))
                continue
            stats = self.nodes.setdefault(node, {"tracks": 0, "busy_s": 0.0})
            stats["tracks"] += len(results)
            stats["busy_s"] += seconds
            events.append((slot, Event("result", results, slot.task_id)))
        return events


class RayExecutor:
    """GPU actors beside a CPU actor pool on a Ray cluster; see the module docstring.

    ``workers`` bounds the CPU actors (the cluster's free CPUs bound them too); ``device`` is the
    run's device as the user gave it (``auto``, ``cpu``, ``cuda``, ``cuda:N``): GPU actors are
    decided from the cluster's GPUs, not from the driver's machine.
    """

    #: Every actor holds its own copy of its analyzers' models: counted per track (the actors are
    #: spread over the cluster's machines; the budget is this machine's).
    models_held_once: frozenset[str] = frozenset()
    models_per_worker: frozenset[str] = frozenset()

    def __init__(self, specs: list[AnalyzerSpec], *, workers: int, device: str = "auto",
                 address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("the ray executor needs Ray: pip install 'mirflow[ray]'") from None
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .. import analyzers as registry
        from ..core import devices

        kind, _ = devices.parse(device)
        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            verbose = logging.getLogger("mirflow").isEnabledFor(logging.INFO)
            try:
                ray.init(address=address, runtime_env={"env_vars": actor_env()},
                         log_to_driver=verbose, include_dashboard=False, ignore_reinit_error=True,
                         logging_level=logging.INFO if verbose else logging.WARNING)
            except ConnectionError as exc:
                raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
        self._run_id = uuid.uuid4().hex[:8]
        self._checked = False
        self.nodes: dict[str, dict[str, float]] = {}
        gpu_specs = [s for s in specs if registry.get(s.name).device == "gpu"]
        cluster_gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpu_specs and kind not in ("cpu", "auto") and not cluster_gpus:
            raise ConfigError(f"--device {device} asks for a GPU, but the Ray cluster has none")
        env = {"env_vars": actor_env()}
        if gpu_specs and kind != "cpu" and cluster_gpus:
            # the cluster's GPUs are CUDA devices (Ray's "GPU" resource); what can use them is
            # judged on the GPU nodes, whose installation the driver's machine may not share
            gpu_specs = accelerated_specs(gpu_specs, self._accelerated_on_gpu_nodes(gpu_specs, env),
                                          gpus="the cluster's GPUs")
        use_gpu = bool(gpu_specs) and kind != "cpu" and cluster_gpus > 0
        self._gpu_names = frozenset(s.name for s in gpu_specs) if use_gpu else frozenset()
        cpu_specs = [s for s in specs if s.name not in self._gpu_names]
        here = ray.get_runtime_context().get_node_id()
        board = ray.remote(num_cpus=0)(_PhaseBoard).options(  # on the driver's node: never lost alone
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()
        self._board = board
        self._gpu: Supervisor | None = None
        n_gpu = cluster_gpus if use_gpu else 0
        free_cpus = int(ray.available_resources().get("CPU", 0)) - n_gpu  # a GPU actor takes one
        if use_gpu:
            gpu_cls = ray.remote(num_cpus=1, num_gpus=1, max_restarts=0, max_task_retries=0,
                                 runtime_env=env)(_Actor)
            self._gpu = Supervisor(_RayBackend("gpu", gpu_cls, gpu_specs, device, board, self._run_id,
                                               {"CPU": 1, "GPU": 1}, self.nodes),
                                   n_gpu, label="Ray GPU actor")
        n_cpu = max(1, min(int(workers) if workers else free_cpus, free_cpus))
        self.workers = n_cpu  # the CPU actors
        cpu_cls = ray.remote(num_cpus=1, num_gpus=0, max_restarts=0, max_task_retries=0,
                             scheduling_strategy="SPREAD", runtime_env=env)(_Actor)
        self._pool = Supervisor(_RayBackend("cpu", cpu_cls, cpu_specs, "cpu", board, self._run_id,
                                            {"CPU": 1}, self.nodes), n_cpu, label="Ray CPU actor")
        #: ``{stage: (slots, [analyzer, ...])}`` for the timing report.
        self.stages = {"ray cpu actors": (n_cpu, [s.name for s in cpu_specs])}
        if self._gpu is not None:
            self.stages["ray gpu actors"] = (n_gpu, sorted(self._gpu_names))
        # one chunk computing and one waiting per actor
        self.capacity = 2 * (n_cpu + n_gpu)
        log.info("Ray executor: %d CPU actor(s)%s on %d node(s)", n_cpu,
                 f", {n_gpu} GPU actor(s) for {', '.join(sorted(self._gpu_names))}" if n_gpu else "",
                 sum(1 for n in ray.nodes() if n.get("Alive")))

    def _accelerated_on_gpu_nodes(self, specs: list[AnalyzerSpec], env: dict[str, Any]) -> set[str]:
        """The analyzers of ``specs`` that can use the GPUs on every GPU node of the cluster, each
        node judging with its own installation (:func:`accelerated_here`); the driver's judgment,
        with a warning, when the nodes do not answer."""
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        task = ray.remote(num_cpus=0, max_retries=0, runtime_env=env)(accelerated_here)
        refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                             ).remote(specs, "cuda:0")  # as a GPU actor sees its GPU
                for n in ray.nodes() if n.get("Alive") and n["Resources"].get("GPU", 0)]
        try:
            answers = ray.get(refs, timeout=GPU_CHECK_S)
        except Exception as exc:  # noqa: BLE001 - a timeout, a node lost, a failed import there
            log.warning("the Ray GPU nodes did not say which analyzers can use their GPUs (%s); "
                        "judged from this machine's installation",
                        describe(exc).splitlines()[0])  # Ray's errors carry whole tracebacks
            return accelerated_names(specs, "cuda:0")
        names = set.intersection(*(set(a) for _, a in answers)) if answers else set()
        for node, accelerated in answers:
            if set(accelerated) != names:
                log.info("node %s could run %s on its GPU, but not every GPU node can: run on the "
                         "CPU actors", node, ", ".join(sorted(set(accelerated) - names)))
        return names

    # -- start-up check ------------------------------------------------------------------------
    def check_access(self, path: str) -> None:
        """Raise :class:`ConfigError` naming every node that cannot read ``path``."""
        ray = self._ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        task = ray.remote(num_cpus=0, max_retries=0)(read_check)
        refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                             ).remote(path)  # the job's environment: a node's idle worker answers
                for n in ray.nodes() if n.get("Alive") and (n["Resources"].get("CPU", 0) or
                                                            n["Resources"].get("GPU", 0))]
        try:
            answers = ray.get(refs, timeout=ACCESS_CHECK_S)
        except ray.exceptions.GetTimeoutError:
            raise ConfigError(f"the Ray nodes did not answer within {ACCESS_CHECK_S:.0f} s whether "
                              f"they can read the dataset") from None
        bad = [f"node {node}: {err}" for node, err in answers if err]
        if bad:
            raise ConfigError(f"every Ray node must see the dataset at the same path (shared "
                              f"storage); cannot read {path} on " + "; ".join(bad))

    # -- executor interface --------------------------------------------------------------------
    def submit(self, units: list[WorkUnit]) -> "Future[list[dict[str, AnalyzerResult]]]":
        # actors run in Ray's session folder, not in the driver's: paths must be absolute
        units = [u if u.track.dir.is_absolute() else
                 replace(u, track=replace(u.track, dir=u.track.dir.absolute(),
                                          mix=u.track.mix.absolute())) for u in units]
        if not self._checked and units:
            self._checked = True
            self.check_access(str(units[0].track.mix))
        if self._gpu is None or not any(set(u.due) & self._gpu_names for u in units):
            return self._pool.submit(units)
        outer: Future = Future()
        # a GPU actor that decodes a track with CPU work still due hands it on (the decoded mix and
        # the stems it made, in memory), so the CPU actor decodes nothing again
        gpu_units = [replace(u, due=tuple(n for n in u.due if n in self._gpu_names),
                             hand_on=any(n not in self._gpu_names for n in u.due)) for u in units]
        self._gpu.submit(gpu_units).add_done_callback(lambda f: self._after_gpu(f, units, outer))
        return outer

    def _after_gpu(self, gpu_future: Future, units: list[WorkUnit], outer: Future) -> None:
        """Hand the CPU part of each track, with the track decoded by the GPU actor, to the CPU
        pool, then combine both pools' results."""

        def cpu_units(gpu_results: list[dict[str, AnalyzerResult]]) -> list[WorkUnit]:
            handed = [res.pop(HANDOFF, None) for res in gpu_results]
            return [replace(u, due=tuple(n for n in u.due if n not in self._gpu_names),
                            ready=u.ready | ok_names(res), decoded=d)
                    for u, res, d in zip(units, gpu_results, handed)]

        then_cpu(gpu_future, cpu_units, self._pool.submit, outer)

    @property
    def deaths(self) -> int:
        """Actors lost so far (both pools)."""
        return self._pool.deaths + (self._gpu.deaths if self._gpu else 0)

    def node_report(self) -> dict[str, dict[str, float]]:
        """Per node address: tracks computed there (a track with GPU and CPU work counts on both
        nodes) and the actors' busy seconds (decoding included)."""
        return {node: {"tracks": int(s["tracks"]), "busy_s": round(s["busy_s"], 3)}
                for node, s in sorted(self.nodes.items())}

    def shutdown(self, *, cancel: bool = False) -> None:
        for sup in (self._gpu, self._pool):  # the GPU pool first: it feeds the CPU pool
            if sup is not None:
                sup.shutdown(cancel=cancel)
        try:
            self._ray.kill(self._board)
        except Exception:  # noqa: BLE001
            pass
        if self._owns_ray:
            self._ray.shutdown()
