"""Can the GPU lane's decode threads feed a GPU? Decode + model-input preparation, x realtime.

    python benchmarks/lane_prepare.py [--corpus corpus/orchestral] [--tracks 8] [--threads 1,2,4]
                                      [--analyzers separation,classifiers]

The local executor's GPU lane decodes each track and prepares every GPU analyzer's input in its own
decode threads (:data:`mirflow.run.stream.DECODE_THREADS`), ahead of the models: for separation the
stereo 44.1 kHz standardised model input, for the classifiers the VGGish log-mel patches at 16 kHz.
Issue 14 asked for that preparation on the CPU workers instead, handed to the GPU stage ready; this
measures whether it can be the bottleneck where it is. The same work the lane's threads do
(:class:`~mirflow.core.audio.TrackContext` decode, then each analyzer's ``prepare``) runs on
``--tracks`` whole real tracks with ``--threads`` threads in one process (so the GIL is included),
and the throughput is reported in seconds of audio prepared per wall second (x realtime) and CPU
seconds per track. Compare with the GPU's rate: separation at about 120-140x realtime on an H200
(RESULTS section 11).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def prepare_all(mixes: list[Path], names: list[str], threads: int) -> tuple[float, float]:
    """Decode and prepare every mix with ``threads`` threads; (wall s, CPU s)."""
    from mirflow import analyzers as registry
    from mirflow.core.audio import TrackContext

    preparers = [registry.get(n)() for n in names]

    def one(mix: Path) -> None:
        ctx = TrackContext(mix)
        ctx.audio
        for p in preparers:
            p.prepare(ctx)

    wall, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, mixes))
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("corpus/orchestral"))
    ap.add_argument("--tracks", type=int, default=8)
    ap.add_argument("--threads", default="1,2,4", help="thread counts, comma-separated")
    ap.add_argument("--analyzers", default="separation,classifiers")
    args = ap.parse_args(argv)
    import soundfile as sf
    from threadpoolctl import threadpool_limits

    mixes = sorted(args.corpus.glob("*/full_mix.*"))[:args.tracks]
    if not mixes:
        raise SystemExit(f"no tracks under {args.corpus} (make corpus)")
    audio = sum(sf.info(str(m)).duration for m in mixes)
    names = [n for n in args.analyzers.split(",") if n]
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; {len(mixes)} tracks, "
          f"{audio:.0f} s of audio; prepare: {', '.join(names)}; BLAS/FFT pools at 1 thread, as in the lane")
    prepare_all(mixes[:1], names, 1)  # warm-up: imports, resampler and mel filter caches
    print("\n| threads | wall s | x realtime | CPU s per track |")
    print("|---|---|---|---|")
    with threadpool_limits(1):
        for threads in (int(t) for t in args.threads.split(",")):
            wall, cpu = prepare_all(mixes, names, threads)
            print(f"| {threads} | {wall:.2f} | {audio / wall:.0f} | {cpu / len(mixes):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
