"""The terminal mux was started on, as it was: put back on an immediate exit.

A sink may change the terminal's settings while it runs (the terminal view
turns off echo to read keys) and restores them when it closes. A second
Ctrl-C during shutdown ends mux at once with ``os._exit``, which runs no
closing code: the engine then puts back the settings it saw when the run
started, so the shell is not left without echo.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

try:
    import termios
except ImportError:  # no termios (Windows): nothing to put back
    termios = None  # type: ignore[assignment]

__all__ = ["no_restore", "terminal_restorer"]


def terminal_restorer(fd: int | None = None) -> Callable[[], None]:
    """A function that puts ``fd``'s (stdin's) terminal settings back as they are now.

    A no-op when ``fd`` is not a terminal. Safe to call from anywhere,
    any number of times; it never raises.
    """
    if fd is None:
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            return no_restore
    if termios is None or not os.isatty(fd):
        return no_restore
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        return no_restore

    def restore() -> None:
        try:
            termios.tcsetattr(fd, termios.TCSANOW, saved)
        except (termios.error, OSError):
            pass

    return restore


def no_restore() -> None:
    """The restorer of a run that is not on a terminal: does nothing."""
