"""One line per event appended to ``$MIRFLOW_PROBE_LOG`` (shared by the test plugins, so tests can
count setups and executions across worker processes); nothing when the variable is unset."""

from __future__ import annotations

import os


def log_event(line: str) -> None:
    path = os.environ.get("MIRFLOW_PROBE_LOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, (line + "\n").encode())  # one write per line: appends stay whole
        finally:
            os.close(fd)
