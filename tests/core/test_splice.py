"""The splice of ``mux run --workers``: records that cross as bytes and stay bytes.

A worker's events reach the parent as an ``E`` frame; the parent hands them
on as an :class:`EncodedBatch` that a ``block`` sink's channel keeps whole and
:func:`encode_jsonl` returns as it came. These tests pin each piece: the
batch (same bytes, same records when looked at, decoded once), the channel
(both bounds, order, the other policies), the frames (events, other records,
an alert's batch whole) and the reader that cuts a pipe's bytes into frames
wherever the reads split them.
"""

from __future__ import annotations

import pytest
import trio

from mux_core._run.channel import SplicingChannel
from mux_core._run.worker_link import (
    EVENTS,
    RECORDS,
    RUNS_HEAD,
    FrameReader,
    FrameTooLong,
    frame,
    uplink_frames,
)
from mux_core.records import (
    Alert,
    EncodedBatch,
    Event,
    Quality,
    Record,
    Severity,
    State,
    Status,
    decode_jsonl_lines,
    encode_jsonl,
)
from mux_core.sink import Overflow


def ev(source: str, n: int) -> Event:
    return Event(source, "sse", "message", str(n), {"n": n, "nan": 1.5}, 1.0 + n, n)


def st(source: str, state: State = State.CONNECTED) -> Status:
    return Status(source, "sse", state, 1, None, "up", 2.0)


def encoded(records: list[Record]) -> EncodedBatch:
    return EncodedBatch(encode_jsonl(records), len(records))


def test_an_encoded_batch_is_its_bytes_and_its_records() -> None:
    records: list[Record] = [ev("a", 1), ev("b", 1), ev("a", 2)]
    batch = encoded(records)
    assert encode_jsonl(batch) is batch.jsonl
    assert len(batch) == 3
    assert list(batch) == records
    assert batch[1] == records[1]
    assert batch.records() is batch.records()  # decoded once, then shared


def test_join_splices_parts_and_decodes_each_once() -> None:
    first, second = [ev("a", 1), ev("a", 2)], [ev("b", 7)]
    a, b = encoded(list(first)), EncodedBatch(encode_jsonl(second), 1, (("b", "sse", 1),))
    loose = st("c")
    joined = EncodedBatch.join([a, loose, b])
    assert joined.jsonl == encode_jsonl([*first, loose, *second])
    assert len(joined) == 4
    assert joined.runs == ()  # a part without runs: unknown
    a.records()
    assert list(joined) == [*first, loose, *second]
    assert joined.records()[0] is a.records()[0]  # a's decode was reused
    known = EncodedBatch.join([b, loose])
    assert known.runs == (("b", "sse", 1), ("c", "sse", 1))


async def test_a_block_channel_keeps_encoded_batches_whole_within_both_bounds() -> None:
    channel = SplicingChannel(10, Overflow.BLOCK, max_bytes=10_000_000)
    first = encoded([ev("a", n) for n in range(1, 7)])
    assert channel.offer(first)
    assert len(channel) == 6
    second = encoded([ev("a", n) for n in range(7, 13)])
    assert not channel.offer(second)  # 12 records > 10: it waits
    got = await channel.get()
    assert got is first  # one encoded batch comes out as it went in
    assert len(channel) == 0
    await channel.put(second)
    assert channel.offer([st("a")])
    got = await channel.get()
    assert isinstance(got, EncodedBatch)
    assert encode_jsonl(got) == second.jsonl + encode_jsonl([st("a")])
    assert [r.seq for r in got if type(r) is Event] == list(range(7, 13))
    assert channel.entered == 13


