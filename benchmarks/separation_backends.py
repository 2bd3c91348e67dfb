"""HTDemucs fp32 on the CPU: PyTorch eager vs ONNX Runtime vs a frozen TorchScript graph.

    python benchmarks/separation_backends.py [--threads 1] [--repeats 4] [--segment 7.8]
        [--backends torch,onnx,onnx-noarena,onnx-mha,jit-freeze,jit-onednn] [--onnx-dir DIR]
        [--no-spin] [--no-memory]
        [--check-batch 2] [--out results.json]

The full-size ``htdemucs`` architecture (random weights, ``torch.manual_seed(0)``: speed does not
depend on their values) separates one ``--segment`` s stereo 44.1 kHz segment of noise, shape
``(1, 2, int(segment * 44100))``, through each backend in turn, interleaved, ``--repeats`` times
after one warm-up pass each:

* ``torch``: ``model(x)`` eagerly in fp32 under ``torch.no_grad()`` with PyTorch's
  multi-head-attention fast path off, as mirflow's separation analyzer runs it on the CPU.
* ``onnx`` / ``onnx-noarena``: the part of ``HTDemucs.forward`` between the STFT and the iSTFT
  (both branches, the transformer, the normalisation) exported once with the TorchScript-based
  ``torch.onnx.export(..., dynamo=False)`` (batch axis dynamic) and run by an ONNX Runtime
  ``InferenceSession`` on the ``CPUExecutionProvider`` (``ORT_ENABLE_ALL``, ``intra_op_num_threads
  = --threads``), with the CPU memory arena on / off. The STFT, the complex-as-channels reshaping
  and the iSTFT stay in torch, done by the model's own ``_spec``, ``_magnitude``, ``_mask`` and
  ``_ispec`` exactly as ``forward`` does them. The standard export spells attention out as
  MatMul, Softmax, MatMul (the full attention matrix).
* ``onnx-mha``: the same, with attention exported as ONNX Runtime's fused
  ``com.microsoft::MultiHeadAttention`` operator (arena on).
* ``jit-freeze``: the same middle part traced with ``torch.jit.trace``, then ``torch.jit.freeze``
  and ``torch.jit.optimize_for_inference`` (oneDNN fusions).
* ``jit-onednn``: traced and frozen with the oneDNN Graph fuser on (``torch.jit.enable_onednn_fusion``).

Backends that cannot be exported or set up are reported as failed, with the error.
The middle part is not a copy of ``forward``: :class:`Core` runs the model's own ``forward`` with
the four spectrogram helpers replaced on the instance for the duration of the call, so the graph
follows whichever Demucs version is installed.

Per backend it prints the median wall and CPU seconds (``time.process_time``: all threads of the
process, steadier than wall time on a shared machine) per pass, the set-up time (export, tracing,
session creation), the largest difference of the final ``(1, 4, 2, samples)`` output from the
``torch`` backend, and, unless ``--no-memory``, the peak resident memory of a fresh process that
builds the model, sets up only that backend (the ONNX file already exported) and runs two passes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("separation_backends")

SOURCES = ["drums", "bass", "other", "vocals"]
SAMPLERATE = 44100
BACKENDS = ("torch", "onnx", "onnx-noarena", "onnx-mha", "jit-freeze", "jit-onednn")
_HELPERS = ("_spec", "_magnitude", "_mask", "_ispec")


def build_model(segment: float) -> Any:
    """The full-size ``htdemucs`` architecture with seeded random weights, in eval mode."""
    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    return HTDemucs(sources=SOURCES, samplerate=SAMPLERATE, segment=segment).eval()


def make_input(segment: float) -> Any:
    """A fixed noise segment, ``(1, 2, int(segment * 44100))`` float32."""
    import torch

    gen = torch.Generator().manual_seed(1)
    return torch.randn(1, 2, int(segment * SAMPLERATE), generator=gen)


def _core_class() -> type:
    import torch

    class Core(torch.nn.Module):
        """``HTDemucs.forward`` between the STFT and the iSTFT, as a function of real tensors.

        Inputs: ``mix`` ``(B, 2, samples)`` (exactly the training length) and ``mag`` ``(B, 4, 2048,
        frames)``, what ``model._magnitude(model._spec(mix))`` gives (complex as channels).
        Outputs: ``spec`` ``(B, S, 4, 2048, frames)``, the frequency branch's estimate before
        ``_mask``/``_ispec``, and ``wave`` ``(B, S, 2, samples)``, the time branch's output.
        """

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, mix: torch.Tensor, mag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            held: dict[str, torch.Tensor] = {}

            def ispec(z: torch.Tensor, length: int | None = None, scale: int = 0) -> int:
                held["spec"] = z
                return 0  # forward adds this to the time branch: the sum is the time branch

            m = self.model
            # Instance attributes shadow the class's methods for this call only.
            object.__setattr__(m, "_spec", lambda x: None)
            object.__setattr__(m, "_magnitude", lambda z: mag)
            object.__setattr__(m, "_mask", lambda z, x: x)  # x: (B, S, 4, Fr, T), real
            object.__setattr__(m, "_ispec", ispec)
            try:
                wave = m(mix)
            finally:
                for name in _HELPERS:
                    m.__dict__.pop(name, None)
            return held["spec"], wave

    return Core


def spectro_in(model: Any, mix: Any) -> tuple[Any, Any]:
    """The complex STFT ``z`` and its complex-as-channels form ``mag``, as ``forward`` makes them."""
    z = model._spec(mix)
    return z, model._magnitude(z)


def spectro_out(model: Any, spec: Any, wave: Any, length: int) -> Any:
    """The final ``(B, S, 2, length)`` output from the two branches, as ``forward`` combines them."""
    import torch

    x = model._ispec(model._mask(None, torch.as_tensor(spec)), length)
    return torch.as_tensor(wave) + x


def _num_heads(model: Any) -> int:
    """The (single) head count of the model's attention layers."""
    import torch

    heads = {m.num_heads for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)}
    if len(heads) != 1:
        raise ValueError(f"expected one head count in the model's attention layers, got {heads}")
    return heads.pop()


