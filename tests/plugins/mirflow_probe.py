"""A test analyzer, loaded through ``MIRFLOW_PLUGINS=mirflow_probe``.

It logs every ``setup`` and ``analyze`` call (with the process id) to ``$MIRFLOW_PROBE_LOG`` so tests
can count executions across processes, can sleep to keep tracks in flight, and fails on purpose
for tracks whose path contains ``params["fail_on"]``.
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

import numpy as np

from mirflow.analyzers import register
from probe_log import log_event as _log
from mirflow.analyzers.base import Analyzer
from mirflow.core.errors import AnalysisError




@register
class Probe(Analyzer):
    name: ClassVar[str] = "probe"
    version: ClassVar[int] = int(os.environ.get("MIRFLOW_PROBE_VERSION", "1"))
    outputs: ClassVar[tuple[str, ...]] = ("probe_frames", "probe_rms")
    default_params: ClassVar[dict[str, Any]] = {"sleep": 0.0, "fail_on": ""}

    def setup(self, device: str = "cpu") -> None:
        _log(f"setup {os.getpid()}")

    def analyze(self, ctx) -> dict[str, Any]:
        _log(f"analyze {os.getpid()} {ctx.path.parent.name}")
        if self.params["sleep"]:
            time.sleep(float(self.params["sleep"]))
        if self.params["fail_on"] and self.params["fail_on"] in str(ctx.path):
            raise AnalysisError("probe was told to fail on this track")
        y = ctx.audio.samples
        return {"probe_frames": int(y.shape[1]), "probe_rms": float(np.sqrt(np.mean(y ** 2)))}


@register
class ProbeGPU(Analyzer):
    """A 'gpu' analyzer for testing the GPU lane: writes a stem-like file next to the mix, after
    sleeping ``params["sleep"]`` seconds (a slow model)."""

    name: ClassVar[str] = "probe_gpu"
    device: ClassVar[str] = "gpu"
    outputs: ClassVar[tuple[str, ...]] = ("probe_gpu_pid",)
    batchable: ClassVar[bool] = True
    default_params: ClassVar[dict[str, Any]] = {"sleep": 0.0, "on_cpu": False}

    def accelerated(self, device: str) -> bool:
        """``on_cpu``, or ``PROBE_GPU_RUNTIME_MISSING`` in this process's environment: as an
        analyzer whose runtime has no GPU support (everywhere, or on this machine only)."""
        return not self.params["on_cpu"] and not os.environ.get("PROBE_GPU_RUNTIME_MISSING")

    def setup(self, device: str = "cpu") -> None:
        _log(f"setup-gpu {os.getpid()}")

    def analyze(self, ctx) -> dict[str, Any]:
        _log(f"analyze-gpu {os.getpid()} {ctx.path.parent.name}")
        if self.params["sleep"]:
            time.sleep(float(self.params["sleep"]))
        import soundfile as sf

        sf.write(ctx.path.parent / "probe.wav", ctx.audio.samples.T, ctx.sr)
        return {"probe_gpu_pid": os.getpid()}


def _blas_threads() -> int | None:
    """Threads of the BLAS library numpy uses, as ``threadpoolctl`` reads them from the library."""
    from threadpoolctl import threadpool_info

    counts = [i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(counts) if counts else None


@register
class ProbeThreads(Analyzer):
    """Records the elastic thread allowance this worker applied (:mod:`mirflow.core.threads`).

    Like a long analyzer it re-applies the allowance at natural points: it polls until the file
    ``<hold>/release-<track folder>`` exists (``params["hold"]``; no hold: once), and logs
    ``threads PID TRACK ALLOWANCE BLAS_THREADS`` each time what it applied changes; BLAS_THREADS is
    read back from the BLAS library, so the log shows what was applied, not only what was asked."""

    name: ClassVar[str] = "probe_threads"
    outputs: ClassVar[tuple[str, ...]] = ("probe_threads_allowance", "probe_threads_blas")
    default_params: ClassVar[dict[str, Any]] = {"hold": "", "limit_s": 120.0}

    def analyze(self, ctx) -> dict[str, Any]:
        from pathlib import Path

        from mirflow.core.threads import apply_thread_allowance

        track = ctx.path.parent.name
        release = Path(self.params["hold"]) / f"release-{track}" if self.params["hold"] else None
        last = None
        deadline = time.monotonic() + float(self.params["limit_s"])
        while True:
            now = (apply_thread_allowance(), _blas_threads())
            if now != last:
                _log(f"threads {os.getpid()} {track} {now[0]} {now[1]}")
                last = now
            if release is None or release.exists():
                break
            if time.monotonic() > deadline:
                raise AnalysisError(f"probe_threads: {release} never appeared")
            time.sleep(0.05)
        return {"probe_threads_allowance": now[0], "probe_threads_blas": now[1]}


@register
class ProbeSide(Probe):
    """``probe`` that may run beside other analyzers of its track (``concurrent``); sleeps 2 s."""

    name: ClassVar[str] = "probe_side"
    outputs: ClassVar[tuple[str, ...]] = ("probe_side_frames", "probe_side_rms")
    concurrent: ClassVar[bool] = True
    default_params: ClassVar[dict[str, Any]] = {"sleep": 2.0, "fail_on": ""}

    def analyze(self, ctx) -> dict[str, Any]:
        out = super().analyze(ctx)
        return {"probe_side_frames": out["probe_frames"], "probe_side_rms": out["probe_rms"]}
