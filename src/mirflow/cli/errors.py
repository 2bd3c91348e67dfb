"""The command line's one error map: exception class -> exit code and a one-line message.

Every ``mirflow`` command runs inside :func:`handle_errors` (the command group applies it to the
whole command tree, see :class:`MirflowGroup`), so no command catches mirflow's exceptions itself.
A deliberate error (:class:`~mirflow.core.errors.MirflowError`) prints ``error: <message>`` on one
line; an unexpected one prints its type and message and points to ``-v``. The traceback is shown
only with ``-v``.

Exit codes
----------
0
    Success.
1
    Some tracks failed (``run``, ``demo``), or a download, conversion or verification failed
    (``models``), or an unexpected internal error.
2
    Usage, configuration or bad input: unknown option or analyzer, a parameter of the wrong type or
    out of range, a device this machine does not have, a missing dataset, a corrupt models lock file.
130
    Interrupted (Ctrl-C); run the same command again to resume.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from ..core import errors

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

#: Exit code of each exception class; the first class in this order that matches wins.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (errors.ConfigError, EXIT_USAGE),
    (errors.DatasetError, EXIT_USAGE),
    (errors.DecodeError, EXIT_USAGE),
    (errors.SidecarCorrupt, EXIT_USAGE),
    (errors.SidecarError, EXIT_USAGE),
    (errors.ModelLockError, EXIT_USAGE),
    (errors.ModelUnavailableError, EXIT_USAGE),
    (errors.DownloadError, EXIT_FAILED),
    (errors.ConvertError, EXIT_FAILED),
    (errors.AnalysisError, EXIT_FAILED),
    (errors.Blocked, EXIT_FAILED),
    (errors.HandOffLost, EXIT_FAILED),
    (errors.MirflowError, EXIT_FAILED),
)

console = Console(stderr=True)
log = logging.getLogger("mirflow.cli")

F = TypeVar("F", bound=Callable[..., Any])


def exit_code(exc: BaseException) -> int:
    """The exit code for ``exc`` (see the module docstring)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_FAILED


def message(exc: BaseException) -> str:
    """The one line printed for ``exc``: the message of a mirflow error, type and message otherwise."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, errors.MirflowError):
        return text
    return f"unexpected {type(exc).__name__}: {text}"


def _verbose() -> int:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return int((root.params.get("verbose") if root is not None else 0) or 0)


def handle_errors(func: F) -> F:
    """Decorator: run ``func``; turn a raised exception into one line on stderr and an exit code.

    Click's own exits and usage errors pass through unchanged (click prints them and exits 2).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - this is the error boundary
            code = exit_code(exc)
            verbose = _verbose()
            if verbose and not isinstance(exc, KeyboardInterrupt):
                console.print_exception(show_locals=False)
            if isinstance(exc, KeyboardInterrupt):
                console.print("[yellow]interrupted:[/] run the same command again to resume",
                              soft_wrap=True, highlight=False)
                sys.exit(code)
            hint = "" if verbose or isinstance(exc, errors.MirflowError) else \
                " (run with -v for the traceback)"
            console.print(f"[red]error:[/] {escape(message(exc))}{hint}", soft_wrap=True,
                          highlight=False)
            sys.exit(code)

    return wrapper  # type: ignore[return-value]


class MirflowGroup(click.Group):
    """A command group whose commands (and nested groups) all run inside :func:`handle_errors`."""

    def invoke(self, ctx: click.Context) -> Any:
        return handle_errors(super().invoke)(ctx)


__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_CODES", "exit_code",
           "message", "handle_errors", "MirflowGroup"]
