"""Just enough HTTP/1.1 client for one event stream: h11 over a trio stream.

Why not httpx for this: an event stream is one ``GET`` whose body never
ends -- no pooling, no keep-alive, no request retries -- so the layers that
make httpx a good general client are pure cost here, and that cost is paid
per read and per connection. Measured (benchmarks/RESULTS.md): httpx's read
path added ~70 µs to every event's latency (async generators over httpcore
over h11), and opening a stream cost ~1.3 ms of CPU, which made 10,000
sources take 13 s to connect. This module drives h11 (the same HTTP/1.1
state machine httpx uses underneath) directly, so a read costs one
``receive_some`` and one h11 event.

What it does: ``http`` and ``https`` (the caller passes the run's shared TLS
context), bodies delimited by length, chunking or the connection closing
(h11 decodes them), gzip/deflate when a server compresses although asked
not to. Redirects are the caller's job (it owns the deadline and the
headers). Proxies are not spoken here: when the environment names a proxy
for a URL, the transport uses the shared httpx client instead
(:func:`proxy_for`). Public names are re-exported by :mod:`mux_core.http`.

Whatever a server sends, memory stays bounded (a response head of at most
:data:`MAX_HEAD_BYTES`, at most :data:`MAX_DECODED_READ` decompressed bytes
per :meth:`Http11Stream.receive`) and errors are :class:`ProtocolError`
with a sentence for the Status detail (:func:`describe_protocol_error`),
never h11's own wording.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import ssl
import urllib.request
from collections.abc import Mapping, Sequence
from typing import TypeVar, cast

import attrs
import h11
import httpx
import trio

from ._body import (
    DECODABLE,
    BodyReader,
    CloseDelimitedBody,
    Decoder,
    ProtocolError,
    body_reader,
    size_text,
)
from ._tls import start_tls

__all__ = [
    "MAX_DECODED_READ",
    "MAX_HEAD_BYTES",
    "MAX_REDIRECTS",
    "REDIRECT_STATUSES",
    "HeadReader",
    "Http11Stream",
    "ProtocolError",
    "ResponseHead",
    "describe_protocol_error",
    "get_request_bytes",
    "header_value",
    "open_connection",
    "open_tcp",
    "origin",
    "proxy_for",
    "redirected",
    "request_target",
    "response_headers",
]

#: Bytes asked for per read: what httpx asks for, and enough for ~500 events.
_READ_SIZE = 65536
#: A response head (status line and headers) larger than this is a broken
#: server, not a stream: h11 stops buffering there.
MAX_HEAD_BYTES = 64 * 1024
#: The most decompressed bytes one :meth:`Http11Stream.receive` returns: a
#: compression bomb is undone a piece at a time (the SSE parser bounds events).
MAX_DECODED_READ = 1024 * 1024


@attrs.frozen
class ResponseHead:
    """The status line and headers of a response (header names lowercased)."""

    status: int
    reason: str
    headers: Mapping[str, str]


def request_target(url: httpx.URL) -> bytes:
    """The request-target of a GET for ``url``: path and query, never empty."""
    return url.raw_path or b"/"


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port: what must match for credentials to follow a redirect."""
    return (url.scheme, url.host, url.port)


class _EnvironmentProxies:
    """urllib's ``getproxies_environment()``, worked out again only when a variable
    it reads has changed.

    It decodes every variable of the environment, name and value (~70 µs);
    a process making 100,000 sources asked it 100,000 times. The variables
    it reads -- the names ending in ``_proxy`` (any case) and whether
    ``REQUEST_METHOD`` is set -- are looked up each time, as ``os.environ``
    stores them (bytes on POSIX: nothing decoded, ~5 µs), so a change to
    the environment is seen as before.
    """

    def __init__(self) -> None:
        self._read: tuple[tuple[str | bytes, str | bytes], ...] | None = None
        self._proxies: dict[str, str] = {}

    def __call__(self) -> dict[str, str]:
        stored = cast(Mapping[str | bytes, str | bytes], getattr(os.environ, "_data", os.environ))
        read = tuple(
            (name, stored[name]) for name in stored if name[-6:].lower() in _PROXY_SUFFIXES
        )
        if _REQUEST_METHOD & stored.keys():
            read += (("REQUEST_METHOD", ""),)
        if read != self._read:
            self._proxies = urllib.request.getproxies_environment()
            self._read = read
        return self._proxies


_environment_proxies = _EnvironmentProxies()
_PROXY_SUFFIXES = frozenset({"_proxy", b"_proxy"})
_REQUEST_METHOD = frozenset({"REQUEST_METHOD", b"REQUEST_METHOD"})


