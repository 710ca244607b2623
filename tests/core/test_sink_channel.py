"""Overflow policies of the per-sink channel and their drop counters."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing

from mux_core._run.channel import SinkChannel
from mux_core.records import (
    Event,
    Record,
    State,
    Status,
)
from mux_core.sink import Overflow


def ev(source: str, n: int) -> Event:
    return Event(source, "t", "message", str(n), {"n": n}, 0.0, n)


def st(source: str, state: State = State.CONNECTED) -> Status:
    return Status(source, "t", state, 1, None, "", 0.0)


async def test_block_waits_for_room_and_never_drops() -> None:
    channel = SinkChannel(4, Overflow.BLOCK)
    got: list[Record] = []
    async with trio.open_nursery() as nursery:

        async def consume() -> None:
            while True:
                try:
                    got.extend(await channel.get())
                except trio.EndOfChannel:
                    return

        async def produce() -> None:
            for i in range(0, 100, 10):
                await channel.put([ev("a", n) for n in range(i, i + 10)])
                assert len(channel) <= 4
            channel.close()

        nursery.start_soon(produce)
        nursery.start_soon(consume)
    assert [r.seq for r in got if isinstance(r, Event)] == list(range(100))
    assert channel.dropped == 0


async def test_drop_oldest_keeps_the_newest_and_counts() -> None:
    channel = SinkChannel(5, Overflow.DROP_OLDEST)
    await channel.put([ev("a", n) for n in range(8)])
    await channel.put([ev("a", 8)])
    assert [r.seq for r in await channel.get() if isinstance(r, Event)] == [4, 5, 6, 7, 8]
    assert channel.dropped == 4


async def test_drop_newest_keeps_the_oldest_and_counts() -> None:
    channel = SinkChannel(5, Overflow.DROP_NEWEST)
    await channel.put([ev("a", n) for n in range(3)])
    await channel.put([ev("a", n) for n in range(3, 9)])
    assert [r.seq for r in await channel.get() if isinstance(r, Event)] == [0, 1, 2, 3, 4]
    assert channel.dropped == 4


async def test_latest_keeps_newest_event_per_source_and_every_status() -> None:
    channel = SinkChannel(1000, Overflow.LATEST)
    await channel.put([st("a", State.CONNECTING), ev("a", 1), ev("b", 1), ev("a", 2)])
    await channel.put([st("b", State.DISCONNECTED), ev("b", 2), ev("a", 3)])
    batch = await channel.get()
    assert [(type(r).__name__, r.source) for r in batch] == [
        ("Status", "a"),
        ("Status", "b"),
        ("Event", "b"),
        ("Event", "a"),
    ]
    assert [r.seq for r in batch if isinstance(r, Event)] == [2, 3]
    assert channel.dropped == 3


async def test_close_drains_then_ends() -> None:
    channel = SinkChannel(10, Overflow.BLOCK)
    await channel.put([ev("a", 1)])
    channel.close()
    assert len(await channel.get()) == 1
    with pytest.raises(trio.EndOfChannel):
        await channel.get()
    with pytest.raises(trio.ClosedResourceError):
        await channel.put([ev("a", 2)])


async def test_get_returns_at_most_max_batch() -> None:
    channel = SinkChannel(100, Overflow.DROP_OLDEST, max_batch=8)
    await channel.put([ev("a", n) for n in range(20)])
    assert [len(await channel.get()) for _ in range(3)] == [8, 8, 4]


@pytest.mark.parametrize("overflow", [Overflow.DROP_OLDEST, Overflow.DROP_NEWEST])
async def test_drop_policies_never_drop_status_records(overflow: Overflow) -> None:
    channel = SinkChannel(3, overflow)
    await channel.put([st("a", State.CONNECTING), st("a"), *[ev("a", n) for n in range(10)]])
    await channel.put([st("a", State.STOPPED)])
    batch = await channel.get()
    statuses = [r.state for r in batch if isinstance(r, Status)]
    assert statuses == [State.CONNECTING, State.CONNECTED, State.STOPPED]
    assert channel.dropped == 10 - sum(isinstance(r, Event) for r in batch)


async def test_block_with_many_producers_loses_nothing_and_keeps_each_order() -> None:
    """Every source puts from its own task: all of them may wait for room."""
    channel = SinkChannel(3, Overflow.BLOCK)
    got: list[Record] = []

    async def produce(source: str) -> None:
        for n in range(50):
            await channel.put([ev(source, n)])

    async def consume() -> None:
        while True:
            try:
                got.extend(await channel.get())
            except trio.EndOfChannel:
                return
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as outer:
        outer.start_soon(consume)
        async with trio.open_nursery() as producers:
            for source in "abcd":
                producers.start_soon(produce, source)
        channel.close()
    assert len(got) == 4 * 50
    for source in "abcd":
        assert [r.seq for r in got if type(r) is Event and r.source == source] == list(range(50))
    assert channel.dropped == 0


def test_offer_adds_without_waiting_while_there_is_room() -> None:
    channel = SinkChannel(4, Overflow.BLOCK)
    assert channel.offer([ev("a", 1), ev("a", 2)])
    assert channel.offer([ev("a", 3), ev("a", 4)])
    assert len(channel) == 4


def test_offer_refuses_a_batch_a_full_block_channel_would_wait_for() -> None:
    channel = SinkChannel(4, Overflow.BLOCK)
    assert channel.offer([ev("a", n) for n in range(3)])
    assert not channel.offer([ev("a", 3), ev("a", 4)])
    assert len(channel) == 3  # nothing of the refused batch went in
    assert channel.dropped == 0


@pytest.mark.parametrize("overflow", [Overflow.DROP_OLDEST, Overflow.DROP_NEWEST, Overflow.LATEST])
def test_offer_never_refuses_under_a_dropping_policy(overflow: Overflow) -> None:
    channel = SinkChannel(2, overflow)
    assert all(channel.offer([ev("a", n)]) for n in range(5))
    assert len(channel) <= 2
    assert channel.dropped == 3 if overflow is not Overflow.LATEST else channel.dropped == 4


def test_offer_refuses_once_closed() -> None:
    channel = SinkChannel(4, Overflow.DROP_OLDEST)
    channel.close()
    assert not channel.offer([ev("a", 1)])
    assert len(channel) == 0


async def test_reader_waiting_is_true_only_while_get_is_parked() -> None:
    channel = SinkChannel(4, Overflow.BLOCK)
    got: list[Record] = []
    async with trio.open_nursery() as nursery:

        async def consume() -> None:
            got.extend(await channel.get())

        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        assert channel.reader_waiting
        assert channel.offer([ev("a", 1)])
        assert not channel.reader_waiting  # woken: the next offer wakes nobody
        assert channel.offer([ev("a", 2)])
    assert [r.seq for r in got if isinstance(r, Event)] == [1, 2]


def big(source: str, n: int, size: int = 100_000) -> Event:
    return Event.from_bytes(source, "t", "message", str(n), b'"' + b"x" * size + b'"', 0.0, n)


async def test_block_is_bounded_in_bytes_as_well_as_records() -> None:
    """Big events and a slow sink: the buffer holds at most ~max_bytes."""
    channel = SinkChannel(10_000, Overflow.BLOCK, max_bytes=1_000_000)
    peak = 0
    got: list[Record] = []
    async with trio.open_nursery() as nursery:

        async def consume() -> None:
            while True:
                try:
                    got.extend(await channel.get())
                except trio.EndOfChannel:
                    return
                await trio.lowlevel.checkpoint()  # a slow sink: one batch per turn

        async def produce() -> None:
            nonlocal peak
            for n in range(100):
                await channel.put([big("a", n)])
                peak = max(peak, len(channel))
            channel.close()

        nursery.start_soon(produce)
        nursery.start_soon(consume)
    assert [r.seq for r in got if isinstance(r, Event)] == list(range(100))
    assert peak <= 10  # 10 x ~100 kB, not 10,000 records
    assert channel.dropped == 0


def test_drop_oldest_keeps_within_bytes_and_keeps_statuses() -> None:
    channel = SinkChannel(10_000, Overflow.DROP_OLDEST, max_bytes=500_000)
    channel.offer([st("a")])
    for n in range(20):
        assert channel.offer([big("a", n)])
    assert channel.bytes <= 500_000 + 100_200
    assert channel.dropped >= 14
    assert any(isinstance(r, Status) for r in channel._buffer)


def test_a_batch_bigger_than_max_bytes_enters_an_empty_block_channel() -> None:
    channel = SinkChannel(100, Overflow.BLOCK, max_bytes=1_000)
    assert channel.offer([big("a", 1)])  # never refused for good
    assert not channel.offer([big("a", 2)])  # the next one waits for room


async def test_emit_counts_the_bytes_of_a_batch() -> None:
    from mux_core.records import batch_bytes
    from mux_core.transport import ResumeState, Session, SharedResources

    sent: list[object] = []

    async def send(batch: object) -> None:
        sent.append(batch)

    session = Session(
        source="s",
        transport="t",
        resume=ResumeState(),
        connect_timeout=1,
        shared=SharedResources(),
        send=send,
        attempt=1,
    )
    await session.emit([("message", None, b"x" * 1000), ("message", None, b"[1]")])
    (batch,) = sent
    assert 1003 < batch_bytes(batch) < 1003 + 2 * 400  # type: ignore[arg-type]
    assert batch_bytes([ev("a", 1), st("a")]) > 0
