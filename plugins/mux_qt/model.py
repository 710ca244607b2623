"""What the panel shows, computed without Qt: badges, rates, ages, plot series, marks.

Keeping this free of Qt means the display rules (which colour a state gets,
how the retry countdown runs, when a source is stale, where a run segment
starts, where an outage breaks a line, where a mark goes) are plain
functions of records and a clock, and the widgets in :mod:`mux_qt.panel`
only paint. Events/s, ages, values and staleness are measured and written by
:mod:`mux_core.views`, as the terminal view does.

Every event is plotted: :meth:`PanelModel.apply` appends each event's values
to per-source, per-field columns (:mod:`mux_qt.series`); the panel
downsamples when it draws. A value that is not finite (NaN, Infinity) is a
point too: the line breaks there, the value cell says ``NaN``, and the plot
marks the stretch (:class:`NonFinite`).

Where a mark goes: every mark knows its x on each axis the panel can draw
(receive time, step, payload time). An alert raised for an event (its
``seq``) is placed at that event, also when the alert comes just before it
(the ``restart`` processor sends its alert before the first event of the new
run); a run's start is placed at the first event of the new run -- never at
the old run's last step.
"""

from __future__ import annotations

import datetime
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeAlias

import attrs

from mux_core.records import (
    Alert,
    Event,
    Quality,
    State,
    Status,
)
from mux_core.sink import SourceInfo
from mux_core.views import RateMeter, StaleWatch, escape_controls, format_age

from .series import Segment

__all__ = [
    "AMBER",
    "BLUE",
    "GREEN",
    "GREY",
    "RED",
    "RESTARTABLE",
    "STALE",
    "AlertMark",
    "Badge",
    "Curve",
    "NonFinite",
    "Outage",
    "PanelModel",
    "RunStart",
    "SourceRow",
    "badge_for",
    "parse_time",
    "quality_text",
    "severity_colour",
]

GREEN = "#2e7d32"
AMBER = "#ef8f00"
RED = "#c62828"
GREY = "#757575"
BLUE = "#1565c0"
#: A connected source that has gone quiet for longer than it usually does.
STALE = "#7b1fa2"

_WAITING = frozenset({State.CONNECTING, State.SERVER_UNAVAILABLE, State.DISCONNECTED})
_BROKEN = frozenset({State.MAX_RETRIES_EXCEEDED, State.FAILED})
#: States a source can be restarted from (``restart_source``): it gave up, failed or ended.
RESTARTABLE = frozenset({State.MAX_RETRIES_EXCEEDED, State.FAILED, State.ENDED})


class Badge(NamedTuple):
    """One state badge: the state's name (always shown whole), its detail, its colour."""

    #: The state's name ("server unavailable", "stale · 18 s").
    name: str
    #: The countdown, the attempt, the server's words: shortened when room is short.
    detail: str
    colour: str

    @property
    def text(self) -> str:
        """Name and detail in one line (the badge's tooltip)."""
        return f"{self.name} · {self.detail}" if self.detail else self.name


def _short_duration(seconds: float) -> str:
    return format_age(seconds).removesuffix(" ago")


def badge_for(
    status: Status | None,
    now: float,
    *,
    quiet: float | None = None,
    threshold: float | None = None,
) -> Badge:
    """The badge of a source whose latest Status is ``status``, at time ``now``.

    The "retry in" countdown runs from ``status.retry_in`` by the time
    elapsed since ``status.at`` (the same clock the core stamps with), so it
    keeps counting down between records. ``quiet`` (seconds without an
    event, past ``threshold``) makes a connected source's badge "stale".
    The server's words are escaped (:func:`~mux_core.views.escape_controls`).
    """
    if status is None:
        return Badge("waiting", "no status yet", GREY)
    state = status.state
    name = state.value.replace("_", " ")
    detail = escape_controls(status.detail) if status.detail else ""
    if state is State.CONNECTED:
        if quiet is not None:
            quiet_text = _short_duration(quiet)
            limit = "" if threshold is None else f" (stale after {threshold:.3g} s)"
            return Badge(
                f"stale · {quiet_text}", f"connected, no event for {quiet_text}{limit}", STALE
            )
        return Badge(name, "", GREEN)
    if state in _WAITING:
        parts = []
        if status.retry_in is not None:
            left = max(0.0, status.retry_in - max(0.0, now - status.at))
            parts.append(f"retry in {left:.1f} s")
        parts.append(f"attempt {status.attempt}")
        if state is not State.CONNECTING and detail:
            parts.append(detail)
        return Badge(name, " · ".join(parts), AMBER)
    if state in _BROKEN:
        return Badge(name, detail, RED)
    return Badge(name, detail, GREY)


