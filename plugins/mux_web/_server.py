"""The web sink's HTTP server: h11 on the run's own trio loop, one task per connection.

Why not an ASGI server (hypercorn's trio worker with starlette)? Measured on
the 2-core machine mux is tested on, both serving the same broadcast of
1,000 events/s (the same hub) to 100 SSE clients: this server used 12 KiB of
memory per client and 26 % of a core, hypercorn + starlette 58 KiB and 46 %
while delivering a quarter less; at 1,000 clients 10 KiB against 24 KiB. h11
(python-hyper's sans-I/O HTTP/1.1, already what mux's clients and test
servers speak) needs no thread, no extra dependency, and what a viewer may
hold is exactly its queue (:mod:`mux_web._feed`).

Routes (every one behind :class:`Guard`):

``GET /``             the page (``?token=...`` once: a cookie, then a redirect to ``/``)
``GET /static/NAME``  its scripts and styles (package data, read once)
``GET /events``       the records as Server-Sent Events (:mod:`mux_web._feed`)
``POST /restart``     ``?source=NAME``: start a source again that gave up

Bounds: a request's head must arrive within :data:`REQUEST_TIMEOUT`
seconds and fit in :data:`MAX_REQUEST_BYTES`; at most ``max_viewers``
event streams (one more gets 503) and a few more other connections.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import orjson
import trio

from ._feed import Feed

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "MAX_REQUEST_BYTES",
    "REQUEST_TIMEOUT",
    "Guard",
    "WebServer",
    "load_static",
]

_log = logging.getLogger("mux.sink.web")

#: Seconds a client has to send a whole request head.
REQUEST_TIMEOUT = 10.0
#: The largest request head (and POST body) accepted.
MAX_REQUEST_BYTES = 16 * 1024
#: Seconds between two keep-alive comments on a quiet event stream (ssh
#: tunnels and proxies close connections that say nothing).
HEARTBEAT = 15.0
#: Connections besides the event streams (page, scripts, a restart click).
_SPARE_CONNECTIONS = 32

#: Scripts and styles only from this server, no inline script or style, no
#: framing, no plugins; the page talks only to its own origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


def load_static() -> dict[str, tuple[str, bytes]]:
    """The page's files (package data ``mux_web/static``): name -> (content type, bytes)."""
    files: dict[str, tuple[str, bytes]] = {}
    for entry in resources.files("mux_web").joinpath("static").iterdir():
        name = entry.name
        suffix = name[name.rfind(".") :] if "." in name else ""
        if entry.is_file() and suffix in _TYPES:
            files[name] = (_TYPES[suffix], entry.read_bytes())
    return files


class Guard:
    """Who may look: the Host header, the token, the origin of a POST.

    * **Host** (DNS rebinding): a page on another site cannot make its own
      name point at this port and read it, because its requests carry its
      name in ``Host``. Accepted are IP addresses, ``localhost`` and the
      names in ``hosts``, with any port (an ssh tunnel changes it).
    * **Token** (when set): ``Authorization: Bearer TOKEN``, or the cookie
      set when the page was opened once as ``/?token=TOKEN``. The cookie
      holds an HMAC of the token, not the token; both are compared in
      constant time (``hmac.compare_digest`` of SHA-256 digests, so not even
      the length leaks).
    * **POST**: its ``Origin`` (browsers send one) must be this same origin,
      besides the cookie being ``SameSite=Strict``.
    """

    def __init__(self, token: str | None, *, port: int, hosts: list[str]) -> None:
        self._token = _digest(token.encode()) if token is not None else None
        self._cookie_value = (
            hmac.new(token.encode(), b"mux web view", hashlib.sha256).hexdigest()
            if token is not None
            else ""
        )
        #: The cookie's name (per listening port: two views on one host keep theirs).
        self.cookie_name = f"mux_web_{port}"
        self._hosts = frozenset(name.lower() for name in ["localhost", *hosts])

    @property
    def needs_token(self) -> bool:
        return self._token is not None

    def host_allowed(self, host: str | None) -> bool:
        """Whether a ``Host`` header names this server by an address or an allowed name."""
        if not host:
            return False
        name = host.lower()
        if name.startswith("["):
            name = name[1 : name.find("]")] if "]" in name else ""
        else:
            name = name.rpartition(":")[0] if ":" in name else name
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return name in self._hosts
        return True

    def token_matches(self, presented: str) -> bool:
        if self._token is None:
            return True
        return hmac.compare_digest(self._token, _digest(presented.encode()))

    def authorized(self, headers: Mapping[str, str]) -> bool:
        """Whether a request carries the token (a Bearer header or the cookie)."""
        if self._token is None:
            return True
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(value.strip()):
            return True
        cookie = _cookies(headers.get("cookie", "")).get(self.cookie_name)
        return cookie is not None and hmac.compare_digest(
            _digest(cookie.encode()), _digest(self._cookie_value.encode())
        )

    def set_cookie(self) -> str:
        return (
            f"{self.cookie_name}={self._cookie_value}; Path=/; HttpOnly; SameSite=Strict;"
            " Max-Age=2592000"
        )

    @staticmethod
    def same_origin(headers: Mapping[str, str]) -> bool:
        """A POST's ``Origin`` is this server's (no Origin: not a browser's cross-site form)."""
        origin = headers.get("origin")
        if origin is None:
            return True
        host = headers.get("host", "")
        return origin in (f"http://{host}", f"https://{host}")


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _cookies(header: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            found.setdefault(name, value)
    return found


class _Request:
    __slots__ = ("body", "headers", "method", "path", "query")

    def __init__(self, request: h11.Request, body: bytes) -> None:
        self.method = request.method.decode("latin-1")
        target = request.target.decode("latin-1")
        split = urlsplit(target)
        self.path = split.path
        self.query = dict(parse_qsl(split.query, keep_blank_values=True))
        headers: dict[str, str] = {}
        for name, value in request.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}; {text}" if key == "cookie" and key in headers else text
        self.headers = headers
        self.body = body


