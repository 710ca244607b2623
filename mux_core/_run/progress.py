"""The progress line of a long replay: on stderr when it is a terminal, nothing otherwise.

``mux replay`` of a big recording (gigabytes, rotated files, ``.jsonl.zst``)
as fast as possible runs for a while with nothing to show until the end;
:class:`ReplayProgress` redraws one line, at most a few times a second::

    replay: 1,204,224 records  251,003/s  at 2025-11-27 14:03:12 (+2:01:05)  45%  ETA 0:00:12

records read, records read per second, where the replay stands in the
recording's time (and since its first record), and how far by bytes of the
files (compressed bytes of a ``.zst``) with the time left at the rate so far.
A log line written meanwhile first clears the progress line (a filter on the
logging handlers), and the line is cleared at the end: what stays on the
terminal is the log.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TextIO

from ..records import Record
from ..views import escape_controls
from .recordings import record_time

__all__ = ["ReplayProgress", "clock_text", "duration_text"]

#: Seconds between two redraws.
_INTERVAL = 0.2
_CLEAR = "\r\x1b[K"


def duration_text(seconds: float) -> str:
    """``H:MM:SS`` (``D days, H:MM:SS`` past a day)."""
    whole = max(0, round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days} days, {text}" if days else text


def clock_text(at: float) -> str:
    """A recorded time as local ``YYYY-MM-DD HH:MM:SS``."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


class _ClearFirst(logging.Filter):
    """Clears the progress line before a log line is written below it."""

    def __init__(self, progress: ReplayProgress) -> None:
        super().__init__()
        self._progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        self._progress.clear()
        return True


class ReplayProgress:
    """One line on ``stream``, redrawn as the replay reads on (see the module docstring)."""

    def __init__(self, stream: TextIO, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self._monotonic = monotonic
        self._started = monotonic()
        self._drawn_at = -math.inf
        self._shown = False
        self._total = 0
        self._filter = _ClearFirst(self)
        self._handlers: list[logging.Handler] = []

    @staticmethod
    def wanted(stream: TextIO) -> bool:
        """Whether ``stream`` is a terminal (a pipe or a file gets no progress line)."""
        try:
            return stream.isatty()
        except (AttributeError, ValueError):
            return False

    def begin(self, total_bytes: int) -> None:
        """The replay starts reading ``total_bytes`` of files."""
        self._started = self._monotonic()
        self._total = total_bytes
        self._handlers = list(logging.getLogger().handlers)
        for handler in self._handlers:
            handler.addFilter(self._filter)

    def update(self, records: int, position: int, last: tuple[float, int, Record]) -> None:
        """``records`` read so far, ``position`` bytes into the files, ``last`` the latest item
        (recorded seconds since the recording's start, its index, the record)."""
        now = self._monotonic()
        if now - self._drawn_at < _INTERVAL:
            return
        self._drawn_at = now
        elapsed = max(now - self._started, 1e-9)
        parts = [f"replay: {records:,} records", f"{records / elapsed:,.0f}/s"]
        offset, _, record = last
        at = record_time(record)
        since = f"+{duration_text(offset)}"
        parts.append(f"at {clock_text(at)} ({since})" if math.isfinite(at) else f"at {since}")
        if self._total > 0 and position > 0:
            done = min(position / self._total, 1.0)
            left = elapsed * (1 - done) / done
            parts.append(f"{done:.0%}  ETA {duration_text(left)}")
        self.stream.write(_CLEAR + escape_controls("  ".join(parts)))
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Take the line off the terminal (the next update draws it again)."""
        if self._shown:
            self.stream.write(_CLEAR)
            self.stream.flush()
            self._shown = False
            self._drawn_at = -math.inf

    def close(self) -> None:
        """The replay is done: the line goes, the log is left as it was."""
        for handler in self._handlers:
            handler.removeFilter(self._filter)
        self._handlers = []
        self.clear()
