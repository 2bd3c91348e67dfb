"""The local executor's stages, before/after, side by side: `mirflow run` of separation (optionally
with per-stem and mix features) on the same clips, alternating two source trees.

Each variant runs as a whole `python -m mirflow run` process with ``PYTHONPATH`` set to its source
tree (e.g. an older commit exported with ``git archive``), so the two are measured in one session on
the same clips, interleaved (``--repeat``). Reported per run: wall seconds, x realtime of the whole
run (audio seconds / wall seconds, start-up included), CPU seconds of the run's processes, and on an
NVIDIA GPU the fraction of 0.1 s samples in which NVML saw the GPU busy (utilization > 0) and the
mean utilization.

Example (the GPU check of issue 14)::

    mkdir -p BEFORE && git archive <commit> src | tar -x -C BEFORE
    python benchmarks/streaming.py --src before=BEFORE/src --src after=src \\
        --corpus corpus/orchestral --clips 24 --seconds 55 --device cuda --workers 2,8

``--seed-loop THREADS`` adds, interleaved with the source trees, the seed's optimized loop as a whole
process: the model loaded once, then per file decode, :func:`demucs.apply.apply_model` (shifts 0,
overlap 0.25) and the stems written, with torch limited to THREADS threads
(``benchmarks/separation.py`` (b)). ``--workers 0`` runs mirflow with its default worker count.
Example (issue 14 item 2, elastic threads, on a CPU)::

    python benchmarks/streaming.py --src before=BEFORE/src --src after=src --seed-loop 2 \\
        --clips 3 --seconds 20 --device cpu --workers 0 --repeat 2

Full-size HTDemucs with random weights (``benchmarks/separation.py``: speed does not depend on the
weight values).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from separation import MODEL_NAME, clean, full_size_repo, make_clips  # noqa: E402
from clips import best_by_wall, children_cpu, record  # noqa: E402


class GpuSampler:
    """Samples NVML utilization every 0.1 s in a thread (nothing without NVML)."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._nvml = pynvml
        except Exception:  # noqa: BLE001 - no NVIDIA GPU or no NVML
            self._nvml = None
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append(int(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
            time.sleep(0.1)

    def __enter__(self) -> "GpuSampler":
        if self._nvml is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._nvml is not None:
            self._thread.join()

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {}
        return {"gpu_busy_fraction": round(sum(1 for s in self.samples if s > 0) / len(self.samples), 3),
                "gpu_util_mean": round(sum(self.samples) / len(self.samples), 1)}


#: The seed's optimized loop in a process of its own: argv = benchmarks folder, torch threads,
#: dataset, model repo, precision.
SEED_LOOP = ("import json, sys, time\n"
             "t0 = time.perf_counter()\n"
             "import torch\n"
             "torch.set_num_threads(int(sys.argv[2]))\n"
             "sys.path.insert(0, sys.argv[1])\n"
             "from pathlib import Path\n"
             "import separation\n"
             "clips = sorted(Path(sys.argv[3]).glob('*/full_mix.flac'))\n"
             "load, loop = separation.run_model_once(clips, Path(sys.argv[4]), 'cpu', sys.argv[5])\n"
             "print(json.dumps({'load_s': round(load, 2), 'loop_s': round(loop, 2)}))\n")


def run_seed_loop(threads: int, dataset: Path, repo: Path, precision: str) -> dict[str, float]:
    """The seed's optimized loop (model once, ``apply_model`` per file) as a whole process."""
    cmd = [sys.executable, "-c", SEED_LOOP, str(Path(__file__).resolve().parent), str(threads),
           str(dataset), str(repo), precision]
    c0 = children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"seed loop failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    inner = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), "cpu_s": round(children_cpu() - c0, 1), **inner}


def run_variant(src: str, dataset: Path, repo: Path, analyzers: str, workers: int, device: str,
                precision: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "mirflow", "run", str(dataset), "-a", analyzers,
           "--sep-repo", str(repo), "--sep-model", MODEL_NAME, "--sep-precision", precision,
           "--device", device, "--force", "all", "--json"]
    if workers:  # 0: mirflow's default (the machine's cores, at most one per track)
        cmd += ["--workers", str(workers)]
    c0 = children_cpu()
    with GpuSampler() as gpu:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    summary = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    if proc.returncode != 0 or not summary.get("analyzers", {}).get("separation", {}).get("done"):
        raise SystemExit(f"mirflow run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {"wall_s": round(wall, 2), "cpu_s": round(children_cpu() - c0, 1), **gpu.summary()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", action="append", required=True, help="LABEL=DIR of a source tree (repeat)")
    ap.add_argument("--corpus", type=Path, default=Path("corpus/orchestral"))
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=55.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--workers", default="2", help="comma-separated worker counts")
    ap.add_argument("--analyzers", action="append", default=None,
                    help="analyzer sets to run (repeat; default: separation)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--seed-loop", type=int, default=0, metavar="THREADS",
                    help="also run the seed's optimized loop with torch at THREADS threads (0: no)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    variants = [s.split("=", 1) for s in args.src]
    sets = args.analyzers or ["separation"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = full_size_repo(work / "repo")
        clips = make_clips(args.corpus, work / "dataset", args.clips, args.seconds)
        audio_s = args.clips * args.seconds
        load_start = os.getloadavg()
        for analyzers in sets:
            for workers in [int(w) for w in args.workers.split(",")]:
                for rep in range(args.repeat):
                    if args.seed_loop:
                        clean(clips)
                        row = {"variant": f"seed loop, torch {args.seed_loop} threads",
                               "analyzers": "separation", "workers": 1, "repeat": rep,
                               **run_seed_loop(args.seed_loop, work / "dataset", repo, args.precision),
                               "load_avg_1m": round(os.getloadavg()[0], 1)}
                        row["x_realtime"] = round(audio_s / row["wall_s"], 2)
                        print(json.dumps(row), flush=True)
                        rows.append(row)
                    for label, src in variants:
                        clean(clips)
                        row = {"variant": label, "analyzers": analyzers, "workers": workers, "repeat": rep,
                               **run_variant(str(Path(src).resolve()), work / "dataset", repo, analyzers,
                                             workers, args.device, args.precision),
                               "load_avg_1m": round(os.getloadavg()[0], 1)}
                        row["x_realtime"] = round(audio_s / row["wall_s"], 2)
                        print(json.dumps(row), flush=True)
                        rows.append(row)
    out = record("streaming.py", rows, load_start, clips=args.clips, seconds=args.seconds,
                 device=args.device, precision=args.precision)
    print(best_of(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


def best_of(out: dict) -> str:
    """A markdown table of each variant's best (lowest wall) run, its CPU seconds beside it."""
    best = best_by_wall(out["rows"], lambda r: (r["variant"], r["analyzers"], r["workers"]))
    lines = [f"Best of {max(r['repeat'] for r in out['rows']) + 1}, {out['clips']} x "
             f"{out['seconds']:g} s, {out['precision']}, load average {out['load_avg_start'][0]:.1f} "
             f"-> {out['load_avg_end'][0]:.1f}", "",
             "| variant | analyzers | --workers | wall s | CPU s | x realtime | all runs, wall s |",
             "|---|---|---|---|---|---|---|"]
    for (variant, analyzers, workers), r in best.items():
        runs = ", ".join(f"{x['wall_s']:.1f}" for x in out["rows"]
                         if (x["variant"], x["analyzers"], x["workers"]) == (variant, analyzers, workers))
        lines.append(f"| {variant} | {analyzers} | {workers or 'default'} | {r['wall_s']:.1f} | "
                     f"{r['cpu_s']:.0f} | {r['x_realtime']:.2f} | {runs} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
