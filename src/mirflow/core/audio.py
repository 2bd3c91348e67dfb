"""Decoding, resampling and the shared per-track context.

Every track is decoded once into a :class:`TrackContext`. Analyzers ask the context for what they
need (a mono 22.05 kHz view, an STFT magnitude, stereo 44.1 kHz for separation, ...) and the context
computes each derived signal once and memoises it, so two analyzers asking for the same thing share
one computation. Analyzers never open audio files themselves.

Arrays are channels-first, ``float32``: ``(channels, samples)`` for multichannel signals and
``(samples,)`` for mono views.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .errors import ConfigError, DecodeError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: File extensions mirflow treats as audio (lower case, without the dot).
AUDIO_EXTENSIONS = frozenset(
    {"wav", "wave", "flac", "mp3", "ogg", "oga", "opus", "m4a", "mp4", "aac", "aif", "aiff",
     "aifc", "wma", "alac", "caf", "w64", "mka", "webm"}
)


@dataclass(frozen=True)
class Audio:
    """Decoded audio: ``samples`` is ``float32`` of shape ``(channels, frames)`` at ``sr`` Hz."""

    samples: np.ndarray
    sr: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def frames(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.frames / float(self.sr)


def decode(path: str | os.PathLike[str]) -> Audio:
    """Decode an audio file to ``float32`` at its native sample rate, keeping all channels.

    libsndfile (via soundfile) reads WAV, FLAC, OGG/Vorbis, Opus, AIFF and MP3; anything it cannot
    read (AAC/M4A, ALAC, WMA, ...) is decoded with FFmpeg through PyAV.

    Raises
    ------
    DecodeError
        When the file is missing, unreadable, empty, not audio, or holds no samples. The message
        names the reason.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DecodeError(f"cannot access {path.name}: {exc.strerror or exc}") from exc
    if size == 0:
        raise DecodeError(f"{path.name} is empty (0 bytes)")
    if not os.access(path, os.R_OK):
        raise DecodeError(f"cannot read {path.name}: permission denied")
    try:
        audio = _decode_soundfile(path)
    except _NotForSoundfile as sf_exc:
        try:
            audio = _decode_pyav(path)
        except DecodeError as av_exc:
            raise DecodeError(f"{av_exc} (libsndfile: {sf_exc})") from av_exc
    if audio.frames == 0:
        raise DecodeError(f"{path.name} holds no audio samples")
    _note_decode(path)
    return audio


#: When set, every :func:`decode` appends ``decode <pid> <path>`` to this file (tests and benchmarks
#: count decodes across worker processes with it; unset, it costs one dictionary lookup).
DECODE_LOG_ENV = "MIRFLOW_DECODE_LOG"


def _note_decode(path: Path) -> None:
    log_path = os.environ.get(DECODE_LOG_ENV)
    if not log_path:
        return
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"decode {os.getpid()} {path}\n".encode())
    finally:
        os.close(fd)


_DECODE_BLOCK = 1 << 16  # frames per soundfile read


class _NotForSoundfile(Exception):
    """libsndfile could not read the file; try FFmpeg."""


def _decode_soundfile(path: Path) -> Audio:
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            sr, channels, expected = int(f.samplerate), int(f.channels), max(int(f.frames), 0)
            # read blockwise straight into a channels-first array: no full-size transposed copy
            out = np.empty((channels, expected), dtype=np.float32)
            pos = 0
            while True:
                block = f.read(frames=_DECODE_BLOCK, dtype="float32", always_2d=True)
                n = block.shape[0]
                if n == 0:
                    break
                if pos + n > out.shape[1]:  # the header under-reported the length
                    out = np.concatenate([out[:, :pos], np.empty((channels, pos + n), np.float32)], axis=1)
                out[:, pos:pos + n] = block.T
                pos += n
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise _NotForSoundfile(str(exc)) from exc
    return Audio(np.ascontiguousarray(out[:, :pos]) if pos < out.shape[1] else out, sr)


def _decode_pyav(path: Path) -> Audio:
    import av

    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DecodeError(f"{path.name} has no audio stream")
            stream = container.streams.audio[0]
            sr = int(stream.codec_context.sample_rate or stream.rate or 0)
            channels = int(stream.codec_context.channels or 0)
            resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=sr)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
    except DecodeError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, IndexError) as exc:
        raise DecodeError(f"cannot decode {path.name}: {exc}") from exc
    if not chunks or sr <= 0:
        raise DecodeError(f"{path.name} holds no audio samples")
    samples = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    if channels and samples.shape[0] != channels:
        samples = samples[:channels]
    return Audio(np.ascontiguousarray(samples), sr)


