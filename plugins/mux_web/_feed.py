"""What the web sink keeps and sends: numbered records, a bounded history, a queue per viewer.

Every record the sink is given is numbered and sent as one JSON Lines line
(the line the file sink writes); consecutive records go out together as one
Server-Sent Event of up to about :data:`EVENT_BYTES`, one ``data:`` line
each, with the number of its last record as its id::

    id: 3f9c01aa-1042
    data: {"type":"event","source":"train",...,"seq":517}
    data: {"type":"event","source":"train",...,"seq":518}

A browser's EventSource hands such an event's data over as the lines joined
by ``\n``: one record per line. The id is ``<epoch>-<n>``: ``n`` numbers this
sink's records from 1 (an event's id is its last record's number, so a
reconnect with ``Last-Event-ID`` resumes after the whole event), and the
epoch is random per sink, so a browser that reconnects after mux restarted
is told to start over (``event: reset``) instead of being resumed at a number
that now means another record. Each record is encoded once, for every viewer:
a batch becomes one chunk of bytes that every viewer's queue shares.

A viewer that opens late gets the history first: per source, the newest
``points`` events of each event type, and the newest :data:`KEPT_OTHERS`
statuses, alerts and quality records, merged back into their order. A
viewer that reconnects with a ``Last-Event-ID`` gets only what came after
it -- when nothing after it was trimmed since; else a ``reset`` and the
whole history. The history goes out in pieces of about
:data:`HISTORY_CHUNK` bytes, each made when the viewer's socket took the
one before: what a viewer holds is its queue plus one piece, however long
the history (a record trimmed from the history before the viewer's piece
reached it is skipped, as it would be for a viewer opening then).

Each viewer has a queue bounded in bytes (``viewer_buffer``). :meth:`Feed.publish`
appends one chunk per batch to every queue and never waits: a viewer whose
queue is full is dropped (its connection closed; the browser reconnects and
resumes), so no viewer can slow a source, the sink, or another viewer.
"""

from __future__ import annotations

import array
import bisect
import collections
import heapq
import itertools
import operator
import secrets
from collections.abc import Sequence

import trio

from mux_core.records import Event, Record, encode_jsonl

__all__ = [
    "EVENT_BYTES",
    "HISTORY_CHUNK",
    "KEPT_OTHERS",
    "MAX_EVENT_TYPES",
    "SEND_BYTES",
    "Feed",
    "Viewer",
    "frame",
]

#: Statuses, alerts and quality records kept per source, each.
KEPT_OTHERS = 1_000
#: Event types kept apart per source; a source that sends more (a hostile
#: server) shares one more history among the rest.
MAX_EVENT_TYPES = 32
#: Records go out together as one SSE event of up to about this many bytes
#: (a record larger than this alone): a relaying mux reads many at once,
#: within its ``max_event_bytes`` (8 MiB by default).
EVENT_BYTES = 64 * 1024
#: The history goes out in pieces of about this many bytes.
HISTORY_CHUNK = 64 * 1024
#: A viewer's queue is handed to its socket this many bytes at a time (or
#: one batch, when a batch is larger).
SEND_BYTES = 64 * 1024

_Kept = tuple[int, bytes]
_seq_of = operator.itemgetter(0)
_series_of = operator.attrgetter("source", "event")


def frame(prefix: bytes, lines: Sequence[bytes], seqs: Sequence[int]) -> bytes:
    """``lines`` (JSON Lines lines without their LF) as SSE events of up to
    about :data:`EVENT_BYTES` each, each with the number of its last line
    (``seqs[i]`` numbers ``lines[i]``) after ``prefix`` as its id."""
    n = len(lines)
    if n == 1:
        return b"id: %s%d\ndata: %s\n\n" % (prefix, seqs[0], lines[0])
    ends = list(itertools.accumulate(map(len, lines)))
    out: list[bytes] = []
    start = 0
    base = 0
    while start < n:
        stop = bisect.bisect_right(ends, base + EVENT_BYTES, start + 1)
        out.append(
            b"id: %s%d\ndata: %s\n\n"
            % (prefix, seqs[stop - 1], b"\ndata: ".join(lines[start:stop]))
        )
        base = ends[stop - 1]
        start = stop
    return b"".join(out)


