"""Does process-level parallelism speed up the seed's librosa features? (The seed says it cannot.)

    python benchmarks/threading_claim.py [--corpus DIR] [--tracks 4] [--repeat 2] [--procs 2]

The seed's PERFORMANCE_GUIDE.md claims that librosa/numpy already multithread, so running the CPU
features in several processes cannot help (and would oversubscribe). This measures that claim on
the seed's 'original' workload, i.e. configuration (a) of ``cpu_features.py``: every feature function
loads the file itself with ``librosa.load`` and computes its feature independently.

Four configurations, each in a fresh Python process, interleaved over ``--repeat`` repetitions:

- ``1 proc, default threads``: one process, serial over the tracks, every thread pool at its
  library default (no thread-count variable set).
- ``1 proc, pinned``: the same with OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS,
  NUMBA_NUM_THREADS (and VECLIB/NUMEXPR) = 1 in the environment before numpy is imported, plus
  ``threadpoolctl.threadpool_limits(1)``.
- ``N procs, default threads`` / ``N procs, pinned``: a process pool of ``--procs`` workers
  (``ProcessPoolExecutor``, fork after librosa is imported, so the workers inherit its compiled
  numba code) over the tracks, longest first, one track per task (dynamic scheduling: a balanced
  split; the per-worker audio seconds are reported).

Reported: the work's wall seconds (imports excluded, pool start-up included), the wall seconds of the
whole process, CPU seconds (user + system, the process and its workers), the thread pools that
threadpoolctl sees, and the spread between repetitions (the machine may be shared).
``OPENBLAS_CORETYPE`` is left as found in every configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_features as cf  # noqa: E402

PIN_VARS = cf.THREAD_VARS


def _one(path: str) -> tuple[str, float, int]:
    t = time.perf_counter()
    cf.analyze_original(path)
    return path, time.perf_counter() - t, os.getpid()


def _child(procs: int, pinned: bool, paths: list[str]) -> None:
    t0 = time.perf_counter()
    import librosa  # noqa: F401
    import librosa.beat  # noqa: F401
    import librosa.onset  # noqa: F401
    import pyloudnorm  # noqa: F401
    from threadpoolctl import threadpool_info, threadpool_limits

    if pinned:
        threadpool_limits(1)
    pools = [f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info()]
    startup = time.perf_counter() - t0
    import soundfile as sf

    order = sorted(paths, key=lambda p: -sf.info(p).duration)  # longest first
    t1 = time.perf_counter()
    if procs == 1:
        results = [_one(p) for p in order]
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(procs, mp_context=mp.get_context("fork")) as ex:
            results = list(ex.map(_one, order))
    work = time.perf_counter() - t1
    per_worker: dict[int, float] = {}
    for p, _, pid in results:
        per_worker[pid] = per_worker.get(pid, 0.0) + sf.info(p).duration
    ru_s, ru_c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"startup_s": startup, "work_s": work, "pools": pools,
                      "cpu_s": ru_s.ru_utime + ru_s.ru_stime + ru_c.ru_utime + ru_c.ru_stime,
                      "per_track_s": [t for _, t, _ in results],
                      "worker_audio_s": sorted(per_worker.values())}))


def run_config(procs: int, pinned: bool, files: list[Path]) -> dict:
    env = cf.default_env()
    if pinned:
        env.update({k: "1" for k in PIN_VARS})
    t, busy = time.perf_counter(), cf.machine_busy_s()
    out = subprocess.run([sys.executable, __file__, "--child", f"{procs},{int(pinned)}",
                          *map(str, files)], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["wall_s"] = wall
    r["others_cpu"] = max(0.0, cf.machine_busy_s() - busy - r["cpu_s"])
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path(cf.DEFAULT_CORPUS))
    ap.add_argument("--tracks", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        procs, pinned = args.child.split(",")
        _child(int(procs), bool(int(pinned)), args.paths)
        return

    files = cf.pick(cf.find_tracks([args.corpus]), args.tracks)
    secs = cf.durations(files)
    configs = [(1, False), (1, True), (args.procs, False), (args.procs, True)]
    names = {c: f"{c[0]} proc{'s' if c[0] > 1 else ''}, {'pinned to 1 thread' if c[1] else 'default threads'}"
             for c in configs}
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} | {cf.machine()} | load average "
          f"{os.getloadavg()[0]:.1f} at start | OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    print(f"# (a)-style workload on {len(files)} tracks, {sum(secs):.0f} s of audio: "
          + ", ".join(f"{f.parent.name} {d:.0f}s" for f, d in zip(files, secs)), flush=True)
    runs: dict = {c: [] for c in configs}
    for rep in range(args.repeat):
        for c in configs:
            r = run_config(*c, files)
            runs[c].append(r)
            print(f"#   rep {rep + 1} {names[c]}: work {r['work_s']:.1f} s, process {r['wall_s']:.1f} s, "
                  f"cpu {r['cpu_s']:.1f} s, pools {r['pools']}, worker audio s "
                  f"{[round(x) for x in r['worker_audio_s']]}, other jobs' CPU {r['others_cpu']:.1f} s", flush=True)
    base = min(r["work_s"] for r in runs[configs[0]])
    print()
    print("| configuration | work wall s (min) | all reps | speedup vs 1 proc default | CPU s (min) | "
          "other jobs' CPU s in the min run | thread pools |")
    print("|---|---|---|---|---|---|---|")
    for c in configs:
        w = min(r["work_s"] for r in runs[c])
        reps = " / ".join(f"{r['work_s']:.1f}" for r in runs[c])
        print(f"| {names[c]} | {w:.1f} | {reps} | "
              f"{base / w:.2f}x | {min(r['cpu_s'] for r in runs[c]):.1f} | "
              f"{min(runs[c], key=lambda r: r['work_s'])['others_cpu']:.1f} | {', '.join(runs[c][0]['pools'])} |")
    if args.json:
        args.json.write_text(json.dumps({names[c]: v for c, v in runs.items()}, indent=1))


if __name__ == "__main__":
    main()
