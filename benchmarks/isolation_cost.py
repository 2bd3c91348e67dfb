"""What fault isolation costs when nothing goes wrong: supervised workers vs a plain process pool.

    python benchmarks/isolation_cost.py --baseline-local REV [--corpus DIR] [--tracks N]
                                        [--seconds S] [--workers W] [--repeat R]

The *baseline* is this source tree with ``executors/local.py`` taken from git revision ``REV`` (the
``concurrent.futures.ProcessPoolExecutor`` version before fault isolation; ``4161da6`` in this
repository), copied to a temporary folder; the *current* variant is this tree as it is. Both run
``python -m mirflow run DATASET -a loudness,spectral,tonal,rhythm --workers W --json`` as fresh
processes (imports and worker start-up included, as a user pays them) on the same temporary
dataset of the first S seconds of N tracks spread over the corpus (written as FLAC; the corpus is
never written to), with the sidecars deleted before every run. Repetitions are interleaved and
alternate the order (A B, B A, ...); the minimum and the median per variant are reported, and their
ratio. The per-track header probe the coordinator now does (``run.limits.audio_info``) is timed
separately, in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clips import build_dataset  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
ANALYZERS = "loudness,spectral,tonal,rhythm"


def baseline_tree(rev: str, dest: Path) -> Path:
    """A copy of this tree's ``src`` with ``executors/local.py`` from ``rev``."""
    src = dest / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    old = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:src/mirflow/executors/local.py"],
                         capture_output=True, text=True, check=True).stdout
    (src / "mirflow" / "executors" / "local.py").write_text(old)
    return src


def one_run(src: Path, dataset: Path, workers: int) -> float:
    for info in dataset.rglob("*.INFO"):
        info.unlink()
    env = {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mirflow", "run", str(dataset), "-a", ANALYZERS,
                           "--workers", str(workers), "--json"], capture_output=True, text=True,
                          env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"mirflow run failed ({proc.returncode}) with {src}:\n{proc.stderr[-2000:]}")
    done = json.loads(proc.stdout)["analyzers"]["loudness"]["done"]
    if done != len(list(dataset.iterdir())):
        raise SystemExit(f"only {done} tracks done with {src}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-local", required=True, metavar="REV",
                    help="git revision whose executors/local.py is the baseline")
    ap.add_argument("--corpus", type=Path, default=REPO / "corpus" / "orchestral")
    ap.add_argument("--tracks", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="mirflow-isolation-") as tmp:
        tmpdir = Path(tmp)
        dataset = tmpdir / "dataset"
        files = build_dataset(args.corpus, dataset, args.tracks, args.seconds)
        variants = {"baseline (ProcessPoolExecutor)": baseline_tree(args.baseline_local, tmpdir / "base"),
                    "current (supervised workers)": REPO / "src"}
        sys.path.insert(0, str(REPO / "src"))
        from mirflow.run.limits import audio_info

        start = time.perf_counter()
        for f in files:
            audio_info(f)
        probe_ms = (time.perf_counter() - start) / len(files) * 1000
        walls: dict[str, list[float]] = {k: [] for k in variants}
        names = list(variants)
        for r in range(args.repeat):
            for name in (names if r % 2 == 0 else names[::-1]):
                walls[name].append(one_run(variants[name], dataset, args.workers))
                print(f"  rep {r + 1} {name}: {walls[name][-1]:.2f} s", flush=True)

    audio = len(files) * args.seconds
    print(f"\n{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{len(files)} tracks x {args.seconds:.0f} s, {args.workers} workers, -a {ANALYZERS}, "
          f"{args.repeat} interleaved repetitions")
    print(f"{'variant':34} {'min s':>7} {'median s':>9} {'max s':>7} {'x realtime':>11}")
    for name, w in walls.items():
        print(f"{name:34} {min(w):7.2f} {statistics.median(w):9.2f} {max(w):7.2f} {audio / min(w):11.1f}")
    base, cur = (walls[n] for n in names)
    print(f"current / baseline: min {min(cur) / min(base):.3f}, median "
          f"{statistics.median(cur) / statistics.median(base):.3f}")
    print(f"header probe per track (soundfile.info): {probe_ms:.2f} ms")


if __name__ == "__main__":
    main()
