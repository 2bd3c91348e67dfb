"""The mirflow exception family: every exception class mirflow defines lives here.

Every error mirflow raises on purpose derives from :class:`MirflowError`, so callers (the CLI, a
user's script) can catch one type; the subclasses say what went wrong in a way a user can act on.
The command line maps each class to an exit code and a one-line message in
:mod:`mirflow.cli.errors`; other modules re-export the classes they raise where that was their
documented home (``mirflow.models.registry.DownloadError``, ``mirflow.core.sidecar.SidecarCorrupt``).
"""

from __future__ import annotations


class MirflowError(Exception):
    """Base class of every error mirflow raises deliberately."""


class DecodeError(MirflowError):
    """An audio file could not be decoded (empty, corrupt, unsupported, unreadable)."""


class ConfigError(MirflowError):
    """Invalid configuration: a bad option, an unknown analyzer, a malformed ``mirflow.toml``."""


class ModelUnavailableError(MirflowError):
    """A model an analyzer needs is not installed; the message says how to get it."""


class AnalysisError(MirflowError):
    """An analyzer could not compute its features for one track (the reason is in the message)."""


class SidecarError(MirflowError):
    """A sidecar could not be read or written."""


class SidecarCorrupt(SidecarError):
    """The sidecar exists but is not a valid JSON object."""


class ModelLockError(MirflowError):
    """A models folder's lock file (``mirflow-models.lock.json``) is unreadable or not valid JSON."""


class DownloadError(MirflowError):
    """A model file could not be downloaded (network, HTTP status, checksum)."""


class ConvertError(MirflowError):
    """``.pb`` to ``.onnx`` conversion failed or ``tf2onnx`` is missing."""


class DatasetError(MirflowError):
    """The dataset path is missing or not a folder, or organize cannot place a file."""


class Blocked(MirflowError):
    """An analyzer cannot run on this track because an input it needs is missing (e.g. no stems)."""


class HandOffLost(MirflowError):
    """A track handed from one worker process to another through shared memory
    (:mod:`mirflow.core.shared`) is gone before it was read: removed by a cleanup, or its run was
    stopped. The track's analyzers must run again."""


class TrackTimeout(BaseException):
    """Raised by the serial executor's timer in the analysing thread when a track overruns its time
    limit. A ``BaseException`` (like ``KeyboardInterrupt``) so the per-analyzer ``except Exception``
    does not swallow it as an ordinary analyzer error; not a :class:`MirflowError`, it never leaves
    the executor."""
