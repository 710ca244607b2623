"""The records (Event, Status, Alert), lazy payloads and the JSON Lines format.

An Event built from raw payload bytes (what transports hand over) must be
indistinguishable from one built with the decoded data: sinks compare,
hash and read ``data``; the file must hold exactly the records of
docs/architecture.md (Records and the JSON Lines format),
with a JSON payload spliced as it came and anything else as a string.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat
from typing import Any

import msgspec
import pytest

from mux_core.payload import JsonFields, decode_payload, is_json, keep_raw
from mux_core.records import (
    Alert,
    Event,
    Record,
    RecordDecodeError,
    Severity,
    State,
    Status,
    decode_jsonl,
    decode_jsonl_lines,
    encode_jsonl,
    record_to_dict,
)
from mux_core.transport import (
    RawEvent,
    ResumeState,
    Session,
    SharedResources,
)

_FIELDS = ("s", "rest", "message", "42", {"step": 42, "loss": 0.31}, 1764250000.123, 17)
_RAW = b'{"step": 42, "loss": 0.31}'


def _lines(records: Sequence[Record]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in encode_jsonl(records).splitlines()]


def test_an_event_with_raw_bytes_equals_and_hashes_like_one_with_the_data() -> None:
    raw = Event(*_FIELDS[:4], keep_raw(_RAW), *_FIELDS[5:])
    decoded = Event(*_FIELDS)
    assert raw.raw == _RAW and decoded.raw is None
    assert raw == decoded and decoded == raw
    assert not raw != decoded  # noqa: SIM202 -- __ne__ is its own method
    assert raw.data == {"step": 42, "loss": 0.31}
    assert record_to_dict(raw) == record_to_dict(decoded)
    # As with any frozen record: a list or dict payload makes the event unhashable.
    with pytest.raises(TypeError):
        hash(Event("s", "rest", "message", "7", keep_raw(b"[1, 2]"), 2.5, 7))
    text = Event("s", "sse", "message", None, keep_raw(b"plain text"), 1.0, 1)
    assert hash(text) == hash(Event("s", "sse", "message", None, "plain text", 1.0, 1))
    assert {text: 1}[Event("s", "sse", "message", None, "plain text", 1.0, 1)] == 1


def test_data_is_decoded_once_and_cached() -> None:
    event = Event.from_bytes("s", "sse", "message", None, _RAW, 1.0, 1)
    before = encode_jsonl([event])
    assert event.raw == _RAW
    first = event.data
    assert event.data is first  # the same object: decoded once
    assert json.loads(encode_jsonl([event])) == json.loads(before)


def test_records_are_frozen_slotted_and_copyable() -> None:
    event = Event(*_FIELDS[:4], keep_raw(_RAW), *_FIELDS[5:])
    with pytest.raises(AttributeError):
        event.seq = 8  # type: ignore[misc]
    with pytest.raises(AttributeError):
        event.extra = 1  # type: ignore[attr-defined]
    assert not hasattr(event, "__dict__")
    assert pickle.loads(pickle.dumps(event)) == event
    assert copy.copy(event) == event
    assert msgspec.structs.replace(event, seq=99).seq == 99
    status = Status("s", "sse", State.CONNECTED, 1, None, "", 1.0)
    with pytest.raises(AttributeError):
        status.state = State.FAILED  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "data"),
    [
        (b'{"a": 1}', {"a": 1}),
        (b"[1, 2.5, null]", [1, 2.5, None]),
        (b'"a string"', "a string"),
        (b"42", 42),
        (b"not json at all", "not json at all"),
        (b"", ""),
        (b"\xff\xfe broken utf-8", "\ufffd\ufffd broken utf-8"),
        (b"123456789012345678901234567890", 123456789012345678901234567890),
    ],
)
def test_payloads_decode_as_json_when_they_are_json_else_as_text(raw: bytes, data: Any) -> None:
    assert decode_payload(raw) == data
    assert Event("s", "sse", "message", None, keep_raw(raw), 1.0, 1).data == data


def test_the_bare_literals_python_writes_are_numbers() -> None:
    data = decode_payload(b'{"loss": NaN, "hi": Infinity, "lo": -Infinity}')
    assert math.isnan(data["loss"]) and data["hi"] == math.inf and data["lo"] == -math.inf
    assert is_json(b'{"loss": NaN}')
    assert not is_json(b"NaN soup")
    assert decode_payload(b"1e999") == math.inf


def test_the_file_holds_exactly_the_design_keys() -> None:
    records: list[Record] = [
        Event("train", "sse", "metric", "42", keep_raw(b'{"step":42,"loss":0.31}'), 1.5, 17),
        Status("train", "sse", State.SERVER_UNAVAILABLE, 2, 1.7, "connection refused", 2.5),
        Alert("train", "sse", "nonfinite", Severity.CRITICAL, "loss is NaN", 4101, 3.0),
    ]
    event, status, alert = _lines(records)
    event_keys = ["type", "source", "transport", "event", "id", "data", "received_at", "seq"]
    assert list(event) == event_keys
    assert event == {
        "type": "event",
        "source": "train",
        "transport": "sse",
        "event": "metric",
        "id": "42",
        "data": {"step": 42, "loss": 0.31},
        "received_at": 1.5,
        "seq": 17,
    }
    assert status == {
        "type": "status",
        "source": "train",
        "transport": "sse",
        "state": "server_unavailable",
        "attempt": 2,
        "retry_in": 1.7,
        "detail": "connection refused",
        "at": 2.5,
    }
    alert_keys = ["type", "source", "transport", "rule", "severity", "message", "seq", "at"]
    assert list(alert) == alert_keys
    assert alert["severity"] == "critical"
    for record in records:
        assert _lines([record])[0] == json.loads(json.dumps(record_to_dict(record)))


def test_a_json_payload_is_spliced_byte_for_byte() -> None:
    raw = b'{"z":1,  "a":[1.10, 2e3]}'  # key order, spacing and number forms kept
    line = encode_jsonl([Event("s", "sse", "message", None, keep_raw(raw), 1.0, 1)])
    assert b'"data":' + raw + b',"received_at"' in line


@pytest.mark.parametrize(
    ("raw", "written"),
    [
        (b"plain text", "plain text"),
        (b'{"a":\n1}', {"a": 1}),  # valid JSON over two lines: re-encoded on one
        (b'{"a": "\xff"}', {"a": "\ufffd"}),  # invalid UTF-8 inside a string
        (b"{" * 5000 + b"}" * 5000, "{" * 5000 + "}" * 5000),  # too deep: text
        (b"[" * 300 + b"]" * 300, json.loads("[" * 300 + "]" * 300)),
    ],
    ids=["text", "newline", "bad-utf8", "very-deep", "deep-300"],
)
def test_odd_payloads_never_break_a_line_or_the_sink(raw: bytes, written: Any) -> None:
    batch = [
        Event("s", "sse", "message", None, keep_raw(raw), 1.0, 1),
        Event("s", "sse", "message", None, keep_raw(b"1"), 1.0, 2),
    ]
    data = encode_jsonl(batch)
    lines = data.splitlines()
    assert len(lines) == 2 and data.endswith(b"\n")
    assert json.loads(lines[0])["data"] == written
    assert json.loads(lines[1])["data"] == 1


def test_nan_and_infinity_literals_are_written_as_received() -> None:
    """Not null: NaN is data (tests/core/test_nonfinite.py has the rest)."""
    raw = b'{"loss": NaN, "hi": Infinity, "lo": -Infinity}'
    line = encode_jsonl([Event("s", "sse", "message", None, keep_raw(raw), 1.0, 1)])
    assert b'"data":' + raw + b',"received_at"' in line
    data = json.loads(line)["data"]
    assert math.isnan(data["loss"]) and data["hi"] == math.inf and data["lo"] == -math.inf


def test_decoded_data_that_cannot_be_encoded_is_written_as_text() -> None:
    deep: Any = []
    for _ in range(3000):
        deep = [deep]
    batch = [
        Event("s", "x", "message", None, deep, 1.0, 1),
        Event("s", "x", "message", None, {(1, 2): "tuple key"}, 1.0, 2),
        Event("s", "x", "message", None, {"ok": True}, 1.0, 3),
    ]
    lines = [json.loads(line) for line in encode_jsonl(batch).splitlines()]
    assert isinstance(lines[0]["data"], str)
    assert lines[1]["data"] == {"(1, 2)": "tuple key"}  # odd keys as their repr
    assert lines[2]["data"] == {"ok": True}


def test_a_line_decodes_back_to_an_equal_record() -> None:
    records: list[Record] = [
        Event("train", "sse", "metric", "42", keep_raw(b'{"step":42}'), 1.5, 17),
        Event("train", "sse", "metric", None, "text", 1.5, 18),
        Status("train", "sse", State.CONNECTED, 1, None, "", 2.5),
        Alert("train", "sse", "stall", Severity.WARNING, "no events for 60 s", None, 3.0),
    ]
    lines = encode_jsonl(records).splitlines()
    decoded = [decode_jsonl(line) for line in lines]
    assert decoded == records
    assert encode_jsonl(decoded) == encode_jsonl(records)
    assert isinstance(decoded[2], Status) and decoded[2].state is State.CONNECTED


def test_many_lines_decode_at_once_and_what_is_not_a_record_is_counted() -> None:
    records: list[Record] = [
        Event("train", "sse", "metric", "42", keep_raw(b'{"step":42}'), 1.5, 17),
        Status("train", "sse", State.CONNECTED, 1, None, "", 2.5),
        Event("eval", "ws", "message", None, "text", 1.5, 18),
    ]
    data = encode_jsonl(records)
    batch, bad = decode_jsonl_lines(data.rstrip(b"\n"))
    assert (list(batch), bad) == (records, 0)
    assert batch.nbytes >= len(data)  # sized from the bytes: a channel need not measure it
    # A line with a NaN literal, and one that is no record: line by line, the
    # one counted, the others kept in order.
    nan = Event("train", "sse", "metric", "43", keep_raw(b'{"loss":NaN}'), 1.6, 19)
    mixed = data + b"not a record\n" + encode_jsonl([nan]) + b"\n"
    batch, bad = decode_jsonl_lines(mixed)
    assert bad == 1
    assert [r.seq if type(r) is Event else None for r in batch] == [17, None, 18, 19]
    assert math.isnan(batch[-1].data["loss"])  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "line", [b"", b"{", b"[]", b'{"type": "event"}', b'{"type": "gossip", "source": "x"}']
)
def test_a_line_that_is_not_a_record_is_a_readable_error(line: bytes) -> None:
    with pytest.raises(RecordDecodeError) as caught:
        decode_jsonl(line)
    assert str(caught.value)


def test_json_fields_reads_ids_without_the_rest() -> None:
    fields = JsonFields(["id", "type"])
    assert fields.read(b'{"id": 7, "type": "metric", "loss": [1, 2]}') == (7, "metric")
    assert fields.read(b'{"loss": 1}') == (None, None)
    assert fields.read(b"[1, 2]") is None
    assert fields.read(b"not json") is None
    assert fields.read(b'{"id": 12345678901234567890123, "loss": NaN}') == (
        12345678901234567890123,
        None,
    )


class _Sent:
    """A Session's ``send``: keeps each batch, which must hold only Events."""

    def __init__(self) -> None:
        self.batches: list[list[Event]] = []

    async def send(self, batch: Sequence[Record]) -> None:
        events = [r for r in batch if type(r) is Event]
        assert len(events) == len(batch)
        self.batches.append(events)


