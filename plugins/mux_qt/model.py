"""What the panel shows, computed without Qt: badges, rates, ages, plot series.

Keeping this free of Qt means the display rules (which colour a state gets,
how the retry countdown runs, where a run segment starts and where an outage
breaks a line) are plain functions of records and a clock, and the widgets in
:mod:`mux_qt.panel` only paint. Events/s, ages and values are measured and
written by :mod:`mux_core.views`, as the terminal view does.

Every event is plotted: :meth:`PanelModel.apply` appends each event's values
to per-source, per-field columns (:mod:`mux_qt.series`); the panel
downsamples when it draws.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeAlias

import attrs

import mux_core.records
from mux_core.records import (
    Event,
    Quality,
    State,
    Status,
)
from mux_core.views import RateMeter

from .series import Segment

__all__ = [
    "AMBER",
    "BLUE",
    "GREEN",
    "GREY",
    "RED",
    "AlertMark",
    "Badge",
    "Curve",
    "Outage",
    "PanelModel",
    "SourceRow",
    "badge_for",
    "severity_colour",
]

GREEN = "#2e7d32"
AMBER = "#ef8f00"
RED = "#c62828"
GREY = "#757575"
BLUE = "#1565c0"

#: The record type processors raise, once mux_core has it (None before).
_ALERT: type[Any] | None = getattr(mux_core.records, "Alert", None)

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


class Outage(NamedTuple):
    """A time a source was not connected between two of its events."""

    #: ``received_at`` of the last event before it.
    start: float
    #: ``received_at`` of the first event after it.
    end: float
    #: The step of those two events (NaN without a step field).
    start_step: float
    end_step: float


class AlertMark(NamedTuple):
    """An alert, placed where the panel draws its marker."""

    at: float
    #: The source's step when it arrived (NaN without a step field).
    step: float
    rule: str
    severity: str
    message: str


_Target: TypeAlias = tuple[
    str, Callable[[float], None], Callable[[float], None], Callable[[float], None]
]

_SEVERITY_COLOURS = {"critical": RED, "warning": AMBER, "info": BLUE}


def severity_colour(severity: str) -> str:
    return _SEVERITY_COLOURS.get(severity, GREY)


@attrs.define
class SourceRow:
    """The live state of one source's row, and what its plots need to know."""

    name: str
    transport: str
    status: Status | None = None
    last_event_at: float | None = None
    events_seen: int = 0
    meter: RateMeter = attrs.field(factory=RateMeter)
    #: The current run segment, from 1; a restart starts the next.
    run: int = 1
    #: The step field's value in the newest event (NaN before one / without it).
    last_step: float = math.nan
    #: The newest numeric event id, for "ids went back" (-1 before one).
    last_id: int = -1
    #: A status other than "connected" arrived since the last event.
    interrupted: bool = False
    #: The seq of the event that started the current run (0 = the first run).
    run_started_by: int = 0
    outages: deque[Outage] = attrs.field(factory=lambda: deque(maxlen=100))
    alerts: deque[AlertMark] = attrs.field(factory=lambda: deque(maxlen=200))
    alerts_seen: int = 0
    #: Per plotted field: where the current run's points go (see PanelModel._targets).
    targets: list[_Target] | None = None
    #: The source's latest connection-quality record (``quality_interval``).
    quality: Quality | None = None


class Curve:
    """One field of one source: its run segments, newest last (at most ``keep_runs``)."""

    def __init__(self, field: str, source: str, limit: int, keep_runs: int) -> None:
        self.field = field
        self.source = source
        self.limit = limit
        self.segments: deque[Segment] = deque(maxlen=keep_runs)
        self.smoothing = 0.0

    def segment(self, run: int) -> Segment:
        """The segment of run ``run``, started when the newest is older."""
        segments = self.segments
        if not segments or segments[-1].run != run:
            segments.append(Segment(run, self.limit, smoothing=self.smoothing))
        return segments[-1]

    def set_smoothing(self, weight: float) -> None:
        self.smoothing = weight
        for segment in self.segments:
            segment.set_smoothing(weight)


_NAN = math.nan


