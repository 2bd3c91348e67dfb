"""The headline benchmark: the whole pipeline, the seed's two designs against ``mirflow run``.

    python benchmarks/pipeline.py [--corpus corpus/orchestral] [--tracks 3] [--seconds 20]
                                  [--device cpu|cuda|cuda:N] [--variants a,b,c,s] [--out DIR]
                                  [--work DIR] [--keep]

Same tracks, same full-size random-weight models (speed does not depend on weight values), one
run, each variant in a fresh process (so each pays its own start-up, as a user would):

(a) **the seed's original design**: per file, a ``python -m demucs -n htdemucs`` subprocess (the
    seed's ``subprocess.run(['demucs', ...])``: interpreter, torch import and model load per file);
    per file and per classifier, the model loaded again and the audio decoded again at 16 kHz
    (``librosa.load``); per feature one ``librosa.load`` (``benchmarks/cpu_features.py`` style (a):
    nine loads per track).
(b) **the seed's optimized design** (PERFORMANCE_GUIDE.md): the Demucs model and the four
    classifiers loaded once; stages one after another over all files (separation of every file,
    then the classifiers, then the CPU features), each stage per file serially; per classifier call
    one 16 kHz decode; CPU features one ``librosa.load`` per module (cpu_features.py style (b)).
(c) **``mirflow run DATASET``** with its defaults (only pointed at the models: ``--sep-repo``,
    ``--models-dir``; ``--device`` when given). mirflow also computes per-stem loudness and
    spectral features (its default ``stems`` analyzer), work the seed's designs do not do.
(s) **separation only**, ``mirflow run DATASET -a separation`` (same defaults): the throughput the
    whole pipeline is compared with.

``--precision bf16|fp16`` runs separation in that precision in (b) (``torch.autocast`` around
``apply_model``), (c) and (s) (``--sep-precision``); (a) keeps the ``demucs`` command's fp32.

Models: htdemucs is ``demucs.htdemucs.HTDemucs`` with the ``htdemucs`` configuration
(``benchmarks/separation.py``: 41.5M parameters), saved as a local Demucs repo under the name
``htdemucs``. The classifiers are the VGGish family at full size (``benchmarks/classifiers.py``:
VGGish body of 4 conv blocks, fc 4096, fc 4096, fc 128): for (a) and (b) the four single-stage
classifiers ``*-vggish-audioset-1`` (each holds a whole VGGish); for (c) the two-stage form, the
``audioset-vggish-3`` embedding model plus four 128->100->2 heads, which mirflow uses by default.
They are written here directly as ONNX graphs (``onnx.helper``, He-normal random weights), because
the seed's runtime (Essentia's TensorFlow build) and TensorFlow cannot be installed everywhere;
(a) and (b) therefore run the seed's structure with ONNX Runtime sessions (CUDA provider on a GPU
when ONNX Runtime has it), which isolates the design from the runtime.

Audio: ``--seconds S`` clips from the middle of the first ``--tracks N`` corpus tracks at least
S + 2 s long (``--seconds 0``: whole tracks). Every variant gets its own copy of the dataset.

Recorded per variant: wall seconds, seconds per track of each stage (for (c) and (s) the worker
compute seconds per track from mirflow's timing report; stages overlap there), peak RSS of the
largest process (``getrusage(RUSAGE_CHILDREN)`` of a wrapper process), the accelerator's busy
fraction over the variant (NVML sampled from this process; ``n/a`` without NVML or GPU), realtime
factor; then separation-only throughput, and the speed-ups wall(a)/wall(c) and wall(b)/wall(c).
``--out DIR`` gets ``pipeline.json`` and ``pipeline.md`` (a snippet for benchmarks/RESULTS.md).
Nothing here needs the network; a missing dependency stops the run at once with what to install.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIRED = {"numpy": "numpy", "soundfile": "soundfile", "torch": "torch", "demucs": "demucs",
            "onnx": "onnx", "onnxruntime": "onnxruntime (or onnxruntime-gpu)", "librosa": "librosa",
            "pyloudnorm": "pyloudnorm", "mirflow": "mirflow (pip install -e .)"}
SINGLE = ["danceability-vggish-audioset-1", "tonal_atonal-vggish-audioset-1",
          "voice_instrumental-vggish-audioset-1", "gender-vggish-audioset-1"]
EMBEDDING = "audioset-vggish-3"
HEADS = ["danceability-audioset-vggish-1", "tonal_atonal-audioset-vggish-1",
         "voice_instrumental-audioset-vggish-1", "gender-audioset-vggish-1"]
SOURCES = ["drums", "bass", "other", "vocals"]
VARIANT_NAMES = {"a": "(a) seed original", "b": "(b) seed optimized", "c": "(c) mirflow run",
                 "s": "(s) mirflow separation only"}


def check_dependencies(device: str) -> None:
    import importlib.util

    missing = [pip for mod, pip in REQUIRED.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise SystemExit("missing dependencies: " + ", ".join(missing) + " (pip install them; "
                         "mirflow's extras: pip install -e '.[separation,classifiers]')")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(f"--device {device}: torch {torch.__version__} sees no CUDA device")


# -- models ----------------------------------------------------------------------------------------
def build_demucs_repo(folder: Path) -> Path:
    """Full-size random htdemucs as a local repo, loadable as ``htdemucs`` (and ``htdemucs_random``)."""
    sys.path.insert(0, str(HERE))
    import separation as sepbench  # benchmarks/separation.py

    sepbench.full_size_repo(folder)
    shutil.copy(folder / f"{sepbench.MODEL_NAME}.yaml", folder / "htdemucs.yaml")
    return folder


def _vggish_nodes(helper, numpy_helper, rng, inp: str, prefix: str):
    """VGGish body (NCHW) from ``inp`` [N, 96, 64] to ``{prefix}emb`` [N, 128]; nodes + initialisers."""
    import numpy as np

    nodes, inits = [], []

    def const(name: str, arr) -> str:
        inits.append(numpy_helper.from_array(arr.astype(np.float32), name=prefix + name))
        return prefix + name

    inits.append(numpy_helper.from_array(np.array([1], np.int64), name=prefix + "axes"))
    nodes.append(helper.make_node("Unsqueeze", [inp, prefix + "axes"], [prefix + "x0"]))
    x, cin, i = prefix + "x0", 1, 0
    for block in ((64,), (128,), (256, 256), (512, 512)):
        for cout in block:
            w = const(f"w{i}", rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (9 * cin)))
            b = const(f"b{i}", np.zeros(cout))
            nodes += [helper.make_node("Conv", [x, w, b], [prefix + f"c{i}"], pads=[1, 1, 1, 1]),
                      helper.make_node("Relu", [prefix + f"c{i}"], [prefix + f"r{i}"])]
            x, cin, i = prefix + f"r{i}", cout, i + 1
        nodes.append(helper.make_node("MaxPool", [x], [prefix + f"p{i}"], kernel_shape=[2, 2],
                                      strides=[2, 2]))
        x = prefix + f"p{i}"
    nodes.append(helper.make_node("Flatten", [x], [prefix + "flat"], axis=1))
    x = prefix + "flat"
    for j, (fan_in, width) in enumerate(((512 * 6 * 4, 4096), (4096, 4096), (4096, 128))):
        w = const(f"fw{j}", rng.standard_normal((fan_in, width)) * np.sqrt(2.0 / fan_in)
                  * (0.5 if width == 128 else 1.0))
        b = const(f"fb{j}", np.zeros(width))
        out = prefix + ("emb" if width == 128 else f"f{j}")
        nodes.append(helper.make_node("Gemm", [x, w, b], [out if width == 128 else out + "_l"]))
        if width != 128:
            nodes.append(helper.make_node("Relu", [out + "_l"], [out]))
        x = out
    return nodes, inits, x


def _head_nodes(helper, numpy_helper, rng, inp: str, out: str, op: str):
    import numpy as np

    w1 = numpy_helper.from_array((rng.standard_normal((128, 100)) * 0.05).astype(np.float32), "hw1")
    w2 = numpy_helper.from_array((rng.standard_normal((100, 2)) * 0.05).astype(np.float32), "hw2")
    nodes = [helper.make_node("MatMul", [inp, "hw1"], ["h1l"]),
             helper.make_node("Relu", ["h1l"], ["h1"]),
             helper.make_node("MatMul", ["h1", "hw2"], ["h2"]),
             helper.make_node(op, ["h2"], [out], **({"axis": -1} if op == "Softmax" else {}))]
    return nodes, [w1, w2]


def _save(path: Path, nodes, inits, inp: str, in_dims: list, out: str, width: int) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, path.stem,
                              [helper.make_tensor_value_info(inp, TensorProto.FLOAT, ["N", *in_dims])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", width])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _metadata(path: Path, inp: str, dims: list, out: str, width: int, labels: list[str] | None) -> None:
    meta = {"name": path.stem, "type": "full-size VGGish architecture, random weights (benchmark)",
            "version": "1", "framework": "onnx",
            "schema": {"inputs": [{"name": inp, "type": "float", "shape": [-1, *dims]}],
                       "outputs": [{"name": out, "type": "float", "shape": [-1, width],
                                    "output_purpose": "embeddings" if width == 128 else "predictions"}]}}
    if labels:
        meta["classes"] = labels
    path.with_suffix(".json").write_text(json.dumps(meta))


def build_classifiers(single_dir: Path, two_stage_dir: Path) -> None:
    """The four single-stage classifiers (for the seed) and the two-stage family (for mirflow)."""
    import numpy as np
    from onnx import helper, numpy_helper

    from mirflow.models import registry as models

    single_dir.mkdir(parents=True, exist_ok=True)
    two_stage_dir.mkdir(parents=True, exist_ok=True)
    inp = "model/Placeholder"
    for k, name in enumerate(SINGLE):
        rng = np.random.default_rng(10 + k)
        body, inits, emb = _vggish_nodes(helper, numpy_helper, rng, inp, "v/")
        head, hinits = _head_nodes(helper, numpy_helper, rng, emb, "model/Sigmoid", "Sigmoid")
        path = single_dir / f"{name}.onnx"
        _save(path, body + head, inits + hinits, inp, [96, 64], "model/Sigmoid", 2)
        _metadata(path, inp, [96, 64], "model/Sigmoid", 2, list(models.get(name).labels))
    rng = np.random.default_rng(20)
    body, inits, emb = _vggish_nodes(helper, numpy_helper, rng, inp, "v/")
    body.append(helper.make_node("Identity", [emb], ["model/vggish/embeddings"]))
    path = two_stage_dir / f"{EMBEDDING}.onnx"
    _save(path, body, inits, inp, [96, 64], "model/vggish/embeddings", 128)
    _metadata(path, inp, [96, 64], "model/vggish/embeddings", 128, None)
    for k, name in enumerate(HEADS):
        head, hinits = _head_nodes(helper, numpy_helper, np.random.default_rng(30 + k), inp,
                                   "model/Softmax", "Softmax")
        path = two_stage_dir / f"{name}.onnx"
        _save(path, head, hinits, inp, [128], "model/Softmax", 2)
        _metadata(path, inp, [128], "model/Softmax", 2, list(models.get(name).labels))
    print(f"classifiers: 4 single-stage + embedding + 4 heads, full-size VGGish, random weights",
          flush=True)


# -- audio -----------------------------------------------------------------------------------------
def make_tracks(corpus: Path, dest: Path, n: int, seconds: float) -> list[Path]:
    """``n`` mixes as ``dest/<name>/full_mix.<ext>``: clips of ``seconds`` or (0) whole tracks."""
    import soundfile as sf

    from mirflow.core.audio import decode

    sources = sorted(corpus.glob("*/full_mix.*"))
    if not sources:
        raise SystemExit(f"no tracks in {corpus} (build it with `make corpus`, or pass --corpus)")
    out = []
    for src in sources:
        if len(out) == n:
            break
        try:
            dur = sf.info(str(src)).duration
        except RuntimeError:
            continue
        if seconds and dur < seconds + 2:
            continue
        folder = dest / src.parent.name
        folder.mkdir(parents=True)
        if seconds:
            audio = decode(src)
            start = max(0, audio.frames // 2 - int(seconds * audio.sr) // 2)
            sf.write(str(folder / "full_mix.flac"),
                     audio.samples[:, start:start + int(seconds * audio.sr)].T, audio.sr)
            out.append(folder / "full_mix.flac")
        else:
            shutil.copy(src, folder / src.name)
            out.append(folder / src.name)
    if len(out) < n:
        raise SystemExit(f"only {len(out)} corpus tracks of at least {seconds + 2:.0f} s in {corpus}")
    return out


def copy_dataset(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


# -- variants (each runs in its own child process) -------------------------------------------------
def _ort_session(path: Path, device: str):
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.split(":")[1]) if ":" in device else 0
        providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    return ort.InferenceSession(str(path), providers=providers)


def _classify(session, path: Path) -> float:
    """One seed-style classifier call: decode at 16 kHz mono, VGGish patches, model, mean score."""
    import librosa

    from mirflow.models import vggish

    y, _ = librosa.load(str(path), sr=16000, mono=True)
    x = vggish.patches(y).astype("float32")
    act = session.run(None, {session.get_inputs()[0].name: x})[0]
    return float(act[:, 0].mean())


def _separate_loaded(model, path: Path, device: str, precision: str = "fp32") -> None:
    """The seed's optimized separation of one file: decode, ``apply_model``, write the stems
    (``precision`` other than fp32: under ``torch.autocast``, as the seed would add it)."""
    import contextlib

    import soundfile as sf
    import torch
    from demucs.apply import apply_model

    from mirflow.core.audio import decode, resample, to_stereo

    audio = decode(path)
    wav = torch.from_numpy(resample(to_stereo(audio.samples), audio.sr, model.samplerate))
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    autocast = (contextlib.nullcontext() if precision == "fp32" else torch.autocast(
        device.split(":")[0], dtype=torch.bfloat16 if precision == "bf16" else torch.float16))
    with torch.no_grad(), autocast:
        sources = apply_model(model, ((wav - mean) / std)[None], shifts=1, overlap=0.25,
                              device=device)[0].float()
    sources = (sources * std + mean).cpu().numpy()
    for name, stem in zip(model.sources, sources):
        sf.write(str(path.parent / f"{name}.wav"), stem.T, model.samplerate, subtype="PCM_16")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def variant_a(tracks: list[Path], work: Path, device: str) -> dict:
    sys.path.insert(0, str(HERE))
    import cpu_features as seedcpu

    stages = {"separation": 0.0, "classifiers": 0.0, "features": 0.0}
    for path in tracks:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "demucs", "-n", "htdemucs", "--repo",
                        str(work / "demucs"), "-d", device, "-o", str(path.parent / "separated"),
                        str(path)], check=True, capture_output=True)
        stages["separation"] += time.perf_counter() - t
        t = time.perf_counter()
        for name in SINGLE:
            _classify(_ort_session(work / "single" / f"{name}.onnx", device), path)
        stages["classifiers"] += time.perf_counter() - t
        t = time.perf_counter()
        seedcpu.analyze_original(str(path))
        stages["features"] += time.perf_counter() - t
    return {"stages": stages}


def variant_b(tracks: list[Path], work: Path, device: str, precision: str = "fp32") -> dict:
    sys.path.insert(0, str(HERE))
    import cpu_features as seedcpu
    from demucs.pretrained import get_model

    stages = {"separation": 0.0, "classifiers": 0.0, "features": 0.0}
    t = time.perf_counter()
    model = get_model("htdemucs", repo=work / "demucs").to(device).eval()
    sessions = [_ort_session(work / "single" / f"{n}.onnx", device) for n in SINGLE]
    load = time.perf_counter() - t
    t = time.perf_counter()
    for path in tracks:
        _separate_loaded(model, path, device, precision)
    _sync(device)
    stages["separation"] = time.perf_counter() - t
    t = time.perf_counter()
    for path in tracks:
        for s in sessions:
            _classify(s, path)
    stages["classifiers"] = time.perf_counter() - t
    t = time.perf_counter()
    for path in tracks:
        seedcpu.analyze_seed_loop(str(path))
    stages["features"] = time.perf_counter() - t
    return {"stages": stages, "model_load_s": load}


def variant_mirflow(dataset: Path, work: Path, device: str, separation_only: bool,
                    precision: str = "fp32") -> dict:
    cmd = [sys.executable, "-m", "mirflow", "run", str(dataset), "--sep-repo", str(work / "demucs"),
           "--json"]
    if precision != "fp32":
        cmd += ["--sep-precision", precision]
    if separation_only:
        cmd += ["-a", "separation"]
    else:
        cmd += ["--models-dir", str(work / "two_stage")]
    if device != "auto":
        cmd += ["--device", device]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    try:
        summary = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"mirflow run gave no JSON (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    failed = {n: c for n, c in summary["analyzers"].items() if c.get("failed") or c.get("unavailable")}
    if proc.returncode != 0 or failed:
        raise SystemExit(f"mirflow run did not analyse everything (exit {proc.returncode}): "
                         f"{json.dumps(failed)} {json.dumps(summary.get('unavailable'))}\n"
                         f"{json.dumps(summary.get('failures'))[:3000]}\n{proc.stderr[-3000:]}")
    timing = summary.get("timing") or {}
    stages = {n: a["compute_s"] for n, a in (timing.get("analyzers") or {}).items()}
    if (timing.get("decode") or {}).get("tracks"):  # (a) and (b) count decoding in their stages
        stages["decode"] = timing["decode"]["compute_s"]
    return {"stages": stages, "timing": timing, "command": " ".join(cmd[1:])}


def child_main(args: argparse.Namespace) -> None:
    """Run one variant; write its JSON result to ``--result``."""
    dataset = Path(args.dataset)
    tracks = sorted(p for p in dataset.glob("*/full_mix.*"))
    t0 = time.perf_counter()
    if args.child == "a":
        res = variant_a(tracks, args.work, args.device_torch)
    elif args.child == "b":
        res = variant_b(tracks, args.work, args.device_torch, args.precision)
    else:
        res = variant_mirflow(dataset, args.work, args.device, args.child == "s", args.precision)
    res["wall_s"] = time.perf_counter() - t0
    Path(args.result).write_text(json.dumps(res))


# -- orchestration ----------------------------------------------------------------------------------
WRAPPER = ("import json, resource, subprocess, sys\n"
           "rc = subprocess.run(sys.argv[2:]).returncode\n"
           "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
           "open(sys.argv[1], 'w').write(json.dumps({'rc': rc, 'maxrss_kib': r.ru_maxrss,\n"
           "    'cpu_s': r.ru_utime + r.ru_stime}))\n"
           "sys.exit(rc)\n")


def run_variant(v: str, dataset: Path, args: argparse.Namespace, monitor_index: int | None) -> dict:
    from mirflow.run.timing import AcceleratorMonitor

    result, usage = args.work / f"result-{v}.json", args.work / f"usage-{v}.json"
    cmd = [sys.executable, "-c", WRAPPER, str(usage), sys.executable, str(Path(__file__).resolve()),
           "--child", v, "--dataset", str(dataset), "--work", str(args.work),
           "--device", args.device, "--precision", args.precision, "--result", str(result)]
    monitor = AcceleratorMonitor(monitor_index, interval=0.1) if monitor_index is not None else None
    note = "n/a: CPU run" if monitor is None else ""
    if monitor is not None and not monitor.start():
        note, monitor = monitor.note, None
    t0 = time.perf_counter()
    proc = subprocess.run(cmd)
    wall = time.perf_counter() - t0
    busy = monitor.stop() if monitor is not None else None
    if proc.returncode != 0 or not result.exists():
        raise SystemExit(f"variant {v} failed (exit {proc.returncode})")
    res = json.loads(result.read_text())
    use = json.loads(usage.read_text())
    res.update(process_wall_s=wall, peak_rss_mib=use["maxrss_kib"] / 1024, cpu_s=use["cpu_s"],
               accelerator_busy=busy, accelerator_note=note or (monitor.note if monitor else ""))
    return res


def to_markdown(report: dict) -> str:
    env, rows = report["env"], report["variants"]
    tracks, audio = env["tracks"], env["audio_s"]
    lines = [f"### Whole pipeline, {env['device']} ({env['date']})", "",
             f"- **Machine**: {env['machine']}; separation in {env.get('precision', 'fp32')}; "
             f"load average {env['load_avg_start']:.1f} at start, "
             f"{env['load_avg_end']:.1f} at the end.",
             f"- **Tracks**: {tracks} x {env['clip']} from `{env['corpus']}` ({audio:.0f} s of audio): "
             + ", ".join(env["track_names"]) + ".",
             f"- **Command**: `{env['command']}`", "",
             "| variant | wall s | x realtime | CPU s | separation s/track | classifiers s/track | "
             "CPU features s/track | peak RSS MiB | accelerator busy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v, r in rows.items():
        st = r["stages"]
        if v in ("c", "s"):
            sep = st.get("separation")
            cls = st.get("classifiers")
            feat = sum(x for n, x in st.items() if n not in ("separation", "classifiers")) or None
        else:
            sep, cls, feat = st.get("separation"), st.get("classifiers"), st.get("features")
        busy = r.get("accelerator_busy")
        cells = [VARIANT_NAMES[v], f"{r['wall_s']:.1f}", f"{audio / r['wall_s']:.2f}",
                 f"{r['cpu_s']:.0f}"]
        cells += ["" if x is None else f"{x / tracks:.2f}" for x in (sep, cls, feat)]
        cells += [f"{r['peak_rss_mib']:.0f}",
                  f"{busy * 100:.0f} %" if busy is not None else (r.get("accelerator_note") or "n/a")]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    ratios = report["ratios"]
    for k, text in (("a_over_c", "(c) is {:.2f}x faster than (a)"),
                    ("b_over_c", "(c) is {:.2f}x faster than (b)"),
                    ("c_vs_separation_only", "whole pipeline (c) at {:.2f} of separation-only (s) "
                                             "throughput")):
        if ratios.get(k) is not None:
            lines.append("- " + text.format(ratios[k]) + ".")
    lines += ["", "For (c) and (s) the stage columns are mirflow's worker compute seconds per track "
              "(stages overlap; features include per-stem loudness and spectral, and decoding); for (a) and (b) "
              "they are the wall seconds of each stage. CPU s: user + system seconds of the variant's whole "
              "process tree (steadier than wall time on a shared machine). Peak RSS is the largest "
              "single process."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path("corpus/orchestral"))
    ap.add_argument("--tracks", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0, help="clip length; 0 = whole tracks")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (mirflow's choice)")
    ap.add_argument("--variants", default="a,b,c,s")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                    help="separation precision of (b) (autocast), (c) and (s) (--sep-precision); "
                         "default fp32, mirflow's default")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, help="folder for pipeline.json and pipeline.md")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--markdown", type=Path, metavar="JSON",
                    help="only print the markdown of an earlier run's pipeline.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--dataset", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.device_torch = "cuda:0" if args.device in ("cuda", "auto") and args.child in ("a", "b") \
        and _cuda() else ("cpu" if args.device == "auto" else args.device)
    if args.child:
        child_main(args)
        return
    if args.markdown:
        print(to_markdown(json.loads(args.markdown.read_text())), end="")
        return
    check_dependencies(args.device)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANT_NAMES)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from a, b, c, s")
    scratch = args.work is None
    args.work = (args.work or Path(tempfile.mkdtemp(prefix="mirflow-pipeline-"))).resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    import soundfile as sf
    import torch

    try:
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load0 = os.getloadavg()[0]
        build_demucs_repo(args.work / "demucs")
        build_classifiers(args.work / "single", args.work / "two_stage")
        source = args.work / "tracks"
        mixes = make_tracks(args.corpus, source, args.tracks, args.seconds)
        audio = sum(sf.info(str(m)).duration for m in mixes)
        gpu_index = None
        machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        if args.device.startswith("cuda") or (args.device == "auto" and _cuda()):
            gpu_index = int(args.device.split(":")[1]) if ":" in args.device else 0
            machine += f", {torch.cuda.get_device_name(gpu_index)}"
        env = {"date": started, "machine": machine, "device": args.device, "torch": torch.__version__,
               "precision": args.precision,
               "tracks": len(mixes), "audio_s": audio, "corpus": str(args.corpus),
               "clip": f"{args.seconds:.0f} s clips" if args.seconds else "whole tracks",
               "track_names": [m.parent.name for m in mixes], "load_avg_start": load0,
               "command": "python benchmarks/pipeline.py " + " ".join(sys.argv[1:])}
        print(json.dumps(env), flush=True)
        rows: dict[str, dict] = {}
        for v in variants:
            dataset = copy_dataset(source, args.work / f"dataset-{v}")
            r = run_variant(v, dataset, args, gpu_index)
            rows[v] = r
            print(f"{VARIANT_NAMES[v]:30s} wall {r['wall_s']:7.1f} s  {audio / r['wall_s']:6.2f}x "
                  f"realtime  peak RSS {r['peak_rss_mib']:6.0f} MiB  stages "
                  + ", ".join(f"{k} {x:.1f} s" for k, x in r["stages"].items()), flush=True)
        env["load_avg_end"] = os.getloadavg()[0]
        wall = {v: r["wall_s"] for v, r in rows.items()}
        ratios = {"a_over_c": wall["a"] / wall["c"] if "a" in wall and "c" in wall else None,
                  "b_over_c": wall["b"] / wall["c"] if "b" in wall and "c" in wall else None,
                  "c_vs_separation_only": wall["s"] / wall["c"] if "s" in wall and "c" in wall
                  else None,
                  "separation_only_x_realtime": audio / wall["s"] if "s" in wall else None}
        report = {"env": env, "variants": rows, "ratios": ratios}
        text = to_markdown(report)
        print(text)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "pipeline.json").write_text(json.dumps(report, indent=1))
            (args.out / "pipeline.md").write_text(text)
            print(f"wrote {args.out / 'pipeline.json'} and {args.out / 'pipeline.md'}")
    finally:
        if scratch and not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
