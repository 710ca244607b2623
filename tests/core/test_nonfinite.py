"""NaN, Infinity and -Infinity are data: written as the bare literals, read back as floats.

Python's ``json.dumps`` writes them (trainers send them when a loss
diverges); msgspec would write ``null``. Every path a payload takes to a
JSON Lines line is covered: bytes kept as received, a value decoded on
access, a value a transport or a processor built in Python, numpy values,
and a line read back by ``decode_jsonl`` (what ``mux replay`` and the
redis-stream relay read).
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import numpy as np
import pytest

from mux_core.payload import keep_raw, keep_value
from mux_core.records import (
    Event,
    Quality,
    RecordDecodeError,
    decode_jsonl,
    encode_data,
    encode_jsonl,
)
from mux_core.transport import RawEvent, ResumeState, Session, SharedResources

NAN_PAYLOAD = b'{"step": 4100, "loss": NaN, "hi": Infinity, "lo": -Infinity}'


def _line_data(line: bytes) -> Any:
    return json.loads(line)["data"]


def _is_nan_loss(data: Any) -> bool:
    return (
        math.isnan(data["loss"])
        and data["hi"] == math.inf
        and data["lo"] == -math.inf
        and data["step"] == 4100
    )


def test_a_payload_with_literals_is_kept_as_received_and_spliced() -> None:
    event = Event.from_bytes("s", "sse", "metric", "1", NAN_PAYLOAD, 1.0, 1)
    assert event.raw == NAN_PAYLOAD  # kept as the bytes received
    line = encode_jsonl([event])
    assert b'"data":' + NAN_PAYLOAD + b',"received_at"' in line
    assert _is_nan_loss(_line_data(line))
    assert encode_data(event) == NAN_PAYLOAD


def test_reading_data_gives_floats_and_leaves_the_bytes_for_the_file() -> None:
    event = Event.from_bytes("s", "sse", "metric", "1", NAN_PAYLOAD, 1.0, 1)
    assert _is_nan_loss(event.data)
    assert type(event.data["loss"]) is float
    assert event.raw == NAN_PAYLOAD  # not replaced by the decoded value
    assert b"NaN" in encode_jsonl([event]) and b"null" not in encode_jsonl([event])


def test_a_strict_json_payload_is_still_decoded_once() -> None:
    event = Event.from_bytes("s", "sse", "metric", "1", b'{"loss": 0.5}', 1.0, 1)
    assert event.data is event.data
    assert event.raw is None


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        (b"NaN", b"NaN"),
        (b"[1, -Infinity]", b"[1, -Infinity]"),
        (b'{"loss": 1e999}', b'{"loss": 1e999}'),  # msgspec refuses it; json.loads: inf
        (b'{"loss": NaN,\n"step": 1}', b'{"loss":NaN,"step":1}'),  # one line again
        (b"NaN soup", None),  # not JSON at all: text
    ],
)
def test_payloads_with_literals_are_kept_as_json_bytes(raw: bytes, kept: bytes | None) -> None:
    payload = keep_raw(raw)
    if kept is None:
        assert payload == raw.decode()
    else:
        assert type(payload) is msgspec.Raw and bytes(payload) == kept


def test_a_payload_with_a_line_break_still_gets_the_literal() -> None:
    event = Event("s", "sse", "m", None, keep_raw(b'{"loss": NaN,\n"step": 1}'), 1.0, 1)
    line = encode_jsonl([event])
    assert line.count(b"\n") == 1
    assert b'"loss":NaN' in line
    assert math.isnan(_line_data(line)["loss"])


def test_keep_value_turns_a_value_with_a_nan_into_its_json_with_literals() -> None:
    finite = {"loss": 0.5, "tags": ["a"], "n": None}
    assert keep_value(finite) is finite  # nothing to do: the value itself
    kept = keep_value({"loss": math.nan, "nested": [{"x": -math.inf}, (1.0, math.inf)]})
    assert type(kept) is msgspec.Raw
    assert bytes(kept) == b'{"loss":NaN,"nested":[{"x":-Infinity},[1.0,Infinity]]}'
    assert keep_value(math.nan) is not None and bytes(keep_value(math.nan)) == b"NaN"
    deep: Any = [math.nan]
    for _ in range(5000):
        deep = [deep]
    assert keep_value(deep) is deep  # too deep to look at: left to the encoder's fallback


def test_numpy_values_are_written_with_literals() -> None:
    payload = {"losses": np.array([0.5, np.nan, np.inf]), "last": np.float64("-inf")}
    line = encode_jsonl([Event("s", "x", "m", None, payload, 1.0, 1)])
    assert b'"losses":[0.5,NaN,Infinity]' in line
    assert b'"last":-Infinity' in line


class _Values:
    """A transport that hands decoded values, as a msgpack or REST client would."""

    def __init__(self) -> None:
        self.sent: list[list[Event]] = []

    async def send(self, batch: Any) -> bool:
        self.sent.append(list(batch))
        return False


async def test_session_emit_keeps_a_transports_value_with_a_nan_as_json() -> None:
    values = _Values()
    session = Session(
        source="s",
        transport="rest",
        resume=ResumeState(),
        connect_timeout=5,
        shared=SharedResources(),
        send=values.send,
        attempt=1,
    )
    items: list[RawEvent] = [
        ("metric", "1", {"step": 1, "loss": math.nan}),
        ("metric", "2", {"step": 2, "loss": 0.5}),
    ]
    await session.emit(items)
    nan_event, finite_event = values.sent[0]
    assert nan_event.raw == b'{"step":1,"loss":NaN}'
    assert math.isnan(nan_event.data["loss"])
    assert finite_event.raw is None and finite_event.data == {"step": 2, "loss": 0.5}
    lines = encode_jsonl(values.sent[0]).splitlines()
    assert b'"data":{"step":1,"loss":NaN}' in lines[0]


# -- reading a file back ---------------------------------------------------------------


def test_a_line_with_literals_reads_back_byte_for_byte() -> None:
    written = encode_jsonl([Event.from_bytes("s", "sse", "metric", "7", NAN_PAYLOAD, 2.5, 7)])
    event = decode_jsonl(written)
    assert isinstance(event, Event)
    assert (event.source, event.id, event.received_at, event.seq) == ("s", "7", 2.5, 7)
    assert _is_nan_loss(event.data)
    assert encode_jsonl([event]) == written  # a replay writes what it read


def test_a_line_read_back_when_its_data_cannot_be_cut_out() -> None:
    """Keys in another order than mux writes them: the data is taken as a value."""
    line = (
        b'{"type":"event","received_at":1.0,"seq":3,"source":"s","transport":"sse",'
        b'"event":"m","id":null,"data":{"loss":-Infinity}}'
    )
    event = decode_jsonl(line)
    assert isinstance(event, Event) and event.data == {"loss": -math.inf}
    assert b'"data":{"loss":-Infinity}' in encode_jsonl([event])


def test_other_records_with_literals_read_back() -> None:
    line = (
        b'{"type":"quality","source":"a","transport":"sse","window":60.0,"uptime":1.0,'
        b'"reconnects":0,"blind_max":null,"events":5,"gaps":0,"lag_p99":Infinity,"at":1.0}'
    )
    quality = decode_jsonl(line)
    assert isinstance(quality, Quality) and quality.lag_p99 == math.inf


@pytest.mark.parametrize(
    "line",
    [
        b"NaN",
        b'{"type":"event","source":"s","data":NaN}',  # keys missing
        b'{"type":"event","source":"s","transport":"t","event":"m","id":null,'
        b'"data":NaN,"received_at":"soon","seq":1}',  # a wrong type
        b'{"type":"nonsense","x":Infinity}',
    ],
)
def test_a_line_with_literals_that_is_not_a_record_is_still_an_error(line: bytes) -> None:
    with pytest.raises(RecordDecodeError):
        decode_jsonl(line)
