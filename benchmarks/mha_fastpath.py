"""HTDemucs on the CPU: PyTorch's multi-head-attention fast path on vs off, side by side.

    python benchmarks/mha_fastpath.py [--pairs 4] [--threads 1] [--segment 7.8]

The full-size ``htdemucs`` architecture (random weights: speed does not depend on their values) runs
one forward pass over a ``--segment`` s stereo 44.1 kHz segment of noise, alternately with
``torch.backends.mha.set_fastpath_enabled(True)`` (PyTorch's default: the fused
``_native_multi_head_attention`` kernel, which builds the attention matrix with batched matrix
products) and ``False`` (the standard path, ``scaled_dot_product_attention``: flash attention on
CPU). Per pass it prints wall and CPU seconds (``time.process_time``, steadier than wall time on a
shared machine) and the largest output difference between the two paths; then the medians.
The separation analyzer turns the fast path off on CPU (``analyzers/separation.py``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=4, help="interleaved on/off pairs (default 4)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: what a mirflow worker's pass gets)")
    ap.add_argument("--segment", type=float, default=7.8, help="segment length, s (default 7.8)")
    args = ap.parse_args(argv)

    import torch
    from demucs.htdemucs import HTDemucs

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"], samplerate=44100,
                     segment=args.segment).eval()
    x = torch.randn(1, 2, int(args.segment * 44100))

    def forward(fast: bool) -> tuple[float, float, "torch.Tensor"]:
        torch.backends.mha.set_fastpath_enabled(fast)
        t, c = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            y = model(x)
        return time.perf_counter() - t, time.process_time() - c, y

    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"{args.threads} thread(s), {args.segment} s segment")
    forward(True)  # warm-up: allocator, oneDNN primitives
    cpu: dict[bool, list[float]] = {True: [], False: []}
    wall: dict[bool, list[float]] = {True: [], False: []}
    for i in range(args.pairs):
        on, off = forward(True), forward(False)
        diff = float((on[2] - off[2]).abs().max())
        for fast, res in ((True, on), (False, off)):
            wall[fast].append(res[0])
            cpu[fast].append(res[1])
        print(f"pair {i + 1}: fast path on {on[0]:.1f} s wall / {on[1]:.2f} CPU s, "
              f"off {off[0]:.1f} s / {off[1]:.2f} CPU s, max |difference| {diff:.1e}")
    med = {k: statistics.median(v) for k, v in cpu.items()}
    print(f"median CPU s per pass: on {med[True]:.2f}, off {med[False]:.2f} "
          f"({med[True] / med[False]:.2f}x); median wall: on {statistics.median(wall[True]):.1f} s, "
          f"off {statistics.median(wall[False]):.1f} s; load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
