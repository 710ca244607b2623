"""What the terminal view remembers about each source, fed by the sink's batches.

The model is plain data updated from records; rendering reads it (see
``_render.py``). Rates come from :attr:`Event.seq`, the core's per-source
counter, not from counting the events this sink received: the sink's
``latest`` overflow policy drops events when the terminal falls behind, and
the rate must still be the source's, not the screen's.
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
    Status,
)

__all__ = ["RATE_WINDOW", "SourceRow", "TuiModel"]

#: Seconds of (received_at, seq) samples the events/s figure is computed over.
RATE_WINDOW = 5.0


@attrs.define
class SourceRow:
    """One source's row: its latest status, event timing and plotted series."""

    name: str
    transport: str
    width: int
    status: Status | None = None
    events: int = 0
    last_event_at: float | None = None
    #: (received_at, seq) of recent events, oldest first, for the rate.
    samples: deque[tuple[float, int]] = attrs.field(factory=deque)
    #: Plotted field -> its last ``width`` finite values.
    series: dict[str, deque[float]] = attrs.field(factory=dict)
    #: The alert episode going on (a warning or critical not yet cleared), if any.
    alert: Alert | None = None
    #: The source's latest connection-quality record, if any.
    quality: Quality | None = None

    def add_status(self, status: Status) -> None:
        self.status = status

    def add_alert(self, alert: Alert) -> None:
        """A warning or critical alert shows until an info alert of its rule clears it."""
        if alert.severity is not Severity.INFO:
            self.alert = alert
        elif self.alert is not None and self.alert.rule == alert.rule:
            self.alert = None

    def add_event(self, event: Event, plot: Sequence[str]) -> None:
        self.events += 1
        self.last_event_at = event.received_at
        samples = self.samples
        if samples and event.seq < samples[-1][1]:
            samples.clear()  # the core's counter never goes back; be safe anyway
        samples.append((event.received_at, event.seq))
        while len(samples) > 2 and samples[0][0] < event.received_at - RATE_WINDOW:
            samples.popleft()
        data = event.data
        if not isinstance(data, dict):
            return
        for key in plot:
            value = _as_number(data.get(key))
            if value is not None:
                series = self.series.get(key)
                if series is None:
                    series = self.series[key] = deque(maxlen=self.width)
                series.append(value)

    def rate(self, now: float) -> float:
        """Events per second over the last :data:`RATE_WINDOW` seconds up to ``now``.

        It decays towards zero when the stream goes quiet, instead of freezing
        at the last burst's rate.
        """
        samples = self.samples
        if len(samples) < 2 or samples[-1][0] < now - RATE_WINDOW:
            return 0.0
        oldest_at, oldest_seq = samples[0]
        span = now - oldest_at
        if span <= 0:
            return 0.0
        return (samples[-1][1] - oldest_seq) / span


def _as_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@attrs.define
class TuiModel:
    """All rows, in config order; sources never configured are appended."""

    plot: tuple[str, ...]
    width: int
    rows: dict[str, SourceRow] = attrs.field(factory=dict)

    def add_source(self, name: str, transport: str) -> SourceRow:
        row = self.rows.get(name)
        if row is None:
            row = self.rows[name] = SourceRow(name, transport, self.width)
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
