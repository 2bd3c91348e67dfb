"""A fault-injection analyzer plugin, loaded through ``MIRFLOW_PLUGINS=mirflow_faults``.

Chosen by the track folder's name, ``fault`` (a CPU analyzer) and ``fault_gpu`` (a "gpu" one, for the
local executor's GPU lane) do to their own process what broken third-party code does:

- ``...-sigkill...``: SIGKILL itself (as the kernel's OOM killer would);
- ``...-segv...``: a segmentation fault in a C call (``ctypes.string_at(0)``);
- ``...-exit...``: ``os._exit(3)``;
- ``...-hang...``: sleep forever (a stuck decoder or driver).

``fault_side`` does the same, after half a second, as an analyzer that may run beside others.

Every other track gets a real (tiny) feature: the number of frames. Each call is logged with the
process id to ``$MIRFLOW_PROBE_LOG`` (as the probe plugin does) so tests can count executions.
``params["setup_fault"]`` makes ``setup`` itself crash the same way (``"sigkill"``...).
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from typing import Any, ClassVar

from mirflow.analyzers import register
from probe_log import log_event as _log
from mirflow.analyzers.base import Analyzer, AnalyzerParams

MODES = ("sigkill", "segv", "exit", "hang")




def misbehave(mode: str) -> None:
    """Do what ``mode`` says to this process (returns only for an unknown mode)."""
    if mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
    elif mode == "segv":
        ctypes.string_at(0)  # reads address 0 in C: SIGSEGV
    elif mode == "exit":
        os._exit(3)
    elif mode == "hang":
        while True:
            time.sleep(3600)


def mode_of(name: str) -> str | None:
    for mode in MODES:
        if f"-{mode}" in name:
            return mode
    return None


class FaultParams(AnalyzerParams):
    setup_fault: str = ""


@register
class Fault(Analyzer):
    name: ClassVar[str] = "fault"
    outputs: ClassVar[tuple[str, ...]] = ("fault_frames",)
    Params = FaultParams
    tag: ClassVar[str] = "fault"

    def setup(self, device: str = "cpu") -> None:
        _log(f"setup-{self.tag} {os.getpid()}")
        if self.params["setup_fault"]:
            misbehave(self.params["setup_fault"])

    def analyze(self, ctx) -> dict[str, Any]:
        track = ctx.path.parent.name
        _log(f"analyze-{self.tag} {os.getpid()} {track}")
        mode = mode_of(track)
        if mode:
            misbehave(mode)
        return {f"{self.tag}_frames": int(ctx.audio.frames)}


@register
class FaultGPU(Fault):
    name: ClassVar[str] = "fault_gpu"
    device: ClassVar[str] = "gpu"
    outputs: ClassVar[tuple[str, ...]] = ("fault_gpu_frames",)
    batchable: ClassVar[bool] = True
    tag: ClassVar[str] = "fault_gpu"


@register
class FaultSide(Fault):
    """``fault`` that may run beside other analyzers of its track (``concurrent``); it misbehaves
    after ``SIDE_DELAY`` s, while a neighbour (``probe_side``) is still running."""

    name: ClassVar[str] = "fault_side"
    outputs: ClassVar[tuple[str, ...]] = ("fault_side_frames",)
    concurrent: ClassVar[bool] = True
    tag: ClassVar[str] = "fault_side"

    def analyze(self, ctx) -> dict[str, Any]:
        time.sleep(SIDE_DELAY)
        return super().analyze(ctx)


#: Seconds ``fault_side`` waits before it misbehaves.
SIDE_DELAY = 0.5


@register
class FaultMissing(Analyzer):
    """Never available: stands for an analyzer whose model is not installed."""

    name: ClassVar[str] = "fault_missing"
    outputs: ClassVar[tuple[str, ...]] = ("fault_missing_value",)

    def unavailable_reason(self) -> str | None:
        return "its model is not installed (get it with `mirflow models download fault-model`)"

    def analyze(self, ctx) -> dict[str, Any]:  # pragma: no cover - never runs
        raise AssertionError("an unavailable analyzer was run")
