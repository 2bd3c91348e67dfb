"""One device resolver for the whole run.

A user names a device as ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``rocm``, ``rocm:N`` (ROCm builds of
PyTorch answer through ``torch.cuda``, so these are the same devices) or ``mps``. :func:`resolve` turns
that into a :class:`Device` once, in configuration, before any work starts: a malformed name or a
device this machine does not have is a :class:`~mirflow.core.errors.ConfigError` that says what the
machine has. Executors and analyzers receive the resolved device; nothing else probes hardware.

PyTorch is imported only when an accelerator has to be looked up (``auto`` or an explicit
accelerator), never for ``cpu``; without PyTorch installed ``auto`` is the CPU. On Linux, ``auto``
is the CPU without importing PyTorch (seconds) when the machine has no GPU device node at all
(:func:`accelerator_possible`).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache

from .errors import ConfigError

#: Accepted spellings, for messages.
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, rocm, rocm:N, mps"

_PATTERN = re.compile(r"^(auto|cpu|gpu|cuda|rocm|mps)(?::(\d+))?$")


@dataclass(frozen=True)
class Device:
    """A resolved device: ``kind`` is ``cpu``, ``cuda`` (NVIDIA or AMD ROCm) or ``mps``."""

    kind: str
    index: int | None = None
    name: str = ""  # e.g. "NVIDIA H200", for messages and reports

    @property
    def accelerator(self) -> bool:
        return self.kind != "cpu"

    @property
    def torch(self) -> str:
        """The string PyTorch takes (``cpu``, ``cuda:0``, ``mps``)."""
        if self.kind == "cuda":
            return f"cuda:{self.index or 0}"
        return self.kind

    def __str__(self) -> str:
        return self.torch


CPU = Device("cpu")


#: Device nodes one of which exists wherever PyTorch can reach a GPU on Linux: the NVIDIA driver's
#: control node (containers given a GPU mount it too), the ROCm kernel driver, WSL2's GPU bridge.
ACCELERATOR_NODES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def accelerator_possible() -> bool:
    """Whether PyTorch might find an accelerator here, told without importing it (a cheap check
    that saves seconds on CPU-only machines): False on Linux when none of
    :data:`ACCELERATOR_NODES` exists; True elsewhere (macOS may have MPS; other systems cannot tell
    without asking PyTorch)."""
    if sys.platform.startswith("linux"):
        return any(os.path.exists(node) for node in ACCELERATOR_NODES)
    return True


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


@lru_cache(maxsize=1)
def available() -> tuple[Device, ...]:
    """Every device this machine offers (the CPU first). Imports PyTorch when installed."""
    devices = [CPU]
    torch = _torch()
    if torch is None:
        return tuple(devices)
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken driver means no usable GPU, not a crash
        count = 0
    for i in range(count):
        try:
            name = torch.cuda.get_device_name(i)
        except Exception:  # noqa: BLE001
            name = ""
        devices.append(Device("cuda", i, name))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append(Device("mps", None, "Apple GPU"))
    return tuple(devices)


def describe_available() -> str:
    """``"cpu, cuda:0 (NVIDIA H200)"``: what this machine has, for error messages."""
    parts = [str(d) + (f" ({d.name})" if d.name else "") for d in available()]
    if _torch() is None:
        parts.append("no accelerator can be used without PyTorch")
    return ", ".join(parts)


def parse(requested: str) -> tuple[str, int | None]:
    """Check the spelling of a device name: ``("cuda", 1)`` for ``cuda:1``; ``ConfigError`` if malformed."""
    text = (requested or "auto").strip().lower()
    m = _PATTERN.match(text)
    if not m or (m.group(2) is not None and m.group(1) in ("auto", "cpu", "mps")):
        raise ConfigError(f"unknown device {requested!r}; use one of {DEVICE_CHOICES}")
    kind = {"gpu": "cuda", "rocm": "cuda"}.get(m.group(1), m.group(1))
    if m.group(1) == "gpu" and m.group(2) is None:
        kind = "auto-accelerator"
    return kind, (int(m.group(2)) if m.group(2) is not None else None)


def resolve(requested: str = "auto") -> Device:
    """The device for ``requested``; ``auto`` prefers CUDA/ROCm GPU 0, then MPS, then the CPU.

    Raises :class:`ConfigError` for a malformed name or one this machine does not have, with the
    list of what it has.
    """
    kind, index = parse(requested)
    if kind == "cpu":
        return CPU
    if kind == "auto" and not accelerator_possible():
        return CPU
    devices = available()
    if kind == "auto":
        return next((d for d in devices if d.accelerator), CPU)
    if kind == "auto-accelerator":
        found = next((d for d in devices if d.accelerator), None)
    else:
        found = next((d for d in devices
                      if d.kind == kind and (index is None or d.index == index)), None)
    if found is None:
        raise ConfigError(f"device {requested!r} is not available on this machine; "
                          f"it has: {describe_available()}")
    return found
