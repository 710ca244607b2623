"""A sink's bounded channel: the buffer between every source and one sink.

The overflow policies it applies are described in :mod:`mux_core.sink`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import cast

import trio

from ..records import EncodedBatch, Event, Record, batch_bytes
from ..sink import DEFAULT_BUFFER_BYTES, Overflow

__all__ = ["SinkChannel", "SplicingChannel"]


class SinkChannel:
    """A bounded buffer of records between the sources and one sink.

    ``put`` takes a batch and, per the overflow policy, waits (block) or
    drops; ``get`` returns everything buffered as one batch (up to
    ``max_batch``), waiting while empty. ``close`` lets ``get`` drain what is
    left and then raise :class:`trio.EndOfChannel`.

    Bounded twice: in records (``capacity``) and in payload bytes
    (``max_bytes``, an estimate: see :func:`batch_bytes`); a batch bigger than
    ``max_bytes`` still enters an empty buffer, so nothing is refused for good.

    Delivery counters, for a source that must know when its records were
    written (the redis-stream transport acknowledges entries only then):
    ``entered`` counts records ever added, ``finished`` those the sink is
    done with -- dropped by the overflow policy, or handed out by ``get`` and
    written: the sink's task calls ``get`` again only after its ``write``
    returned. :meth:`wait_finished` waits for a mark taken from ``entered``.
    Under ``latest``, compaction drops records out of order, so there a mark
    is reached a little early (a UI sink shows "now", it does not record).
    """

    def __init__(
        self,
        capacity: int,
        overflow: Overflow,
        *,
        max_batch: int = 4096,
        max_bytes: int = DEFAULT_BUFFER_BYTES,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self.capacity = capacity
        #: The most payload bytes (an estimate, see :func:`batch_bytes`) held at once.
        self.max_bytes = max_bytes
        #: Payload bytes held now (an estimate).
        self.bytes = 0
        self.overflow = overflow
        self.max_batch = max_batch
        self.dropped = 0
        #: Records ever added to the buffer (see the class docstring).
        self.entered = 0
        #: Records dropped, or written by the sink (see the class docstring).
        self.finished = 0
        self._handed_out = 0
        self._finished_waiters = trio.lowlevel.ParkingLot()
        self._buffer: deque[Record] = deque()
        self._closed = False
        self._not_empty = trio.Event()
        #: Producers (every source's task) waiting for room, under ``block``.
        self._waiting_for_room = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._buffer)

    async def put(self, batch: Sequence[Record]) -> None:
        """Add a batch, in order; under ``block`` wait while the buffer is full.

        Any number of tasks may put (one per source); only a ``block`` put
        ever waits.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise trio.ClosedResourceError("sink channel is closed")
        if self.offer(batch):
            return
        per_record = batch_bytes(batch) / len(batch)
        for start in range(0, len(batch), self.capacity):
            while len(self._buffer) >= self.capacity or (
                self._buffer and self.bytes >= self.max_bytes
            ):
                await self._waiting_for_room.park()
                if self._closed:
                    raise trio.ClosedResourceError("sink channel is closed")
            chunk = batch[start : start + self.capacity]
            self._buffer.extend(chunk)
            self.bytes += int(per_record * len(chunk))
            self.entered += len(chunk)
            self._not_empty.set()

    @property
    def reader_waiting(self) -> bool:
        """True while the sink's task is parked in ``get`` for want of records."""
        return not self._not_empty.is_set()

    def offer(self, batch: Sequence[Record]) -> bool:
        """Add a batch if that needs no waiting and return True; else add nothing.

        False only for a closed channel or a ``block`` channel without room
        for the whole batch (``put`` then waits for room). The engine fans
        batches out with ``offer`` first: no checkpoint, no cancel scope, no
        task switch on the path of a record unless a sink is really behind.
        """
        if self._closed:
            return False
        if not batch:
            return True
        buffer = self._buffer
        policy = self.overflow
        dropped = self.dropped
        size = batch_bytes(batch)
        if policy is Overflow.BLOCK:
            if len(buffer) + len(batch) > self.capacity or (
                buffer and self.bytes + size > self.max_bytes
            ):
                return False
            buffer.extend(batch)
            self.bytes += size
            self.entered += len(batch)
        elif policy is Overflow.LATEST:
            buffer.extend(batch)
            self.bytes += size
            self.entered += len(batch)
            self._compact_latest()
        elif policy is Overflow.DROP_NEWEST:
            per_record = size / len(batch)
            room = min(self.capacity - len(buffer), int((self.max_bytes - self.bytes) / per_record))
            if room >= len(batch):
                buffer.extend(batch)
                self.bytes += size
                self.entered += len(batch)
            else:
                for record in batch:
                    if room > 0 or type(record) is not Event:
                        buffer.append(record)
                        self.bytes += int(per_record)
                        self.entered += 1
                        room -= 1
                    else:
                        self.dropped += 1
                dropped = self.dropped  # never entered: not finished either
        else:  # DROP_OLDEST
            buffer.extend(batch)
            self.bytes += size
            self.entered += len(batch)
            self._drop_oldest()
        if self.dropped != dropped:
            self._finish(self.dropped - dropped)
        if self._buffer:
            self._not_empty.set()
        return True

    def _drop_oldest(self) -> None:
        """Drop the oldest events until the buffer is within both bounds."""
        buffer = self._buffer
        per_record = self.bytes / len(buffer)
        excess = max(
            len(buffer) - self.capacity,
            math.ceil((self.bytes - self.max_bytes) / per_record) if per_record else 0,
        )
        kept: list[Record] = []
        while excess > 0 and buffer:
            record = buffer.popleft()
            if type(record) is Event:
                self.dropped += 1
                self.bytes -= int(per_record)
                excess -= 1
            else:
                kept.append(record)
        buffer.extendleft(reversed(kept))
        self.bytes = max(self.bytes, 0)

    def _compact_latest(self) -> None:
        buffer = self._buffer
        newest: dict[str, int] = {}
        for index, record in enumerate(buffer):
            if type(record) is Event:
                newest[record.source] = index
        events = sum(1 for r in buffer if type(r) is Event)
        if events <= len(newest):
            return
        kept: deque[Record] = deque()
        for index, record in enumerate(buffer):
            if type(record) is not Event or newest[record.source] == index:
                kept.append(record)
        self.dropped += events - len(newest)
        self.bytes = int(self.bytes * len(kept) / len(buffer))
        self._buffer = kept

    async def _wait_for_records(self) -> None:
        """What ``get`` does first: the sink's task asks again, so it has written
        the previous batch; then wait while empty (EndOfChannel once closed)."""
        if self._handed_out:
            self._finish(self._handed_out)
            self._handed_out = 0
        while not self._buffer:
            if self._closed:
                raise trio.EndOfChannel
            self._not_empty = trio.Event()
            await self._not_empty.wait()

    async def get(self) -> Sequence[Record]:
        await self._wait_for_records()
        buffer = self._buffer
        if len(buffer) <= self.max_batch:
            batch = list(buffer)
            buffer.clear()
            self.bytes = 0
        else:
            self.bytes -= int(self.bytes * self.max_batch / len(buffer))
            batch = [buffer.popleft() for _ in range(self.max_batch)]
        self._handed_out = len(batch)
        self._waiting_for_room.unpark_all()
        return batch

    def _finish(self, count: int) -> None:
        self.finished += count
        if self._finished_waiters:
            self._finished_waiters.unpark_all()

    async def wait_finished(self, mark: int) -> bool:
        """Wait until the sink is done with the first ``mark`` records that
        entered (``finished >= mark``) and return True; return False as soon
        as the channel is closed short of it (the sink failed or was dropped)."""
        while self.finished < mark:
            if self._closed:
                return False
            await self._finished_waiters.park()
        return True

    def close(self) -> None:
        """No more puts; ``get`` drains the rest, then raises EndOfChannel."""
        self._closed = True
        self._not_empty.set()
        self._waiting_for_room.unpark_all()
        self._finished_waiters.unpark_all()


