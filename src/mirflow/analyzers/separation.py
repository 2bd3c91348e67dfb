"""Stem separation with Demucs 4: one model load per worker, segments batched across tracks.

The ``separation`` analyzer loads a Demucs model (``htdemucs`` by default; any name or signature
Demucs knows) once in :meth:`SeparationAnalyzer.setup`, keeps it on the device for the whole run, and
writes one stem file per source next to the mix::

    <Track>/full_mix.ogg  ->  <Track>/drums.flac bass.flac other.flac vocals.flac

Stems are stereo at the model's rate (44.1 kHz) and exactly as long as the mix at that rate, written
all or nothing by :func:`mirflow.core.stems_io.write_stems`.

Throughput: :meth:`SeparationAnalyzer.analyze_batch` decodes the next tracks in threads while the
model runs, cuts every track into model segments and runs segments from several tracks in one forward
pass (:func:`mirflow.models.demucs_batch.separate_stream`, numerically the same overlap-add as
:func:`demucs.apply.apply_model`), and encodes/writes finished stems in writer threads while the next
segments are computed.

Where the weights are found, their checksums and the loading live in :mod:`mirflow.models.demucs`;
the device comes resolved from :mod:`mirflow.core.devices`; the precision actually run is decided by
:mod:`mirflow.models.precision`. ``torch`` and ``demucs`` are imported lazily (in :meth:`setup`), so
mirflow runs without them; the analyzer is then reported unavailable with the command that installs
them.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from ..core import devices
from ..core import threads as core_threads
from ..core.audio import TrackContext
from ..core.errors import AnalysisError, ConfigError
from ..core.stems_io import STEM_BITS, STEM_FORMATS, StemsToWrite, count_clipped, stem_complete
from ..models import demucs as demucs_models
from ..models import registry as model_registry
from ..models.precision import PRECISIONS, resolve_precision
from . import register
from .base import Analyzer, AnalyzerParams

log = logging.getLogger(__name__)


# -- the analyzer ---------------------------------------------------------------------------------------

@register
class SeparationAnalyzer(Analyzer):
    """Separate the mix into stems with Demucs (``drums``, ``bass``, ``other``, ``vocals``; six stems
    with ``htdemucs_6s``).

    Parameters
    ----------
    model : str
        Demucs model name or signature (``htdemucs``, ``htdemucs_ft``, ``htdemucs_6s``, ``mdx_extra``, ...).
    repo : str or None
        A local Demucs model folder (``<name>.yaml`` + ``.th`` files), for offline machines; when set,
        nothing else is searched.
    models_dir : str or None
        A mirflow models folder searched before ``$MIRFLOW_MODELS`` and ``~/.cache/mirflow/models``
        (then Demucs' own caches); see :mod:`mirflow.models.demucs`.
    shifts : int
        Random-shift averaging passes (0: one deterministic pass; Demucs' CLI uses 1).
    overlap : float
        Overlap between model segments, in [0, 1).
    segment : float or None
        Segment length in seconds (None: the model's; HTDemucs cannot exceed its 7.8 s).
    precision : {"fp32", "fp16", "bf16"}
        Autocast precision of the forward passes (falls back to fp32 where unsupported, with a warning).
    batch : int or None
        Segments per forward pass (None: 1 on CPU, by memory on CUDA). Does not change outputs beyond
        floating-point rounding, so it is not hashed.
    stem_format : {"flac", "wav"}, stem_bits : {16, 24}
        Stem file format and PCM bit depth.
    device : str
        ``auto`` (use the run's device), or a device for separation alone (``cpu``, ``cuda``,
        ``cuda:N``, ``rocm``, ``mps``): the spelling is checked with the parameters, the device
        itself by :func:`mirflow.core.devices.resolve` before the run starts. Not hashed.

    Outputs (sidecar keys)
    ----------------------
    stems : list of str — stem names, files ``<track>/<stem>.<stem_format>``;
    separation_model, separation_signature : str — model name and Demucs signature(s);
    separation_shifts : int; separation_precision : str — precision actually used;
    separation_sr : int [Hz] — stem sample rate; separation_frames : int — frames per stem;
    separation_clipped : int — stem samples clipped to [-1, 1] when writing PCM.
    """

    name = "separation"
    elastic = True  # its forward passes spread over the threads a worker is lent
    version = 1
    device = "gpu"
    batchable = True
    model_memory = 3 << 29  # about 1.5 GiB on the CPU
    outputs = ("stems", "separation_model", "separation_signature", "separation_shifts",
               "separation_precision", "separation_sr", "separation_frames", "separation_clipped")

    class Params(AnalyzerParams):
        model: str = Field("htdemucs", min_length=1, description="Demucs model name or signature")
        repo: str | None = Field(None, description="local folder holding the model files")
        models_dir: str | None = Field(None, description="mirflow models folder searched first")
        shifts: int = Field(0, ge=0, le=20, description="random shifts averaged (0: deterministic)")
        overlap: float = Field(0.25, ge=0.0, lt=1.0, description="overlap of model segments")
        segment: float | None = Field(None, gt=0.0, description="segment length in seconds")
        precision: Literal[PRECISIONS] = Field("fp32", description="compute precision")  # type: ignore[valid-type]
        batch: int | None = Field(None, ge=1, description="segments per forward pass")
        stem_format: Literal[tuple(STEM_FORMATS)] = Field("flac", description="stem file format")  # type: ignore[valid-type]
        stem_bits: Literal[tuple(STEM_BITS)] = Field(16, description="stem PCM bit depth")  # type: ignore[valid-type]
        device: str = Field("auto", description="overrides the run's device for separation")

        @field_validator("device")
        @classmethod
        def _device_spelling(cls, value: str) -> str:
            """A malformed device name is a parameter error. Whether this machine has the device
            is decided by the one resolver: when the run's options are built (before any work) and
            again in :meth:`setup`; read-only commands never look for hardware."""
            try:
                devices.parse(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
            return value

    #: Threads that decode upcoming tracks and that encode/write finished stems.
    decode_threads = 2
    write_threads = 2
    #: At most this many concurrent forward passes on the CPU (see :meth:`setup`).
    max_cpu_lanes = 4

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._hashed: dict[str, Any] | None = None
        self._model: Any = None
        self._device: devices.Device = devices.CPU
        self._precision = self.params["precision"]
        self._batch = 1
        self._lanes = 1
        self._elastic = False
        self._saved_threads: int | None = None
        self._saved_fastpath: bool | None = None
        self._signature: str | None = None
        self._decoder: ThreadPoolExecutor | None = None
        self._writer: ThreadPoolExecutor | None = None

    # -- where the weights are ---------------------------------------------------------------------
    @property
    def _repo(self) -> Path | None:
        repo = self.params["repo"]
        return Path(repo).expanduser() if repo else None

    @property
    def _dirs(self) -> list[Path]:
        return model_registry.search_dirs(self.params["models_dir"])

    # -- identity --------------------------------------------------------------------------------------
    def hashed_params(self) -> dict[str, Any]:
        """Everything but ``batch``, ``device``, ``repo`` and ``models_dir`` (where the weights are is
        not what they are), plus the model's signature, so other weights under the same name make
        tracks due."""
        if self._hashed is None:
            hashed = {k: v for k, v in self.params.items()
                      if k not in ("batch", "device", "repo", "models_dir")}
            try:
                hashed["signature"] = demucs_models.signature(self.params["model"], repo=self._repo,
                                                              dirs=self._dirs)
            except (OSError, ValueError):
                hashed["signature"] = None
            self._hashed = hashed
        return self._hashed

    # -- availability ----------------------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        """Cheap offline check: PyTorch and Demucs installed, and the model's weights in the local
        repo, a models folder or Demucs' download caches. Does not import torch."""
        missing = [m for m in ("torch", "demucs") if importlib.util.find_spec(m) is None]
        if missing:
            return (f"separation needs {' and '.join(missing)}: pip install 'mirflow[separation]' "
                    f"(or pip install torch demucs)")
        name, repo = self.params["model"], self._repo
        if repo is not None:
            problem = demucs_models.repo_problem(name, repo)
            return f"separation (--sep-repo): {problem}. {demucs_models.how_to_get(name)}" if problem else None
        if name == "demucs_unittest" or demucs_models.locate(name, dirs=self._dirs) is not None:
            return None
        places = [str(d) for d in self._dirs] + [str(demucs_models.torch_hub_checkpoints()),
                                                 str(demucs_models.hf_cache_dir())]
        return (f"separation model {name!r} is not available offline: its weights are in none of "
                f"{', '.join(places)}. " + demucs_models.how_to_get(name))

    # -- state -------------------------------------------------------------------------------------------
    def setup(self, device: str | devices.Device = "auto") -> None:
        """Load the model once and move it to the device: the ``device`` parameter when not ``auto``,
        else the run's resolved ``device`` (``auto`` is resolved here too, for direct API use)."""
        import torch

        requested = self.params["device"] if self.params["device"] != "auto" else (device or "auto")
        self._device = devices.resolve(str(requested))
        self._precision, why = resolve_precision(self.params["precision"], self._device)
        if why:
            log.warning("separation: --sep-precision %s: %s", self.params["precision"], why)
        name = self.params["model"]
        t0 = time.perf_counter()
        model = demucs_models.load(name, repo=self._repo, dirs=self._dirs)
        model.to(self._device.torch)
        if self.params["segment"] is not None:
            from demucs.apply import BagOfModels
            from demucs.htdemucs import HTDemucs

            subs = model.models if isinstance(model, BagOfModels) else [model]
            for sub in subs:
                if isinstance(sub, HTDemucs) and self.params["segment"] > float(sub.segment):
                    raise ConfigError(f"--sep-segment {self.params['segment']} s is longer than "
                                      f"{name}'s {float(sub.segment):.2f} s training segment")
        self._model = model
        self._signature = demucs_models.signature(name, repo=self._repo, dirs=self._dirs)
        self._batch = self.params["batch"] or demucs_models.default_batch(self._device)
        if self._device.kind == "cpu":
            # PyTorch's fused multi-head-attention "fast path" computes HTDemucs' attention with
            # plain batched matrix products; the standard path's scaled_dot_product_attention
            # (flash attention on CPU) needs 16 % less CPU per forward pass, same output within
            # 4e-7 (benchmarks/mha_fastpath.py, RESULTS section 4). The flag is per process;
            # nothing else in a worker uses torch attention.
            mha = getattr(torch.backends, "mha", None)
            if mha is not None and hasattr(mha, "set_fastpath_enabled"):
                self._saved_fastpath = bool(mha.get_fastpath_enabled())
                mha.set_fastpath_enabled(False)
            # The executor decided how many threads this worker gets (``self.threads``; 0: torch's
            # own count). Use them as concurrent single-thread forward passes: HTDemucs is many
            # small ops that scale badly over intra-op threads (benchmarks/RESULTS.md, "Where the
            # CPU gain comes from").
            # An elastic worker (local executor) may later be lent the idle workers' cores: size
            # the lanes for the most it can get; each forward pass then runs as many lanes as the
            # allowance of the moment has room for (:mod:`mirflow.core.threads`).
            threads = self.threads or torch.get_num_threads()
            self._elastic = core_threads.ceiling() > 0
            self._lanes = max(1, min(max(threads, core_threads.ceiling()), self.max_cpu_lanes))
            if self._lanes > 1 and not self._elastic:
                self._saved_threads = threads
                torch.set_num_threads(max(1, threads // self._lanes))
        self._decoder = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="mirflow-sep-decode")
        self._writer = ThreadPoolExecutor(self.write_threads, thread_name_prefix="mirflow-sep-write")
        where = str(self._device)
        if self._device.kind == "cuda":
            where += f" ({self._device.name})" if self._device.name else ""
        elif self._device.kind == "cpu" and self._elastic:
            where += f" (up to {self._lanes} concurrent pass(es), as many as the worker's elastic thread allowance)"
        elif self._device.kind == "cpu":
            where += f" ({self._lanes} concurrent pass(es) x {torch.get_num_threads()} thread(s))"
        log.info("separation: %s loaded in %.1f s on %s, precision %s, %d segment(s) per forward pass",
                 name, time.perf_counter() - t0, where, self._precision, self._batch)

    def teardown(self) -> None:
        for pool in (self._decoder, self._writer):
            if pool is not None:
                pool.shutdown(wait=True)
        self._decoder = self._writer = None
        self._model = None
        if self._saved_threads is not None:
            import torch

            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None
        if self._saved_fastpath is not None:  # the process-wide attention flag, as it was
            import torch

            torch.backends.mha.set_fastpath_enabled(self._saved_fastpath)
            self._saved_fastpath = None

    @property
    def sources(self) -> list[str]:
        """Stem names: the loaded model's, else those expected from the model name."""
        if self._model is not None:
            return list(self._model.sources)
        return list(demucs_models.sources_of(self.params["model"]))

    # -- work --------------------------------------------------------------------------------------------
    def prepare(self, ctx: TrackContext) -> None:
        """The model's input (stereo at 44.1 kHz, standardised), memoised: the GPU lane computes it
        in its decode threads, ahead of the model (:mod:`mirflow.run.stream`)."""
        _model_input(ctx, demucs_models.MODEL_SR)

    def analyze_batch(self, ctxs: list[TrackContext]) -> list[dict[str, Any] | BaseException]:
        """Separate ``ctxs`` together: decode ahead in threads, batch model segments across tracks,
        write each track's stems in a writer thread as soon as it is separated. Every returned
        result's stems are complete and renamed on disk."""
        if self._model is None or self._decoder is None or self._writer is None:
            raise AnalysisError("separation.setup() was not called")
        import torch

        sr = int(self._model.samplerate)
        results: list[dict[str, Any] | BaseException | None] = [None] * len(ctxs)
        prepared = [self._decoder.submit(_model_input, ctx, sr) for ctx in ctxs]
        writes: dict[int, Future] = {}
        norms: dict[int, tuple[float, float]] = {}

        def mixes(indices):
            for i in indices:
                try:
                    mix, mean, std = prepared[i].result()
                except Exception as exc:  # noqa: BLE001 - a track that cannot be decoded fails alone
                    results[i] = exc
                    continue
                norms[i] = (mean, std)
                yield i, torch.from_numpy(mix)

        def run(indices, batch):
            for i, est in self._separate(mixes(indices), batch):
                writes[i] = self._writer.submit(self._write, ctxs[i], est, *norms[i])

        try:
            try:
                run(range(len(ctxs)), self._batch)
            except Exception as exc:  # noqa: BLE001 - retried per track below
                left = [i for i in range(len(ctxs)) if i not in writes and results[i] is None]
                self._batch_failed(exc, len(left))
                for i in left:
                    try:
                        run([i], 1)
                    except Exception as exc1:  # noqa: BLE001 - this track fails, the others go on
                        results[i] = exc1
            for i, fut in writes.items():
                try:
                    results[i] = fut.result()
                except Exception as exc:  # noqa: BLE001 - one failed write fails its track only
                    results[i] = exc
        except BaseException:
            # Ctrl-C or similar: drop queued work, let writes in progress finish (they are atomic).
            for fut in [*prepared, *writes.values()]:
                fut.cancel()
            for fut in writes.values():
                if not fut.cancelled():
                    try:
                        fut.result()
                    except BaseException:  # noqa: BLE001 - we are already unwinding
                        pass
            raise
        return [r if r is not None else AnalysisError("separation produced no result") for r in results]

    def analyze_stream(self, ctxs: Iterable[TrackContext]
                       ) -> Iterator[tuple[TrackContext, dict[str, Any] | BaseException]]:
        """Separate a stream of tracks (the GPU lane's, :mod:`mirflow.run.stream`): segments of
        consecutive tracks share forward passes, and each track comes out as soon as it is complete,
        while the next ones are computed. ``ctxs`` is pulled lazily: the stream waits for a decoded
        track only when its segments are needed, and runs its last partial batch when ``ctxs`` ends.

        Stems are left to write (``ctx.files_to_write``, the caller sets ``ctx.defer_writes``; else
        they are written here, one track at a time). The model input memoised in a context is
        dropped once the track is separated. A failed batched pass is retried one track at a time,
        as in :meth:`analyze_batch`."""
        if self._model is None:
            raise AnalysisError("separation.setup() was not called")
        import torch

        sr = int(self._model.samplerate)
        inputs: dict[int, tuple[TrackContext, np.ndarray, float, float]] = {}
        failed: deque[tuple[TrackContext, BaseException]] = deque()

        def mixes() -> Iterator[tuple[int, Any]]:
            for n, ctx in enumerate(ctxs):
                try:
                    mix, mean, std = _model_input(ctx, sr)
                except Exception as exc:  # noqa: BLE001 - a track that cannot be decoded fails alone
                    failed.append((ctx, exc))
                    continue
                inputs[n] = (ctx, mix, mean, std)
                yield n, torch.from_numpy(mix)

        def run(source: Iterable[tuple[int, Any]], batch: int
                ) -> Iterator[tuple[TrackContext, dict[str, Any] | BaseException]]:
            for n, est in self._separate(source, batch):
                while failed:
                    yield failed.popleft()
                ctx, _mix, mean, std = inputs.pop(n)
                _forget_model_input(ctx, sr)
                try:
                    out: dict[str, Any] | BaseException = self._write(ctx, est, mean, std)
                except Exception as exc:  # noqa: BLE001 - one failed write fails its track only
                    out = exc
                yield ctx, out

        try:
            yield from run(mixes(), self._batch)
        except Exception as exc:  # noqa: BLE001 - retried per track below
            self._batch_failed(exc, len(inputs))
            for n, (ctx, mix, _mean, _std) in sorted(inputs.items()):
                try:
                    yield from run([(n, torch.from_numpy(mix))], 1)
                except Exception as exc1:  # noqa: BLE001 - this track fails, the others go on
                    inputs.pop(n, None)
                    _forget_model_input(ctx, sr)
                    yield ctx, exc1
        while failed:
            yield failed.popleft()

    def _separate(self, source: Iterable[tuple[Any, Any]], batch: int) -> Iterator[tuple[Any, Any]]:
        """The batched engine over ``source`` (``(key, standardised mix tensor)`` pairs) with this
        analyzer's model, parameters, device, precision and CPU lanes (elastic when the worker is)."""
        from ..models.demucs_batch import separate_stream

        return separate_stream(
            self._model, source, batch_size=batch, shifts=self.params["shifts"],
            overlap=self.params["overlap"], segment=self.params["segment"],
            device=self._device.torch, precision=self._precision, lanes=self._lanes,
            threads=core_threads.allowance if self._elastic else None)

    def accelerated(self, device: str) -> bool:
        """Not when ``device`` (this analyzer's parameter) sends separation to the CPU."""
        return not self.params["device"].startswith("cpu")

    def _batch_failed(self, exc: BaseException, tracks: int) -> None:
        """Log a failed batched pass and free the accelerator's cache before the per-track retry."""
        log.warning("separation: batched pass failed (%s: %s); retrying %d track(s) one at a time",
                    type(exc).__name__, exc, tracks)
        if self._device.kind == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _write(self, ctx: TrackContext, est, mean: float, std: float) -> dict[str, Any]:
        sources = (est * std + mean).numpy()  # (n_sources, 2, n) float32, denormalised
        clipped = count_clipped(sources)
        if clipped:
            ctx.warnings.append(f"separation: {clipped} stem samples beyond full scale were clipped")
        names = list(self._model.sources)
        out = StemsToWrite(ctx.path.parent, dict(zip(names, sources)), sr=int(self._model.samplerate),
                           fmt=self.params["stem_format"], bits=self.params["stem_bits"])
        if ctx.defer_writes:  # a CPU worker of the next stage writes them (local executor's GPU lane)
            ctx.files_to_write[self.name] = out
        else:  # written here; per-stem analyzers use them in memory, without decoding the files
            out.keep_in(ctx, out.write())
        return {
            "stems": names,
            "separation_model": self.params["model"],
            "separation_signature": self._signature,
            "separation_shifts": self.params["shifts"],
            "separation_precision": self._precision,
            "separation_sr": int(self._model.samplerate),
            "separation_frames": int(sources.shape[-1]),
            "separation_clipped": clipped,
            # kept in the analyzer's sidecar record, for outputs_valid() on resume
            "_record": {"stems": names, "frames": int(sources.shape[-1]), "sr": int(self._model.samplerate)},
        }

    # -- resume ------------------------------------------------------------------------------------------
    @staticmethod
    def _recorded(record: dict[str, Any], key: str) -> Any:
        value = record.get(key)
        return value if value is not None else record.get(f"separation_{key}")

    def output_files(self, track_dir: Path, record: dict[str, Any]) -> list[Path]:
        """``<track_dir>/<stem>.<stem_format>`` for every stem recorded (else every stem the model makes)."""
        stems = self._recorded(record, "stems") or self.sources
        return [Path(track_dir) / f"{s}.{self.params['stem_format']}" for s in stems]

    def outputs_valid(self, track_dir: Path, record: dict[str, Any]) -> bool:
        """All stems exist, are stereo at the recorded rate, hold the recorded number of frames (or,
        without a record of it, all the same number) and can be read to their end."""
        files = self.output_files(track_dir, record)
        if not all(p.is_file() for p in files):
            return False
        frames = self._recorded(record, "frames")
        sr = self._recorded(record, "sr") or demucs_models.MODEL_SR
        if frames is None:
            import soundfile as sf

            try:
                counts = {sf.info(str(p)).frames for p in files}
            except (RuntimeError, sf.LibsndfileError):
                return False
            if len(counts) != 1:
                return False
        return all(stem_complete(p, frames=frames, sr=int(sr)) for p in files)


#: Memo key (with the model's rate) of the standardised model input in a track's context.
_INPUT_MEMO = "separation-input"


def _model_input(ctx: TrackContext, sr: int) -> tuple[np.ndarray, float, float]:
    """:func:`_prepare` memoised in ``ctx`` (computed once, also when the lane's decode threads
    prepared it)."""
    return ctx.memo((_INPUT_MEMO, sr), lambda: _prepare(ctx, sr))


def _forget_model_input(ctx: TrackContext, sr: int) -> None:
    """Drop :func:`_model_input`'s memo from ``ctx`` (the track is separated: free its copy)."""
    ctx._memo.pop((_INPUT_MEMO, sr), None)


def _prepare(ctx: TrackContext, sr: int) -> tuple[np.ndarray, float, float]:
    """Stereo mix at ``sr`` standardised as Demucs' own front end does (mean and std of the mono mix)."""
    wav = ctx.stereo(sr)
    ref = wav.mean(axis=0)
    mean = float(ref.mean())
    std = float(ref.std(ddof=1)) + 1e-8 if ref.size > 1 else 1.0
    return np.ascontiguousarray((wav - mean) / std, dtype=np.float32), mean, std
