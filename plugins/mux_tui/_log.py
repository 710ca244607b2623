"""mux's log while the view owns the terminal: held back and shown below the table.

mux logs to stderr (``mux_core._cli.setup_logging``: a ``StreamHandler``
that keeps the stream it was given). When stderr is the terminal the view
is drawn on, a log line written there lands in the middle of the live
region: the next redraw moves the cursor up over the wrong lines, the
table is torn and its header drawn twice. rich's own redirect of
``sys.stderr`` does not help, the handler holds the original stream.

:class:`HeldLog` puts a filter on each handler of the root logger that
writes to that terminal: the filter keeps the formatted line (the handler's
own format) and tells the handler not to write it. The view shows the
newest lines below the table; when the view closes, the filters come off
and the lines held are printed once, in order, before the final table.
A log going elsewhere (``2>mux.log``, a file handler) is not touched.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from itertools import islice
from typing import IO

__all__ = ["HeldLog"]


def _terminal_of(stream: object) -> os.stat_result | None:
    try:
        if not stream.isatty():  # type: ignore[attr-defined]
            return None
        return os.fstat(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None


class _HoldBack(logging.Filter):
    """One handler's filter: keep the line, write nothing."""

    def __init__(self, handler: logging.Handler, held: HeldLog) -> None:
        super().__init__()
        self.handler = handler
        self.held = held

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = self.handler.format(record)
        except Exception:  # a bad format argument: still a line, never lost
            text = f"{record.levelname} {record.name}: {record.msg!r}"
        self.held.add(text)
        return False


class HeldLog:
    """The log lines that would have gone to the view's terminal."""

    #: Lines kept to print when the view closes; older ones are counted.
    KEEP = 1000

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=self.KEEP)
        #: Lines held that no longer fit in :attr:`lines`.
        self.dropped = 0
        self._filters: list[_HoldBack] = []

    def add(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            if len(self.lines) == self.KEEP:
                self.dropped += 1
            self.lines.append(line)

    def newest(self, count: int) -> list[str]:
        """The newest ``count`` lines held, oldest first."""
        return list(islice(reversed(self.lines), count))[::-1]

    def hold(self, terminal: IO[str]) -> bool:
        """Hold back the root logger's handlers that write to ``terminal``;
        False when none does (nothing changed)."""
        screen = _terminal_of(terminal)
        if screen is None:
            return False
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler) or not isinstance(
                handler, logging.StreamHandler
            ):
                continue
            stream = _terminal_of(handler.stream)
            if stream is not None and os.path.samestat(stream, screen):
                hold = _HoldBack(handler, self)
                handler.addFilter(hold)
                self._filters.append(hold)
        return bool(self._filters)

    def release(self) -> list[str]:
        """Let the handlers write again; the lines held, oldest first, for
        printing once (with a line counting those not kept)."""
        filters, self._filters = self._filters, []
        for hold in filters:
            hold.handler.removeFilter(hold)
        lines = list(self.lines)
        if self.dropped:
            lines.insert(0, f"({self.dropped} earlier log lines not kept: run with 2>FILE)")
        self.lines.clear()
        self.dropped = 0
        return lines