def _fused_attention_symbolic(heads: int) -> Callable:
    """An ONNX symbolic mapping ``aten::scaled_dot_product_attention`` (no mask, default scale) to
    ONNX Runtime's ``com.microsoft::MultiHeadAttention`` (its CPU kernel does not materialise the
    attention matrix); the standard symbolic spells it out as MatMul, Softmax, MatMul."""
    import torch
    from torch.onnx import symbolic_helper as sh

    def sdpa(g: Any, q: Any, k: Any, v: Any, attn_mask: Any = None, dropout_p: Any = None,
             is_causal: Any = None, scale: Any = None, enable_gqa: Any = None) -> Any:
        if not sh._is_none(attn_mask) or not sh._is_none(scale) or sh._maybe_get_const(is_causal, "b"):
            raise NotImplementedError("fused attention export: only unmasked, default-scale SDPA")
        flat = g.op("Constant", value_t=torch.tensor([0, 0, -1]))  # (B, L, H, D) -> (B, L, H*D)
        split = g.op("Constant", value_t=torch.tensor([0, 0, heads, -1]))

        def to_bld(t: Any) -> Any:  # (B, H, L, D) -> (B, L, H*D)
            return g.op("Reshape", g.op("Transpose", t, perm_i=[0, 2, 1, 3]), flat)

        out = g.op("com.microsoft::MultiHeadAttention", to_bld(q), to_bld(k), to_bld(v),
                   num_heads_i=heads)
        return g.op("Transpose", g.op("Reshape", out, split), perm_i=[0, 2, 1, 3])

    return sdpa


