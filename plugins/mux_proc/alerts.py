"""Alert rules that know what a training run looks like.

``stall``, ``nonfinite``, ``diverge``, ``restart`` and ``throughput``. Each
instance watches one source and fires once per *episode*: an alert when the
condition starts (its ``severity``), an ``info`` alert with the same rule
when it is over ("... again"), nothing in between. ``restart`` has no
"over": each time the stream starts over is one alert, placed just before
the first event of the new run segment.

After a ``restart`` alert of their source (from a ``restart`` processor
earlier in the file), ``diverge``, ``throughput`` and ``stall`` forget what
they learnt about the old run: the new run's loss starts high again, and
that is not divergence.

Each rule declares the data fields it reads (:class:`mux_core.FieldReader`):
payloads still held as bytes are not decoded for it.
"""

from __future__ import annotations

import bisect
import collections
import math
from typing import Any, ClassVar, Literal

import attrs

from mux_core import (
    Alert,
    Batch,
    Event,
    FieldReader,
    Processor,
    ProcessorContext,
    Record,
    State,
    Status,
)
from mux_core.options import at_least_one, fraction, non_negative, positive
from mux_core.processor import event_types, joined_raw

# trio is imported by the methods that use it: loading the plugin (every mux
# command does) does not pay for it.

__all__ = [
    "DivergeOptions",
    "DivergeProcessor",
    "NonfiniteOptions",
    "NonfiniteProcessor",
    "RestartOptions",
    "RestartProcessor",
    "StallOptions",
    "StallProcessor",
    "ThroughputOptions",
    "ThroughputProcessor",
]

_NUMBER = (int, float)


