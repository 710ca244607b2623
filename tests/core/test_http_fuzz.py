"""Fuzzing the HTTP readers with hypothesis (issue 10): whatever bytes a server
sends, in whatever split, the chunked reader, the decompressor and the
response-head reader either give a result or raise ProtocolError -- nothing
else -- and hold a bounded amount of memory. Then the polling client,
end to end over real sockets, with fuzzed responses.
"""

from __future__ import annotations

import gzip
import zlib

import httpx
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mux_core.http import HttpClient, ResponseTimeout
from mux_core.http._body import ChunkedBody, Decoder, LengthBody, ProtocolError, body_reader
from mux_core.http._http11 import MAX_HEAD_BYTES, HeadReader, ResponseHead, describe_protocol_error
from mux_core.testing import Hangup, Send, serve_hostile

from tests.helpers.hostile import LIBRARY_WORDING  # isort: skip

URL = httpx.URL("http://127.0.0.1:1/events")

# -- pieces a hostile server is made of ------------------------------------------------

chunk_size_lines = st.one_of(
    st.integers(0, 300).map(lambda n: b"%x" % n),
    st.sampled_from([b"zz", b"-1", b"0x5", b"", b"f" * 17, b"5;ext=1", b"5 ", b"\xff"]),
)
line_ends = st.sampled_from([b"\r\n", b"\n", b"\r", b""])


