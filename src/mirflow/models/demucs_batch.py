"""Batched Demucs inference: segments from several tracks share one forward pass.

:func:`demucs.apply.apply_model` separates one track at a time: it cuts the mix into model
segments (``segment`` seconds, ``overlap`` between neighbours), runs each segment through the
model on its own and overlap-adds the outputs with a triangular weight. On an accelerator that
leaves most of the device idle. :func:`separate_stream` does the same computation for a stream of
tracks, but gathers the segments of consecutive tracks into batches of ``batch_size`` and runs
one forward pass per batch; each track's segments are then overlap-added back exactly as
``apply_model`` does (same chunking, padding, weights, shift trick and bag-of-models weighting),
so the outputs match ``apply_model`` up to the floating-point effect of the batch size.

On CUDA the copy of a batch's output back to the host is queued right after its forward pass, and
the overlap-add of batch *k* runs on the CPU while the device computes batch *k + 1*. On the CPU,
``lanes`` forward passes can run at once in threads: with one intra-op thread each, that uses the
cores better than one pass spread over all of them (HTDemucs is many small ops that scale badly
over intra-op threads; the measurement is in benchmarks/RESULTS.md, "Where the CPU gain comes from").

This module knows nothing about mirflow's analyzers or executors: it takes tensors and yields
tensors. ``torch`` and ``demucs`` are imported when it is imported, so import it lazily.
"""

from __future__ import annotations

import contextlib
import random
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from demucs.apply import BagOfModels, TensorChunk, tensor_chunk
from demucs.htdemucs import HTDemucs
from demucs.utils import center_trim

#: Autocast dtypes by precision name (``fp32`` runs without autocast).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def members(model: torch.nn.Module) -> list[tuple[torch.nn.Module, list[float] | None]]:
    """The models to run and their per-source weights: one entry per model of a bag, or
    ``[(model, None)]`` for a single model (no weighting, as in ``apply_model``)."""
    if isinstance(model, BagOfModels):
        return [(m, list(w)) for m, w in zip(model.models, model.weights)]
    return [(model, None)]


