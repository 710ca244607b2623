"""What the terminal view remembers about each source, fed by the sink's batches.

The model is plain data updated from records; rendering reads it (see
``_render.py``). Rates come from :attr:`Event.seq`, the core's per-source
counter, not from counting the events this sink received: the sink drops
events when the terminal falls behind, and the rate must still be the
source's, not the screen's. The meter is :class:`mux_core.views.RateMeter`,
the Qt panel's too, so both show the same events/s; silence is judged by
:class:`mux_core.views.StaleWatch`, as in the panel and the quality record.

Non-finite values are data: a NaN loss is kept as the field's last value
(shown as ``NaN``), never hidden behind the last finite one.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence

import attrs

from mux_core.records import (
    Alert,
    Event,
    Quality,
    Record,
    Severity,
    State,
    Status,
)
from mux_core.views import RateMeter, StaleWatch

__all__ = [
    "ATTENTION",
    "CALM",
    "LABELS",
    "RESTARTABLE",
    "STALE",
    "STEP_FIELD",
    "WAITING",
    "FieldStats",
    "SourceRow",
    "TuiModel",
]

#: The label of a connected source that has gone quiet for too long.
STALE = "stale"
#: The label of a source before its first status.
WAITING = "waiting"
#: Every label a row can have, in the order the summary line counts them.
LABELS = (
    State.FAILED.value,
    State.MAX_RETRIES_EXCEEDED.value,
    State.SERVER_UNAVAILABLE.value,
    State.DISCONNECTED.value,
    STALE,
    State.CONNECTING.value,
    State.CONNECTED.value,
    WAITING,
    State.ENDED.value,
    State.STOPPED.value,
)
#: Labels of a source that needs a look, most urgent first (an alert going
#: on counts too, after these).
ATTENTION = (
    frozenset({State.FAILED.value, State.MAX_RETRIES_EXCEEDED.value}),
    frozenset({State.SERVER_UNAVAILABLE.value, State.DISCONNECTED.value}),
    frozenset({STALE}),
)
#: The rank of a source that needs no look (see :meth:`SourceRow.attention`).
CALM = len(ATTENTION) + 1

#: States a source can be restarted from (the engine's ``restart_source``).
RESTARTABLE = frozenset({State.MAX_RETRIES_EXCEEDED, State.FAILED, State.ENDED})

#: The data field read as the training step.
STEP_FIELD = "step"


@attrs.define
class FieldStats:
    """One plotted field of one source: its newest values and its extremes."""

    #: The newest ``width`` values, NaN and infinities included.
    series: deque[float]
    #: The newest value (NaN stays NaN).
    last: float = math.nan
    #: The lowest and highest finite values of the current run; None before one.
    low: float | None = None
    high: float | None = None

    def add(self, value: float) -> None:
        self.series.append(value)
        self.last = value
        if math.isfinite(value):
            self.low = value if self.low is None else min(self.low, value)
            self.high = value if self.high is None else max(self.high, value)

    def new_run(self) -> None:
        """The stream started over: the extremes count from here."""
        self.low = self.high = None


@attrs.define
class SourceRow:
    """One source's row: its latest status, event timing and plotted fields."""

    name: str
    transport: str
    width: int
    #: Config order, for a stable order among rows of equal urgency.
    index: int = 0
    status: Status | None = None
    events: int = 0
    last_event_at: float | None = None
    #: Events/s, from the events' ``seq``.
    meter: RateMeter = attrs.field(factory=RateMeter)
    #: When the source went quiet for longer than it usually does.
    watch: StaleWatch = attrs.field(factory=StaleWatch)
    #: Plotted field -> its values.
    fields: dict[str, FieldStats] = attrs.field(factory=dict)
    #: The newest event's ``step`` field, if it had a number there.
    step: float | None = None
    #: The alert episode going on (a warning or critical not yet cleared), if any.
    alert: Alert | None = None
    #: The source's latest connection-quality record, if any (cleared when
    #: the source is restarted: the old session's figure is not the new one's).
    quality: Quality | None = None

    def add_status(self, status: Status) -> None:
        before = self.status
        if before is not None and before.state in RESTARTABLE and status.state not in RESTARTABLE:
            self.quality = None  # restarted: a new session, its figures still to come
        self.status = status

    def add_alert(self, alert: Alert) -> None:
        """A warning or critical alert shows until an info alert of its rule clears it."""
        if alert.severity is not Severity.INFO:
            self.alert = alert
        elif self.alert is not None and self.alert.rule == alert.rule:
            self.alert = None
        if alert.rule == "restart":
            self._new_run()

    def add_event(self, event: Event, plot: Sequence[str]) -> None:
        self.events += 1
        at = event.received_at
        self.last_event_at = at
        self.meter.add(at, event.seq)
        self.watch.saw(at)
        data = event.data
        if not isinstance(data, dict):
            return
        step = _as_number(data.get(STEP_FIELD))
        if step is not None and math.isfinite(step):
            if self.step is not None and step < self.step:
                self._new_run()
            self.step = step
        for key in plot:
            value = _as_number(data.get(key))
            if value is not None:
                stats = self.fields.get(key)
                if stats is None:
                    stats = self.fields[key] = FieldStats(deque(maxlen=self.width))
                stats.add(value)

    def _new_run(self) -> None:
        for stats in self.fields.values():
            stats.new_run()

    def rate(self, now: float) -> float:
        """Events per second up to ``now`` (see :class:`RateMeter`); it decays
        towards zero when the stream goes quiet."""
        return self.meter.rate(now)

    def quiet_for(self, now: float) -> float | None:
        """Seconds a connected source has been silent for longer than its
        threshold (:class:`StaleWatch`), or None: not connected, no event
        yet, or not quiet for that long.

        The silence counts from the last event or the connection, whichever
        is later: a source that just reconnected after an outage is not
        stale for the outage."""
        status = self.status
        if status is None or status.state is not State.CONNECTED:
            return None
        quiet = self.watch.quiet_for(now)
        if quiet is None:
            return None
        quiet = min(quiet, max(now - status.at, 0.0))
        return quiet if quiet > self.watch.threshold() else None

    def label(self, now: float) -> str:
        """The row's state in a word: a :class:`State`'s value, "stale" or "waiting"."""
        if self.status is None:
            return WAITING
        if self.quiet_for(now) is not None:
            return STALE
        return self.status.state.value

    def attention(self, now: float) -> int:
        """How urgently the row needs a look: 0 (failed, gave up) and up;
        :data:`CALM` when it needs none."""
        label = self.label(now)
        for rank, labels in enumerate(ATTENTION):
            if label in labels:
                return rank
        return len(ATTENTION) if self.alert is not None else CALM