class _History:
    """One kept series (a source's events of one type, or its statuses, ...):
    the newest ``size`` records' numbers (an array of int64: no object per
    record) and lines, in number order.

    Lists with a moving start (trimmed entries are cut off in blocks), not
    deques: a late viewer's next piece is found by bisection on the numbers.
    """

    __slots__ = ("lines", "numbers", "size", "start")

    def __init__(self, size: int) -> None:
        self.numbers = array.array("q")
        self.lines: list[bytes] = []
        self.start = 0
        self.size = size

    def extend(self, numbers: range, lines: list[bytes]) -> int:
        """Keep ``lines``, numbered ``numbers``; return the highest number
        trimmed by it (0: none)."""
        kept = self.numbers
        kept.extend(numbers)
        self.lines.extend(lines)
        excess = len(kept) - self.start - self.size
        if excess <= 0:
            return 0
        self.start += excess
        trimmed = kept[self.start - 1]
        # Cut off trimmed entries once they are an eighth of the kept ones
        # (a cut moves every entry: a few per record on average).
        if self.start > 64 and self.start * 8 >= self.size:
            del kept[: self.start]
            del self.lines[: self.start]
            self.start = 0
        return trimmed

    def newest(self) -> int:
        return self.numbers[-1] if len(self.numbers) > self.start else 0

    def after(self, number: int, upto: int, count: int) -> list[_Kept]:
        """Up to ``count`` entries numbered in (number, upto], oldest first."""
        numbers = self.numbers
        first = bisect.bisect_right(numbers, number, self.start)
        stop = bisect.bisect_right(numbers, upto, first, min(first + count, len(numbers)))
        return list(zip(numbers[first:stop], self.lines[first:stop], strict=True))


class _Backlog:
    """What a late viewer is still to be sent of the history: everything kept
    numbered in (``sent``, ``upto``], ``upto`` being the newest number when it joined."""

    __slots__ = ("sent", "upto")

    def __init__(self, after: int, upto: int) -> None:
        self.sent = after
        self.upto = upto


class Viewer:
    """One connected browser (or relaying mux): its queue of events not yet sent."""

    __slots__ = ("backlog", "chunks", "closing", "dropped", "limit", "queued", "scope", "wake")

    def __init__(self, limit: int, backlog: _Backlog | None = None) -> None:
        self.chunks: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.limit = limit
        self.wake = trio.Event()
        #: The history still to be sent before the queue (None: all sent).
        self.backlog = backlog
        #: Set when the queue overflowed: the viewer is to be disconnected.
        self.dropped = False
        #: Set when the sink closes: what is queued is sent, then the stream ends.
        self.closing = False
        #: The cancel scope of the viewer's connection, cancelled when it is dropped.
        self.scope: trio.CancelScope | None = None

    def offer(self, chunk: bytes) -> bool:
        """Queue ``chunk``; False (and the viewer dropped) when it does not fit."""
        if self.dropped:
            return False
        # One batch larger than the limit still goes to a viewer that has
        # nothing waiting (a batch is at most 4,096 records).
        if self.queued and self.queued + len(chunk) > self.limit:
            self.drop()
            return False
        self.chunks.append(chunk)
        self.queued += len(chunk)
        self.wake.set()
        return True

    def drop(self) -> None:
        self.dropped = True
        self.chunks.clear()
        self.queued = 0
        self.backlog = None
        self.wake.set()
        if self.scope is not None:
            self.scope.cancel()

    def close(self) -> None:
        """End the stream once what is queued is sent (the sink is closing)."""
        self.closing = True
        self.wake.set()

    async def take(self) -> bytes | None:
        """What is queued, up to about :data:`SEND_BYTES` (one chunk when larger), once
        there is something; None once dropped, or once closing and nothing is left."""
        while not self.chunks and not self.dropped and not self.closing:
            self.wake = trio.Event()
            await self.wake.wait()
        chunks = self.chunks
        if self.dropped or not chunks:
            return None
        parts = [chunks.popleft()]
        size = len(parts[0])
        while chunks and size + len(chunks[0]) <= SEND_BYTES:
            part = chunks.popleft()
            parts.append(part)
            size += len(part)
        self.queued -= size
        return parts[0] if len(parts) == 1 else b"".join(parts)


class _SourceHistory:
    __slots__ = ("events", "others")

    def __init__(self) -> None:
        self.events: dict[str, _History] = {}
        self.others: dict[str, _History] = {}


