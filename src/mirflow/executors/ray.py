"""The Ray executor: the same analyzers as Ray actors, on an existing Ray cluster.

Each actor owns one :class:`~mirflow.run.worker.Worker` (analyzers set up once per actor) and processes
work units sent by the coordinator, which keeps holding the track leases and writing the sidecars.
Actors get ``num_gpus=1`` when a GPU analyzer is in the run and ``--device`` asks for or allows a GPU
and the cluster has one; CPU actors are pinned to one thread each, like the local executor.
Every node must see the dataset at the same path (a shared file system).

    mirflow run /shared/dataset --executor ray --ray-address auto --workers 32
"""

from __future__ import annotations

import itertools
import logging
from concurrent.futures import Future
from typing import Any

from ..run.worker import AnalyzerSpec, WorkUnit, Worker
from ..core.errors import ConfigError
from ..core.sidecar import AnalyzerResult
from .local import THREAD_ENV_VARS

log = logging.getLogger(__name__)


class _Actor:
    def __init__(self, specs: list[AnalyzerSpec], device: str) -> None:
        from threadpoolctl import threadpool_limits

        self._limits = threadpool_limits(limits=1)
        self.worker = Worker(specs, device=device, threads=1)

    def process(self, units: list[WorkUnit]) -> list[dict[str, AnalyzerResult]]:
        return self.worker.process(units)


class RayExecutor:
    """Round-robins work units over ``workers`` Ray actors; see the module docstring."""

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
        actor_cls = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0)(_Actor)
        count = max(1, int(min(workers, gpus)) if gpus else int(workers))
        self._actors = [actor_cls.remote(specs, device) for _ in range(count)]
        self._next = itertools.cycle(self._actors)
        self.capacity = count * 2

    def submit(self, units: list[WorkUnit]) -> "Future[list[dict[str, AnalyzerResult]]]":
        ref: Any = next(self._next).process.remote(units)
        return ref.future()

    def shutdown(self, *, cancel: bool = False) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        if self._owns_ray:
            self._ray.shutdown()