def export_onnx(model: Any, mix: Any, path: Path, opset: int, fused_attention: bool = False) -> float:
    """Export :class:`Core` to ``path``; returns the export time, s.

    ``fused_attention``: attention as ONNX Runtime's ``MultiHeadAttention`` contrib operator
    (the graph then runs only on ONNX Runtime)."""
    import torch

    core = _core_class()(model).eval()
    _, mag = spectro_in(model, mix)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = "aten::scaled_dot_product_attention"
    if fused_attention:
        torch.onnx.register_custom_op_symbolic(name, _fused_attention_symbolic(_num_heads(model)), opset)
    t = time.perf_counter()
    try:
        with torch.no_grad():
            torch.onnx.export(
                core, (mix, mag), str(path), dynamo=False, opset_version=opset,
                input_names=["mix", "mag"], output_names=["spec", "wave"],
                dynamic_axes={"mix": {0: "batch"}, "mag": {0: "batch"},
                              "spec": {0: "batch"}, "wave": {0: "batch"}})
    finally:
        if fused_attention:
            torch.onnx.unregister_custom_op_symbolic(name, opset)
    return time.perf_counter() - t


def onnx_runner(model: Any, path: Path, threads: int, arena: bool,
                spin: bool = True) -> tuple[Callable, float]:
    """An ONNX Runtime session on ``path`` wrapped as ``mix -> output``; and its creation time, s.

    ``spin``: ONNX Runtime's default, idle pool threads busy-wait (costs CPU time, with >1 thread)."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_cpu_mem_arena = arena
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    t = time.perf_counter()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    setup = time.perf_counter() - t
    length = int(model.segment * model.samplerate)

    def run(mix: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            _, mag = spectro_in(model, mix)
            spec, wave = sess.run(None, {"mix": mix.numpy(), "mag": mag.contiguous().numpy()})
            return spectro_out(model, torch.from_numpy(spec), torch.from_numpy(wave), length)

    return run, setup


def jit_runner(model: Any, mix: Any, onednn_graph: bool = False) -> tuple[Callable, float]:
    """The middle part traced and frozen, then either optimised for inference (oneDNN fusions of
    convolutions) or, with ``onednn_graph``, handed to the oneDNN Graph fuser
    (``torch.jit.enable_onednn_fusion``); and the set-up time, s (tracing and two profiling runs)."""
    import torch

    core = _core_class()(model).eval()
    _, mag = spectro_in(model, mix)
    t = time.perf_counter()
    torch.jit.enable_onednn_fusion(onednn_graph)
    try:
        with torch.no_grad():
            traced = torch.jit.trace(core, (mix, mag), check_trace=False)
            graph = torch.jit.freeze(traced.eval())
            if not onednn_graph:
                graph = torch.jit.optimize_for_inference(graph)
            for _ in range(2):  # the profiling executor optimises the graph after these runs
                graph(mix, mag)
    finally:
        torch.jit.enable_onednn_fusion(False)
    setup = time.perf_counter() - t
    length = int(model.segment * model.samplerate)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            _, m = spectro_in(model, x)
            spec, wave = graph(x, m)
            return spectro_out(model, spec, wave, length)

    return run, setup


def onnx_file(onnx_dir: Path, name: str) -> Path:
    """The exported graph backend ``name`` runs."""
    return onnx_dir / ("htdemucs_core_mha.onnx" if name == "onnx-mha" else "htdemucs_core.onnx")


def make_runner(name: str, model: Any, mix: Any, threads: int, onnx_dir: Path,
                spin: bool = True) -> tuple[Callable, float]:
    """``(mix -> (1, S, 2, samples) output, set-up time in s)`` for backend ``name``."""
    import torch

    if name == "torch":
        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return model(x)
        return run, 0.0
    if name.startswith("onnx"):
        return onnx_runner(model, onnx_file(onnx_dir, name), threads, arena=(name != "onnx-noarena"),
                           spin=spin)
    if name.startswith("jit"):
        return jit_runner(model, mix, onednn_graph=(name == "jit-onednn"))
    raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")


def _setup_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    torch.backends.mha.set_fastpath_enabled(False)  # as mirflow's separation analyzer on CPU


def _status_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, MiB, from Linux ``/proc`` (0 elsewhere).

    ``VmHWM`` belongs to the address space, which ``exec`` replaces, so unlike ``ru_maxrss`` it
    does not inherit the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return 0.0


def probe(name: str, threads: int, segment: float, onnx_dir: Path, spin: bool) -> dict[str, float]:
    """In a fresh process: RSS (MiB) after building the model, peak after setting up ``name``
    (the ONNX graph already exported), peak after two passes."""
    _setup_torch(threads)
    model = build_model(segment)
    mix = make_input(segment)
    base = _status_mib("VmRSS")
    run, _ = make_runner(name, model, mix, threads, onnx_dir, spin)
    after_setup = _status_mib("VmHWM")
    for _ in range(2):
        run(mix)
    return {"model_rss_mib": base, "setup_peak_mib": after_setup, "peak_rss_mib": _status_mib("VmHWM")}


def probe_in_child(name: str, args: argparse.Namespace, onnx_dir: Path) -> dict[str, float] | None:
    """Run :func:`probe` in a subprocess; ``None`` (and a warning) if it fails."""
    cmd = [sys.executable, __file__, "--probe", name, "--threads", str(args.threads),
           "--segment", str(args.segment), "--onnx-dir", str(onnx_dir)]
    if args.no_spin:
        cmd.append("--no-spin")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        log.warning("memory probe for %s failed (rc %d): %s", name, proc.returncode,
                    proc.stderr.strip().splitlines()[-1:] if proc.stderr else "")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads for torch and ONNX Runtime (default 1)")
    ap.add_argument("--repeats", type=int, default=4, help="interleaved rounds (default 4)")
    ap.add_argument("--segment", type=float, default=7.8, help="segment length, s (default 7.8)")
    ap.add_argument("--backends", default=",".join(BACKENDS),
                    help=f"comma-separated subset of {','.join(BACKENDS)}")
    ap.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    ap.add_argument("--onnx-dir", type=Path, default=None,
                    help="where to write the exported graphs (default: a temporary directory)")
    ap.add_argument("--no-spin", action="store_true",
                    help="ONNX Runtime's idle pool threads sleep instead of busy-waiting")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-backend memory probes")
    ap.add_argument("--check-batch", type=int, default=2,
                    help="also check the ONNX graph at this batch size against torch (0: skip)")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    if args.probe:
        print(json.dumps(probe(args.probe, args.threads, args.segment, args.onnx_dir, not args.no_spin)))
        return 0

    import torch

    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    for n in names:
        if n not in BACKENDS:
            ap.error(f"unknown backend {n!r}; known: {', '.join(BACKENDS)}")
    _setup_torch(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="mirflow-onnx-")
    onnx_dir = args.onnx_dir or Path(tmp.name)
    model = build_model(args.segment)
    mix = make_input(args.segment)
    header = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__}, "
              f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}, "
              f"{os.cpu_count()} cores, {args.threads} thread(s), {args.segment} s segment"
              + (", ORT spinning off" if args.no_spin else ""))
    try:
        import onnxruntime

        header += f", onnxruntime {onnxruntime.__version__}"
    except ImportError:
        log.warning("onnxruntime is not installed: the onnx backends will fail")
    print(f"# {header}, load {os.getloadavg()[0]:.1f}")

    results: dict[str, dict[str, Any]] = {n: {"wall_s": [], "cpu_s": []} for n in names}
    for fused in (False, True):  # export each graph once, before any timing
        users = [n for n in names if n.startswith("onnx") and (n == "onnx-mha") == fused]
        if not users:
            continue
        path = onnx_file(onnx_dir, users[0])
        try:
            export_s = export_onnx(model, mix, path, args.opset, fused_attention=fused)
        except Exception as exc:  # noqa: BLE001 - any exporter failure is a result to report
            log.warning("ONNX export of %s failed: %s: %s", path.name, type(exc).__name__, exc)
            for n in users:
                results[n]["error"] = f"export: {type(exc).__name__}: {str(exc)[:300]}"
                names.remove(n)
            continue
        print(f"ONNX export {path.name}: {export_s:.1f} s, {path.stat().st_size / 2**20:.0f} MiB "
              f"(opset {args.opset})")
        for n in users:
            results[n]["export_s"] = export_s

    runners: dict[str, Callable] = {}
    for n in list(names):
        try:
            runners[n], setup = make_runner(n, model, mix, args.threads, onnx_dir, not args.no_spin)
        except Exception as exc:  # noqa: BLE001 - a backend that cannot be set up is a result
            log.warning("%s: set-up failed: %s: %s", n, type(exc).__name__, str(exc)[:500])
            results[n]["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
            names.remove(n)
            continue
        results[n]["setup_s"] = setup

    with torch.no_grad():  # the reference: eager torch, as mirflow runs it
        ref = model(mix)
    xb = torch.cat([make_input(args.segment) * (1 + i) for i in range(max(1, args.check_batch))])
    ref_b = None
    for n in names:  # warm-up, and the output checks against eager torch
        y = runners[n](mix)
        results[n]["max_abs_diff"] = float((y - ref).abs().max())
        results[n]["out_shape"] = list(y.shape)
        if args.check_batch > 1 and n.startswith("onnx"):  # the dynamic batch axis
            if ref_b is None:
                with torch.no_grad():
                    ref_b = model(xb)
            diff = float((runners[n](xb) - ref_b).abs().max())
            results[n]["batch_check"] = {"batch": args.check_batch, "max_abs_diff": diff}
            print(f"{n} at batch {args.check_batch}: max |difference| from torch {diff:.1e}")

    for i in range(args.repeats):
        line = []
        for n in names:
            t, c = time.perf_counter(), time.process_time()
            runners[n](mix)
            w, cp = time.perf_counter() - t, time.process_time() - c
            results[n]["wall_s"].append(w)
            results[n]["cpu_s"].append(cp)
            line.append(f"{n} {w:.2f} s / {cp:.2f} CPU s")
        print(f"round {i + 1} (load {os.getloadavg()[0]:.1f}): " + ", ".join(line))

    runners.clear()
    main_peak = _status_mib("VmHWM")  # every backend, and the batch checks, in one process
    if not args.no_memory:
        for n in names:
            mem = probe_in_child(n, args, onnx_dir)
            if mem:
                results[n].update(mem)
                print(f"memory {n}: {mem}")

    base = statistics.median(results["torch"]["cpu_s"]) if "torch" in names else None
    print()
    print("| backend | median wall s | median CPU s | CPU vs torch | set-up s | max abs diff "
          "| RSS after model MiB | peak after set-up MiB | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, r in results.items():
        if "error" in r:
            print(f"| {n} | failed: {r['error'][:80]} | | | | | | | |")
            continue
        cpu = statistics.median(r["cpu_s"])
        r["median_wall_s"], r["median_cpu_s"] = statistics.median(r["wall_s"]), cpu
        setup = r.get("setup_s", 0.0) + r.get("export_s", 0.0)
        speed = f"{base / cpu:.2f}x" if base else ""
        print(f"| {n} | {r['median_wall_s']:.2f} | {cpu:.2f} | {speed} | {setup:.1f} "
              f"| {r['max_abs_diff']:.1e} | {r.get('model_rss_mib', 0):.0f} "
              f"| {r.get('setup_peak_mib', 0):.0f} | {r.get('peak_rss_mib', 0):.0f} |")
    print(f"# load at end {os.getloadavg()[0]:.1f}; peak RSS of this (all-backend) process "
          f"{main_peak:.0f} MiB")
    if args.out:
        args.out.write_text(json.dumps({"header": header, "threads": args.threads,
                                        "repeats": args.repeats, "main_process_peak_mib": main_peak,
                                        "results": results}, indent=1))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
