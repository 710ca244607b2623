"""A fake WebSocket stream server with scriptable faults, for transport tests.

It is a real server: it listens on 127.0.0.1 with trio and speaks the
protocol with wsproto, byte for byte, so a client under test meets real
rejections, cut connections, stalls and garbage::

    async with serve_ws() as server:                  # ws://127.0.0.1:<port>/ws
        server.script(Reject(503, {"Retry-After": "1"}), Drop(after=2))
        await server.publish({"step": 1, "loss": 0.5})  # gets "id": "1"
        ...                                           # point a client at server.url
        await server.stop(); await server.start()     # kill and restart, same port

Normal streaming: a connection first gets the history after the id named by
the ``resume_param`` query parameter (all of it without one, or when the id
is unknown), then every message published while it is open. With
``subscribe=True`` the server waits for the client's first text message
instead, and resumes after its ``"last_id"`` when it is a JSON object with one.

With ``deflate=True`` the server accepts permessage-deflate when a client
offers it, and then sends every message compressed (wsproto's extension).

Each NEW handshake on :attr:`FakeWsServer.path` pops the next scripted action
(:class:`Reject`, :class:`Drop`, :class:`Close`, :class:`Stall`,
:class:`Garbage`); with none queued it streams normally. A handshake on any
other path is answered 404 and pops nothing.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias
from urllib.parse import parse_qsl, urlsplit

import attrs
import orjson
import trio
import wsproto
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.utilities import ProtocolError

from ._http import Drop, Stall
from ._listen import serve_loopback

__all__ = [
    "Close",
    "Drop",
    "FakeWsServer",
    "Garbage",
    "Reject",
    "Stall",
    "WsAction",
    "serve_ws",
]

_READ_SIZE = 65536
#: The most messages written to a socket at once.
_WRITE_BATCH = 512
#: Seconds a server-initiated close waits for the client's close frame.
_CLOSE_WAIT = 5.0


@attrs.frozen
class Reject:
    """Refuse the handshake with this HTTP status and headers (no body).

    ``Reject(404)``, ``Reject(503, {"Retry-After": "2"})``.
    """

    status: int
    headers: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen
class Close:
    """Send ``after`` messages, then a close frame with ``code`` (and ``reason``)."""

    code: int = 1000
    after: int = 0
    reason: str = ""


@attrs.frozen
class Garbage:
    """Accept the handshake, then write ``data`` raw: bytes that are no WebSocket frame.

    The connection then stays open, ignoring the client, until the client leaves.
    """

    data: bytes


#: What :meth:`FakeWsServer.script` accepts. :class:`Drop` (send ``after``
#: messages, then close the TCP connection without a close frame) and
#: :class:`Stall` (accept, then never send and never read: pings go
#: unanswered) are the same classes the fake HTTP servers use.
WsAction: TypeAlias = Reject | Drop | Close | Stall | Garbage


class _Connection:
    """One accepted socket and its wsproto state; sends are serialised."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        self._lock = trio.Lock()
        self._parts: list[str] = []

    async def read_request(self) -> Request | None:
        """The handshake request, or None if the client left before sending one."""
        while True:
            for event in self.ws.events():
                if isinstance(event, Request):
                    return event
            data = await self.stream.receive_some(_READ_SIZE)
            if not data:
                return None
            self.ws.receive_data(data)

    async def send(self, event: Event) -> None:
        await self.send_many([event])

    async def send_many(self, events: list[Event]) -> None:
        async with self._lock:
            await self.stream.send_all(b"".join([self.ws.send(event) for event in events]))

    async def serve_peer(
        self,
        on_text: Callable[[str], None],
        on_close: Callable[[int], None],
        done: trio.CancelScope,
    ) -> None:
        """Answer pings and close frames, report text messages and close codes;
        cancel ``done`` when the client closes or leaves."""
        try:
            while True:
                data = await self.stream.receive_some(_READ_SIZE)
                if not data:
                    return
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, Ping):
                        await self.send(event.response())
                    elif isinstance(event, TextMessage):
                        self._parts.append(event.data)
                        if event.message_finished:
                            on_text("".join(self._parts))
                            self._parts.clear()
                    elif isinstance(event, CloseConnection):
                        on_close(event.code)
                        if self.ws.state is ConnectionState.REMOTE_CLOSING:
                            await self.send(event.response())
                        return
        finally:
            done.cancel()


