"""Peak memory of a run with the GPU lane forced on the CPU, for several ``--max-memory`` values,
alternating source trees (e.g. before/after a change of the lane).

Each run is a whole ``mirflow run`` process (``PYTHONPATH`` set to the variant's source tree) whose
``mirflow.executors.local.accelerator_present`` is replaced by ``lambda device: True`` before the
command starts, so the local executor adds its GPU lane although the device is the CPU. The
coordinator, the CPU workers and the lane are sampled every 0.1 s through ``/proc`` (Linux): the
peak of the summed RSS of all of them and the peak of their summed PSS (shared pages divided among
the processes that share them, so libraries are not counted once per process). The lane hands
tracks to the CPU workers through files in ``/dev/shm`` (:mod:`mirflow.core.shared`), which no
process's RSS shows while no process maps them: the run's hand-off files are sampled too (peak of
their summed size), and ``peak_pss_plus_shm_mib`` is the peak of PSS plus those files, an upper
bound (pages a worker has mapped count twice).

The model is a *small* random-weight HTDemucs (HTDemucs' depth, FFT size and 7.8 s segments, but 4
channels in the first layer instead of 48 and one transformer layer): the model's own memory and
time are small, but every array the lane and the workers hold (decoded mix, model input, four stems,
the hand-off) has its full size, which is what ``--max-memory`` bounds.

Example::

    mkdir -p BEFORE && git archive <commit> src | tar -x -C BEFORE
    python benchmarks/lane_memory.py --src before=BEFORE/src --src after=src \\
        --corpus corpus/orchestral --tracks 6 --min-seconds 40 --max-seconds 100 \\
        --max-memory 2G,8G --analyzers separation,loudness
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import soundfile as sf

from clips import children_cpu, save_demucs_repo  # benchmarks/ is on sys.path when run as a script

SOURCES = ["drums", "bass", "other", "vocals"]
MODEL_NAME = "htdemucs_small_random"
PAGE = os.sysconf("SC_PAGE_SIZE")
DRIVER = ("import sys, mirflow.executors.local as local; "
          "local.accelerator_present = lambda device: True; "
          "from mirflow.cli import main; sys.argv = ['mirflow', *sys.argv[1:]]; main()")


def small_repo(folder: Path, seed: int = 0) -> Path:
    """Save a small random-weight HTDemucs as the local Demucs repo bag :data:`MODEL_NAME`."""
    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    model = HTDemucs(sources=SOURCES, channels=4, t_layers=1, t_heads=1, t_hidden_scale=1.0,
                     dconv_comp=2, segment=Fraction(39, 5))
    save_demucs_repo(model, folder, "5a110000", MODEL_NAME)
    n = sum(p.numel() for p in model.parameters())
    print(f"model: small HTDemucs, {n / 1e3:.0f}k parameters (random weights)", flush=True)
    return folder


def link_tracks(corpus: Path, out: Path, n: int, min_seconds: float,
                max_seconds: float) -> tuple[list[Path], float]:
    """Symlink the first ``n`` full mixes (whole tracks, by folder name) lasting from ``min_seconds``
    to ``max_seconds`` into a dataset; their total duration in seconds."""
    mixes, total = [], 0.0
    for src in sorted(corpus.glob("*/full_mix.*")):
        if len(mixes) == n:
            break
        seconds = sf.info(str(src)).duration
        if not min_seconds <= seconds <= max_seconds:
            continue
        folder = out / src.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / src.name).symlink_to(src.resolve())
        mixes.append(folder / src.name)
        total += seconds
    return mixes, total


def clean(mixes: list[Path]) -> None:
    for mix in mixes:
        for p in mix.parent.iterdir():
            if p != mix:
                p.unlink()


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (from ``/proc/*/stat``)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [root], [root]
    while frontier:
        frontier = [p for p, pp in parent.items() if pp in frontier]
        out += frontier
    return out


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) bytes of ``pid`` (0, 0 when it is gone)."""
    try:
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        pss = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
                break
        return rss, pss
    except (OSError, ValueError, IndexError):
        return 0, 0


