"""Stem files on disk: write a track's stems all or nothing, and check that stems are complete.

A track's stems (``drums.flac``, ``bass.flac``, ...) sit next to its mix. :func:`write_stems` writes
every stem under a temporary name (:data:`~mirflow.core.fsutil.TMP_PREFIX`) in the track folder,
flushes and fsyncs each, and renames them only when all are complete, so a crash or a full disk
leaves either the previous stems or the new ones, never a partial set. :func:`stem_complete` is the
resume check: header as expected and the last frames readable (a truncated FLAC keeps a header that
announces the full length).

This is file I/O with no knowledge of any model or analyzer, so it lives in ``core`` beside the
other file utilities: the separation analyzer writes stems with it, and any other producer or reader
of stems (per-stem features, a user's script) can use the same checks.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .fsutil import TMP_PREFIX, fsync_dir

log = logging.getLogger(__name__)

#: Stem file formats: extension -> libsndfile format name.
STEM_FORMATS = {"flac": "FLAC", "wav": "WAV"}
#: PCM bit depths -> libsndfile subtype.
STEM_BITS = {16: "PCM_16", 24: "PCM_24"}


def count_clipped(stems: np.ndarray) -> int:
    """Samples beyond full scale (``|x| > 1``) in ``stems``: PCM cannot hold them, writing clips them."""
    return int(np.count_nonzero(np.abs(stems) > 1.0))


def write_stems(track_dir: Path, stems: dict[str, np.ndarray], *, sr: int, fmt: str = "flac",
                bits: int = 16) -> dict[str, Path]:
    """Write ``stems`` (``{name: (channels, n) float32}``) as ``<track_dir>/<name>.<fmt>``, all or nothing.

    ``sr`` is the sample rate in Hz. Every stem is first written to
    ``.mirflow-tmp-<name>-<random>.<fmt>`` in ``track_dir``, flushed and fsynced; only when all are
    complete are they renamed over the final names, and the folder is fsynced. On any error the
    temporary files are removed and the previous stems (if any) are left untouched. Samples outside
    [-1, 1] are clipped (count them first with :func:`count_clipped`). Returns ``{name: final path}``.

    Raises ``KeyError`` for an unknown ``fmt`` or ``bits`` and ``OSError`` when the disk refuses.
    """
    import soundfile as sf

    track_dir = Path(track_dir)
    fmt_name, subtype = STEM_FORMATS[fmt], STEM_BITS[bits]
    tmps: dict[str, Path] = {}
    try:
        for name, data in stems.items():
            tmp = track_dir / f"{TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}.{fmt}"
            tmps[name] = tmp
            pcm = np.clip(np.ascontiguousarray(data.T), -1.0, 1.0)
            with open(tmp, "wb") as fh:
                with sf.SoundFile(fh, mode="w", samplerate=sr, channels=pcm.shape[1],
                                  format=fmt_name, subtype=subtype) as out:
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
            except OSError as exc:  # pragma: no cover - reported, and the lease sweeps stale temps
                log.warning("could not remove temporary stem %s: %s", tmp, exc)
        raise


@dataclass
class StemsToWrite:
    """Stems computed in one process and written by another (the local executor's GPU lane hands
    them to a CPU worker, which encodes them while the accelerator separates the next tracks)."""

    track_dir: Path
    stems: dict[str, np.ndarray]  # {name: (channels, n) float32}
    sr: int  # Hz
    fmt: str = "flac"
    bits: int = 16

    def write(self) -> dict[str, Path]:
        """:func:`write_stems` them (all or nothing); returns ``{name: final path}``."""
        return write_stems(self.track_dir, self.stems, sr=self.sr, fmt=self.fmt, bits=self.bits)

    def keep_in(self, ctx: Any, paths: dict[str, Path]) -> None:
        """Hold the written stems (as the files read back) in ``ctx`` for per-stem analyzers."""
        for name, data in self.stems.items():  # rounded to the PCM grid when first read
            ctx.keep_stem(name, paths[name], data, self.sr, bits=self.bits)


def as_written(data: np.ndarray, bits: int = 16) -> np.ndarray:
    """``data`` (float32) as a stem file of ``bits``-bit PCM reads back: clipped to [-1, 1) and
    rounded to the PCM grid (bit-exact for FLAC; WAV within one step), so analyzers given stems
    in memory compute what they would compute from the files."""
    scale = float(1 << (bits - 1))
    return (np.clip(np.round(data * scale), -scale, scale - 1) / scale).astype(np.float32)


def stem_complete(path: Path, *, frames: int | None, sr: int, channels: int = 2) -> bool:
    """Whether the stem at ``path`` is a readable file of ``channels`` channels at ``sr`` Hz holding
    ``frames`` frames (any non-zero number when ``None``).

    Checks the header and reads the last frames, which catches a truncated FLAC whose header still
    announces the full length.
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


__all__ = ["STEM_FORMATS", "STEM_BITS", "StemsToWrite", "as_written", "count_clipped", "write_stems", "stem_complete"]
