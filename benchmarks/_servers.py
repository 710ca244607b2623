"""Load servers for the benchmarks, each meant to run in its own process.

Run as ``python benchmarks/_servers.py KIND`` (KIND: ``sse``, ``ws``,
``rest``); the process prints ``PORT <n>`` once listening on 127.0.0.1 and
serves until killed. A separate process, so the server and the client under
test do not share one core and one event loop.

The servers are raw trio sockets writing pre-built bytes, as fast as the
kernel takes them; they parse just enough of each request to answer:

``sse``  ``GET /blast``  -- 200 text/event-stream, then the same ~1 MiB of
         small JSON events over and over, until the client goes away.
         ``GET /idle``   -- 200 text/event-stream, one comment, then silence.
         ``GET /tick?rate=1000`` -- one event per 1/rate s, whose data is
         ``{"t": <time.perf_counter_ns() when sent>}`` (CLOCK_MONOTONIC:
         comparable across processes on Linux).
``ws``   a WebSocket handshake, then pre-built text frames of small JSON
         messages forever; any byte from the client ends the connection.
``rest`` HTTP/1.1 keep-alive; ``GET /page?after=K`` answers the JSON list of
         the 1000 items with ids K+1 .. K+1000.
"""

from __future__ import annotations

import base64
import hashlib
import resource
import sys
import time
from urllib.parse import parse_qs, urlsplit

import orjson
import trio

_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Cache-Control: no-store\r\nConnection: close\r\n\r\n"
)
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Events per pre-built SSE/WS blob (~1 MiB).
_BLOB_EVENTS = 32_768
PAGE_SIZE = 1000


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard one; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def event_payload(i: int) -> bytes:
    """The JSON of the i-th benchmark event (~40 bytes, like a training metric)."""
    return b'{"step":%d,"loss":0.3141,"lr":0.001}' % i


def sse_blob() -> bytes:
    return b"".join(b"data: %s\n\n" % event_payload(i) for i in range(_BLOB_EVENTS))


def ws_blob() -> bytes:
    frames = []
    for i in range(_BLOB_EVENTS):
        payload = event_payload(i)
        assert len(payload) < 126
        frames.append(b"\x81" + bytes([len(payload)]) + payload)
    return b"".join(frames)


async def _read_head(stream: trio.SocketStream, buffer: bytearray) -> bytes | None:
    """One request head (up to the blank line) from ``buffer`` + the stream; None at EOF."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buffer[:end])
            del buffer[: end + 4]
            return head
        data = await stream.receive_some(65536)
        if not data:
            return None
        buffer += data


def _target(head: bytes) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(head.split(b"\r\n", 1)[0].split(b" ")[1].decode())
    return parts.path, parse_qs(parts.query)


async def _until_client_speaks(stream: trio.SocketStream, scope: trio.CancelScope) -> None:
    try:
        await stream.receive_some(1)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()


async def _serve_sse(stream: trio.SocketStream, blob: bytes) -> None:
    buffer = bytearray()
    head = await _read_head(stream, buffer)
    if head is None:
        return
    path, query = _target(head)
    await stream.send_all(_SSE_HEAD)
    if path == "/blast":
        while True:
            await stream.send_all(blob)
    elif path == "/idle":
        await stream.send_all(b": connected\n\n")
        while await stream.receive_some(4096):  # until the client closes: no fd leaks
            pass
    elif path == "/tick":
        period = 1.0 / float(query.get("rate", ["1000"])[0])
        next_at = trio.current_time()
        while True:
            next_at += period
            await trio.sleep_until(next_at)
            await stream.send_all(b'data: {"t":%d}\n\n' % time.perf_counter_ns())


async def _serve_ws(stream: trio.SocketStream, blob: bytes) -> None:
    buffer = bytearray()
    head = await _read_head(stream, buffer)
    if head is None:
        return
    key = b""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_until_client_speaks, stream, nursery.cancel_scope)
        while True:
            await stream.send_all(blob)


class _Pages:
    """REST pages by cursor, built once each."""

    def __init__(self) -> None:
        self._cache: dict[int, bytes] = {}

    def response(self, after: int) -> bytes:
        cached = self._cache.get(after)
        if cached is None:
            items = [
                {"id": k, "step": k, "loss": 0.3141, "lr": 0.001}
                for k in range(after + 1, after + 1 + PAGE_SIZE)
            ]
            body = orjson.dumps(items)
            cached = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)
            ) + body
            if len(self._cache) < 2000:
                self._cache[after] = cached
        return cached


async def _serve_rest(stream: trio.SocketStream, pages: _Pages) -> None:
    buffer = bytearray()
    while True:
        head = await _read_head(stream, buffer)
        if head is None:
            return
        _, query = _target(head)
        after = int(query.get("after", ["0"])[0])
        await stream.send_all(pages.response(after))


async def _guard(handler, stream: trio.SocketStream, *args: object) -> None:  # type: ignore[no-untyped-def]
    try:
        async with stream:
            await handler(stream, *args)
    except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
        pass  # the client went away: the normal end of a benchmark connection


async def serve(kind: str) -> None:
    raise_nofile()
    if kind == "sse":
        handler, extra = _serve_sse, sse_blob()
    elif kind == "ws":
        handler, extra = _serve_ws, ws_blob()
    elif kind == "rest":
        handler, extra = _serve_rest, _Pages()
    else:
        raise SystemExit(f"unknown server kind {kind!r}")
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=65535)
    port = listeners[0].socket.getsockname()[1]
    print(f"PORT {port}", flush=True)

    async def handle(stream: trio.SocketStream) -> None:
        await _guard(handler, stream, extra)

    await trio.serve_listeners(handle, listeners)


if __name__ == "__main__":
    trio.run(serve, sys.argv[1])
