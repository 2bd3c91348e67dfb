"""Per-track limits: how long a track may take and how much memory it will need.

Both are decided in the coordinator from the audio header only (``soundfile.info``, else PyAV's
container duration), before a track is handed to a worker, so nothing is decoded to decide them.

**Time** (``--track-timeout``, ``[run] track_timeout``): by default a track may take
``max(600 s, 10 x its duration)``, generous for honest work on a slow CPU (full-size htdemucs
separation runs at about 1x realtime on one core of this project's 2-core test machine, the other
analyzers together at a fraction of that), and bounded for a stuck decoder or driver. A track over
its limit has its worker replaced and is recorded as ``timed out after N s``.

**Memory** (``--max-memory``): a track's working set is estimated as its decoded audio (``float32``,
all channels, native rate) twice over (the decoded mix plus the resampled views and features built
from it), plus, per due analyzer, what it holds beyond that (:data:`ANALYZER_MEMORY`; a plugin
analyzer may define ``memory_estimate(frames, channels, sr) -> bytes``). A track whose estimate
exceeds the budget is failed with ``needs about N GiB, budget M GiB`` instead of being handed to the
kernel's OOM killer, and the coordinator keeps the estimates of the tracks in flight within the
budget. The default budget is 80 % of the machine's memory (or of the cgroup limit of a container).

Every track is decoded whole into memory today; what each analyzer adds to that:

- ``loudness``: streams (K-weighting and true-peak oversampling in blocks of 2**16 samples): a few MiB;
- ``spectral``: the STFT is computed in blocks of frames: a few MiB plus the mono view;
- ``tonal``, ``rhythm``: whole-track feature matrices at 22.05 kHz (chroma, onset envelope): small,
  but they need the whole mono view;
- ``separation``: cannot stream the output: four stems at 44.1 kHz stereo are held until written, plus
  the model (about 1.5 GiB on CPU);
- ``classifiers``: the mel patches of the whole track plus the model (about 0.5 GiB);
- ``stems``: reads one stem at a time.

A model (``Analyzer.model_memory``) counts once per track in flight, as each track in flight may
have a worker process with its own copy, except where one process holds it for every track (the
local executor's GPU lane: ``models_held_once``): there it counts once for the run; and with the
local executor's CPU workers (``models_per_worker``), which keep the models they ran until the run
ends, whether busy or not: there it counts once per worker. When mirflow chooses the number of
workers it starts no more than fit their model copies in :data:`WORKER_MODELS_SHARE` of the budget
(:func:`workers_for_memory`), keeping the cores: fewer workers are lent more threads each.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError

log = logging.getLogger(__name__)

GIB = float(1 << 30)
#: Default time limit: at least this many seconds...
MIN_TIMEOUT_S = 600.0
#: ...or this many times the track's duration, whichever is longer.
TIMEOUT_PER_AUDIO_SECOND = 10.0
#: Time limit of a track whose duration cannot be read from its header, seconds.
UNKNOWN_DURATION_TIMEOUT_S = 3600.0
#: Default memory budget as a fraction of the machine's (or the container's) memory.
DEFAULT_MEMORY_FRACTION = 0.8

_F32 = 4
_SEP_SR = 44100


@dataclass(frozen=True)
class AudioInfo:
    """What the header says: ``frames`` at ``sr`` Hz in ``channels`` channels."""

    frames: int
    sr: int
    channels: int

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.frames / float(self.sr) if self.sr else 0.0

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded ``float32`` audio at the native rate."""
        return self.frames * self.channels * _F32


def audio_info(path: Path) -> AudioInfo | None:
    """The header of ``path`` (libsndfile, else FFmpeg through PyAV); ``None`` when unreadable."""
    try:
        import soundfile as sf

        info = sf.info(str(path))
        if info.frames > 0 and info.samplerate > 0:
            return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))
    except Exception:  # noqa: BLE001 - any failure: try FFmpeg, else unknown
        pass
    try:
        import av

        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            stream = container.streams.audio[0]
            sr = int(stream.codec_context.sample_rate or stream.rate or 0)
            channels = int(stream.codec_context.channels or 0)
            seconds = None
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / 1_000_000
            if sr and channels and seconds:
                return AudioInfo(int(round(seconds * sr)), sr, channels)
    except Exception:  # noqa: BLE001
        pass
    return None


def track_timeout(info: AudioInfo | None, configured: float = 0.0) -> float:
    """Seconds a track may take: ``configured`` when > 0, else the default described above."""
    if configured > 0:
        return float(configured)
    if info is None:
        return UNKNOWN_DURATION_TIMEOUT_S
    return max(MIN_TIMEOUT_S, TIMEOUT_PER_AUDIO_SECOND * info.duration)


#: Stereo stems per separated track (four sources: drums, bass, other, vocals).
STEM_SOURCES = 4


def _stereo_44k_bytes(info: AudioInfo) -> int:
    """Bytes of the track as float32 stereo at separation's 44.1 kHz (the model input, one stem)."""
    return int(info.duration * _SEP_SR) * 2 * _F32


def _sep_bytes(info: AudioInfo) -> int:
    # input, four stems, overlap-add buffers
    return (1 + STEM_SOURCES + 1) * _stereo_44k_bytes(info)