class FakeWsServer:
    """A running fake server; use :func:`serve_ws` to get one."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        port: int,
        path: str,
        resume_param: str,
        subscribe: bool,
        max_history: int = 100_000,
        deflate: bool = False,
    ) -> None:
        self._nursery = nursery
        #: The port listened on (the kernel's choice when 0 was asked; kept across restarts).
        self.port = port
        #: The path that streams; any other path is answered 404.
        self.path = path
        #: The query parameter naming the id to resume after.
        self.resume_param = resume_param
        #: True: wait for the client's first text message before streaming.
        self.subscribe = subscribe
        #: True: accept permessage-deflate when offered, and compress every message.
        self.deflate = deflate
        #: The published messages kept for replay, oldest first; dicts carry their "id".
        self.history: list[dict[str, Any] | str] = []
        #: At most this many are kept (the oldest go first), like the HTTP fakes.
        self.max_history = max_history
        #: How many were trimmed off the front of ``history`` so far.
        self._base = 0
        #: (path with query, headers with lower-cased names) of each handshake request.
        self.requests: list[tuple[str, dict[str, str]]] = []
        #: The text messages clients sent, in arrival order.
        self.received: list[str] = []
        #: The codes of the close frames clients sent (1000, ...), in arrival order.
        self.client_closes: list[int] = []
        self._actions: collections.deque[WsAction] = collections.deque()
        self._counter = 0
        self._accepted = 0
        self._grown = trio.Event()
        self._accepted_changed = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port><path>``."""
        return f"ws://127.0.0.1:{self.port}{self.path}"

    @property
    def accepted(self) -> int:
        """Handshakes accepted so far (rejected ones not counted)."""
        return self._accepted

    async def publish(self, data: dict[str, Any] | str) -> None:
        """Append to the history and send to every live connection.

        A dict without an "id" gets one: ``str`` of a counter of publishes
        (the caller's dict is copied, not changed). Strings are sent as they
        are, dicts as JSON.
        """
        self._counter += 1
        if isinstance(data, dict) and "id" not in data:
            data = {**data, "id": str(self._counter)}
        self.history.append(data)
        # Trim in steps of a tenth, so a long-running server (serve-demo)
        # keeps bounded memory without moving the whole list on every publish.
        if len(self.history) > self.max_history + max(self.max_history // 10, 1):
            drop = len(self.history) - self.max_history
            del self.history[:drop]
            self._base += drop
        grown, self._grown = self._grown, trio.Event()
        grown.set()
        await trio.lowlevel.checkpoint()

    def script(self, *actions: WsAction) -> None:
        """Queue actions; each new handshake on :attr:`path` pops the next one."""
        self._actions.extend(actions)

    async def start(self) -> None:
        """Listen (again) on the same port; returns once accepting."""
        if self._scope is None:
            self._scope = await self._nursery.start(self._serve)

    async def stop(self) -> None:
        """Stop listening and drop every open connection (no close frames)."""
        scope, self._scope = self._scope, None
        if scope is not None:
            scope.cancel()
            await self._done.wait()

    async def wait_for_connections(self, n: int) -> None:
        """Return once ``n`` handshakes have been accepted in total."""
        while self._accepted < n:
            await self._accepted_changed.wait()

    async def _serve(self, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        done = self._done = trio.Event()
        try:
            await serve_loopback(self.port, self._handle, self._bound, task_status=task_status)
        finally:
            done.set()

    def _bound(self, port: int) -> None:
        self.port = port

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = _Connection(stream)
        try:
            await self._converse(conn)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError):
            pass  # the client went away or spoke nonsense: its problem, not the server's

    async def _converse(self, conn: _Connection) -> None:
        request = await conn.read_request()
        if request is None:
            return
        headers = {"host": request.host}
        headers.update((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.extra_headers)
        if request.extensions:  # wsproto takes this header out of extra_headers
            headers["sec-websocket-extensions"] = ", ".join(map(str, request.extensions))
        self.requests.append((request.target, headers))
        if urlsplit(request.target).path != self.path:
            await conn.send(RejectConnection(status_code=404))
            return
        action = self._actions.popleft() if self._actions else None
        if isinstance(action, Reject):
            fields = [(k.encode(), v.encode()) for k, v in action.headers.items()]
            await conn.send(RejectConnection(status_code=action.status, headers=fields))
            return
        extensions: list[Extension] = [PerMessageDeflate()] if self.deflate else []
        await conn.send(AcceptConnection(extensions=extensions))
        self._accepted += 1
        changed, self._accepted_changed = self._accepted_changed, trio.Event()
        changed.set()
        if isinstance(action, Stall):
            await trio.sleep_forever()
        if isinstance(action, Garbage):
            await conn.stream.send_all(action.data)
            while await conn.stream.receive_some(_READ_SIZE):
                pass
            return
        await self._stream(conn, request.target, action)

    async def _stream(self, conn: _Connection, target: str, action: WsAction | None) -> None:
        query = dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))
        start = trio.Event()
        position = [self._index_after(query.get(self.resume_param))]

        def on_text(text: str) -> None:
            self.received.append(text)
            if self.subscribe and not start.is_set():
                position[0] = self._index_after(_subscribed_id(text))
                start.set()

        if not self.subscribe:
            start.set()
        limit = action.after if isinstance(action, Drop | Close) else None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                conn.serve_peer, on_text, self.client_closes.append, nursery.cancel_scope
            )
            await start.wait()
            sent, pos = 0, position[0]
            while limit is None or sent < limit:
                while pos >= self._base + len(self.history):
                    await self._grown.wait()
                pos = max(pos, self._base)  # a client too far behind skips what was trimmed
                # Everything pending goes out in one write, as a busy real server's would.
                end = min(self._base + len(self.history), pos + _WRITE_BATCH)
                if limit is not None:
                    end = min(end, pos + limit - sent)
                pending = self.history[pos - self._base : end - self._base]
                await conn.send_many([TextMessage(data=_encode(m)) for m in pending])
                sent += end - pos
                pos = end
            if isinstance(action, Drop):
                await trio.aclose_forcefully(conn.stream)
            elif isinstance(action, Close):
                await conn.send(CloseConnection(code=action.code, reason=action.reason))
                with trio.move_on_after(_CLOSE_WAIT):
                    await trio.sleep_forever()  # until serve_peer sees the client's reply
            nursery.cancel_scope.cancel()

    def _index_after(self, last_id: str | None) -> int:
        """Where replay starts (a position counting trimmed messages): after
        ``last_id``, or at the oldest kept message when it is absent or unknown."""
        if last_id:
            for index in range(len(self.history) - 1, -1, -1):
                item = self.history[index]
                if isinstance(item, dict) and str(item.get("id")) == last_id:
                    return self._base + index + 1
        return self._base


def _encode(item: dict[str, Any] | str) -> str:
    return item if isinstance(item, str) else orjson.dumps(item).decode()


def _subscribed_id(text: str) -> str | None:
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    value = message.get("last_id") if isinstance(message, dict) else None
    return None if value is None else str(value)


@asynccontextmanager
async def serve_ws(
    *,
    port: int = 0,
    path: str = "/ws",
    resume_param: str = "last_id",
    subscribe: bool = False,
    max_history: int = 100_000,
    deflate: bool = False,
) -> AsyncIterator[FakeWsServer]:
    """Run a :class:`FakeWsServer` on 127.0.0.1 for the duration of the block.

    ``port=0`` lets the kernel choose (read ``server.port`` / ``server.url``).
    ``subscribe=True`` makes the server wait for the client's first text
    message before streaming (see the module docstring); ``deflate=True``
    makes it compress its messages for a client that offers permessage-deflate.
    """
    async with trio.open_nursery() as nursery:
        server = FakeWsServer(
            nursery,
            port=port,
            path=path,
            resume_param=resume_param,
            subscribe=subscribe,
            max_history=max_history,
            deflate=deflate,
        )
        await server.start()
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()
