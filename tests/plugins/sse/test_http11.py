"""mux_sse's own HTTP/1.1 path: body framing, redirects, compression, TLS, proxies.

The framing readers are checked against the RFC's grammar with hypothesis
(any split of the wire bytes gives the same payload); the connection itself
against real servers on 127.0.0.1: plain trio servers writing exact bytes,
one of them behind TLS with a certificate from a throwaway CA (trustme).
"""

from __future__ import annotations

import functools
import gzip
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from mux_core.errors import Disconnected, Failed, ServerUnavailable
from mux_core.http._body import (
    ChunkedBody,
    CloseDelimitedBody,
    LengthBody,
    ProtocolError,
    body_reader,
)
from mux_core.records import Event
from mux_core.testing import run_one_session
from mux_sse import SseOptions, SseTransport

# -- framing ------------------------------------------------------------------


def chunked(pieces: list[bytes], *, extension: bytes = b"", trailer: bytes = b"") -> bytes:
    out = [b"%x%s\r\n%s\r\n" % (len(p), extension, p) for p in pieces if p]
    return b"".join(out) + b"0\r\n" + trailer + b"\r\n"


def feed_split(reader: Any, wire: bytes, cuts: list[int]) -> bytes:
    points = sorted({c % (len(wire) + 1) for c in cuts})
    out = []
    start = 0
    for point in [*points, len(wire)]:
        out.append(reader.feed(wire[start:point]))
        start = point
    return b"".join(out)


@given(
    pieces=st.lists(st.binary(max_size=40), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    extension=st.sampled_from([b"", b";name=value", b" ; x"]),
    trailer=st.sampled_from([b"", b"X-Trailer: yes\r\n"]),
)
def test_chunked_any_split_gives_the_payload(
    pieces: list[bytes], cuts: list[int], extension: bytes, trailer: bytes
) -> None:
    reader = ChunkedBody()
    wire = chunked(pieces, extension=extension, trailer=trailer)
    assert feed_split(reader, wire, cuts) == b"".join(pieces)
    assert reader.done
    reader.end()  # complete: no error


def test_chunked_accepts_bare_lf_line_ends() -> None:
    reader = ChunkedBody()
    assert reader.feed(b"5\nhello\n0\n\n") == b"hello"
    assert reader.done


def test_chunked_ignores_bytes_after_the_body() -> None:
    reader = ChunkedBody()
    assert reader.feed(b"2\r\nab\r\n0\r\n\r\nGARBAGE") == b"ab"
    assert reader.done


@pytest.mark.parametrize(
    "wire",
    [b"zz\r\n", b"\r\n", b"-1\r\n", b"0x5\r\nhello\r\n", b"2\r\nabc\r\n", b"1" * 5000],
)
def test_chunked_rejects_what_is_not_chunked(wire: bytes) -> None:
    reader = ChunkedBody()
    with pytest.raises(ProtocolError):
        reader.feed(wire)  # returns the good bytes before the break, if any,
        reader.feed(b"")  # and raises on the next feed


def test_chunked_cut_short_is_an_error_at_end() -> None:
    reader = ChunkedBody()
    assert reader.feed(b"a\r\nhello") == b"hello"
    with pytest.raises(ProtocolError, match="middle of a chunked body"):
        reader.end()


@given(cuts=st.lists(st.integers(min_value=0, max_value=100), max_size=6))
def test_length_body_stops_at_its_length(cuts: list[int]) -> None:
    reader = LengthBody(10)
    assert feed_split(reader, b"0123456789EXTRA", cuts) == b"0123456789"
    assert reader.done


def test_length_body_cut_short_is_an_error_at_end() -> None:
    reader = LengthBody(10)
    reader.feed(b"01234")
    with pytest.raises(ProtocolError, match="5 bytes"):
        reader.end()


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        ({"transfer-encoding": "chunked"}, ChunkedBody),
        ({"transfer-encoding": "gzip, chunked", "content-length": "5"}, ChunkedBody),
        ({"transfer-encoding": "gzip"}, CloseDelimitedBody),
        ({"content-length": "12"}, LengthBody),
        ({}, CloseDelimitedBody),
    ],
)
def test_framing_follows_rfc_9112(headers: dict[str, str], kind: type) -> None:
    assert type(body_reader(headers)) is kind


