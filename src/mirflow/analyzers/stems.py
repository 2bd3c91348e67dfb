"""Per-stem features: the configured analyzers run on every stem file next to the mix.

Stems are any ``<stem>.<ext>`` audio files in the track folder besides ``full_mix.*`` (those
written by ``separation``, or stems that came with the dataset). Each configured analyzer runs on
each stem and its keys are prefixed with the stem name: ``drums_lufs``, ``bass_spectral_centroid_mean``.
Each stem is decoded once and shared by all the analyzers run on it.

The analyzer runs after ``separation`` when both are in a run; its record fingerprints the stem
files (names, sizes, modification times), so new or rewritten stems make it due again. A track
without stems is recorded as ``blocked`` ("no stems"), not as a failure.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

from ..core.audio import TrackContext
from ..core.dataset import stem_files
from ..core.errors import Blocked, ConfigError, MirflowError
from . import get, register
from pydantic import Field

from .base import Analyzer, AnalyzerParams


#: Why a track's stems cannot be analysed.
NO_STEMS = "no stem files next to the mix (run separation, or add <stem>.<ext> files)"


@register
class StemsAnalyzer(Analyzer):
    """Runs ``params["analyzers"]`` (default loudness and spectral) on each stem; keys ``<stem>_<key>``."""

    name: ClassVar[str] = "stems"
    concurrent: ClassVar[bool] = True  # thread-safe, small working set: may run beside others
    version: ClassVar[int] = 1
    after: ClassVar[tuple[str, ...]] = ("separation",)
    outputs: ClassVar[tuple[str, ...]] = ("<stem>_<feature>",)

    class Params(AnalyzerParams):
        analyzers: list[str] = Field(["loudness", "spectral"],
                                     description="analyzers run on every stem")
        params: dict[str, dict[str, Any]] = Field(
            {}, description="parameters of the per-stem analyzers, by analyzer (a run fills it "
                            "from the same analyzers' settings, e.g. --set spectral.X=V)")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        names = list(self.params["analyzers"])
        bad = [n for n in names if n in ("stems", "separation")]
        if bad:
            raise ConfigError(f"stems.analyzers cannot include {', '.join(bad)}")
        extra = set(self.params["params"]) - set(names)
        if extra:
            raise ConfigError(f"stems.params names analyzers not in stems.analyzers: "
                              f"{', '.join(sorted(extra))}")
        # set up in setup(); each with the user's parameters for that analyzer
        self._subs: dict[str, Analyzer] = {n: get(n)(**self.params["params"].get(n, {}))
                                           for n in names}

    def hashed_params(self) -> dict[str, Any]:
        """Per stem analyzer its version and output-affecting parameters (readable in the record)."""
        return {n: {"version": sub.version, "parameters": sub.hashed_params()}
                for n, sub in self._subs.items()}

    def unavailable_reason(self) -> str | None:
        for n, sub in self._subs.items():
            reason = sub.unavailable_reason()
            if reason:
                return f"per-stem analyzer {n} is unavailable: {reason}"
        return None

    def setup(self, device: str = "cpu") -> None:
        for sub in self._subs.values():
            sub.setup(device)

    def teardown(self) -> None:
        for sub in self._subs.values():
            sub.teardown()

    def input_fingerprint(self, track_dir: Path) -> str | None:
        parts = []
        for stem, path in stem_files(track_dir).items():
            st = path.stat()
            parts.append(f"{stem}:{path.name}:{st.st_size}:{st.st_mtime_ns}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def blocked_reason(self, track_dir: Path, coming: frozenset[str]) -> str | None:
        if "separation" in coming or stem_files(track_dir):
            return None
        return NO_STEMS

    def analyze(self, ctx: TrackContext) -> dict[str, Any]:
        stems = stem_files(ctx.path.parent)
        if not stems:
            raise Blocked(NO_STEMS)
        out: dict[str, Any] = {}
        notes = []
        for stem, path in stems.items():
            sctx = ctx.stem(stem, path)
            for n, sub in self._subs.items():
                try:
                    feats = dict(sub.analyze(sctx))
                except MirflowError as exc:
                    raise type(exc)(f"stem {path.name}: {exc}") from exc
                feats.pop("_record", None)
                note = feats.pop("_note", None)
                if note:
                    notes.append(f"{stem}/{n}: {note}")
                out.update({f"{stem}_{k}": v for k, v in feats.items()})
        out["stems_analyzed"] = sorted(stems)
        if notes:
            out["_note"] = "; ".join(notes)
        return out
