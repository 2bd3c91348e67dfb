"""Chaining two pools: the GPU analyzers of a chunk in one, the rest of each track in the other.

Both the local executor (GPU lane + CPU workers) and the Ray executor (GPU actors + CPU actors)
run a chunk's GPU analyzers first and hand what remains of each track to the CPU pool; the
coordinator sees one future per chunk whose results hold both pools' records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from concurrent.futures import Future

from ..core.sidecar import AnalyzerResult
from ..run.worker import AnalyzerSpec, WorkUnit

log = logging.getLogger(__name__)

Results = list[dict[str, AnalyzerResult]]


def then_cpu(gpu_future: Future, cpu_units: Callable[[Results], list[WorkUnit]],
             submit_cpu: Callable[[list[WorkUnit]], Future], outer: Future) -> None:
    """When ``gpu_future`` is done: build each track's CPU unit from its GPU results, submit them,
    and resolve ``outer`` with both pools' results merged per track (the GPU results alone when no
    CPU work remains). Any failure on the way resolves ``outer`` with that exception, which the
    coordinator records per track."""
    try:
        gpu_results = gpu_future.result()
        units = cpu_units(gpu_results)
        if not any(u.due for u in units):
            outer.set_result(gpu_results)
            return
        cpu_future = submit_cpu(units)
    except BaseException as exc:  # noqa: BLE001 - reported per track by the coordinator
        outer.set_exception(exc)
        return

    def combine(f: Future) -> None:
        try:
            outer.set_result([{**g, **c} for g, c in zip(gpu_results, f.result())])
        except BaseException as exc:  # noqa: BLE001
            outer.set_exception(exc)

    cpu_future.add_done_callback(combine)


def ok_names(results: dict[str, AnalyzerResult]) -> set[str]:
    """The analyzers that succeeded in ``results`` (they count as ready for the next pool)."""
    return {n for n, r in results.items() if r.status == "ok"}


def accelerated_names(specs: list[AnalyzerSpec], device: str) -> set[str]:
    """The analyzers of ``specs`` that would compute on accelerator ``device`` with this process's
    installation (``Analyzer.accelerated``: an ONNX Runtime GPU provider, the analyzer's own
    ``device`` parameter)."""
    return {s.name for s in specs if s.build().accelerated(device)}


def accelerated_specs(gpu_specs: list[AnalyzerSpec], accelerated: Collection[str], *,
                      gpus: str) -> list[AnalyzerSpec]:
    """The GPU analyzers of ``gpu_specs`` named in ``accelerated`` (:func:`accelerated_names`,
    judged where the accelerators are); the others (classifiers without an ONNX Runtime GPU
    provider, an analyzer whose own ``device`` is ``cpu``) are logged and left to the CPU pool,
    where several run at once instead of one after another beside the model. ``gpus`` names the
    accelerators in the message."""
    on_cpu = [s.name for s in gpu_specs if s.name not in accelerated]
    if on_cpu:
        log.info("%s cannot use %s: run on the CPU pool", ", ".join(on_cpu), gpus)
    return [s for s in gpu_specs if s.name not in on_cpu]
