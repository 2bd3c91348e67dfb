"""The Ray executor on a simulated multi-node cluster (``ray.cluster_utils.Cluster``, CPU-only nodes,
one of them declaring a GPU resource so the GPU pool is exercised without a GPU).

Skipped when Ray is not installed. The tests share one small cluster (the node-removal test adds a
node, then takes it away mid-run).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import PLUGINS, probe_calls, run_json, sidecar, sine, write_track
from mirflow.core.config import RunOptions
from mirflow.core.errors import ConfigError
from mirflow.run.coordinator import run

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024 ** 2}


def _start(nodes: list[dict]) -> Cluster:
    """A head node (one CPU) plus ``nodes``, with this process connected as the driver. Worker
    processes find the test plugins through ``PYTHONPATH`` (set before the nodes start)."""
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(PLUGINS), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    for args in nodes:
        cluster.add_node(**{**NODE, **args})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster


def _stop(cluster: Cluster) -> None:
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def cluster():
    """Head + a CPU node + a node with one (declared) GPU: 3 CPUs, 1 GPU."""
    saved = os.environ.get("PYTHONPATH")
    c = _start([{}, {"num_gpus": 1}])
    yield c
    _stop(c)
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved


def _tracks(root: Path, n: int, seconds: float = 0.3, culprits: tuple[str, ...] = ()) -> list[str]:
    names = [f"song {i:02d}" for i in range(n)]
    for c in culprits:  # "song 02-sigkill" replaces "song 02"
        names[int(c.split()[1][:2])] = c
    for i, name in enumerate(names):
        write_track(root, name, sine(200.0 + 37 * i, seconds))
    return names


def _features(data: dict) -> dict:
    return {k: v for k, v in data.items() if not k.startswith("_")}


def test_cluster_sidecars_equal_the_serial_executors(cluster: Cluster, tmp_path: Path) -> None:
    serial_root, ray_root = tmp_path / "serial", tmp_path / "ray"
    serial_root.mkdir()
    names = _tracks(serial_root, 6, 1.5)
    shutil.copytree(serial_root, ray_root)
    analyzers = ["loudness", "spectral", "tonal"]
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # as in every actor: BLAS sums in the same order
        a = run(serial_root, RunOptions(analyzers=analyzers, executor="serial"))
    b = run(ray_root, RunOptions(analyzers=analyzers, executor="ray", device="auto"))
    assert a.counts["loudness"]["done"] == b.counts["loudness"]["done"] == 6
    assert not b.failures
    for name in names:
        want, got = sidecar(serial_root / name), sidecar(ray_root / name)
        assert _features(got) == _features(want) and _features(want)
        assert {n: r["status"] for n, r in got["_mirflow"].items() if n in analyzers} == \
            dict.fromkeys(analyzers, "ok")
    nodes = b.timing["nodes"]
    assert sum(s["tracks"] for s in nodes.values()) == 6  # CPU analyzers only: one chunk per track


def test_gpu_analyzers_run_in_one_actor_per_gpu_beside_the_cpu_pool(
        cluster: Cluster, dataset: Path, probe_log: Path) -> None:
    """The driver's machine has no GPU, the cluster has one: ``auto`` still starts a GPU actor."""
    _tracks(dataset, 8)
    summary = run(dataset, RunOptions(analyzers=["probe_gpu", "probe"], executor="ray", device="auto"))
    assert summary.counts["probe_gpu"]["done"] == summary.counts["probe"]["done"] == 8
    gpu_pids = {line.split()[1] for line in probe_calls(probe_log, "analyze-gpu")}
    cpu_pids = {line.split()[1] for line in probe_calls(probe_log)}
    assert len(gpu_pids) == 1 and len(probe_calls(probe_log, "setup-gpu")) == 1  # loaded once
    assert not gpu_pids & cpu_pids and 1 <= len(cpu_pids) <= 2  # 3 CPUs, one taken by the GPU actor
    assert set(summary.timing["stages"]) == {"ray cpu actors", "ray gpu actors"}


def test_gpu_analyzers_that_cannot_use_the_gpus_run_on_the_cpu_actors(
        cluster: Cluster, dataset: Path, probe_log: Path) -> None:
    """A GPU analyzer whose runtime cannot use the cluster's GPUs (classifiers with ONNX Runtime
    lacking a GPU provider) runs on the CPU actors, several at once, and no GPU actor starts."""
    _tracks(dataset, 4)
    summary = run(dataset, RunOptions(analyzers=["probe_gpu", "probe"], executor="ray", device="auto",
                                      params={"probe_gpu": {"on_cpu": True}}))
    assert summary.counts["probe_gpu"]["done"] == summary.counts["probe"]["done"] == 4
    gpu_pids = {line.split()[1] for line in probe_calls(probe_log, "analyze-gpu")}
    cpu_pids = {line.split()[1] for line in probe_calls(probe_log)}
    assert gpu_pids <= cpu_pids  # in the CPU actors, beside the CPU analyzers
    assert set(summary.timing["stages"]) == {"ray cpu actors"}


