"""The ``log`` sink: every Status (and optionally events) as a log line.

Lines go to the stdlib logger ``mux.sink.<sink name>``, so whatever logging
setup the CLI (or an embedding program) made decides where they end up.
A log must never slow the sources, hence ``drop_oldest`` by default (the
core counts and reports drops) and ``on_error = "drop"``.

Levels follow how much a human should care:

* INFO -- ``connected``, ``ended``, ``stopped``, a first ``connecting``;
* WARNING -- ``connecting`` after a failure, ``server_unavailable``,
  ``disconnected`` (with the attempt and the retry delay; ``was connected``
  instead of an attempt for the drop of an open connection, after which a
  healthy connection's count starts over at ``connecting (attempt 1)``);
* ERROR -- ``failed``, ``max_retries_exceeded``.

Every line is one line: control characters in a source name, a server's
message or a payload's text are escaped (``\\n``, ``\\x1b``), so nothing a
server sends can forge a log line or drive the terminal.

Alerts (from processors) are always logged: a ``critical`` one at ERROR, a
``warning`` at WARNING, an ``info`` (an alert cleared) at INFO.

Quality records (every ``quality_interval`` seconds per source, and one as
each source stops) are logged as one summary line at INFO (``quality =
false`` turns them off)::

    train-sse: quality over 1h00m: up 99.2%, 2 reconnects, 2 outages (blind p50 1.2s,
    max 4.1s), 35960 events (10.0/s), 0 gaps, lag p50 120ms p99 400ms, last event 100ms ago
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar, Literal

import attrs

from mux_core import Sink
from mux_core.options import at_least_one
from mux_core.records import (
    Alert,
    Batch,
    Event,
    Quality,
    Severity,
    State,
    Status,
    encode_data,
    encode_jsonl,
)
from mux_core.sink import SinkContext
from mux_core.views import escape_controls, format_duration

__all__ = ["LogOptions", "LogSink"]

_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_FORMATS = ("text", "json")
#: Longest payload text shown in a text-format event line.
_MAX_DATA_CHARS = 200


def _one_of(*allowed: str) -> Any:
    def check(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ValueError(f"{attribute.name} must be one of {choices}, not {value!r}")

    return check


@attrs.frozen(kw_only=True)
class LogOptions:
    """The keys of a ``[[sinks]] type = "log"`` table."""

    #: The lowest level this sink logs: "debug", "info", "warning" or "error".
    level: Literal["debug", "info", "warning", "error"] = attrs.field(
        default="info", validator=_one_of(*_LEVELS)
    )
    #: "text" (human lines) or "json" (the JSON Lines object of each record).
    format: Literal["text", "json"] = attrs.field(default="text", validator=_one_of(*_FORMATS))
    #: Also log data events (at INFO), not only connection status changes.
    events: bool = False
    #: With ``events``, log one event in N per source (the first, the N+1th, ...).
    sample_every: int = attrs.field(default=1, validator=at_least_one(note="1 = log every event"))
    #: Log each source's connection quality (its ``quality`` records) as one line at INFO.
    quality: bool = True


_WARNING_STATES = frozenset({State.SERVER_UNAVAILABLE, State.DISCONNECTED})
_ERROR_STATES = frozenset({State.FAILED, State.MAX_RETRIES_EXCEEDED})


def status_level(status: Status) -> int:
    """The logging level of a Status record (see the module docstring)."""
    state = status.state
    if state in _ERROR_STATES:
        return logging.ERROR
    if state in _WARNING_STATES or (state is State.CONNECTING and status.attempt > 1):
        return logging.WARNING
    return logging.INFO


def format_status(status: Status, level: int, *, previous: State | None = None) -> str:
    """``train-sse: server_unavailable (attempt 2, retry in 1.7 s): connection refused``.

    ``previous`` is the source's state before this one, for the attempt rule
    a reader can follow: a drop right after ``connected`` says ``was
    connected`` instead of an attempt number (the count of failed attempts
    starts again after a connection that delivered an event or stayed up
    ``reset_after``), and every ``connecting`` but a source's first shows its
    attempt number -- so ``server_unavailable (attempt N)`` always follows
    ``connecting (attempt N)``.
    """
    extras: list[str] = []
    dropped = status.state in _WARNING_STATES and previous is State.CONNECTED
    if dropped:
        extras.append("was connected")
    elif level > logging.INFO or (status.state is State.CONNECTING and previous is not None):
        extras.append(f"attempt {status.attempt}")
    if status.retry_in is not None:
        extras.append(f"retry in {_seconds(status.retry_in)} s")
    text = f"{status.source}: {status.state.value}"
    if extras:
        text += f" ({', '.join(extras)})"
    if status.detail:
        text += f": {status.detail}"
    return text


_ALERT_LEVELS = {
    Severity.INFO: logging.INFO,
    Severity.WARNING: logging.WARNING,
    Severity.CRITICAL: logging.ERROR,
}


def format_alert(alert: Alert) -> str:
    """``train-sse: ALERT nonfinite (critical): loss is NaN at step 4100 [seq 4101]``."""
    seq = f" [seq {alert.seq}]" if alert.seq is not None else ""
    return f"{alert.source}: ALERT {alert.rule} ({alert.severity.value}): {alert.message}{seq}"


def format_quality(quality: Quality) -> str:
    """``train-sse: quality over 1h00m: up 99.2%, 2 reconnects, 2 outages (blind p50
    1.2s, max 4.1s), 35960 events (10.0/s), 0 gaps, lag p50 120ms p99 400ms, last event
    100ms ago`` (outages only when there were some, ``gaps n/a`` for events without
    ids, lag only with ``lag_field``, the state when the source is not connected)."""
    parts = [f"up {quality.uptime * 100:.1f}%"]
    parts.append(f"{quality.reconnects} reconnect{'' if quality.reconnects == 1 else 's'}")
    if quality.outages and quality.blind_max is not None:
        median = quality.blind_p50 if quality.blind_p50 is not None else quality.blind_max
        outages = f"{quality.outages} outage{'' if quality.outages == 1 else 's'}"
        blind = f"blind p50 {format_duration(median)}, max {format_duration(quality.blind_max)}"
        parts.append(f"{outages} ({blind})")
    parts.append(f"{quality.events} events ({quality.events_per_s:.1f}/s)")
    gaps = quality.gaps  # None: the events carry no ids, a gap cannot be seen
    parts.append("gaps n/a" if gaps is None else f"{gaps} gap{'' if gaps == 1 else 's'}")
    if quality.lag_p50 is not None and quality.lag_p99 is not None:
        parts.append(
            f"lag p50 {format_duration(quality.lag_p50)} p99 {format_duration(quality.lag_p99)}"
        )
    if quality.staleness is not None:
        parts.append(f"last event {format_duration(quality.staleness)} ago")
    state = quality.state
    if state is not None and state is not State.CONNECTED:
        parts.append(f"now {state.value}")
    return f"{quality.source}: quality over {format_duration(quality.window)}: {', '.join(parts)}"


def _seconds(value: float) -> str:
    """1.7 -> "1.7", 1.115 -> "1.115", 30.0 -> "30": milliseconds at most."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def format_event(event: Event) -> str:
    """``train-sse: metric id=42 seq=17 {"step":42,"loss":0.31}`` (payload shortened)."""
    shown = payload_text(event)
    if len(shown) > _MAX_DATA_CHARS:
        shown = shown[: _MAX_DATA_CHARS - 1] + "\u2026"
    id_part = f" id={event.id}" if event.id is not None else ""
    return f"{event.source}: {event.event}{id_part} seq={event.seq} {shown}"


