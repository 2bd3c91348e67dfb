"""VGGish-family classifiers: danceability, atonality, instrumentalness, vocal gender.

One analyzer, ``classifiers``, runs every installed VGGish-family model of the registry
(:mod:`mirflow.models`) on one shared front end:

- the VGGish log-mel patches are computed **once per track** (:func:`mirflow.vggish.track_patches`,
  memoised in the :class:`~mirflow.core.audio.TrackContext`) and fed to every model;
- in the two-stage form (``audioset-vggish-3`` embeddings + small heads), the embedding model runs
  once per track and every head reads its output; it is preferred over the single-stage
  classifiers whenever both are installed;
- patches of all tracks handed to :meth:`ClassifiersAnalyzer.analyze_batch` are stacked into
  inference calls of up to ``batch`` patches, and the results split back per track;
- every model session is created once per worker, in :meth:`ClassifiersAnalyzer.setup`.

Each score is the probability of the model's positive class (``danceable``, ``atonal``,
``instrumental``, ``female``) in [0, 1], averaged over the track's patches; with ``series=True``
the per-patch values (one per 0.93 s) are stored too, under ``<key>_series``. The sidecar record says
which model and backend produced each key.

Backends: ONNX Runtime (``.onnx`` files; CUDA, ROCm/MIGraphX or CPU providers) and Essentia's
TensorFlow runtime (``TensorflowPredict`` on the ``.pb`` files, with ``essentia-tensorflow``), both
fed by the same numpy front end. Neither is imported before :meth:`setup`.

The 16 kHz input reproduces Essentia's documented inference pipeline by default
(``MonoLoader(filename, sampleRate=16000, resampleQuality=4)`` then ``TensorflowPredictVGGish``):
the mix is downmixed, then resampled with libsamplerate's linear converter (``resampler="linear"``,
:func:`mirflow.core.audio.resample_linear`), so the scores equal those of the scripts on Essentia's
model pages. ``resampler="soxr"`` (``--set classifiers.resampler=soxr``) uses soxr's band-limited
converter instead, as mirflow 0.1 did (scores up to about 0.02 away from Essentia's on bright music).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ..models import registry as models
from ..models import vggish
from ..core import devices
from ..core.audio import TrackContext
from ..core.errors import ConfigError, ModelUnavailableError
from . import register
from pydantic import Field

from .base import Analyzer, AnalyzerParams

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnx", "essentia")
#: ONNX Runtime execution providers in order of preference (those available are used).
GPU_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider", "MIGraphXExecutionProvider")


# -- which model answers which key (file-system checks only, no runtime imports) -------------------
@dataclass(frozen=True)
class ModelUse:
    """One installed model file chosen to run, with its interface and identity."""

    spec: models.ModelSpec
    backend: str  #: "onnx" or "essentia"
    path: Path
    iface: models.Interface
    identity: str  #: 12 hex digits of the file's SHA-256

    @property
    def tag(self) -> str:
        return f"{self.spec.name}@{self.identity}"


@dataclass(frozen=True)
class Route:
    """How one key is computed: ``head`` after ``embedding`` (two stage) or ``model`` alone."""

    key: str
    model: ModelUse  #: the single-stage classifier, or the head
    embedding: ModelUse | None = None

    @property
    def producer(self) -> str:
        """The model name(s) reported in the record."""
        if self.embedding is not None:
            return f"{self.embedding.spec.name} + {self.model.spec.name}"
        return self.model.spec.name

    @property
    def column(self) -> int:
        labels = self.model.iface.labels
        positive = self.model.spec.positive
        if positive in labels:
            return labels.index(positive)
        log.warning("%s: label %r not in %s; using column 0", self.model.spec.name, positive, labels)
        return 0


@dataclass(frozen=True)
class Resolution:
    """Routes for the keys that can be computed, and why the others cannot."""

    routes: dict[str, Route]
    missing: dict[str, str]


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def essentia_tensorflow_installed() -> bool:
    """Whether Essentia with TensorFlow support is installed (checked without importing it)."""
    if importlib.util.find_spec("essentia") is None:
        return False
    for dist in ("essentia-tensorflow", "essentia-tensorflow-gpu"):
        try:
            importlib.metadata.version(dist)
            return True
        except importlib.metadata.PackageNotFoundError:
            continue
    return False


def _choose(spec: models.ModelSpec, backend: str, models_dir: str | None,
            have_ort: bool, have_ess: bool) -> ModelUse | None:
    onnx_path = models.find(spec.name, "onnx", models_dir)
    pb_path = models.find(spec.name, "pb", models_dir)
    if backend in ("auto", "onnx") and onnx_path is not None and have_ort:
        chosen = ("onnx", onnx_path)
    elif backend in ("auto", "essentia") and pb_path is not None and have_ess:
        chosen = ("essentia", pb_path)
    else:
        return None
    return ModelUse(spec, chosen[0], chosen[1], models.interface(spec, models_dir),
                    models.file_identity(chosen[1]))


def _why_not(spec: models.ModelSpec, backend: str, models_dir: str | None, have_ort: bool,
             have_ess: bool) -> str:
    """What to do so that ``spec`` can run here."""
    onnx_path = models.find(spec.name, "onnx", models_dir)
    pb_path = models.find(spec.name, "pb", models_dir)
    if onnx_path is None and pb_path is None:
        return f"`{models.download_command([spec.name])}`"
    if onnx_path is not None and backend != "essentia" and not have_ort:
        return "`pip install onnxruntime`"
    if pb_path is not None and backend == "essentia":
        return "`pip install essentia-tensorflow`"
    if pb_path is not None:
        return (f"`mirflow models convert {spec.name}` (needs `pip install tf2onnx tensorflow-cpu`) "
                "or `pip install essentia-tensorflow`")
    return f"{spec.name}.pb for the essentia backend: `{models.download_command([spec.name])}`"


def resolve(*, backend: str = "auto", models_dir: str | None = None) -> Resolution:
    """Decide which installed models compute each classifier key (two-stage preferred)."""
    if backend not in BACKENDS:
        raise ConfigError(f"classifier backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    have_ort, have_ess = onnxruntime_installed(), essentia_tensorflow_installed()
    routes: dict[str, Route] = {}
    missing: dict[str, str] = {}
    chosen: dict[str, ModelUse | None] = {}

    def use(name: str) -> ModelUse | None:
        if name not in chosen:
            chosen[name] = _choose(models.get(name), backend, models_dir, have_ort, have_ess)
        return chosen[name]

    for key in models.classifier_keys():
        two = models.two_stage_names(key)
        if two:
            emb, head = use(two[0]), use(two[1])
            if emb is not None and head is not None:
                routes[key] = Route(key, head, emb)
                continue
        single_name = models.single_stage_name(key)
        single = use(single_name) if single_name else None
        if single is not None:
            routes[key] = Route(key, single)
            continue
        hints = []
        if two:
            hints += [f"{n}: {_why_not(models.get(n), backend, models_dir, have_ort, have_ess)}"
                      for n in two if use(n) is None]
        if single_name:
            hints.append(f"or {single_name}: "
                         f"{_why_not(models.get(single_name), backend, models_dir, have_ort, have_ess)}")
        missing[key] = f"{key}: no usable model ({'; '.join(hints)})"
    return Resolution(routes, missing)


# -- runtimes ---------------------------------------------------------------------------------------
class OnnxRunner:
    """One ONNX Runtime session (created once, in ``setup``)."""

    backend = "onnx"

    def __init__(self, use: ModelUse, *, providers: list[Any], intra_threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.inter_op_num_threads = 1
        if intra_threads > 0:
            opts.intra_op_num_threads = intra_threads
            if intra_threads == 1:
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self.name = use.spec.name
        self.session = ort.InferenceSession(str(use.path), sess_options=opts, providers=providers)
        self.input = _pick(self.session.get_inputs(), use.iface.input, "input", use.path)
        self.output = _pick(self.session.get_outputs(), use.iface.output, "output", use.path)
        dim0 = self.session.get_inputs()[[i.name for i in self.session.get_inputs()].index(self.input)].shape[0]
        self.fixed_batch = dim0 if isinstance(dim0, int) and dim0 > 0 else None
        self.rows = 0  # patches or embeddings run through this session (tests, benchmarks)
        self.calls = 0

    def run(self, x: np.ndarray) -> np.ndarray:
        self.rows += len(x)
        self.calls += 1
        return np.asarray(self.session.run([self.output], {self.input: x})[0]).reshape(len(x), -1)


def _pick(nodes: list[Any], wanted: str, what: str, path: Path) -> str:
    names = [n.name for n in nodes]
    for n in names:
        if models.strip_port(n) == models.strip_port(wanted):
            return n
    if len(names) == 1:
        return names[0]
    raise ModelUnavailableError(f"{path.name} has no {what} named {wanted!r} (it has {names})")


class EssentiaRunner:
    """Essentia's ``TensorflowPredict`` on a frozen ``.pb`` graph, fed with mirflow's patches."""

    backend = "essentia"

    def __init__(self, use: ModelUse) -> None:
        import essentia
        import essentia.standard as es

        if not hasattr(es, "TensorflowPredict"):
            raise ModelUnavailableError("this Essentia has no TensorFlow support: "
                                        "pip install essentia-tensorflow")
        self._pool_cls = essentia.Pool
        self.name = use.spec.name
        self.input, self.output = use.iface.input, use.iface.output
        self.algo = es.TensorflowPredict(graphFilename=str(use.path), inputs=[self.input],
                                         outputs=[self.output])
        self.fixed_batch = None
        self.rows = 0
        self.calls = 0

    def run(self, x: np.ndarray) -> np.ndarray:
        self.rows += len(x)
        self.calls += 1
        # Essentia tensors are 4-D (batch, channel, time, feature); the singletons are squeezed.
        x4 = x[:, None, :, :] if x.ndim == 3 else x[:, None, None, :]
        pool = self._pool_cls()
        pool.set(self.input, np.ascontiguousarray(x4, dtype=np.float32))
        out = self.algo(pool)[self.output]
        return np.asarray(out, dtype=np.float32).reshape(len(x), -1)


def run_batched(runner: OnnxRunner | EssentiaRunner, x: np.ndarray, batch: int) -> np.ndarray:
    """``runner`` over ``x`` in calls of at most ``batch`` rows (or the model's fixed batch)."""
    step = runner.fixed_batch or max(1, int(batch))
    outs = []
    for start in range(0, len(x), step):
        chunk = x[start:start + step]
        if runner.fixed_batch and len(chunk) < step:  # pad a fixed-batch model's last call
            pad = np.zeros((step - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
            outs.append(runner.run(np.concatenate([chunk, pad]))[: len(chunk)])
        else:
            outs.append(runner.run(chunk))
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def onnx_providers(device: str) -> list[str | tuple[str, dict[str, Any]]]:
    """ONNX Runtime execution providers for a resolved ``device`` among those installed.

    ``cuda:N`` (NVIDIA or AMD ROCm, as :mod:`mirflow.core.devices` resolves them): the available
    accelerator providers (CUDA, ROCm, MIGraphX, in that order) on device ``N``, then the CPU
    provider as fallback. ``cpu`` and ``mps`` (ONNX Runtime has no MPS provider): the CPU provider.
    """
    import onnxruntime as ort

    kind, _, index = device.partition(":")
    if kind != "cuda":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    chosen: list[str | tuple[str, dict[str, Any]]] = [
        (p, {"device_id": int(index or 0)}) for p in GPU_PROVIDERS if p in available]
    return chosen + ["CPUExecutionProvider"]


# -- the analyzer ----------------------------------------------------------------------------------
@register
class ClassifiersAnalyzer(Analyzer):
    """Every installed VGGish-family classifier on one shared front end (see the module docstring).

    Outputs
    -------
    danceability : float [0, 1] or None
        P(danceable), mean over 0.96 s patches.
    atonality : float [0, 1] or None
        P(atonal).
    instrumentalness : float [0, 1] or None
        P(instrumental) (voice/instrumental model).
    vocal_gender_female : float [0, 1] or None
        P(female singing voice).
    <key>_series : list of float
        Per-patch values (one per 0.93 s hop), with ``series=True``.

    A key is ``None`` with a ``note`` when its model is not installed or the audio is shorter than
    one patch (15 041 samples at 16 kHz, about 0.94 s).
    """

    name = "classifiers"
    concurrent = True  # thread-safe, small working set: may run beside others
    version = 2
    device = "gpu"
    batchable = True
    model_memory = 1 << 29  # about 0.5 GiB: embedding model and heads
    outputs: ClassVar[tuple[str, ...]] = tuple(models.classifier_keys())

    class Params(AnalyzerParams):
        backend: Literal[BACKENDS] = Field(  # type: ignore[valid-type]
            "auto", description="runtime: onnx, essentia, or auto (ONNX where an .onnx exists)")
        batch: int = Field(64, ge=1, description="VGGish patches per inference call")
        series: bool = Field(False, description="also store the per-patch values as <key>_series")
        resampler: Literal["linear", "soxr"] = Field(
            "linear", description="16 kHz resampler: linear (Essentia's MonoLoader, resampleQuality=4) "
                                  "or soxr (band-limited, high quality)")
        models_dir: str | None = Field(None, description="folder searched first for model files")
        device: str = Field("auto", description="overrides the run's device for the classifiers "
                                                "(auto: the run's; cpu, cuda:N, rocm:N, mps)")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._resolution: Resolution | None = None
        self.runners: dict[str, OnnxRunner | EssentiaRunner] = {}
        self.sessions_created: dict[str, int] = {}

    # -- planning ---------------------------------------------------------------------------
    def resolution(self) -> Resolution:
        if self._resolution is None:
            self._resolution = resolve(backend=self.params["backend"],
                                       models_dir=self.params["models_dir"])
        return self._resolution

    def hashed_params(self) -> dict[str, Any]:
        res = self.resolution()
        used = {key: "+".join(u.tag for u in (r.embedding, r.model) if u is not None)
                for key, r in sorted(res.routes.items())}
        return {"series": bool(self.params["series"]), "patch_hop": vggish.PATCH_HOP,
                "frontend": vggish.FRONTEND_VERSION, "resampler": self.params["resampler"],
                "models": used}

    def unavailable_reason(self) -> str | None:
        if self.params["backend"] == "onnx" and not onnxruntime_installed():
            return "the onnx classifier backend needs ONNX Runtime: pip install onnxruntime"
        if self.params["backend"] == "essentia" and not essentia_tensorflow_installed():
            return "the essentia classifier backend needs: pip install essentia-tensorflow"
        res = self.resolution()
        if res.routes:
            return None
        dirs = ", ".join(str(d) for d in models.search_dirs(self.params["models_dir"]))
        two_stage = ["audioset-vggish-3"] + [s.name for s in models.REGISTRY.values() if s.role == "head"]
        head = (f"no VGGish classifier model is usable (looked in {dirs}). Get them with "
                f"`{models.download_command(two_stage)}`")
        anything = any(models.find(n, k, self.params["models_dir"])
                       for n in models.REGISTRY for k in ("pb", "onnx"))
        return head + ("; " + "; ".join(res.missing.values()) if anything else "")

    def accelerated(self, device: str) -> bool:
        """Only through ONNX Runtime with a GPU provider (CUDA, ROCm, MIGraphX) installed, and not
        when ``device`` sends the classifiers to the CPU; the Essentia backend runs on the CPU."""
        own = self.params["device"]
        if own != "auto":
            device = own
        if not device.startswith("cuda") or self.params["backend"] == "essentia":
            return False
        if not onnxruntime_installed():
            return False
        return any(p != "CPUExecutionProvider" for p in onnx_providers(device))

    # -- state --------------------------------------------------------------------------------
    def setup(self, device: str = "cpu") -> None:
        reason = self.unavailable_reason()
        if reason:
            raise ModelUnavailableError(reason)
        # the run resolved both (build_options); resolving again is a no-op that also serves
        # callers of the Python API who pass "auto"
        wanted = str(devices.resolve(self.params["device"] if self.params["device"] != "auto"
                                     else device))
        uses: dict[str, ModelUse] = {}
        for route in self.resolution().routes.values():
            for use in (route.embedding, route.model):
                if use is not None:
                    uses[use.spec.name] = use
        providers = None
        for name, use in uses.items():
            if name in self.runners:
                continue
            try:
                if use.backend == "onnx":
                    if providers is None:
                        providers = onnx_providers(wanted)
                    self.runners[name] = OnnxRunner(use, providers=providers,
                                                    intra_threads=self.threads)
                else:
                    self.runners[name] = EssentiaRunner(use)
            except ModelUnavailableError:
                raise
            except Exception as exc:  # noqa: BLE001 - runtimes raise their own error types
                raise ModelUnavailableError(
                    f"cannot load {use.path} with {use.backend}: {exc}; check it with "
                    f"`mirflow models verify {name}`") from exc
            self.sessions_created[name] = self.sessions_created.get(name, 0) + 1
        log.info("classifiers: %s", ", ".join(f"{k} <- {r.producer} ({r.model.backend})"
                                              for k, r in self.resolution().routes.items()))

    def teardown(self) -> None:
        self.runners.clear()

    # -- work ---------------------------------------------------------------------------------
    def prepare(self, ctx: TrackContext) -> None:
        """The VGGish front end (log-mel patches at 16 kHz), memoised: the GPU lane computes it in
        its decode threads, ahead of the model (:mod:`mirflow.run.stream`)."""
        vggish.track_patches(ctx, resampler=self.params["resampler"])

    def analyze_batch(self, ctxs: list[TrackContext]) -> list[dict[str, Any] | BaseException]:
        if not self.runners:
            self.setup("cpu")
        res = self.resolution()
        results: list[dict[str, Any] | BaseException | None] = [None] * len(ctxs)
        ready: list[tuple[int, np.ndarray]] = []
        for i, ctx in enumerate(ctxs):
            try:
                p = vggish.track_patches(ctx, resampler=self.params["resampler"])
            except Exception as exc:  # noqa: BLE001 - one bad track must not fail the batch
                results[i] = exc
                continue
            if len(p) == 0:
                results[i] = self._empty(ctx, res)
            else:
                ready.append((i, p))
        if ready:
            per_patch = self._infer(ctxs, ready, res)
            bounds = np.cumsum([0] + [len(p) for _, p in ready])
            for j, (i, _) in enumerate(ready):
                lo, hi = bounds[j], bounds[j + 1]
                results[i] = self._features({k: v[lo:hi] for k, v in per_patch.items()}, res)
        return [r for r in results]  # type: ignore[misc]

    def _infer(self, ctxs: list[TrackContext], ready: list[tuple[int, np.ndarray]],
               res: Resolution) -> dict[str, np.ndarray]:
        """Per-patch probabilities of every routed key for the stacked patches of ``ready``."""
        batch = int(self.params["batch"])
        stacked = np.concatenate([p for _, p in ready]) if len(ready) > 1 else ready[0][1]
        bounds = np.cumsum([0] + [len(p) for _, p in ready])
        embeddings: dict[str, np.ndarray] = {}
        outputs: dict[str, np.ndarray] = {}
        per_patch: dict[str, np.ndarray] = {}
        for key, route in res.routes.items():
            model = route.model
            if route.embedding is not None:
                emb_use = route.embedding
                if emb_use.spec.name not in embeddings:
                    emb = run_batched(self.runners[emb_use.spec.name], stacked, batch)
                    for j, (i, _) in enumerate(ready):  # shared with any later reader of the track
                        ctxs[i].memo(("vggish-embeddings", emb_use.tag),
                                     lambda j=j: emb[bounds[j]:bounds[j + 1]])
                    embeddings[emb_use.spec.name] = emb
                source = embeddings[emb_use.spec.name]
                step = max(batch, 4096)  # heads are tiny: few large calls
            else:
                source, step = stacked, batch
            if model.spec.name not in outputs:
                outputs[model.spec.name] = run_batched(self.runners[model.spec.name], source, step)
            per_patch[key] = outputs[model.spec.name][:, route.column]
        return per_patch

    def _features(self, per_patch: dict[str, np.ndarray], res: Resolution) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self.outputs:
            values = per_patch.get(key)
            out[key] = None if values is None else float(np.clip(values.mean(dtype=np.float64), 0, 1))
            if self.params["series"]:
                out[f"{key}_series"] = (None if values is None
                                        else [round(float(v), 6) for v in values])
        if res.missing:
            out["_note"] = "; ".join(res.missing.values())
        out["_record"] = self._record(res)
        return out

    def _empty(self, ctx: TrackContext, res: Resolution) -> dict[str, Any]:
        out: dict[str, Any] = {key: None for key in self.outputs}
        if self.params["series"]:
            out.update({f"{key}_series": None for key in self.outputs})
        mono = ctx.mono(vggish.SAMPLE_RATE, resampler=self.params["resampler"])
        seconds = len(mono) / vggish.SAMPLE_RATE
        out["_note"] = (f"audio too short for a VGGish patch: {seconds:.2f} s, at least "
                        f"{vggish.MIN_SAMPLES / vggish.SAMPLE_RATE:.2f} s needed")
        out["_record"] = self._record(res)
        return out

    @staticmethod
    def _record(res: Resolution) -> dict[str, Any]:
        return {"models": {k: r.producer for k, r in res.routes.items()},
                "backends": {k: r.model.backend for k, r in res.routes.items()}}
