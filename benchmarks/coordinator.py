"""The coordinator's cost per track, and how well ``mirflow plan`` predicts a run of many short tracks.

    python benchmarks/coordinator.py [--tracks 2000] [--seconds 0.5] [--analyzers loudness]
                                     [--workers 2] [--repeats 2] [--work DIR] [--src LABEL=DIR ...]
                                     [--out FILE.json]

Synthesises ``--tracks`` tracks of ``--seconds`` (22.05 kHz mono WAV, a tone in noise) in 20
folders under ``--work`` (default: a temporary folder), so that the analyzers' compute is small and
the coordinator (leases, sidecar reads and durable writes, dispatch) is what bounds the run. Then,
``--repeats`` times, each source tree in turn (``--src LABEL=DIR`` runs with ``PYTHONPATH=DIR/src``,
e.g. an export of an older commit; the installed tree is ``current``):

* ``mirflow plan DATASET -a SET --force all --json``: the ETA the plan gives (from the rates earlier
  runs of that tree recorded on this machine; each tree gets its own cache folder, warmed by one
  run first, so trees do not read each other's rates);
* ``mirflow run DATASET -a SET --force all --json -j W``: the whole command's wall time, tracks per
  second, the workers' busy fraction from the run's timing report;
* the same run again with nothing due (``--force`` left out): the cost of a resume.

Prints a table (and the per-run figures as JSON with ``--out``). Ratios between trees are the
figures to quote: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from clips import children_cpu, source_trees, tree_env  # benchmarks/ is on sys.path as a script

SR = 22050


def make_dataset(root: Path, tracks: int, seconds: float, folders: int = 20) -> None:
    """``tracks`` short WAVs at ``root/folder-F/track-N/full_mix.wav`` (a tone in noise)."""
    rng = np.random.default_rng(0)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    for i in range(tracks):
        folder = root / f"folder-{i % folders:02d}" / f"track-{i:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        y = 0.3 * np.sin(2 * np.pi * (220 + i % 400) * t) + 0.01 * rng.standard_normal(n)
        sf.write(str(folder / "full_mix.wav"), y.astype(np.float32), SR, subtype="PCM_16")


def mirflow_command() -> list[str]:
    script = Path(sys.executable).with_name("mirflow")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mirflow"]


def run_json(args: list[str], env: dict[str, str]) -> tuple[dict, float, float]:
    """Run ``mirflow ARGS`` and return ``(its JSON output, wall s, CPU s of the process tree)``."""
    used = children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run([*mirflow_command(), *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    cpu = children_cpu() - used
    try:
        return json.loads(proc.stdout), wall, cpu
    except json.JSONDecodeError:
        raise SystemExit(f"mirflow {args[0]} gave no JSON (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def one_round(dataset: Path, analyzers: str, workers: int, env: dict[str, str]) -> dict:
    plan, plan_wall, _ = run_json(["plan", str(dataset), "-a", analyzers, "--force", "all",
                                   "-j", str(workers), "--json"], env)
    summary, wall, cpu = run_json(["run", str(dataset), "-a", analyzers, "--force", "all",
                                   "-j", str(workers), "--json"], env)
    done = sum(c.get("done", 0) for c in summary["analyzers"].values())
    tracks = summary.get("tracks", 0)
    stages = (summary.get("timing") or {}).get("stages") or {}
    busy = stages.get("workers", {}).get("busy_fraction")
    _, resume_wall, _ = run_json(["run", str(dataset), "-a", analyzers, "-j", str(workers),
                                  "--json"], env)
    return {"wall_s": wall, "cpu_s": cpu, "tracks": tracks, "done": done,
            "tracks_per_s": tracks / wall if wall > 0 else None, "workers_busy": busy,
            "plan_eta_s": plan.get("eta_s"), "plan_wall_s": plan_wall,
            "plan_startup_s": plan.get("startup_s"), "resume_wall_s": resume_wall}


def _cells(runs: list[dict], key: str, fmt: str) -> str:
    """``runs``' values of ``key``, formatted, ``" / "``-separated (``-`` for a missing one)."""
    return " / ".join("-" if r.get(key) is None else format(r[key], fmt) for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--analyzers", default="loudness")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", type=Path, help="where the dataset is written (default: a temporary folder)")
    ap.add_argument("--src", action="append", default=[], metavar="LABEL=DIR",
                    help="also run with PYTHONPATH=DIR/src (repeatable), interleaved")
    ap.add_argument("--out", type=Path, help="write the per-run figures here as JSON")
    args = ap.parse_args()

    trees = source_trees(args.src)
    with tempfile.TemporaryDirectory(prefix="mirflow-coordinator-") as tmp:
        work = args.work or Path(tmp)
        dataset = work / "dataset"
        if dataset.exists():
            raise SystemExit(f"{dataset} exists: give an empty --work folder")
        t0 = time.perf_counter()
        make_dataset(dataset, args.tracks, args.seconds)
        print(f"{args.tracks} tracks of {args.seconds} s written in {time.perf_counter() - t0:.1f} s",
              flush=True)
        envs = {label: tree_env(src, XDG_CACHE_HOME=str(Path(tmp) / f"cache-{label}"))
                for label, src in trees}
        for label in envs:  # warm each tree's rates and numba cache
            run_json(["run", str(dataset), "-a", args.analyzers, "--force", "all",
                      "-j", str(args.workers), "--json"], envs[label])
        runs: dict[str, list[dict]] = {label: [] for label in envs}
        for r in range(args.repeats):
            for label in (envs if r % 2 == 0 else list(reversed(envs))):
                res = one_round(dataset, args.analyzers, args.workers, envs[label])
                runs[label].append(res)
                print(f"round {r + 1} {label}: " + json.dumps({k: round(v, 3) if isinstance(v, float)
                                                              else v for k, v in res.items()}), flush=True)

    print(f"\n{args.tracks} tracks x {args.seconds} s, `-a {args.analyzers}`, {args.workers} workers, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| tree | wall s | tracks/s | workers busy | plan ETA s | ETA / wall | resume s |")
    print("|---|---|---|---|---|---|---|")
    for label, rs in runs.items():
        ratios = [r["plan_eta_s"] / r["wall_s"] for r in rs if r["plan_eta_s"] is not None]
        print(f"| {label} | {_cells(rs, 'wall_s', '.2f')} | {_cells(rs, 'tracks_per_s', '.0f')} | "
              f"{_cells(rs, 'workers_busy', '.2f')} | {_cells(rs, 'plan_eta_s', '.2f')} | "
              f"{' / '.join(format(x, '.2f') for x in ratios) or '-'} | "
              f"{_cells(rs, 'resume_wall_s', '.2f')} |")
    if len(runs) > 1:
        base = statistics.median(r["wall_s"] for r in runs["current"])
        for label, rs in runs.items():
            if label != "current":
                print(f"\nwall {label} / current: {statistics.median(r['wall_s'] for r in rs) / base:.2f}")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                        "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
