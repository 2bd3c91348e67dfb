"""Compute precision for PyTorch models: what a device can run fast, decided once in ``setup()``.

A user asks for ``fp32``, ``fp16`` or ``bf16``; :func:`resolve_precision` says what will run on the
resolved device (:class:`mirflow.core.devices.Device`) and, when that differs, why. Reduced precision
pays only where the hardware computes it natively: fp16 on accelerators, bf16 on accelerators that
support it and on CPUs with native bf16 instructions (emulated bf16 on the CPU is slower than fp32, so
mirflow falls back to fp32 and says so).
"""

from __future__ import annotations

import platform
from pathlib import Path

from ..core.devices import Device

#: Precision names a user may ask for.
PRECISIONS = ("fp32", "fp16", "bf16")


def _cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (``/proc/cpuinfo``: ``flags`` on x86, ``Features`` on Arm)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU computes bfloat16 natively, and what says so.

    x86: the ``avx512_bf16`` or ``amx_bf16`` CPU flags; Arm: the ``bf16`` feature. PyTorch's own
    :func:`torch.backends.cpu.get_cpu_capability` reports only the vector width (``AVX512``), not
    bf16, so the flags are read directly.
    """
    flags = _cpu_flags()
    native = sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    if native:
        return True, "CPU flags " + ", ".join(native)
    if not flags:
        return False, f"cannot read CPU flags on {platform.system()} {platform.machine()}"
    return False, "no avx512_bf16 / amx_bf16 (x86) or bf16 (Arm) CPU flag"


def resolve_precision(precision: str, device: Device) -> tuple[str, str | None]:
    """The precision to run on ``device`` and, when it differs from ``precision``, why.

    fp16 needs an accelerator; bf16 needs a GPU that supports it or a CPU with native bf16. Imports
    PyTorch only to ask a CUDA/ROCm GPU about bf16.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return "fp32", None
    if device.kind == "cpu":
        if precision == "fp16":
            return "fp32", "fp16 is for accelerators; the CPU runs fp32 (use bf16 on CPUs with native bf16)"
        ok, why = cpu_bf16_support()
        if not ok:
            return "fp32", f"this CPU lacks native bf16 ({why}); running fp32 instead"
        return "bf16", None
    if device.kind == "cuda" and precision == "bf16":
        import torch

        with torch.cuda.device(device.index or 0):
            supported = torch.cuda.is_bf16_supported()
        if not supported:
            return "fp32", f"GPU {device.name or device} does not support bf16; running fp32"
    return precision, None


__all__ = ["PRECISIONS", "cpu_bf16_support", "resolve_precision"]