_NAN = math.nan


@attrs.define(slots=True)
class Place:
    """Where something happened, on each x axis: receive time, step, payload time (NaN: unknown)."""

    at: float = _NAN
    step: float = _NAN
    ptime: float = _NAN


class Outage(NamedTuple):
    """A time a source was not connected between two of its events."""

    #: ``received_at`` of the last event before it.
    start: float
    #: ``received_at`` of the first event after it.
    end: float
    #: The step of those two events (NaN without a step field).
    start_step: float
    end_step: float
    #: Their payload times (NaN without a ``time_field``).
    start_ptime: float = _NAN
    end_ptime: float = _NAN


@attrs.define(slots=True, eq=False)
class AlertMark:
    """An alert, placed where the panel draws its marker.

    ``place`` is the event that raised it (its ``seq``), filled in when that
    event arrives if the alert came first; an alert without a ``seq`` (a
    timer raised it) is placed at its own time and the source's step then.
    """

    rule: str
    severity: str
    message: str
    #: Wall-clock time it was raised.
    raised_at: float
    seq: int | None
    place: Place = attrs.field(factory=Place)
    #: False while waiting for the event with ``seq``.
    placed: bool = False

    @property
    def at(self) -> float:
        return self.place.at

    @property
    def step(self) -> float:
        return self.place.step


@attrs.define(slots=True, eq=False)
class RunStart:
    """Where a source's run segment ``run`` (2, 3, ...) starts: its first event."""

    run: int
    #: Why a new run started ("step 1 after 4,000", or the restart alert's message).
    reason: str
    place: Place = attrs.field(factory=Place)
    placed: bool = False


@attrs.define(slots=True, eq=False)
class NonFinite:
    """A stretch of consecutive values of one field that were not finite numbers."""

    field: str
    run: int
    first: Place
    last: Place
    #: The last finite value before the stretch (where the mark is drawn), or None.
    y: float | None
    #: What came: "NaN", "Inf", "-Inf", or several of them ("NaN/Inf").
    text: str
    count: int = 1
    #: The segment row of the newest value in the stretch.
    end_index: int = -1


def _nonfinite_text(value: float) -> str:
    if value != value:
        return "NaN"
    return "Inf" if value > 0 else "-Inf"


#: Where one field's points go: the field, the appends of t, s, y and p, and
#: (curve, segment) for a value that is not finite.
_Target: TypeAlias = tuple[
    str,
    Callable[[float], None],
    Callable[[float], None],
    Callable[[float], None],
    Callable[[float], None],
    tuple["Curve", Segment],
]

_SEVERITY_COLOURS = {"critical": RED, "warning": AMBER, "info": BLUE}


def severity_colour(severity: str) -> str:
    return _SEVERITY_COLOURS.get(severity, GREY)


def parse_time(value: Any) -> float:
    """A payload's time as seconds since the epoch, or NaN when it is none.

    Numbers are epoch seconds (milliseconds, microseconds and nanoseconds
    are told by their size: above 1e11, 1e14 and 1e17); text is ISO 8601
    (``2026-12-07T13:02:48.5Z``; without an offset, local time).
    """
    kind = type(value)
    if kind is float or kind is int:
        number = float(value)
        if number - number != 0.0:
            return _NAN
        size = abs(number)
        if size >= 1e17:
            return number / 1e9
        if size >= 1e14:
            return number / 1e6
        if size >= 1e11:
            return number / 1e3
        return number
    if kind is str:
        try:
            return datetime.datetime.fromisoformat(value).timestamp()
        except (ValueError, OverflowError, OSError):
            return _NAN
    return _NAN


