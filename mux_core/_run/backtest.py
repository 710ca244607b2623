"""Processors in recorded time: a backtest's clock, its timers, and the alerts it raised.

A replay's ``[[processors]]`` see the *recording's* time, not today's, so a
10-hour run replays in seconds and still a ``stall`` fires two hours into it
when the recording went quiet for two hours:

- :class:`VirtualClock` is a trio clock that reads what it is set to. The
  processors run inside a trio run of their own on that clock (a thread of
  their own, :class:`VirtualTimeThread`, in a replay whose sinks keep the real
  one), so ``trio.current_time()`` -- what a processor reads, the contract of
  :mod:`mux_core.processor` -- is the recorded moment, for a third party's
  processor as for the built-in ones.
- :class:`Backtest` drives the chains (one per source of each recording, as a
  live run builds them): the records that arrived together (one recorded
  ``received_at``, one live batch) go through the chain together, at their
  recorded time; before each record every timer due earlier ticks, at its
  deadline (``ProcessorChain.next_deadline`` / ``tick``, as the live timer
  task would). The clock's time is the recorded seconds since the
  recording's first record (the key :class:`~mux_core._run.replay.Replay`
  orders several recordings by); an alert a processor raises is stamped
  with the recorded moment it was raised at.
- Recorded alerts (what the live run's processors raised) never go into a
  chain -- the live chain never saw them either -- and one equal to an alert
  raised again (same source, rule, severity and seq) is handed on once.
  :class:`AlertLog` keeps every alert with where it came from (``new``,
  ``recorded``, ``recorded only``) for ``mux replay --alerts-only`` and
  ``mux test``.

Following a file (``--follow``) the recorded time moves with what is
appended: a timer fires when a later record shows its deadline has passed.
"""

from __future__ import annotations

import concurrent.futures
import functools
import heapq
import itertools
import math
import queue
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import attrs
import msgspec
import trio

from ..processor import FieldReader
from ..records import Alert, Event, Record, Severity, Status
from .chain import ProcessorChain, build_chain
from .recordings import record_time

if TYPE_CHECKING:
    from .._config import ProcessorConfig
    from .._plugins import PluginManager

__all__ = [
    "NEW",
    "RECORDED",
    "RECORDED_ONLY",
    "AlertLog",
    "Backtest",
    "LoggedAlert",
    "VirtualClock",
    "VirtualTimeThread",
    "run_in_virtual_time",
]

T = TypeVar("T")

#: Raised by the processors, not in the recording.
NEW: Final = "new"
#: Raised by the processors and in the recording too (the live run raised it).
RECORDED: Final = "recorded"
#: In the recording only: these processors did not raise it again.
RECORDED_ONLY: Final = "recorded only"

#: Alerts remembered per source to match a recorded copy with one raised again.
_KEPT = 256
#: Events remembered per source to tell the step of an alert's seq.
_STEPS_KEPT = 512

#: (item key, recording index, record): the recorded seconds since the
#: recording's first record, which recording, the record.
Item = tuple[float, int, Record]
_Mark = tuple[str, Severity, int | None]
_SourceKey = tuple[int, str]


class VirtualClock(trio.abc.Clock):
    """A trio clock whose time is set (:attr:`now`), never measured: the recorded time.

    Nothing sleeps on it -- a backtest calls the processors' timers itself --
    so a deadline not yet reached sleeps "long" and one passed not at all.
    """

    def __init__(self, now: float = 0.0) -> None:
        #: The time ``trio.current_time()`` reads in a run on this clock.
        self.now = now

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self.now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return 0.0 if deadline <= self.now else 3600.0


