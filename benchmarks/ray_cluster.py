"""Throughput of the Ray executor on a simulated cluster against the local executor, same cores.

    python benchmarks/ray_cluster.py [--corpus DIR] [--tracks N] [--seconds S] [--nodes K]
                                     [--analyzers A,B] [--repeat R]

A simulated Ray cluster (``ray.cluster_utils.Cluster``) is started on this machine: a head node with
no CPU for work (it holds the driver) and ``K`` worker nodes of one CPU each, so the Ray executor
runs ``K`` single-threaded CPU actors. The local executor runs ``--workers K`` single-threaded
processes on the same machine. Both analyse the first S seconds of N real tracks spread over the
corpus (written as FLAC to a temporary dataset; the corpus is never written to) with
``mirflow.run.coordinator.run`` in this process, every analyzer forced, so each run recomputes
everything; the repetitions are interleaved with alternating order. A run's wall time includes
starting its workers (processes or actors: imports, analyzer set-up) but not starting the cluster,
which a real deployment keeps running. The Ray cluster's own processes (GCS, raylets, object
stores) share the machine's cores with the work: that is part of Ray's overhead here. Besides the
wall time, the table gives the median time to the first finished track (worker start-up: processes
or actors, imports, analyzer set-up) and the median time after it (the steady state).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from clips import build_dataset  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=REPO / "corpus" / "orchestral")
    ap.add_argument("--tracks", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--nodes", type=int, default=2, help="worker nodes of one CPU each")
    ap.add_argument("--analyzers", default="loudness,spectral,tonal")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    sys.path.insert(0, str(REPO / "src"))
    from mirflow.core.config import RunOptions
    from mirflow.run.coordinator import run

    analyzers = args.analyzers.split(",")
    node = {"object_store_memory": 100 * 1024 ** 2}
    with tempfile.TemporaryDirectory(prefix="mirflow-ray-bench-") as tmp:
        dataset = Path(tmp) / "dataset"
        n = len(build_dataset(args.corpus, dataset, args.tracks, args.seconds))
        start = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={**node, "num_cpus": 0,
                                                                "include_dashboard": False})
        for _ in range(args.nodes):
            cluster.add_node(**node, num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        cluster_s = time.perf_counter() - start
        variants = {"local": RunOptions(analyzers=analyzers, executor="local", workers=args.nodes,
                                        device="cpu", force=frozenset(analyzers)),
                    "ray (simulated cluster)": RunOptions(analyzers=analyzers, executor="ray",
                                                          workers=args.nodes, device="cpu",
                                                          force=frozenset(analyzers))}
        walls: dict[str, list[float]] = {k: [] for k in variants}
        first: dict[str, list[float]] = {k: [] for k in variants}
        names = list(variants)
        try:
            for r in range(args.repeat):
                for name in (names if r % 2 == 0 else names[::-1]):
                    summary = run(dataset, variants[name])
                    done = summary.counts[analyzers[0]]["done"]
                    if done != n or summary.failures:
                        raise SystemExit(f"{name}: {done} of {n} tracks done, {summary.failures[:3]}")
                    walls[name].append(summary.wall_seconds)
                    first[name].append(summary.timing.get("first_result_s") or 0.0)
                    print(f"  rep {r + 1} {name}: {walls[name][-1]:.2f} s "
                          f"(first result {first[name][-1]:.2f} s)", flush=True)
        finally:
            ray.shutdown()
            cluster.shutdown()

    audio = n * args.seconds
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"Ray {ray.__version__}, load average {load:.1f}; {n} tracks x {args.seconds:.0f} s, "
          f"-a {args.analyzers}; {args.nodes} workers vs {args.nodes} one-CPU nodes; "
          f"{args.repeat} interleaved repetitions; cluster start-up {cluster_s:.1f} s (not counted)")
    print(f"{'variant':26} {'min s':>7} {'median s':>9} {'max s':>7} {'x realtime':>11} "
          f"{'1st result s':>13} {'after 1st s':>12}")
    for name, w in walls.items():
        after = statistics.median(a - f for a, f in zip(w, first[name]))
        print(f"{name:26} {min(w):7.2f} {statistics.median(w):9.2f} {max(w):7.2f} "
              f"{audio / min(w):11.1f} {statistics.median(first[name]):13.2f} {after:12.2f}")
    ratio = min(walls["ray (simulated cluster)"]) / min(walls["local"])
    print(f"ray / local wall (min): {ratio:.3f}; median: "
          f"{statistics.median(walls['ray (simulated cluster)']) / statistics.median(walls['local']):.3f}")


if __name__ == "__main__":
    main()
