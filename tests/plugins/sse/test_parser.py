"""The SSE parser against the WHATWG event-stream rules.

Cases follow the HTML spec's examples and the WPT ``eventsource/format-*``
tests (written here from the rules, not copied). A literal, per-character
transcription of the spec serves as the reference for property tests: any
stream, split anywhere, must give the reference's events.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mux_sse import SseParser

BOM = "\ufeff".encode()


def parse(data: bytes | list[bytes], **kwargs: Any) -> tuple[list[tuple[str, str, str]], SseParser]:
    parser = SseParser(**kwargs)
    reads = [data] if isinstance(data, bytes) else data
    events = [event for chunk in reads for event in parser.feed(chunk)]
    return events, parser


def datas(data: bytes | list[bytes]) -> list[str]:
    return [d for _, _, d in parse(data)[0]]


# -- the spec's examples ------------------------------------------------------


def test_spec_example_multiline_data_joined_with_lf() -> None:
    assert datas(b"data: YHOO\ndata: +2\ndata: 10\n\n") == ["YHOO\n+2\n10"]


def test_spec_example_ids_comments_and_unterminated_last_event() -> None:
    stream = (
        b": test stream\n\ndata: first event\nid: 1\n\n"
        b"data:second event\nid\n\ndata:  third event\n"
    )
    events, parser = parse(stream)
    assert events == [("message", "1", "first event"), ("message", "", "second event")]
    assert parser.last_event_id == ""


def test_spec_example_empty_data_lines() -> None:
    assert datas(b"data\n\ndata\ndata\n\ndata:") == ["", "\n"]


def test_spec_example_one_leading_space_is_optional() -> None:
    assert datas(b"data:test\n\ndata: test\n\n") == ["test", "test"]


# -- BOM ----------------------------------------------------------------------


def test_bom_at_start_is_stripped() -> None:
    assert datas(BOM + b"data: 1\n\n") == ["1"]


def test_second_bom_is_part_of_the_field_name() -> None:
    assert datas(BOM + BOM + b"data: 1\n\ndata: 2\n\n") == ["2"]


def test_bom_split_across_reads() -> None:
    assert datas([b"\xef", b"\xbb", b"\xbfdata: x\n\n"]) == ["x"]
    assert datas([b"\xef\xbb", b"\xbf", b"data: y\n\n"]) == ["y"]


def test_bom_later_in_stream_is_not_stripped() -> None:
    assert datas(b"data: a\n\n" + BOM + b"data: b\n\n") == ["a"]


def test_bom_prefix_that_is_not_a_bom() -> None:
    assert datas([b"\xef\xbb", b"Xdata: z\n\ndata: w\n\n"]) == ["w"]
    assert datas([b"\xef\xbb\xbe", b"\n\ndata: v\n\n"]) == ["v"]


# -- lines and fields ---------------------------------------------------------


def test_comments_are_ignored_everywhere() -> None:
    stream = b":\n: hello\ndata: 1\n:: two colons\ndata: 2\n:\n\n"
    assert datas(stream) == ["1\n2"]


def test_field_parsing_is_exact() -> None:
    stream = (
        b"data:\x00\ndata:  2\rData:1\ndata\x00:2\ndata:1\r\x00data:4\n"
        b"da-ta:3\rdata_5\ndata:3\rdata:\r\n data:32\ndata:4\n\n"
    )
    assert datas(stream) == ["\x00\n 2\n1\n3\n\n4"]


def test_field_without_colon_has_empty_value() -> None:
    events, _ = parse(b"data\nevent\n\n")
    assert events == [("message", "", "")]


def test_only_one_leading_space_is_removed() -> None:
    assert datas(b"data:   three\n\n") == ["  three"]
    assert datas(b"data:\tx\n\n") == ["\tx"]


def test_data_may_contain_colons() -> None:
    assert datas(b'data: a:b: c\ndata: {"k": 1}\n\n') == ['a:b: c\n{"k": 1}']


def test_unknown_fields_are_ignored() -> None:
    events, parser = parse(b"foo: bar\nDATA: x\nId: 3\ndata: ok\nevents: no\n\n")
    assert events == [("message", "", "ok")]
    assert parser.last_event_id == ""


def test_newlines_cr_lf_crlf_mixed() -> None:
    assert datas(b"data: a\rdata: b\ndata: c\r\n\r\ndata: d\r\rdata: e\n\r\n") == [
        "a\nb\nc",
        "d",
        "e",
    ]


def test_crlf_split_across_reads_is_one_line_end() -> None:
    # "data: a" CR | LF "data: b" CR LF CR | LF: one event with two lines.
    assert datas([b"data: a\r", b"\ndata: b\r\n\r", b"\n"]) == ["a\nb"]
    # A CR then an empty read then the LF.
    assert datas([b"data: a\r", b"", b"\n", b"\n"]) == ["a"]


def test_lone_cr_at_end_of_read_ends_the_line() -> None:
    events, _ = parse([b"data: a\r\r"])
    assert events == [("message", "", "a")]


# -- event type and dispatch --------------------------------------------------


def test_event_type_applies_to_one_event_only() -> None:
    events, _ = parse(b"event: add\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n")
    assert [kind for kind, _, _ in events] == ["add", "message", "message"]


def test_event_without_data_is_not_dispatched_and_resets_type() -> None:
    events, _ = parse(b"event: lonely\n\ndata: x\n\n")
    assert events == [("message", "", "x")]


def test_unterminated_last_event_is_discarded() -> None:
    events, parser = parse(b"data: kept\n\nid: 9\ndata: lost\n")
    assert events == [("message", "", "kept")]
    assert parser.last_event_id == ""


# -- ids ----------------------------------------------------------------------


def test_last_event_id_persists_across_events() -> None:
    events, _ = parse(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\ndata: d\n\n")
    assert [id_ for _, id_, _ in events] == ["1", "1", "2", "2"]


def test_id_after_data_in_same_event_counts() -> None:
    events, _ = parse(b"data: a\nid: 7\n\n")
    assert events == [("message", "7", "a")]


def test_id_only_event_updates_last_event_id() -> None:
    events, parser = parse(b"id: 5\n\n")
    assert events == []
    assert parser.last_event_id == "5"
    assert parser.feed(b"data: x\n\n") == [("message", "5", "x")]


def test_empty_id_resets_last_event_id() -> None:
    events, parser = parse(b"id: 5\ndata: a\n\nid\ndata: b\n\n")
    assert [id_ for _, id_, _ in events] == ["5", ""]
    assert parser.last_event_id == ""


def test_id_with_null_is_ignored() -> None:
    events, parser = parse(b"id: 1\n\nid: a\x00b\ndata: x\n\n")
    assert events == [("message", "1", "x")]
    assert parser.last_event_id == "1"


def test_seeded_last_event_id_applies_until_replaced() -> None:
    events, _ = parse(b"data: a\n\nid: 11\ndata: b\n\n", last_event_id="10")
    assert [id_ for _, id_, _ in events] == ["10", "11"]


# -- retry --------------------------------------------------------------------


def test_retry_digits_in_milliseconds_reported_in_seconds() -> None:
    _, parser = parse(b"retry: 2500\n")
    assert parser.retry == 2.5


def test_retry_bogus_values_are_ignored() -> None:
    for value in [b"10x", b" 500", b"-1", b"", b"1.5", b"\xd9\xa1\xd9\xa2", b"1e3", b"0x10"]:
        _, parser = parse(b"retry: 1000\n\nretry: " + value + b"\n\n")
        assert parser.retry == 1.0, value
    _, parser = parse(b"retry\n\n")
    assert parser.retry is None


def test_retry_with_absurd_digit_counts_is_ignored_like_a_non_number() -> None:
    for digits in (10, 400, 4300, 5000, 100_000):  # int() refuses more than 4,300 digits
        _, parser = parse(b"retry: 2000\n\nretry: " + b"9" * digits + b"\n\n")
        assert parser.retry == 2.0, digits


def test_retry_of_nine_digits_counts_and_leading_zeros_do_not() -> None:
    _, parser = parse(b"retry: 999999999\n")
    assert parser.retry == 999999.999
    _, parser = parse(b"retry: " + b"0" * 5000 + b"1500\n")
    assert parser.retry == 1.5


# -- id length ----------------------------------------------------------------


def test_an_id_longer_than_max_id_bytes_is_ignored_and_counted() -> None:
    stream = b"id: 1\ndata: a\n\nid: " + b"x" * 11 + b"\ndata: b\n\ndata: c\n\n"
    for reads in ([stream], [bytes([b]) for b in stream]):  # the fast path and the slow one
        events, parser = parse(reads, max_id_bytes=10)
        assert events == [("message", "1", "a"), ("message", "1", "b"), ("message", "1", "c")]
        assert parser.long_ids == 1
        assert parser.last_event_id == "1"


def test_an_id_of_exactly_max_id_bytes_is_taken() -> None:
    events, parser = parse("id: ü23\ndata: a\n\n".encode(), max_id_bytes=4)  # 4 bytes
    assert events == [("message", "ü23", "a")]
    assert parser.long_ids == 0


def test_max_id_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_id_bytes must be positive"):
        SseParser(max_id_bytes=0)


# -- UTF-8 --------------------------------------------------------------------


def test_multibyte_character_split_across_reads() -> None:
    euro = "€".encode()
    assert datas([b"data: " + euro[:1], euro[1:2], euro[2:] + b"!\n\n"]) == ["€!"]


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert datas(b"data: a\xffb\xe2\x82\n\n") == ["a\ufffdb\ufffd"]
    events, _ = parse(b"event: t\xff\ndata: x\n\n")
    assert events == [("t\ufffd", "", "x")]


# -- size limit ---------------------------------------------------------------


def test_oversized_event_is_skipped_and_parsing_resumes() -> None:
    big = b"data: " + b"x" * 200 + b"\n"
    events, parser = parse(
        b"data: a\n\nid: 3\n" + big + b"data: y\n\ndata: b\n\n", max_event_bytes=100
    )
    assert [d for _, _, d in events] == ["a", "b"]
    assert parser.skipped == 1
    assert parser.last_event_id == ""  # the skipped event's id is dropped with it


def test_oversized_event_of_many_small_lines_across_reads() -> None:
    reads = [b"data: 0123456789\n"] * 20 + [b"\n", b"data: after\n\n"]
    events, parser = parse(reads, max_event_bytes=100)
    assert [d for _, _, d in events] == ["after"]
    assert parser.skipped == 1


def test_line_that_never_ends_is_dropped_with_bounded_memory() -> None:
    parser = SseParser(max_event_bytes=1000)
    chunk = b"x" * 4096
    assert parser.feed(b"data: ") == []
    for _ in range(2000):  # 8 MB of one line
        assert parser.feed(chunk) == []
    assert parser.skipped == 1
    assert sum(len(part) for part in parser._tail) < 1000
    assert parser.feed(b"\ndata: still same event\n\ndata: next\n\n") == [("message", "", "next")]
    assert parser.skipped == 1


def test_event_exactly_at_the_limit_is_kept() -> None:
    line = b"data: " + b"z" * 10  # 16 bytes + LF = 17
    events, parser = parse(line + b"\n\n", max_event_bytes=17)
    assert len(events) == 1
    events, parser = parse(line + b"\n\n", max_event_bytes=16)
    assert events == [] and parser.skipped == 1


# -- properties: a literal reference, and split invariance ---------------------


def reference(
    stream: bytes, last_id: str = ""
) -> tuple[list[tuple[str, str, str]], str, float | None]:
    """The spec's algorithm, transcribed character by character."""
    text = stream.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char in "\r\n":
            lines.append("".join(current))
            current = []
            if char == "\r" and text[i + 1 : i + 2] == "\n":
                i += 1
        else:
            current.append(char)
        i += 1
    events: list[tuple[str, str, str]] = []
    data, kind, id_buffer, retry = "", "", last_id, None
    for line in lines:
        if line == "":
            last_id = id_buffer
            if data:
                events.append((kind or "message", last_id, data[:-1]))
            data, kind = "", ""
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            name, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        if name == "data":
            data += value + "\n"
        elif name == "event":
            kind = value
        elif name == "id":
            if "\x00" not in value:
                id_buffer = value
        elif (
            name == "retry"
            and value
            and all(c in "0123456789" for c in value)
            and len(value.lstrip("0")) <= 9  # mux: more digits are ignored (MAX_RETRY_DIGITS)
        ):
            retry = int(value) / 1000
    return events, last_id, retry


