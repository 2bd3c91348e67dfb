"""Planning: due reasons for every kind of change, with analyzer dependencies."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from conftest import sine, write_track
from mirflow.analyzers.base import Analyzer
from mirflow.core.dataset import discover
from mirflow.run.plan import decide, source_fingerprint


class A(Analyzer):
    name: ClassVar[str] = "a"
    version: ClassVar[int] = 1
    default_params: ClassVar[dict[str, Any]] = {"x": 1}

    def output_files(self, track_dir: Path, record: dict) -> list[Path]:
        return [track_dir / f for f in record.get("files", [])]


class B(Analyzer):
    name: ClassVar[str] = "b"
    after: ClassVar[tuple[str, ...]] = ("a",)


def _rec(an: Analyzer, **kw: Any) -> dict:
    return {"version": an.version, "params": an.params_hash(), "status": "ok", "keys": [], **kw}


def test_decisions(dataset: Path) -> None:
    write_track(dataset, "t", sine())
    track = discover(dataset)[0]
    a, b = A(), B()
    ans = {"a": a, "b": b}
    src = source_fingerprint(track)
    assert {n: d.reason for n, d in decide(track, {}, ans).items()} == {"a": "new", "b": "new"}
    done = {"_mirflow": {"source": src, "a": _rec(a), "b": _rec(b)}}
    assert all(d.state == "done" for d in decide(track, done, ans).values())
    # params change on a -> a due, and b (after a) due too
    d = decide(track, done, {"a": A(x=2), "b": b})
    assert d["a"].reason == "parameters changed" and d["b"].reason == "a is due"
    # missing output file
    missing = {"_mirflow": {"source": src, "a": _rec(a, files=["drums.flac"]), "b": _rec(b)}}
    assert decide(track, missing, ans)["a"].reason == "outputs missing: drums.flac"
    (track.dir / "drums.flac").write_bytes(b"")  # present: the default check then passes
    assert decide(track, missing, ans)["a"].state == "done"
    # failure: terminal unless retried
    failed = {"_mirflow": {"source": src, "a": {**_rec(a), "status": "error", "error": "E: x"}, "b": _rec(b)}}
    assert decide(track, failed, ans)["a"].state == "failed"
    assert decide(track, failed, ans, retry_failed=True)["a"].reason == "failed before, retried"
    assert decide(track, done, ans, force=frozenset({"b"}))["b"].reason == "forced"
    # unavailable analyzers are never due, but done work stays done
    assert decide(track, {}, ans, unavailable={"a": "no model"})["a"].state == "unavailable"
    assert decide(track, done, ans, unavailable={"a": "no model"})["a"].state == "done"
    # changed source
    stale = {"_mirflow": {"source": {"size": 1, "mtime_ns": 1}, "a": _rec(a), "b": _rec(b)}}
    assert decide(track, stale, ans)["a"].reason == "source changed"


def test_parameter_change_names_the_parameter(dataset: Path) -> None:
    """With the readable ``parameters`` beside the hash, the reason says what changed."""
    write_track(dataset, "t", sine())
    track = discover(dataset)[0]
    a = A()
    src = source_fingerprint(track)
    rec = {**_rec(a), "parameters": {"x": 1}}
    d = decide(track, {"_mirflow": {"source": src, "a": rec}}, {"a": A(x=3)})
    assert d["a"].reason == "parameter changed: x 1 -> 3"
    # older records without readable parameters still say that parameters changed
    d = decide(track, {"_mirflow": {"source": src, "a": _rec(a)}}, {"a": A(x=3)})
    assert d["a"].reason == "parameters changed"


def test_truncated_output_is_incomplete(dataset: Path) -> None:
    class C(A):
        name: ClassVar[str] = "c"

        def outputs_valid(self, track_dir: Path, record: dict) -> bool:
            return False  # e.g. a stem shorter than recorded

    write_track(dataset, "t", sine())
    track = discover(dataset)[0]
    c = C()
    (track.dir / "drums.flac").write_bytes(b"")
    data = {"_mirflow": {"source": source_fingerprint(track), "c": _rec(c, files=["drums.flac"])}}
    assert decide(track, data, {"c": c})["c"].reason == "outputs incomplete (truncated or unreadable)"


def test_stems_without_stem_files_or_separation_are_blocked_at_planning(dataset: Path) -> None:
    """What ``mirflow plan`` says matches what the run then does: stems with no stem file and no
    separation due are blocked (with the run's reason), not due."""
    from mirflow.analyzers.separation import SeparationAnalyzer
    from mirflow.analyzers.stems import NO_STEMS, StemsAnalyzer

    write_track(dataset, "t", sine())
    track = discover(dataset)[0]
    stems, sep = StemsAnalyzer(), SeparationAnalyzer()
    alone = decide(track, {}, {"stems": stems})["stems"]
    assert (alone.state, alone.reason) == ("blocked", NO_STEMS)
    unavailable = decide(track, {}, {"separation": sep, "stems": stems},
                         unavailable={"separation": "no weights"})
    assert unavailable["stems"].state == "blocked"
    assert decide(track, {}, {"separation": sep, "stems": stems})["stems"].reason == "new"
    assert decide(track, {}, {"stems": stems}, force=frozenset({"stems"}))["stems"].state == "blocked"
    (track.dir / "drums.flac").write_bytes(b"")  # a stem file of the user's: stems may run
    assert decide(track, {}, {"stems": stems})["stems"].reason == "new"
