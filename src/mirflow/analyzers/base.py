"""The analyzer contract.

An analyzer is one unit of work with a small declared contract (see the design, section 5):
a ``name`` and ``version``, the ``device`` it prefers, the analyzers it ``requires``, its
``params`` (hashed into the sidecar record, so a change makes it due again), ``setup()`` for heavy
state created once per worker, and ``analyze(ctx)`` returning flat feature keys for one track.

Analyzers depend on :mod:`mirflow.core.audio` and :mod:`mirflow.models` only, never on executors or the
CLI, so the same analyzer runs unchanged under every executor.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo

from ..core.audio import TrackContext
from ..core.errors import ConfigError


class AnalyzerParams(BaseModel):
    """Base of every analyzer's declared parameters: typed, range-checked, no unknown keys.

    Validation is strict (no silent coercion: ``"abc"`` or ``true`` for a number is an error), so a
    value from ``--set``, ``mirflow.toml`` or the Python API is either exactly what was meant or
    rejected before any work starts. Integers are accepted where floats are declared.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "text"}


def _type_words(annotation: Any) -> str:
    """``float`` -> ``"a number"``, ``Literal["a", "b"]`` -> ``"one of 'a', 'b'"`` (for messages)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, UnionType):
        parts = [_type_words(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" (or unset)" if type(None) in args else "")
    if origin in (list, tuple, set, frozenset):
        inner = _type_words(args[0]) if args else "values"
        return "a list of " + inner.removeprefix("a ").removeprefix("an ")
    if origin is dict:
        return "a table"
    return _TYPE_WORDS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def describe_param(field: FieldInfo) -> str:
    """What a parameter accepts, in words: ``"a number, > 0 and < 1"``, ``"one of 'a', 'b'"``."""
    text = _type_words(field.annotation)
    bounds = []
    for m in field.metadata:
        if getattr(m, "min_length", None):
            bounds.append("not empty" if m.min_length == 1 else f"at least {m.min_length} long")
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(m, attr, None)
            if value is not None:
                bounds.append(f"{sign} {value:g}" if isinstance(value, float) else f"{sign} {value}")
    return text + (", " + " and ".join(bounds) if bounds else "")


def _describe_validation(analyzer: str, params: type[AnalyzerParams], raw: dict[str, Any],
                         exc: ValidationError) -> str:
    """One clause per problem, naming key, value and what is allowed:
    ``spectral.rolloff_percent = 1.5: Input should be less than 1 (allowed: a number, > 0 and < 1)``."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        key = str(err["loc"][0]) if err["loc"] else ""
        if err["type"] == "extra_forbidden":
            known = ", ".join(params.model_fields) or "none"
            problems.append(f"{analyzer}.{loc}: no such parameter (parameters of {analyzer}: {known})")
            continue
        value = raw.get(key, err.get("input"))
        shown = json.dumps(value) if isinstance(value, (bool, type(None))) else repr(value)
        field = params.model_fields.get(key)
        allowed = (f" (allowed: {describe_param(field)})"
                   if field is not None and err["type"] != "literal_error" else "")
        problems.append(f"{analyzer}.{loc} = {shown}: {err['msg']}{allowed}")
    return "; ".join(problems)


