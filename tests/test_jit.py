"""The numba warm-up runs analyzers under a machine-wide lock, one process at a time, until one
completed for this installation."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from filelock import Timeout

from mirflow.core import jit


def _hold_lock():
    """Another process holding the warm-up lock (as a worker compiling), until killed."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from filelock import FileLock;"
        f"l = FileLock({str(jit.lock_path())!r}); l.acquire(); print('held', flush=True); time.sleep(30)")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_warm_up_waits_for_the_lock_holder_until_a_warm_up_completed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    calls = []
    holder = _hold_lock()
    try:
        with pytest.raises(Timeout):
            jit.warm_up("x", lambda: calls.append(1), timeout=0.5)
        assert calls == []  # never ran while another process was compiling
    finally:
        holder.kill()
        holder.wait()
    jit.warm_up("x", lambda: calls.append(2))
    assert calls == [2] and jit.lock_path() == tmp_path / "mirflow-numba-warmup.lock"
    holder = _hold_lock()
    try:  # the cache is warm now: no waiting, whoever holds the lock
        jit.warm_up("x", lambda: calls.append(3), timeout=0.5)
        assert calls == [2, 3]
        with pytest.raises(Timeout):  # another analyzer's code has not been warmed up
            jit.warm_up("y", lambda: calls.append(4), timeout=0.5)
    finally:
        holder.kill()
        holder.wait()


def test_warm_up_without_a_place_for_the_lock_still_runs(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocker / "cache"))  # its parent is a file
    calls = []
    jit.warm_up("x", lambda: calls.append(1))
    assert calls == [1]


