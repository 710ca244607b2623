"""A keep-alive HTTP/1.1 client for polling: h11 over one trio connection per origin.

Why not httpx for this: a poll is one small ``GET`` answered by one page,
over and over on the same connection, and httpx's layers (the client,
httpcore's pool, its async generators) cost more CPU than parsing the page:
a ``GET`` + ``orjson.loads`` of a 1000-item page took ~900 µs of CPU through
httpx and ~500 µs here, of which ~250 µs is orjson (the page server of
benchmarks/bench_rest_throughput.py).

What :class:`HttpClient` does, and what httpx did for the ``rest`` transport:

* keeps the connection alive between requests (h11 ``start_next_cycle``)
  and drops it on ``Connection: close``, an HTTP/1.0 answer or any error;
* retries a request ONCE on a fresh connection when a reused one fails
  before a single byte of the response arrived -- servers close idle
  keep-alive connections whenever they like, and the client only learns so
  when it sends the next request (httpcore does the same);
* asks for ``gzip, deflate`` and decodes it (a page of JSON shrinks ~5x);
* follows up to 20 redirects, dropping credentials on the way to another
  origin;
* gives up after ``timeout`` seconds for the whole exchange;
* reads at most ``max_body_bytes`` of a body, before and after decompression
  (:class:`BodyTooLarge`): a page is held whole, so it must be bounded.

Errors: ``OSError`` / ``trio.BrokenResourceError`` (refused, reset, TLS:
``ssl.SSLError``), :class:`ProtocolError` (not HTTP, a body cut short, an
undecodable encoding, :class:`BodyTooLarge`), :class:`ResponseTimeout`, and
``ValueError`` for a
request that cannot be sent (an illegal header, a redirect loop or to a
non-http URL). Proxies are not spoken here: check :func:`proxy_for` and use
the shared httpx client when one applies.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import cast

import attrs
import h11
import httpx
import trio

from ._body import (
    DECODABLE,
    Decoder,
    ProtocolError,
    size_text,
)
from ._http11 import (
    MAX_HEAD_BYTES,
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    HeaderValue,
    describe_protocol_error,
    get_request_bytes,
    open_connection,
    origin,
    redirected,
    response_headers,
)

__all__ = ["BodyTooLarge", "HttpClient", "HttpResponse", "ResponseTimeout"]

#: Bytes asked for per read: what httpx asks for.
_READ_SIZE = 65536
#: Idle connections one client keeps (one per origin a redirect chain visits).
_MAX_IDLE = 4

TlsContextFactory = Callable[[], Awaitable[ssl.SSLContext]]


class ResponseTimeout(Exception):
    """No complete response arrived within the request's ``timeout``."""


