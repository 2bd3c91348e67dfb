"""Stem separation with Demucs 4: one model load per worker, segments batched across tracks.

The ``separation`` analyzer loads a Demucs model (``htdemucs`` by default; any name or signature
:func:`demucs.pretrained.get_model` knows, from the Demucs cache or a local model folder) once in
:meth:`Separation.setup`, keeps it on the device for the whole run, and writes one stem file per
source next to the mix::

    <Track>/full_mix.ogg  ->  <Track>/drums.flac bass.flac other.flac vocals.flac

Stems are stereo at the model's rate (44.1 kHz) and exactly as long as the mix at that rate. Each
stem is written under a temporary ``.mirflow-tmp-*`` name in the track folder, flushed, fsynced and
renamed only when every stem of the track is complete, so a crash leaves either the old stems or
the new ones, never a partial file.

Throughput: :meth:`Separation.analyze_batch` decodes the next tracks in threads while the model runs,
cuts every track into model segments and runs segments from several tracks in one forward pass
(:func:`mirflow.demucs_batch.separate_stream`, numerically the same overlap-add as
:func:`demucs.apply.apply_model`), and encodes/writes finished stems in writer threads while the
next segments are computed.

``torch`` and ``demucs`` are imported lazily (in :meth:`Separation.setup`), so mirflow runs without
them; the analyzer is then reported unavailable with the command that installs them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import platform
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..core.audio import TrackContext
from ..core.errors import AnalysisError, ConfigError, ModelUnavailableError
from ..core.fsutil import fsync_dir
from . import register
from pydantic import Field

from .base import Analyzer, AnalyzerParams

log = logging.getLogger(__name__)

#: Prefix of temporary files (must equal ``mirflow.core.dataset.TMP_PREFIX``: the engine deletes stale ones).
TMP_PREFIX = ".mirflow-tmp-"

STANDARD_SOURCES = ("drums", "bass", "other", "vocals")
SIX_SOURCES = ("drums", "bass", "other", "vocals", "guitar", "piano")
MODEL_SR = 44100

PRECISIONS = ("fp32", "fp16", "bf16")
STEM_FORMATS = {"flac": "FLAC", "wav": "WAV"}
STEM_BITS = {16: "PCM_16", 24: "PCM_24"}

_DEFAULT_BATCH = {"cpu": 1, "mps": 2}  # CUDA: chosen from the device's memory in _default_batch


# -- device and precision --------------------------------------------------------------------------

def resolve_device(requested: str = "auto") -> str:
    """The torch device string for ``requested`` (``auto``: CUDA, incl. ROCm builds, then MPS, then CPU).

    Raises :class:`ConfigError` for an unknown name or an accelerator that is not present.
    """
    import torch

    req = (requested or "auto").strip().lower()
    if req in ("auto", "gpu"):
        if torch.cuda.is_available():  # ROCm builds of PyTorch also answer through torch.cuda
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if req == "cpu":
        return "cpu"
    if req == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("device 'mps' requested but this PyTorch build has no available MPS backend")
        return "mps"
    if req == "cuda" or req.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {requested!r} requested but PyTorch sees no CUDA/ROCm GPU "
                              f"(torch {torch.__version__})")
        if ":" in req:
            try:
                index = int(req.split(":", 1)[1])
            except ValueError:
                raise ConfigError(f"bad device {requested!r}; expected cuda:N") from None
            if not 0 <= index < torch.cuda.device_count():
                raise ConfigError(f"device {requested!r} requested but only "
                                  f"{torch.cuda.device_count()} GPU(s) are visible")
        return req
    raise ConfigError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU computes bfloat16 natively, and what says so.

    x86: the ``avx512_bf16`` or ``amx_bf16`` CPU flags (``/proc/cpuinfo``); Arm: the ``bf16``
    feature. PyTorch's own :func:`torch.backends.cpu.get_cpu_capability` reports only the vector
    width (``AVX512``), not bf16, so the flags are read directly.
    """
    flags = _cpu_flags()
    native = sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    if native:
        return True, "CPU flags " + ", ".join(native)
    if not flags:
        return False, f"cannot read CPU flags on {platform.system()} {platform.machine()}"
    return False, "no avx512_bf16 / amx_bf16 (x86) or bf16 (Arm) CPU flag"


