"""Planning: which (track, analyzer) pairs are due.

A pair is due when it has no record, the source file changed, the analyzer's version or params
changed, its output files are missing or incomplete, its extra inputs changed (e.g. new stems), an
analyzer it comes after is due, the user forces it, or (with ``retry_failed``) it failed before;
unless an input it needs is missing and no analyzer due before it will make it (blocked: e.g. stems
without stem files or separation).
The reason is kept in words a user can act on (``parameter changed: shifts 0 -> 1``,
``outputs missing: drums.flac``); ``mirflow plan`` and ``mirflow status`` show them.
Planning reads only sidecars and file metadata: it decodes nothing.
"""

from __future__ import annotations

import json
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
    #: Blocked, found at planning, where the sidecar does not say so yet (a new track, a new
    #: version...): a run that processes the track for other analyzers records it.
    unrecorded: bool = False

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
        elif blocked := analyzer.blocked_reason(track.dir, frozenset(n for n, d in out.items() if d.due)):
            decision = Decision(BLOCKED, blocked, unrecorded=True)
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
        return parameter_change(analyzer, rec)
    status = rec.get("status")
    fingerprint = analyzer.input_fingerprint(track.dir)
    if fingerprint is not None and rec.get("inputs") != fingerprint:
        return "inputs changed"
    if status == "error":
        return "failed before, retried" if retry_failed else Decision(FAILED, str(rec.get("error", "")))
    if status == "blocked":
        return Decision(BLOCKED, str(rec.get("note") or rec.get("error") or ""))
    if status != "ok":
        return f"unknown status {status!r}"
    if not analyzer.outputs_valid(track.dir, rec):
        return _outputs_problem(analyzer, track, rec)
    return None


def _plain(value: Any) -> Any:
    """``value`` as JSON would store it (tuples as lists, paths as strings), for comparisons."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def parameter_change(analyzer: Analyzer, rec: dict[str, Any]) -> str:
    """Which parameters changed, from the readable ``parameters`` a record keeps beside its hash
    (``"parameter changed: shifts 0 -> 1"``); just ``"parameters changed"`` for older records."""
    old = rec.get("parameters")
    if not isinstance(old, dict):
        return "parameters changed"
    new = _plain(analyzer.hashed_params())
    old = _plain(old)
    changed = [f"{k} {_short(old.get(k, '(unset)'))} -> {_short(new.get(k, '(unset)'))}"
               for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if not changed:
        return "parameters changed"
    return ("parameter changed: " if len(changed) == 1 else "parameters changed: ") + "; ".join(changed)


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _outputs_problem(analyzer: Analyzer, track: Track, rec: dict[str, Any]) -> str:
    """``outputs missing: drums.flac`` when files are gone, else ``outputs incomplete`` (e.g. a
    stem truncated by an interrupted copy, or unreadable)."""
    try:
        missing = [p.name for p in analyzer.output_files(track.dir, rec) if not p.is_file()]
    except OSError:
        missing = []
    if missing:
        return "outputs missing: " + ", ".join(missing)
    return "outputs incomplete (truncated or unreadable)"
