"""What the terminal view remembers about each source, fed by the sink's batches.

The model is plain data updated from records; rendering reads it (see
``_render.py``). Rates come from :attr:`Event.seq`, the core's per-source
counter, not from counting the events this sink received: the sink drops
events when the terminal falls behind, and the rate must still be the
source's, not the screen's. The meter is :class:`mux_core.views.RateMeter`,
the Qt panel's too, so both show the same events/s.
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
from mux_core.views import RateMeter

__all__ = ["SourceRow", "TuiModel"]


@attrs.define
class SourceRow:
    """One source's row: its latest status, event timing and plotted series."""

    name: str
    transport: str
    width: int
    status: Status | None = None
    events: int = 0
    last_event_at: float | None = None
    #: Events/s, from the events' ``seq``.
    meter: RateMeter = attrs.field(factory=RateMeter)
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
        self.meter.add(event.received_at, event.seq)
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
        """Events per second up to ``now`` (see :class:`RateMeter`); it decays
        towards zero when the stream goes quiet."""
        return self.meter.rate(now)


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