class Analyzer:
    """Base class of every analyzer. Subclasses set the class attributes and implement ``analyze``.

    Class attributes
    ----------------
    name : str
        Registry name, also the key of its record in the sidecar's ``_mirflow`` block.
    version : int
        Bump when outputs change; resume then recomputes it.
    device : {"cpu", "gpu"}
        Preferred device. GPU analyzers fall back to the CPU when no accelerator is present.
    requires : tuple of str
        Analyzers whose outputs this one needs: they are added to the run, run first on the same
        track, and a failure there blocks this one.
    after : tuple of str
        Analyzers that run first when they are part of the same run (ordering only): e.g. per-stem
        features run after separation, but also on stems that were already there.
    outputs : tuple of str
        The flat sidecar keys it writes (documentation and export column order).
    batchable : bool
        True when ``analyze_batch`` does real cross-track batching (executors then hand it
        several tracks at once).
    concurrent : bool
        True when it may run in a thread beside other concurrent analyzers of the same tracks,
        when a worker has idle cores to use (the tail of a run, a run of one long track): its
        ``analyze`` keeps no state shared with other analyzers, reads the context only through its
        methods (which are thread-safe) and only in the calling thread (its decoding and shared
        steps are timed per thread), and its working set is small next to the track's decoded
        views. False by default (an analyzer from a plugin runs alone unless it says so).
    elastic : bool
        True when it spreads its own work over the threads a worker is lent (separation's
        concurrent forward passes); estimates then divide its compute by them.
    model_memory : int
        Bytes its model takes in the process that holds it (0: no model); ``--max-memory``
        counts it once per process that holds a copy (:mod:`mirflow.run.limits`).
    Params : type[AnalyzerParams]
        The declared parameters (types, ranges, choices, defaults); user configuration overrides
        the defaults and is validated against it when the analyzer is built.

    Instance attributes
    -------------------
    params : dict
        The validated parameters (defaults filled in).
    threads : int
        CPU threads the analyzer may give its own thread pools (ONNX Runtime, PyTorch intra-op);
        set by the worker before :meth:`setup` from the executor's plan (one per worker process
        in the local executor); 0 = the library's default. Analyzers never read it from the
        environment.
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    device: ClassVar[str] = "cpu"
    requires: ClassVar[tuple[str, ...]] = ()
    after: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()
    batchable: ClassVar[bool] = False
    concurrent: ClassVar[bool] = False
    elastic: ClassVar[bool] = False
    model_memory: ClassVar[int] = 0
    Params: ClassVar[type[AnalyzerParams]] = AnalyzerParams
    threads: int = 0

    def __init__(self, **params: Any) -> None:
        try:
            validated = self.Params.model_validate(params)
        except ValidationError as exc:
            raise ConfigError(_describe_validation(self.name, self.Params, params, exc)) from None
        #: The validated parameters as plain values (defaults filled in).
        self.params: dict[str, Any] = validated.model_dump()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        legacy = cls.__dict__.get("default_params")
        if isinstance(legacy, dict) and "Params" not in cls.__dict__:
            # plugins written before parameters were declared models: a model typed by the defaults
            fields = {k: (Any if v is None else type(v), v) for k, v in legacy.items()}
            cls.Params = create_model(f"{cls.__name__}Params", __base__=AnalyzerParams,
                                      **fields)  # type: ignore[call-overload]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The declared default of every parameter."""
        return cls.Params().model_dump()

    # -- identity ------------------------------------------------------------------------------
    def params_hash(self) -> str:
        """Short stable hash of the parameters that affect the outputs (12 hex digits)."""
        blob = json.dumps(self.hashed_params(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def hashed_params(self) -> dict[str, Any]:
        """The parameters that change outputs (override to leave out e.g. batch sizes or devices)."""
        return self.params

    # -- availability and state ---------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        """``None`` when the analyzer can run here; otherwise a message saying how to fix it
        (e.g. which model to download). Must be cheap: it is called while planning."""
        return None

    def accelerated(self, device: str) -> bool:
        """Whether, given an accelerator ``device`` (``cuda:N``, ``mps``), this analyzer would compute
        on it on this machine. A GPU analyzer whose runtime cannot use it (ONNX Runtime without a
        GPU provider) or whose parameters send it to the CPU says no, and the local executor then
        runs it on the CPU workers, many at once, instead of in the GPU lane's one process. Called
        in the coordinator before any work, so it must be cheap and load no model."""
        return self.device == "gpu"

    def setup(self, device: str = "cpu") -> None:
        """Create heavy state (models, sessions) once per worker.

        ``device`` is the run's device, resolved once in configuration (:mod:`mirflow.core.devices`)
        and spelled as PyTorch does: ``cpu``, ``cuda:N`` (NVIDIA or ROCm) or ``mps``. Analyzers use
        it as given and never probe the hardware themselves.
        """

    def teardown(self) -> None:
        """Release heavy state at the end of a run."""

    def prepare(self, ctx: TrackContext) -> None:
        """Cheap CPU preprocessing of one track, memoised in ``ctx`` (resampling to the model rate,
        a model's front end). Called without :meth:`setup` (on another instance), by the GPU lane's
        decode threads while the model works on earlier tracks (:mod:`mirflow.run.stream`), so the
        model's thread finds its input ready. Default: nothing."""

    # -- work ----------------------------------------------------------------------------------
    def analyze(self, ctx: TrackContext) -> dict[str, Any]:
        """Compute the features of one track; return flat sidecar keys (JSON-serialisable).

        Two reserved keys are taken out of the returned dict by the engine: ``"_note"`` (a string
        explaining e.g. why values are ``None``: silence, too short) goes into the analyzer's
        sidecar record as ``note``; ``"_record"`` (a dict) is merged into the record itself, for
        bookkeeping that ``outputs_valid`` needs (e.g. stem frame counts) but users don't.
        Raise :class:`~mirflow.core.errors.Blocked` when an input other than the mix is missing, any
        other exception to fail this track (the message is recorded).

        An analyzer that implements only :meth:`analyze_batch` gets this for free: one track is a
        batch of one.
        """
        if type(self).analyze_batch is Analyzer.analyze_batch:
            raise NotImplementedError(f"{type(self).__name__} must implement analyze() or analyze_batch()")
        out = self.analyze_batch([ctx])[0]
        if isinstance(out, BaseException):
            raise out
        return out

    def analyze_batch(self, ctxs: list[TrackContext]) -> list[dict[str, Any] | BaseException]:
        """Compute several tracks at once; one result (or the exception for that track) per context.

        The default runs :meth:`analyze` per track; batching analyzers override it (and may then
        leave :meth:`analyze` to the base class).
        """
        out: list[dict[str, Any] | BaseException] = []
        for ctx in ctxs:
            try:
                out.append(self.analyze(ctx))
            except Exception as exc:  # noqa: BLE001 - one bad track must not fail the batch
                out.append(exc)
        return out

    # -- resume --------------------------------------------------------------------------------
    def output_files(self, track_dir: Path, record: dict[str, Any]) -> list[Path]:
        """Files this analyzer produced for the track (checked on resume: missing makes it due)."""
        return []

    def outputs_valid(self, track_dir: Path, record: dict[str, Any]) -> bool:
        """Whether the outputs recorded in ``record`` are still complete on disk."""
        return all(p.exists() for p in self.output_files(track_dir, record))

    def input_fingerprint(self, track_dir: Path) -> str | None:
        """A fingerprint of inputs other than the mix (e.g. stem files); a change makes it due."""
        return None

    def blocked_reason(self, track_dir: Path, coming: frozenset[str]) -> str | None:
        """Why this analyzer cannot run on the track, known from its files before any work: an
        input other than the mix is missing and none of ``coming`` (the analyzers due on the
        track before this one) will make it. ``None``: it may run. Planning then reports the
        pair as blocked instead of due, as :meth:`analyze` raising ``Blocked`` would."""
        return None