#: Bytes an analyzer holds beyond the decoded track and its shared views, from the header.
ANALYZER_MEMORY = {
    "loudness": lambda info: 16 << 20,
    "spectral": lambda info: 64 << 20,
    "tonal": lambda info: int(info.duration * 22050) * _F32,
    "rhythm": lambda info: int(info.duration * 22050) * _F32 * 2,
    "separation": _sep_bytes,
    "classifiers": lambda info: int(info.duration * 16000) * _F32 * 2,
    "stems": lambda info: 2 * _stereo_44k_bytes(info),
}


def memory_needed(info: AudioInfo, due: tuple[str, ...], models_held: frozenset[str] = frozenset()) -> int:
    """Estimated peak bytes for analysing ``due`` on one track (see the module docstring).

    Each due analyzer's model counts once per track, as when every track in flight has a worker
    process, each with its own copy; except the analyzers in ``models_held``, whose one copy serves
    every track (the local executor's GPU lane) and is counted once for the run
    (:func:`models_memory`)."""
    from .. import analyzers as registry

    total = 2 * info.decoded_bytes
    for name in due:
        hook = getattr(registry.get(name), "memory_estimate", None)
        if callable(hook):
            total += int(hook(info.frames, info.channels, info.sr))
        elif name in ANALYZER_MEMORY:
            total += int(ANALYZER_MEMORY[name](info))
        if name not in models_held:
            total += registry.get(name).model_memory
    return total


def models_memory(names: frozenset[str] | set[str]) -> int:
    """Bytes of the models of ``names`` held once for the whole run (``Analyzer.model_memory``:
    the CPU copy; on an accelerator the host side of a model is smaller, so an upper bound)."""
    from .. import analyzers as registry

    return sum(registry.get(n).model_memory for n in names)


#: The share of the run's memory budget the CPU workers' own model copies may take when mirflow
#: chooses the number of workers; the rest is for the tracks in flight (audio, stems, working sets).
WORKER_MODELS_SHARE = 0.5


def workers_for_memory(workers: int, per_worker: int, budget: float) -> int:
    """The most workers, up to ``workers`` and at least one, whose model copies of ``per_worker``
    bytes each fit in :data:`WORKER_MODELS_SHARE` of ``budget`` (bytes); ``workers`` when either is
    unknown (0)."""
    if per_worker <= 0 or budget <= 0:
        return workers
    return max(1, min(workers, int(WORKER_MODELS_SHARE * budget // per_worker)))


#: The share of the run's memory budget the GPU lane's queues may hold (tracks decoded ahead, in
#: the models, waiting to be written or handed on); the rest is for the models, the CPU workers and
#: the coordinator.
LANE_MEMORY_SHARE = 0.25
#: Duration assumed for a track whose header cannot be read, seconds (for :func:`held_bytes`).
UNKNOWN_DURATION_S = 600.0


def held_bytes(info: AudioInfo | None, due: tuple[str, ...]) -> int:
    """Bytes of the arrays one track holds while it waits in a queue of the GPU lane: the decoded
    mix (``float32``, native rate and channels) and, when ``separation`` is due, the model input
    and :data:`STEM_SOURCES` stems (``float32``, stereo at 44.1 kHz). From the header only."""
    if info is None:
        info = AudioInfo(int(UNKNOWN_DURATION_S * _SEP_SR), _SEP_SR, 2)
    total = info.decoded_bytes
    if "separation" in due:
        total += (1 + STEM_SOURCES) * _stereo_44k_bytes(info)
    return total


def lane_budget(budget: float) -> float:
    """Bytes the GPU lane's queues may hold, from the run's budget (``--max-memory``; 0: unknown,
    no bound). The lane always admits one track when it holds none, so a small budget slows it
    down but never stops it."""
    return LANE_MEMORY_SHARE * budget if budget > 0 else 0.0


def machine_memory() -> int | None:
    """Bytes of memory this process may use: physical RAM, or a smaller cgroup (container) limit."""
    total = None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        try:
            import psutil  # type: ignore[import-not-found]

            total = int(psutil.virtual_memory().total)
        except Exception:  # noqa: BLE001
            total = None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and (total is None or int(text) < total):
            total = int(text)
    return total


def default_memory_budget() -> float:
    """Bytes: :data:`DEFAULT_MEMORY_FRACTION` of :func:`machine_memory` (0 = unknown: no check)."""
    total = machine_memory()
    return DEFAULT_MEMORY_FRACTION * total if total else 0.0


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str | float | int) -> float:
    """``"16G"``, ``"16GiB"``, ``"512M"``, ``"1.5T"`` -> bytes (powers of 1024); a bare number is GiB."""
    if isinstance(text, (int, float)):
        return float(text) * GIB
    m = _SIZE.match(str(text))
    if not m:
        raise ConfigError(f"--max-memory expects a size such as 16G or 512M, got {text!r}")
    value, unit = float(m.group(1)), m.group(2).lower()
    if not unit:
        return value * GIB
    return value * 1024 ** (" kmgt".index(unit))


def describe_gib(n: float) -> str:
    """Bytes as GiB for messages (one decimal below 10 GiB, two significant digits below 0.1)."""
    g = n / GIB
    if g < 0.1:
        return f"{g:.2g}"
    return f"{g:.1f}" if g < 10 else f"{g:.0f}"