class BodyTooLarge(ProtocolError):
    """The body (as sent, or decompressed) is larger than ``max_body_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the response body is larger than {size_text(limit)}")
        self.limit = limit


@attrs.frozen
class HttpResponse:
    """A complete response: status, headers (names lowercased) and the decoded body."""

    status: int
    reason: str
    headers: Mapping[str, str]
    #: The body with its Content-Encoding undone.
    content: bytes
    #: Where the response came from, after redirects.
    url: httpx.URL


class _StaleConnection(Exception):
    """A reused connection failed before the response began: the server had closed it."""


class HttpClient:
    """GET requests over kept-alive HTTP/1.1 connections; always :meth:`aclose`.

    ``tls_context`` is called (once per https connection) for the TLS client
    context, e.g. the run's :func:`shared_tls_context`; without it https
    URLs fail. Not for concurrent use: one request at a time.
    """

    def __init__(self, *, tls_context: TlsContextFactory | None = None) -> None:
        self._tls_context = tls_context
        self._idle: dict[tuple[str, str, int | None], _Connection] = {}

    async def get(
        self,
        url: httpx.URL,
        headers: Sequence[tuple[str, HeaderValue]] = (),
        *,
        timeout: float | None = None,
        max_body_bytes: int | None = None,
    ) -> HttpResponse:
        """``GET url`` with ``headers`` (Host and Accept-Encoding are added), redirects followed.

        A body larger than ``max_body_bytes`` (None: no limit), before or
        after decompression, raises :class:`BodyTooLarge` as soon as that is known.
        """
        limit = math.inf if max_body_bytes is None else max_body_bytes
        with trio.move_on_after(math.inf if timeout is None else timeout):
            return await self._get(url, headers, limit)
        raise ResponseTimeout(f"timed out: no complete response within {timeout:g} s")

    async def aclose(self) -> None:
        """Close every kept connection."""
        idle, self._idle = self._idle, {}
        for conn in idle.values():
            await conn.aclose()

    async def _get(
        self, url: httpx.URL, headers: Sequence[tuple[str, HeaderValue]], limit: float
    ) -> HttpResponse:
        names = {name.lower() for name, _ in headers}
        sent = list(headers)
        if "accept-encoding" not in names:
            sent.append(("Accept-Encoding", "gzip, deflate"))
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._exchange(url, sent, limit)
            location = response.headers.get("location")
            if response.status not in REDIRECT_STATUSES or location is None:
                return response
            url, sent = redirected(url, location, sent)
        raise ValueError(f"more than {MAX_REDIRECTS} redirects")

    async def _exchange(
        self, url: httpx.URL, headers: list[tuple[str, HeaderValue]], limit: float
    ) -> HttpResponse:
        """One request and its response, on a kept connection if there is one."""
        key = origin(url)
        conn = self._idle.pop(key, None)
        if conn is not None:
            try:
                return await self._send(conn, key, url, headers, limit)
            except _StaleConnection:
                pass  # closed while idle: once more, on a fresh connection
        tls = None
        if url.scheme == "https":
            if self._tls_context is None:
                raise ValueError(f"{url} needs TLS, and this client has no TLS context")
            tls = await self._tls_context()
        conn = _Connection(await open_connection(url, tls))
        return await self._send(conn, key, url, headers, limit)

    async def _send(
        self,
        conn: _Connection,
        key: tuple[str, str, int | None],
        url: httpx.URL,
        headers: list[tuple[str, HeaderValue]],
        limit: float,
    ) -> HttpResponse:
        try:
            response = await conn.get(url, headers, limit)
        except BaseException:
            await conn.aclose()  # its state is unknown: never reuse it
            raise
        if conn.next_cycle():
            if len(self._idle) >= _MAX_IDLE:
                oldest = next(iter(self._idle))
                await self._idle.pop(oldest).aclose()
            self._idle[key] = conn
        else:
            await conn.aclose()
        return response


class _Connection:
    """One HTTP/1.1 connection: h11 keeps track of where each exchange stands."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        #: True once a response has been read: a failure may then mean "closed while idle".
        self._reused = False

    async def get(
        self, url: httpx.URL, headers: list[tuple[str, HeaderValue]], limit: float
    ) -> HttpResponse:
        conn = self._h11
        data = get_request_bytes(conn, url, headers)
        received = 0
        try:
            await self._stream.send_all(data)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    read = cast(bytes, await self._stream.receive_some(_READ_SIZE))
                    received += len(read)
                    conn.receive_data(read)
                elif isinstance(event, h11.Response):
                    break
                # else an InformationalResponse (1xx): wait for the real one.
        except (OSError, trio.BrokenResourceError, h11.RemoteProtocolError) as exc:
            if not received:
                if self._reused:
                    raise _StaleConnection from exc
                if isinstance(exc, h11.RemoteProtocolError):
                    raise ProtocolError("server disconnected without sending a response") from exc
            if isinstance(exc, h11.RemoteProtocolError):
                raise ProtocolError(describe_protocol_error(exc)) from exc
            raise
        head = event
        headers_ = response_headers(head)
        length = headers_.get("content-length", "").split(",")[0].strip()
        has_body = head.status_code not in (204, 304)  # (1xx never get here)
        if has_body and length.isascii() and length.isdigit() and int(length) > limit:
            raise BodyTooLarge(int(limit))  # said so up front: not a byte read
        body = await self._read_body(limit)
        encoding = headers_.get("content-encoding")
        if encoding and body:
            body = _decode(body, encoding, limit)
        return HttpResponse(head.status_code, head.reason.decode("latin-1"), headers_, body, url)

    async def _read_body(self, limit: float) -> bytes:
        conn = self._h11
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(cast(bytes, await self._stream.receive_some(_READ_SIZE)))
                elif type(event) is h11.Data:
                    chunks.append(event.data)
                    size += len(event.data)
                    if size > limit:
                        raise BodyTooLarge(int(limit))
                elif type(event) is h11.EndOfMessage:
                    break
                elif event is h11.PAUSED or type(event) is h11.ConnectionClosed:
                    raise ProtocolError("the server sent an invalid HTTP response")
        except h11.RemoteProtocolError as exc:
            raise ProtocolError(describe_protocol_error(exc)) from exc
        return b"".join(chunks)  # bytes, also when h11 handed out one bytearray

    def next_cycle(self) -> bool:
        """Ready the connection for the next request; False when it must be closed.

        h11 leaves the DONE state for MUST_CLOSE on ``Connection: close``, an
        HTTP/1.0 response, or a body that ran to the end of the connection.
        """
        conn = self._h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            self._reused = True
            return True
        return False

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)


def _decode(body: bytes, encoding: str, limit: float) -> bytes:
    """Undo ``Content-Encoding`` (codings applied in order, so undone in reverse),
    never producing more than ``limit`` bytes."""
    codings = [c.strip().lower() for c in encoding.split(",")]
    for coding in reversed(codings):
        if coding in DECODABLE:
            decoder = Decoder(coding)
            # One byte past the limit tells "too large" from "exactly the limit".
            body = decoder.decompress(body, 0 if limit == math.inf else int(limit) + 1)
            if len(body) > limit:
                raise BodyTooLarge(int(limit))
            if not decoder.eof:
                raise ProtocolError(
                    f"the server sent an unreadable {decoder.coding} body (cut short)"
                )
        elif coding not in ("identity", ""):
            raise ProtocolError(
                f"the server sent the body with an unsupported Content-Encoding {coding[:40]!r}"
            )
    return body
