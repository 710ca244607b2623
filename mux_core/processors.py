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

import logging
import math
import operator
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs
import trio

from .events import Alert, Batch, Event, Record, Severity, Status
from .payload import JsonFields

__all__ = [
    "FieldReader",
    "Processor",
    "ProcessorChain",
    "ProcessorContext",
    "event_types",
    "joined_raw",
]

_log = logging.getLogger("mux.processors")

#: The rule of the alert a failing processor raises.
PROCESSOR_ERROR_RULE = "processor_error"

Send = Callable[[Sequence[Record]], Awaitable[Any]]


@runtime_checkable
class Processor(Protocol):
    """A processor plugin class. Registered with ``register("name", cls)``.

    ``Options`` is an attrs class whose fields are the keys of a
    ``[[processors]]`` table (besides ``type`` and ``sources``); it may
    define a classmethod ``check(options)`` raising ``ValueError``, as a
    sink's may. One instance is made per matching source.
    """

    Options: ClassVar[type[Any]]

    def __init__(self, options: Any, context: ProcessorContext) -> None: ...

    def process(self, batch: Batch) -> Batch:
        """Take one batch of one source, return the batch to pass on."""
        ...


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


class _Entry:
    __slots__ = ("name", "process", "processor", "tick")

    def __init__(self, name: str, processor: Any) -> None:
        self.name = name
        self.processor = processor
        self.process: Callable[[Batch], Batch] = processor.process
        self.tick: Callable[[float], Batch] | None = getattr(processor, "tick", None)


class ProcessorChain:
    """The processors of one source, in file order, and their timer.

    ``run(batch)`` passes a batch through every processor and returns what
    is left (possibly empty); ``tick(now)`` runs the timed processors;
    ``run_timers(deliver)`` is the timer task (see the module docstring).
    """

    def __init__(self, source: str, transport: str, processors: Sequence[tuple[str, Any]]) -> None:
        self.source = source
        self.transport = transport
        self._entries = [_Entry(name, processor) for name, processor in processors]
        self._timed = [e for e in self._entries if e.tick is not None]
        self._timer_scope: trio.CancelScope | None = None
        #: True once a terminal Status of the source went through: nothing follows it.
        self.ended = False

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> list[str]:
        """The processor types still in the chain, in order."""
        return [entry.name for entry in self._entries]

    @property
    def timed(self) -> bool:
        """Whether a processor of the chain has a timer (``tick``)."""
        return bool(self._timed)

    def run(self, batch: Batch) -> Batch:
        """``batch`` through every processor; returns what is left to fan out.

        A terminal Status (ended, failed, stopped, ...) stays the last record
        of its source whatever the processors do (DESIGN.md): one dropped is
        put back, one followed by a processor's records is moved after them,
        and the timers stop.
        """
        last = batch[-1] if batch else None
        terminal = last if type(last) is Status and last.state.terminal else None
        batch = self._run_from(0, batch)
        if terminal is not None:
            self.ended = True
            if self._timer_scope is not None:
                self._timer_scope.cancel()
            if not batch or batch[-1] is not terminal:
                batch = [*(r for r in batch if r is not terminal), terminal]
        elif self._timed:
            self._rearm()
        return batch

    def _run_from(self, start: int, batch: Batch) -> Batch:
        index = start
        while index < len(self._entries):
            entry = self._entries[index]
            try:
                batch = entry.process(batch)
            except Exception as exc:
                batch = [*batch, self._remove(entry, "process", exc)]
                continue  # the entry is gone: the same index is the next one
            if not batch:
                return batch
            index += 1
        return batch

    def next_deadline(self) -> float:
        """The earliest deadline of the timed processors (trio clock; inf = none)."""
        earliest = math.inf
        for entry in self._timed:
            deadline = entry.processor.next_deadline()
            if deadline is not None and deadline < earliest:
                earliest = deadline
        return earliest

    def tick(self, now: float) -> list[Record]:
        """Call ``tick(now)`` on each timed processor; what they return goes through
        the processors after them."""
        out: list[Record] = []
        for entry in list(self._timed):
            if entry not in self._entries or entry.tick is None:
                continue
            try:
                produced = entry.tick(now)
            except Exception as exc:
                out.append(self._remove(entry, "tick", exc))
                continue
            if produced:
                position = self._entries.index(entry) + 1
                out.extend(self._run_from(position, produced))
        return out

    async def run_timers(self, deliver: Send) -> None:
        """The timer task: sleep until the earliest deadline, tick, deliver; until cancelled."""
        while not self.ended:
            with trio.CancelScope(deadline=self.next_deadline()) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            if self.ended:
                return
            produced = self.tick(trio.current_time())
            if produced:
                await deliver(produced)

    def _rearm(self) -> None:
        scope = self._timer_scope
        if scope is not None:
            deadline = self.next_deadline()
            if deadline < scope.deadline:
                scope.deadline = deadline

    def _remove(self, entry: _Entry, where: str, exc: Exception) -> Alert:
        _log.error(
            "processor %r failed on source %r (in %s): %r; removed from this source's chain, "
            "the source goes on",
            entry.name,
            self.source,
            where,
            exc,
            exc_info=exc,
        )
        self._entries = [e for e in self._entries if e is not entry]
        self._timed = [e for e in self._timed if e is not entry]
        message = f"processor {entry.name!r} failed ({type(exc).__name__}: {exc}); removed"
        return Alert(
            self.source,
            self.transport,
            PROCESSOR_ERROR_RULE,
            Severity.WARNING,
            message,
            None,
            time.time(),
        )
