"""Sidecars: atomic writes, merging, ownership of keys, JSON conversion."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mirflow.core.sidecar import AnalyzerResult, SidecarCorrupt, merge, read, to_jsonable, write_atomic


def test_write_atomic_leaves_no_temporaries_and_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "t.INFO"
    write_atomic(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        write_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}  # the old content is intact
    assert [p.name for p in tmp_path.iterdir()] == ["t.INFO"]


def test_to_jsonable_converts_numpy_and_non_finite() -> None:
    out = to_jsonable({"a": np.float32(1.5), "b": np.arange(3), "c": math.nan, "d": [np.inf, 1],
                       "e": np.bool_(True), "f": np.int64(7)})
    assert out == {"a": 1.5, "b": [0, 1, 2], "c": None, "d": [None, 1], "e": True, "f": 7}


def test_merge_replaces_own_keys_keeps_user_keys_and_drops_stale_features(tmp_path: Path) -> None:
    path = tmp_path / "t.INFO"
    path.write_text(json.dumps({"title": "mine", "old_key": 1}))
    merge(path, {"x": AnalyzerResult("ok", {"old_key": 2, "bpm": 120.0}, params="p")})
    assert read(path)["old_key"] == 2 and read(path)["title"] == "mine"
    merge(path, {"x": AnalyzerResult("ok", {"bpm": 121.0}, params="p")})
    data = read(path)
    assert "old_key" not in data and data["bpm"] == 121.0  # keys x no longer writes are removed
    merge(path, {"x": AnalyzerResult("error", error="DecodeError: boom", params="p")})
    data = read(path)
    assert "bpm" not in data and data["_mirflow"]["x"]["status"] == "error"  # no stale value
    assert "keys" not in data["_mirflow"]["x"] and data["title"] == "mine"
    merge(path, {"x": AnalyzerResult("ok", {"bpm": 122.0}, params="p")})
    merge(path, {"x": AnalyzerResult("blocked", note="requires stems", params="p")})
    assert "bpm" not in read(path) and read(path)["title"] == "mine"


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_sidecars_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    import os

    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "new.INFO", {"a": 1})
        (tmp_path / "old.INFO").write_text("{}")
        os.chmod(tmp_path / "old.INFO", 0o600)
        merge(tmp_path / "old.INFO", {"x": AnalyzerResult("ok", {"a": 1})})
    finally:
        os.umask(old)
    assert (tmp_path / "new.INFO").stat().st_mode & 0o777 == mode
    assert (tmp_path / "old.INFO").stat().st_mode & 0o777 == mode  # rewritten: the umask's mode


def test_corrupt_sidecars(tmp_path: Path) -> None:
    path = tmp_path / "t.INFO"
    path.write_text("[1, 2]")
    with pytest.raises(SidecarCorrupt):
        read(path)
    kept = merge(path, {"x": AnalyzerResult("ok", {"a": 1})})
    assert kept is not None and kept.read_text() == "[1, 2]"
    assert read(path)["a"] == 1