def _number(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (bools are not numbers)."""
    if type(value) in _NUMBER:
        return float(value)
    return None


def _is_restart(record: Record, source: str) -> bool:
    return type(record) is Alert and record.rule == "restart" and record.source == source


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return f"{value:.6g}"


def _with(batch: Batch, out: list[Record] | None) -> list[Record]:
    return out if out is not None else list(batch)


# -- stall -----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class StallOptions:
    """The keys of a ``[[processors]] type = "stall"`` table."""

    #: Seconds connected without progress before the alert (long enough for an eval or a
    #: checkpoint save).
    seconds: float = attrs.field(default=120.0, validator=positive())
    #: Progress is an increase of this numeric field (e.g. "step"); empty = any new event.
    field: str = ""
    #: Only events of these types count as progress (empty = every type).
    events: list[str] = attrs.field(factory=list)
    #: Severity of the alert: "info", "warning" or "critical".
    severity: Literal["info", "warning", "critical"] = "warning"


class StallProcessor(Processor):
    """Connected, but no new event (or no increase of ``field``) for ``seconds``."""

    Options: ClassVar[type[StallOptions]] = StallOptions

    def __init__(self, options: StallOptions, context: ProcessorContext) -> None:
        self.context = context
        self.seconds = options.seconds
        self.severity = options.severity
        self._field = options.field
        self._fields = FieldReader([options.field]) if options.field else None
        self._types = frozenset(options.events)
        self._connected = False
        #: trio time of the last progress (or of connecting).
        self._since = 0.0
        self._last_value: float | None = None
        self._stalled = False
        self._stalled_seq: int | None = None

    def process(self, batch: Batch) -> Batch:
        import trio

        if self._fields is None and not self._types and event_types(batch) is not None:
            # Only events, any of which is progress: no loop over the batch.
            first = batch[0]
            assert type(first) is Event
            return self._progressed(batch, first.seq)
        progressed = False
        first_seq = None  # the event that ended a stall: where "again" is raised
        for record in batch:
            if type(record) is Event:
                if self._progress(record):
                    progressed = True
                    first_seq = record.seq if first_seq is None else first_seq
            elif type(record) is Status:
                if record.state is State.CONNECTED:
                    self._connected = True
                    self._since = trio.current_time()
                elif record.state is not State.CONNECTING:
                    self._connected = False
            elif _is_restart(record, self.context.source):
                self._last_value = None
        return self._progressed(batch, first_seq) if progressed else batch

    def _progressed(self, batch: Batch, seq: int | None) -> Batch:
        import trio

        now = trio.current_time()
        quiet = now - self._since
        self._since = now
        if not self._stalled:
            return batch
        self._stalled = False
        what = f"{self._field} increases" if self._field else "events arrive"
        message = f"{what} again after {quiet:.0f} s"
        return [*batch, self.context.alert("stall", "info", message, seq)]

    def _progress(self, event: Event) -> bool:
        if self._types and event.event not in self._types:
            return False
        if self._fields is None:
            return True
        values = self._fields.read(event)
        value = _number(values[0]) if values else None
        if value is None or math.isnan(value):
            return False
        last, self._last_value = self._last_value, value
        return last is None or value > last

    def next_deadline(self) -> float | None:
        if not self._connected or self._stalled:
            return None
        return self._since + self.seconds

    def tick(self, now: float) -> Batch:
        if not self._connected or self._stalled or now < self._since + self.seconds:
            return []
        self._stalled = True
        if self._field:
            last = "" if self._last_value is None else f" (last {_fmt(self._last_value)})"
            message = f"stalled: {self._field} has not increased for {self.seconds:g} s{last}"
        else:
            message = f"stalled: connected, but no new event for {self.seconds:g} s"
        return [self.context.alert("stall", self.severity, message, None)]


# -- nonfinite -------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class NonfiniteOptions:
    """The keys of a ``[[processors]] type = "nonfinite"`` table."""

    #: Data fields that must stay finite numbers (NaN, Infinity, -Infinity raise the alert).
    fields: list[str] = attrs.field(factory=lambda: ["loss"])
    #: A field naming the step, shown in the message (empty = none).
    step_field: str = "step"
    #: Only events of these types are checked (empty = every type).
    events: list[str] = attrs.field(factory=list)
    #: Severity of the alert: "info", "warning" or "critical".
    severity: Literal["info", "warning", "critical"] = "critical"


class NonfiniteProcessor(Processor):
    """NaN or +/-Infinity in chosen fields (``loss`` by default)."""

    Options: ClassVar[type[NonfiniteOptions]] = NonfiniteOptions

    def __init__(self, options: NonfiniteOptions, context: ProcessorContext) -> None:
        self.context = context
        self.severity = options.severity
        self._names = tuple(options.fields)
        self._step = options.step_field
        names = [*self._names, self._step] if self._step else list(self._names)
        self._fields = FieldReader(names)
        self._types = frozenset(options.events)
        self._bad = False

    def process(self, batch: Batch) -> Batch:
        if not self._bad:
            # No "N" and no "I" in the raw JSON of the batch: no NaN, no Infinity.
            joined = joined_raw(batch)
            if joined is not None and 78 not in joined and 73 not in joined:
                return batch
        out: list[Record] | None = None
        types = self._types
        for record in batch:
            if type(record) is not Event or (types and record.event not in types):
                continue
            raw = record.raw
            if not self._bad and raw is not None and 78 not in raw and 73 not in raw:
                continue  # no "N", no "I": no NaN, no Infinity literal to read
            alert = self._check(record)
            if alert is not None:
                out = _with(batch, out)
                out.append(alert)
        return batch if out is None else out

    def _check(self, event: Event) -> Alert | None:
        values = self._fields.read(event)
        if values is None:
            return None
        checked = values[: len(self._names)]
        bad = []
        seen = False
        for name, value in zip(self._names, checked, strict=True):
            number = _number(value)
            if number is None:
                continue
            seen = True
            if not math.isfinite(number):
                bad.append((name, number))
        at = ""
        if self._step and len(values) > len(self._names):
            step = values[-1]
            if type(step) in _NUMBER:
                at = f" at {self._step} {step}"
        if bad and not self._bad:
            self._bad = True
            what = ", ".join(f"{name} is {_fmt(value)}" for name, value in bad)
            return self.context.alert("nonfinite", self.severity, what + at, event.seq)
        if self._bad and seen and not bad:
            self._bad = False
            names = ", ".join(self._names)
            message = f"{names} finite again{at}"
            return self.context.alert("nonfinite", "info", message, event.seq)
        return None


# -- diverge ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class DivergeOptions:
    """The keys of a ``[[processors]] type = "diverge"`` table."""

    #: The data field to watch (a loss: lower is better).
    field: str = "loss"
    #: Alert when the value is above this many times its running minimum (0 = off).
    factor: float = attrs.field(default=2.0, validator=non_negative())
    #: Or alert when the moving average has risen this many values in a row (0 = off).
    rising: int = attrs.field(default=0, validator=non_negative())
    #: Weight of the past in the moving average (TensorBoard's smoothing), 0..1.
    smoothing: float = attrs.field(default=0.9, validator=fraction(zero=False))
    #: Values to see before judging (the minimum settles; warm-up spikes are normal).
    warmup: int = attrs.field(default=20, validator=non_negative())
    #: Values in a row that must break the rule before the alert (one spike is noise),
    #: and that must keep it before it clears.
    patience: int = attrs.field(default=3, validator=at_least_one())
    #: Only events of these types are checked (empty = every type).
    events: list[str] = attrs.field(factory=list)
    #: Severity of the alert: "info", "warning" or "critical".
    severity: Literal["info", "warning", "critical"] = "warning"


class DivergeProcessor(Processor):
    """A field above ``factor`` x its running minimum, or its moving average rising ``rising``
    values in a row."""

    Options: ClassVar[type[DivergeOptions]] = DivergeOptions

    def __init__(self, options: DivergeOptions, context: ProcessorContext) -> None:
        self.context = context
        self.options = options
        self._fields = FieldReader([options.field])
        self._types = frozenset(options.events)
        self._reset()

    def _reset(self) -> None:
        self._seen = 0
        self._min = math.inf
        self._ema: float | None = None
        self._rising = 0
        self._streak = 0  # values in a row on the other side of the rule
        self._diverged = False

    def process(self, batch: Batch) -> Batch:
        out: list[Record] | None = None
        types = self._types
        for record in batch:
            if type(record) is not Event:
                if _is_restart(record, self.context.source):
                    self._reset()
                continue
            if types and record.event not in types:
                continue
            values = self._fields.read(record)
            value = _number(values[0]) if values else None
            if value is None or not math.isfinite(value):
                continue  # a NaN is nonfinite's business
            alert = self._observe(value, record.seq)
            if alert is not None:
                out = _with(batch, out)
                out.append(alert)
        return batch if out is None else out

    def _observe(self, value: float, seq: int) -> Alert | None:
        options = self.options
        self._seen += 1
        smoothing = options.smoothing
        previous = self._ema
        self._ema = value if previous is None else smoothing * previous + (1 - smoothing) * value
        self._rising = self._rising + 1 if previous is not None and self._ema > previous else 0
        minimum = self._min
        judged = self._seen > options.warmup
        reason = ""
        if judged and options.factor and minimum > 0 and value > options.factor * minimum:
            reason = (
                f"{options.field} {_fmt(value)} is above {options.factor:g} x its minimum "
                f"{_fmt(minimum)}"
            )
        elif judged and options.rising and self._rising >= options.rising:
            reason = f"{options.field}'s moving average rose {self._rising} values in a row"
        if value < minimum:
            self._min = value
        broken = bool(reason)
        if broken != self._diverged:
            self._streak += 1
        else:
            self._streak = 0
        if self._streak < options.patience:
            return None
        self._streak = 0
        self._diverged = broken
        if broken:
            return self.context.alert("diverge", options.severity, "diverging: " + reason, seq)
        message = f"{options.field} back to {_fmt(value)} (minimum {_fmt(self._min)})"
        return self.context.alert("diverge", "info", message, seq)


# -- restart ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class RestartOptions:
    """The keys of a ``[[processors]] type = "restart"`` table."""

    #: A numeric data field that only grows in one run (e.g. "step"); empty = the event id
    #: (numeric ids only).
    field: str = "step"
    #: Only events of these types are checked (empty = every type).
    events: list[str] = attrs.field(factory=list)
    #: Severity of the alert: "info", "warning" or "critical".
    severity: Literal["info", "warning", "critical"] = "warning"


class RestartProcessor(Processor):
    """The stream started over: ``field`` (or the event id) went backwards.

    The alert comes just before the first event of the new run segment, so
    a sink that draws or summarises splits there.
    """

    Options: ClassVar[type[RestartOptions]] = RestartOptions

    def __init__(self, options: RestartOptions, context: ProcessorContext) -> None:
        self.context = context
        self.severity = options.severity
        self._field = options.field
        self._fields = FieldReader([options.field]) if options.field else None
        self._types = frozenset(options.events)
        self._last: float | None = None

    def process(self, batch: Batch) -> Batch:
        out: list[Record] | None = None
        types = self._types
        for index, record in enumerate(batch):
            if out is not None:
                out.append(record)
            if type(record) is not Event or (types and record.event not in types):
                continue
            value = self._value(record)
            if value is None:
                continue
            last, self._last = self._last, value
            if last is None or value >= last:
                continue
            what = self._field or "id"
            message = (
                f"the stream started over: {what} {_fmt(value)} after {_fmt(last)} "
                "(a new run segment)"
            )
            alert = self.context.alert("restart", self.severity, message, record.seq)
            if out is None:
                out = [*batch[:index], alert, record]
            else:
                out.insert(len(out) - 1, alert)
        return batch if out is None else out

    def _value(self, event: Event) -> float | None:
        if self._fields is None:
            event_id = event.id
            return float(event_id) if event_id is not None and event_id.isdigit() else None
        values = self._fields.read(event)
        value = _number(values[0]) if values else None
        return value if value is not None and math.isfinite(value) else None


# -- throughput ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ThroughputOptions:
    """The keys of a ``[[processors]] type = "throughput"`` table."""

    #: A rate field of the data (e.g. "tokens_per_s", "samples_per_s"); empty = the rate of
    #: events themselves, measured every ``interval`` seconds.
    field: str = "tokens_per_s"
    #: Alert when the rate is below this fraction of its running median.
    below: float = attrs.field(default=0.5, validator=fraction(zero=False))
    #: Values in the running median.
    window: int = attrs.field(default=100, validator=at_least_one())
    #: Values to see before judging (the first steps compile kernels and are slow).
    warmup: int = attrs.field(default=20, validator=non_negative())
    #: Values in a row below the threshold before the alert, and above it before it clears.
    patience: int = attrs.field(default=3, validator=at_least_one())
    #: With ``field = ""``: seconds per measurement of the event rate.
    interval: float = attrs.field(default=10.0, validator=positive())
    #: Only events of these types count (empty = every type).
    events: list[str] = attrs.field(factory=list)
    #: Severity of the alert: "info", "warning" or "critical".
    severity: Literal["info", "warning", "critical"] = "warning"


class ThroughputProcessor:
    """A rate field (or the event rate) below ``below`` x its running median.

    Not a :class:`~mux_core.Processor` subclass: only its event-rate mode has a
    timer, so it sets ``next_deadline`` / ``tick`` per instance, which a base
    class's methods would shadow for the type checker (inheriting is optional).
    """

    Options: ClassVar[type[ThroughputOptions]] = ThroughputOptions

    def __init__(self, options: ThroughputOptions, context: ProcessorContext) -> None:
        self.context = context
        self.options = options
        self._fields = FieldReader([options.field]) if options.field else None
        self._types = frozenset(options.events)
        self._connected = False
        self._counted = 0
        self._window_start: float | None = None
        self._reset()
        if self._fields is None:
            # Only the event-rate mode needs a timer.
            self.next_deadline = self._next_deadline
            self.tick = self._tick

    def _reset(self) -> None:
        self._recent: collections.deque[float] = collections.deque()
        self._sorted: list[float] = []
        self._seen = 0
        self._streak = 0
        self._slow = False

    def process(self, batch: Batch) -> Batch:
        out: list[Record] | None = None
        types = self._types
        fields = self._fields
        for record in batch:
            if type(record) is Status:
                self._on_status(record)
                continue
            if type(record) is not Event:
                if _is_restart(record, self.context.source):
                    self._reset()
                continue
            if types and record.event not in types:
                continue
            if fields is None:
                self._counted += 1
                continue
            values = fields.read(record)
            value = _number(values[0]) if values else None
            if value is None or not math.isfinite(value):
                continue
            alert = self._observe(value, record.seq)
            if alert is not None:
                out = _with(batch, out)
                out.append(alert)
        return batch if out is None else out

    def _on_status(self, status: Status) -> None:
        import trio

        if self._fields is not None:
            return
        if status.state is State.CONNECTED:
            self._connected = True
            self._counted = 0
            self._window_start = trio.current_time()
        elif status.state is not State.CONNECTING:
            self._connected = False
            self._window_start = None

    def _next_deadline(self) -> float | None:
        if not self._connected or self._window_start is None:
            return None
        return self._window_start + self.options.interval

    def _tick(self, now: float) -> Batch:
        start = self._window_start
        if not self._connected or start is None or now < start + self.options.interval:
            return []
        rate = self._counted / (now - start)
        self._counted = 0
        self._window_start = now
        alert = self._observe(rate, None)
        return [alert] if alert is not None else []

    def _observe(self, value: float, seq: int | None) -> Alert | None:
        options = self.options
        self._seen += 1
        median = self._median()
        judged = self._seen > options.warmup and median is not None and median > 0
        low = judged and median is not None and value < options.below * median
        if not low:
            # The median learns only from normal values: a long slowdown must not
            # become the new normal and clear its own alert.
            self._remember(value)
        if low != self._slow:
            self._streak += 1
        else:
            self._streak = 0
        if self._streak < options.patience:
            return None
        self._streak = 0
        self._slow = low
        name = options.field or "events/s"
        shown = f"{_fmt(value)}" if options.field else f"{value:.3g}"
        assert median is not None
        if low:
            message = (
                f"{name} {shown} is below {options.below:.0%} of its running median {_fmt(median)}"
            )
            return self.context.alert("throughput", options.severity, message, seq)
        message = f"{name} back to {shown} (running median {_fmt(median)})"
        return self.context.alert("throughput", "info", message, seq)

    def _median(self) -> float | None:
        ordered = self._sorted
        if not ordered:
            return None
        middle = len(ordered) // 2
        if len(ordered) % 2:
            return ordered[middle]
        return (ordered[middle - 1] + ordered[middle]) / 2

    def _remember(self, value: float) -> None:
        self._recent.append(value)
        bisect.insort(self._sorted, value)
        if len(self._recent) > self.options.window:
            oldest = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