class _Closed(Exception):
    """The client went away or broke the protocol: end the connection quietly."""


class _Connection:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)

    async def next_request(self) -> _Request | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                await self._bad_request(exc)
                return None
            if event is h11.NEED_DATA:
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return None
                self.h11.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_REQUEST_BYTES:
                    await self.respond(413, b"request body too large\n", close=True)
                    return None
            elif isinstance(event, h11.EndOfMessage):
                return _Request(request, bytes(body)) if request is not None else None
            else:  # ConnectionClosed, PAUSED
                return None

    async def _bad_request(self, exc: h11.RemoteProtocolError) -> None:
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = exc.error_status_hint
            try:
                await self.respond(status, b"bad request\n", close=True)
            except _Closed:
                pass

    async def send(self, *events: h11.Event) -> None:
        try:
            data = b"".join(self.h11.send(event) or b"" for event in events)
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError) as exc:
            raise _Closed from exc

    async def respond(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "text/plain; charset=utf-8",
        headers: tuple[tuple[str, str], ...] = (),
        close: bool = False,
    ) -> None:
        all_headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            *_SECURITY_HEADERS,
            *headers,
        ]
        if close:
            all_headers.append(("Connection", "close"))
        await self.send(
            h11.Response(status_code=status, headers=all_headers, reason=_reason(status)),
            h11.Data(data=body),
            h11.EndOfMessage(),
        )

    def reusable(self) -> bool:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False


