"""Planning: which (track, analyzer) pairs are due.

A pair is due when it has no record, the source file changed, the analyzer's version or params
changed, its output files are missing or incomplete, its extra inputs changed (e.g. new stems), an
analyzer it comes after is due, the user forces it, or (with ``retry_failed``) it failed before.
Planning reads only sidecars and file metadata: it decodes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..analyzers.base import Analyzer
from ..core.dataset import Track
from ..core.sidecar import SidecarError, read, records

#: States a pair can be in after planning.
DUE, DONE, FAILED, BLOCKED, UNAVAILABLE = "due", "done", "failed", "blocked", "unavailable"


@dataclass(frozen=True)
class Decision:
    """The plan for one analyzer on one track: its ``state`` and, when due, why."""

    state: str
    reason: str = ""

    @property
    def due(self) -> bool:
        return self.state == DUE


def source_fingerprint(track: Track) -> dict[str, int]:
    """Size and modification time of the mix: a changed source makes everything due."""
    st = os.stat(track.mix)
    return {"size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def read_for_plan(track: Track) -> dict[str, Any]:
    """The sidecar for planning; a corrupt or unreadable one counts as empty (it is quarantined
    when results are written)."""
    try:
        return read(track.sidecar)
    except SidecarError:
        return {}


def decide(track: Track, data: dict[str, Any], analyzers: dict[str, Analyzer], *,
           unavailable: dict[str, str] | None = None, force: frozenset[str] = frozenset(),
           retry_failed: bool = False) -> dict[str, Decision]:
    """Decide every analyzer of ``analyzers`` (given in run order) for ``track``."""
    unavailable = unavailable or {}
    recs = records(data)
    try:
        source_changed = recs.get("source") not in (None, source_fingerprint(track))
    except OSError:
        source_changed = True
    out: dict[str, Decision] = {}
    for name, analyzer in analyzers.items():
        reason = _due_reason(track, analyzer, recs.get(name), force=name in force,
                             source_changed=source_changed, retry_failed=retry_failed)
        upstream = [d for d in (*analyzer.requires, *analyzer.after) if d in out and out[d].due]
        if reason is None and upstream:
            reason = f"{upstream[0]} is due"
        if isinstance(reason, Decision):
            decision = reason
        elif reason is None:
            decision = Decision(DONE)
        elif name in unavailable:
            decision = Decision(UNAVAILABLE, unavailable[name])
        else:
            decision = Decision(DUE, reason)
        out[name] = decision
    return out


def _due_reason(track: Track, analyzer: Analyzer, rec: Any, *, force: bool, source_changed: bool,
                retry_failed: bool) -> str | Decision | None:
    """Why the pair is due, a terminal :class:`Decision` (failed/blocked), or ``None`` when done."""
    if force:
        return "forced"
    if not isinstance(rec, dict):
        return "new"
    if source_changed:
        return "source changed"
    if rec.get("version") != analyzer.version:
        return f"version {rec.get('version')} -> {analyzer.version}"
    if rec.get("params") != analyzer.params_hash():
        return "parameters changed"
    status = rec.get("status")
    fingerprint = analyzer.input_fingerprint(track.dir)
    if fingerprint is not None and rec.get("inputs") != fingerprint:
        return "inputs changed"
    if status == "error":
        return "retry" if retry_failed else Decision(FAILED, str(rec.get("error", "")))
    if status == "blocked":
        return Decision(BLOCKED, str(rec.get("note") or rec.get("error") or ""))
    if status != "ok":
        return f"unknown status {status!r}"
    if not analyzer.outputs_valid(track.dir, rec):
        return "outputs missing or incomplete"
    return None
