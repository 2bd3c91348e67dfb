"""Logging for the command line: ``-v``/``-vv`` and ``--log-file``.

- Default: warnings and errors from mirflow and from the libraries it uses.
- ``-v``: mirflow's INFO messages too (what the plan found, models loaded, devices chosen).
- ``-vv``: mirflow's DEBUG messages too (every finished track, warm-up times).
- ``--log-file FILE``: every mirflow message from DEBUG up (whatever ``-v`` says) with timestamps
  and process ids, appended to FILE; the terminal keeps its level.

Worker processes get the same configuration (:func:`mirflow.core.logsetup.configure_from_env`).
Third-party libraries stay at WARNING even at ``-vv``: numba alone writes tens of thousands of
DEBUG lines of bytecode while compiling librosa's functions, and matplotlib, urllib3, asyncio, PIL,
filelock, fsspec, h5py, tensorflow, jax, ray and torch are as noisy.
"""

from __future__ import annotations

import logging
import os

from ..core.logsetup import QUIET_LOGGERS, configure


def setup_logging(verbose: int = 0, log_file: str | os.PathLike[str] | None = None) -> None:
    """Configure logging for one command (see the module docstring)."""
    configure({0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG), log_file)


__all__ = ["QUIET_LOGGERS", "setup_logging"]
