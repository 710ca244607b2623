"""Helpers for sinks that show records to a person: the Qt panel, the terminal view.

Both views use these, so they show the same numbers for the same records;
:func:`escape_controls` is for any text shown on a line (the log too).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence

__all__ = [
    "RateMeter",
    "StaleWatch",
    "ViewClock",
    "escape_controls",
    "format_age",
    "format_duration",
    "format_rate",
    "format_value",
]


def _control_escapes() -> dict[int, str]:
    codes = [
        *range(0x20),  # C0: line breaks, ESC (ANSI sequences), backspace, ...
        *range(0x7F, 0xA0),  # DEL and C1 (NEL, CSI)
        0x2028,  # line and paragraph separators
        0x2029,
        0x061C,  # marks and overrides that reorder what a reader sees
        0x200E,
        0x200F,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    ]
    return {code: chr(code).encode("unicode_escape").decode("ascii") for code in codes}


_CONTROL_ESCAPES = _control_escapes()


def escape_controls(text: str) -> str:
    """``text`` with its control characters written as escapes (``\\n``, ``\\x1b``,
    ``\\u2028``), for showing text that came from a server or a config on one line.

    A line break in a source name or a server's message would otherwise
    start what looks like a log line of mux's own (``... ERROR mux.engine:
    FORGED``), and an ANSI sequence would move the cursor or recolour a
    terminal. Escaped are the C0 and C1 controls, DEL, the Unicode line and
    paragraph separators and the bidirectional marks and overrides; all
    other text (accents, CJK, emoji) is shown as it is.
    """
    if text.isprintable():
        return text
    return text.translate(_CONTROL_ESCAPES)


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


def format_value(value: float | None) -> str:
    """A field's value as both views show it: 4 significant digits, one rule.

    Fixed notation from 0.001 up to 10,000, scientific with 3 decimals
    outside it: ``7.98``, ``1.596e-04``, ``4.860e-05`` -- never
    ``0.0001596`` next to ``4.86e-05``. NaN is "NaN", infinities "Inf" and
    "-Inf" (a value, never hidden behind the last finite one), no value "—".
    """
    if value is None:
        return "—"
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    return f"{value:.3e}"


def format_age(seconds: float | None) -> str:
    """How long ago the last event came: "0.4 s ago", "12 s ago", "3m 05s ago",
    "2h 01m ago"; "—" before any event (None, or not a finite number).

    A negative age (a clock a little behind the stamps) reads as "0.0 s ago".
    """
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s ago"
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s ago"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m ago"


def format_rate(rate: float) -> str:
    """Events per second, without the unit (the views label it): "0.0", "9.5",
    "123.4", "1,234" (whole numbers from 1,000 on).

    Nothing or less (no events in the window) is "0.0"; NaN "NaN", infinity "inf".
    """
    if rate != rate:
        return "NaN"
    if math.isinf(rate) and rate > 0:
        return "inf"
    if rate <= 0:
        return "0.0"
    return f"{rate:.1f}" if rate < 1000 else f"{rate:,.0f}"


class RateMeter:
    """Events per second of one source over the last :attr:`WINDOW` seconds.

    It measures by the core's per-source ``Event.seq`` counter, not by
    counting the events this view received, so the figure is the source's
    even when a view's buffer drops events (``latest``, ``drop_oldest``).
    One ``(received_at, seq)`` sample is kept per 1/32 of the window however
    many events arrive, so a source at 100,000 events/s costs ~32 tuples.

    Why 5 seconds: training metrics come at one to a few tens of events per
    second. Over 2 s a stream of one event per second reads 0.5, then 1.0,
    then 0.5 as events fall in and out of the window; over 5 s it reads
    within 20 % of the truth and stays steady, while a stream that stops
    still reads 0 five seconds later (the rate decays towards zero as "now"
    moves on, instead of freezing at the last burst's figure).
    """

    #: Seconds of samples the rate is computed over.
    WINDOW = 5.0
    #: The shortest span a rate is divided by: two events a millisecond apart
    #: right after the start do not read as 1,000/s.
    MIN_SPAN = 0.5

    __slots__ = ("_last", "_samples", "_step", "window")

    def __init__(self, window: float = WINDOW) -> None:
        if not window > 0 or math.isinf(window):
            raise ValueError(f"window must be > 0 seconds, got {window!r}")
        self.window = window
        self._step = window / 32
        #: Samples, oldest first, at least ``_step`` apart.
        self._samples: deque[tuple[float, int]] = deque()
        #: The newest event's (received_at, seq), sampled or not.
        self._last: tuple[float, int] | None = None

    def add(self, at: float, seq: int) -> None:
        """One event received at ``at`` with the source's counter at ``seq``."""
        samples = self._samples
        last = self._last
        self._last = (at, seq)
        if last is not None and seq < last[1]:
            samples.clear()  # a counter that went back (a new run): measure afresh
        elif samples and at - samples[-1][0] < self._step:
            return
        samples.append((at, seq))
        self._drop_before(at - self.window)

    def rate(self, now: float) -> float:
        """Events per second from the oldest sample in the window up to ``now``;
        0 when no event came within the window."""
        last = self._last
        if last is None or last[0] < now - self.window:
            return 0.0
        self._drop_before(now - self.window)
        first_at, first_seq = self._samples[0]
        if last[1] == first_seq:
            return 0.0
        return (last[1] - first_seq) / max(now - first_at, self.MIN_SPAN)

    def _drop_before(self, start: float) -> None:
        # Two samples always stay: a slow source (one event per 6 s) still
        # has a rate, measured over the last two of its events.
        samples = self._samples
        while len(samples) > 2 and samples[0][0] < start:
            samples.popleft()


class StaleWatch:
    """Whether a connected source has gone quiet for longer than it usually does.

    A hung trainer (stopped, deadlocked, stuck in a long step) keeps its
    connection open and sends nothing: the connection state says
    ``connected`` and only silence tells. One watch per source, fed the time
    of each event (:meth:`saw`) and asked with "now" (:meth:`is_stale`),
    both on one clock: a view's :class:`ViewClock`, the trio clock in the
    core's quality tracker.

    The threshold is ``stale_after`` when the config sets it (the source's
    ``stale_after`` key, :attr:`~mux_core.sink.SourceInfo.stale_after`);
    else it is learned from the source's own rhythm: :attr:`FACTOR` times
    the median of the last :attr:`GAPS` intervals between events, never
    below ``floor`` -- a source at 10 events/s goes stale after ``floor``
    seconds of silence, one every 2 s after 20 s. With no interval yet (one
    event so far) it is ``floor``. Events stamped with the same time (one
    batch) make no interval, so feeding every event or one per batch
    measures the same; a time earlier than the last one (a replay starting
    over) starts measuring again from it.

    Only the silence is judged, not the connection: the caller asks only
    while the source is connected. Costs a few list operations per
    :meth:`saw`; one watch holds at most 32 floats.
    """

    #: How many of the newest intervals between events the learned threshold reads.
    GAPS = 32
    #: The learned threshold is this many times the median interval.
    FACTOR = 10.0

    __slots__ = ("_gaps", "_last", "_next", "_threshold", "floor", "stale_after")

    def __init__(self, *, stale_after: float | None = None, floor: float = 5.0) -> None:
        if stale_after is not None and not stale_after > 0:
            raise ValueError(f"stale_after must be > 0 seconds, got {stale_after!r}")
        if not floor >= 0 or math.isinf(floor):
            raise ValueError(f"floor must be a finite number of seconds >= 0, got {floor!r}")
        #: The config's threshold in seconds, or None: learned.
        self.stale_after = stale_after
        #: The lowest learned threshold, in seconds.
        self.floor = floor
        self._last: float | None = None
        # A ring of the newest intervals (a list: 56 bytes empty, where a
        # deque costs ~600, and the core keeps one watch per source).
        self._gaps: list[float] = []
        self._next = 0
        self._threshold: float | None = None

    def saw(self, at: float) -> None:
        """An event arrived at time ``at`` (seconds, on the watch's clock)."""
        last = self._last
        self._last = at
        if last is None or at <= last or self.stale_after is not None:
            return
        gaps = self._gaps
        if len(gaps) < self.GAPS:
            gaps.append(at - last)
        else:
            gaps[self._next] = at - last
            self._next = (self._next + 1) % self.GAPS
        self._threshold = None

    def threshold(self) -> float:
        """Seconds of silence that make the source stale now."""
        if self.stale_after is not None:
            return self.stale_after
        threshold = self._threshold
        if threshold is None:
            gaps = self._gaps
            median = sorted(gaps)[len(gaps) // 2] if gaps else 0.0
            threshold = self._threshold = max(self.floor, self.FACTOR * median)
        return threshold

    def is_stale(self, now: float) -> bool:
        """Whether the last event is more than :meth:`threshold` seconds before
        ``now``; False before the first event."""
        last = self._last
        return last is not None and now - last > self.threshold()

    def quiet_for(self, now: float) -> float | None:
        """Seconds since the last event (never negative), or None before the first."""
        last = self._last
        return None if last is None else max(now - last, 0.0)