def test_what_can_use_the_gpus_is_judged_on_the_gpu_nodes_not_on_the_driver(
        cluster: Cluster, dataset: Path, probe_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU-only head node often lacks the GPU runtime its GPU nodes have (onnxruntime without
    the CUDA provider): the driver's installation must not send the GPU analyzers to the CPU
    actors. The nodes were started before the variable was set, so only the driver lacks it."""
    monkeypatch.setenv("PROBE_GPU_RUNTIME_MISSING", "1")
    _tracks(dataset, 4)
    summary = run(dataset, RunOptions(analyzers=["probe_gpu", "probe"], executor="ray", device="auto"))
    assert summary.counts["probe_gpu"]["done"] == summary.counts["probe"]["done"] == 4
    gpu_pids = {line.split()[1] for line in probe_calls(probe_log, "analyze-gpu")}
    cpu_pids = {line.split()[1] for line in probe_calls(probe_log)}
    assert len(gpu_pids) == 1 and not gpu_pids & cpu_pids  # the GPU actor, not the CPU actors
    assert set(summary.timing["stages"]) == {"ray cpu actors", "ray gpu actors"}


def test_gpu_nodes_that_do_not_answer_leave_the_judgment_to_the_driver(
        cluster: Cluster, dataset: Path, probe_log: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import mirflow.executors.ray as ray_executor

    monkeypatch.setattr(ray_executor, "GPU_CHECK_S", 1e-6)  # no node answers that fast
    monkeypatch.setenv("PROBE_GPU_RUNTIME_MISSING", "1")
    _tracks(dataset, 2)
    with caplog.at_level("WARNING", logger="mirflow"):
        summary = run(dataset, RunOptions(analyzers=["probe_gpu"], executor="ray", device="auto"))
    assert summary.counts["probe_gpu"]["done"] == 2
    assert "judged from this machine's installation" in caplog.text
    assert set(summary.timing["stages"]) == {"ray cpu actors"}


def test_a_track_is_decoded_once_across_the_gpu_and_cpu_actors(
        cluster: Cluster, dataset: Path, probe_log: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU actor hands the decoded mix on to the CPU actor with the track's CPU work: each mix
    is decoded once in the whole cluster (the decode log is forwarded to every actor)."""
    from mirflow.core.audio import DECODE_LOG_ENV

    names = _tracks(dataset, 4)
    log = tmp_path / "decodes.log"
    monkeypatch.setenv(DECODE_LOG_ENV, str(log))
    summary = run(dataset, RunOptions(analyzers=["probe_gpu", "probe", "loudness"], executor="ray",
                                      device="auto"))
    assert not summary.failures and summary.counts["loudness"]["done"] == 4
    decoded = Counter(Path(line.split(" ", 2)[2]).parent.name for line in log.read_text().splitlines())
    assert decoded == Counter(names), decoded


def test_a_handed_on_track_lost_with_its_owner_is_decoded_again(cluster: Cluster, dataset: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The decoded track a GPU actor hands on lives in the object store under that actor; if the
    actor dies before the CPU actor fetches it, the CPU actor decodes the track from its files
    (with a warning) instead of failing it."""
    import numpy as np

    from mirflow.core.dataset import Track
    from mirflow.executors.ray import Stored
    from mirflow.run.worker import WorkUnit, Worker

    @ray.remote(num_cpus=0)
    class Owner:
        def put(self) -> list:
            return [ray.put(np.zeros(1 << 18, np.float32))]  # nested: the reference, not the value

    owner = Owner.remote()
    [ref] = ray.get(owner.put.remote())
    folder = dataset / _tracks(dataset, 1)[0]
    track = Track(folder, next(folder.glob("full_mix.*")))
    def opened(unit: WorkUnit) -> WorkUnit:
        units, lost = Worker._open_handed([unit])
        assert lost == {}  # nothing was left to write: never a failure
        return units[0]

    assert opened(WorkUnit(track, ("probe",), decoded=Stored(ref))).decoded is not None
    ray.kill(owner)
    time.sleep(1.0)
    assert opened(WorkUnit(track, ("probe",), decoded=Stored(ref))).decoded is None
    assert "decoding it again" in caplog.text


def _kill_when(log: Path, calls: int, action) -> threading.Thread:
    """Run ``action`` in a thread once the probe has been called ``calls`` times."""
    def watch() -> None:
        deadline = time.time() + 120
        while len(probe_calls(log)) < calls and time.time() < deadline:
            time.sleep(0.05)
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _exactly_once(root: Path, names: list[str], log: Path, summary, lost: int) -> None:
    """Every track is done once (one ok record), none failed; the probe ran on each track, again
    only on the ``lost`` tracks that were in flight on what died."""
    assert summary.counts["probe"]["done"] == len(names) and not summary.failures
    for name in names:
        assert sidecar(root / name)["_mirflow"]["probe"]["status"] == "ok"
    runs = Counter(line.split(maxsplit=2)[2] for line in probe_calls(log))
    assert set(runs) == set(names)
    assert sum(runs.values()) - len(names) <= lost


def test_actor_killed_mid_run_loses_and_duplicates_no_track(
        cluster: Cluster, dataset: Path, probe_log: Path) -> None:
    names = _tracks(dataset, 12)

    def kill_one_cpu_actor() -> None:
        actors = [a for a in ray.util.list_named_actors() if a.startswith("mirflow-") and "-cpu-" in a]
        ray.kill(ray.get_actor(sorted(actors)[0]))

    killer = _kill_when(probe_log, 3, kill_one_cpu_actor)
    summary = run(dataset, RunOptions(analyzers=["probe"], executor="ray", device="cpu",
                                      params={"probe": {"sleep": 0.4}}))
    killer.join()
    _exactly_once(dataset, names, probe_log, summary, lost=1)
    assert len(probe_calls(probe_log, "setup")) >= 2  # the replacement set up again


def test_fault_injection_culprits_isolated_on_the_cluster(
        cluster: Cluster, dataset: Path, probe_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIRFLOW_PLUGINS", "mirflow_probe,mirflow_faults")
    import mirflow_faults  # noqa: F401 - registers the fault analyzers here too

    culprits = {"song 02-sigkill", "song 05-segv"}
    names = _tracks(dataset, 8, culprits=tuple(culprits))
    summary = run(dataset, RunOptions(analyzers=["fault_gpu", "fault", "probe"], executor="ray",
                                      device="auto"))
    got = {(f.track, f.analyzer): f.error for f in summary.failures}
    assert {t for t, _ in got} == culprits
    for track in culprits:  # the GPU actor died first, then a CPU actor: each culprit fails twice
        for analyzer in ("fault_gpu", "fault"):
            assert got[(track, analyzer)].startswith("worker (Ray actor) died while analysing this track")
    assert summary.counts["fault"]["done"] == summary.counts["fault_gpu"]["done"] == 6
    assert summary.counts["probe"]["done"] == 8
    for name in set(names) - culprits:
        assert sidecar(dataset / name)["fault_gpu_frames"] == sidecar(dataset / name)["fault_frames"] == 13230
    setups = [line.split()[1] for line in probe_calls(probe_log, "setup-fault_gpu")]
    assert len(setups) == len(set(setups)) >= 2  # each replacement GPU actor loads its model again


def test_a_node_that_cannot_read_the_dataset_is_named(cluster: Cluster, tmp_path: Path) -> None:
    from mirflow.executors.ray import RayExecutor
    from mirflow.run.worker import AnalyzerSpec

    executor = RayExecutor([AnalyzerSpec("loudness")], workers=1, device="cpu")
    try:
        with pytest.raises(ConfigError, match=r"cannot read .*missing\.flac on node .*No such file"):
            executor.check_access(str(tmp_path / "missing.flac"))
        (tmp_path / "here.flac").write_bytes(b"x")
        executor.check_access(str(tmp_path / "here.flac"))  # every node reads it: no error
    finally:
        executor.shutdown()


def test_node_removed_mid_run_loses_and_duplicates_no_track(
        cluster: Cluster, dataset: Path, probe_log: Path) -> None:
    doomed = cluster.add_node(**NODE)  # a fourth node for this test: one CPU actor lands there
    cluster.wait_for_nodes()
    names = _tracks(dataset, 12)
    killer = _kill_when(probe_log, 4, lambda: cluster.remove_node(doomed))
    summary = run(dataset, RunOptions(analyzers=["probe"], executor="ray", device="cpu",
                                      params={"probe": {"sleep": 0.4}}))
    killer.join()
    _exactly_once(dataset, names, probe_log, summary, lost=1)
    assert sum(s["tracks"] for s in summary.timing["nodes"].values()) == 12


def test_cli_runs_on_the_cluster_named_by_ray_address(cluster: Cluster, dataset: Path) -> None:
    _tracks(dataset, 4)
    # the actors of earlier tests release their CPUs asynchronously, and the node the test before
    # removed may still be counted (its CPU "available") until the cluster notices it is gone
    deadline = time.time() + 60
    while (ray.cluster_resources().get("CPU", 0) != 3 or ray.available_resources().get("CPU", 0) < 3) \
            and time.time() < deadline:
        time.sleep(0.5)
    code, out = run_json(str(dataset), "-a", "loudness", "--executor", "ray",
                         "--ray-address", cluster.address, timeout=300)
    assert code == 0 and out["analyzers"]["loudness"]["done"] == 4
    assert sum(s["tracks"] for s in out["timing"]["nodes"].values()) == 4
    assert out["timing"]["stages"]["ray cpu actors"]["slots"] == 3  # the cluster's CPUs, not this machine's