async def test_a_full_block_channel_makes_the_putter_wait_until_the_sink_takes() -> None:
    channel = SplicingChannel(4, Overflow.BLOCK, max_bytes=10_000_000)
    batches = [encoded([ev("a", n), ev("a", n + 1), ev("a", n + 2)]) for n in range(0, 30, 3)]
    got: list[Record] = []
    most = 0

    async def consume() -> None:
        nonlocal most
        while True:
            try:
                batch = await channel.get()
            except trio.EndOfChannel:
                return
            most = max(most, len(batch))
            got.extend(batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        for batch in batches:
            await channel.put(batch)
            assert len(channel) <= 4 or len(channel) == 3  # one batch enters an empty buffer
        channel.close()
    assert [r.seq for r in got if type(r) is Event] == list(range(30))
    assert most <= 4


async def test_the_byte_bound_holds_for_encoded_batches() -> None:
    batch = encoded([ev("a", n) for n in range(100)])
    channel = SplicingChannel(10_000, Overflow.BLOCK, max_bytes=batch.nbytes + 10)
    assert channel.offer(batch)
    assert not channel.offer(encoded([ev("a", 100)]))
    assert channel.bytes == batch.nbytes


@pytest.mark.parametrize("policy", [Overflow.DROP_OLDEST, Overflow.LATEST])
async def test_other_policies_decode_and_drop_record_by_record(policy: Overflow) -> None:
    channel = SplicingChannel(5, policy)
    await channel.put(encoded([ev("a", n) for n in range(1, 9)]))
    got = await channel.get()
    assert all(type(r) is Event for r in got)
    assert [r.seq for r in got if type(r) is Event][-1] == 8
    assert channel.dropped > 0


def _frames(data: bytes) -> list[tuple[bytes, bytes]]:
    return FrameReader(1 << 20).feed(data)


def test_a_batch_of_events_is_one_events_frame_with_its_runs() -> None:
    batch: list[Record] = [ev("a", 1), ev("a", 2), ev("b", 5), ev("a", 3)]
    ((kind, payload),) = _frames(uplink_frames(batch))
    assert kind == EVENTS
    (size,) = RUNS_HEAD.unpack_from(payload)
    runs = payload[RUNS_HEAD.size : RUNS_HEAD.size + size]
    assert runs == b'[["a","sse",2,2,"2"],["b","sse",1,5,"5"],["a","sse",1,3,"3"]]'
    assert payload[RUNS_HEAD.size + size :] == encode_jsonl(batch)


def test_statuses_and_quality_go_as_records_between_events() -> None:
    quality = Quality("a", "sse", 10.0, 1.0, 0, None, 3, 0, None, 4.0)
    batch: list[Record] = [st("a"), ev("a", 1), ev("a", 2), quality, ev("a", 3)]
    kinds = [kind for kind, _ in _frames(uplink_frames(batch))]
    assert kinds == [RECORDS, EVENTS, RECORDS, EVENTS]


def test_a_batch_with_an_alert_goes_whole_as_records() -> None:
    alert = Alert("a", "sse", "nonfinite", Severity.CRITICAL, "loss is NaN", 2, 3.0)
    batch: list[Record] = [ev("a", 1), ev("a", 2), alert]
    ((kind, payload),) = _frames(uplink_frames(batch))
    assert kind == RECORDS
    assert list(decode_jsonl_lines(payload)[0]) == batch


def test_the_reader_finds_every_frame_however_the_reads_cut_them() -> None:
    stream = b"".join(
        [
            uplink_frames([ev("a", n) for n in range(1, 40)]),
            frame({"positions": {"a": ["sse", "39", None, 39]}}),
            uplink_frames([st("a"), ev("a", 40)]),
        ]
    )
    whole = _frames(stream)
    assert len(whole) == 4
    for step in (1, 2, 3, 7, 64, 1000):
        reader = FrameReader(1 << 20)
        got = []
        for at in range(0, len(stream), step):
            got.extend(reader.feed(stream[at : at + step]))
        assert got == whole, step


def test_a_frame_longer_than_allowed_is_refused_before_it_is_gathered() -> None:
    reader = FrameReader(100)
    data = frame({"x": "y" * 200})
    with pytest.raises(FrameTooLong):
        reader.feed(data[:5])


async def test_workers_are_never_forked_from_a_running_event_loop() -> None:
    """A fork inside trio would share its epoll and wake-up descriptors: refused."""
    from mux_core._run.worker_fork import can_fork, fork_workers

    assert not can_fork()
    assert fork_workers(2, lambda index, up, down: 0) is None