class Feed:
    """The numbered records of one web sink, its history and its viewers."""

    def __init__(self, *, points: int, viewer_buffer: int, epoch: str | None = None) -> None:
        self.points = points
        self.viewer_buffer = viewer_buffer
        #: Random per sink: ids of another mux run are not resumed from.
        self.epoch = epoch or secrets.token_hex(4)
        self._prefix = self.epoch.encode() + b"-"
        #: The number of the newest record.
        self.seq = 0
        #: The highest number ever trimmed from the history (0: none).
        self.trimmed = 0
        self.viewers: set[Viewer] = set()
        #: Viewers dropped because they fell behind.
        self.dropped_viewers = 0
        self._history: dict[str, _SourceHistory] = {}
        self._left = trio.Event()

    def publish(self, batch: Sequence[Record]) -> None:
        """Number, keep and send a batch; never waits."""
        if not batch:
            return
        n = len(batch)
        lines = encode_jsonl(batch if isinstance(batch, list) else list(batch)).split(b"\n")
        del lines[n:]  # the empty piece after the last LF
        first = self.seq + 1
        self.seq += n
        self._keep(batch, lines, first)
        chunk = frame(self._prefix, lines, range(first, first + n))
        for viewer in list(self.viewers):
            if not viewer.offer(chunk):
                self.viewers.discard(viewer)
                self.dropped_viewers += 1

    def _keep(self, batch: Sequence[Record], lines: list[bytes], first: int) -> None:
        """Keep each record's line in its series, a run of consecutive records
        of one series at a time (a batch is usually one run)."""
        numbers = range(first, first + len(lines))
        head = batch[0]
        if (
            type(head) is Event
            and len(set(map(type, batch))) == 1
            and len(set(map(_series_of, batch))) == 1
        ):  # the usual batch: one source's events of one type (C loops only)
            self._keep_run(head, numbers, lines)
            return
        run_start = 0
        run_type: type | None = None
        run_source = run_event = ""
        for i, record in enumerate(batch):
            kind = type(record)
            event = record.event if kind is Event else ""  # type: ignore[union-attr]
            if kind is not run_type or record.source != run_source or event != run_event:
                if run_type is not None:
                    self._keep_run(batch[run_start], numbers[run_start:i], lines[run_start:i])
                run_type, run_source, run_event, run_start = kind, record.source, event, i
        self._keep_run(batch[run_start], numbers[run_start:], lines[run_start:])

    def _keep_run(self, record: Record, numbers: range, lines: list[bytes]) -> None:
        """Keep ``kept``, records of the series ``record`` belongs to."""
        history = self._history.get(record.source)
        if history is None:
            history = self._history[record.source] = _SourceHistory()
        if type(record) is Event:
            series, key, size = history.events, record.event, self.points
            if key not in series and len(series) >= MAX_EVENT_TYPES:
                key = "\x00other"
        else:
            series, key, size = history.others, type(record).__name__, KEPT_OTHERS
        found = series.get(key)
        if found is None:
            found = series[key] = _History(size)
        trimmed = found.extend(numbers, lines)
        if trimmed > self.trimmed:
            self.trimmed = trimmed

    def join(self, last_event_id: str | None) -> tuple[Viewer, bool]:
        """A new viewer, and whether it must start over.

        The viewer is registered at once, so every record published after
        this call reaches its queue, and every one before is in its backlog
        (see :meth:`history`): nothing is missed or sent twice. The backlog
        is the history after ``last_event_id`` when the viewer can resume
        from it, else the whole history (``reset`` True when the viewer had
        an id to resume from and cannot).
        """
        after, reset = self._resume_point(last_event_id)
        backlog = _Backlog(after, self.seq) if after < self.seq else None
        viewer = Viewer(self.viewer_buffer, backlog)
        self.viewers.add(viewer)
        return viewer, reset

    def history(self, viewer: Viewer) -> bytes | None:
        """The next piece of the viewer's backlog (about :data:`HISTORY_CHUNK`
        bytes of SSE events), or None once it is all sent."""
        backlog = viewer.backlog
        if backlog is None:
            return None
        sent, upto = backlog.sent, backlog.upto
        # Entries per series looked at for one piece: at least one each, enough
        # for a piece of ~200-byte records from one series.
        count = max(16, HISTORY_CHUNK // 128)
        runs = []
        for source in self._history.values():
            for series in itertools.chain(source.events.values(), source.others.values()):
                if series.newest() > sent:
                    part = series.after(sent, upto, count)
                    if part:
                        runs.append(part)
        if not runs:
            viewer.backlog = None
            return None
        merged = runs[0] if len(runs) == 1 else heapq.merge(*runs, key=_seq_of)
        # Complete series only up to the lowest last number of a partial run: a
        # series cut at `count` may have entries numbered before another's next.
        limit = min((run[-1][0] for run in runs if len(run) == count), default=upto)
        seqs: list[int] = []
        lines: list[bytes] = []
        size = 0
        for number, line in merged:
            if number > limit or (size >= HISTORY_CHUNK and lines):
                break
            seqs.append(number)
            lines.append(line)
            size += len(line)
        backlog.sent = seqs[-1]
        if backlog.sent >= upto:
            viewer.backlog = None
        return frame(self._prefix, lines, seqs)

    def leave(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)
        self._left.set()

    async def wait_empty(self) -> None:
        """Return once every viewer has left."""
        while self.viewers:
            self._left = trio.Event()
            await self._left.wait()

    def _resume_point(self, last_event_id: str | None) -> tuple[int, bool]:
        if not last_event_id:
            return 0, False
        epoch, _, number = last_event_id.partition("-")
        if epoch != self.epoch or not number.isdigit() or len(number) > 18:
            return 0, True
        after = int(number)
        if after > self.seq or after < self.trimmed:
            return 0, True
        return after, False