def test_invalid_content_length_is_an_error() -> None:
    with pytest.raises(ProtocolError, match="Content-Length"):
        body_reader({"content-length": "12abc"})


# -- real servers -------------------------------------------------------------

Handler = Callable[["Request", trio.abc.Stream], Awaitable[None]]


@attrs.frozen
class Request:
    line: str
    headers: dict[str, str]


@attrs.define
class RawServer:
    """Records each request (line + headers) and answers through ``handler``."""

    handler: Handler
    tls: ssl.SSLContext | None = None
    requests: list[Request] = attrs.Factory(list)
    port: int = 0

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn: trio.abc.Stream = stream
        try:
            if self.tls is not None:
                conn = trio.SSLStream(stream, self.tls, server_side=True)
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                chunk = await conn.receive_some()
                if not chunk:
                    return
                buffer += chunk
            line, *rest = buffer.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in rest)}
            request = Request(line, headers)
            self.requests.append(request)
            await self.handler(request, conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
            pass
        finally:
            await trio.aclose_forcefully(conn)


async def start(
    nursery: trio.Nursery, handler: Handler, tls: ssl.SSLContext | None = None
) -> RawServer:
    server = RawServer(handler, tls)
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, server._serve, 0, host="127.0.0.1")
    )
    server.port = listeners[0].socket.getsockname()[1]
    return server


def answer(*parts: bytes) -> Handler:
    async def handler(_: Request, stream: trio.abc.Stream) -> None:
        for part in parts:
            await stream.send_all(part)

    return handler


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"


async def session(url: str, **options: Any) -> tuple[BaseException | None, list[Any]]:
    with trio.fail_after(10):
        result = await run_one_session(SseTransport(SseOptions(url=url, **options)))
    return result.error, [r.data for r in result.records if isinstance(r, Event)]


async def test_chunked_stream_with_extensions_and_split_chunks(nursery: trio.Nursery) -> None:
    body = chunked([b"data: 1\n\n", b"data: ", b"2\n\ndata: 3\n\n"], extension=b";x=y")
    server = await start(
        nursery,
        answer(STREAM_HEAD + b"Transfer-Encoding: chunked\r\n\r\n", body[:7], body[7:]),
    )
    error, data = await session(server.base + "/events")
    assert data == [1, 2, 3]
    assert isinstance(error, Disconnected)
    assert error.detail == "server closed the stream"


async def test_content_length_body_ends_the_stream_at_its_length(nursery: trio.Nursery) -> None:
    body = b"data: 1\n\ndata: 2\n\n"
    server = await start(
        nursery,
        answer(STREAM_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body + b"data: 3\n\n"),
    )
    error, data = await session(server.base + "/events")
    assert data == [1, 2]
    assert isinstance(error, Disconnected)


async def test_gzip_from_a_server_that_compresses_anyway(nursery: trio.Nursery) -> None:
    compressed = gzip.compress(b"data: 1\n\ndata: 2\n\n")
    server = await start(
        nursery,
        answer(STREAM_HEAD + b"Content-Encoding: gzip\r\n\r\n", compressed[:10], compressed[10:]),
    )
    _, data = await session(server.base + "/events")
    assert data == [1, 2]
    assert server.requests[0].headers["accept-encoding"] == "identity"


async def test_unknown_content_encoding_is_not_parsed_as_events(nursery: trio.Nursery) -> None:
    server = await start(nursery, answer(STREAM_HEAD + b"Content-Encoding: br\r\n\r\nxyz"))
    error, data = await session(server.base + "/events")
    assert data == []
    assert isinstance(error, ServerUnavailable)
    assert "Content-Encoding 'br'" in error.detail


async def test_informational_response_before_the_stream(nursery: trio.Nursery) -> None:
    server = await start(
        nursery, answer(b"HTTP/1.1 103 Early Hints\r\n\r\n" + STREAM_HEAD + b"\r\ndata: ok\n\n")
    )
    _, data = await session(server.base + "/events")
    assert data == ["ok"]


async def test_request_line_and_headers(nursery: trio.Nursery) -> None:
    server = await start(nursery, answer(STREAM_HEAD + b"\r\n"))
    await session(server.base + "/events?run=7", headers={"User-Agent": "trainer-watch"})
    request = server.requests[0]
    assert request.line == "GET /events?run=7 HTTP/1.1"
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["user-agent"] == "trainer-watch"  # the config wins over mux's