@st.composite
def chunked_wires(draw: st.DrawFn) -> bytes:
    """Chunked bodies, mostly well formed, with a mistake here and there."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 6))):
        size_line = draw(chunk_size_lines)
        data = draw(st.binary(max_size=300))
        parts += [size_line, draw(line_ends), data, draw(line_ends)]
    if draw(st.booleans()):
        parts.append(b"0\r\n" + draw(st.sampled_from([b"", b"X-T: 1\r\n"])) + b"\r\n")
    return b"".join(parts)


def splits(wire: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(wire) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(wire)]:
        pieces.append(wire[start:point])
        start = point
    return pieces


# -- the chunked reader -----------------------------------------------------------------


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(chunked_wires(), st.binary(max_size=2000)),
    st.lists(st.integers(0, 5000), max_size=10),
)
@example(b"5\r\nhello\r\nzz\r\n", [])
@example(b"1" * 5000, [])
@example(b"5\r\nhello" + b"\r" * 5000, [3])
def test_chunked_reader_only_raises_protocol_errors(wire: bytes, cuts: list[int]) -> None:
    reader = ChunkedBody()
    out = b""
    try:
        for piece in splits(wire, cuts):
            if reader.failed is not None:
                raise reader.failed  # what Http11Stream.receive does before reading on
            out += reader.feed(piece)
            assert len(reader._line) <= 4096 + len(piece)  # an unended line is bounded
        reader.end()
    except ProtocolError as exc:
        assert not LIBRARY_WORDING.search(str(exc)), str(exc)
    assert len(out) <= len(wire)


@given(st.lists(st.binary(min_size=1, max_size=50), max_size=6), st.binary(max_size=30))
def test_chunked_reader_returns_every_good_byte_before_garbage(
    pieces: list[bytes], garbage: bytes
) -> None:
    wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"zz" + garbage + b"\r\n"
    reader = ChunkedBody()
    try:
        out = reader.feed(wire)
    except ProtocolError:
        out = b""
    assert out == b"".join(pieces)
    assert reader.failed is not None or not pieces


@given(st.integers(0, 200), st.binary(max_size=400), st.lists(st.integers(0, 500), max_size=5))
def test_length_body_never_returns_more_than_its_length(
    length: int, wire: bytes, cuts: list[int]
) -> None:
    reader = LengthBody(length)
    out = b"".join(reader.feed(piece) for piece in splits(wire, cuts))
    assert len(out) == min(length, len(wire))


# -- the decompressor -------------------------------------------------------------------

compressed_bodies = st.one_of(
    st.binary(max_size=2000).map(gzip.compress),
    st.binary(max_size=2000).map(zlib.compress),
    st.binary(max_size=2000),  # garbage
    st.binary(max_size=2000).map(lambda b: gzip.compress(b)[: len(b) // 2]),  # cut short
)


@settings(max_examples=400)
@given(
    compressed_bodies,
    st.sampled_from(["gzip", "deflate"]),
    st.integers(1, 4096),
    st.lists(st.integers(0, 3000), max_size=6),
)
def test_decoder_output_is_bounded_per_call_and_errors_are_readable(
    body: bytes, coding: str, limit: int, cuts: list[int]
) -> None:
    decoder = Decoder(coding)
    try:
        for piece in splits(body, cuts):
            out = decoder.decompress(piece, limit)
            assert len(out) <= limit
            while decoder.pending:
                out = decoder.decompress(decoder.pending, limit)
                assert len(out) <= limit
    except ProtocolError as exc:
        assert str(exc) == f"the server sent an unreadable {coding} body"


def test_a_bomb_is_undone_a_piece_at_a_time() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), 9)
    decoder = Decoder("gzip")
    out = decoder.decompress(bomb, 1024 * 1024)
    pieces, total = 1, len(out)
    assert len(out) == 1024 * 1024
    while decoder.pending:
        total += len(decoder.decompress(decoder.pending, 1024 * 1024))
        pieces += 1
    assert total == 64 * 1024 * 1024 and pieces >= 64


# -- the response-head reader ------------------------------------------------------------

header_lines = st.one_of(
    st.sampled_from(
        [
            b"Content-Type: text/event-stream",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: gzip",
            b"Content-Length: 5",
            b"Content-Length: 1x",
            b"Content-Encoding: gzip",
            b"Content-Encoding: br",
            b"Connection: Upgrade",
            b"Upgrade: websocket",
            b"bad line",
            b" folded",
            b"X: \xff\xfe",
            b"X: a\x00b",
        ]
    ),
    st.binary(max_size=60),
)
status_lines = st.one_of(
    st.sampled_from(
        [
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 101 Switching Protocols",
            b"HTTP/1.1 100 Continue",
            b"HTTP/1.0 204 No Content",
            b"HTTP/2 200",
            b"HTTP/1.1 1000 X",
            b"HTTP/1.1 200",
            b"data: hello",
        ]
    ),
    st.binary(max_size=40),
)


@st.composite
def response_heads(draw: st.DrawFn) -> bytes:
    lines = [draw(status_lines), *draw(st.lists(header_lines, max_size=8))]
    end = draw(st.sampled_from([b"\r\n", b"\n"]))
    return end.join(lines) + end + end + draw(st.binary(max_size=50))


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(response_heads(), st.binary(max_size=500)),
    st.lists(st.integers(0, 600), max_size=8),
    st.booleans(),
)
@example(b"HTTP/1.1 100 Continue\r\n\r\n", [], True)
@example(b"HTTP/1.1 200 OK\r\nX: " + b"a" * (MAX_HEAD_BYTES + 10), [70000], False)
def test_head_reader_only_raises_protocol_errors(
    wire: bytes, cuts: list[int], closes: bool
) -> None:
    reader = HeadReader()
    reader.request_bytes(URL, [("Last-Event-ID", "é \x01")])
    pieces = splits(wire, cuts) + ([b""] if closes else [])
    head = None
    fed = b""
    try:
        for piece in pieces:
            if not piece and not closes:
                continue
            fed += piece
            head = reader.feed(piece)
            if head is not None:
                break
            assert len(reader.conn.trailing_data[0]) <= MAX_HEAD_BYTES + len(piece)
    except ProtocolError as exc:
        assert not LIBRARY_WORDING.search(str(exc)), str(exc)
        return
    if head is not None:
        assert isinstance(head, ResponseHead) and 100 <= head.status <= 999
        assert fed.endswith(reader.rest)  # the body bytes that came with the head


@given(st.binary(max_size=200))
def test_every_h11_message_is_described_in_words(noise: bytes) -> None:
    import h11

    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    try:
        conn.receive_data(noise)
        conn.receive_data(b"")
        while conn.next_event() not in (h11.NEED_DATA, h11.PAUSED):
            pass
    except h11.RemoteProtocolError as exc:
        assert not LIBRARY_WORDING.search(describe_protocol_error(exc))
    except RuntimeError:
        pass  # h11 refuses to read past the end: not reachable from mux


def test_framing_from_any_header_value_is_a_reader_or_a_protocol_error() -> None:
    for value in ["", "abc", "-1", "1,2", " 7 ", "٣", "99999999999999999999"]:
        try:
            body_reader({"content-length": value})
        except ProtocolError as exc:
            assert str(exc) == "the server sent an invalid Content-Length"


# -- the polling client over real sockets ---------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(response_heads(), st.binary(max_size=300)), chunked_wires())
def test_http_client_over_a_socket_only_raises_documented_errors(head: bytes, body: bytes) -> None:
    async def main() -> None:
        async with serve_hostile([Send(head + body), Hangup()]) as server:
            client = HttpClient()
            try:
                response = await client.get(
                    httpx.URL(server.url("/x")), timeout=5.0, max_body_bytes=100_000
                )
            except (ProtocolError, OSError, trio.BrokenResourceError) as exc:
                assert not LIBRARY_WORDING.search(str(exc)), str(exc)
            except ValueError as exc:  # a redirect to nowhere: Failed, readable
                assert "redirect" in str(exc)
            except ResponseTimeout:
                raise AssertionError("a closed connection must not time out") from None
            else:
                assert len(response.content) <= 100_000
            finally:
                await client.aclose()

    trio.run(main)
