"""Hand-offs through shared memory (mirflow.core.shared): what goes in comes out, nothing is left."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mirflow.core import shared
from mirflow.core.audio import Audio
from mirflow.core.errors import HandOffLost
from mirflow.core.stems_io import StemsToWrite
from mirflow.run.worker import Decoded


def _decoded(seconds: float = 2.0, sr: int = 44100) -> Decoded:
    rng = np.random.default_rng(0)
    n = int(seconds * sr)
    stems = {s: rng.standard_normal((2, n)).astype(np.float32) for s in ("drums", "bass", "other", "vocals")}
    return Decoded(Audio(rng.standard_normal((2, n)).astype(np.float32), sr), None, ("a warning",),
                   {}, {"separation": StemsToWrite(Path("track"), stems, sr=sr)})


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(shared.PREFIX))


def _same(a: Decoded, b: Decoded) -> None:
    assert a.audio is not None and b.audio is not None
    assert b.audio.sr == a.audio.sr and b.warnings == a.warnings
    np.testing.assert_array_equal(b.audio.samples, a.audio.samples)
    for name, data in a.writes["separation"].stems.items():
        np.testing.assert_array_equal(b.writes["separation"].stems[name], data)


def test_a_track_travels_as_a_small_handle_and_comes_back_equal_and_writable(tmp_path: Path) -> None:
    original = _decoded()
    handle = shared.ship(original, folder=tmp_path)
    assert handle.path is not None and Path(handle.path).parent == tmp_path
    assert handle.nbytes == 5 * original.audio.samples.nbytes  # the mix and four stems
    assert len(pickle.dumps(handle)) < 4096  # what the pipes carry
    back = pickle.loads(pickle.dumps(handle)).open()
    _same(original, back)
    samples = back.audio.samples
    assert samples.flags.writeable and samples.flags.c_contiguous and samples.dtype == np.float32
    samples[:] = 0.0  # copy-on-write: the file is not changed, a second reader sees the original
    _same(original, handle.open())
    handle.release()
    assert _files(tmp_path) == []
    handle.release()  # idempotent
    with pytest.raises(HandOffLost, match="is gone"):
        handle.open()
    assert float(np.abs(back.writes["separation"].stems["bass"]).sum()) > 0  # mapped pages outlive the name


def test_a_track_with_nothing_large_needs_no_file(tmp_path: Path) -> None:
    small = Decoded(Audio(np.zeros((1, 100), np.float32), 8000))
    handle = shared.ship(small, folder=tmp_path)
    assert handle.path is None and handle.nbytes == 0 and _files(tmp_path) == []
    assert handle.open().audio.sr == 8000
    failed = Decoded(None, error=None, warnings=("undecodable",))
    assert shared.ship(failed, folder=tmp_path).open().warnings == ("undecodable",)


def test_non_contiguous_arrays_travel_in_the_pickle(tmp_path: Path) -> None:
    data = np.arange(200_000, dtype=np.float32).reshape(2, -1)[:, ::2]
    handle = shared.ship({"x": data}, folder=tmp_path)
    np.testing.assert_array_equal(handle.open()["x"], data)
    handle.release()


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES])
def test_no_room_in_shared_memory_falls_back_to_the_pipe(err: int, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A full /dev/shm (Docker's 64 MB) is found by reserving the space first: the track goes
    through the pipe, and no half-written file stays behind."""
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(shared.os, "posix_fallocate", full)
    original = _decoded(0.5)
    handle = shared.ship(original, folder=tmp_path)
    assert handle.path is None and _files(tmp_path) == []
    _same(original, handle.open())
    assert "through the pipe" in caplog.text


def test_an_unexpected_write_error_is_raised_and_leaves_no_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(shared.os, "posix_fallocate", broken)
    with pytest.raises(OSError, match="I/O error"):
        shared.ship(_decoded(0.5), folder=tmp_path)
    assert _files(tmp_path) == []


def test_without_shared_memory_everything_goes_through_the_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared, "shared_dir", lambda: None)
    original = _decoded(0.5)
    handle = shared.ship(original)
    assert handle.path is None
    _same(original, handle.open())


def test_sweep_removes_the_files_of_an_owner_and_of_dead_owners_only(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    made = {}
    for owner in (os.getpid(), dead_pid, os.getppid()):
        monkeypatch.setattr(shared, "_owner", owner)
        made[owner] = shared.ship(_decoded(0.2), folder=tmp_path).path
    lost_lane = tmp_path / f"{shared.PREFIX}{os.getpid()}-{dead_pid}-0-abcd"  # its creator has ended
    lost_lane.write_bytes(b"x")
    (tmp_path / "mirflow-notapid-x").write_bytes(b"")  # not ours to judge
    (tmp_path / "other-file").write_bytes(b"")
    assert shared.sweep(folder=tmp_path) == 1  # the dead owner's
    assert not Path(made[dead_pid]).exists() and Path(made[os.getpid()]).exists()
    assert shared.sweep(owner=os.getpid(), folder=tmp_path) == 1  # the ended creator's only
    assert not lost_lane.exists() and Path(made[os.getpid()]).exists()  # this process is alive
    assert [p.name for p in _files(tmp_path)] == sorted(
        [Path(made[os.getpid()]).name, Path(made[os.getppid()]).name, "mirflow-notapid-x"])
