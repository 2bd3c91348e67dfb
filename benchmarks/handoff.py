"""The GPU lane's hand-off of a separated track to a CPU worker: through the pipes vs shared memory.

    python benchmarks/handoff.py [--seconds 55] [--tracks 20] [--repeat 3]

Three processes connected by pipes as in the local executor: a *lane* hands ``--tracks`` tracks (a
``--seconds`` s stereo 44.1 kHz float32 mix and its four stems, as
:class:`mirflow.run.worker.Decoded` with a :class:`~mirflow.core.stems_io.StemsToWrite`) to the
*coordinator*, which forwards each to a *worker*, which opens it and touches every array (a sum,
as any analyzer reads its input). Variants, interleaved ``--repeat`` times:

- ``pipe``: the ``Decoded`` itself pickled through both pipes (mirflow before shared memory);
- ``shm``: :meth:`mirflow.run.worker.ShippedTrack.of` in the lane (one copy into ``/dev/shm``), the
  handle through both pipes, ``open()`` in the worker, ``release()`` in the coordinator once the
  worker is done (what :mod:`mirflow.executors.local` does).

Per variant: CPU seconds per track in each process (``time.process_time``) and wall seconds per
track; medians over the repeats. The coordinator's figure is the one that matters on a GPU: it is
one process for the whole run, merging sidecars and drawing progress while tracks stream through.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path


def make_track(seconds: float, seed: int):
    import numpy as np

    from mirflow.core.audio import Audio
    from mirflow.core.stems_io import StemsToWrite
    from mirflow.run.worker import Decoded

    rng = np.random.default_rng(seed)
    n = int(seconds * 44100)
    stems = {s: rng.standard_normal((2, n), dtype=np.float32) for s in ("drums", "bass", "other", "vocals")}
    return Decoded(Audio(rng.standard_normal((2, n), dtype=np.float32), 44100), None, (), {},
                   {"separation": StemsToWrite(Path("track"), stems, sr=44100)})


def lane(conn: Connection, variant: str, tracks: int, seconds: float) -> None:
    from mirflow.run.worker import ShippedTrack

    made = [make_track(seconds, i) for i in range(2)]  # made before the clock starts
    conn.recv()
    cpu = time.process_time()
    for i in range(tracks):
        decoded = made[i % 2]
        conn.send(ShippedTrack.of(decoded) if variant == "shm" else decoded)
    conn.send(time.process_time() - cpu)


def worker(conn: Connection) -> None:
    from mirflow.run.worker import ShippedTrack

    cpu = time.process_time()
    while (got := conn.recv()) is not None:
        decoded = got.open() if isinstance(got, ShippedTrack) else got
        total = float(decoded.audio.samples.sum())
        total += sum(float(a.sum()) for a in decoded.writes["separation"].stems.values())
        conn.send(total)
    conn.send(time.process_time() - cpu)


def one(variant: str, tracks: int, seconds: float) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    lane_end, lane_here = ctx.Pipe()
    worker_end, worker_here = ctx.Pipe()
    procs = [ctx.Process(target=lane, args=(lane_end, variant, tracks, seconds)),
             ctx.Process(target=worker, args=(worker_end,))]
    for p in procs:
        p.start()
    lane_here.send("go")
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(tracks):
        got = lane_here.recv()
        worker_here.send(got)
        worker_here.recv()
        if variant == "shm":
            got.release()
    coordinator_cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    lane_cpu = lane_here.recv()
    worker_here.send(None)
    worker_cpu = worker_here.recv()
    for p in procs:
        p.join()
    return {"wall": wall / tracks, "lane": lane_cpu / tracks, "coordinator": coordinator_cpu / tracks,
            "worker": worker_cpu / tracks}


def parse(doc: str, argv: list[str] | None, tracks: int) -> argparse.Namespace:
    """The options of the hand-off benchmarks (this one and ``ray_handoff.py``)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=55.0, help="track length, s (default 55)")
    ap.add_argument("--tracks", type=int, default=tracks, help=f"tracks per measurement (default {tracks})")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repeats (default 3)")
    return ap.parse_args(argv)


def header(args: argparse.Namespace, extra: str = "") -> str:
    """The first line of a hand-off benchmark's output: when, where, what."""
    mb = 5 * 2 * int(args.seconds * 44100) * 4 / 1e6
    return (f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
            f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}{extra}; {args.tracks} tracks of "
            f"{args.seconds:g} s ({mb:.0f} MB each: mix + 4 stems), {args.repeat} interleaved repeats")


def main(argv: list[str] | None = None) -> int:
    args = parse(__doc__, argv, tracks=20)
    from mirflow.core.shared import shared_dir

    if shared_dir() is None:
        raise SystemExit("no writable /dev/shm here: mirflow hands tracks through the pipes anyway")
    print(header(args))
    got: dict[str, list[dict[str, float]]] = {"pipe": [], "shm": []}
    for _ in range(args.repeat):
        for variant in got:
            got[variant].append(one(variant, args.tracks, args.seconds))
    keys = ("wall", "lane", "coordinator", "worker")
    print("\n| hand-off | wall s/track | lane CPU s/track | coordinator CPU s/track | worker CPU s/track |")
    print("|---|---|---|---|---|")
    for variant, runs in got.items():
        med = {k: statistics.median(r[k] for r in runs) for k in keys}
        print(f"| {variant} | " + " | ".join(f"{med[k]:.3f}" for k in keys) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
