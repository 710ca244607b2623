"""The terminal the view runs on: its settings while the view runs, and its keys.

:class:`TerminalMode` turns off the echo of ``^C`` and, when the view reads
keys, canonical mode and echo (cbreak: one key at a time, not shown); ISIG
stays on, so Ctrl-C still stops the run. :meth:`TerminalMode.restore` puts
back the exact settings it found, and may be called more than once: the
sink calls it when it closes and the key task in its ``finally``, so a
failure or a cancelled run restores the terminal too. (A second Ctrl-C
during shutdown ends mux with ``os._exit``, which runs no closing code: the
engine puts back the settings it found at the start, see ``mux_core._run.tty``.)

:class:`TtyKeys` reads keys with ``trio.lowlevel.wait_readable`` on stdin's
fd, then one non-blocking-in-practice ``os.read`` (cbreak with ``VMIN=1``
returns what is there). No thread: cancelling the wait is immediate, and no
reader is left blocked in ``read()`` after the view closed to swallow a key
meant for the shell. The fd's flags are not touched (``O_NONBLOCK`` would
be shared with the shell that started mux).
"""

from __future__ import annotations

import os
from typing import IO, Any, Protocol

try:
    import termios
except ImportError:  # Windows: no cbreak, no keys
    termios = None  # type: ignore[assignment]

# trio is imported by the methods that use it: loading the plugin (every mux
# command does) does not pay for it.

__all__ = ["KeySource", "TerminalMode", "TtyKeys", "keyboard_fd"]


class KeySource(Protocol):
    """Where the view's keys come from: a terminal, or a test's fake."""

    async def read(self) -> bytes:
        """The next keys typed (at least one byte); ``b""`` once there are no more."""
        ...


def _fd_of(stream: IO[str] | None) -> int | None:
    try:
        if stream is None or not stream.isatty():
            return None
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return None


def keyboard_fd(stdin: IO[str] | None, view: IO[str] | None) -> int | None:
    """stdin's fd when keys can be read: stdin is a terminal, and the very terminal
    the view is drawn on (never a pipe, a file, CI, or ``FORCE_COLOR`` pretending)."""
    keys, screen = _fd_of(stdin), _fd_of(view)
    if keys is None or screen is None:
        return None
    if termios is None:
        return None
    try:
        if not os.path.samestat(os.fstat(keys), os.fstat(screen)):
            return None
    except OSError:
        return None
    return keys


class TerminalMode:
    """The terminal's settings while the view runs, and the way back to the old ones."""

    def __init__(self, fd: int, saved: list[Any]) -> None:
        self.fd = fd
        self._saved: list[Any] | None = saved

    @classmethod
    def enter(cls, stream: IO[str] | None, *, keys: bool = False) -> TerminalMode | None:
        """Quiet ``^C`` on ``stream``'s terminal; with ``keys``, cbreak mode too.

        None when ``stream`` is not a terminal (nothing changed).
        """
        fd = _fd_of(stream)
        if fd is None or termios is None:
            return None
        try:
            saved = termios.tcgetattr(fd)
            changed = termios.tcgetattr(fd)
            changed[3] &= ~termios.ECHOCTL
            if keys:
                changed[3] &= ~(termios.ICANON | termios.ECHO)
                changed[6][termios.VMIN] = 1
                changed[6][termios.VTIME] = 0
            termios.tcsetattr(fd, termios.TCSANOW, changed)
        except (OSError, termios.error):
            return None
        return cls(fd, saved)

    def restore(self) -> None:
        """Put back the settings found by :meth:`enter` (once; later calls do nothing)."""
        saved, self._saved = self._saved, None
        if saved is None or termios is None:
            return
        try:
            termios.tcsetattr(self.fd, termios.TCSANOW, saved)
        except (OSError, termios.error):
            pass


class TtyKeys:
    """Keys from a terminal in cbreak mode, read without blocking trio's loop."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def read(self) -> bytes:
        import trio

        while True:
            await trio.lowlevel.wait_readable(self.fd)
            try:
                return os.read(self.fd, 64)
            except BlockingIOError:
                continue
            except OSError:  # the terminal hung up (EIO)
                return b""
