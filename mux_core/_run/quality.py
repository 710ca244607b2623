"""Connection quality per source, measured by the core the same way for every transport.

A :class:`QualityTracker` watches one source's batches in the source's own
task, before its processors: the Status records tell it when the source was
connected (so uptime, reconnects and time blind per outage), the events how
many arrived, whether numeric ids skipped ahead (gaps) and, with a
``lag_field``, how late they arrived. Gaps are counted only once an event
carried a numeric id: until then (a stream without ids, ids that are not
numbers) they are unknown -- None in the record, "n/a" where shown -- not 0.
:meth:`QualityTracker.snapshot` sums it up as a
:class:`~mux_core.records.Quality` record, which the engine sends
through the sinks every ``quality_interval`` seconds and once more when the
run stops (``mux run`` prints those last ones as a table:
:func:`format_quality_table`).

Cost on the hot path: per batch, not per event, whenever it can be -- an
event batch is counted with ``len``, its ids are checked from the first and
the last (``int`` of two strings: ids that count up by one need nothing
else), the lag is sampled from the first (oldest) event of each batch, and
the batch's arrival is noted once for staleness (a clock read and a
:class:`~mux_core.views.StaleWatch` step, ~0.3 µs a batch).
Only a batch whose ids do not count up by one (a gap, repeated SSE ids) is
walked record by record. (So a gap is missed only when, in one batch,
repeated ids make up for it exactly: ``8, 8, 10`` spans three ids like
``8, 9, 10``.) Measured: ``benchmarks/bench_quality.py``.

Times: state changes and arrivals (for ``stale``) are timed with the trio
clock (``trio.current_time``, so tests script outages and hangs with
``MockClock``); ``at``, ``staleness`` and lag use the wall clock, like
``received_at``.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import trio

from ..payload import JsonFields
from ..records import (
    Event,
    Quality,
    Record,
    State,
    Status,
)
from ..views import StaleWatch, format_duration

__all__ = [
    "SUMMARY_OVER",
    "QualityTracker",
    "format_gaps",
    "format_quality_summary",
    "format_quality_table",
]

#: The window the windowed figures cover unless configured (``quality_window``).
DEFAULT_WINDOW = 3600.0
#: Lag samples kept per source (one per batch; the oldest go first).
_LAG_SAMPLES = 4096
#: Ids that are not numbers, seen before any number, after which gaps are not looked for.
_ODD_IDS = 100


#: Shared by every tracker without lag_field: it is never appended to.
_NO_LAGS: deque[tuple[float, float]] = deque(maxlen=0)
#: Shared by every tracker until its source first drops: never appended to
#: (the tracker makes its own list then; most sources never drop).
_NONE_YET: list[Any] = []


class QualityTracker:
    """Measures one source's connection quality from the records it emits.

    Feed it every batch the source emits (:meth:`observe`, cheap: see the
    module docstring); ask :meth:`snapshot` for a :class:`Quality` record.

    ``window`` is how many seconds the windowed figures look back. They are
    counted between snapshots, so the window actually covered starts at the
    last snapshot at or before ``now - window`` (it is reported as
    ``Quality.window``); before the first such snapshot it is the whole run.
    """

    # Slots: one of these per source, and 10,000 idle sources should stay small.
    __slots__ = (
        "_base",
        "_blind_closed",
        "_clock",
        "_down_since",
        "_ended_stale",
        "_ids_seen",
        "_lag_reader",
        "_lags",
        "_last_id",
        "_marks",
        "_numeric_ids",
        "_odd_ids",
        "_outages",
        "_reconnects",
        "_stale",
        "_up",
        "_up_since",
        "_wall",
        "ended_at",
        "events_total",
        "gaps_total",
        "lag_field",
        "last_received_at",
        "reconnects_total",
        "reported_end",
        "source",
        "started",
        "state",
        "transport",
        "window",
    )

    def __init__(
        self,
        source: str,
        transport: str,
        *,
        window: float = DEFAULT_WINDOW,
        lag_field: str | None = None,
        stale_after: float | None = None,
        clock: Callable[[], float] = trio.current_time,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not window > 0:
            raise ValueError(f"window must be > 0 seconds, not {window!r}")
        self.source = source
        self.transport = transport
        self.window = window
        self.lag_field = lag_field
        self._clock = clock
        self._wall = wall
        #: Trio-clock time the tracker started (the source's start).
        self.started = clock()
        #: The last state the source reported (None before its first Status).
        self.state: State | None = None
        #: Trio-clock time the source reached a terminal state, or None.
        self.ended_at: float | None = None
        #: Whether a record was sent after the source ended (the engine's flag).
        self.reported_end = False
        self._up_since: float | None = None
        self._down_since: float | None = None
        # Lists, not deques: 10,000 idle sources each hold these, and an
        # empty deque costs ~600 bytes against 56 for a list; they stay short
        # (one entry per outage or per quality record in the window). The
        # first three are made at the source's first drop (_NONE_YET until then).
        self._up: list[tuple[float, float]] = _NONE_YET
        self._reconnects: list[float] = _NONE_YET
        self._outages: list[tuple[float, float]] = _NONE_YET
        self.reconnects_total = 0
        self._blind_closed = 0.0
        self.events_total = 0
        self.gaps_total = 0
        #: ``received_at`` of the newest event, or None.
        self.last_received_at: float | None = None
        self._last_id: int | None = None
        #: Whether an event carried a numeric id: gaps are known from then on.
        self._ids_seen = False
        self._numeric_ids = True
        self._odd_ids = 0
        self._lag_reader = JsonFields([lag_field]) if lag_field else None
        # Only with lag_field (the deque's block is most of an idle tracker).
        self._lags: deque[tuple[float, float]] = _NO_LAGS
        if lag_field:
            self._lags = deque(maxlen=_LAG_SAMPLES)
        self._marks: list[tuple[float, int, int]] = []
        self._base: tuple[float, int, int] = (self.started, 0, 0)
        #: When events arrived (trio clock), for whether the source is stale.
        self._stale = StaleWatch(stale_after=stale_after)
        #: Whether it was stale when it reached a terminal state while connected.
        self._ended_stale: bool | None = None

    # -- feeding -------------------------------------------------------------

    def observe(self, batch: Sequence[Record]) -> None:
        """Take one batch the source emitted, before its processors."""
        if not batch:
            return
        first = batch[0]
        last = batch[-1]
        if type(first) is Event and type(last) is Event and last.source == self.source:
            count = len(batch)
            self.events_total += count
            self.last_received_at = last.received_at
            self._stale.saw(self._clock())
            if self._numeric_ids:
                self._count_gaps(batch, first.id, last.id, count)
            if self._lag_reader is not None:
                self._sample_lag(first)
            return
        self._observe_records(batch)

    def _observe_records(self, batch: Iterable[Record]) -> None:
        """A batch of statuses, or records relayed from other sources: the
        events of one batch arrived at one instant, seen once (as the fast
        path above does), not once per event -- besides costing a clock read
        each, that made the stale watch learn intervals of ~0 s."""
        events = 0
        last: Event | None = None
        for record in batch:
            if type(record) is Event:
                events += 1
                last = record
            elif type(record) is Status and record.source == self.source:
                self._on_status(record.state)
        if last is not None:
            self.events_total += events
            self.last_received_at = last.received_at
            self._stale.saw(self._clock())

    def _on_status(self, state: State) -> None:
        self.state = state
        if self.ended_at is not None:
            return
        now = self._clock()
        if state.terminal:
            self._ended_stale = self.stale(now)
        if state is State.CONNECTED:
            if self._up_since is None:
                self._up_since = now
                if self._down_since is not None:
                    self._close_outage(now)
                    if self._reconnects is _NONE_YET:
                        self._reconnects = []
                    self._reconnects.append(now)
                    self.reconnects_total += 1
            return
        if self._up_since is not None:
            if self._up is _NONE_YET:
                self._up = []
            self._up.append((self._up_since, now))
            self._up_since = None
            if not state.terminal:
                self._down_since = now
        if state.terminal:
            if self._down_since is not None:
                self._close_outage(now)
            self.ended_at = now

    def _close_outage(self, now: float) -> None:
        assert self._down_since is not None
        blind = now - self._down_since
        if self._outages is _NONE_YET:
            self._outages = []
        self._outages.append((now, blind))
        self._blind_closed += blind
        self._down_since = None

    def _count_gaps(self, batch: Sequence[Record], first: Any, last: Any, count: int) -> None:
        try:
            low = int(first)
            high = int(last)
        except (TypeError, ValueError):  # an event without an id, or not a number
            self._count_gaps_slowly(batch)
            return
        if high - low != count - 1:
            self._count_gaps_slowly(batch)
            return
        previous = self._last_id
        if previous is not None and low > previous + 1:
            self.gaps_total += low - previous - 1
        self._last_id = high
        self._ids_seen = True

    def _count_gaps_slowly(self, batch: Sequence[Record]) -> None:
        """Ids that skip, repeat (SSE carries the last id over), go back (a
        restart) or are not numbers (skipped: ``"12-eval"`` beside ``"12"``;
        after 100 such ids and no number, ids are not looked at again)."""
        previous = self._last_id
        gaps = 0
        for record in batch:
            id_ = getattr(record, "id", None)
            if id_ is None:
                continue
            try:
                number = int(id_)
            except ValueError:
                self._odd_ids += 1
                if self._odd_ids >= _ODD_IDS and previous is None:
                    self._numeric_ids = False
                    return
                continue
            if previous is not None and number > previous + 1:
                gaps += number - previous - 1
            previous = number
            self._ids_seen = True
        self.gaps_total += gaps
        self._last_id = previous

    def _sample_lag(self, event: Event) -> None:
        assert self._lag_reader is not None
        raw = event.raw
        if raw is not None:
            found = self._lag_reader.read(raw)
            value = found[0] if found is not None else None
        else:
            data = event.data
            value = data.get(self.lag_field) if isinstance(data, dict) else None
        stamp = _parse_timestamp(value)
        if stamp is not None:
            self._lags.append((event.received_at, event.received_at - stamp))

    # -- reading -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the source is connected now."""
        return self._up_since is not None

    def stale(self, now: float) -> bool | None:
        """Whether the source is connected and quiet for longer than it usually
        is (:class:`~mux_core.views.StaleWatch`) at trio-clock time ``now``;
        None when it is not connected. A connection counts as an arrival: a
        source is not stale the moment it reconnects after an outage.

        A snapshot after the source's terminal state reports what this was
        when it ended (a run stopped while a trainer hung: its last record,
        and ``mux run``'s table, say stale)."""
        up_since = self._up_since
        if up_since is None:
            return None
        watch = self._stale
        return watch.is_stale(now) and now - up_since > watch.threshold()

    def snapshot(self, dropped: Mapping[str, int] | None = None) -> Quality:
        """The source's quality now, as a record (also marks the window's next step)."""
        now = self._clock()
        wall = self._wall()
        horizon = now - self.window
        while self._marks and self._marks[0][0] <= horizon:
            self._base = self._marks.pop(0)
        start, events_before, gaps_before = self._base
        window = now - start
        self._marks.append((now, self.events_total, self.gaps_total))

        while self._up and self._up[0][1] < start:
            del self._up[0]
        up = sum(min(end, now) - max(begin, start) for begin, end in self._up)
        if self._up_since is not None:
            up += now - max(self._up_since, start)
        if window > 0:
            uptime = min(max(up / window, 0.0), 1.0)
        else:
            uptime = 1.0 if self._up_since is not None else 0.0

        while self._reconnects and self._reconnects[0] < start:
            del self._reconnects[0]
        while self._outages and self._outages[0][0] < start:
            del self._outages[0]
        blinds = [blind for _, blind in self._outages]
        ongoing = 0.0
        if self._down_since is not None:
            ongoing = now - self._down_since
            blinds.append(ongoing)

        lags = self._lags
        while lags and lags[0][0] < wall - window:
            lags.popleft()
        lag_values = sorted(lag for _, lag in lags)

        events = self.events_total - events_before
        known = self._ids_seen
        staleness = None
        if self.last_received_at is not None:
            staleness = _ms(max(wall - self.last_received_at, 0.0))
        return Quality(
            self.source,
            self.transport,
            _ms(window),
            round(uptime, 6),
            len(self._reconnects),
            _ms(max(blinds)) if blinds else None,
            events,
            self.gaps_total - gaps_before if known else None,
            _ms(_percentile(lag_values, 0.99)) if lag_values else None,
            wall,
            state=self.state,
            outages=len(blinds),
            blind_p50=_ms(_percentile(sorted(blinds), 0.5)) if blinds else None,
            events_per_s=round(events / window, 3) if window > 0 else 0.0,
            staleness=staleness,
            lag_p50=_ms(_percentile(lag_values, 0.5)) if lag_values else None,
            reconnects_total=self.reconnects_total,
            blind_total=_ms(self._blind_closed + ongoing),
            events_total=self.events_total,
            gaps_total=self.gaps_total if known else None,
            dropped=dict(dropped or {}),
            stale=self.stale(now) if self.ended_at is None else self._ended_stale,
        )