def run_in_virtual_time(clock: VirtualClock, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` inside a trio run on ``clock`` (the calling thread must have none)."""

    async def call() -> T:
        return fn(*args)

    return trio.run(call, clock=clock)


class VirtualTimeThread:
    """A thread holding a trio run on a :class:`VirtualClock`, for a run that keeps the real one.

    ``await call(fn, *args)`` runs ``fn`` there and returns its result (or
    raises what it raised); :meth:`close` ends the thread. One hop costs two
    thread switches (~0.1 ms): a replay hands over a chunk of records at a time.
    """

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], Any], concurrent.futures.Future[Any]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=run_in_virtual_time, args=(clock, self._serve), name="mux-recorded-time"
        )
        self._thread.daemon = True
        self._thread.start()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future = job
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, as if raised there
                future.set_exception(exc)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((functools.partial(fn, *args), future))
        return await trio.to_thread.run_sync(future.result)

    def close(self) -> None:
        self._jobs.put(None)


@attrs.define
class LoggedAlert:
    """One alert of a backtest, as the sinks got it, and where it came from."""

    #: The alert (recorded time; ``"<source>@<label>"`` with several recordings).
    alert: Alert
    #: :data:`NEW`, :data:`RECORDED` or :data:`RECORDED_ONLY`.
    origin: str
    #: The ``step`` of the event that raised it (for a timer's alert, the last one before it).
    step: int | float | None
    #: Recorded seconds since the recording's first record.
    offset: float
    #: Which recording (index in the replay's order).
    recording: int


class AlertLog:
    """Every alert a backtest handed on, in order, with its origin (see :class:`LoggedAlert`)."""

    def __init__(self) -> None:
        self.entries: list[LoggedAlert] = []

    def in_order(self) -> list[LoggedAlert]:
        """The alerts by when they were raised, those of one moment by the event that raised
        them (a processor appends its alerts to the batch it was given: within one recorded
        batch, the order of :attr:`entries` is the processors' order, not the events')."""
        return sorted(self.entries, key=_moment)

    def raised(self) -> list[LoggedAlert]:
        """The alerts the processors raised (new, or equal to a recorded one), in order."""
        return [entry for entry in self.in_order() if entry.origin != RECORDED_ONLY]

    def by_rule(self) -> dict[str, dict[str, int]]:
        """Per rule (sorted), how many alerts of each origin."""
        counts: dict[str, dict[str, int]] = {}
        for entry in self.entries:
            per = counts.setdefault(entry.alert.rule, {NEW: 0, RECORDED: 0, RECORDED_ONLY: 0})
            per[entry.origin] += 1
        return dict(sorted(counts.items()))


def _moment(entry: LoggedAlert) -> tuple[float, int, bool, int]:
    seq = entry.alert.seq
    return (entry.offset, entry.recording, seq is None, seq or 0)


class _Steps:
    """The ``step`` of a source's recent events, by seq, and the last one.

    Events are kept (a bounded ring) and their step read only when an alert
    asks: reading every event's step would cost ~1.5 us an event, keeping it ~0.2.
    """

    __slots__ = ("_by_seq", "_last", "_order", "_reader")

    def __init__(self, field: str) -> None:
        self._reader = FieldReader([field])
        self._by_seq: dict[int, Event] = {}
        self._order: deque[int] = deque()
        self._last: Event | None = None

    def saw(self, batch: Sequence[Record]) -> None:
        by_seq, order = self._by_seq, self._order
        for record in batch:
            if type(record) is Event:
                by_seq[record.seq] = record
                order.append(record.seq)
                self._last = record
        while len(order) > _STEPS_KEPT:
            by_seq.pop(order.popleft(), None)

    def _step(self, event: Event | None) -> int | float | None:
        if event is None:
            return None
        values = self._reader.read(event)
        step = values[0] if values else None
        if not isinstance(step, int | float) or isinstance(step, bool):
            return None
        return step

    def of(self, seq: int | None) -> int | float | None:
        """The step of the event ``seq`` (else of the last event seen)."""
        event = self._by_seq.get(seq) if seq is not None else None
        return self._step(event if event is not None else self._last)


class _Source:
    """One source of one recording: its chain and what matches recorded alerts with new ones."""

    __slots__ = ("chain", "deadline", "raised", "recorded", "steps")

    def __init__(self, chain: ProcessorChain | None, steps: _Steps | None) -> None:
        self.chain = chain
        #: The chain's next timer deadline as last read (inf: none).
        self.deadline = math.inf
        #: New alerts whose recorded copy may follow.
        self.raised: deque[tuple[_Mark, LoggedAlert | None]] = deque(maxlen=_KEPT)
        #: Recorded alerts handed on that a new one may still equal.
        self.recorded: deque[tuple[_Mark, LoggedAlert | None]] = deque(maxlen=_KEPT)
        self.steps = steps


def _mark(alert: Alert) -> _Mark:
    return (alert.rule, alert.severity, alert.seq)


def _take(
    marks: deque[tuple[_Mark, LoggedAlert | None]], mark: _Mark
) -> tuple[bool, LoggedAlert | None]:
    """Remove the first entry with ``mark``: (whether there was one, its log entry)."""
    for index, (found, entry) in enumerate(marks):
        if found == mark:
            del marks[index]
            return True, entry
    return False, None


class Backtest:
    """The ``[[processors]]`` of a replay over recorded records, in recorded time.

    Call :meth:`feed` and :meth:`advance` inside a trio run on ``clock``
    (:func:`run_in_virtual_time`, :class:`VirtualTimeThread`): they set the
    clock to each record's recorded time before its chain sees it.
    ``labels``: the recordings' labels when there are several (the names the
    sinks see in the log, ``"<source>@<label>"``); ``log``: where every alert
    handed on is kept with its origin.
    """

    def __init__(
        self,
        processors: Sequence[ProcessorConfig],
        plugins: PluginManager,
        clock: VirtualClock,
        *,
        labels: Sequence[str] = (),
        log: AlertLog | None = None,
        step_field: str = "step",
    ) -> None:
        self.processors = tuple(processors)
        self.plugins = plugins
        self.clock = clock
        self.log = log
        self._labels = tuple(labels)
        self._step_field = step_field
        self._sources: dict[_SourceKey, _Source] = {}
        #: Each recording's first recorded time: offsets back to recorded times.
        self._starts: dict[int, float] = {}
        #: (deadline, tie-breaker, source key); entries whose deadline moved are skipped.
        self._timers: list[tuple[float, int, _SourceKey]] = []
        self._counter = itertools.count()
        #: The latest recorded offset reached.
        self.now = 0.0

    # -- the two entry points ------------------------------------------------------

    def feed(self, items: Sequence[Item]) -> list[Item]:
        """Records in recorded order -> what goes on to the sinks, in recorded order.

        Events and statuses go through their source's chain, those of one
        source with one recorded time together; every timer due before a
        record ticks first, at its deadline. Alerts and quality records of
        the recording pass by the chains.
        """
        out: list[Item] = []
        group: list[Record] = []
        group_source: _SourceKey | None = None
        group_key = math.nan
        #: Records passing by the chains written amid the open group (the alerts
        #: the live run raised on that batch): handed on after it.
        beside: list[Item] = []
        timers = self._timers
        for key, index, record in items:
            kind = type(record)
            if index not in self._starts:
                at = record_time(record)
                if math.isfinite(at):
                    self._starts[index] = at - key
            if kind is not Event and kind is not Status:
                if group:
                    beside.append((key, index, record))
                else:
                    self._pass_by(key, index, record, out)
                continue
            source = (index, record.source)
            if group and (key != group_key or source != group_source):
                assert group_source is not None
                self._close(group_source, group, group_key, beside, out)
                group, beside = [], []
            if timers and timers[0][0] < key:
                self._fire(key, out, inclusive=False)
            elif key > self.now:
                self.now = key
            group.append(record)
            group_source, group_key = source, key
        if group:
            assert group_source is not None
            self._close(group_source, group, group_key, beside, out)
        return out

    def _close(
        self,
        source: _SourceKey,
        group: list[Record],
        key: float,
        beside: list[Item],
        out: list[Item],
    ) -> None:
        """A group through its chain, then what was written amid it, in recorded order."""
        self._run(source, group, key, out)
        for item in beside:
            self._pass_by(*item, out)

    def _pass_by(self, key: float, index: int, record: Record, out: list[Item]) -> None:
        """A record no chain sees (a recorded alert, matched with new ones; a quality record),
        after the timers due before it."""
        self._fire(key, out, inclusive=False)
        if type(record) is Alert:
            self._recorded_alert(key, index, record, out)
        else:
            out.append((key, index, record))

    def advance(self, until: float) -> list[Item]:
        """Recorded time goes on to ``until`` with nothing recorded: the timers due by then."""
        out: list[Item] = []
        self._fire(until, out, inclusive=True)
        return out

    # -- chains and timers -----------------------------------------------------------

    def _source(self, key: _SourceKey, first: Record) -> _Source:
        state = self._sources.get(key)
        if state is not None and (state.chain is None or not state.chain.ended):
            return state
        # First seen, or its chain ended with the source (a terminal status) and
        # records of it follow: a run appended later, with processors of its own.
        chain = build_chain(self.processors, self.plugins, first.source, first.transport)
        steps = _Steps(self._step_field) if self.log is not None and chain is not None else None
        if state is None:
            state = self._sources[key] = _Source(chain, steps)
        else:
            state.chain, state.steps = chain, steps or state.steps
        return state

    def _run(self, key: _SourceKey, group: list[Record], at: float, out: list[Item]) -> None:
        index = key[0]
        self.clock.now = at
        state = self._source(key, group[0])
        chain = state.chain
        if chain is None:
            out.extend((at, index, record) for record in group)
            return
        if state.steps is not None:
            state.steps.saw(group)
        given = {id(record) for record in group}
        for record in chain.run(group):
            if type(record) is Alert and id(record) not in given:
                self._new_alert(state, at, index, record, out)
            else:
                out.append((at, index, record))
        self._rearm(key, state)

    def _rearm(self, key: _SourceKey, state: _Source, *, after: float = -math.inf) -> None:
        chain = state.chain
        deadline = math.inf
        if chain is not None and chain.timed and not chain.ended:
            deadline = chain.next_deadline()
        if not deadline > after:
            # A deadline that did not move past the tick would tick forever:
            # it is read again once the chain sees a record.
            deadline = math.inf
        state.deadline = deadline
        if deadline < math.inf:
            heapq.heappush(self._timers, (deadline, next(self._counter), key))

    def _fire(self, until: float, out: list[Item], *, inclusive: bool) -> None:
        """Tick every timer due before ``until`` (or at it, ``inclusive``), in deadline order."""
        if until > self.now:
            self.now = until
        timers = self._timers
        while timers:
            deadline, _, key = timers[0]
            if deadline > until or (deadline == until and not inclusive):
                return
            heapq.heappop(timers)
            state = self._sources[key]
            if state.deadline != deadline or state.chain is None:
                continue  # moved since: a newer entry stands for it
            self.clock.now = deadline
            produced = state.chain.tick(deadline)
            for record in produced:
                if type(record) is Alert:
                    self._new_alert(state, deadline, key[0], record, out)
                else:
                    out.append((deadline, key[0], record))
            self._rearm(key, state, after=deadline)

    # -- alerts --------------------------------------------------------------------

    def _stamped(self, alert: Alert, index: int, at: float) -> Alert:
        start = self._starts.get(index)
        if start is None:
            return alert
        return msgspec.structs.replace(alert, at=start + at)

    def _shown(self, alert: Alert, index: int) -> Alert:
        if len(self._labels) > 1:
            return msgspec.structs.replace(alert, source=f"{alert.source}@{self._labels[index]}")
        return alert

    def _entry(
        self, state: _Source | None, alert: Alert, at: float, index: int, origin: str
    ) -> LoggedAlert | None:
        if self.log is None:
            return None
        steps = state.steps if state is not None else None
        step = steps.of(alert.seq) if steps is not None else None
        entry = LoggedAlert(self._shown(alert, index), origin, step, at, index)
        self.log.entries.append(entry)
        return entry

    def _new_alert(
        self, state: _Source, at: float, index: int, alert: Alert, out: list[Item]
    ) -> None:
        alert = self._stamped(alert, index, at)
        mark = _mark(alert)
        found, recorded = _take(state.recorded, mark)
        if found:
            # Its recorded copy went on already: one alert, raised again. (Written
            # before the event that raised it, it could not tell that event's step.)
            if recorded is not None:
                recorded.origin, recorded.offset = RECORDED, at
                if state.steps is not None:
                    recorded.step = state.steps.of(alert.seq)
            return
        state.raised.append((mark, self._entry(state, alert, at, index, NEW)))
        out.append((at, index, alert))

    def _recorded_alert(self, at: float, index: int, alert: Alert, out: list[Item]) -> None:
        state = self._sources.get((index, alert.source))
        mark = _mark(alert)
        if state is not None:
            found, raised = _take(state.raised, mark)
            if found:
                if raised is not None:
                    raised.origin = RECORDED
                return  # the copy of one raised again: handed on once
        entry = self._entry(state, alert, at, index, RECORDED_ONLY)
        if state is not None:
            state.recorded.append((mark, entry))
        out.append((at, index, alert))
