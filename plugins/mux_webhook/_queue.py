"""What the webhook sends, and in which order: grouping and a queue that keeps the critical.

Both are pure bookkeeping, with the time passed in, so they are tested
without a clock or a network:

* :class:`Grouper` -- a storm of alerts of one rule on one source becomes
  one message per ``group_interval``: the first alert of a group goes at
  once (a pager must not wait), the ones after it within the window are
  held, and when the window closes the latest of them goes as a summary
  (:class:`Pending` with ``count``, the number of records it stands for).
  Status changes of a source are grouped the same way.
* :class:`SendQueue` -- the records waiting for the sender, in arrival
  order. When it is full the least important record goes: data events
  first, then statuses and info alerts, then warnings; critical alerts
  last; the oldest first within a rank.
"""

from __future__ import annotations

from collections import deque

import attrs

from mux_core.records import Alert, Event, Record, Severity, Status

__all__ = ["Grouper", "Pending", "SendQueue", "kind", "rank", "record_time"]

#: How much a record matters when the queue must drop one (higher is kept longer).
_RANKS = {Severity.INFO: 1, Severity.WARNING: 2, Severity.CRITICAL: 3}
_EVENT_RANK = 0
_STATUS_RANK = 1
_KINDS = ("events", "statuses and info alerts", "warning alerts", "critical alerts")


def rank(record: Record) -> int:
    """0 (an event) .. 3 (a critical alert): what a full queue drops last."""
    if type(record) is Alert:
        return _RANKS[record.severity]
    return _EVENT_RANK if type(record) is Event else _STATUS_RANK


def kind(level: int) -> str:
    """The words for a rank in the summary of what was dropped."""
    return _KINDS[level]


@attrs.frozen
class Pending:
    """A record waiting to be sent; a group's summary stands for ``count`` records."""

    record: Record
    #: Records this one stands for: 1, or a summary's count (the latest shown).
    count: int = 1
    #: The record time (``at`` / ``received_at``) of the first record summarised.
    since: float | None = None
    #: The most severe alert summarised, when more severe than the one shown.
    worst: Severity | None = None

    @property
    def rank(self) -> int:
        level = rank(self.record)
        if self.worst is not None:
            level = max(level, _RANKS[self.worst])
        return level


@attrs.define
class _Group:
    #: When the current window closes (the run's clock).
    closes: float
    held: Record | None = None
    count: int = 0
    since: float | None = None
    worst: Severity | None = None

    def hold(self, record: Record) -> None:
        self.held = record
        self.count += 1
        if self.since is None:
            self.since = record_time(record)
        if type(record) is Alert and (
            self.worst is None or _RANKS[record.severity] > _RANKS[self.worst]
        ):
            self.worst = record.severity

    def summary(self) -> Pending:
        assert self.held is not None
        shown = self.held
        worst = self.worst
        if worst is not None and type(shown) is Alert and _RANKS[worst] <= _RANKS[shown.severity]:
            worst = None
        return Pending(shown, self.count, self.since, worst)


def record_time(record: Record) -> float:
    """When a record happened: an event's ``received_at``, any other's ``at``."""
    if type(record) is Event:
        return record.received_at
    assert isinstance(record, Alert | Status)
    return record.at


class Grouper:
    """Alerts per (source, rule), and statuses per source, within ``interval`` seconds.

    :meth:`offer` says whether a record goes now (the first of its group's
    window) or is held; :meth:`due` returns the summaries of the windows that
    closed. A group with nothing held when its window closes is forgotten,
    so the next alert of it goes at once again.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        #: Groups in the order their windows close (a new window closes last).
        self._groups: dict[tuple[str, str | None], _Group] = {}

    def offer(self, record: Alert | Status, now: float) -> bool:
        """True when ``record`` is to be sent now; False when it was held for a summary."""
        if self.interval <= 0:
            return True
        key = (record.source, record.rule if type(record) is Alert else None)
        group = self._groups.get(key)
        if group is None:
            self._groups[key] = _Group(closes=now + self.interval)
            return True
        group.hold(record)
        return False

    def next_close(self) -> float | None:
        """When the earliest window closes, or None with no group open."""
        for group in self._groups.values():
            return group.closes
        return None

    def due(self, now: float) -> list[Pending]:
        """The summaries of the windows closed by ``now``; a group that held some
        records opens its next window at once."""
        summaries: list[Pending] = []
        while self._groups:
            key, group = next(iter(self._groups.items()))
            if group.closes > now:
                break
            del self._groups[key]
            if group.count:
                summaries.append(group.summary())
                self._groups[key] = _Group(closes=now + self.interval)
        return summaries

    def flush(self) -> list[Pending]:
        """Every summary held, windows open or not (the end of the run)."""
        summaries = [group.summary() for group in self._groups.values() if group.count]
        self._groups.clear()
        return summaries


class SendQueue:
    """Pending records in arrival order, at most ``limit``; when full, :meth:`put`
    drops the lowest-ranked oldest one (see :func:`rank`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._ranks: list[deque[tuple[int, Pending]]] = [deque() for _ in _KINDS]
        self._order = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def put(self, item: Pending) -> Pending | None:
        """Queue ``item``; return the one dropped to make room (maybe ``item`` itself,
        when everything queued matters more), or None."""
        level = item.rank
        if self._size >= self.limit:
            lowest = next(i for i, queue in enumerate(self._ranks) if queue)
            if lowest > level:
                return item
            _, dropped = self._ranks[lowest].popleft()
            self._size -= 1
        else:
            dropped = None
        self._order += 1
        self._ranks[level].append((self._order, item))
        self._size += 1
        return dropped

    def take(self, count: int) -> list[Pending]:
        """Up to ``count`` of the oldest records, in arrival order."""
        taken: list[Pending] = []
        queues = self._ranks
        while len(taken) < count and self._size:
            oldest = min((q for q in queues if q), key=lambda q: q[0][0])
            taken.append(oldest.popleft()[1])
            self._size -= 1
        return taken

    def clear(self) -> list[Pending]:
        """Empty the queue; what it held, in arrival order."""
        return self.take(self._size)
