"""What every sink has, as ranges: repeats recognised exactly, kept in a JSON cursor."""

import json

from mux_nats.delivered import MAX_RANGES, Delivered
from mux_nats.jetstream import JsMessage


def _message(seq: int, stored: int | None = None) -> JsMessage:
    stored = seq * 10 if stored is None else stored
    return JsMessage("ev.a", seq, stored, f"$JS.ACK.S.mux.1.{seq}.{seq}.{stored}.0", b"")


def test_ranges_merge_and_only_what_was_delivered_is_a_repeat() -> None:
    delivered = Delivered("S", "mux", "").adding(_message(n) for n in [1, 2, 3, 7, 5])
    delivered = delivered.adding([_message(4), _message(9)])
    assert delivered.ranges == ((1, 5, 50), (7, 7, 70), (9, 9, 90))
    assert [n for n in range(1, 11) if _message(n) in delivered] == [1, 2, 3, 4, 5, 7, 9]
    # Stored later under a sequence already seen: a new message (the stream lost its tail).
    assert _message(5, stored=500) not in delivered


def test_the_cursor_is_json_for_this_stream_consumer_and_filter_only() -> None:
    delivered = Delivered("S", "mux", "ev.>").adding(_message(n) for n in [1, 2, 4])
    cursor = json.loads(json.dumps(delivered.cursor()))  # as --state saves and loads it
    assert Delivered.of(cursor, stream="S", durable="mux", subject="ev.>") == delivered
    for other in [
        {"stream": "T", "durable": "mux", "subject": "ev.>"},
        {"stream": "S", "durable": "other", "subject": "ev.>"},
        {"stream": "S", "durable": "mux", "subject": "ev.a"},
    ]:
        assert Delivered.of(cursor, **other).ranges == ()
    assert (
        Delivered.of(
            {"for": ["S", "mux", ""], "delivered": [[1, "x", 2]]},
            stream="S",
            durable="mux",
            subject="",
        ).ranges
        == ()
    )
    assert Delivered.of(None, stream="S", durable="mux", subject="").ranges == ()


def test_the_newest_ranges_are_kept() -> None:
    scattered = Delivered("S", "mux", "").adding(_message(n) for n in range(0, 4 * MAX_RANGES, 2))
    assert len(scattered.ranges) == MAX_RANGES
    assert _message(4 * MAX_RANGES - 2) in scattered and _message(0) not in scattered