_NAMES = [b"data", b"event", b"id", b"retry", b"", b"Data", b"dat", b"data ", BOM + b"data"]
_SEPS = [b":", b": ", b":  ", b""]
_VALUE = [
    b"x",
    b"42",
    b"1500",
    b"\x00",
    b" ",
    b":",
    b"{}",
    b"\xe2\x82\xac",
    b"\xe2\x82",
    b"\xff",
    BOM,
]
_ENDS = [b"\n", b"\r", b"\r\n", b"\n\n", b"\r\n\r\n", b"\r\r", b"\n\r"]

_line = st.tuples(
    st.sampled_from(_NAMES),
    st.sampled_from(_SEPS),
    st.lists(st.sampled_from(_VALUE), max_size=4).map(b"".join),
    st.sampled_from(_ENDS),
).map(b"".join)


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Event streams of plausible lines with every awkward byte the rules mention."""
    stream = b"".join(draw(st.lists(_line, max_size=14)))
    if draw(st.booleans()):
        stream = BOM + stream
    if draw(st.booleans()):
        stream = stream[: draw(st.integers(0, len(stream)))]  # cut anywhere: unterminated end
    return stream


@st.composite
def split_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    stream = draw(streams())
    points = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=10))))
    bounds = [0, *points, len(stream)]
    return stream, [stream[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=500, deadline=None)
@given(case=split_streams())
def test_matches_reference_for_any_split(case: tuple[bytes, list[bytes]]) -> None:
    stream, reads = case
    expected, last_id, retry = reference(stream, "s")
    for records in (False, True):
        events, parser = parse(reads, last_event_id="s", records=records)
        assert events == expected
        assert parser.last_event_id == last_id
        assert parser.retry == retry


@settings(max_examples=300, deadline=None)
@given(case=split_streams(), limit=st.integers(min_value=1, max_value=40))
def test_size_limit_is_independent_of_read_boundaries(
    case: tuple[bytes, list[bytes]], limit: int
) -> None:
    stream, reads = case
    whole, whole_parser = parse(stream, max_event_bytes=limit)
    for records in (False, True):
        pieces, piece_parser = parse(reads, max_event_bytes=limit, records=records)
        assert pieces == whole
        assert piece_parser.last_event_id == whole_parser.last_event_id
        assert piece_parser.skipped == whole_parser.skipped


@settings(max_examples=300, deadline=None)
@given(case=split_streams(), limit=st.integers(min_value=1, max_value=8))
def test_id_limit_is_independent_of_read_boundaries(
    case: tuple[bytes, list[bytes]], limit: int
) -> None:
    stream, reads = case
    whole, whole_parser = parse(stream, max_id_bytes=limit)
    pieces, piece_parser = parse(reads, max_id_bytes=limit)
    assert pieces == whole
    assert piece_parser.last_event_id == whole_parser.last_event_id
    assert piece_parser.long_ids == whole_parser.long_ids


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["message", "tick"]), st.text(max_size=20)), max_size=20))
def test_round_trip_of_well_formed_events(events: list[tuple[str, str]]) -> None:
    stream = b""
    for kind, data in events:
        lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        stream += f"event: {kind}\n".encode() + b"".join(
            f"data: {line}\n".encode() for line in lines
        )
        stream += b"\n"
    got = datas(stream)
    assert got == [d.replace("\r\n", "\n").replace("\r", "\n") for _, d in events]


_simple_event = st.lists(
    st.sampled_from([b"{}", b"1", b"x", b"\xe2\x82\xac", b" ", b":"]), max_size=3
).map(lambda parts: b"data: " + b"".join(parts) + b"\n\n")


@st.composite
def mostly_simple_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """Runs of single-line ``data: `` events (the common stream) among any lines."""
    parts = draw(st.lists(st.one_of(_simple_event, _simple_event, _line), max_size=30))
    stream = b"".join(parts)
    points = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=6))))
    bounds = [0, *points, len(stream)]
    return stream, [stream[a:b] for a, b in itertools.pairwise(bounds)]


def _as_text(events: list[tuple[str, Any, Any]]) -> list[tuple[str, Any, str]]:
    return [(kind, id_, data.decode("utf-8", "replace")) for kind, id_, data in events]


@settings(max_examples=500, deadline=None)
@given(case=st.one_of(split_streams(), mostly_simple_streams()), limit=st.integers(5, 60))
def test_raw_mode_hands_out_the_bytes_text_mode_decodes(
    case: tuple[bytes, list[bytes]], limit: int
) -> None:
    """json_data=True (what the transport uses: the data as raw bytes) gives
    exactly the events of text mode, as bytes, for any split and size limit."""
    _, reads = case
    raw, raw_parser = parse(reads, json_data=True, empty_id=None, max_event_bytes=limit)
    text, text_parser = parse(reads, empty_id=None, max_event_bytes=limit)
    assert _as_text(raw) == text
    assert raw_parser.last_event_id == text_parser.last_event_id
    assert raw_parser.skipped == text_parser.skipped


_web_event = st.tuples(
    st.sampled_from([b"e-1", b"e-22", b"", b"\x00", b"e-4444444444", b" e-5", b"e-6\r"]),
    st.lists(
        st.sampled_from([b"{}", b"1", b"", b" y", b"data: z", b"\xe2\x82", b"retry: 7"]),
        min_size=1,
        max_size=4,
    ),
).map(lambda t: b"id: " + t[0] + b"\n" + b"".join(b"data: " + d + b"\n" for d in t[1]) + b"\n")


@st.composite
def web_sink_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """Events of an id line and data lines (a mux web sink's records, several to
    an event) among any lines, split anywhere."""
    parts = draw(st.lists(st.one_of(_web_event, _web_event, _line), max_size=20))
    stream = b"".join(parts)
    points = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=8))))
    bounds = [0, *points, len(stream)]
    return stream, [stream[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=500, deadline=None)
@example(  # found by this test: the event after one begun in an earlier read kept the old id
    case=(
        b"retry:  \ndata:42\nid: e-22\ndata: {}\n\nid: e-22\ndata: {}\n\n",
        [b"retry:  \ndata:42\nid: e-22\ndata: {}\n", b"\nid: e-22\ndata: {}\n\n"],
    ),
    limit=5,
    id_limit=1,
    records=True,
)
@given(
    case=web_sink_streams(),
    limit=st.integers(5, 80),
    id_limit=st.integers(1, 8),
    records=st.booleans(),
)
def test_id_and_data_events_match_the_reference_for_any_split(
    case: tuple[bytes, list[bytes]], limit: int, id_limit: int, records: bool
) -> None:
    """The fast way through an ``id:`` + ``data:`` lines event (and an event cut
    by a read, held whole until it ends) gives the spec's events, ids and retry,
    and the same skips, for any split, size and id limit -- by pieces, and with
    ``records=True`` (the relay's way: by lines)."""
    stream, reads = case
    expected, last_id, retry = reference(stream, "s")
    events, parser = parse(reads, last_event_id="s", records=records)
    assert events == expected
    assert parser.last_event_id == last_id
    assert parser.retry == retry
    whole, whole_parser = parse(stream, max_event_bytes=limit, max_id_bytes=id_limit)
    pieces, piece_parser = parse(
        reads, max_event_bytes=limit, max_id_bytes=id_limit, records=records
    )
    raw, raw_parser = parse(
        reads, json_data=True, max_event_bytes=limit, max_id_bytes=id_limit, records=records
    )
    assert pieces == whole == _as_text(raw)
    assert piece_parser.skipped == whole_parser.skipped == raw_parser.skipped
    assert piece_parser.long_ids == whole_parser.long_ids == raw_parser.long_ids
    assert piece_parser.last_event_id == whole_parser.last_event_id


@pytest.mark.parametrize("records", [False, True])
def test_a_huge_event_of_many_lines_is_held_only_up_to_hold_bytes(records: bool) -> None:
    """An event cut by reads is held whole only while it is small: a 4 MiB event
    of short lines fed 4 KiB at a time is read line by line past HOLD_BYTES,
    so no read joins more than HOLD_BYTES again (no time quadratic in its size)."""
    from mux_sse._parser import HOLD_BYTES

    line = b"data: " + b"x" * 90 + b"\n"
    stream = b"id: big\n" + line * (4 * 1024 * 1024 // len(line)) + b"\n" + b"data: after\n\n"
    parser = SseParser(records=records)
    events = []
    held = []
    for i in range(0, len(stream), 4096):
        events += parser.feed(stream[i : i + 4096])
        held.append(parser._held)  # the bytes the next read joins again
    assert max(held) <= HOLD_BYTES
    assert [(kind, id_, len(data)) for kind, id_, data in events] == [
        ("message", "big", (len(line) - 6) * (4 * 1024 * 1024 // len(line)) - 1),
        ("message", "big", 5),
    ]