class WebServer:
    """Serves the page, its files, the event stream and restarts, on one listener."""

    def __init__(
        self,
        feed: Feed,
        guard: Guard,
        *,
        hello: Callable[[], dict[str, Any]],
        restart: Callable[[str], bool],
        static: dict[str, tuple[str, bytes]],
        max_viewers: int,
    ) -> None:
        self.feed = feed
        self.guard = guard
        self._hello = hello
        self._restart = restart
        self._static = static
        self.max_viewers = max_viewers
        self.connections = 0
        self.streams = 0

    async def serve(self, listener: trio.SocketListener) -> None:
        """Accept connections until cancelled, each in its own task."""
        async with trio.open_nursery() as nursery:
            await trio.serve_listeners(self.handle, [listener], handler_nursery=nursery)

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            async with stream:
                if self.connections > self.max_viewers + _SPARE_CONNECTIONS:
                    return
                conn = _Connection(stream)
                while True:
                    request = None
                    with trio.move_on_after(REQUEST_TIMEOUT):
                        request = await conn.next_request()
                    if request is None:
                        return
                    if not await self._answer(conn, request) or not conn.reusable():
                        return
        except _Closed:
            return
        finally:
            self.connections -= 1

    async def _answer(self, conn: _Connection, request: _Request) -> bool:
        """Answer one request; False when the connection is to close afterwards."""
        guard = self.guard
        if not guard.host_allowed(request.headers.get("host")):
            await conn.respond(
                421,
                b"this mux web view is reached by its address (127.0.0.1, localhost),"
                b" not by this host name; add the name to the sink's hosts to allow it\n",
                close=True,
            )
            return False
        path = request.path
        if request.method == "GET" and path == "/" and "token" in request.query:
            return await self._first_load(conn, request.query["token"])
        if not guard.authorized(request.headers):
            await conn.respond(
                401,
                b"this mux web view needs its token: open http://HOST:PORT/?token=TOKEN once"
                b" (the token is the web sink's token key), or send Authorization: Bearer TOKEN\n",
                headers=(("WWW-Authenticate", 'Bearer realm="mux"'),),
            )
            return True
        if request.method == "GET":
            if path == "/":
                return await self._file(conn, "index.html")
            if path == "/favicon.ico":
                return await self._file(conn, "favicon.svg")
            if path.startswith("/static/"):
                return await self._file(conn, path.removeprefix("/static/"))
            if path == "/events":
                await self._events(conn, request)
                return False
        elif request.method == "POST" and path == "/restart":
            return await self._restart_source(conn, request)
        elif path in ("/", "/events", "/restart") or path.startswith("/static/"):
            await conn.respond(405, b"method not allowed\n", headers=(("Allow", "GET, POST"),))
            return True
        await conn.respond(404, b"not found\n")
        return True

    async def _first_load(self, conn: _Connection, token: str) -> bool:
        if not self.guard.token_matches(token):
            await conn.respond(403, b"wrong token\n")
            return True
        headers: tuple[tuple[str, str], ...] = (("Location", "/"),)
        if self.guard.needs_token:
            headers += (("Set-Cookie", self.guard.set_cookie()),)
        # The redirect drops the token from the address bar and the history.
        await conn.respond(303, b"", headers=headers)
        return True

    async def _file(self, conn: _Connection, name: str) -> bool:
        found = self._static.get(name)
        if found is None:
            await conn.respond(404, b"not found\n")
            return True
        content_type, body = found
        await conn.respond(200, body, content_type=content_type)
        return True

    async def _restart_source(self, conn: _Connection, request: _Request) -> bool:
        if not self.guard.same_origin(request.headers):
            await conn.respond(403, b"cross-origin request refused\n")
            return True
        name = request.query.get("source", "")
        if not self._restart(name):
            await conn.respond(409, b"no such source can be restarted now\n")
            return True
        await conn.respond(202, b"restarting\n")
        return True

    async def _events(self, conn: _Connection, request: _Request) -> None:
        if self.streams >= self.max_viewers:
            await conn.respond(
                503,
                b"too many viewers (max_viewers)\n",
                headers=(("Retry-After", "10"),),
                close=True,
            )
            return
        last_id = request.headers.get("last-event-id") or request.query.get("last_id")
        feed = self.feed
        viewer, reset = feed.join(last_id)
        self.streams += 1
        try:
            with trio.CancelScope() as viewer.scope:
                if viewer.dropped:  # dropped before its scope existed
                    return
                await conn.send(
                    h11.Response(
                        status_code=200,
                        reason=b"OK",
                        headers=[
                            ("Content-Type", "text/event-stream; charset=utf-8"),
                            ("X-Accel-Buffering", "no"),
                            *_SECURITY_HEADERS,
                        ],
                    )
                )
                hello = orjson.dumps(self._hello())
                head = b"retry: 2000\n\nevent: hello\ndata: " + hello + b"\n\n"
                if reset:
                    head += b"event: reset\ndata: {}\n\n"
                await conn.send(h11.Data(data=head))
                # The history, a piece at a time as the socket takes them (what
                # is published meanwhile waits in the viewer's bounded queue).
                while (part := feed.history(viewer)) is not None:
                    await conn.send(h11.Data(data=part))
                while True:
                    chunk: bytes | None = None
                    with trio.move_on_after(HEARTBEAT):
                        chunk = await viewer.take()
                        if chunk is None:
                            if not viewer.dropped:  # the sink closed: end the body cleanly
                                await conn.send(h11.EndOfMessage())
                            return
                    await conn.send(h11.Data(data=b": ping\n\n" if chunk is None else chunk))
        finally:
            self.streams -= 1
            feed.leave(viewer)
            if viewer.dropped:
                _log.warning(
                    "web: a viewer fell %d bytes behind (viewer_buffer) and was disconnected;"
                    " its browser reconnects and resumes",
                    feed.viewer_buffer,
                )


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
