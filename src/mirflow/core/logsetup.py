"""Logging configuration shared by the command line and its worker processes.

:func:`configure` sets up the process the user started (see :mod:`mirflow.cli.logs` for what
``-v``, ``-vv`` and ``--log-file`` mean) and records the choice in the environment
(``MIRFLOW_LOG_LEVEL``, ``MIRFLOW_LOG_FILE``), so that worker processes, which are spawned and
start with fresh interpreters, apply the same configuration with :func:`configure_from_env`.

Only the ``mirflow`` logger tree is lowered; the root logger and third-party loggers stay at
WARNING (numba alone writes tens of thousands of DEBUG lines while compiling).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

#: Loggers held at WARNING whatever the verbosity (their DEBUG output is not about mirflow's work).
QUIET_LOGGERS = ("numba", "matplotlib", "urllib3", "asyncio", "PIL", "filelock", "fsspec", "h5py",
                 "tensorflow", "jax", "ray", "torch", "httpx", "httpcore", "datasets",
                 "huggingface_hub", "onnxruntime", "charset_normalizer", "botocore", "s3fs")
ENV_LEVEL, ENV_FILE = "MIRFLOW_LOG_LEVEL", "MIRFLOW_LOG_FILE"

_FORMAT = "%(levelname)s %(name)s: %(message)s"
_FILE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def configure(level: int = logging.WARNING, log_file: str | os.PathLike[str] | None = None, *,
              export: bool = True) -> None:
    """Console messages from ``level`` up (mirflow's; others from WARNING), and with ``log_file``
    every mirflow message from DEBUG up appended there. ``export`` passes the choice on to child
    processes through the environment."""
    root = logging.getLogger()
    for h in list(root.handlers):  # a second call (tests, notebooks) replaces ours, not adds
        if getattr(h, "_mirflow", False):
            root.removeHandler(h)
            h.close()
    console = logging.StreamHandler()
    console.setLevel(level)
    console.setFormatter(logging.Formatter(_FORMAT))
    console._mirflow = True  # type: ignore[attr-defined]
    root.addHandler(console)
    root.setLevel(logging.WARNING)
    logging.getLogger("mirflow").setLevel(logging.DEBUG if log_file else level)
    if log_file is not None:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")  # append mode: workers add to it
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter(_FILE_FORMAT))
        handler._mirflow = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    if export:
        os.environ[ENV_LEVEL] = str(level)
        if log_file is not None:
            os.environ[ENV_FILE] = str(Path(log_file).resolve())
        else:
            os.environ.pop(ENV_FILE, None)


def configure_from_env(default_level: int = logging.WARNING) -> None:
    """In a worker process: the configuration its parent chose (``default_level`` when the parent
    did not call :func:`configure`, e.g. a library user's process)."""
    try:
        level = int(os.environ.get(ENV_LEVEL, default_level))
    except ValueError:
        level = default_level
    configure(level, os.environ.get(ENV_FILE) or None, export=False)


__all__ = ["QUIET_LOGGERS", "configure", "configure_from_env"]
