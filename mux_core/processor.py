r"""Processors: what runs between a source and the sinks, in the source's own task.

::

    supervisor(source) --> processor chain --> fan-out --> SinkChannel --> sink
                           (batch in, batch out; per-source state)

A ``[[processors]]`` table names a processor type registered by a plugin
(``mux_register_processors``) and, with ``sources = ["train-*"]``, the
sources it applies to (globs; default all). For every source the engine
builds one :class:`ProcessorChain` holding one instance of each matching
processor, in file order: each instance sees exactly one source, so its
attributes *are* the per-source state.

A processor class looks like::

    class LossCap:
        Options = LossCapOptions           # an attrs class: the table's keys

        def __init__(self, options: LossCapOptions, context: ProcessorContext) -> None:
            self.fields = FieldReader(["loss"])   # declare the fields it reads

        def process(self, batch: Batch) -> Batch:   # sync: no task switch per batch
            ...                                      # return batch, or a new list

        # optional, for rules about time (a stall):
        def next_deadline(self) -> float | None: ...   # trio clock; None = nothing due
        def tick(self, now: float) -> Batch: ...        # called at/after the deadline

``process`` takes a batch (events, statuses, alerts) and returns the batch
to pass on: the same object when nothing changed (the cheap case), or a new
list with records dropped, changed or added (an :class:`~mux_core.Alert`).
It must not mutate the list it was given. The chain runs in the task that
received the batch, before the fan-out to the sinks: no channel hop, and
order per source holds.

Timers: a chain with a processor that has ``tick`` gets one sibling task
that sleeps until the earliest ``next_deadline()`` (on the trio clock, so a
``MockClock`` drives it in tests) and then calls ``tick(now)`` on every
timed processor; what a tick returns passes through the processors after
it, like a batch. After each batch the chain re-reads the deadlines, so a
deadline that moved earlier wakes the timer.

Failures: a processor that raises -- in ``process`` or ``tick`` -- is
removed from *that source's* chain with an error log and a ``warning``
:class:`~mux_core.Alert` (rule ``"processor_error"``); the batch it failed
on passes on as it came in and the source keeps flowing. The same processor
keeps running for the other sources (their state is their own).
"""

from __future__ import annotations

import operator
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import attrs

from .payload import JsonFields
from .records import (
    Alert,
    Batch,
    Event,
    Severity,
)

__all__ = [
    "FieldReader",
    "Processor",
    "ProcessorContext",
    "event_types",
    "is_timed",
    "joined_raw",
]


class Processor:
    """The base of a processor plugin class; register it with ``register("name", cls)``.

    Required: ``Options`` and :meth:`process`. One instance is made per
    source the table applies to, so its attributes are per-source state.
    :meth:`next_deadline` and :meth:`tick` are for rules about time (a stall):
    a processor that does not override them gets no timer. Inheriting from
    :class:`Processor` is optional: the core falls back to these members.
    """

    #: An attrs class whose fields are the keys of a ``[[processors]]`` table
    #: (besides ``type`` and ``sources``); it may define a classmethod
    #: ``check(options)`` raising ``ValueError``, reported at the table's line.
    Options: ClassVar[type[Any]]

    def __init__(self, options: Any, context: ProcessorContext) -> None:
        #: The validated ``Options`` instance.
        self.options = options
        #: The source this instance works on, and ``alert()`` to raise alerts.
        self.context = context

    def process(self, batch: Batch) -> Batch:
        """Take one batch of one source and return the batch to pass on; required.

        Synchronous, in the source's own task. Return ``batch`` itself when
        nothing changed, or a new list; never mutate the one given. Raising
        removes this processor from this source's chain (logged, with a
        ``processor_error`` alert); the batch passes on as it came.
        """
        raise NotImplementedError(f"{type(self).__name__} must define process(batch)")

    def next_deadline(self) -> float | None:
        """When :meth:`tick` is next due, on the trio clock; None: nothing due (the default).

        Read after every batch and every tick, so a deadline that moved
        earlier wakes the timer.
        """
        return None

    def tick(self, now: float) -> Batch:
        """Called at or after :meth:`next_deadline` with the trio clock's ``now``;
        returns records to pass on (alerts), by default none."""
        return []


def is_timed(processor: Any) -> bool:
    """Whether a processor has rules about time: it has a ``tick`` other than
    :meth:`Processor.tick`'s (its class's, or one set on the instance when its
    options ask for a timer). Only such a processor gets a timer task."""
    tick = getattr(processor, "tick", None)
    return tick is not None and getattr(tick, "__func__", tick) is not Processor.tick


@attrs.frozen
class ProcessorContext:
    """The source a processor instance works on."""

    #: The source's name.
    source: str
    #: The source's transport type.
    transport: str
    #: The processor's type name ("stall"), for messages.
    name: str

    def alert(
        self, rule: str, severity: Severity | str, message: str, seq: int | None = None
    ) -> Alert:
        """An :class:`~mux_core.Alert` of this source, stamped now."""
        return Alert(
            self.source, self.transport, rule, Severity(severity), message, seq, time.time()
        )


class FieldReader:
    """Reads a few top-level fields of event payloads: how a processor declares what it reads.

    ``read(event)`` returns the values in the order of ``names`` (None for a
    missing field), or None when the payload is not a JSON object. A payload
    still held as bytes is not decoded: only these fields are read out of it
    (:class:`~mux_core.JsonFields`, ~0.3 µs per 200 bytes); a decoded one is
    looked up. ``NaN`` / ``Infinity`` literals read as floats.
    """

    __slots__ = ("_json", "names")

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._json = JsonFields(self.names)

    def read(self, event: Event) -> tuple[Any, ...] | None:
        raw = event.raw
        if raw is not None:
            return self._json.read(raw)
        data = event.data
        if type(data) is not dict:
            return None
        return tuple([data.get(name) for name in self.names])


_event_type = operator.attrgetter("event")
_payload_of = operator.attrgetter("_payload")


def event_types(batch: Batch) -> set[str] | None:
    """The event types in a batch of events only; None when it holds another record.

    One C-level pass (~30 ns a record): a processor that only looks at event
    types (``filter``) decides for the whole batch without a Python loop.
    """
    try:
        return set(map(_event_type, batch))
    except AttributeError:  # a Status or an Alert has no event type
        return None


def joined_raw(batch: Batch) -> bytes | None:
    """The payload bytes of every record of ``batch``, joined, when each is an event
    whose payload is still the raw JSON received; else None.

    For a cheap look over a whole batch (``78 in joined`` is a memchr for
    ``"N"``) before reading fields event by event: ``nonfinite`` skips a batch
    without ``N`` or ``I`` (no ``NaN``, no ``Infinity``) at ~40 ns a record.
    """
    try:
        return b"".join(map(_payload_of, batch))
    except (AttributeError, TypeError):  # not an event, or a payload already decoded
        return None