def segment_weight(segment_length: int, transition_power: float = 1.0) -> torch.Tensor:
    """The overlap-add weight of ``apply_model``: a triangle peaking mid-segment, ``(segment_length,)``."""
    weight = torch.cat([torch.arange(1, segment_length // 2 + 1),
                        torch.arange(segment_length - segment_length // 2, 0, -1)])
    return (weight / weight.max()) ** transition_power


@dataclass
class _Pass:
    """One ``apply_model`` split pass: one model of the bag, one shift, over one track."""

    track: "_Track"
    member: int
    view: TensorChunk          # what is split into segments (the mix, or a shifted window of it)
    trim: int                  # samples to drop at the start of the result (shift trick)
    weight: torch.Tensor
    segment_length: int
    out: torch.Tensor | None = None
    sum_weight: torch.Tensor | None = None
    remaining: int = 0

    def add(self, offset: int, chunk_out: torch.Tensor) -> None:
        if self.out is None:
            n = self.view.length
            self.out = torch.zeros(1, chunk_out.shape[1], chunk_out.shape[2], n)
            self.sum_weight = torch.zeros(n)
        length = chunk_out.shape[-1]
        self.out[..., offset:offset + self.segment_length] += self.weight[:length] * chunk_out
        self.sum_weight[offset:offset + self.segment_length] += self.weight[:length]
        self.remaining -= 1
        if self.remaining == 0:
            assert self.sum_weight.min() > 0
            self.out /= self.sum_weight
            self.track.pass_done(self)


@dataclass
class _Track:
    key: Hashable
    length: int
    n_members: int
    shifts: int
    weights: list[list[float] | None]
    by_member: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    passes_left: int = 0
    result: torch.Tensor | None = None

    def pass_done(self, p: _Pass) -> None:
        assert p.out is not None
        self.by_member.setdefault(p.member, []).append(p.out[..., p.trim:])
        p.out = p.sum_weight = None
        self.passes_left -= 1
        if self.passes_left == 0:
            self.result = self._combine()
            self.by_member.clear()

    def _combine(self) -> torch.Tensor:
        outs = []
        for m in range(self.n_members):
            parts = self.by_member[m]
            if self.shifts:
                out: Any = 0.0
                for part in parts:  # same order and arithmetic as apply_model's shift loop
                    out += part
                out /= self.shifts
            else:
                (out,) = parts
            outs.append(out)
        if self.weights[0] is None:
            (est,) = outs
            return est[0]
        estimates: Any = 0.0
        totals = [0.0] * outs[0].shape[1]
        for out, inst in zip(outs, self.weights):
            for k, w in enumerate(inst):
                out[:, k, :, :] *= w
                totals[k] += w
            estimates += out
        for k in range(estimates.shape[1]):
            estimates[:, k, :, :] /= totals[k]
        return estimates[0]


@dataclass
class _Chunk:
    owner: _Pass
    offset: int
    length: int
    input: torch.Tensor  # (1, channels, valid_length)


def _chunks(model: torch.nn.Module, mixes: Iterable[tuple[Hashable, torch.Tensor]], tracks: deque,
            *, shifts: int, overlap: float, segment: float | None, transition_power: float,
            seed: int) -> Iterator[tuple[int, _Chunk]]:
    """Cut each mix into the segments ``apply_model`` would run, in its order; ``(member, chunk)``."""
    mem = members(model)
    samplerate = model.samplerate
    weights_cache: dict[int, torch.Tensor] = {}
    for key, mix in mixes:
        if mix.dim() != 2:
            raise ValueError(f"mix must be (channels, samples), got shape {tuple(mix.shape)}")
        length = int(mix.shape[-1])
        track = _Track(key, length, len(mem), shifts, [w for _, w in mem],
                       passes_left=len(mem) * max(1, shifts))
        tracks.append(track)
        rng = random.Random(seed)  # per track: the result does not depend on batch composition
        whole = tensor_chunk(mix[None])
        for m_idx, (sub, _) in enumerate(mem):
            if shifts:
                max_shift = int(0.5 * samplerate)
                padded_mix = whole.padded(length + 2 * max_shift)
                views = []
                for _ in range(shifts):
                    offset = rng.randint(0, max_shift)
                    views.append((TensorChunk(padded_mix, offset, length + max_shift - offset),
                                  max_shift - offset))
            else:
                views = [(whole, 0)]
            seg = segment if segment is not None else sub.segment
            segment_length = int(samplerate * seg)
            stride = int((1 - overlap) * segment_length)
            if segment_length not in weights_cache:
                weights_cache[segment_length] = segment_weight(segment_length, transition_power)
            for view, trim in views:
                offsets = range(0, view.length, stride)
                p = _Pass(track, m_idx, view, trim, weights_cache[segment_length], segment_length,
                          remaining=len(offsets))
                for offset in offsets:
                    chunk = TensorChunk(view, offset, segment_length)
                    if isinstance(sub, HTDemucs) and segment is not None:
                        valid_length = int(segment * samplerate)
                    elif hasattr(sub, "valid_length"):
                        valid_length = sub.valid_length(chunk.length)
                    else:
                        valid_length = chunk.length
                    yield m_idx, _Chunk(p, offset, chunk.length, chunk.padded(valid_length))


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


#: Seconds between two readings of the elastic allowance while a pass waits for room.
ALLOWANCE_POLL_S = 0.05


def separate_stream(model: torch.nn.Module, mixes: Iterable[tuple[Hashable, torch.Tensor]], *,
                    batch_size: int = 1, shifts: int = 0, overlap: float = 0.25,
                    segment: float | None = None, transition_power: float = 1.0,
                    device: str | torch.device | None = None, precision: str = "fp32",
                    seed: int = 0, lanes: int = 1, threads: Callable[[], int] | None = None,
                    on_forward: Callable[[int], None] | None = None,
                    ) -> Iterator[tuple[Hashable, torch.Tensor]]:
    """Separate a stream of mixes, batching model segments across tracks.

    Parameters
    ----------
    model : HTDemucs, HDemucs, Demucs or BagOfModels
        In eval mode, already on ``device``.
    mixes : iterable of (key, tensor)
        ``tensor`` is ``(channels, samples)`` float32 at ``model.samplerate`` on the CPU, already
        normalised as the caller wants (Demucs' own front end standardises by the mono mix's mean
        and std). Pulled lazily: the next mix is requested only when its segments are needed, so a
        generator that waits on decoding threads overlaps decoding with the forward passes.
    batch_size : int
        Segments per forward pass. Segments of different models of a bag, or of different padded
        lengths, never share a batch.
    shifts, overlap, segment, transition_power
        As in :func:`demucs.apply.apply_model`. The random shift offsets come from
        ``random.Random(seed)`` created afresh for every track, so results are deterministic and
        independent of which tracks share a batch.
    device : torch device or None
        Where the forward passes run (the model's device when ``None``); overlap-add happens on
        the CPU.
    precision : {"fp32", "fp16", "bf16"}
        ``fp16``/``bf16`` run the forward passes under :func:`torch.autocast`.
    lanes : int
        Forward passes in flight at once. On the CPU, ``lanes > 1`` runs them in that many threads
        (set torch's intra-op threads to 1 first, or they oversubscribe the cores); on CUDA passes
        are already asynchronous and ``lanes`` only bounds how many are queued.
    threads : callable, optional
        CPU only: how many threads the stream may use *now*, asked before every forward pass (the
        elastic allowance of :mod:`mirflow.core.threads`). ``min(lanes, threads())`` passes then
        run at once, each with ``threads() // passes`` intra-op threads (set in the thread that runs
        it), so a track already running uses cores that free up, and gives them back, between
        passes; a pass waiting for room asks again every :data:`ALLOWANCE_POLL_S` and starts as
        soon as there is some, beside the passes running. ``None``: ``lanes`` passes at once,
        intra-op threads as the caller set them.
    on_forward : callable, optional
        Called with the number of segments of every forward pass (for tests and statistics).

    Yields
    ------
    (key, sources)
        ``sources`` is ``(n_sources, channels, samples)`` float32 on the CPU, in the order of
        ``model.sources``; tracks are yielded in input order, each as soon as it is complete.
    """
    if batch_size < 1 or lanes < 1:
        raise ValueError(f"batch_size and lanes must be >= 1, got {batch_size}, {lanes}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    mem = members(model)
    dev = torch.device(device) if device is not None else next(mem[0][0].parameters()).device
    for sub, _ in mem:
        sub.eval()
        if isinstance(sub, HTDemucs) and segment is not None and segment > sub.segment:
            raise ValueError(f"segment {segment} s is longer than the model's {float(sub.segment):.2f} s")
    cuda = dev.type == "cuda"
    tracks: deque[_Track] = deque()
    chunks = _chunks(model, mixes, tracks, shifts=shifts, overlap=overlap, segment=segment,
                     transition_power=transition_power, seed=seed)

    def forward(m_idx: int, batch: list[_Chunk], intra: int) -> tuple[torch.Tensor, Any]:
        if intra and torch.get_num_threads() != intra:  # per thread: set where the pass runs
            torch.set_num_threads(intra)
        x = torch.cat([c.input for c in batch])
        if cuda:
            x = x.pin_memory().to(dev, non_blocking=True)
        elif x.device != dev:
            x = x.to(dev)
        with torch.no_grad(), _autocast(dev, precision):  # both thread-local: set in this thread
            y = mem[m_idx][0](x)
        if on_forward is not None:
            on_forward(len(batch))
        if cuda:  # queue the copy now; the host waits for it only after launching the next batch
            host = torch.empty(y.shape, dtype=y.dtype, pin_memory=True)
            host.copy_(y, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            return host, event
        return y, None

    elastic = threads is not None and not cuda
    pool = ThreadPoolExecutor(lanes, thread_name_prefix="demucs-lane") if lanes > 1 and not cuda else None
    in_flight: deque[tuple[list[_Chunk], Future]] = deque()

    def width() -> tuple[int, int]:
        """(passes at once, intra-op threads per pass; 0: leave them) for the next pass."""
        if not elastic:
            return lanes, 0
        allowed = max(1, int(threads()))  # type: ignore[misc] - elastic implies a callable
        passes = min(lanes, allowed)
        return passes, max(1, allowed // passes)

    def launch(m_idx: int, batch: list[_Chunk]) -> None:
        passes, intra = width()
        # never more passes running than the allowance has room for; while waiting for room, ask
        # again every ALLOWANCE_POLL_S: cores a neighbour frees take the next pass at once,
        # beside the one running, instead of after it (a 2-segment track at the tail of a run)
        while elastic and len(in_flight) >= passes:
            oldest = in_flight[0][1]
            if oldest.done():
                finish_oldest()
                continue
            wait([oldest], timeout=ALLOWANCE_POLL_S)
            passes, intra = width()
        if pool is not None:
            in_flight.append((batch, pool.submit(forward, m_idx, batch, intra)))
        else:
            done: Future = Future()
            done.set_result(forward(m_idx, batch, intra))
            in_flight.append((batch, done))

    def finish_oldest() -> None:
        batch, fut = in_flight.popleft()
        y, event = fut.result()
        if event is not None:
            event.synchronize()
        y = y.float().cpu()
        for i, c in enumerate(batch):
            c.owner.add(c.offset, center_trim(y[i:i + 1], c.length))

    def completed() -> Iterator[tuple[Hashable, torch.Tensor]]:
        while tracks and tracks[0].result is not None:
            t = tracks.popleft()
            yield t.key, t.result

    batch: list[_Chunk] = []
    batch_member = -1
    try:
        for m_idx, chunk in chunks:
            if batch and (m_idx != batch_member or chunk.input.shape != batch[0].input.shape
                          or len(batch) == batch_size):
                launch(batch_member, batch)
                batch = []
                while len(in_flight) > lanes:
                    finish_oldest()
                yield from completed()
            batch.append(chunk)
            batch_member = m_idx
        if batch:
            launch(batch_member, batch)
        while in_flight:
            finish_oldest()
        yield from completed()
        assert not tracks, "every track must have been completed"
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