def resolve_precision(precision: str, device: str) -> tuple[str, str | None]:
    """The precision to run on ``device`` and, when it differs from the request, why.

    fp16 needs an accelerator; bf16 needs an accelerator that supports it or a CPU with native
    bf16 (emulated bf16 on the CPU is slower than fp32, so mirflow falls back to fp32 and says so).
    """
    import torch

    kind = device.split(":", 1)[0]
    if precision == "fp32":
        return "fp32", None
    if kind == "cpu":
        if precision == "fp16":
            return "fp32", "fp16 is for accelerators; the CPU runs fp32 (use bf16 on CPUs with native bf16)"
        ok, why = cpu_bf16_support()
        if not ok:
            return "fp32", f"this CPU lacks native bf16 ({why}); running fp32 instead"
        return "bf16", None
    if kind == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        return "fp32", f"GPU {torch.cuda.get_device_name(device)} does not support bf16; running fp32"
    return precision, None


def _default_batch(device: str) -> int:
    """Segments per forward pass when the user did not say.

    CPU: 1 (measured on this project's 2-core machine: one pass over 4 segments was slower than 4
    passes of one). CUDA: by memory, one full-size htdemucs segment per 4 GiB, 4..16 (a guess
    not yet measured on a GPU; ``--sep-batch`` overrides it).
    """
    kind = device.split(":", 1)[0]
    if kind == "cuda":
        import torch

        total = torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30
        return int(max(4, min(16, total // 4)))
    return _DEFAULT_BATCH.get(kind, 1)


# -- model lookup (cheap, no torch) -----------------------------------------------------------------

def _demucs_dir() -> Path | None:
    spec = importlib.util.find_spec("demucs")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _read_bag(yaml_file: Path) -> list[str]:
    """Signatures listed in a Demucs bag file (``models: [...]``), read without PyYAML if needed."""
    try:
        import yaml

        data = yaml.safe_load(yaml_file.read_text())
        return [str(s) for s in (data or {}).get("models", [])]
    except ImportError:  # pragma: no cover - demucs depends on PyYAML
        for line in yaml_file.read_text().splitlines():
            if line.strip().startswith("models:"):
                inner = line.split(":", 1)[1].strip().strip("[]")
                return [s.strip().strip("'\"") for s in inner.split(",") if s.strip()]
        return []


def _local_sigs(repo: Path) -> dict[str, Path]:
    """``{signature: file}`` for the ``.th`` files of a local repo (``sig.th`` or ``sig-checksum.th``)."""
    out = {}
    for f in repo.iterdir():
        if f.suffix == ".th":
            out[f.stem.rsplit("-", 1)[0] if "-" in f.stem else f.stem] = f
    return out


def model_signature(name: str, repo: Path | None) -> str | None:
    """The signature(s) of model ``name`` (``"955717e8"``, or ``"sigA+sigB"`` for a bag), or
    ``None`` when it is unknown. Read from the bag file, not from the weights."""
    if repo is not None:
        if (repo / f"{name}.yaml").is_file():
            return "+".join(_read_bag(repo / f"{name}.yaml"))
        if repo.is_dir() and name in _local_sigs(repo):
            return name
        return None
    base = _demucs_dir()
    if base is not None and (base / "remote" / f"{name}.yaml").is_file():
        return "+".join(_read_bag(base / "remote" / f"{name}.yaml"))
    return name if len(name) == 8 and all(c in "0123456789abcdef" for c in name) else None


def _hf_cache_dirs() -> list[Path]:
    if os.environ.get("HF_HUB_CACHE"):
        return [Path(os.environ["HF_HUB_CACHE"])]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return [Path(home) / "hub"]


def _torch_hub_checkpoints() -> Path:
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(home) / "hub" / "checkpoints"


def _hf_repo_name(name: str) -> str:  # mirrors demucs.hf.hf_repo_name
    if name == "htdemucs":
        return "HTDemucs"
    if name.startswith("htdemucs_"):
        return "HTDemucs-" + name[len("htdemucs_"):]
    return "Demucs-" + name


def _cached_offline(name: str) -> bool:
    """Whether Demucs' caches (Hugging Face hub, torch hub) already hold the weights of ``name``."""
    bare = name[len("hf://"):] if name.startswith("hf://") else name
    namespace, _, short = bare.rpartition("/")
    namespace = namespace or "adefossez"
    for cache in _hf_cache_dirs():
        snaps = cache / f"models--{namespace}--{_hf_repo_name(short)}" / "snapshots"
        if snaps.is_dir():
            for snap in snaps.iterdir():
                bag = snap / f"{short}.yaml"
                if bag.is_file():
                    sigs = _read_bag(bag)
                    if sigs and all((snap / f"{s}.safetensors").exists() for s in sigs):
                        return True
    if name.startswith("hf://"):
        return False
    sig = model_signature(name, None)
    ckpt = _torch_hub_checkpoints()
    if sig and ckpt.is_dir():
        have = {f.name.split("-", 1)[0] for f in ckpt.iterdir() if f.suffix == ".th"}
        return all(s in have for s in sig.split("+"))
    return False


def _how_to_get(name: str) -> str:
    return (f"Either pass --sep-repo DIR, a folder holding {name}.yaml and the .th weight files it "
            f"lists (copy them from a machine where Demucs ran, e.g. from ~/.cache/torch/hub/checkpoints), "
            f"or run once with network access so Demucs downloads and caches the weights: "
            f"python -c \"from demucs.pretrained import get_model; get_model('{name}')\"")


def _expected_sources(name: str) -> tuple[str, ...]:
    return SIX_SOURCES if "6s" in name else STANDARD_SOURCES


# -- stem writing -------------------------------------------------------------------------------------

def write_stems(track_dir: Path, stems: dict[str, np.ndarray], *, sr: int, fmt: str = "flac",
                bits: int = 16) -> dict[str, Path]:
    """Write ``stems`` (``{name: (2, n) float32}``) as ``<track_dir>/<name>.<fmt>``, all or nothing.

    Every stem is first written to ``.mirflow-tmp-<name>-<random>.<fmt>`` in ``track_dir``, flushed
    and fsynced; only when all are complete are they renamed over the final names. On any error the
    temporary files are removed and the previous stems (if any) are left untouched. Samples outside
    [-1, 1] are clipped (PCM cannot hold them).
    """
    import soundfile as sf

    tmps: dict[str, Path] = {}
    try:
        for name, data in stems.items():
            tmp = track_dir / f"{TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}.{fmt}"
            tmps[name] = tmp
            pcm = np.clip(np.ascontiguousarray(data.T), -1.0, 1.0)
            with open(tmp, "wb") as fh:
                with sf.SoundFile(fh, mode="w", samplerate=sr, channels=pcm.shape[1],
                                  format=STEM_FORMATS[fmt], subtype=STEM_BITS[bits]) as out:
                    out.write(pcm)
                fh.flush()
                os.fsync(fh.fileno())
        finals = {}
        for name, tmp in tmps.items():
            final = track_dir / f"{name}.{fmt}"
            os.replace(tmp, final)
            finals[name] = final
        fsync_dir(track_dir)
        return finals
    except BaseException:
        for tmp in tmps.values():
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # pragma: no cover - reported, and the engine sweeps stale temps
                log.warning("could not remove temporary stem %s: %s", tmp, exc)
        raise


def stem_complete(path: Path, *, frames: int | None, sr: int, channels: int = 2) -> bool:
    """Whether the stem at ``path`` is a readable file with the expected shape.

    Checks the header (rate, channels, frame count) and reads the last frames, which catches a
    truncated FLAC whose header still announces the full length.
    """
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            if f.samplerate != sr or f.channels != channels or f.frames == 0:
                return False
            if frames is not None and f.frames != frames:
                return False
            tail = min(f.frames, 1024)
            f.seek(f.frames - tail)
            return len(f.read(tail, dtype="float32")) == tail
    except (OSError, RuntimeError, ValueError, sf.LibsndfileError):
        return False


# -- the analyzer ---------------------------------------------------------------------------------------

@register
class Separation(Analyzer):
    """Separate the mix into stems with Demucs (``drums``, ``bass``, ``other``, ``vocals``; six stems
    with ``htdemucs_6s``).

    Parameters
    ----------
    model : str
        Demucs model name or signature (``htdemucs``, ``htdemucs_ft``, ``htdemucs_6s``, ``mdx_extra``, ...).
    repo : str or None
        A local Demucs model folder (``<name>.yaml`` + ``.th`` files), for offline machines.
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
        ``auto`` (use the executor's device), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. Not hashed.

    Outputs (sidecar keys)
    ----------------------
    stems : list of str — stem names, files ``<track>/<stem>.<stem_format>``;
    separation_model, separation_signature : str — model name and Demucs signature(s);
    separation_shifts : int; separation_precision : str — precision actually used;
    separation_sr : int [Hz] — stem sample rate; separation_frames : int — frames per stem;
    separation_clipped : int — stem samples clipped to [-1, 1] when writing PCM.
    """

    name = "separation"
    version = 1
    device = "gpu"
    batchable = True
    outputs = ("stems", "separation_model", "separation_signature", "separation_shifts",
               "separation_precision", "separation_sr", "separation_frames", "separation_clipped")

    class Params(AnalyzerParams):
        model: str = Field("htdemucs", min_length=1, description="Demucs model name or signature")
        repo: str | None = Field(None, description="local folder holding the model files")
        shifts: int = Field(0, ge=0, le=20, description="random shifts averaged (0: deterministic)")
        overlap: float = Field(0.25, ge=0.0, lt=1.0, description="overlap of model segments")
        segment: float | None = Field(None, gt=0.0, description="segment length in seconds")
        precision: Literal[PRECISIONS] = Field("fp32", description="compute precision")  # type: ignore[valid-type]
        batch: int | None = Field(None, ge=1, description="segments per forward pass")
        stem_format: Literal[tuple(STEM_FORMATS)] = Field("flac", description="stem file format")  # type: ignore[valid-type]
        stem_bits: Literal[tuple(STEM_BITS)] = Field(16, description="stem PCM bit depth")  # type: ignore[valid-type]
        device: str = Field("auto", description="overrides the run's device for separation")

    #: Threads that decode upcoming tracks and that encode/write finished stems.
    decode_threads = 2
    write_threads = 2
    #: At most this many concurrent forward passes on the CPU (see :meth:`setup`).
    max_cpu_lanes = 4

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        self._hashed: dict[str, Any] | None = None
        self._model: Any = None
        self._device = "cpu"
        self._precision = p["precision"]
        self._batch = 1
        self._lanes = 1
        self._saved_threads: int | None = None
        self._signature: str | None = None
        self._decoder: ThreadPoolExecutor | None = None
        self._writer: ThreadPoolExecutor | None = None

    # -- identity --------------------------------------------------------------------------------------
    def hashed_params(self) -> dict[str, Any]:
        """Everything but ``batch``, ``device`` and ``repo`` (where the weights are is not what they
        are), plus the model's signature, so other weights under the same name make tracks due."""
        if self._hashed is None:
            hashed = {k: v for k, v in self.params.items() if k not in ("batch", "device", "repo")}
            try:
                hashed["signature"] = model_signature(self.params["model"], self._repo)
            except OSError:
                hashed["signature"] = None
            self._hashed = hashed
        return self._hashed

    @property
    def _repo(self) -> Path | None:
        repo = self.params["repo"]
        return Path(repo).expanduser() if repo else None

    # -- availability ----------------------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        """Cheap offline check: PyTorch and Demucs installed, and the model's weights in the local
        repo or in Demucs' download caches. Does not import torch."""
        missing = [m for m in ("torch", "demucs") if importlib.util.find_spec(m) is None]
        if missing:
            return (f"separation needs {' and '.join(missing)}: pip install 'mirflow[separation]' "
                    f"(or pip install torch demucs)")
        name, repo = self.params["model"], self._repo
        if repo is not None:
            if not repo.is_dir():
                return f"separation model folder {repo} (--sep-repo) does not exist or is not a folder"
            sigs = _local_sigs(repo)
            if name in sigs:
                return None
            bag = repo / f"{name}.yaml"
            if not bag.is_file():
                known = sorted({f.stem for f in repo.glob("*.yaml")} | set(sigs))
                return (f"separation model {name!r} is not in {repo} (no {name}.yaml or {name}*.th; "
                        f"it holds: {', '.join(known) or 'nothing'}). " + _how_to_get(name))
            absent = [s for s in _read_bag(bag) if s not in sigs]
            if absent:
                return (f"separation model {name!r} in {repo} lists weights that are missing: "
                        f"{', '.join(s + '*.th' for s in absent)}. " + _how_to_get(name))
            return None
        if name == "demucs_unittest" or _cached_offline(name):
            return None
        return (f"separation model {name!r} is not available offline: its weights are not in the "
                f"Hugging Face cache ({_hf_cache_dirs()[0]}) nor the torch hub cache "
                f"({_torch_hub_checkpoints()}). " + _how_to_get(name))

    # -- state -------------------------------------------------------------------------------------------
    def setup(self, device: str = "auto") -> None:
        """Load the model once and move it to the device: the ``device`` parameter when not ``auto``,
        else the executor's ``device``, resolved CUDA -> MPS -> CPU."""
        import torch
        from demucs import pretrained

        requested = self.params["device"] if self.params["device"] != "auto" else (device or "auto")
        self._device = resolve_device(requested)
        self._precision, why = resolve_precision(self.params["precision"], self._device)
        if why:
            log.warning("separation: --sep-precision %s: %s", self.params["precision"], why)
        name, repo = self.params["model"], self._repo
        if repo is not None and not repo.is_dir():  # demucs would call sys.exit here
            raise ModelUnavailableError(f"separation model folder {repo} does not exist. " + _how_to_get(name))
        t0 = time.perf_counter()
        try:
            model = pretrained.get_model(name, repo=repo)
        except (pretrained.ModelLoadingError, OSError, ValueError) as exc:
            raise ModelUnavailableError(f"cannot load separation model {name!r}: {exc}. "
                                        + _how_to_get(name)) from exc
        model.to(self._device).eval()
        if self.params["segment"] is not None:
            from demucs.apply import BagOfModels
            from demucs.htdemucs import HTDemucs

            subs = model.models if isinstance(model, BagOfModels) else [model]
            for sub in subs:
                if isinstance(sub, HTDemucs) and self.params["segment"] > float(sub.segment):
                    raise ConfigError(f"--sep-segment {self.params['segment']} s is longer than "
                                      f"{name}'s {float(sub.segment):.2f} s training segment")
        self._model = model
        self._signature = model_signature(name, repo)
        self._batch = self.params["batch"] or _default_batch(self._device)
        if self._device == "cpu":
            # The executor decided how many threads this worker gets (torch's intra-op count). Use
            # them as concurrent single-thread forward passes: HTDemucs is many small ops, and two
            # 1-thread passes at once took ~40% less CPU time than one 2-thread pass here.
            threads = torch.get_num_threads()
            self._lanes = max(1, min(threads, self.max_cpu_lanes))
            if self._lanes > 1:
                self._saved_threads = threads
                torch.set_num_threads(max(1, threads // self._lanes))
        self._decoder = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="mirflow-sep-decode")
        self._writer = ThreadPoolExecutor(self.write_threads, thread_name_prefix="mirflow-sep-write")
        where = self._device
        if self._device.startswith("cuda"):
            where += f" ({torch.cuda.get_device_name(torch.device(self._device))})"
        elif self._device == "cpu":
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

    @property
    def sources(self) -> list[str]:
        """Stem names: the loaded model's, else those expected from the model name."""
        if self._model is not None:
            return list(self._model.sources)
        return list(_expected_sources(self.params["model"]))

    # -- work --------------------------------------------------------------------------------------------
    def analyze(self, ctx: TrackContext) -> dict[str, Any]:
        (result,) = self.analyze_batch([ctx])
        if isinstance(result, BaseException):
            raise result
        return result

    def analyze_batch(self, ctxs: list[TrackContext]) -> list[dict[str, Any] | BaseException]:
        """Separate ``ctxs`` together: decode ahead in threads, batch model segments across tracks,
        write each track's stems in a writer thread as soon as it is separated. Every returned
        result's stems are complete and renamed on disk."""
        if self._model is None or self._decoder is None or self._writer is None:
            raise AnalysisError("separation.setup() was not called")
        import torch

        from ..models.demucs_batch import separate_stream

        sr = int(self._model.samplerate)
        results: list[dict[str, Any] | BaseException | None] = [None] * len(ctxs)
        prepared = [self._decoder.submit(_prepare, ctx, sr) for ctx in ctxs]
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
            for i, est in separate_stream(
                    self._model, mixes(indices), batch_size=batch, shifts=self.params["shifts"],
                    overlap=self.params["overlap"], segment=self.params["segment"],
                    device=self._device, precision=self._precision, lanes=self._lanes):
                writes[i] = self._writer.submit(self._write, ctxs[i], est, *norms[i])

        try:
            try:
                run(range(len(ctxs)), self._batch)
            except Exception as exc:  # noqa: BLE001 - retried per track below
                left = [i for i in range(len(ctxs)) if i not in writes and results[i] is None]
                log.warning("separation: batched pass failed (%s: %s); retrying %d track(s) one at a time",
                            type(exc).__name__, exc, len(left))
                if self._device.startswith("cuda"):
                    torch.cuda.empty_cache()
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

    def _write(self, ctx: TrackContext, est, mean: float, std: float) -> dict[str, Any]:
        sources = (est * std + mean).numpy()  # (n_sources, 2, n) float32, denormalised
        clipped = int(np.count_nonzero(np.abs(sources) > 1.0))
        if clipped:
            ctx.warnings.append(f"separation: {clipped} stem samples beyond full scale were clipped")
        names = list(self._model.sources)
        write_stems(ctx.path.parent, dict(zip(names, sources)), sr=int(self._model.samplerate),
                    fmt=self.params["stem_format"], bits=self.params["stem_bits"])
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
        sr = self._recorded(record, "sr") or MODEL_SR
        if frames is None:
            import soundfile as sf

            try:
                counts = {sf.info(str(p)).frames for p in files}
            except (RuntimeError, sf.LibsndfileError):
                return False
            if len(counts) != 1:
                return False
        return all(stem_complete(p, frames=frames, sr=int(sr)) for p in files)


def _prepare(ctx: TrackContext, sr: int) -> tuple[np.ndarray, float, float]:
    """Stereo mix at ``sr`` standardised as Demucs' own front end does (mean and std of the mono mix)."""
    wav = ctx.stereo(sr)
    ref = wav.mean(axis=0)
    mean = float(ref.mean())
    std = float(ref.std(ddof=1)) + 1e-8 if ref.size > 1 else 1.0
    return np.ascontiguousarray((wav - mean) / std, dtype=np.float32), mean, std