def _as_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@attrs.define
class TuiModel:
    """All rows, in config order; sources never configured are appended."""

    plot: tuple[str, ...]
    width: int
    rows: dict[str, SourceRow] = attrs.field(factory=dict)

    def add_source(
        self, name: str, transport: str, *, stale_after: float | None = None
    ) -> SourceRow:
        row = self.rows.get(name)
        if row is None:
            watch = StaleWatch(stale_after=stale_after)
            row = SourceRow(name, transport, self.width, index=len(self.rows), watch=watch)
            self.rows[name] = row
        return row

    def ingest(self, records: Iterable[Record]) -> None:
        for record in records:
            row = self.add_source(record.source, record.transport)
            kind = type(record)
            if kind is Event:
                row.add_event(record, self.plot)  # type: ignore[arg-type]
            elif kind is Status:
                row.add_status(record)  # type: ignore[arg-type]
            elif kind is Alert:
                row.add_alert(record)  # type: ignore[arg-type]
            elif kind is Quality:
                row.quality = record  # type: ignore[assignment]
            # Record types this view does not know yet are skipped.

    def counts(self, now: float) -> dict[str, int]:
        """Sources per label, in :data:`LABELS` order; labels with none left out."""
        found: dict[str, int] = {}
        for row in self.rows.values():
            label = row.label(now)
            found[label] = found.get(label, 0) + 1
        return {label: found[label] for label in LABELS if label in found}
