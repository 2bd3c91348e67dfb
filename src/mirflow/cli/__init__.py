"""The command line: a thin layer over the library (commands, progress display, model commands)."""

from .commands import main

__all__ = ["main"]