def _items() -> Iterator[RawEvent]:
    """Mixed ids (the last one None) from a generator: any iterable is accepted."""
    yield ("message", "1", b'{"n": 1}')
    yield ("tick", None, "text")
    yield ("message", "3", {"n": 3})
    yield ("message", None, None)


async def test_emit_numbers_stamps_and_remembers_the_last_id() -> None:
    sent, resume = _Sent(), ResumeState(last_id="0", seq=10)
    session = Session(
        source="src",
        transport="rest",
        resume=resume,
        connect_timeout=5,
        shared=SharedResources(),
        send=sent.send,
        attempt=1,
    )
    await session.emit(_items())
    await session.emit([])
    await session.emit(iter(()))
    columns: Iterable[RawEvent] = zip(repeat("message"), ["5", "6"], [b'{"n": 5}', {"n": 6}])
    await session.emit(columns)
    await session.emit([("message", None, 7)])
    assert session.events == 7
    assert [len(b) for b in sent.batches] == [4, 2, 1]  # empty reads send nothing
    events = [r for b in sent.batches for r in b]
    assert events[0].raw == b'{"n": 1}'  # bytes are kept, not decoded
    assert [(e.source, e.transport) for e in events] == [("src", "rest")] * 7
    assert [(e.event, e.id, e.data, e.seq) for e in events] == [
        ("message", "1", {"n": 1}, 11),
        ("tick", None, "text", 12),
        ("message", "3", {"n": 3}, 13),
        ("message", None, None, 14),
        ("message", "5", {"n": 5}, 15),
        ("message", "6", {"n": 6}, 16),
        ("message", None, 7, 17),
    ]
    stamps = [{e.received_at for e in b} for b in sent.batches]
    assert all(len(s) == 1 for s in stamps)
    assert stamps[0].pop() <= stamps[1].pop() <= stamps[2].pop()
    assert resume.last_id == "6"
    assert resume.seq == 17