def proxy_for(url: httpx.URL) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``ALL_PROXY``,
    minus ``NO_PROXY``), as httpx's ``trust_env`` would use it; None for a
    direct connection."""
    proxies = _environment_proxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy:
        return None
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if bypass(url.host, proxies):
        return None
    return proxy


#: How many redirects in a row are followed, as httpx and browsers do.
MAX_REDIRECTS = 20
#: The statuses whose ``Location`` is followed (a GET stays a GET).
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: The only headers sent on to another origin: what says how to answer, never
#: who is asking (``Authorization``, a custom ``X-Api-Key``, ``Cookie``) nor
#: where a stream stood (``Last-Event-ID``, ``If-None-Match``).
CROSS_ORIGIN_HEADERS = frozenset(
    {"accept", "accept-encoding", "accept-language", "cache-control", "pragma", "user-agent"}
)

HeaderValue = str | bytes
_Value = TypeVar("_Value", bound=HeaderValue)


def redirected(
    url: httpx.URL, location: str, headers: Sequence[tuple[str, _Value]]
) -> tuple[httpx.URL, list[tuple[str, _Value]]]:
    """Where a redirect from ``url`` to ``location`` points, and the headers to
    send there: all of them to the same origin (or its https upgrade), only
    :data:`CROSS_ORIGIN_HEADERS` to another. ``ValueError`` when the target
    is not an http(s) URL, or is plain http after https (a downgrade would
    send the request, credentials included, unencrypted)."""
    try:
        target = url.join(location)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise ValueError(f"redirected to an invalid URL {location[:200]!r}") from exc
    if target.scheme not in ("http", "https") or not target.host:
        raise ValueError(f"redirected to {str(target)[:200]!r}, which is not an http(s) URL")
    if url.scheme == "https" and target.scheme == "http":
        raise ValueError(
            f"refused a redirect from https to plain http ({str(target)[:200]}): "
            "it would send the request unencrypted"
        )
    if origin(target) == origin(url) or _is_https_upgrade(url, target):
        return target, list(headers)
    return target, [(k, v) for k, v in headers if k.lower() in CROSS_ORIGIN_HEADERS]


def _is_https_upgrade(url: httpx.URL, target: httpx.URL) -> bool:
    """``http://host/`` -> ``https://host/`` on the default ports: the same server, safer."""
    return (
        url.scheme == "http"
        and target.scheme == "https"
        and url.host == target.host
        and url.port in (None, 80)
        and target.port in (None, 443)
    )


#: Bytes a header value cannot carry: control characters (HTAB aside).
_UNSENDABLE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _escape(match: re.Match[bytes]) -> bytes:
    return b"".join(b"%%%02X" % byte for byte in match.group())


def header_value(value: HeaderValue) -> bytes:
    """``value`` as the bytes of a request header, whatever it holds.

    A ``str`` is sent as UTF-8, as a browser sends a ``Last-Event-ID``;
    ``bytes`` (a validator echoed back: an ``ETag``) as they are. Spaces
    and tabs at either end are left out: they are not part of a header
    value (RFC 9110 5.5), so a server reads ``42`` whether ``42 `` was sent
    or not -- what it reads from a browser, and what it can resume from.
    The few bytes HTTP cannot carry at all -- CR, LF, NUL and the other
    control characters -- are sent as ``%XX`` (``"a\\nb"`` -> ``a%0Ab``);
    everything else, ``%`` and non-ASCII included, is sent unchanged. So an
    id or ETag chosen by a server can never make the request unsendable.
    """
    data = value.encode("utf-8", "replace") if isinstance(value, str) else value
    data = data.strip(b" \t")
    if _UNSENDABLE.search(data) is None:
        return data
    return _UNSENDABLE.sub(_escape, data)


def get_request_bytes(
    conn: h11.Connection, url: httpx.URL, headers: Sequence[tuple[str, HeaderValue]]
) -> bytes:
    """``GET url`` with ``headers`` (Host added) as bytes to send, through ``conn``.

    Values go through :func:`header_value`, so only a header *name* can be
    refused: ``ValueError`` then (a config mistake no retry can fix).
    """
    try:
        request = h11.Request(
            method="GET",
            target=request_target(url),
            headers=[
                (b"Host", url.netloc),
                *[(name.encode("ascii"), header_value(value)) for name, value in headers],
            ],
        )
        return conn.send(request) + (conn.send(h11.EndOfMessage()) or b"")
    except (h11.LocalProtocolError, UnicodeError) as exc:
        names = ", ".join(repr(name) for name, _ in headers)
        raise ValueError(
            f"could not send the request: a header name is not valid HTTP ({names})"
        ) from exc