@attrs.define
class SourceRow:
    """The live state of one source's row, and what its plots need to know."""

    name: str
    transport: str
    status: Status | None = None
    last_event_at: float | None = None
    events_seen: int = 0
    meter: RateMeter = attrs.field(factory=RateMeter)
    #: The config's ``stale_after`` (None: learned from the source's rhythm).
    stale_after: float | None = None
    watch: StaleWatch = attrs.field(init=False)
    #: The recording the source's records come from (``mux replay``), or None: live.
    recording: str | None = None
    #: The current run segment, from 1; a restart starts the next.
    run: int = 1
    #: The step field's value in the newest event (NaN before one / without it).
    last_step: float = math.nan
    #: The payload time of the newest event (NaN without a ``time_field``).
    last_ptime: float = math.nan
    #: The newest numeric event id, for "ids went back" (-1 before one).
    last_id: int = -1
    #: The seq of the newest event (-1 before one).
    last_seq: int = -1
    #: A status other than "connected" arrived since the last event.
    interrupted: bool = False
    #: The seq of the event that started the current run (0 = the first run).
    run_started_by: int = 0
    outages: deque[Outage] = attrs.field(factory=lambda: deque(maxlen=100))
    alerts: deque[AlertMark] = attrs.field(factory=lambda: deque(maxlen=200))
    alerts_seen: int = 0
    #: Where each run after the first starts (restart markers), oldest first.
    runs: deque[RunStart] = attrs.field(factory=lambda: deque(maxlen=100))
    #: Marks waiting for their event (an alert that came before it, a new run's start).
    pending: list[AlertMark | RunStart] = attrs.field(factory=list)
    #: Per plotted field: where the current run's points go (see PanelModel._targets).
    targets: list[_Target] | None = None
    #: The source's latest connection-quality record of its current session
    #: (``quality_interval``); None again once the source is restarted.
    quality: Quality | None = None
    #: When the source last became connected (``Status.at``), for staleness.
    connected_at: float | None = None
    #: How often the source was started again after it gave up, failed or ended.
    restarts: int = 0

    def __attrs_post_init__(self) -> None:
        self.watch = StaleWatch(stale_after=self.stale_after)

    @property
    def gave_up(self) -> bool:
        """Whether the source gave up, failed or ended: it can be restarted."""
        return self.status is not None and self.status.state in RESTARTABLE

    def quiet(self, now: float) -> float | None:
        """Seconds a *connected* source has been silent past its threshold, else None.

        Silence counts from the newest event, or from the moment it connected
        when that is later (a source reconnected after an outage is not stale
        before its first event could arrive).
        """
        status = self.status
        last = self.last_event_at
        if status is None or status.state is not State.CONNECTED or last is None:
            return None
        since = last if self.connected_at is None else max(last, self.connected_at)
        quiet = now - since
        return quiet if quiet > self.watch.threshold() else None


class Curve:
    """One field of one source: its run segments, newest last (at most ``keep_runs``)."""

    def __init__(
        self, field: str, source: str, limit: int, keep_runs: int, *, timed: bool = False
    ) -> None:
        self.field = field
        self.source = source
        self.limit = limit
        self.timed = timed
        self.segments: deque[Segment] = deque(maxlen=keep_runs)
        self.smoothing = 0.0
        #: Stretches of values that were not finite, newest last.
        self.nonfinite: deque[NonFinite] = deque(maxlen=200)

    def segment(self, run: int) -> Segment:
        """The segment of run ``run``, started when the newest is older."""
        segments = self.segments
        if not segments or segments[-1].run != run:
            segments.append(Segment(run, self.limit, smoothing=self.smoothing, timed=self.timed))
        return segments[-1]

    def set_smoothing(self, weight: float) -> None:
        self.smoothing = weight
        for segment in self.segments:
            segment.set_smoothing(weight)

    def last_value(self) -> float | None:
        """The newest value of the field (NaN and infinities as they came), or None."""
        for segment in reversed(self.segments):
            value = segment.last_value()
            if value is not None:
                return value
        return None


