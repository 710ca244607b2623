"""The WebSocket transport: one session on one trio-websocket client connection.

A session opens the TCP (or TLS) stream itself, runs the WebSocket handshake
over it within ``session.connect_timeout``, optionally sends a subscribe
text, then turns every message into an event. Owning the stream lets the
session tell a dead connection from a slow one during the handshake (the
library would wait for its own timeout) and close the socket for certain
whatever state the library is in.

How a session ends, and what the supervisor is told::

    handshake 401/403/404/410, other 4xx, bad URL  -> Failed
    refused, reset, timeout, 5xx/429, TLS error     -> ServerUnavailable (Retry-After kept)
    close frame, lost connection, missed pong       -> Disconnected
    close 1000 with end_on_close                    -> Ended
"""

from __future__ import annotations

import email.utils
import ssl
import time
from collections.abc import Callable
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
import orjson
import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)
from wsproto.events import CloseConnection
from wsproto.utilities import LocalProtocolError

from mux_core.errors import (
    Disconnected,
    Ended,
    Failed,
    ServerUnavailable,
    SessionError,
    describe_connection_error,
)
from mux_core.http import clean_headers
from mux_core.session import RawEvent, Session

__all__ = ["WsOptions", "WsTransport"]

#: Messages trio-websocket may buffer ahead of us.
_QUEUE_SIZE = 64
#: The most events handed over as one batch.
_BATCH = 256
#: Bytes the library reads from the socket at once (its default is 4 KiB).
_READ_SIZE = 65536
#: Seconds allowed to write the close frame before the socket is cut.
_CLOSE_TIMEOUT = 1.0
#: Handshake rejections worth retrying besides 5xx; any other status is Failed
#: (401/403/404/410, a plain HTTP 200 or a redirect: not a WebSocket endpoint we can use).
_RETRY_STATUSES = frozenset({408, 429})
#: The close reason trio-websocket gives when a message exceeds max_message_size.
_TOO_BIG_PREFIX = "Exceeded maximum message size"


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _not_negative(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0 (0 disables it), got {value!r}")


@attrs.frozen(kw_only=True)
class WsOptions:
    """Config keys of a ``transport = "ws"`` source."""

    #: The endpoint, ``ws://`` or ``wss://``.
    url: str
    #: Extra HTTP headers of the handshake request (Authorization, ...).
    headers: dict[str, str] = attrs.field(factory=dict)
    #: Text sent once connected; ``{last_id}`` is replaced by the last id seen ("" if none).
    subscribe: str | None = None
    #: Query parameter added to the URL on connect, carrying the last id seen (when there is one).
    resume_param: str | None = None
    #: JSON key of an object message holding the event id (stringified).
    id_field: str | None = None
    #: JSON key of an object message holding the event type (default type "message").
    event_field: str | None = None
    #: "auto": JSON when it parses, else text; "json": skip (with a notice) what does not parse;
    #: "text": never parse.
    decode: Literal["auto", "json", "text"] = "auto"
    #: Seconds between pings; 0 disables the heartbeat.
    ping_interval: float = attrs.field(default=20.0, validator=_not_negative)
    #: Seconds to wait for the pong before the connection is declared dead.
    ping_timeout: float = attrs.field(default=20.0, validator=_positive)
    #: Largest message accepted (as trio-websocket measures it: characters of a text message,
    #: bytes of a binary one); a larger one closes the connection with 1009.
    max_message_bytes: int = attrs.field(default=8 * 1024 * 1024, validator=_positive)
    #: Treat a close with code 1000 as the end of the stream (state "ended") instead of a
    #: disconnection to retry.
    end_on_close: bool = False


@attrs.define
class _Live:
    """One open connection and what the heartbeat learnt about it."""

    ws: WebSocketConnection
    #: Set when a pong went missing: the peer is gone, so no polite close is attempted.
    pong_lost: bool = False


@attrs.frozen
class _Target:
    """Where to connect, resolved from the URL once per session."""

    host: str
    port: int
    tls: bool
    host_header: str
    resource: str


def _parse_url(url: str) -> _Target:
    """Split a ws:// or wss:// URL; ValueError says what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid url {url!r}: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"url must start with ws:// or wss://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"url has no host: {url!r}")
    tls = parts.scheme == "wss"
    default_port = 443 if tls else 80
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rpartition("@")[2]
    return _Target(parts.hostname, port or default_port, tls, host_header, resource)


def _with_query_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name]
    query.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _retry_after(headers: tuple[tuple[bytes, bytes], ...]) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), if any."""
    for name, value in headers:
        if name.lower() != b"retry-after":
            continue
        text = value.decode("latin-1").strip()
        try:
            return max(0.0, float(text))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
    return None


def _rejected(exc: ConnectionRejected) -> SessionError:
    status = exc.status_code
    detail = f"handshake rejected: HTTP {status}"
    if status >= 500 or status in _RETRY_STATUSES:
        return ServerUnavailable(detail, retry_after=_retry_after(exc.headers))
    return Failed(detail)


def _connect_detail(exc: BaseException) -> str:
    """A short reason for a failed TCP/TLS connect ("connection refused", ...)."""
    return describe_connection_error(exc) or f"connection failed: {exc}"


class _WatchedStream(trio.abc.Stream):
    """A stream that notices when it dies (EOF, error, close).

    trio-websocket waits for the handshake response until its own timeout even
    when the server has already closed the connection; ``on_gone`` lets the
    session stop waiting at once and report what happened.
    """

    def __init__(self, inner: trio.abc.Stream) -> None:
        self._inner = inner
        self.gone = False
        self.error: BaseException | None = None
        self.on_gone: Callable[[], None] | None = None

    def _mark_gone(self, error: BaseException | None = None) -> None:
        if not self.gone:
            self.gone, self.error = True, error
            if self.on_gone is not None:
                self.on_gone()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self._inner.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._mark_gone(exc)
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self._inner.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._mark_gone(exc)
            raise
        if not data:
            self._mark_gone()
        return data

    async def aclose(self) -> None:
        self._mark_gone()
        await self._inner.aclose()


class WsTransport:
    """Receive WebSocket messages as events; see the module docstring for the states."""

    Options = WsOptions

    def __init__(self, options: WsOptions) -> None:
        self.options = options
        self._ssl: ssl.SSLContext | None = None

    @classmethod
    def check(cls, options: WsOptions) -> None:
        """Reject a URL that is not ws:// or wss:// before any I/O."""
        _parse_url(options.url)

    async def run_session(self, session: Session) -> None:
        opts = self.options
        url = opts.url
        last_id = session.resume.last_id
        if opts.resume_param and last_id is not None:
            url = _with_query_param(url, opts.resume_param, last_id)
        try:
            target = _parse_url(url)
        except ValueError as exc:
            raise Failed(str(exc)) from None
        try:
            await self._run(session, target)
        except BaseExceptionGroup as group:
            error = _unwrap(group)
            if error is group:
                raise
            raise error from None
        except ConnectionRejected as exc:
            raise _rejected(exc) from None

    async def _run(self, session: Session, target: _Target) -> None:
        deadline = trio.current_time() + session.connect_timeout  # TCP, TLS and handshake
        stream = await self._open_stream(session, target, deadline)
        try:
            async with trio.open_nursery() as nursery:
                ws = await self._handshake(nursery, stream, target, session, deadline)
                live = _Live(ws)
                try:
                    await self._subscribe(ws, session)
                    await session.connected()
                    if self.options.ping_interval > 0:
                        nursery.start_soon(self._heartbeat, live)
                    await self._receive(ws, session)
                finally:
                    if not live.pong_lost:
                        await _send_close_frame(ws)
                    nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)

    async def _subscribe(self, ws: WebSocketConnection, session: Session) -> None:
        if self.options.subscribe is None:
            return
        text = self.options.subscribe.replace("{last_id}", session.resume.last_id or "")
        try:
            await ws.send_message(text)
        except ConnectionClosed as exc:
            raise await self._closed(exc.reason, session) from None

    async def _open_stream(
        self, session: Session, target: _Target, deadline: float
    ) -> _WatchedStream:
        with trio.move_on_at(deadline) as scope:
            try:
                if target.tls:
                    raw: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(
                        target.host,
                        target.port,
                        ssl_context=self._ssl_context(),
                        https_compatible=True,
                    )
                else:
                    raw = await trio.open_tcp_stream(target.host, target.port)
            except OSError as exc:
                raise ServerUnavailable(_connect_detail(exc)) from None
        if scope.cancelled_caught:
            raise ServerUnavailable(f"connect timed out after {session.connect_timeout:g} s")
        return _WatchedStream(raw)

    def _ssl_context(self) -> ssl.SSLContext:
        # Loading the CA store costs milliseconds: once per source, not per session.
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _handshake(
        self,
        nursery: trio.Nursery,
        stream: _WatchedStream,
        target: _Target,
        session: Session,
        deadline: float,
    ) -> WebSocketConnection:
        """Run the opening handshake; a rejection surfaces from the reader task."""
        headers = [(k.encode(), v.encode()) for k, v in clean_headers(self.options.headers).items()]
        with trio.move_on_at(deadline) as scope:
            stream.on_gone = scope.cancel
            ws = await wrap_client_stream(
                nursery,
                cast(trio.SocketStream, stream),
                target.host_header,
                target.resource,
                extra_headers=headers,
                message_queue_size=_QUEUE_SIZE,
                max_message_size=self.options.max_message_bytes,
                receive_buffer_size=_READ_SIZE,
            )
            stream.on_gone = None
            return ws
        stream.on_gone = None
        if stream.gone:
            error = stream.error
            if error is not None and isinstance(error.__cause__, ssl.SSLCertVerificationError):
                raise Failed(f"TLS certificate rejected: {error.__cause__.verify_message}")
            reason = _connect_detail(error) if error is not None else "connection closed"
            raise ServerUnavailable(f"{reason} during the handshake")
        raise ServerUnavailable(f"no handshake response within {session.connect_timeout:g} s")

    async def _heartbeat(self, live: _Live) -> None:
        """Ping every ping_interval; a missing pong means a dead connection.

        A pong can only be read once the library's message queue has room: when
        our own consumer is the one blocked (a slow sink), the miss is not the
        server's fault and the round is forgiven.
        """
        interval, timeout = self.options.ping_interval, self.options.ping_timeout
        ws = live.ws
        recv = getattr(ws, "_recv_channel", None)
        try:
            while True:
                await trio.sleep(interval)
                with trio.move_on_after(timeout) as scope:
                    await ws.ping()
                if scope.cancelled_caught:
                    backlogged = isinstance(recv, trio.MemoryReceiveChannel) and (
                        recv.statistics().tasks_waiting_send > 0
                    )
                    if not backlogged:
                        live.pong_lost = True
                        raise Disconnected(f"no pong within {timeout:g} s")
        except ConnectionClosed:
            return  # the receive loop reports why

    async def _receive(self, ws: WebSocketConnection, session: Session) -> None:
        """Emit messages as they come, each batch holding whatever is already buffered.

        The draining reads trio-websocket's internal queue (``_recv_channel``);
        without it, each message is its own batch.
        """
        recv = getattr(ws, "_recv_channel", None)
        if not isinstance(recv, trio.MemoryReceiveChannel):
            recv = None
        notices: list[str] = []
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed as exc:
                raise await self._closed(exc.reason, session) from None
            batch: list[RawEvent] = []
            self._parse(message, batch, notices)
            if recv is not None:
                await self._drain(recv, batch, notices)
            await session.emit(batch)
            for notice in notices:
                await session.notice(notice)
            notices.clear()

    async def _drain(
        self,
        recv: trio.MemoryReceiveChannel[str | bytes],
        batch: list[RawEvent],
        notices: list[str],
    ) -> None:
        """Add what the library has queued to ``batch``, up to ``_BATCH`` events in all.

        The library's reader yields after queueing each message, so the queue
        rarely holds more than one when we look; one checkpoint per round
        lets it parse the next message of data already read, and the batch
        closes once two rounds in a row bring nothing (the reader waits for
        the network) -- no timer, no added latency beyond scheduling rounds.
        Two, because trio may run us before the reader within a round: with
        one, batches averaged 2.5 messages at full speed and the per-batch
        hand-off cost mux 10% of the library's throughput.
        """
        idle_rounds = 0
        while len(batch) < _BATCH:
            try:
                message = recv.receive_nowait()
            except trio.WouldBlock:
                # (An empty queue is seen this way, not with statistics(),
                # which builds an object per look: ~1 µs, 5% of a message.)
                if idle_rounds == 2:
                    return
                idle_rounds += 1
                await trio.lowlevel.checkpoint()
                continue
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return
            idle_rounds = 0
            self._parse(message, batch, notices)

    def _parse(self, message: str | bytes, batch: list[RawEvent], notices: list[str]) -> None:
        opts = self.options
        data: Any
        if opts.decode == "text":
            data = message if isinstance(message, str) else message.decode("utf-8", "replace")
        else:
            try:
                data = orjson.loads(message)
            except orjson.JSONDecodeError:
                if opts.decode == "json":
                    notices.append(f"skipped a message that is not JSON: {message[:80]!r}")
                    return
                data = message if isinstance(message, str) else message.decode("utf-8", "replace")
        id_: str | None = None
        event = "message"
        if isinstance(data, dict):
            if opts.id_field is not None:
                value = data.get(opts.id_field)
                if value is not None:
                    id_ = value if isinstance(value, str) else orjson.dumps(value).decode()
            if opts.event_field is not None:
                kind = data.get(opts.event_field)
                if kind is not None:
                    event = kind if isinstance(kind, str) else str(kind)
        batch.append((event, id_, data))

    async def _closed(self, reason: CloseReason | None, session: Session) -> SessionError:
        """Turn a close into the session's outcome."""
        if (
            reason is not None
            and reason.code == 1009
            and (reason.reason or "").startswith(_TOO_BIG_PREFIX)
        ):
            limit = self.options.max_message_bytes
            await session.notice(
                f"a message exceeded max_message_bytes ({limit}); connection closed with 1009"
            )
            return Disconnected("message too big (1009)")
        if reason is not None and reason.code == 1000 and self.options.end_on_close:
            return Ended(_close_detail(reason))
        return Disconnected(_close_detail(reason))