def test_warm_marker_changes_with_the_installation(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    code = tmp_path / "analyzer.py"
    code.write_text("run = lambda: None\n")
    namespace: dict = {}
    exec(compile(code.read_text(), str(code), "exec"), namespace)
    run = namespace["run"]
    first = jit.warm_marker("tonal", run)
    assert first.parent == tmp_path and first == jit.warm_marker("tonal", run)
    assert jit.warm_marker("rhythm", run) != first
    code.write_text("run = lambda: 1  # edited\n")  # the analyzer's code changed
    assert jit.warm_marker("tonal", run) != first
    monkeypatch.setattr(sys, "version", sys.version + " (another build)")  # another interpreter
    assert jit.warm_marker("tonal", run) != first


def test_rhythm_and_tonal_setup_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from mirflow.analyzers.rhythm import RhythmAnalyzer
    from mirflow.analyzers.tonal import TonalAnalyzer

    seen = []
    monkeypatch.setattr(jit, "warm_up", lambda name, run, **kw: seen.append((name, run())))
    RhythmAnalyzer().setup()
    TonalAnalyzer().setup()
    seen = [(n, out) for n, out in seen if "." not in n]  # not librosa's kernels built on the way
    assert [n for n, _ in seen] == ["rhythm", "tonal"]
    assert seen[0][1]["bpm"] == pytest.approx(120.0, rel=0.02)
    assert seen[1][1]["key"] in ("C", "G")  # 6 s of I-V-vi-IV: C major, or its dominant


_BEATS = """
import sys
import numpy as np
if sys.argv[1] == "plain":
    import librosa.beat as beat
else:
    import numba
    from mirflow.core import jit
    before = numba.vectorize, numba.guvectorize
    beat = jit.librosa().beat
    assert (numba.vectorize, numba.guvectorize) == before  # put back after the import
    assert isinstance(beat.__beat_local_score, jit.LazyKernel)
env = np.zeros(1300)
env[::43] = 1.0  # an onset every 43 frames of 512 samples at 22050 Hz: 60.1 BPM
env += 0.01 * np.random.default_rng(0).random(env.size)
for dtype in (np.float64, np.float32):
    _, frames = beat.beat_track(onset_envelope=env.astype(dtype), sr=22050, hop_length=512,
                                bpm=60.0, tightness=100, trim=True, units="frames")
    print(" ".join(map(str, frames)))
"""


def test_librosa_beat_kernel_is_cached_on_disk_and_computes_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUMBA_DEBUG_CACHE", "1")  # numba's own cache (librosa's others live there)

    def run(mode: str) -> tuple[list[str], list[str]]:
        out = subprocess.run([sys.executable, "-c", _BEATS, mode], capture_output=True, text=True,
                             check=True).stdout.splitlines()
        cache = [line for line in out if line.startswith("[cache]") and "beat_local_score" in line]
        return [line for line in out if not line.startswith("[cache]")], cache

    first, _ = run("cached")  # compiles and saves it, or loads it when an earlier run saved it
    second, cache = run("cached")
    assert any("data loaded" in line for line in cache), cache
    assert first == second  # compiled or loaded, the same beats, on the known grid
    for line in first:
        frames = [int(f) for f in line.split()]
        assert len(frames) > 20 and set(np.diff(frames)) == {43}


@pytest.mark.slow
def test_librosa_beat_as_shipped_finds_the_same_beats(monkeypatch: pytest.MonkeyPatch) -> None:
    """librosa's own import (the kernel compiled, never cached) agrees with the cached one."""
    outputs = [subprocess.run([sys.executable, "-c", _BEATS, mode], capture_output=True, text=True,
                              check=True).stdout for mode in ("plain", "cached")]
    assert outputs[0] == outputs[1]


_KERNELS = """
import sys
import numpy as np
if sys.argv[1] == "plain":
    import librosa, librosa.core, librosa.util
else:
    from mirflow.core import jit
    librosa = jit.librosa()
    import librosa.core.audio as audio, librosa.util.utils as utils
    kernels = {"_zc_wrapper": audio._zc_wrapper, "_localmin": utils._localmin,
               "_cabs2": utils._cabs2, "_phasor_angles": utils._phasor_angles}
    assert all(isinstance(k, jit.LazyKernel) and k._kernel is None for k in kernels.values())
x = np.array([[1.0, -1.0, -1.0, 2.0, 0.5, -3.0, 0.0, 4.0]], dtype=np.float32)
print(librosa.zero_crossings(x).astype(int).tolist(), librosa.util.localmin(x, axis=-1).astype(int).tolist())
if sys.argv[1] != "plain":
    print("built", sorted(n for n, k in kernels.items() if k._kernel is not None))
"""


def test_librosa_kernels_are_built_on_first_use_and_compute_the_same() -> None:
    def run(mode: str) -> list[str]:
        return subprocess.run([sys.executable, "-c", _KERNELS, mode], capture_output=True,
                              text=True, check=True).stdout.splitlines()

    plain, lazy = run("plain"), run("lazy")
    assert lazy[0] == plain[0]  # the same zero crossings and minima as librosa as shipped
    assert lazy[1] == "built ['_localmin', '_zc_wrapper']"  # only what was called


_JITTED_CALLERS = """
import sys
from numba.core.dispatcher import Dispatcher
from mirflow.core import jit
jit.librosa()
found = []
for name, module in list(sys.modules.items()):
    if name.split(".")[0] != "librosa":
        continue
    for attr, obj in list(vars(module).items()):
        if isinstance(obj, Dispatcher):
            code, names = obj.py_func.__code__, obj.py_func.__globals__
            found += [f"{name}.{attr} calls {n}" for n in code.co_names
                      if isinstance(names.get(n), jit.LazyKernel)]
print(found)
"""


def test_no_jitted_librosa_function_calls_a_lazy_kernel() -> None:
    """numba cannot type a LazyKernel, so jitted code must not call one (librosa 0.11 calls them
    from Python); a librosa release that does would be caught here, not on a user's track."""
    out = subprocess.run([sys.executable, "-c", _JITTED_CALLERS], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]", out


def test_a_lazy_kernel_is_built_under_the_lock_until_built_once(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    kernel = jit.LazyKernel(lambda: (lambda x: x + 1), test_a_lazy_kernel_is_built_under_the_lock_until_built_once)
    results: list[int] = []
    holder = _hold_lock()
    try:
        builder = threading.Thread(target=lambda: results.append(kernel(1)))
        builder.start()
        builder.join(0.5)
        assert builder.is_alive() and results == []  # waits while another process compiles
    finally:
        holder.kill()
        holder.wait()
    builder.join(10)
    assert results == [2] and kernel(2) == 3 and "(built)" in repr(kernel)
    holder = _hold_lock()
    try:  # built once with this installation: the next process's build does not wait
        again = jit.LazyKernel(lambda: (lambda x: x + 10),
                               test_a_lazy_kernel_is_built_under_the_lock_until_built_once)
        builder = threading.Thread(target=lambda: results.append(again(1)))
        builder.start()
        builder.join(5)
        assert not builder.is_alive() and results[-1] == 11
    finally:
        holder.kill()
        holder.wait()


def test_a_lazy_kernel_called_first_by_threads_together_is_built_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Analyzers side by side may call a kernel for the first time at once: one builds, the
    others wait for it (a second build raced with the first and called a build already dropped)."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    builds: list[int] = []

    def build() -> Any:
        builds.append(1)
        time.sleep(0.2)
        return lambda x: x * 2

    kernel = jit.LazyKernel(build, test_a_lazy_kernel_called_first_by_threads_together_is_built_once)
    start = threading.Barrier(4)
    results: list[int] = []

    def call(x: int) -> None:
        start.wait()
        results.append(kernel(x))

    workers = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    assert builds == [1] and sorted(results) == [0, 2, 4, 6]
