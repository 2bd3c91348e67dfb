"""Logging for the command line: ``-v``/``-vv`` and ``--log-file``.

- Default: warnings and errors from mirflow and from the libraries it uses.
- ``-v``: mirflow's INFO messages too (models loaded, devices chosen, what a run decided).
- ``-vv``: mirflow's DEBUG messages too.
- ``--log-file FILE``: every mirflow message from DEBUG up (whatever ``-v`` says) with timestamps
  and process ids, appended to FILE; the terminal keeps its level.

Third-party libraries stay at WARNING even at ``-vv``: numba alone writes tens of thousands of
DEBUG lines of bytecode while compiling librosa's functions, and matplotlib, urllib3, asyncio, PIL,
filelock, fsspec, h5py, tensorflow, jax, ray and torch are as noisy. Only the ``mirflow`` logger
tree is lowered.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

#: Loggers held at WARNING whatever the verbosity (their DEBUG output is not about mirflow's work).
QUIET_LOGGERS = ("numba", "matplotlib", "urllib3", "asyncio", "PIL", "filelock", "fsspec", "h5py",
                 "tensorflow", "jax", "ray", "torch", "httpx", "httpcore", "datasets",
                 "huggingface_hub", "onnxruntime", "charset_normalizer", "botocore", "s3fs")

_FORMAT = "%(levelname)s %(name)s: %(message)s"
_FILE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def setup_logging(verbose: int = 0, log_file: str | os.PathLike[str] | None = None) -> None:
    """Configure the root and ``mirflow`` loggers for one command (see the module docstring)."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
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
    root.setLevel(logging.WARNING)  # third-party messages: warnings and up
    mirflow_logger = logging.getLogger("mirflow")
    mirflow_logger.setLevel(logging.DEBUG if log_file else level)
    if log_file is not None:
        path = Path(log_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter(_FILE_FORMAT))
        handler._mirflow = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        # the mirflow tree passes DEBUG on; the console handler filters it back to ``level``
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)  # warnings.warn(...) go through logging (and into the file)


__all__ = ["QUIET_LOGGERS", "setup_logging"]