async def _send_close_frame(ws: WebSocketConnection) -> None:
    """Tell a live server we are leaving (close 1000), without waiting for its reply.

    The session only gets here with the connection still open when it is being
    cancelled (the source stops): the library's reader task, which would read
    the reply, is cancelled too, so ``ws.aclose()`` would just wait out its
    timeout. This uses the library's private ``_send``; without it, the socket
    is simply closed.
    """
    send = getattr(ws, "_send", None)
    if ws.closed is not None or send is None:
        return
    with trio.move_on_after(_CLOSE_TIMEOUT) as scope:
        scope.shield = True
        try:
            await send(CloseConnection(code=1000))
        except (ConnectionClosed, LocalProtocolError):
            pass


def _close_detail(reason: CloseReason | None) -> str:
    if reason is None:
        return "connection closed after a protocol error"
    if reason.code == 1006:
        return "connection lost (no close frame)"
    text = f": {reason.reason}" if reason.reason else ""
    return f"server closed the connection ({reason.code}{text})"


def _unwrap(group: BaseExceptionGroup[Any]) -> BaseException:
    """The one meaningful exception of a nursery's group, translated.

    Cancellations are left in the group (the canceller's scope needs them);
    a lone unexpected exception is raised as itself, a bug to report.
    """
    rest = group.subgroup(lambda exc: not isinstance(exc, trio.Cancelled))
    if rest is None:
        return group
    leaves = list(_leaves(rest))
    for exc in leaves:
        if isinstance(exc, SessionError):
            return exc
        if isinstance(exc, ConnectionRejected):
            return _rejected(exc)
    return leaves[0] if len(leaves) == 1 else group


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found.extend(_leaves(exc))
        else:
            found.append(exc)
    return found