def _shm_bytes(owner: int) -> int:
    """Bytes of the hand-off files of the run whose coordinator is ``owner`` in ``/dev/shm``."""
    total = 0
    try:
        for entry in os.scandir("/dev/shm"):
            if entry.name.startswith(f"mirflow-{owner}-"):
                try:
                    total += entry.stat().st_blocks * 512
                except OSError:
                    pass
    except OSError:
        pass
    return total


class TreeSampler:
    """Peak summed RSS and PSS of a process tree, and its largest process's peak RSS
    (``peak_single``), sampled every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = self.peak_shm = self.peak_pss_shm = 0
        self.peak_procs = self.peak_single = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self.pid)
            sizes = [_memory(p) for p in pids]
            self.peak_rss = max(self.peak_rss, sum(r for r, _ in sizes))
            self.peak_single = max([self.peak_single, *(r for r, _ in sizes)])
            self.peak_pss = max(self.peak_pss, sum(p for _, p in sizes))
            shm = _shm_bytes(self.pid)
            self.peak_shm = max(self.peak_shm, shm)
            self.peak_pss_shm = max(self.peak_pss_shm, shm + sum(p for _, p in sizes))
            self.peak_procs = max(self.peak_procs, sum(1 for r, _ in sizes if r))
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_variant(src: str, dataset: Path, repo: Path, analyzers: str, workers: int,
                max_memory: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", DRIVER, "run", str(dataset), "-a", analyzers,
           "--sep-repo", str(repo), "--sep-model", MODEL_NAME, "--workers", str(workers),
           "--device", "cpu", "--max-memory", max_memory, "--json"]
    c0 = children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sampler = TreeSampler(proc.pid)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop()
    summary = json.loads(out) if out.strip().startswith("{") else {}
    done = summary.get("analyzers", {}).get("separation", {}).get("done")
    if proc.returncode != 0 or not done:
        raise SystemExit(f"mirflow run failed ({proc.returncode}):\n{out[-3000:]}\n{err[-3000:]}")
    return {"wall_s": round(wall, 1), "cpu_s": round(children_cpu() - c0, 1),
            "peak_rss_mib": round(sampler.peak_rss / 2**20), "peak_pss_mib": round(sampler.peak_pss / 2**20),
            "peak_shm_mib": round(sampler.peak_shm / 2**20),
            "peak_pss_plus_shm_mib": round(sampler.peak_pss_shm / 2**20), "processes": sampler.peak_procs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", action="append", required=True, help="LABEL=DIR of a source tree (repeat)")
    ap.add_argument("--corpus", type=Path, default=Path("corpus/orchestral"))
    ap.add_argument("--tracks", type=int, default=6)
    ap.add_argument("--min-seconds", type=float, default=40.0)
    ap.add_argument("--max-seconds", type=float, default=100.0)
    ap.add_argument("--max-memory", default="3G,16G", help="comma-separated --max-memory values")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--analyzers", action="append", default=None,
                    help="analyzer sets to run (repeat; default: separation)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    variants = [s.split("=", 1) for s in args.src]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = small_repo(work / "repo")
        mixes, audio_s = link_tracks(args.corpus, work / "dataset", args.tracks, args.min_seconds,
                                      args.max_seconds)
        print(f"{len(mixes)} tracks, {audio_s:.0f} s of audio", flush=True)
        for analyzers in args.analyzers or ["separation"]:
            for budget in args.max_memory.split(","):
                for rep in range(args.repeat):
                    for label, src in variants:
                        clean(mixes)
                        row = {"variant": label, "analyzers": analyzers, "max_memory": budget,
                               "repeat": rep, **run_variant(str(Path(src).resolve()), work / "dataset",
                                                            repo, analyzers, args.workers, budget)}
                        print(json.dumps(row), flush=True)
                        rows.append(row)
    out = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
           "cpus": os.cpu_count(), "tracks": len(mixes), "audio_s": round(audio_s, 1),
           "workers": args.workers, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
