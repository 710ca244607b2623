"""Raw misbehaving servers: scripted bytes over TCP, for testing what a client survives.

The fake SSE / REST / WS servers speak their protocol correctly and break it
in a few planned ways; a hostile server does not speak anything. It accepts
a connection on 127.0.0.1 (port 0), reads the request head (bounded), and
plays a *plan*: bytes to send, pauses, an endless flood, a close or a reset.
What a transport sees is exactly what a broken or malicious production
server would send, down to the byte::

    from mux_core.testing import Hangup, Send, serve_hostile, sse_head

    async with serve_hostile(
        [Send(b"data: hello\\n\\n")],                       # connection 1: not HTTP
        [Send(sse_head()), Send(b"data: ok\\n\\n"), Hangup()],  # 2 and later
    ) as server:
        ...  # point the transport at server.url("/events")
        await server.wait_for_connections(2)
        assert server.requests[1].headers[b"last-event-id"] == ...

Connection *n* plays plan *n*; once the plans run out the last one repeats.
Builders make the usual hostile payloads: :func:`http_head`, :func:`sse_head`,
:func:`chunk`, :func:`compressed` and :func:`compression_bomb` (or the
:class:`Bomb` step).
"""

from __future__ import annotations

import functools
import math
import socket
import ssl
import struct
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from http import HTTPStatus

import attrs
import trio

__all__ = [
    "Bomb",
    "Flood",
    "Hangup",
    "HostileRequest",
    "HostileServer",
    "Pause",
    "Plan",
    "Reset",
    "Send",
    "Step",
    "chunk",
    "compressed",
    "compression_bomb",
    "http_head",
    "serve_hostile",
    "sse_head",
]

#: A request head larger than this is not read further (the plan starts anyway).
_MAX_REQUEST_HEAD = 64 * 1024


@attrs.frozen
class Send:
    """Send these bytes as they are (a head, a body, garbage)."""

    data: bytes


@attrs.frozen
class Flood:
    """Send ``piece`` over and over: ``times`` times, or until the client goes away.

    An endless body, a header line that never ends, a page of gigabytes --
    without the server holding more than one piece in memory.
    """

    piece: bytes = b"x" * 65536
    #: How many times; None = until the client disconnects.
    times: int | None = None


@attrs.frozen
class Bomb:
    """Send :func:`compression_bomb` ``(size, coding)``: built when first played
    (in a thread, then cached), so defining a plan costs nothing."""

    size: int
    #: "gzip", "deflate" or "raw-deflate" (what the head's Content-Encoding must say).
    coding: str = "gzip"


@attrs.frozen
class Pause:
    """Send nothing for ``seconds`` (the default: until the client gives up)."""

    seconds: float = math.inf


@attrs.frozen
class Hangup:
    """Close the connection cleanly (FIN): the end of a close-delimited body."""


@attrs.frozen
class Reset:
    """Abort the connection (TCP RST): the client sees "connection reset"."""


Step = Send | Flood | Bomb | Pause | Hangup | Reset
#: What one connection gets, step by step; after the last step the connection
#: stays open (and silent) until the client closes it, unless it hung up or reset.
Plan = Sequence[Step]


@attrs.frozen
class HostileRequest:
    """The request head one connection sent, as raw bytes."""

    raw: bytes

    @property
    def line(self) -> str:
        """The request line, e.g. ``"GET /events HTTP/1.1"``."""
        return self.raw.split(b"\r\n", 1)[0].decode("latin-1")

    @property
    def headers(self) -> dict[bytes, bytes]:
        """Header values as sent, by lowercase name (a repeated one: the last)."""
        headers: dict[bytes, bytes] = {}
        for line in self.raw.split(b"\r\n")[1:]:
            name, colon, value = line.partition(b":")
            if colon:
                headers[name.strip().lower()] = value.strip(b" \t")
        return headers


