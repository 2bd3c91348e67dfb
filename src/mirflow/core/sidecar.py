"""Sidecars: the JSON file next to each track holding its features and mirflow's records.

Flat feature keys (``lufs``, ``bpm``, ``drums_lufs``...) sit at the top level next to any keys the
user added; mirflow owns only the keys its analyzers wrote (listed per analyzer in its record) and
the reserved ``_mirflow`` block::

    "_mirflow": {
      "source": {"size": 123, "mtime_ns": 1700000000000000000},
      "loudness": {"version": 1, "params": "3f2a...", "status": "ok", "seconds": 0.41,
                   "at": "2026-11-24T10:00:00Z", "keys": ["lufs", ...]},
      "tonal": {"version": 1, "params": "9c1e...",
                "parameters": {"profile": "kostka-payne", "silence_db": -60.0, ...}, ...}
    }

``params`` is a hash of the parameters that affect an analyzer's outputs (a change makes the pair
due again); ``parameters`` holds the same parameters readably, so a user can tell e.g. which key
profile produced a key estimate.

Writes are atomic (temporary file in the same folder, flush, fsync, ``os.replace``) and are done by
the process holding the track's lease, merging with what is on disk at that moment.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SidecarCorrupt, SidecarError
from .fsutil import atomic_write_bytes

log = logging.getLogger(__name__)

RESERVED = "_mirflow"


def read(path: Path) -> dict[str, Any]:
    """The sidecar's content; ``{}`` when it does not exist. Raises :class:`SidecarCorrupt`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SidecarError(f"cannot read sidecar {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SidecarCorrupt(f"{path.name} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise SidecarCorrupt(f"{path.name} holds a JSON {type(data).__name__}, not an object")
    return data


def records(data: dict[str, Any]) -> dict[str, Any]:
    """The ``_mirflow`` block of a sidecar (empty when absent or malformed)."""
    block = data.get(RESERVED)
    return block if isinstance(block, dict) else {}


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays and non-finite floats into plain JSON values (NaN/inf -> None)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (same-folder temp file, fsync, rename)."""
    text = json.dumps(to_jsonable(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def quarantine(path: Path) -> Path:
    """Rename a corrupt sidecar aside (``<name>.corrupt-<UTC time>``) and return the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    os.replace(path, target)
    log.warning("sidecar %s was not valid JSON; kept it as %s", path, target.name)
    return target


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class AnalyzerResult:
    """The outcome of one analyzer on one track, as the engine hands it to :func:`merge`."""

    status: str  # "ok" | "error" | "blocked"
    features: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    note: str | None = None
    seconds: float = 0.0  # the analyzer's compute, without decoding the mix and shared steps
    version: int = 1
    params: str = ""
    #: Seconds this analyzer's call spent decoding the mix (it was the first to read it); not in
    #: ``seconds`` and not in the sidecar: the timing report shows decoding on its own.
    decode_seconds: float = 0.0
    #: Seconds this call spent computing shared steps of the mix (``TrackContext.shared_seconds``),
    #: by step, and the steps it read (``uses``): like decoding, apart from ``seconds``, not in the
    #: sidecar; the timing report and the rates count each step once per track.
    shared_seconds: dict[str, float] = field(default_factory=dict)
    uses: tuple[str, ...] = ()
    #: The output-affecting parameters (``Analyzer.hashed_params()``), stored readably.
    parameters: dict[str, Any] | None = None
    fingerprint: str | None = None
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"version": self.version, "params": self.params, "status": self.status,
                               "seconds": round(self.seconds, 4), "at": utc_now()}
        if self.parameters is not None:
            rec["parameters"] = to_jsonable(self.parameters)
        if self.error:
            rec["error"] = self.error
        if self.note:
            rec["note"] = self.note
        if self.warnings:
            rec["warnings"] = self.warnings
        if self.fingerprint is not None:
            rec["inputs"] = self.fingerprint
        if self.status == "ok":
            rec["keys"] = sorted(self.features)
        rec.update(self.extra)
        return rec


def merge(path: Path, results: dict[str, AnalyzerResult], *,
          source: dict[str, int] | None = None) -> Path | None:
    """Merge analyzer results into the sidecar at ``path`` (caller holds the track lease).

    For a successful analyzer the keys it wrote last time are removed, its new features added and
    its record replaced. A failed or blocked analyzer gets a new record with the reason, and the
    features of an earlier success are removed: a table never shows a stale value beside a failure.
    User keys are never touched. A corrupt sidecar is renamed aside first; its new path is returned.
    """
    quarantined = None
    try:
        data = read(path)
    except SidecarCorrupt:
        quarantined = quarantine(path)
        data = {}
    block = dict(records(data))
    for name, res in results.items():
        old = block.get(name, {})
        for key in old.get("keys", []) if isinstance(old, dict) else []:
            data.pop(key, None)  # replaced by the new values, or stale beside a failure
        if res.status == "ok":
            data.update(res.features)
        block[name] = res.record()
    if source is not None:
        block["source"] = source
    data[RESERVED] = block
    write_atomic(path, data)
    return quarantined
