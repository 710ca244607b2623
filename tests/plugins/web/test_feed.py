"""The web sink's feed without a server: how records are framed, kept and
handed to a viewer that opens late (a piece of history at a time)."""

from __future__ import annotations

import orjson
import trio

from mux_core.payload import keep_raw
from mux_core.records import Event, Record, State, Status, decode_jsonl_lines
from mux_sse import SseParser
from mux_web._feed import EVENT_BYTES, HISTORY_CHUNK, Feed


def _events(first: int, last: int, source: str = "train", pad: int = 0) -> list[Record]:
    return [
        Event(
            source,
            "sse",
            "message",
            str(i),
            keep_raw(orjson.dumps({"step": i, "pad": "x" * pad})),
            1.0 + i,
            i,
        )
        for i in range(first, last + 1)
    ]


def _read(parser: SseParser, data: bytes) -> tuple[list[Record], list[str]]:
    """The records in ``data`` (SSE events of JSON Lines) and the events' ids."""
    records: list[Record] = []
    ids: list[str] = []
    for kind, last_id, text in parser.feed(data):
        assert kind == "message"
        batch, bad = decode_jsonl_lines(text)
        assert bad == 0
        records.extend(batch)
        ids.append(last_id)
    return records, ids


async def test_records_go_many_to_an_event_numbered_by_their_last() -> None:
    feed = Feed(points=10_000, viewer_buffer=1 << 30, epoch="e")
    viewer, reset = feed.join(None)
    assert not reset and viewer.backlog is None  # nothing to catch up on
    batch = _events(1, 2000, pad=100)
    feed.publish(batch)
    chunk = await viewer.take()
    assert chunk is not None
    records, ids = _read(SseParser(), chunk)
    assert records == batch
    assert len(ids) > 1 and ids[-1] == "e-2000"  # several events, the last ends at 2000
    # Each event is at most EVENT_BYTES of records (plus one record and the field names).
    for event in chunk.split(b"\n\n")[:-1]:
        assert len(event) <= EVENT_BYTES + 300 + 7 * 400


async def test_a_late_viewer_gets_the_history_a_piece_at_a_time() -> None:
    feed = Feed(points=3000, viewer_buffer=1 << 30, epoch="e")
    status = Status("train", "sse", State.CONNECTED, 1, None, "", 0.5)
    history: list[Record] = [status, *_events(1, 3000, pad=1000)]  # ~3 MB
    feed.publish(history[:1000])
    feed.publish(history[1000:])
    viewer, _ = feed.join(None)
    parser = SseParser()
    got: list[Record] = []
    pieces = 0
    while (piece := feed.history(viewer)) is not None:
        # A piece is made only when the one before was taken: what the viewer
        # holds is one piece (and its queue), however long the history.
        assert len(piece) <= HISTORY_CHUNK + 1200 + 1200 // 100 * 7
        pieces += 1
        got.extend(_read(parser, piece)[0])
        if pieces == 3:
            # Published meanwhile: to the viewer's queue, not into the history it is sent.
            feed.publish(_events(3001, 3010, pad=1000))
            assert viewer.queued > 0
    assert pieces > 3000 * 1000 // HISTORY_CHUNK - 1
    assert got == history  # in order, nothing missed, nothing twice
    live = await viewer.take()
    assert live is not None and _read(parser, live)[0] == _events(3001, 3010, pad=1000)


async def test_history_trimmed_while_a_viewer_catches_up_is_skipped_not_resent() -> None:
    feed = Feed(points=1000, viewer_buffer=1 << 30, epoch="e")
    feed.publish(_events(1, 1000, pad=500))
    viewer, _ = feed.join(None)
    parser = SseParser()
    first = feed.history(viewer)
    assert first is not None
    got = _read(parser, first)[0]
    feed.publish(_events(1001, 1900, pad=500))  # trims 1..900 from the history
    while (piece := feed.history(viewer)) is not None:
        got.extend(_read(parser, piece)[0])
    live = await viewer.take()
    assert live is not None
    got.extend(_read(parser, live)[0])
    seqs = [r.seq for r in got if isinstance(r, Event)]
    assert seqs == sorted(set(seqs))  # in order, none twice
    assert seqs[-900:] == list(range(1001, 1901))  # the live ones all there
    assert set(range(901, 1001)) <= set(seqs)  # what was still kept, sent


async def test_a_viewer_that_falls_behind_is_dropped() -> None:
    feed = Feed(points=100, viewer_buffer=4096, epoch="e")
    viewer, _ = feed.join(None)
    feed.publish(_events(1, 10, pad=1000))  # a first batch fits whatever its size
    assert not viewer.dropped
    feed.publish(_events(11, 20, pad=1000))
    assert viewer.dropped and viewer not in feed.viewers and feed.dropped_viewers == 1
    with trio.fail_after(1):
        assert await viewer.take() is None
