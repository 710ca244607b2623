"""``filter``, ``sample`` and ``select``: shaping what reaches the sinks.

Statuses and alerts always pass all three untouched: they are few, and a
sink must see every state change and every alert.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import attrs
import msgspec

from mux_core import Batch, Event, FieldReader, Processor, ProcessorContext, Record
from mux_core.options import at_least_one, non_negative
from mux_core.payload import keep_value
from mux_core.processor import event_types

from ._condition import Condition, parse_condition

# trio is imported by the methods that use it: loading the plugin (every mux
# command does) does not pay for it.

__all__ = [
    "FilterOptions",
    "FilterProcessor",
    "SampleOptions",
    "SampleProcessor",
    "SelectOptions",
    "SelectProcessor",
]


def _valid_condition(_instance: Any, _attribute: attrs.Attribute[Any], value: str) -> None:
    if value:
        parse_condition(value)  # raises ValueError naming the column


# -- filter ----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class FilterOptions:
    """The keys of a ``[[processors]] type = "filter"`` table."""

    #: Keep only events of these types (empty = every type).
    events: list[str] = attrs.field(factory=list)
    #: Drop events of these types.
    drop_events: list[str] = attrs.field(factory=list)
    #: A condition on the event's data fields, e.g. ``"loss > 10 and step >= 100"``
    #: (see the docs for the grammar; empty = none).
    where: str = attrs.field(default="", validator=_valid_condition)
    #: "keep" the events that match ``where`` (drop the rest), or "drop" those that match.
    action: Literal["keep", "drop"] = "keep"


class FilterProcessor(Processor):
    """Keep or drop events by their type and by a condition on their data fields."""

    Options: ClassVar[type[FilterOptions]] = FilterOptions

    def __init__(self, options: FilterOptions, context: ProcessorContext) -> None:
        self.context = context
        self._keep_types = frozenset(options.events)
        self._drop_types = frozenset(options.drop_events)
        self._condition: Condition | None = (
            parse_condition(options.where) if options.where else None
        )
        self._fields = FieldReader(self._condition.fields) if self._condition else None
        self._keep_match = options.action == "keep"
        self._keep: Callable[[Event], bool] = self._build()

    def _build(self) -> Callable[[Event], bool]:
        keep_types, drop_types = self._keep_types, self._drop_types
        condition, fields = self._condition, self._fields
        if condition is None or fields is None:
            if keep_types and drop_types:
                return lambda e: e.event in keep_types and e.event not in drop_types
            if keep_types:
                return lambda e: e.event in keep_types
            if drop_types:
                return lambda e: e.event not in drop_types
            return lambda e: True
        test, read, keep_match = condition.test, fields.read, self._keep_match
        missing = (None,) * len(fields.names)

        def keep(event: Event) -> bool:
            if keep_types and event.event not in keep_types:
                return False
            if event.event in drop_types:
                return False
            values = read(event)
            return test(missing if values is None else values) == keep_match

        return keep

    def process(self, batch: Batch) -> Batch:
        if self._condition is None:
            # By type only: decide for a batch of events in one C-level pass.
            types = event_types(batch)
            if (
                types is not None
                and (not self._keep_types or types <= self._keep_types)
                and not types & self._drop_types
            ):
                return batch
        keep = self._keep
        out = [r for r in batch if type(r) is not Event or keep(r)]
        return batch if len(out) == len(batch) else out


# -- sample ----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SampleOptions:
    """The keys of a ``[[processors]] type = "sample"`` table."""

    #: Pass one event in N per source (the 1st, the N+1th, ...); 1 = every event.
    every: int = attrs.field(default=1, validator=at_least_one(note="1 = every event"))
    #: Pass at most this many events per second per source (0 = no limit).
    per_second: float = attrs.field(default=0.0, validator=non_negative(note="0 = no limit"))
    #: Sample only events of these types; others pass (empty = every type).
    events: list[str] = attrs.field(factory=list)


class SampleProcessor(Processor):
    """Thin out events: every Nth and/or at most N per second per source; statuses always pass."""

    Options: ClassVar[type[SampleOptions]] = SampleOptions

    def __init__(self, options: SampleOptions, context: ProcessorContext) -> None:
        self.context = context
        self._every = options.every
        self._rate = options.per_second
        self._types = frozenset(options.events)
        self._count = 0
        #: Token bucket (rate limit): tokens now, and when it was filled.
        self._tokens = max(options.per_second, 1.0)
        self._filled: float | None = None

    def process(self, batch: Batch) -> Batch:
        import trio

        every, rate, types = self._every, self._rate, self._types
        if rate:
            self._refill(trio.current_time())
        out: list[Record] = []
        for record in batch:
            if type(record) is not Event or (types and record.event not in types):
                out.append(record)
                continue
            count = self._count
            self._count = count + 1
            if count % every:
                continue
            if rate:
                if self._tokens < 1.0:
                    continue
                self._tokens -= 1.0
            out.append(record)
        return batch if len(out) == len(batch) else out

    def _refill(self, now: float) -> None:
        if self._filled is not None:
            burst = max(self._rate, 1.0)
            self._tokens = min(burst, self._tokens + (now - self._filled) * self._rate)
        self._filled = now


# -- select ----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SelectOptions:
    """The keys of a ``[[processors]] type = "select"`` table."""

    #: Keep only these top-level data fields (empty = every field).
    fields: list[str] = attrs.field(factory=list)
    #: Remove these top-level data fields.
    drop: list[str] = attrs.field(factory=list)
    #: Rename fields, ``{ old = "new" }`` (applied after ``fields`` and ``drop``).
    rename: dict[str, str] = attrs.field(factory=dict)
    #: Change only events of these types (empty = every type).
    events: list[str] = attrs.field(factory=list)


class SelectProcessor(Processor):
    """Keep, drop or rename data fields of JSON object payloads; other payloads pass as they are."""

    Options: ClassVar[type[SelectOptions]] = SelectOptions

    def __init__(self, options: SelectOptions, context: ProcessorContext) -> None:
        self.context = context
        self._keep = tuple(options.fields)
        self._drop = frozenset(options.drop)
        self._rename = dict(options.rename)
        self._types = frozenset(options.events)

    def process(self, batch: Batch) -> Batch:
        types = self._types
        out: list[Record] = []
        for record in batch:
            if type(record) is Event and (not types or record.event in types):
                data = record.data
                if type(data) is dict:
                    # keep_value: a NaN kept is written as NaN, not null.
                    payload = keep_value(self._reshape(data))
                    record = msgspec.structs.replace(record, _payload=payload)
            out.append(record)
        return out

    def _reshape(self, data: dict[str, Any]) -> dict[str, Any]:
        if self._keep:
            data = {key: data[key] for key in self._keep if key in data}
        if self._drop:
            data = {key: value for key, value in data.items() if key not in self._drop}
        if self._rename:
            data = {self._rename.get(key, key): value for key, value in data.items()}
        return data
