"""Benchmark: VGGish-family classifiers, the seed's way vs mirflow's, on real tracks.

Full-size VGGish architectures with random weights (speed does not depend on weight values):
four single-stage classifiers ``[N, 96, 64] -> model/Sigmoid [N, 2]`` (VGGish + 100-unit dense +
2-way sigmoid), the ``audioset-vggish-3`` embedding model and four heads ``[N, 128] -> model/Softmax``.
They are built with TensorFlow as frozen ``.pb`` graphs and converted to ``.onnx`` with
``mirflow models convert`` (tf2onnx), under their upstream names, in one models folder.

Variants, same tracks, same weights:

(a) the seed's original: per file and per model, ``MonoLoader(sampleRate=16000)`` and a new
    ``TensorflowPredictVGGish`` (the model is loaded for every file);
(b) the seed's optimized: the four ``TensorflowPredictVGGish`` loaded once; per file and per
    model, a ``MonoLoader`` and the model's own front end;
(c) mirflow, single-stage models: one decode and one numpy front end per track, the four ONNX
    models batched across all tracks (``ClassifiersAnalyzer.analyze_batch``);
(d) mirflow, two-stage models: one embedding pass per patch, four small heads.

Also checked: scores of (c) against (b) on the same models, and the numpy front end against
Essentia's ``TensorflowInputVGGish`` on the real tracks.

Needs, in one environment: mirflow, onnxruntime, essentia-tensorflow, tensorflow-cpu, tf2onnx.
TensorFlow and essentia-tensorflow cannot share a process, so every stage runs in its own child
process. Usage::

    python benchmarks/classifiers.py --corpus corpus/orchestral \\
        --tracks battle-epic casualties_of_war defeat --work "$(mktemp -d)"
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SINGLE = ["danceability-vggish-audioset-1", "tonal_atonal-vggish-audioset-1",
          "voice_instrumental-vggish-audioset-1", "gender-vggish-audioset-1"]
HEADS = ["danceability-audioset-vggish-1", "tonal_atonal-audioset-vggish-1",
         "voice_instrumental-audioset-vggish-1", "gender-audioset-vggish-1"]
EMBEDDING = "audioset-vggish-3"


def _cpu() -> float:
    """User + system CPU seconds of this process, all threads."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# -- stage: build ------------------------------------------------------------------------------------
def _vggish_body(tf, x, rng):
    """VGGish (Hershey et al. 2017): 4 conv blocks, 2 x fc 4096, fc 128; He-normal random weights."""
    import numpy as np

    def const(shape, fan_in, scale=1.0):
        return tf.constant((rng.standard_normal(shape) * scale * np.sqrt(2.0 / fan_in)).astype(np.float32))

    net = tf.reshape(x, [-1, 96, 64, 1])
    cin = 1
    for block in ((64,), (128,), (256, 256), (512, 512)):
        for cout in block:
            net = tf.nn.relu(tf.nn.conv2d(net, const((3, 3, cin, cout), 9 * cin), 1, "SAME")
                             + tf.constant(np.zeros(cout, np.float32)))
            cin = cout
        net = tf.nn.max_pool2d(net, 2, 2, "SAME")
    net = tf.reshape(net, [-1, 6 * 4 * 512])
    for width, fan_in in ((4096, 12288), (4096, 4096)):
        net = tf.nn.relu(tf.matmul(net, const((fan_in, width), fan_in)))
    return tf.matmul(net, const((4096, 128), 4096, 0.5))


def _head(tf, emb, rng):
    import numpy as np

    hidden = tf.nn.relu(tf.matmul(emb, tf.constant((rng.standard_normal((128, 100)) * 0.05).astype(np.float32))))
    return tf.matmul(hidden, tf.constant((rng.standard_normal((100, 2)) * 0.05).astype(np.float32)))


def stage_build(models_dir: Path) -> None:
    import numpy as np
    import tensorflow as tf

    tf1 = tf.compat.v1
    models_dir.mkdir(parents=True, exist_ok=True)

    def save(name: str, build) -> None:
        path = models_dir / f"{name}.pb"
        if path.exists():
            return
        graph = tf.Graph()
        with graph.as_default():
            build()
        path.write_bytes(graph.as_graph_def().SerializeToString())
        print(f"built {path} ({path.stat().st_size / 1e6:.0f} MB)", flush=True)

    for i, name in enumerate(SINGLE):
        def single(i=i):
            rng = np.random.default_rng(100 + i)
            x = tf1.placeholder(tf.float32, (None, 96, 64), name="model/Placeholder")
            tf.sigmoid(_head(tf, _vggish_body(tf, x, rng), rng), name="model/Sigmoid")
        save(name, single)

    def embedding():
        x = tf1.placeholder(tf.float32, (None, 96, 64), name="model/Placeholder")
        tf.identity(_vggish_body(tf, x, np.random.default_rng(200)), name="model/vggish/embeddings")
    save(EMBEDDING, embedding)
    for i, name in enumerate(HEADS):
        def head(i=i):
            e = tf1.placeholder(tf.float32, (None, 128), name="model/Placeholder")
            tf.nn.softmax(_head(tf, e, np.random.default_rng(300 + i)), name="model/Softmax")
        save(name, head)


