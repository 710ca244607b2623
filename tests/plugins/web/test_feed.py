"""The web sink's feed without a server: how records are framed, kept and
handed to a viewer that opens late (a piece of history at a time)."""

from __future__ import annotations

import orjson
import trio

from mux_core.payload import keep_raw
from mux_core.records import Event, Record, State, Status, decode_jsonl_lines
from mux_sse import SseParser
from mux_web._feed import EVENT_BYTES, HISTORY_CHUNK, Feed, Viewer


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


def _drain_backlog(feed: Feed, viewer: Viewer, parser: SseParser) -> tuple[list[Record], list[str]]:
    records: list[Record] = []
    ids: list[str] = []
    while (piece := feed.history(viewer)) is not None:
        got, got_ids = _read(parser, piece)
        records.extend(got)
        ids.extend(got_ids)
    return records, ids


async def test_a_viewer_resumes_after_any_events_id_with_nothing_missed_or_repeated() -> None:
    # Records go out many to an event, live and in history pieces (framed
    # differently): whichever event's id a viewer last saw -- the number of
    # that event's last record -- it resumes with exactly the records after it.
    feed = Feed(points=10_000, viewer_buffer=1 << 30, epoch="e")
    live_viewer, _ = feed.join(None)
    status = Status("train", "sse", State.CONNECTED, 1, None, "", 0.5)
    published: list[Record] = [status]
    feed.publish([status])
    for first in range(1, 2101, 700):  # batches of several events each
        batch = _events(first, first + 699, pad=300)
        published.extend(batch)
        feed.publish(batch)
    live_parser = SseParser()
    live: list[Record] = []
    ids: list[str] = []
    while live_viewer.chunks:
        chunk = await live_viewer.take()
        assert chunk is not None
        got, got_ids = _read(live_parser, chunk)
        live.extend(got)
        ids.extend(got_ids)
    assert live == published
    late_viewer, _ = feed.join(None)
    history, history_ids = _drain_backlog(feed, late_viewer, SseParser())
    assert history == published
    ids += history_ids
    assert len(set(ids)) > 20  # many events, framed two ways
    for event_id in sorted(set(ids), key=lambda i: int(i.rpartition("-")[2])):
        number = int(event_id.rpartition("-")[2])
        viewer, reset = feed.join(event_id)
        assert not reset
        resumed, _ = _drain_backlog(feed, viewer, SseParser(last_event_id=event_id))
        assert resumed == published[number:], event_id  # record k is numbered k
        feed.leave(viewer)
    # Resumed at the newest id: nothing to catch up on, the next batch live.
    viewer, reset = feed.join(f"e-{feed.seq}")
    assert not reset and viewer.backlog is None
    feed.publish(_events(2101, 2110))
    chunk = await viewer.take()
    assert chunk is not None and _read(SseParser(), chunk)[0] == _events(2101, 2110)


async def test_a_viewer_whose_id_was_trimmed_past_starts_over_with_the_kept_history() -> None:
    # Resuming is exact while nothing after the viewer's id was trimmed; once
    # something was, the records between are gone: the viewer is told
    # ("reset") and sent the whole kept history again -- including kept
    # records it had already (here the status #1: the statuses are kept
    # apart from the events), which a browser clears its view for.
    feed = Feed(points=1000, viewer_buffer=1 << 30, epoch="e")
    status = Status("train", "sse", State.CONNECTED, 1, None, "", 0.5)
    feed.publish([status])  # number 1
    feed.publish(_events(1, 1000, pad=50))  # numbers 2 .. 1001
    viewer, _ = feed.join(None)
    _, ids = _drain_backlog(feed, viewer, SseParser())
    feed.leave(viewer)
    seen = next(i for i in ids if int(i.rpartition("-")[2]) > 600)
    number = int(seen.rpartition("-")[2])
    feed.publish(_events(1001, 1000 + number - 1))  # trims the events numbered 2 .. number
    assert feed.trimmed == number  # the viewer's last record is trimmed, nothing after it
    viewer, reset = feed.join(seen)
    assert not reset
    resumed, _ = _drain_backlog(feed, viewer, SseParser())
    seqs = [r.seq if isinstance(r, Event) else None for r in resumed]
    assert seqs == list(range(number, 1000 + number))  # step = number - 1
    feed.leave(viewer)

    feed.publish(_events(1000 + number, 1000 + number + 9))  # trims 10 more after it
    assert feed.trimmed > number
    viewer, reset = feed.join(seen)
    assert reset
    kept, _ = _drain_backlog(feed, viewer, SseParser())
    assert kept[0] == status  # had it already: sent again after the reset
    seqs = [r.seq if isinstance(r, Event) else None for r in kept[1:]]
    assert seqs == list(range(number + 10, 1000 + number + 10))  # the newest `points`