def _parse_timestamp(value: Any) -> float | None:
    """A payload's timestamp as seconds since the epoch, or None.

    Numbers are seconds since the epoch; numbers too big for that are read as
    milliseconds, microseconds or nanoseconds (what ``Date.now()``,
    ``time.time_ns()`` and friends give). Strings are numbers or ISO 8601
    (``2025-11-27T13:26:40.123Z``; without an offset, UTC).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                return None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.timestamp()
    if not isinstance(value, int | float):
        return None
    stamp = float(value)
    if not math.isfinite(stamp):
        return None
    for _ in range(3):
        if abs(stamp) < 1e11:
            break
        stamp /= 1000.0
    return stamp


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1]


def _ms(seconds: float) -> float:
    return round(seconds, 3)


# -- the table `mux run` prints when it stops ------------------------------------

_COLUMNS = (
    "source",
    "state",
    "window",
    "uptime",
    "reconnects",
    "blind p50/max",
    "events",
    "events/s",
    "gaps",
    "lag p50/p99",
    "stale",
)


def format_quality_table(records: Iterable[Quality]) -> str:
    """A plain-text table of quality records, one row per source (``mux run``'s last words)."""
    rows = [_COLUMNS]
    for quality in records:
        rows.append(
            (
                quality.source,
                quality.state.value if quality.state is not None else "-",
                format_duration(quality.window),
                f"{quality.uptime * 100:.1f}%",
                str(quality.reconnects),
                _pair(quality.blind_p50, quality.blind_max),
                str(quality.events),
                f"{quality.events_per_s:.1f}",
                format_gaps(quality.gaps),
                _pair(quality.lag_p50, quality.lag_p99),
                _stale(quality),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


#: Sources beyond which ``mux run`` summarises its last words (``--quality-table full``: all).
SUMMARY_OVER = 40
#: Rows of a summary: the worst sources.
WORST_ROWS = 10


def format_quality_summary(records: Iterable[Quality], *, worst: int = WORST_ROWS) -> str:
    """Many sources in a few lines: counts per state, totals, and the ``worst`` sources' rows.

    Worst first: the lowest uptime, then the most gaps, reconnects and the
    longest time blind -- the sources a user looks at first.
    """
    records = list(records)
    states = Counter(q.state.value if q.state is not None else "-" for q in records)
    uptimes = sorted(q.uptime for q in records)
    gaps = [q.gaps for q in records if q.gaps is not None]
    unknown = len(records) - len(gaps)
    stale = sum(1 for q in records if q.stale)
    lines = [
        f"{len(records)} sources: "
        + ", ".join(f"{count} {state}" for state, count in states.most_common()),
        f"uptime p50 {uptimes[len(uptimes) // 2] * 100:.1f}%, lowest {uptimes[0] * 100:.1f}%; "
        f"reconnects {sum(q.reconnects for q in records)}; "
        f"gaps {sum(gaps)}{f' ({unknown} n/a)' if unknown else ''}; "
        f"events {sum(q.events for q in records)}{f'; {stale} stale' if stale else ''}",
    ]
    ranked = sorted(records, key=_badness)[:worst]
    lines.append(f"the {len(ranked)} worst (lowest uptime first; all: --quality-table full):")
    return "\n".join(lines) + "\n" + format_quality_table(ranked)


def _badness(quality: Quality) -> tuple[float, int, int, float]:
    return (
        quality.uptime,
        -(quality.gaps or 0),
        -quality.reconnects,
        -(quality.blind_max or 0.0),
    )


def format_gaps(gaps: int | None) -> str:
    """A gap count as the table shows it: "n/a" when it cannot be known (no ids)."""
    return "n/a" if gaps is None else str(gaps)


def _stale(quality: Quality) -> str:
    """The table's last column: seconds since the last event, and "STALE"
    when the source was stale (connected, quiet for longer than usual)."""
    age = format_duration(quality.staleness)
    return f"STALE {age}" if quality.stale else age


def _pair(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "-"
    return f"{format_duration(low)}/{format_duration(high)}"