def stage_convert(models_dir: Path) -> None:
    from mirflow.models import registry as models

    for name in SINGLE + [EMBEDDING] + HEADS:
        if not (models_dir / f"{name}.onnx").exists():
            t = time.perf_counter()
            models.convert(name, models_dir=models_dir)
            print(f"converted {name} in {time.perf_counter() - t:.1f} s", flush=True)


# -- stage: the seed's Essentia variants ----------------------------------------------------------
def stage_essentia(models_dir: Path, tracks: list[Path], variant: str) -> dict:
    import essentia
    import essentia.standard as es
    import numpy as np

    essentia.log.infoActive = False
    graphs = [str(models_dir / f"{n}.pb") for n in SINGLE]
    scores: dict[str, list[float]] = {}
    t0, c0 = time.perf_counter(), _cpu()
    load = 0.0
    if variant == "b":
        t = time.perf_counter()
        loaded = [es.TensorflowPredictVGGish(graphFilename=g, output="model/Sigmoid") for g in graphs]
        load = time.perf_counter() - t
    for track in tracks:
        for j, g in enumerate(graphs):
            audio = es.MonoLoader(filename=str(track), sampleRate=16000)()
            if variant == "a":
                model = es.TensorflowPredictVGGish(graphFilename=g, output="model/Sigmoid")
            else:
                model = loaded[j]
            act = np.asarray(model(audio))
            scores.setdefault(track.parent.name, []).append(float(act[:, 0].mean()))
    total, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"variant": variant, "seconds": total, "cpu_seconds": cpu, "load_seconds": load,
            "scores": scores}


# -- stage: mirflow -------------------------------------------------------------------------------
def stage_mirflow(models_dir: Path, tracks: list[Path], variant: str, batch: int) -> dict:
    """``variant`` c or d; ``c-monoloader``: (c) fed Essentia's MonoLoader signal (score check only)."""
    import shutil
    import tempfile

    from mirflow.models import vggish
    from mirflow.analyzers.classifiers import ClassifiersAnalyzer
    from mirflow.core.audio import TrackContext

    # one folder per variant so that "auto" picks exactly the form under test
    names = SINGLE if variant.startswith("c") else [EMBEDDING] + HEADS
    folder = Path(tempfile.mkdtemp(prefix=f"mirflow-bench-{variant}-"))
    for n in names:
        for ext in ("onnx",):
            os.symlink(models_dir / f"{n}.{ext}", folder / f"{n}.{ext}")
    try:
        t = time.perf_counter()
        analyzer = ClassifiersAnalyzer(models_dir=str(folder), backend="onnx", batch=batch)
        analyzer.setup(os.environ.get("MIRFLOW_BENCH_DEVICE", "cpu"))
        load = time.perf_counter() - t
        if variant == "c-monoloader":  # same 16 kHz signal as the seed's, to compare models only
            import essentia.standard as es

            ctxs = [TrackContext.from_array(es.MonoLoader(filename=str(p), sampleRate=16000)(), 16000)
                    for p in tracks]
        t0, c0 = time.perf_counter(), _cpu()
        if variant != "c-monoloader":
            ctxs = [TrackContext(p) for p in tracks]
        outs = analyzer.analyze_batch(ctxs)
        total, cpu = time.perf_counter() - t0, _cpu() - c0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    keys = ["danceability", "atonality", "instrumentalness", "vocal_gender_female"]
    scores = {p.parent.name: [o[k] for k in keys] for p, o in zip(tracks, outs)}
    providers = sorted({p for r in analyzer.runners.values() for p in r.session.get_providers()})
    return {"variant": variant, "seconds": total, "cpu_seconds": cpu, "load_seconds": load,
            "scores": scores, "providers": providers, "patches": sum(len(vggish.track_patches(c)) for c in ctxs)}