class PanelModel:
    """Every source's row and every curve, updated record by record.

    ``x`` is the default x axis: a numeric data field (the *step* field,
    e.g. "step"), "received_at", or the ``time_field`` (a payload field with
    the time the event was made: epoch seconds or ISO 8601). Every point
    keeps its receive time, its step (the field named by ``x`` when that is
    not a time, else "step") and, with a ``time_field``, its payload time,
    so a plot can switch between them. A source's *run* starts over when its
    step or its numeric event id goes back, or when a ``restart`` alert
    arrives; each run is a segment of its own on every curve.
    """

    def __init__(
        self,
        sources: Iterable[SourceInfo | tuple[str, str]],
        *,
        fields: Sequence[str] = (),
        x: str = "received_at",
        history: int = 100_000,
        keep_runs: int = 4,
        time_field: str | None = None,
    ) -> None:
        self.rows: dict[str, SourceRow] = {}
        for source in sources:
            self._add_row(source if isinstance(source, SourceInfo) else SourceInfo(*source))
        self.fields = tuple(fields)
        self.x = x
        self.time_field = time_field
        self.step_field = "step" if x in ("received_at", time_field) else x
        self.history = history
        self.keep_runs = keep_runs
        #: curves[field][source]
        self.curves: dict[str, dict[str, Curve]] = {field: {} for field in self.fields}
        #: Bumped whenever an outage, a run, an alert or a non-finite stretch is added
        #: or placed (the panel redraws its marks).
        self.marks_version = 0
        self._smoothing: dict[str, float] = {}
        self._batch: Sequence[Any] = ()

    def _add_row(self, info: SourceInfo) -> SourceRow:
        row = self.rows[info.name] = SourceRow(
            info.name, info.transport, stale_after=info.stale_after, recording=info.recording
        )
        return row

    def row(self, source: str, transport: str) -> SourceRow:
        """The row of ``source``; a source missing from the config gets one appended."""
        row = self.rows.get(source)
        if row is None:
            row = self._add_row(SourceInfo(source, transport))
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
        watched: SourceRow | None = None
        # An alert for an event earlier in this batch is placed at that event.
        self._batch = batch if isinstance(batch, Sequence) else ()
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
                seq = record.seq
                row.meter.add(at, seq)
                if row is not watched:
                    if watched is not None and watched.last_event_at is not None:
                        watched.watch.saw(watched.last_event_at)
                    watched = row
                if row.pending:
                    self._place(row, seq, at)
                row.last_seq = seq
            elif kind is Status:
                self._status(self.row(record.source, record.transport), record)
            elif kind is Alert:
                self._alert(self.row(record.source, record.transport), record)
            elif kind is Quality:
                self.row(record.source, record.transport).quality = record
            # other record types have nothing to draw yet
        if watched is not None and watched.last_event_at is not None:
            watched.watch.saw(watched.last_event_at)
        self._batch = ()

    def _status(self, row: SourceRow, status: Status) -> None:
        previous = row.status
        if previous is not None and previous.state.terminal and not status.state.terminal:
            # Started again after it gave up: its quality counts from the new session.
            row.quality = None
            row.restarts += 1
        row.status = status
        if status.state is State.CONNECTED:
            row.connected_at = status.at
        elif row.last_event_at is not None:
            row.interrupted = True

    def _ptime(self, data: dict[str, Any]) -> float:
        field = self.time_field
        return _NAN if field is None else parse_time(data.get(field))

    def _plot(self, row: SourceRow, event: Event) -> None:
        data = event.data
        if type(data) is not dict:
            return
        at = event.received_at
        step = data.get(self.step_field, _NAN)
        if type(step) is not float:
            step = float(step) if type(step) is int else _NAN
        timed = self.time_field is not None
        ptime = self._ptime(data) if timed else _NAN
        ident = event.id
        number = int(ident) if ident is not None and ident.isascii() and ident.isdigit() else -1
        if step < row.last_step or 0 <= number < row.last_id or row.interrupted:
            restarted = step < row.last_step or 0 <= number < row.last_id
            if row.interrupted:
                # A new run after the outage (here, or a restart alert just before):
                # the outage has no place on the step axis, which starts over.
                fresh = restarted or any(isinstance(m, RunStart) for m in row.pending)
                self._outage(row, at, step, ptime, break_line=not fresh, new_run=fresh)
            if restarted:
                what = (
                    f"{self.step_field} {step:,.0f} after {row.last_step:,.0f}"
                    if step < row.last_step
                    else f"id {number} after {row.last_id}"
                )
                self._new_run(row, event.seq, f"the stream started over: {what}")
        if step == step:
            row.last_step = step
        if number >= 0:
            row.last_id = number
        targets = row.targets
        if targets is None:
            targets = self._targets(row)
        if timed:
            if ptime == ptime:
                row.last_ptime = ptime
            self._plot_timed(row, data, targets, at, step, ptime)
            return
        for field, add_t, add_s, add_y, _add_p, where in targets:
            value: Any = data.get(field)
            kind = type(value)
            if kind is not float:
                if kind is not int:
                    continue
                value = float(value)
            elif value - value != 0.0:  # NaN or infinite: a point of its own, marked
                self._nonfinite(row, *where, value, Place(at, step, _NAN))
            add_t(at)
            add_s(step)
            add_y(value)

    def _plot_timed(
        self,
        row: SourceRow,
        data: dict[str, Any],
        targets: list[_Target],
        at: float,
        step: float,
        ptime: float,
    ) -> None:
        """:meth:`_plot`'s points when they carry a payload time too."""
        for field, add_t, add_s, add_y, add_p, where in targets:
            value: Any = data.get(field)
            kind = type(value)
            if kind is not float:
                if kind is not int:
                    continue
                value = float(value)
            elif value - value != 0.0:
                self._nonfinite(row, *where, value, Place(at, step, ptime))
            add_t(at)
            add_s(step)
            add_p(ptime)
            add_y(value)

    def _targets(self, row: SourceRow) -> list[_Target]:
        """Where the current run's points of each field go (bound list appends: fastest)."""
        targets: list[_Target] = []
        timed = self.time_field is not None
        for field in self.fields:
            curves = self.curves[field]
            curve = curves.get(row.name)
            if curve is None:
                curve = curves[row.name] = Curve(
                    field, row.name, self.history, self.keep_runs, timed=timed
                )
                curve.smoothing = self._smoothing.get(field, 0.0)
            segment = curve.segment(row.run)
            targets.append(
                (
                    field,
                    segment.pending_t.append,
                    segment.pending_s.append,
                    segment.pending_y.append,
                    segment.pending_p.append,  # appended to only with a time_field
                    (curve, segment),
                )
            )
        row.targets = targets
        return targets

    def _nonfinite(
        self, row: SourceRow, curve: Curve, segment: Segment, value: float, place: Place
    ) -> None:
        index = segment.total
        stretches = curve.nonfinite
        text = _nonfinite_text(value)
        if stretches:
            last = stretches[-1]
            if last.run == segment.run and last.end_index == index - 1:
                last.last = place
                last.count += 1
                last.end_index = index
                if text not in last.text.split("/"):
                    last.text += f"/{text}"
                return
        stretches.append(
            NonFinite(curve.field, segment.run, place, place, segment.last_finite(), text, 1, index)
        )
        self.marks_version += 1

    def _new_run(self, row: SourceRow, seq: int | None, reason: str) -> None:
        row.run += 1
        row.targets = None
        row.run_started_by = seq if seq is not None else -1
        row.last_step = math.nan
        row.last_id = -1
        start = RunStart(row.run, reason)
        row.runs.append(start)
        row.pending.append(start)
        self.marks_version += 1

    def _place(self, row: SourceRow, seq: int, at: float) -> None:
        """Place the marks waiting for this event (its seq, or the first of a new run)."""
        waiting: list[AlertMark | RunStart] = []
        for mark in row.pending:
            if isinstance(mark, AlertMark) and mark.seq is not None and mark.seq > seq:
                waiting.append(mark)
                continue
            mark.place = Place(at, row.last_step, row.last_ptime)
            mark.placed = True
        row.pending = waiting
        self.marks_version += 1

    def _outage(
        self,
        row: SourceRow,
        at: float,
        step: float,
        ptime: float,
        *,
        break_line: bool,
        new_run: bool = False,
    ) -> None:
        row.interrupted = False
        for curves in self.curves.values() if break_line else ():
            curve = curves.get(row.name)
            if curve is not None and curve.segments and curve.segments[-1].run == row.run:
                curve.segments[-1].gap()
        start = row.last_event_at if row.last_event_at is not None else at
        start_step = _NAN if new_run else row.last_step
        row.outages.append(Outage(start, at, start_step, step, row.last_ptime, ptime))
        self.marks_version += 1

    def _place_of(self, row: SourceRow, alert: Alert) -> Place:
        """Where the event ``alert.seq`` was: found in this batch (a REST page's alert
        comes after the whole page), else the source's newest event; without a seq,
        the alert's own time at the source's newest step."""
        if alert.seq is not None:
            for record in reversed(self._batch):
                if type(record) is Event and record.seq == alert.seq:
                    if record.source != row.name:
                        continue
                    data = record.data
                    if type(data) is not dict:
                        break
                    step = data.get(self.step_field, _NAN)
                    step = float(step) if type(step) in (int, float) else _NAN
                    return Place(record.received_at, step, self._ptime(data))
            if row.last_event_at is not None:
                return Place(row.last_event_at, row.last_step, row.last_ptime)
        return Place(alert.at, row.last_step, row.last_ptime)

    def _alert(self, row: SourceRow, alert: Alert) -> None:
        severity = str(getattr(alert.severity, "value", alert.severity))
        mark = AlertMark(
            escape_controls(alert.rule),
            severity,
            escape_controls(alert.message),
            alert.at,
            alert.seq,
        )
        row.alerts.append(mark)
        row.alerts_seen += 1
        self.marks_version += 1
        if alert.seq is not None and alert.seq > row.last_seq:
            row.pending.append(mark)  # its event comes next
        else:
            mark.place = self._place_of(row, alert)
            mark.placed = True
        if alert.rule != "restart":
            return
        if alert.seq is not None and alert.seq == row.run_started_by:
            if row.runs:  # the run already started at that event: say why
                row.runs[-1].reason = mark.message
            return
        self._new_run(row, alert.seq, mark.message)


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
