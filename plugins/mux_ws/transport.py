"""The WebSocket transport: websockets' sans-I/O ``ClientProtocol`` over a trio stream.

A session opens the TCP (or TLS) stream itself, runs the upgrade (see
:mod:`mux_ws._handshake`), optionally sends a subscribe text, then loops on
one task: read the socket, split the read into messages (the plain data
frames directly, everything else through the protocol: see
:mod:`mux_ws._frames`), hand every complete message of that read to the core
as ONE batch of raw bytes, write what the protocol answers (pongs, the close
echo). The heartbeat lives in the same loop, as deadlines on the read, so
there is no second task, no lock and no queue between the socket and the
core. trio-websocket (wsproto, a reader task and a message queue) delivered
~57k msg/s here; this loop delivers several hundred thousand
(benchmarks/bench_ws_throughput.py, bench_e2e.py).

How a session ends, and what the supervisor is told::

    handshake 401/403/404/410, other 4xx, 2xx/3xx, bad URL      -> Failed
    refused, reset, timeout, TLS, not HTTP, a bad 101,
        5xx/408/429 (Retry-After kept)                          -> ServerUnavailable
    close frame, lost connection, missed pong, protocol error,
        a message over max_message_bytes (mux closes, 1009)     -> Disconnected
    close 1000 with end_on_close                                -> Ended

Hostile servers: compression (permessage-deflate) is offered only with
``compression = "deflate"``, and then a message is inflated at most to
``max_message_bytes`` (websockets inflates with that bound and fails the
message past it: a deflate bomb costs its limit, not gigabytes); a frame
larger than ``max_message_bytes`` is refused from its header, before its
payload is buffered; a non-101 answer is judged by its head alone (an
endless body is never read); text frames that are not valid UTF-8 are kept
(invalid bytes read as U+FFFD when decoded, as in the SSE transport) rather
than failing the connection, so one bad byte cannot loop a resuming stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
import msgspec

from mux_core import Transport
from mux_core.errors import (
    Disconnected,
    Ended,
    Failed,
    ServerUnavailable,
    SessionError,
    describe_connection_error,
)
from mux_core.options import non_negative, positive, raise_problems, secret
from mux_core.payload import JsonFields, is_json
from mux_core.transport import RawEvent, Session

from ._handshake import (
    READ_SIZE,
    HandshakeProgress,
    Target,
    handshake,
    new_protocol,
    open_stream,
    options_problem,
    parse_target,
    preview,
)

# trio, ssl and websockets (and _frames, which imports it) are imported where a
# connection uses them: loading the plugin (every mux command does) and
# checking its options (mux check) pay for none of them.
if TYPE_CHECKING:
    import ssl

    import trio
    from websockets.client import ClientProtocol

__all__ = ["WsOptions", "WsTransport"]

#: Seconds allowed to write the close frame before the socket is cut.
_CLOSE_TIMEOUT = 1.0


@attrs.frozen(kw_only=True)
class WsOptions:
    """Config keys of a ``transport = "ws"`` source."""

    #: The endpoint, ``ws://`` or ``wss://``.
    url: str
    #: Extra HTTP headers of the handshake request (Authorization, ...); printable ASCII.
    headers: dict[str, str] = attrs.field(factory=dict, metadata=secret())
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
    decode: Literal["auto", "json", "text"] = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "json", "text"))
    )
    #: Seconds between pings; 0 disables the heartbeat.
    ping_interval: float = attrs.field(default=20.0, validator=non_negative(note="0 disables it"))
    #: Seconds to wait for the pong before the connection is declared dead (time mux
    #: spends waiting for its own sinks does not count); also the longest a write may take.
    ping_timeout: float = attrs.field(default=20.0, validator=positive())
    #: Largest message accepted, in bytes (all fragments of it); a larger one is refused
    #: from its frame header, before it is read, and mux closes the connection with 1009.
    max_message_bytes: int = attrs.field(default=8 * 1024 * 1024, validator=positive())
    #: Treat a close with code 1000 as the end of the stream (state "ended") instead of a
    #: disconnection to retry.
    end_on_close: bool = False
    #: "deflate": offer permessage-deflate (RFC 7692), so a server that supports it sends
    #: compressed messages; each is inflated at most to max_message_bytes. "none": offer
    #: nothing (the default).
    compression: Literal["none", "deflate"] = attrs.field(
        default="none", validator=attrs.validators.in_(("none", "deflate"))
    )
    #: Check the server's TLS certificate (wss://) against the system's trust store,
    #: or ``ca_file``; false checks nothing (mux warns at check and at start).
    verify: bool = True
    #: A PEM file of the CAs to trust instead of the system's (a private CA, a
    #: self-signed server's certificate).
    ca_file: str | None = None

    @classmethod
    def check(cls, options: WsOptions) -> None:
        """Reject what no connection attempt could fix (a bad URL, header or CA file)
        before any I/O."""
        from mux_core.http import clean_headers, tls_problem

        raise_problems(
            [
                options_problem(options.url, clean_headers(options.headers)),
                tls_problem(verify=options.verify, ca_file=options.ca_file),
            ]
        )


class _Connection:
    """One open connection: the stream, the protocol, and a message being reassembled."""

    def __init__(self, stream: trio.abc.Stream, protocol: ClientProtocol, write_timeout: float):
        self.stream = stream
        self.protocol = protocol
        self.write_timeout = write_timeout
        #: The message whose final frame has not arrived yet. One growing buffer, not a
        #: list of fragments: a flood of empty fragments must not grow memory.
        self.parts: bytearray | None = None
        #: False once the peer is known dead: no close frame is attempted.
        self.polite = True

    async def flush(self) -> None:
        """Write what the protocol has queued (pongs, pings, close frames).

        A server that stops reading makes this block: after ``write_timeout``
        the connection is given up.
        """
        import trio

        data = b"".join(self.protocol.data_to_send())  # SEND_EOF is b"": nothing to join
        if not data:
            return
        with trio.move_on_after(self.write_timeout) as scope:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return  # the read side reports how the connection ended
        if scope.cancelled_caught:
            self.polite = False
            raise Disconnected(
                "the server stopped reading: a write did not finish"
                f" within {self.write_timeout:g} s"
            )

    async def finish(self) -> None:
        """Say goodbye (close 1000 if still open), without waiting for the reply, and
        close the socket. Runs shielded: it is what a cancelled session does last."""
        import trio
        from websockets.protocol import OPEN

        with trio.CancelScope(shield=True):
            if self.polite:
                protocol = self.protocol
                if protocol.state is OPEN:
                    protocol.send_close(1000)
                data = b"".join(protocol.data_to_send())
                if data:
                    with trio.move_on_after(_CLOSE_TIMEOUT):
                        try:
                            await self.stream.send_all(data)
                        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                            pass
            await trio.aclose_forcefully(self.stream)


class _Heartbeat:
    """Ping deadlines, checked by the receive loop around its reads."""

    def __init__(self, interval: float, timeout: float) -> None:
        import trio

        self.interval = interval
        self.timeout = timeout
        self.next_ping = trio.current_time() + interval
        self.pong_due = math.inf
        self.payload = b""
        self._count = 0

    @property
    def deadline(self) -> float:
        return min(self.next_ping, self.pong_due)

    def due(self, conn: _Connection, now: float) -> None:
        """Ping when it is time; raise Disconnected when the pong is overdue."""
        if now >= self.pong_due:
            conn.polite = False  # the peer is gone: no close frame, no wait
            raise Disconnected(f"no pong within {self.timeout:g} s")
        if now >= self.next_ping:
            self._count += 1
            self.payload = b"mux-%d" % self._count
            conn.protocol.send_ping(self.payload)
            self.pong_due = now + self.timeout
            self.next_ping = math.inf

    def pong(self, data: bytes | bytearray) -> None:
        import trio

        if data == self.payload and self.pong_due != math.inf:
            self.pong_due = math.inf
            self.next_ping = trio.current_time() + self.interval


class WsTransport(Transport):
    """Receive WebSocket messages as events; see the module docstring for the states."""

    Options = WsOptions

    def __init__(self, options: WsOptions) -> None:
        from mux_core.http import clean_headers

        self.options = options
        self._headers = clean_headers(options.headers)
        self._problem = options_problem(options.url, self._headers)
        # One key may be both the id and the type: read it once.
        names = list(dict.fromkeys(n for n in (options.id_field, options.event_field) if n))
        self._fields = JsonFields(names) if names and options.decode != "text" else None
        # verify = false is said once, when the source starts.
        self._unverified_warned = options.verify

    async def run_session(self, session: Session) -> None:
        from mux_core.http import shared_tls_context, warn_unverified

        opts = self.options
        if self._problem:
            raise Failed(self._problem)
        if not self._unverified_warned:
            self._unverified_warned = True
            warn_unverified(f"source {session.source!r}")
        url = opts.url
        last_id = session.resume.last_id
        if opts.resume_param and last_id is not None:
            url = _with_query_param(url, opts.resume_param, last_id)
        try:
            target = parse_target(url)
        except ValueError as exc:
            raise Failed(str(exc)) from None
        protocol = new_protocol(
            target, self._headers, opts.max_message_bytes, deflate=opts.compression == "deflate"
        )
        tls = None
        if target.tls:
            tls = await shared_tls_context(session, verify=opts.verify, ca_file=opts.ca_file)
        stream, first = await self._open(session, target, protocol, tls)
        conn = _Connection(stream, protocol, opts.ping_timeout)
        try:
            await self._subscribe(conn, session)
            await session.connected()
            await self._receive(conn, session, first)
        finally:
            await conn.finish()

    async def _open(
        self,
        session: Session,
        target: Target,
        protocol: ClientProtocol,
        tls: ssl.SSLContext | None,
    ) -> tuple[trio.abc.Stream, bytes]:
        """Connect and upgrade within the connect timeout (TCP, TLS and handshake).

        The deadline is a hair earlier than the supervisor's own, so that this
        session says what it was waiting for instead of "no connection".
        """
        import trio

        timeout = session.connect_timeout
        deadline = trio.current_time() + timeout - min(0.01 * timeout, 0.1)
        progress = HandshakeProgress()
        stream: trio.abc.Stream | None = None
        with trio.move_on_at(deadline):
            stream = await open_stream(target, tls)
            try:
                return stream, await handshake(stream, protocol, progress)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        if stream is None:
            raise ServerUnavailable(f"connect timed out after {timeout:g} s")
        await trio.aclose_forcefully(stream)
        if not progress.received:
            raise ServerUnavailable(f"no handshake response within {timeout:g} s")
        raise ServerUnavailable(
            f"the handshake answer did not complete within {timeout:g} s"
            f" ({progress.received} bytes received)"
        )

    async def _subscribe(self, conn: _Connection, session: Session) -> None:
        from websockets.protocol import OPEN

        if self.options.subscribe is None:
            return
        text = self.options.subscribe.replace("{last_id}", session.resume.last_id or "")
        if conn.protocol.state is OPEN:  # a close may have come with the handshake
            conn.protocol.send_text(text.encode())
            await conn.flush()

    async def _receive(self, conn: _Connection, session: Session, first: bytes) -> None:
        """Read, parse, emit one batch per read, answer; until the connection ends."""
        import trio
        from websockets.protocol import OPEN

        from ._frames import FrameSplitter

        opts = self.options
        protocol = conn.protocol
        receive_some = conn.stream.receive_some
        splitter = FrameSplitter(protocol, opts.max_message_bytes)
        feed = splitter.feed
        events = feed(first) if first else []
        heartbeat = None
        if opts.ping_interval:
            heartbeat = _Heartbeat(opts.ping_interval, opts.ping_timeout)
        while True:
            if events:
                payloads = self._messages(events, conn, heartbeat)
                if payloads:
                    await self._emit(session, payloads, heartbeat)
            await conn.flush()  # pongs, the close echo or mux's own close frame, if any
            if protocol.state is not OPEN:
                raise await self._outcome(protocol, session)
            try:
                if heartbeat is None:
                    data = await receive_some(READ_SIZE)
                else:
                    now = trio.current_time()
                    if now >= heartbeat.deadline:
                        heartbeat.due(conn, now)
                        await conn.flush()
                    with trio.move_on_at(heartbeat.deadline) as scope:
                        data = await receive_some(READ_SIZE)
                    if scope.cancelled_caught:
                        heartbeat.due(conn, trio.current_time())
                        await conn.flush()
                        events = []
                        continue
            except (trio.BrokenResourceError, OSError) as exc:
                raise Disconnected(_lost_detail(exc)) from None
            if len(data):
                events = feed(data if type(data) is bytes else bytes(data))
            else:
                protocol.receive_eof()
                events = protocol.events_received()

    def _messages(
        self, events: list[Any], conn: _Connection, heartbeat: _Heartbeat | None
    ) -> list[bytes]:
        """The complete messages among ``events`` (messages the splitter cut out,
        frames from the protocol), as bytes, in order."""
        from websockets.frames import BINARY, CONT, PONG, TEXT

        payloads: list[bytes] = []
        append = payloads.append
        for frame in events:
            if type(frame) is bytes:
                append(frame)
                continue
            op = frame.opcode
            if op is TEXT or op is BINARY:
                if frame.fin:
                    append(bytes(frame.data))
                else:
                    conn.parts = bytearray(frame.data)
            elif op is CONT:
                parts = conn.parts
                if parts is not None:  # the protocol guarantees it; mypy does not know
                    parts += frame.data
                    if frame.fin:
                        append(bytes(parts))
                        conn.parts = None
            elif op is PONG and heartbeat is not None:
                heartbeat.pong(frame.data)
            # PING is answered by the protocol itself, CLOSE is handled by _outcome.
        return payloads

    async def _emit(
        self, session: Session, payloads: list[bytes], heartbeat: _Heartbeat | None
    ) -> None:
        """Hand the messages of one read to the core as one batch.

        While a pong is awaited, the time spent here (a slow sink holding the
        batch) is added to its deadline: that wait is mux's, not the server's.
        """
        waiting = heartbeat is not None and heartbeat.pong_due != math.inf
        started = 0.0
        if waiting:  # only then is the clock read; a read pays no import otherwise
            import trio

            started = trio.current_time()
        notices: list[str] = []
        opts = self.options
        items: Any
        if self._fields is not None:
            items = self._with_fields(payloads, notices)
        elif opts.decode == "auto":
            items = zip(repeat("message"), repeat(None), payloads, strict=False)
        elif opts.decode == "text":
            texts = [raw.decode("utf-8", "replace") for raw in payloads]
            items = zip(repeat("message"), repeat(None), texts, strict=False)
        else:
            good: list[bytes] = []
            skipped: list[bytes] = []
            for raw in payloads:
                (good if is_json(raw) else skipped).append(raw)
            _notice_skipped(notices, skipped)
            items = zip(repeat("message"), repeat(None), good, strict=False)
        await session.emit(items)
        for notice in notices:
            await session.notice(notice)
        if waiting and heartbeat is not None:
            heartbeat.pong_due += trio.current_time() - started

    def _with_fields(self, payloads: list[bytes], notices: list[str]) -> list[RawEvent]:
        """Events with their id and type read from the JSON object, the rest left as bytes."""
        fields = self._fields
        assert fields is not None
        opts = self.options
        strict = opts.decode == "json"
        has_id = opts.id_field is not None
        has_event = opts.event_field is not None
        items: list[RawEvent] = []
        skipped: list[bytes] = []
        for raw in payloads:
            found = fields.read(raw)
            if found is None:
                if strict and not is_json(raw):
                    skipped.append(raw)
                    continue
                items.append(("message", None, raw))
                continue
            id_: str | None = None
            event = "message"
            if has_id:
                value = found[0]
                if value is not None:
                    id_ = _id_text(value)
            if has_event:
                kind = found[-1]
                if kind is not None:
                    event = kind if isinstance(kind, str) else str(kind)
            items.append((event, id_, raw))
        _notice_skipped(notices, skipped)
        return items

    async def _outcome(self, protocol: ClientProtocol, session: Session) -> SessionError:
        """Why the connection is no longer open, as the session's outcome."""
        from websockets.exceptions import PayloadTooBig, ProtocolError

        rcvd = protocol.close_rcvd
        exc = protocol.parser_exc
        if rcvd is not None:
            if rcvd.code == 1000 and self.options.end_on_close:
                return Ended(_close_detail(rcvd.code, rcvd.reason))
            return Disconnected(_close_detail(rcvd.code, rcvd.reason))
        if isinstance(exc, PayloadTooBig):
            limit = self.options.max_message_bytes
            await session.notice(
                f"a message exceeded max_message_bytes ({limit}); connection closed with 1009"
            )
            return Disconnected(
                f"mux closed the connection (1009): a message exceeded max_message_bytes ({limit})"
            )
        if isinstance(exc, ProtocolError):
            return Disconnected(
                f"the server broke the WebSocket protocol ({exc}); mux closed the connection (1002)"
            )
        if isinstance(exc, UnicodeDecodeError):
            return Disconnected(
                "the server's close reason is not UTF-8; mux closed the connection (1007)"
            )
        if isinstance(exc, EOFError) or exc is None:
            return Disconnected("connection lost (no close frame)")
        return Disconnected(f"mux could not read the server's frames ({exc}); connection closed")


def _id_text(value: Any) -> str:
    """An id as a string: strings as they are, numbers exactly as written (no float)."""
    if isinstance(value, str):
        return value
    if type(value) is int:
        return str(value)
    return msgspec.json.encode(value).decode()


def _notice_skipped(notices: list[str], skipped: Sequence[bytes]) -> None:
    if not skipped:
        return
    first = preview(skipped[0])
    if len(skipped) == 1:
        notices.append(f"skipped a message that is not JSON: {first}")
    else:
        notices.append(f"skipped {len(skipped)} messages that are not JSON (the first: {first})")


def _close_detail(code: int, reason: str) -> str:
    text = f": {preview(reason.encode(), 123)[1:-1]}" if reason else ""
    return f"server closed the connection ({code}{text})"


def _lost_detail(exc: BaseException) -> str:
    return describe_connection_error(exc) or "connection lost (no close frame)"


def _with_query_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name]
    query.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(query)))