class SplicingChannel(SinkChannel):
    """A channel that keeps an :class:`~mux_core.records.EncodedBatch` whole.

    ``mux run --workers N``'s parent gets its workers' events as encoded
    batches; a ``block`` sink's channel holds each as one item (counted as
    its records, in both bounds) and hands the sink one encoded batch of
    everything it takes, so a ``file`` sink writes the bytes as they came
    (the splice, docs/architecture.md, Workers). Under the other policies,
    which drop or compact record by record, an encoded batch is decoded
    first (once: the batch keeps its records for every sink).
    """

    def __init__(
        self,
        capacity: int,
        overflow: Overflow,
        *,
        max_batch: int = 4096,
        max_bytes: int = DEFAULT_BUFFER_BYTES,
    ) -> None:
        super().__init__(capacity, overflow, max_batch=max_batch, max_bytes=max_bytes)
        #: Records held (an encoded batch is one item of the buffer, many records).
        self._count = 0
        self._buffer: deque[Record | EncodedBatch] = deque()  # type: ignore[assignment]

    def __len__(self) -> int:
        return self._count if self.overflow is Overflow.BLOCK else len(self._buffer)

    def offer(self, batch: Sequence[Record]) -> bool:
        if self.overflow is not Overflow.BLOCK:
            if type(batch) is EncodedBatch:
                batch = batch.records()
            return super().offer(batch)
        if self._closed:
            return False
        if not batch:
            return True
        count, size = len(batch), batch_bytes(batch)
        if self._count and (
            self._count + count > self.capacity or self.bytes + size > self.max_bytes
        ):
            return False
        if type(batch) is EncodedBatch:
            self._buffer.append(batch)
        elif count > self.capacity:  # put() splits it
            return False
        else:
            self._buffer.extend(batch)
        self._count += count
        self.bytes += size
        self.entered += count
        self._not_empty.set()
        return True

    async def put(self, batch: Sequence[Record]) -> None:
        if self.overflow is not Overflow.BLOCK:
            if type(batch) is EncodedBatch:
                batch = batch.records()
            await super().put(batch)
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise trio.ClosedResourceError("sink channel is closed")
        if self.offer(batch):
            return
        parts: Sequence[Sequence[Record]]
        if type(batch) is EncodedBatch:
            parts = (batch,)
        else:
            parts = [batch[at : at + self.capacity] for at in range(0, len(batch), self.capacity)]
        for part in parts:
            while not self.offer(part):
                if self._closed:
                    raise trio.ClosedResourceError("sink channel is closed")
                await self._waiting_for_room.park()

    async def get(self) -> Sequence[Record]:
        if self.overflow is not Overflow.BLOCK:
            return await super().get()
        await self._wait_for_records()
        buffer = self._buffer
        taken: list[Record | EncodedBatch] = []
        count = 0
        encoded = False
        while buffer and count < self.max_batch:
            item = buffer.popleft()
            taken.append(item)
            if type(item) is EncodedBatch:
                count += len(item)
                encoded = True
            else:
                count += 1
        if buffer:
            self.bytes -= int(self.bytes * count / self._count)
        else:
            self.bytes = 0
        self._count -= count
        self._handed_out = count
        self._waiting_for_room.unpark_all()
        if not encoded:
            return cast(list[Record], taken)
        if len(taken) == 1:
            return cast(EncodedBatch, taken[0])
        return EncodedBatch.join(taken)
