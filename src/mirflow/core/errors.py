"""The mirflow exception family.

Every error mirflow raises on purpose derives from :class:`MirflowError`, so callers (the CLI, a
user's script) can catch one type; the subclasses say what went wrong in a way a user can act on.
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


class DatasetError(MirflowError):
    """The dataset path is missing or not a folder, or organize cannot place a file."""


class Blocked(MirflowError):
    """An analyzer cannot run on this track because an input it needs is missing (e.g. no stems)."""
