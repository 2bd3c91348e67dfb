"""Time `mirflow run` on a real corpus with different worker counts; report peak memory.

    python benchmarks/corpus_run.py CORPUS [--analyzers loudness] [--workers 1,2] [--repeat 1]

Each configuration runs on a fresh copy of the corpus's sidecar state (sidecars are deleted
before every run; audio is never copied or changed). Reported: wall seconds, seconds per track,
realtime factor (audio seconds analysed per wall second), and the peak resident memory of the
largest process of the run (coordinator or worker), from ``getrusage(RUSAGE_CHILDREN)`` of a fresh
child per configuration. A second, resumed run is timed too: it must do no work.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf


def audio_seconds(root: Path) -> tuple[int, float]:
    files = sorted(root.rglob("full_mix.*"))
    return len(files), sum(sf.info(str(f)).duration for f in files)


def clear_sidecars(root: Path) -> None:
    for p in root.rglob("*.INFO"):
        p.unlink()


def one_run(root: Path, analyzers: str, workers: int) -> dict:
    """Run mirflow in a child that reports its own children's peak RSS."""
    code = (
        "import json, resource, subprocess, sys, time;"
        "t = time.perf_counter();"
        f"p = subprocess.run([sys.executable, '-m', 'mirflow', 'run', {str(root)!r}, '-a', {analyzers!r},"
        f" '--workers', '{workers}', '--json'], capture_output=True, text=True);"
        "wall = time.perf_counter() - t;"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
        "print(json.dumps({'wall': wall, 'maxrss_kib': rss, 'rc': p.returncode, 'summary': p.stdout, 'err': p.stderr[-2000:]}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--analyzers", default="loudness")
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args()
    n, secs = audio_seconds(args.corpus)
    print(f"# corpus {args.corpus}: {n} tracks, {secs / 60:.1f} min of audio; analyzers {args.analyzers}")
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
          f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}")
    print("| workers | wall s | s/track | realtime x | peak RSS MiB | resumed run s |")
    print("|---|---|---|---|---|---|")
    for w in [int(x) for x in args.workers.split(",")]:
        clear_sidecars(args.corpus)
        r = one_run(args.corpus, args.analyzers, w)
        if r["rc"] not in (0, 1):
            sys.exit(f"mirflow failed ({r['rc']}): {r['err']}")
        summary = json.loads(r["summary"])
        resumed = one_run(args.corpus, args.analyzers, w)
        work = sum(a["done"] for a in json.loads(resumed["summary"])["analyzers"].values())
        assert work == 0, "the resumed run did work"
        print(f"| {w} | {r['wall']:.1f} | {r['wall'] / n:.3f} | {secs / r['wall']:.0f} | "
              f"{r['maxrss_kib'] / 1024:.0f} | {resumed['wall']:.1f} |", flush=True)
        failed = sum(a["failed"] for a in summary["analyzers"].values())
        if failed:
            print(f"#   {failed} failures: {summary['failures'][:3]}")


if __name__ == "__main__":
    main()
