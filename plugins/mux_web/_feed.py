"""What the web sink keeps and sends: numbered frames, a bounded history, a queue per viewer.

Every record the sink is given becomes one Server-Sent Events frame::

    id: 3f9c01aa-1042
    data: {"type":"event","source":"train",...}     (the JSON Lines line, as the file has it)

The id is ``<epoch>-<n>``: ``n`` numbers this sink's records from 1, and the
epoch is random per sink, so a browser that reconnects with ``Last-Event-ID``
after mux restarted is told to start over (``event: reset``) instead of
being resumed at a number that now means another record.

A viewer that opens late gets the history first: per source, the newest
``points`` events of each event type, and the newest :data:`KEPT_OTHERS`
statuses, alerts and quality records, merged back into their order. A
viewer that reconnects with a ``Last-Event-ID`` gets only what came after
it -- when nothing after it was trimmed since; else a ``reset`` and the
whole history.

Each viewer has a queue bounded in bytes (``viewer_buffer``). :meth:`Feed.publish`
appends one chunk per batch to every queue and never waits: a viewer whose
queue is full is dropped (its connection closed; the browser reconnects and
resumes), so no viewer can slow a source, the sink, or another viewer.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import secrets
from collections.abc import Iterable, Iterator, Sequence

import trio

from mux_core.records import Event, Record, encode_jsonl

__all__ = ["KEPT_OTHERS", "MAX_EVENT_TYPES", "Feed", "Viewer"]

#: Statuses, alerts and quality records kept per source, each.
KEPT_OTHERS = 1_000
#: Event types kept apart per source; a source that sends more (a hostile
#: server) shares one more history among the rest.
MAX_EVENT_TYPES = 32

_Frame = tuple[int, bytes]


class Viewer:
    """One connected browser (or relaying mux): its queue of frames not yet sent."""

    __slots__ = ("chunks", "closing", "dropped", "limit", "queued", "scope", "wake")

    def __init__(self, limit: int) -> None:
        self.chunks: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.limit = limit
        self.wake = trio.Event()
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
        self.wake.set()
        if self.scope is not None:
            self.scope.cancel()

    def close(self) -> None:
        """End the stream once what is queued is sent (the sink is closing)."""
        self.closing = True
        self.wake.set()

    async def take(self) -> bytes | None:
        """Everything queued, as one chunk, once there is something; None once
        dropped, or once closing and nothing is left."""
        while not self.chunks and not self.dropped and not self.closing:
            self.wake = trio.Event()
            await self.wake.wait()
        if self.dropped or not self.chunks:
            return None
        chunk = b"".join(self.chunks)
        self.chunks.clear()
        self.queued = 0
        return chunk


class _SourceHistory:
    __slots__ = ("events", "others")

    def __init__(self) -> None:
        self.events: dict[str, collections.deque[_Frame]] = {}
        self.others: dict[str, collections.deque[_Frame]] = {}


class Feed:
    """The numbered frames of one web sink, its history and its viewers."""

    def __init__(self, *, points: int, viewer_buffer: int, epoch: str | None = None) -> None:
        self.points = points
        self.viewer_buffer = viewer_buffer
        #: Random per sink: ids of another mux run are not resumed from.
        self.epoch = epoch or secrets.token_hex(4)
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
        lines = encode_jsonl(list(batch)).split(b"\n")
        prefix = b"id: " + self.epoch.encode() + b"-"
        frames: list[bytes] = []
        seq = self.seq
        for record, line in zip(batch, lines, strict=False):
            seq += 1
            frame = b"%s%d\ndata: %s\n\n" % (prefix, seq, line)
            frames.append(frame)
            self._keep(record, seq, frame)
        self.seq = seq
        chunk = b"".join(frames)
        for viewer in list(self.viewers):
            if not viewer.offer(chunk):
                self.viewers.discard(viewer)
                self.dropped_viewers += 1

    def _keep(self, record: Record, seq: int, frame: bytes) -> None:
        history = self._history.get(record.source)
        if history is None:
            history = self._history[record.source] = _SourceHistory()
        if type(record) is Event:
            kept, key, size = history.events, record.event, self.points
            if key not in kept and len(kept) >= MAX_EVENT_TYPES:
                key = "\x00other"
        else:
            kept, key, size = history.others, type(record).__name__, KEPT_OTHERS
        frames = kept.get(key)
        if frames is None:
            frames = kept[key] = collections.deque()
        if len(frames) >= size:
            trimmed = frames.popleft()[0]
            if trimmed > self.trimmed:
                self.trimmed = trimmed
        frames.append((seq, frame))

    def join(self, last_event_id: str | None) -> tuple[Viewer, bool, Iterator[bytes]]:
        """A new viewer, whether it must start over, and the frames it gets first.

        The viewer is registered at once, so every record published after
        this call reaches its queue and every one before is in the frames
        returned (or was trimmed): nothing is missed or sent twice. The
        frames are the history after ``last_event_id`` when the viewer can
        resume from it, else the whole history (``reset`` True when the
        viewer had an id to resume from and cannot).
        """
        viewer = Viewer(self.viewer_buffer)
        after, reset = self._resume_point(last_event_id)
        self.viewers.add(viewer)
        return viewer, reset, self._frames_after(after, self.seq)

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

    def _frames_after(self, after: int, upto: int) -> Iterator[bytes]:
        """Kept frames numbered in (after, upto], in order: the deques are copied
        now (references only), so later trimming changes nothing."""
        runs: list[Iterable[_Frame]] = []
        for history in self._history.values():
            for kept in itertools.chain(history.events.values(), history.others.values()):
                if kept and kept[-1][0] > after:
                    runs.append([f for f in kept if after < f[0] <= upto])
        return (frame for _seq, frame in heapq.merge(*runs))