# -- stage: front-end check -----------------------------------------------------------------------
def stage_frontend(tracks: list[Path]) -> dict:
    import essentia
    import essentia.standard as es
    import numpy as np

    from mirflow.models import vggish

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from essentia_reference import essentia_reference_frames  # test helper, not library code

    essentia.log.infoActive = False
    out = {}
    for track in tracks:
        audio = es.MonoLoader(filename=str(track), sampleRate=16000)()
        t = time.perf_counter()
        theirs = essentia_reference_frames(audio)
        t_ess = time.perf_counter() - t
        t = time.perf_counter()
        ours = vggish.log_mel_frames(audio)
        t_np = time.perf_counter() - t
        out[track.parent.name] = {"max_abs_diff": float(np.abs(ours - theirs).max()),
                                  "frames": len(ours), "numpy_s": t_np, "essentia_s": t_ess}
    return out


# -- orchestration ---------------------------------------------------------------------------------
def _child(stage: str, args: argparse.Namespace, *extra: str) -> dict | None:
    cmd = [sys.executable, __file__, "--stage", stage, "--work", str(args.work), "--corpus",
           str(args.corpus), "--batch", str(args.batch), "--tracks", *args.tracks, *extra]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES":
           os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"stage {stage} failed")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    for ln in proc.stdout.splitlines():
        if not ln.startswith("RESULT "):
            print(ln, flush=True)
    return json.loads(lines[-1][7:]) if lines else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("corpus/orchestral"))
    ap.add_argument("--tracks", nargs="+", default=["battle-epic", "casualties_of_war", "defeat"])
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mirflow-bench-classifiers")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--variants", default="abcd")
    ap.add_argument("--repeat", type=int, default=1,
                    help="Rounds of (b), (c), (d), interleaved; the fastest of each is kept "
                         "((a) runs once). Helps on a shared, busy machine.")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    models_dir = args.work / "models"
    tracks = [args.corpus / t / "full_mix.ogg" for t in args.tracks]

    if args.stage:
        result = None
        if args.stage == "build":
            stage_build(models_dir)
        elif args.stage == "convert":
            stage_convert(models_dir)
        elif args.stage == "essentia":
            result = stage_essentia(models_dir, tracks, args.variant)
        elif args.stage == "mirflow":
            result = stage_mirflow(models_dir, tracks, args.variant, args.batch)
        elif args.stage == "frontend":
            result = stage_frontend(tracks)
        if result is not None:
            print("RESULT " + json.dumps(result), flush=True)
        return

    import soundfile as sf

    seconds = sum(sf.info(str(t)).duration for t in tracks)
    print(f"{len(tracks)} tracks, {seconds:.1f} s of audio; models in {models_dir}", flush=True)
    _child("build", args)
    _child("convert", args)
    results = {"tracks": args.tracks, "audio_seconds": seconds, "batch": args.batch,
               "frontend": _child("frontend", args)}
    runs: dict[str, list[dict]] = {}
    for rnd in range(max(1, args.repeat)):
        for v in args.variants:
            if v == "a" and rnd > 0:
                continue
            stage = "essentia" if v in "ab" else "mirflow"
            r = _child(stage, args, "--variant", v)
            r["loadavg"] = os.getloadavg()[0]
            runs.setdefault(v, []).append(r)
            per = r["seconds"] * 1000 / (len(tracks) * 4)
            print(f"round {rnd + 1} ({v}) {r['seconds']:.2f} s wall, {r['cpu_seconds']:.1f} s CPU "
                  f"({per:.0f} ms per track per model; model load {r['load_seconds']:.2f} s; "
                  f"load average {r['loadavg']:.1f})", flush=True)
    for v, rs in runs.items():
        results[v] = min(rs, key=lambda r: r["seconds"])
        results[v]["all_seconds"] = [r["seconds"] for r in rs]
    if "b" in results and "c" in results:
        results["c-monoloader"] = _child("mirflow", args, "--variant", "c-monoloader")
        for other in ("c", "c-monoloader"):
            diffs = [abs(x - y) for t in args.tracks
                     for x, y in zip(results["b"]["scores"][t], results[other]["scores"][t])]
            results[f"max_score_diff_b_{other}"] = max(diffs)
            print(f"max |score(b) - score({other})| = {max(diffs):.2e}", flush=True)
        for v in "cd":
            if v in results:
                print(f"speed-up ({v}) vs (b): {results['b']['seconds'] / results[v]['seconds']:.2f}x")
    fe = results["frontend"]
    print("front end vs Essentia, max abs diff: " +
          ", ".join(f"{k} {v['max_abs_diff']:.1e}" for k, v in fe.items()), flush=True)
    out = args.work / "results.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
