"""The Ray executor's hand-off of a separated track from a GPU actor to a CPU actor: by value through
the driver vs by object reference.

    python benchmarks/ray_handoff.py [--seconds 55] [--tracks 10] [--repeat 3]

A local Ray instance with two actors wired as in :mod:`mirflow.executors.ray`: a *producer* (the GPU
actor) returns a decoded track (a ``--seconds`` s stereo 44.1 kHz float32 mix and four stems, as
:class:`mirflow.run.worker.Decoded`: 97 MB for 55 s) with its results; the driver passes it to a
*consumer* (the CPU actor), which touches every array. Variants, interleaved ``--repeat`` times:

- ``value``: the ``Decoded`` itself in the results, as mirflow did before: the driver fetches it
  and sends it on as a task argument (a new object put by the driver);
- ``ref``: the producer ``ray.put``s it and returns a :class:`mirflow.executors.ray.Stored`
  reference; the driver forwards the reference; the consumer fetches it
  (:meth:`mirflow.executors.ray.Stored.open`), which is what mirflow does now.

Per variant: the driver's CPU seconds per track (``time.process_time``: what the coordinator spends
on the hand-off) and wall seconds per track, medians over the repeats. On one machine both variants
use the node's shared-memory object store; on a cluster, ``value`` also moves every array from the
GPU node to the driver's node and back out, ``ref`` moves it once, node to node.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from handoff import header, make_track, parse  # noqa: E402 - benchmarks/ is not a package


def main(argv: list[str] | None = None) -> int:
    args = parse(__doc__, argv, tracks=10)
    import ray

    from mirflow.executors.ray import Stored
    from mirflow.core.dataset import Track
    from mirflow.run.worker import WorkUnit

    @ray.remote(num_cpus=0)
    class Producer:
        def __init__(self, seconds: float) -> None:
            self.tracks = [make_track(seconds, i) for i in range(2)]

        def process(self, i: int, by_ref: bool) -> dict:
            decoded = self.tracks[i % 2]
            return {"_decoded": Stored(ray.put(decoded)) if by_ref else decoded}

    @ray.remote(num_cpus=0)
    class Consumer:
        def process(self, unit: WorkUnit) -> float:
            decoded = unit.decoded.open() if isinstance(unit.decoded, Stored) else unit.decoded
            total = float(decoded.audio.samples.sum())
            return total + sum(float(a.sum()) for a in decoded.writes["separation"].stems.values())

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        producer, consumer = Producer.remote(args.seconds), Consumer.remote()
        track = Track(Path("track"), Path("track/full_mix.flac"))
        for by_ref in (False, True):  # warm-up: actors started, object store touched
            unit = WorkUnit(track, ("probe",), decoded=ray.get(producer.process.remote(0, by_ref))["_decoded"])
            ray.get(consumer.process.remote(unit))
        print(header(args, f", ray {ray.__version__}"))
        got: dict[str, list[tuple[float, float]]] = {"value": [], "ref": []}
        for _ in range(args.repeat):
            for variant in got:
                wall, cpu = time.perf_counter(), time.process_time()
                for i in range(args.tracks):
                    res = ray.get(producer.process.remote(i, variant == "ref"))
                    unit = WorkUnit(track, ("probe",), decoded=res.pop("_decoded"))
                    ray.get(consumer.process.remote(unit))
                    del res, unit
                got[variant].append(((time.perf_counter() - wall) / args.tracks,
                                     (time.process_time() - cpu) / args.tracks))
        print("\n| hand-off | wall s/track | driver CPU s/track |")
        print("|---|---|---|")
        for variant, runs in got.items():
            print(f"| {variant} | {statistics.median(w for w, _ in runs):.3f} | "
                  f"{statistics.median(c for _, c in runs):.3f} |")
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