def redirect(location: str, status: bytes = b"302 Found") -> Handler:
    return answer(
        b"HTTP/1.1 %s\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % (status, location.encode())
    )


async def test_redirects_are_followed_and_credentials_stay_with_their_origin(
    nursery: trio.Nursery,
) -> None:
    target = await start(nursery, answer(STREAM_HEAD + b"\r\ndata: there\n\n"))
    hop = await start(nursery, redirect(target.base + "/final", b"307 Temporary Redirect"))

    async def same_origin(request: Request, stream: trio.abc.Stream) -> None:
        if request.line.startswith("GET /start"):
            await redirect("/next")(request, stream)
        else:
            await redirect(hop.base + "/hop")(request, stream)

    first = await start(nursery, same_origin)
    headers = {"Authorization": "Bearer secret"}
    _, data = await session(first.base + "/start", headers=headers)
    assert data == ["there"]
    assert [r.line for r in first.requests] == ["GET /start HTTP/1.1", "GET /next HTTP/1.1"]
    assert all(r.headers["authorization"] == "Bearer secret" for r in first.requests)
    assert "authorization" not in hop.requests[0].headers
    assert "authorization" not in target.requests[0].headers
    assert target.requests[0].line == "GET /final HTTP/1.1"


async def test_a_redirect_loop_fails(nursery: trio.Nursery) -> None:
    server = await start(nursery, redirect("/again"))
    error, _ = await session(server.base + "/again")
    assert isinstance(error, Failed)
    assert error.detail == "more than 20 redirects"
    assert len(server.requests) == 21


async def test_a_redirect_to_another_scheme_fails(nursery: trio.Nursery) -> None:
    server = await start(nursery, redirect("ftp://127.0.0.1/x"))
    error, _ = await session(server.base + "/x")
    assert isinstance(error, Failed)
    assert "not an http(s) URL" in error.detail


# -- TLS ------------------------------------------------------------------------


@pytest.mark.usefixtures("trust_ca")
async def test_https_with_a_trusted_ca(
    nursery: trio.Nursery, tls_server_context: ssl.SSLContext
) -> None:
    server = await start(nursery, answer(STREAM_HEAD + b"\r\ndata: secure\n\n"), tls_server_context)
    error, data = await session(server.base + "/events")
    assert data == ["secure"]
    assert isinstance(error, Disconnected)


async def test_https_with_an_unknown_ca_is_a_tls_error(
    nursery: trio.Nursery, tls_server_context: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = await start(nursery, answer(STREAM_HEAD + b"\r\ndata: secure\n\n"), tls_server_context)
    error, data = await session(server.base + "/events")
    assert data == []
    assert isinstance(error, ServerUnavailable)
    assert error.detail.startswith("TLS certificate verify failed: unknown issuer")


async def test_https_without_verification(
    nursery: trio.Nursery, tls_server_context: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = await start(nursery, answer(STREAM_HEAD + b"\r\ndata: secure\n\n"), tls_server_context)
    _, data = await session(server.base + "/events", verify=False)
    assert data == ["secure"]


# -- proxies ----------------------------------------------------------------------


async def test_a_proxy_from_the_environment_is_used(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake proxy answers the absolute-form request itself: the stream's
    host does not even exist, so events can only have come through the proxy."""
    proxy = await start(nursery, answer(STREAM_HEAD + b"\r\ndata: proxied\n\n"))
    monkeypatch.setenv("HTTP_PROXY", proxy.base)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    _, data = await session("http://trainer.invalid:8888/events")
    assert data == ["proxied"]
    assert proxy.requests[0].line == "GET http://trainer.invalid:8888/events HTTP/1.1"


async def test_no_proxy_means_a_direct_connection(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = await start(nursery, answer(STREAM_HEAD + b"\r\ndata: proxied\n\n"))
    server = await start(nursery, answer(STREAM_HEAD + b"\r\ndata: direct\n\n"))
    monkeypatch.setenv("HTTP_PROXY", proxy.base)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    _, data = await session(server.base + "/events")
    assert data == ["direct"]
    assert proxy.requests == []
