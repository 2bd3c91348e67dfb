"""One long track alone: do the idle cores help? (analyzers side by side in the lone worker)

    python benchmarks/long_track.py [--corpus corpus/orchestral] [--minutes 60] [--repeats 3]
                                    [--analyzers loudness,spectral,tonal,rhythm]
                                    [--src LABEL=DIR ...] [--work DIR]

Concatenates corpus tracks (44.1 kHz stereo ones) into one FLAC of about ``--minutes`` in
``--work`` (default: a temporary folder), then runs ``mirflow run DIR -a SET --force all --json``
(default workers: the machine's cores, of which one worker gets them all) ``--repeats`` times per
source tree, interleaved (``--src LABEL=DIR`` runs with ``PYTHONPATH=DIR/src``, e.g. an export of an
older commit; the installed tree is ``current``). Per run: the whole command's wall time, the CPU
seconds of the process tree and the run's per-analyzer compute.
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

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clips import children_cpu, source_trees, tree_env  # noqa: E402


def build(corpus: Path, dest: Path, minutes: float) -> float:
    """``dest/long/full_mix.flac`` from corpus tracks in order; returns its seconds."""
    folder = dest / "long"
    folder.mkdir(parents=True)
    total = 0.0
    with sf.SoundFile(str(folder / "full_mix.flac"), "w", 44100, 2, format="FLAC") as out:
        for src in sorted(corpus.glob("*/full_mix.*")):
            info = sf.info(str(src))
            if info.samplerate != 44100 or info.channels != 2:
                continue
            with sf.SoundFile(str(src)) as f:
                for block in f.blocks(blocksize=44100 * 30, dtype="float32", always_2d=True):
                    out.write(block)
            total += info.duration
            if total >= minutes * 60:
                break
    if total == 0:
        raise SystemExit(f"no 44.1 kHz stereo tracks in {corpus} (make corpus)")
    return total


def run_once(dataset: Path, analyzers: str, src: Path | None) -> dict:
    env = tree_env(src)
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mirflow", "run", str(dataset), "-a", analyzers,
                           "--force", "all", "--json"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    try:
        summary = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"mirflow run gave no JSON (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    timing = summary.get("timing") or {}
    return {"wall_s": round(wall, 2), "cpu_s": round(children_cpu() - cpu0, 2),
            "compute_s": {n: a["compute_s"] for n, a in (timing.get("analyzers") or {}).items()},
            "failed": summary["failures"][:2]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("corpus/orchestral"))
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--analyzers", default="loudness,spectral,tonal,rhythm")
    ap.add_argument("--src", action="append", default=[], metavar="LABEL=DIR")
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    trees = source_trees(args.src)
    with tempfile.TemporaryDirectory(prefix="mirflow-long-") as tmp:
        work = args.work or Path(tmp)
        dataset = work / "dataset"
        seconds = build(args.corpus, dataset, args.minutes)
        print(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                          "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                          "track_min": round(seconds / 60, 1), "analyzers": args.analyzers,
                          "command": "python benchmarks/long_track.py " + " ".join(sys.argv[1:])}),
              flush=True)
        run_once(dataset, args.analyzers, None)  # warm caches (numba, the file)
        runs: dict[str, list[dict]] = {label: [] for label, _ in trees}
        for r in range(args.repeats):
            for label, src in (trees if r % 2 == 0 else list(reversed(trees))):
                res = run_once(dataset, args.analyzers, src)
                runs[label].append(res)
                print(json.dumps({"round": r + 1, "tree": label, **res}), flush=True)
    print("\n| tree | wall s | CPU s |\n|---|---|---|")
    for label, rs in runs.items():
        print(f"| {label} | {' / '.join(str(r['wall_s']) for r in rs)} | "
              f"{' / '.join(str(r['cpu_s']) for r in rs)} |")
    base = statistics.median(r["wall_s"] for r in runs["current"])
    for label, rs in runs.items():
        if label != "current":
            print(f"\nmedian wall {label} / current: {statistics.median(r['wall_s'] for r in rs) / base:.2f}")


if __name__ == "__main__":
    main()