#: h11's messages (by a fragment) and what they mean to a person.
_H11_WORDING = (
    ("illegal status line", "the server's response is not HTTP"),
    (
        "Receive buffer too long",
        f"the response head is too large (more than {size_text(MAX_HEAD_BYTES)})",
    ),
    ("illegal header line", "the server sent a malformed response header"),
    ("Content-Length", "the server sent an invalid Content-Length"),
    ("Transfer-Encoding", "the server sent an unsupported Transfer-Encoding"),
    ("_SWITCH_UPGRADE", "the server switched protocols (HTTP 101) although mux did not ask"),
    ("unexpectedly closed", "the server closed the connection in the middle of the response"),
    ("event type ConnectionClosed", "server disconnected without sending a response"),
    ("without sending complete", "the server closed the connection in the middle of the body"),
    ("chunk", "the server sent a malformed chunked body"),
    ("disconnected without", "server disconnected without sending a response"),
)


def describe_protocol_error(exc: BaseException) -> str:
    """A sentence for what h11 (or httpx, over h11) found wrong in a response:
    never h11's own words (``illegal status line: bytearray(b'...')``) in a
    Status detail."""
    text = str(exc).lower()
    for fragment, sentence in _H11_WORDING:
        if fragment.lower() in text:
            return sentence
    return "the server sent an invalid HTTP response"


def response_headers(response: h11.Response) -> dict[str, str]:
    """The headers of ``response`` by lowercase name; a repeated one joined with ", "."""
    headers: dict[str, str] = {}
    for name, value in response.headers:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


async def open_connection(url: httpx.URL, tls: ssl.SSLContext | None) -> trio.abc.Stream:
    """A TCP connection to ``url``'s host and port, with a TLS session for https.

    Raises ``OSError`` (refused, DNS, ``ssl.SSLError`` for a failed
    handshake) or ``trio.BrokenResourceError``; nothing is left open then.
    """
    https = url.scheme == "https"
    port = url.port or (443 if https else 80)
    host = url.raw_host.decode("ascii")  # IDNA-encoded, IPv6 without brackets
    stream: trio.abc.Stream = await open_tcp(host, port)
    if https:
        assert tls is not None, "https needs a TLS context"
        stream = await start_tls(stream, tls, host, port)
    return stream