def payload_text(event: Event) -> str:
    """The payload as shown: text as it is, JSON as the file holds it (the bytes
    received, or the value encoded by the core; a value no encoder can write
    becomes its text, with a warning, rather than failing the sink)."""
    raw = event.raw
    if raw is None:
        data = event.data
        if isinstance(data, str):
            return data
        raw = encode_data(event)
    return raw.decode("utf-8", "replace")


class LogSink(Sink):
    """Log each record as one line on ``mux.sink.<name>``."""

    Options = LogOptions
    default_overflow: ClassVar[str] = "drop_oldest"
    default_on_error: ClassVar[str] = "drop"

    def __init__(self, options: LogOptions, context: SinkContext) -> None:
        self.options = options
        self.logger = logging.getLogger(f"mux.sink.{context.name}")
        self._min_level = _LEVELS[options.level]
        self._json = options.format == "json"
        self._every = options.sample_every
        #: Events seen per source, for sampling.
        self._seen: dict[str, int] = {}
        #: The last state of each source, for the attempt rule of format_status.
        self._states: dict[str, State] = {}

    async def write(self, batch: Batch) -> None:
        logger = self.logger
        for record in batch:
            if type(record) is Event:
                if not self._should_log_event(record):
                    continue
                level = logging.INFO
            elif type(record) is Alert:
                level = _ALERT_LEVELS[record.severity]
            elif type(record) is Status:
                level = status_level(record)
                previous = self._states.get(record.source)
                self._states[record.source] = record.state
                if level >= self._min_level and logger.isEnabledFor(level) and not self._json:
                    text = format_status(record, level, previous=previous)
                    logger.log(level, "%s", escape_controls(text))
                    continue
            elif type(record) is Quality:
                if not self.options.quality:
                    continue
                level = logging.INFO
            else:
                continue
            if level < self._min_level or not logger.isEnabledFor(level):
                continue
            logger.log(level, "%s", self._render(record, level))

    def _should_log_event(self, event: Event) -> bool:
        if not self.options.events:
            return False
        seen = self._seen.get(event.source, 0)
        self._seen[event.source] = seen + 1
        return seen % self._every == 0

    def _render(self, record: Event | Status | Alert | Quality, level: int) -> str:
        """The record's line: text, or its JSON object; never a line break or an
        escape sequence, whatever a server sent (see the module docstring)."""
        if self._json:
            return json_line(record)
        if type(record) is Event:
            text = format_event(record)
        elif type(record) is Alert:
            text = format_alert(record)
        elif type(record) is Quality:
            text = format_quality(record)
        else:
            assert isinstance(record, Status)
            text = format_status(record, level)
        return escape_controls(text)


def json_line(record: Event | Status | Alert | Quality) -> str:
    """The record's JSON Lines object on one line, as the file holds it, with the
    characters JSON may carry raw but a reader would take as a line break or a
    control (C1, DEL, U+2028, bidirectional overrides) written as ``\\uXXXX``."""
    line = encode_jsonl([record])[:-1].decode("utf-8", "replace")
    if line.isprintable():
        return line
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in line)
