"""Helpers for sinks that show records to a person: the Qt panel, the terminal view.

Both views use these, so they show the same numbers for the same records.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["ViewClock", "format_duration"]


class ViewClock:
    """ "Now" for a sink that shows ages and rates: the wall clock, or the
    recording's time during a replay (the Qt panel and the terminal view use it).

    Live records are stamped moments before the view sees them. When the
    newest record of a batch is older than :attr:`LAG` seconds (``mux
    replay`` feeds a recorded run), "now" runs from that record's time
    instead, so ages and rates are the recording's, not "3 days ago".
    """

    #: Records older than this on arrival mean the view is fed a recording.
    LAG = 2.0

    def __init__(self, wall: Callable[[], float]) -> None:
        self.wall = wall
        self.lag = 0.0

    def saw(self, batch: Sequence[object]) -> None:
        """Note the time of the newest stamped record of ``batch``."""
        for record in reversed(batch):
            at = getattr(record, "received_at", None)
            if at is None:
                at = getattr(record, "at", None)
            if isinstance(at, float | int):
                lag = self.wall() - at
                self.lag = lag if lag > self.LAG else 0.0
                return

    def __call__(self) -> float:
        return self.wall() - self.lag


def format_duration(seconds: float | None) -> str:
    """A duration in a few characters, as the quality table and the log show it:
    0.0123 -> "12ms", 1.5 -> "1.5s", 95 -> "1m35s", None -> "-"."""
    if seconds is None:
        return "-"
    if seconds < 1.0:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60.0:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