#: Resamplers of :func:`resample`: soxr's high-quality converter (mirflow's default everywhere), or
#: libsamplerate's linear interpolator as Essentia runs it (``MonoLoader(resampleQuality=4)``).
RESAMPLERS = ("soxr", "linear")


def resample_linear(samples: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample like Essentia's ``Resample(quality=4)``: libsamplerate's ``SRC_LINEAR`` converter
    (through the ``samplerate`` package) over the whole signal at once, with the ratio
    ``sr_out / sr_in`` computed in float32 as Essentia does (its ``Real`` is float; with the exact
    double ratio the output drifts by up to 2e-3 from Essentia's and can be one sample shorter).
    ``samples`` is ``(channels, n)`` or ``(n,)``; returns float32 of the same layout."""
    if sr_in == sr_out:
        return samples
    try:
        import samplerate
    except ImportError as exc:
        raise ConfigError("the linear resampler needs the samplerate package: "
                          "pip install samplerate (or choose the soxr resampler)") from exc
    ratio = float(np.float32(sr_out) / np.float32(sr_in))
    x = np.ascontiguousarray(samples if samples.ndim == 1 else samples.T, dtype=np.float32)
    out = np.asarray(samplerate.resample(x, ratio, "linear"), dtype=np.float32)
    return out if samples.ndim == 1 else np.ascontiguousarray(out.T)


def resample(samples: np.ndarray, sr_in: int, sr_out: int, *, method: str = "soxr") -> np.ndarray:
    """Resample ``samples`` (``(channels, n)`` or ``(n,)``) from ``sr_in`` to ``sr_out`` Hz with soxr
    (HQ), or with :func:`resample_linear` when ``method="linear"``."""
    if sr_in == sr_out:
        return samples
    if method == "linear":
        return resample_linear(samples, sr_in, sr_out)
    if method != "soxr":
        raise ConfigError(f"unknown resampler {method!r}; choose one of {', '.join(RESAMPLERS)}")
    import soxr

    if samples.ndim == 1:
        return soxr.resample(samples, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)
    out = soxr.resample(np.ascontiguousarray(samples.T), sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average all channels of a ``(channels, n)`` array into one ``(n,)`` channel."""
    if samples.shape[0] == 1:
        return samples[0]
    return samples.mean(axis=0, dtype=np.float32)


_BS775 = np.array(  # 5.1 (L R C LFE Ls Rs) to stereo, ITU-R BS.775 without the LFE
    [[1.0, 0.0, 0.7071, 0.0, 0.7071, 0.0],
     [0.0, 1.0, 0.7071, 0.0, 0.0, 0.7071]], dtype=np.float32)


def to_stereo(samples: np.ndarray) -> np.ndarray:
    """Map ``(channels, n)`` to ``(2, n)``: mono is duplicated, 5.1 uses the ITU-R BS.775 downmix,
    other layouts average even channels to the left and odd channels to the right."""
    ch = samples.shape[0]
    if ch == 2:
        return samples
    if ch == 1:
        return np.repeat(samples, 2, axis=0)
    if ch == 6:
        return (_BS775 @ samples / _BS775.sum(axis=1, keepdims=True)).astype(np.float32)
    return np.stack([samples[0::2].mean(axis=0), samples[1::2].mean(axis=0)]).astype(np.float32)


@dataclass
class Apart:
    """Seconds spent on a track outside an analyzer's own compute, reported apart from it:
    decoding, each shared step computed (seconds by step, ``TrackContext.shared_seconds``), and
    waiting for another thread's decode or view."""

    decode: float = 0.0
    shared: dict[str, float] = field(default_factory=dict)
    waited: float = 0.0

    def __sub__(self, before: "Apart") -> "Apart":
        shared = {k: v - before.shared.get(k, 0.0) for k, v in self.shared.items()}
        return Apart(self.decode - before.decode, {k: v for k, v in shared.items() if v > 0},
                     self.waited - before.waited)

    @property
    def total(self) -> float:
        return self.decode + sum(self.shared.values()) + self.waited


@dataclass
class _ThreadTally(Apart):
    """What one thread has spent on one track (:class:`Apart`), and who reads in it now."""

    reader: str = ""


@dataclass
class TrackContext:
    """Everything known about one audio file while it is being analysed.

    The file is decoded lazily, once, on first use. Derived views are memoised under a key, so the
    same resampled signal or STFT is computed once however many analyzers ask for it.
    ``stats`` counts the expensive computations (``decode``, ``resample``, ``stft``, and every
    ``memo`` key computed) so tests and benchmarks can check the sharing.

    Analyzers of one track may run in several threads at once (a worker with idle cores to use,
    :class:`mirflow.run.worker.Worker`): the decode and every memoised view are computed by one
    thread while the others that need them wait, and the seconds each thread spent decoding, on
    shared steps and waiting for another thread's are tallied per thread (:meth:`apart`), so every
    analyzer's own compute time leaves them out.

    Parameters
    ----------
    path : Path
        The audio file.
    name : str
        A label for messages; the stem name (``"drums"``) for stem contexts, ``"mix"`` otherwise.
    """

    path: Path
    name: str = "mix"
    loader: Callable[[Path], Audio] = decode
    stats: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    _audio: Audio | None = field(default=None, repr=False)
    _decode_error: DecodeError | None = field(default=None, repr=False)
    _memo: dict[Hashable, Any] = field(default_factory=dict, repr=False)
    _stems: dict[str, "TrackContext"] = field(default_factory=dict, repr=False)
    _raw_stem: tuple[np.ndarray, int, int] | None = field(default=None, repr=False)  # see keep_stem
    #: Set by a pipelined executor: analyzers that write files (stems) leave them in
    #: ``files_to_write`` (``{analyzer: writer}``) for a later stage instead of writing them here.
    defer_writes: bool = False
    #: Whether :meth:`keep_stem` keeps stems in memory (a worker turns it off when no analyzer of
    #: the track reads stems, so a chunk does not hold them all until it ends).
    keep_stems: bool = True
    files_to_write: dict[str, Any] = field(default_factory=dict, repr=False)
    #: Seconds spent decoding this file (0 until it is decoded; a failed decode counts too).
    decode_seconds: float = 0.0
    #: Seconds spent computing the *shared steps* (views several analyzers read: the mono view
    #: resampled, ``"mono@22050"``, and its STFT, ``"stft@22050/2048/512"``), by step, each
    #: without decoding and without the steps it read, so every step's cost is counted once.
    shared_seconds: Counter = field(default_factory=Counter)
    #: The shared steps each reader (:attr:`reader`) asked for, computed then or already there.
    shared_uses: dict[str, set[str]] = field(default_factory=dict)
    _threads: threading.local = field(default_factory=threading.local, repr=False, compare=False)
    _guard: Any = field(default_factory=threading.Lock, repr=False, compare=False)
    _key_locks: dict[Hashable, Any] = field(default_factory=dict, repr=False, compare=False)

    def _mine(self) -> "_ThreadTally":
        """The calling thread's tally (created on first use)."""
        tally = getattr(self._threads, "tally", None)
        if tally is None:
            tally = self._threads.tally = _ThreadTally()
        return tally

    @property
    def reader(self) -> str:
        """Who is reading in this thread now (a worker sets the analyzer's name), for
        :attr:`shared_uses`."""
        return self._mine().reader

    @reader.setter
    def reader(self, name: str) -> None:
        self._mine().reader = name

    def apart(self, *, this_thread: bool = True) -> Apart:
        """What has been spent so far decoding, on each shared step and waiting for another
        thread's decode or view (a copy): by the calling thread (an analyzer running beside others,
        in a thread of its own), or by every thread (an analyzer running alone, which may read the
        context from threads of its own; no waiting then)."""
        if not this_thread:
            return Apart(self.decode_seconds, dict(self.shared_seconds))
        mine = self._mine()
        return Apart(mine.decode, dict(mine.shared), mine.waited)

    @contextmanager
    def _hold(self, key: Hashable) -> Iterator[None]:
        """Hold ``key``'s lock (one per memoised view, one for decoding); time spent waiting for
        another thread that holds it counts as this thread's ``waited``."""
        with self._guard:
            lock = self._key_locks.setdefault(key, threading.RLock())
        if not lock.acquire(blocking=False):
            start = time.perf_counter()
            lock.acquire()
            self._mine().waited += time.perf_counter() - start
        try:
            yield
        finally:
            lock.release()

    @classmethod
    def from_array(cls, samples: np.ndarray, sr: int, *, path: str | os.PathLike[str] = "<memory>",
                   name: str = "mix") -> "TrackContext":
        """A context around samples already in memory (``(channels, n)`` or ``(n,)``), for tests and libraries."""
        arr = np.asarray(samples, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        ctx = cls(Path(path), name=name)
        ctx._audio = _sanitise(Audio(np.ascontiguousarray(arr), int(sr)), ctx.warnings)
        return ctx

    # -- the decoded signal -------------------------------------------------------------------
    @property
    def audio(self) -> Audio:
        """The decoded file (decoded on first access; raises :class:`DecodeError`)."""
        if self._audio is not None:
            return self._audio
        with self._hold("_decode"):
            if self._audio is None and self._raw_stem is not None:  # a stem kept in memory: no decode
                from .stems_io import as_written

                samples, sr, bits = self._raw_stem
                self._audio, self._raw_stem = Audio(as_written(samples, bits), sr), None
            if self._audio is None:
                if self._decode_error is not None:  # a failed decode is not retried per analyzer
                    raise self._decode_error
                self.stats["decode"] += 1
                start = time.perf_counter()
                try:
                    self._audio = _sanitise(self.loader(self.path), self.warnings)
                except DecodeError as exc:
                    self._decode_error = exc
                    raise
                finally:
                    took = time.perf_counter() - start
                    self.decode_seconds += took
                    self._mine().decode += took
        return self._audio

    @property
    def sr(self) -> int:
        """Native sample rate in Hz."""
        return self.audio.sr

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.audio.duration

    # -- memoised views -----------------------------------------------------------------------
    def memo(self, key: Hashable, compute: Callable[[], T]) -> T:
        """Return the value memoised under ``key``, computing it with ``compute()`` the first time."""
        if key in self._memo:
            return self._memo[key]
        with self._hold(key):  # another thread computing it: wait for its result
            if key not in self._memo:
                with self._guard:
                    self.stats[str(key[0]) if isinstance(key, tuple) else str(key)] += 1
                self._memo[key] = compute()
        return self._memo[key]

    def shared(self, step: str, key: Hashable, compute: Callable[[], T]) -> T:
        """:meth:`memo` for a shared step (see :attr:`shared_seconds`): the reader's use of
        ``step`` is noted, and its computation timed, decoding and nested shared steps excluded."""
        if self.reader:
            self.shared_uses.setdefault(self.reader, set()).add(step)
        if key in self._memo:
            return self._memo[key]

        def timed() -> T:
            mine = self._mine()
            start, apart = time.perf_counter(), mine.total
            try:
                return compute()
            finally:
                # decoding, nested steps, waiting for another thread: counted by themselves
                took = max(0.0, time.perf_counter() - start - (mine.total - apart))
                with self._guard:
                    self.shared_seconds[step] += took
                mine.shared[step] = mine.shared.get(step, 0.0) + took

        return self.memo(key, timed)

    def resampled(self, sr: int | None = None) -> np.ndarray:
        """All channels at ``sr`` Hz (native rate when ``None``), ``(channels, n)`` float32."""
        if sr is None or sr == self.sr:
            return self.audio.samples
        return self.memo(("resample", sr), lambda: resample(self.audio.samples, self.sr, sr))

    def mono(self, sr: int | None = None, *, resampler: str = "soxr") -> np.ndarray:
        """Mono downmix (channel mean) at ``sr`` Hz (native when ``None``), ``(n,)`` float32.

        Downmixing happens before resampling (as in Essentia's ``MonoLoader``), so one resampler
        pass serves the mono view. ``resampler`` is one of :data:`RESAMPLERS`; each is memoised.
        """
        sr = self.sr if sr is None else sr
        native_mono = self.memo(("mono", None), lambda: to_mono(self.audio.samples))
        if sr == self.sr:
            return native_mono
        key = ("resample-mono", sr) if resampler == "soxr" else ("resample-mono", sr, resampler)
        step = f"mono@{sr}" if resampler == "soxr" else f"mono@{sr}/{resampler}"
        return self.shared(step, key, lambda: resample(native_mono, self.sr, sr, method=resampler))

    def stereo(self, sr: int | None = None) -> np.ndarray:
        """Stereo view ``(2, n)`` at ``sr`` Hz (see :func:`to_stereo` for the channel mapping)."""
        sr = self.sr if sr is None else sr
        native = self.memo(("stereo", None), lambda: to_stereo(self.audio.samples))
        if sr == self.sr:
            return native
        return self.memo(("resample-stereo", sr), lambda: resample(native, self.sr, sr))

    def stft(self, *, sr: int = 22050, n_fft: int = 2048, hop_length: int = 512) -> np.ndarray:
        """Magnitude STFT of the mono view at ``sr`` Hz: ``(1 + n_fft // 2, frames)`` float32.

        Hann window, centred frames with zero padding (librosa's defaults), so librosa feature
        functions given ``S=`` this matrix reproduce their own results. Computed once per
        ``(sr, n_fft, hop_length)``.
        """
        return self.shared(f"stft@{sr}/{n_fft}/{hop_length}", ("stft", sr, n_fft, hop_length),
                           lambda: stft_magnitude(self.mono(sr), n_fft=n_fft, hop_length=hop_length))

    # -- stems --------------------------------------------------------------------------------
    def stem(self, name: str, path: Path) -> "TrackContext":
        """The context of stem ``name`` stored at ``path`` (created once, decoded lazily), or the
        one :meth:`keep_stem` put in memory for that path (no decode)."""
        with self._guard:
            ctx = self._stems.get(name)
            if ctx is None or Path(ctx.path) != Path(path):
                ctx = self._stems[name] = TrackContext(path, name=name, loader=self.loader)
        return ctx

    def keep_stem(self, name: str, path: Path, samples: np.ndarray, sr: int, *,
                  bits: int | None = None) -> None:
        """Keep stem ``name`` (``(channels, n)`` float32 at ``sr`` Hz) written to ``path`` in memory,
        so per-stem analyzers of this track use it instead of decoding the file. Without ``bits``
        the samples are exactly the file's; with ``bits`` they are the float samples written as
        ``bits``-bit PCM, rounded to that grid (:func:`~mirflow.core.stems_io.as_written`) only
        when an analyzer reads them."""
        if not self.keep_stems:
            return
        ctx = TrackContext(Path(path), name=name, loader=self.loader)
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if bits:
            ctx._raw_stem = (samples, int(sr), int(bits))
        else:
            ctx._audio = Audio(samples, int(sr))
        self._stems[name] = ctx

    def kept_stems(self) -> dict[str, tuple[Path, Audio]]:
        """The stems held in memory (``{name: (path, audio)}``), to hand them to another process."""
        return {n: (c.path, c.audio) for n, c in self._stems.items()
                if c._audio is not None or c._raw_stem is not None}


def periodic_hann(n: int) -> np.ndarray:
    """The periodic ("DFT-even") Hann window of ``n`` samples, float32: ``scipy.signal.get_window(
    "hann", n)`` and librosa's STFT window, as the first ``n`` points of NumPy's symmetric window
    of ``n + 1``."""
    if n < 2:
        return np.ones(max(n, 0), dtype=np.float32)
    return np.hanning(n + 1)[:-1].astype(np.float32)


def stft_magnitude(y: np.ndarray, *, n_fft: int = 2048, hop_length: int = 512,
                   block_frames: int = 1024) -> np.ndarray:
    """Magnitude STFT ``(1 + n_fft // 2, 1 + len(y) // hop_length)`` float32 of a mono signal.

    The same frames as ``librosa.stft(y, center=True, pad_mode="constant")`` with a periodic Hann
    window, but computed in blocks of ``block_frames`` frames straight into the float32 output, so
    peak memory is the output plus one block (the full complex matrix is never held), and signals
    shorter than ``n_fft`` need no special case.
    """
    from scipy import fft  # not scipy.signal: its import loads scipy.stats & co., about 1 s

    y = np.asarray(y, dtype=np.float32)
    pad = n_fft // 2
    padded = np.pad(y, (pad, pad))
    if padded.size < n_fft:
        padded = np.pad(padded, (0, n_fft - padded.size))
    frames = 1 + (padded.size - n_fft) // hop_length
    window = periodic_hann(n_fft)
    view = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    out = np.empty((1 + n_fft // 2, frames), dtype=np.float32)
    for start in range(0, frames, block_frames):
        block = view[start:start + block_frames] * window
        out[:, start:start + block.shape[0]] = np.abs(fft.rfft(block, axis=1)).T
    return out


def _sanitise(audio: Audio, warnings: list[str]) -> Audio:
    """Replace non-finite samples by 0 and note it, so one bad sample cannot poison every feature."""
    bad = ~np.isfinite(audio.samples)
    count = int(bad.sum())
    if count:
        samples = np.where(bad, np.float32(0.0), audio.samples)
        msg = f"{count} non-finite (NaN/inf) samples replaced by 0"
        log.warning("%s", msg)
        warnings.append(msg)
        return Audio(samples, audio.sr)
    return audio