def http_head(
    status: int = 200,
    headers: Mapping[str, str | bytes] | Sequence[tuple[str, str | bytes]] = (),
    *,
    reason: str = "",
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """A response head: status line, headers (as given: bytes are sent as they
    are), blank line. No header is added."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    lines = [b"%s %d %s" % (version, status, (reason or _reason(status)).encode("latin-1"))]
    for name, value in pairs:
        data = value if isinstance(value, bytes) else value.encode("latin-1")
        lines.append(name.encode("latin-1") + b": " + data)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def sse_head(*extra: tuple[str, str | bytes], chunked: bool = False) -> bytes:
    """``200 text/event-stream`` (close-delimited, or chunked) plus ``extra`` headers."""
    headers: list[tuple[str, str | bytes]] = [("Content-Type", "text/event-stream")]
    if chunked:
        headers.append(("Transfer-Encoding", "chunked"))
    return http_head(200, [*headers, *extra])


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of a chunked body (``b""`` gives the last chunk)."""
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b"0\r\n\r\n"


def compressed(data: bytes, coding: str = "gzip") -> bytes:
    """``data`` compressed as ``gzip``, ``deflate`` (zlib-wrapped) or ``raw-deflate``."""
    wbits = {"gzip": 31, "deflate": 15, "raw-deflate": -15}[coding]
    encoder = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return encoder.compress(data) + encoder.flush()


@functools.cache
def compression_bomb(size: int, coding: str = "gzip", *, fill: bytes = b"\0") -> bytes:
    """``size`` bytes of ``fill`` compressed (about 1,000 to 1): a few hundred KiB
    that a careless client inflates to ``size`` bytes at once. Cached: building
    a GiB bomb compresses a GiB once."""
    wbits = {"gzip": 31, "deflate": 15, "raw-deflate": -15}[coding]
    encoder = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = fill * (1024 * 1024 // len(fill))
    out: list[bytes] = []
    left = size
    while left > 0:
        piece = block if left >= len(block) else block[:left]
        out.append(encoder.compress(piece))
        left -= len(piece)
    out.append(encoder.flush())
    return b"".join(out)


@attrs.define(eq=False)
class HostileServer:
    """A listening socket on 127.0.0.1 playing plans; see the module docstring."""

    plans: list[Plan]
    #: Read the request head before playing (False: speak first, like an SSH server).
    read_request: bool = True
    tls: ssl.SSLContext | None = None
    port: int = 0
    #: Each connection's request head, in order of arrival.
    requests: list[HostileRequest] = attrs.Factory(list)
    #: Connections accepted so far.
    connections: int = 0
    _changed: trio.Event = attrs.Factory(trio.Event)

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT`` (https with ``tls``)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base + path

    async def wait_for_connections(self, count: int, *, timeout: float = 10.0) -> None:
        """Wait until ``count`` connections were accepted, failing after ``timeout``."""
        with trio.fail_after(timeout):
            while self.connections < count:
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _serve(self, stream: trio.SocketStream) -> None:
        plan = self.plans[min(self.connections, len(self.plans) - 1)]
        self.connections += 1
        self._notify()
        conn: trio.abc.Stream = stream
        reset = False
        try:
            if self.tls is not None:
                conn = trio.SSLStream(stream, self.tls, server_side=True)
            if self.read_request:
                self.requests.append(HostileRequest(await _read_head(conn)))
                self._notify()
            reset = await _play(conn, plan)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass  # the client went away: that is what clients do
        finally:
            if reset:  # closing with a zero linger time sends RST, not FIN
                linger = struct.pack("ii", 1, 0)
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            await trio.aclose_forcefully(conn)


async def _read_head(stream: trio.abc.Stream) -> bytes:
    buffer = b""
    while b"\r\n\r\n" not in buffer and len(buffer) < _MAX_REQUEST_HEAD:
        data = await stream.receive_some(65536)
        if not data:
            break
        buffer += data
    return buffer.split(b"\r\n\r\n", 1)[0]


async def _play(stream: trio.abc.Stream, plan: Plan) -> bool:
    """Play ``plan``; True when it ends in a reset."""
    for step in plan:
        if isinstance(step, Send):
            await stream.send_all(step.data)
        elif isinstance(step, Flood):
            count = 0
            while step.times is None or count < step.times:
                await stream.send_all(step.piece)
                count += 1
        elif isinstance(step, Bomb):
            bomb = await trio.to_thread.run_sync(compression_bomb, step.size, step.coding)
            await stream.send_all(bomb)
        elif isinstance(step, Pause):
            await trio.sleep(step.seconds)
        else:  # Hangup or Reset: the connection ends here
            return isinstance(step, Reset)
    # No explicit end: stay silent until the client closes.
    while await stream.receive_some(65536):
        pass
    return False


@asynccontextmanager
async def serve_hostile(
    *plans: Plan, read_request: bool = True, tls: ssl.SSLContext | None = None
) -> AsyncIterator[HostileServer]:
    """Serve ``plans`` on 127.0.0.1 (a free port) for the body of the ``async with``.

    Connection *n* plays ``plans[n]`` (the last plan repeats). With ``tls``
    (a server context) the bytes go through TLS.
    """
    if not plans:
        raise ValueError("serve_hostile needs at least one plan")
    server = HostileServer(list(plans), read_request=read_request, tls=tls)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, server._serve, 0, host="127.0.0.1")
        )
        server.port = listeners[0].socket.getsockname()[1]
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Whatever"
