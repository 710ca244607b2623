"""What the panel shows, computed without Qt: badges, rates, ages, plot series.

Keeping this pure Python means the display rules (which colour a state gets,
how the retry countdown runs, how events/s is measured) are plain functions
of records and a clock, and the widgets in :mod:`mux_qt.panel` only paint.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import attrs

from mux_core.events import Event, Record, State, Status

__all__ = [
    "AMBER",
    "GREEN",
    "GREY",
    "RED",
    "Badge",
    "PanelModel",
    "RateMeter",
    "Series",
    "SourceRow",
    "badge_for",
    "format_age",
    "format_rate",
]

GREEN = "#2e7d32"
AMBER = "#ef8f00"
RED = "#c62828"
GREY = "#757575"

_WAITING = frozenset({State.CONNECTING, State.SERVER_UNAVAILABLE, State.DISCONNECTED})
_BROKEN = frozenset({State.MAX_RETRIES_EXCEEDED, State.FAILED})


class Badge(NamedTuple):
    """The text and background colour of one state badge."""

    text: str
    colour: str


def badge_for(status: Status | None, now: float) -> Badge:
    """The badge of a source whose latest Status is ``status``, at time ``now``.

    The "retry in" countdown runs from ``status.retry_in`` by the wall-clock
    time elapsed since ``status.at`` (the same clock the core stamps with),
    so it keeps counting down between records.
    """
    if status is None:
        return Badge("waiting for first status", GREY)
    state = status.state
    label = state.value.replace("_", " ")
    if state is State.CONNECTED:
        return Badge(label, GREEN)
    if state in _WAITING:
        parts = [label]
        if status.retry_in is not None:
            left = max(0.0, status.retry_in - max(0.0, now - status.at))
            parts.append(f"retry in {left:.1f} s")
        parts.append(f"attempt {status.attempt}")
        text = " · ".join(parts)
        if state is not State.CONNECTING and status.detail:
            text += f" ({status.detail})"
        return Badge(text, AMBER)
    if state in _BROKEN:
        return Badge(f"{label}: {status.detail}" if status.detail else label, RED)
    return Badge(label, GREY)


def format_age(seconds: float | None) -> str:
    """How long ago: "0.4 s ago", "12 s ago", "3 min ago"; "—" before any event."""
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s ago"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def format_rate(rate: float) -> str:
    """Events per second with a precision that suits the magnitude."""
    if rate <= 0:
        return "0"
    if rate < 10:
        return f"{rate:.1f}"
    return f"{rate:,.0f}"


class RateMeter:
    """Events per second of one source over a sliding window.

    It measures by the core's per-source ``seq`` counter rather than by
    counting what this sink received: under the ``latest`` overflow policy
    the panel only sees a sample of the events, but ``seq`` still says how
    many arrived.
    """

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, at: float, seq: int) -> None:
        samples = self._samples
        if samples and seq < samples[-1][1]:
            samples.clear()  # a restarted counter: start measuring afresh
        samples.append((at, seq))

    def rate(self, now: float) -> float:
        samples = self._samples
        while len(samples) > 1 and samples[1][0] < now - self.window:
            samples.popleft()
        if len(samples) < 2 or samples[-1][0] < now - self.window:
            return 0.0
        first_at, first_seq = samples[0]
        span = max(now - first_at, 0.5)
        return (samples[-1][1] - first_seq) / span


@attrs.define
class SourceRow:
    """The live state of one source's row."""

    name: str
    transport: str
    status: Status | None = None
    last_event_at: float | None = None
    events_seen: int = 0
    meter: RateMeter = attrs.field(factory=RateMeter)


class Series:
    """One curve: the last ``history`` (x, y) points of a field from one source."""

    def __init__(self, history: int) -> None:
        self.xs: deque[float] = deque(maxlen=history)
        self.ys: deque[float] = deque(maxlen=history)
        #: True when points were added since the curve was last drawn.
        self.dirty = False

    def add(self, x: float, y: float) -> None:
        self.xs.append(x)
        self.ys.append(y)
        self.dirty = True


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


class PanelModel:
    """Every source's row and every curve, updated record by record."""

    def __init__(
        self,
        sources: Iterable[tuple[str, str]],
        *,
        fields: Sequence[str] = (),
        x: str = "received_at",
        history: int = 2000,
    ) -> None:
        self.rows: dict[str, SourceRow] = {
            name: SourceRow(name, transport) for name, transport in sources
        }
        self.fields = tuple(fields)
        self.x = x
        self.history = history
        #: series[field][source]
        self.series: dict[str, dict[str, Series]] = {field: {} for field in self.fields}

    def row(self, source: str, transport: str) -> SourceRow:
        """The row of ``source``; a source missing from the config gets one appended."""
        row = self.rows.get(source)
        if row is None:
            row = self.rows[source] = SourceRow(source, transport)
        return row

    def apply(self, batch: Iterable[Record]) -> None:
        for record in batch:
            row = self.row(record.source, record.transport)
            if type(record) is Event:
                row.last_event_at = record.received_at
                row.events_seen += 1
                row.meter.add(record.received_at, record.seq)
                if self.fields:
                    self._plot(record)
            else:
                assert isinstance(record, Status)
                row.status = record

    def _plot(self, event: Event) -> None:
        data = event.data
        if not isinstance(data, dict):
            return
        if self.x == "received_at":
            x: float | None = event.received_at
        else:
            x = _number(data.get(self.x))
        if x is None:
            return
        for field in self.fields:
            y = _number(data.get(field))
            if y is None:
                continue
            curves = self.series[field]
            series = curves.get(event.source)
            if series is None:
                series = curves[event.source] = Series(self.history)
            series.add(x, y)