class PanelModel:
    """Every source's row and every curve, updated record by record.

    ``x`` is the default x axis: a numeric data field (the *step* field,
    e.g. "step") or "received_at". Either way every point keeps both its
    time and its step (the field named by ``x``, else "step"), so a plot can
    switch between them. A source's *run* starts over when its step or its
    numeric event id goes back, or when a ``restart`` alert arrives; each
    run is a segment of its own on every curve.
    """

    def __init__(
        self,
        sources: Iterable[tuple[str, str]],
        *,
        fields: Sequence[str] = (),
        x: str = "received_at",
        history: int = 100_000,
        keep_runs: int = 4,
    ) -> None:
        self.rows: dict[str, SourceRow] = {
            name: SourceRow(name, transport) for name, transport in sources
        }
        self.fields = tuple(fields)
        self.x = x
        self.step_field = "step" if x == "received_at" else x
        self.history = history
        self.keep_runs = keep_runs
        #: curves[field][source]
        self.curves: dict[str, dict[str, Curve]] = {field: {} for field in self.fields}
        #: Bumped whenever an outage, a run or an alert is added (the panel redraws markers).
        self.marks_version = 0
        self._smoothing: dict[str, float] = {}

    def row(self, source: str, transport: str) -> SourceRow:
        """The row of ``source``; a source missing from the config gets one appended."""
        row = self.rows.get(source)
        if row is None:
            row = self.rows[source] = SourceRow(source, transport)
        return row

    def curve(self, field: str, source: str) -> Curve | None:
        return self.curves.get(field, {}).get(source)

    def smoothing_of(self, field: str) -> float:
        return self._smoothing.get(field, 0.0)

    def set_smoothing(self, field: str, weight: float) -> None:
        """EMA weight for every curve of ``field`` (0 = off), now and for new curves."""
        self._smoothing[field] = weight
        for curve in self.curves.get(field, {}).values():
            curve.set_smoothing(weight)

    def apply(self, batch: Iterable[Any]) -> None:
        """Take records in order: events become points, statuses and alerts marks.

        The hot path of the panel (every event passes here): ~1 µs per event
        for two plotted fields, besides decoding the payload.
        """
        rows = self.rows
        plotting = bool(self.fields)
        for record in batch:
            kind = type(record)
            if kind is Event:
                row = rows.get(record.source)
                if row is None:
                    row = self.row(record.source, record.transport)
                if plotting:
                    self._plot(row, record)
                at = record.received_at
                row.last_event_at = at
                row.events_seen += 1
                row.meter.add(at, record.seq)
            elif kind is Status:
                row = self.row(record.source, record.transport)
                row.status = record
                if record.state is not State.CONNECTED and row.last_event_at is not None:
                    row.interrupted = True
            elif _ALERT is not None and kind is _ALERT:
                self._alert(self.row(record.source, record.transport), record)
            elif kind is Quality:
                self.row(record.source, record.transport).quality = record
            # other record types have nothing to draw yet

    def _plot(self, row: SourceRow, event: Event) -> None:
        data = event.data
        if type(data) is not dict:
            return
        at = event.received_at
        step = data.get(self.step_field, _NAN)
        if type(step) is not float:
            step = float(step) if type(step) is int else _NAN
        ident = event.id
        number = int(ident) if ident is not None and ident.isascii() and ident.isdigit() else -1
        if step < row.last_step or 0 <= number < row.last_id or row.interrupted:
            restarted = step < row.last_step or 0 <= number < row.last_id
            if row.interrupted:
                self._outage(row, at, step, break_line=not restarted)
            if restarted:
                self._new_run(row, event.seq)
        if step == step:
            row.last_step = step
        if number >= 0:
            row.last_id = number
        targets = row.targets
        if targets is None:
            targets = self._targets(row)
        for field, add_t, add_s, add_y in targets:
            value: Any = data.get(field)
            kind = type(value)
            if kind is not float:
                if kind is not int:
                    continue
                value = float(value)
            elif value - value != 0.0:  # NaN or infinite
                continue
            add_t(at)
            add_s(step)
            add_y(value)

    def _targets(self, row: SourceRow) -> list[_Target]:
        """Where the current run's points of each field go (bound list appends: fastest)."""
        targets = []
        for field in self.fields:
            curves = self.curves[field]
            curve = curves.get(row.name)
            if curve is None:
                curve = curves[row.name] = Curve(field, row.name, self.history, self.keep_runs)
                curve.smoothing = self._smoothing.get(field, 0.0)
            segment = curve.segment(row.run)
            add_t, add_s, add_y = (
                segment.pending_t.append,
                segment.pending_s.append,
                segment.pending_y.append,
            )
            targets.append((field, add_t, add_s, add_y))
        row.targets = targets
        return targets

    def _new_run(self, row: SourceRow, seq: int | None) -> None:
        row.run += 1
        row.targets = None
        row.run_started_by = seq if seq is not None else -1
        row.last_step = math.nan
        row.last_id = -1
        row.interrupted = False
        self.marks_version += 1

    def _outage(self, row: SourceRow, at: float, step: float, *, break_line: bool) -> None:
        row.interrupted = False
        for curves in self.curves.values() if break_line else ():
            curve = curves.get(row.name)
            if curve is not None and curve.segments and curve.segments[-1].run == row.run:
                curve.segments[-1].gap()
        start = row.last_event_at if row.last_event_at is not None else at
        row.outages.append(Outage(start, at, row.last_step, step))
        self.marks_version += 1

    def _alert(self, row: SourceRow, alert: Any) -> None:
        severity = getattr(alert.severity, "value", alert.severity)
        row.alerts.append(
            AlertMark(alert.at, row.last_step, alert.rule, str(severity), alert.message)
        )
        row.alerts_seen += 1
        self.marks_version += 1
        if alert.rule == "restart" and not (
            alert.seq is not None and alert.seq == row.run_started_by
        ):
            self._new_run(row, alert.seq)


def quality_text(quality: Quality | None) -> str:
    """A source's connection quality in a few words: "up 99.2% · 1 reconnect · 0 gaps ·
    lag p99 0.3 s" ("gaps n/a" when its events carry no ids: a gap cannot be seen)."""
    if quality is None:
        return "—"
    reconnects = quality.reconnects
    text = f"up {quality.uptime * 100:.1f}% · {reconnects} reconnect"
    text += "" if reconnects == 1 else "s"
    gaps = quality.gaps
    text += " · gaps n/a" if gaps is None else f" · {gaps} gap{'' if gaps == 1 else 's'}"
    if quality.lag_p99 is not None:
        text += f" · lag p99 {quality.lag_p99:.3g} s"
    return text