def _address_family(host: str) -> int | None:
    """``AF_INET`` or ``AF_INET6`` if ``host`` is an IP address as written, else None."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return None


async def open_tcp(host: str, port: int) -> trio.SocketStream:
    """``trio.open_tcp_stream(host, port)``, without its machinery where there is
    one address to try.

    A host written as an IP address has one: trio's happy eyeballs (a
    lookup, a nursery, a task and a timer per connect) buys nothing there
    and cost ~150 µs of CPU a connect, a third of a source's start.
    Failures are what trio raises -- an ``OSError`` ("all attempts to
    connect to HOST:PORT failed") caused by a group holding the attempt's
    error -- so a status detail reads the same either way.
    """
    family = _address_family(host)
    if family is None:
        return await trio.open_tcp_stream(host, port)
    sock = None
    try:
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        await sock.connect((host, port))
    except OSError as exc:
        if sock is not None:
            sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        message = f"all attempts to connect to {where} failed"
        raise OSError(message) from ExceptionGroup(message, [exc])
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    return trio.SocketStream(sock)


class HeadReader:
    """The response head of one GET, parsed from bytes as they arrive.

    No I/O, so it can be fuzzed (tests/core/test_http_fuzz.py): :meth:`feed` takes
    what the connection delivered (``b""`` once it closed) and returns the
    head once it is complete, None while more is needed, or raises
    :class:`ProtocolError` with a readable sentence. h11 buffers at most
    :data:`MAX_HEAD_BYTES` of an incomplete head. Once the head is in,
    :attr:`body`, :attr:`decoder` and :attr:`rest` say how to read the body.
    """

    def __init__(self) -> None:
        self.conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        #: Bytes fed so far.
        self.received = 0
        #: The body's framing (set with the head).
        self.body: BodyReader = CloseDelimitedBody()
        #: Undoes the body's Content-Encoding, if any (set with the head).
        self.decoder: Decoder | None = None
        #: Body bytes that arrived with the head.
        self.rest = b""

    def request_bytes(self, url: httpx.URL, headers: Sequence[tuple[str, HeaderValue]]) -> bytes:
        """The ``GET`` to send (see :func:`get_request_bytes`); call once, first."""
        return get_request_bytes(self.conn, url, headers)

    def feed(self, data: bytes) -> ResponseHead | None:
        """The head, once ``data`` completes it; None while more is needed."""
        conn = self.conn
        self.received += len(data)
        conn.receive_data(data)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if not self.received:
                    raise ProtocolError("server disconnected without sending a response") from exc
                raise ProtocolError(describe_protocol_error(exc)) from exc
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Response):
                break
            if isinstance(event, h11.ConnectionClosed):
                raise ProtocolError("server disconnected without sending a response")
            if not isinstance(event, h11.InformationalResponse):  # PAUSED: cannot go on
                raise ProtocolError("the server sent an invalid HTTP response")
            # InformationalResponse (1xx): wait for the real one.
        headers = response_headers(event)
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in DECODABLE:
            self.decoder = Decoder(encoding)
        elif encoding not in ("identity", ""):
            raise ProtocolError(
                f"the server sent the body with an unsupported Content-Encoding {encoding[:40]!r}"
            )
        # From here on the body is read without h11 (see _body.py for why).
        self.body = body_reader(headers)
        self.rest = conn.trailing_data[0]
        return ResponseHead(event.status_code, event.reason.decode("latin-1"), headers)


class Http11Stream:
    """One HTTP/1.1 connection carrying one GET and its (endless) response.

    Use :meth:`connect`, then :meth:`request`, then :meth:`receive` until it
    returns ``b""``; always :meth:`aclose`. Network failures surface as
    ``OSError`` / ``trio.BrokenResourceError`` / ``ssl.SSLError``, and a
    server that does not speak HTTP as :class:`ProtocolError`.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._decoder: Decoder | None = None
        self._body: BodyReader = CloseDelimitedBody()
        self._pending = b""  # body bytes that came in with the head
        #: A plain TCP connection on a POSIX system: the body is read from its
        #: socket directly (in :meth:`receive`); None: through the stream.
        self._socket = (
            stream.socket if type(stream) is trio.SocketStream and os.name == "posix" else None
        )
        #: The last read did not fill the buffer: the socket is most likely empty.
        self._drained = True

    @classmethod
    async def connect(cls, url: httpx.URL, tls: ssl.SSLContext | None) -> Http11Stream:
        """Open a TCP connection to ``url``'s host (and a TLS session for https)."""
        return cls(await open_connection(url, tls))

    async def request(
        self, url: httpx.URL, headers: Sequence[tuple[str, HeaderValue]]
    ) -> ResponseHead:
        """Send ``GET url`` with ``headers`` (Host is added) and read the response head."""
        reader = HeadReader()
        await self._stream.send_all(reader.request_bytes(url, headers))
        head = None
        while head is None:
            head = reader.feed(cast(bytes, await self._stream.receive_some(_READ_SIZE)))
        self._body, self._decoder, self._pending = reader.body, reader.decoder, reader.rest
        return head

    async def receive(self) -> bytes:
        """The next bytes of the body as they arrive; ``b""`` once it has ended.

        ``ProtocolError`` when the body breaks -- only after the good bytes
        before the break were returned by an earlier call.
        """
        decoder = self._decoder
        if decoder is not None and decoder.pending:  # the rest of a large read
            payload = decoder.decompress(decoder.pending, MAX_DECODED_READ)
            if payload:
                return payload
        body = self._body
        while not body.done:
            if body.failed is not None:
                raise body.failed
            if self._pending:
                data, self._pending = self._pending, b""
            elif (sock := self._socket) is None:
                data = cast(bytes, await self._stream.receive_some(_READ_SIZE))
            else:
                # What ``SocketStream.receive_some`` returns, for less per read:
                # trio tries ``recv`` first and waits for the socket only when
                # that fails, so a stream of small events (one a read, the socket
                # emptied by each) pays every read twice: a ``recv`` that fails
                # with EAGAIN (an exception, through a context manager) and the
                # one after the wait. Here a read that did not fill the buffer
                # means the socket is empty: the next one waits first (a
                # checkpoint, as trio's is), and a read that filled it tries at
                # once (after a checkpoint). Errors as trio gives them (see
                # :meth:`_read_now`). Inline, not a coroutine of its own: an idle
                # stream waits here, and a coroutine less a stream is ~0.25 KB
                # (100,000 idle sources).
                if self._drained:
                    await trio.lowlevel.wait_readable(sock)
                else:
                    await trio.lowlevel.checkpoint()
                while (read := self._read_now(sock)) is None:  # woken without data after all
                    await trio.lowlevel.wait_readable(sock)
                data = read
            if not data:
                body.end()
                break
            payload = body.feed(data)
            if decoder is not None:
                payload = decoder.decompress(payload, MAX_DECODED_READ)
            if payload:
                return payload
        return b""

    def _read_now(self, sock: trio.socket.SocketType) -> bytes | None:
        """One ``os.read`` of the socket; None when it has nothing (EAGAIN).

        Errors as trio's ``receive_some`` gives them: ``BrokenResourceError``,
        ``ClosedResourceError``.
        """
        fd = sock.fileno()
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            if fd < 0 or exc.errno == errno.EBADF:
                raise trio.ClosedResourceError("this socket was already closed") from None
            raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc
        self._drained = len(data) < _READ_SIZE
        return data

    async def aclose(self) -> None:
        """Close the connection at once (no TLS close_notify wait)."""
        await trio.aclose_forcefully(self._stream)
