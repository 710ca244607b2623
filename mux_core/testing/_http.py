"""The HTTP/1.1 plumbing shared by the fake SSE and REST servers.

A fake server is a real one: it listens on 127.0.0.1 with ``trio``, parses
requests with ``h11`` and writes real bytes, so a transport under test sees
exactly what it would see from a misbehaving production server. What is
shared lives here:

* the stored history (:class:`StoredEvent`) and :meth:`publish`;
* the scripted faults (:class:`Respond`, :class:`Stall`, :class:`Drop`,
  :class:`Raw`, :class:`Close`) -- each NEW request pops the next one;
* the lifecycle: :meth:`stop` kills the server (listener and every open
  connection), :meth:`start` brings it back on the same port;
* the log of :class:`RequestInfo` and :meth:`wait_for_connections`.

A subclass decides what a request gets (:meth:`_FakeHttpServer._answer`).
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qsl, urlsplit

import attrs
import h11
import orjson
import trio

__all__ = [
    "Action",
    "Close",
    "Drop",
    "Raw",
    "RequestInfo",
    "Respond",
    "Stall",
    "StoredEvent",
]

_READ_SIZE = 65536


@attrs.frozen
class StoredEvent:
    """One published event, as the server keeps it in ``history``."""

    #: The event id (``str(counter)`` unless the publisher gave one).
    id: str
    #: The event type, or None for the default ("message").
    event: str | None
    #: The payload as text (a published dict is stored as its JSON text).
    data: str


@attrs.frozen
class RequestInfo:
    """One request the server received, in arrival order in ``requests``."""

    #: "GET", ...
    method: str
    #: Path and query exactly as sent ("/metrics?after=3").
    target: str
    #: Header names lower-cased; repeated headers joined with ", ".
    headers: dict[str, str]

    @property
    def path(self) -> str:
        """The target without its query."""
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        """The decoded query parameters (the last value wins when repeated)."""
        return dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))


@attrs.frozen
class Respond:
    """Answer with this status, headers and body, then close the connection.

    E.g. ``Respond(204)``, ``Respond(503, {"Retry-After": "2"})``,
    ``Respond(200, {"Content-Type": "text/html"}, b"<html>")``. A
    Content-Length is added unless given (none for 204/304).
    """

    status: int
    headers: dict[str, str] = attrs.field(factory=dict)
    body: bytes = b""


@attrs.frozen
class Stall:
    """Accept the request and never answer (SSE: send the 200 headers, then silence).

    The connection stays open until the client gives up or the server stops.
    """


@attrs.frozen
class Drop:
    """SSE: send ``after`` events, then close without ending the chunked body.

    REST: declare the whole body's Content-Length, send only ``after`` bytes
    of it, then close. Either way the client sees a response cut short.
    """

    after: int


@attrs.frozen
class Raw:
    """Send a 200 header (SSE: ``text/event-stream``; REST: ``application/json``),
    then exactly ``data`` as the body, unframed (the body runs to the end of
    the connection). ``close=True`` closes the connection after ``data``
    (a clean end of the body); ``close=False`` leaves it open and silent,
    e.g. for a line that never ends.
    """

    data: bytes
    close: bool = True


@attrs.frozen
class Close:
    """Close the connection without sending any response."""


#: Anything :meth:`script` accepts.
Action: TypeAlias = Respond | Stall | Drop | Raw | Close


class _HttpConnection:
    """One accepted socket, with h11 keeping the HTTP/1.1 framing honest."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)

    async def next_request(self) -> h11.Request | None:
        """The next request with its body drained, or None once the client left."""
        request: h11.Request | None = None
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.stream.receive_some(_READ_SIZE))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                return request
            elif isinstance(event, h11.Data):
                continue
            else:  # ConnectionClosed or PAUSED
                return None

    async def send(self, *events: h11.Event) -> None:
        chunks = [self.h11.send(event) or b"" for event in events]
        await self.stream.send_all(b"".join(chunks))

    async def send_response(
        self, status: int, headers: dict[str, str], body: bytes | None = None
    ) -> None:
        """Send a whole response (``body`` None: headers only, the body follows)."""
        try:
            reason = HTTPStatus(status).phrase.encode()
        except ValueError:
            reason = b""
        response = h11.Response(status_code=status, headers=list(headers.items()), reason=reason)
        if body is None:
            await self.send(response)
        elif body:
            await self.send(response, h11.Data(data=body), h11.EndOfMessage())
        else:
            await self.send(response, h11.EndOfMessage())

    async def send_raw_head(self, content_type: str) -> None:
        """A 200 whose body runs to the end of the connection (no framing)."""
        head = f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n"
        await self.stream.send_all(head.encode())

    def reusable(self) -> bool:
        """True when the exchange is over and the client may send another request."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False

    async def wait_closed(self) -> None:
        """Return once the client closes its side (anything it sends is ignored)."""
        while await self.stream.receive_some(_READ_SIZE):
            pass


S = TypeVar("S", bound="_FakeHttpServer")


class _FakeHttpServer:
    """History, script, request log and lifecycle; subclasses answer requests."""

    def __init__(self, nursery: trio.Nursery, *, port: int, path: str, max_history: int) -> None:
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        #: The port listened on (the real one once started with port 0).
        self.port = port
        #: The path served; other paths get 404.
        self.path = path
        #: Every published event still kept (the oldest are trimmed past max_history).
        self.history: list[StoredEvent] = []
        #: Every request received, in order, across restarts.
        self.requests: list[RequestInfo] = []
        self._max_history = max_history
        self._nursery = nursery
        self._encoded: list[bytes] = []  # history[i] pre-encoded by the subclass
        self._base = 0  # events trimmed from the front of history
        self._positions: dict[str, int] = {}  # id -> absolute position (latest wins)
        self._counter = 0
        self._script: collections.deque[Action] = collections.deque()
        self._changed = trio.Event()
        self._request_seen = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/PATH``."""
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._scope is not None

    # -- events ---------------------------------------------------------------

    def publish_nowait(
        self, data: str | dict[str, Any], *, id: str | None = None, event: str | None = None
    ) -> StoredEvent:
        """Like :meth:`publish`, callable from synchronous code."""
        self._counter += 1
        text = orjson.dumps(data).decode() if isinstance(data, dict) else data
        stored = StoredEvent(str(self._counter) if id is None else id, event, text)
        self._positions[stored.id] = self._total
        self.history.append(stored)
        self._encoded.append(self._encode(stored))
        self._trim()
        changed, self._changed = self._changed, trio.Event()
        changed.set()
        return stored

    async def publish(
        self, data: str | dict[str, Any], *, id: str | None = None, event: str | None = None
    ) -> None:
        """Append an event to ``history`` and hand it to live streams.

        A dict is stored as its JSON text; ``id`` defaults to ``str(counter)``
        (1, 2, 3, ... counting every publish).
        """
        self.publish_nowait(data, id=id, event=event)
        await trio.lowlevel.checkpoint()

    @property
    def _total(self) -> int:
        """Events ever kept: the absolute position after the newest one."""
        return self._base + len(self.history)

    def _trim(self) -> None:
        # Trim in steps of 1/8 so a long run does not memmove the list per publish.
        slack = max(1, self._max_history // 8)
        excess = len(self.history) - self._max_history
        if excess < slack:
            return
        for stored in self.history[:excess]:
            if self._positions.get(stored.id, self._total) < self._base + excess:
                del self._positions[stored.id]
        del self.history[:excess]
        del self._encoded[:excess]
        self._base += excess

    def _after(self, last_id: str | None) -> int:
        """The absolute position following ``last_id`` (an unknown id: the oldest kept)."""
        position = self._positions.get(last_id) if last_id else None
        return self._base if position is None else position + 1

    def _encode(self, stored: StoredEvent) -> bytes:
        raise NotImplementedError

    # -- faults and bookkeeping -----------------------------------------------

    def script(self, *actions: Action) -> None:
        """Queue faults: each NEW request on ``path`` pops the next; none queued -> normal.

        Requests on other paths get 404 and pop nothing.
        """
        for action in actions:
            if not isinstance(action, Respond | Stall | Drop | Raw | Close):
                raise TypeError(
                    f"{action!r} is not an HTTP fault; use Respond, Stall, Drop, Raw or Close"
                    " (the HTTP fault classes of mux_core.testing)"
                )
        self._script.extend(actions)

    async def wait_for_connections(self, n: int) -> None:
        """Return once ``n`` requests have been received in total (across restarts)."""
        while len(self.requests) < n:
            await self._request_seen.wait()

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Listen (again) on ``port``: a restarted server. No-op when running."""
        if self._scope is not None:
            return
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await self._nursery.start(self._serve, listeners)

    async def stop(self) -> None:
        """Stop listening and drop every open connection at once: a killed server."""
        if self._scope is None:
            return
        self._scope.cancel()
        await self._done.wait()
        self._scope = None

    async def _serve(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._done = trio.Event()
        try:
            with trio.CancelScope() as self._scope:
                async with trio.open_nursery() as handlers:
                    task_status.started()
                    await trio.serve_listeners(self._handle, listeners, handler_nursery=handlers)
        finally:
            self._done.set()

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = _HttpConnection(stream)
        async with stream:
            try:
                while True:
                    request = await conn.next_request()
                    if request is None:
                        return
                    info = _request_info(request)
                    self.requests.append(info)
                    seen, self._request_seen = self._request_seen, trio.Event()
                    seen.set()
                    if info.path != self.path:
                        await conn.send_response(404, _plain(b"not found\n"), b"not found\n")
                        keep = True
                    else:
                        action = self._script.popleft() if self._script else None
                        keep = await self._dispatch(conn, info, action)
                    if not keep or not conn.reusable():
                        return
            except h11.RemoteProtocolError as exc:
                await _bad_request(conn, exc)
            except _CLIENT_GONE:
                return
            except BaseExceptionGroup as group:
                # A stream's nursery wraps the client's reset in a group.
                if group.split(_CLIENT_GONE)[1] is not None:
                    raise

    async def _dispatch(
        self, conn: _HttpConnection, info: RequestInfo, action: Action | None
    ) -> bool:
        """Answer one request; return False to close the connection afterwards."""
        if isinstance(action, Respond):
            await _respond(conn, action)
            return False
        if isinstance(action, Close):
            return False
        if action is None and info.method != "GET":
            body = b"GET only\n"
            await conn.send_response(405, {**_plain(body), "allow": "GET"}, body)
            return True
        return await self._answer(conn, info, action)

    async def _answer(
        self, conn: _HttpConnection, info: RequestInfo, action: Stall | Drop | Raw | None
    ) -> bool:
        raise NotImplementedError


#: What a client hanging up (or resetting) mid-response looks like to the server.
_CLIENT_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError)


def _request_info(request: h11.Request) -> RequestInfo:
    headers: dict[str, str] = {}
    for name, value in request.headers:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return RequestInfo(request.method.decode("latin-1"), request.target.decode("latin-1"), headers)


def _plain(body: bytes) -> dict[str, str]:
    return {"content-type": "text/plain", "content-length": str(len(body))}


async def _respond(conn: _HttpConnection, action: Respond) -> None:
    headers = {name.lower(): value for name, value in action.headers.items()}
    no_body = action.status in (204, 304) or action.status < 200
    if not no_body:
        headers.setdefault("content-length", str(len(action.body)))
    headers["connection"] = "close"
    await conn.send_response(action.status, headers, b"" if no_body else action.body)


async def _bad_request(conn: _HttpConnection, exc: h11.RemoteProtocolError) -> None:
    """Answer a malformed request with 400 when h11 still allows a response."""
    if conn.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = f"bad request: {exc}\n".encode()
    try:
        await conn.send_response(400, {**_plain(body), "connection": "close"}, body)
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
        pass


@asynccontextmanager
async def _serving(make: Callable[[trio.Nursery], S]) -> AsyncIterator[S]:
    """Run a fake server for the duration of the block, then kill it and its tasks."""
    async with trio.open_nursery() as nursery:
        server = make(nursery)
        await server.start()
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
