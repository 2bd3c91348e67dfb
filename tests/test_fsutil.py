"""Atomic writes through a temporary name: whole files or none, never a leftover temporary."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mirflow.core.fsutil import TMP_PREFIX, atomic_path, atomic_write_bytes


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_atomic_path_renames_a_complete_file_with_the_usual_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "mix.flac"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(TMP_PREFIX)
        assert tmp.suffix == ".flac"  # soundfile chooses the format from it
        sf.write(tmp, np.zeros(4410, np.float32), 44100)
        assert not target.exists()
    assert sf.info(target).frames == 4410
    assert _leftovers(target.parent) == []
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    atomic_write_bytes(target, b"old\n")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half a ta")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old\n"
    assert _leftovers(tmp_path) == []


def test_atomic_path_refuses_a_writer_that_wrote_nothing(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    with pytest.raises(FileNotFoundError):
        with atomic_path(target) as tmp:
            tmp.unlink()  # e.g. a child process that removed its output on failure
    assert not target.exists() and _leftovers(tmp_path) == []
