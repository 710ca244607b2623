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

The end-to-end benchmark (``bench_e2e.py``) needs finite streams of realistic
events instead: ``python benchmarks/_servers.py metrics-KIND N`` serves N
~200-byte training-metric JSON payloads (:func:`metric_json`, steps 1 .. N,
the same bytes for every transport), built before ``PORT`` is printed, and
then ends the stream the way each protocol does:

``metrics-sse``  ``GET /events/TOKEN`` -- 200 text/event-stream, N ``data:``
                 events, then the connection closes; a second request for
                 the same TOKEN gets 204 No Content (the end of the stream).
``metrics-ws``   a WebSocket server (RFC 6455: handshake checked, client
                 frames unmasked, pings answered with pongs, close handshake):
                 N text messages, then a close frame with code 1000.
``metrics-rest`` HTTP/1.1 keep-alive; ``GET /page?after=K`` answers the JSON
                 list of the (up to) 1000 payloads with steps K+1 ..; ``[]``
                 past N.
``demo-sse``     as ``metrics-sse``, with the demo trainer's noisy records
                 (:func:`demo_payloads`): what a compressed recording holds.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import resource
import sys
import time
from collections.abc import Awaitable, Callable
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


# -- finite streams of training metrics (bench_e2e.py) --------------------


def _metric_tail(j: int) -> bytes:
    """The part of a metric payload after the step counters, for cycle index ``j``."""
    loss = 2.2 * math.exp(-j / 1500) + 0.35 + 0.02 * math.sin(j)
    tokens_per_s = 48000 + 2500 * math.sin(j / 13)
    return b'"loss":%r,"lr":%r,"grad_norm":%r,"tokens_per_s":%r,"samples_per_s":%r,' % (
        round(loss, 6),
        round(3e-4 * min(1.0, (j + 1) / 500), 8),
        round(0.6 + 0.4 * abs(math.cos(j / 7)), 5),
        round(tokens_per_s, 1),
        round(tokens_per_s / 2048, 3),
    ) + b'"gpu_mem_gb":%r,"elapsed_s":%r,"run":"llama-7b-sft-0042"}' % (
        37.0 + (j % 17) * 0.125,
        round(1.237 * j, 3),
    )


_METRIC_CYCLE = 4096
_METRIC_TAILS = [_metric_tail(j) for j in range(_METRIC_CYCLE)]


def metric_json(step: int) -> bytes:
    """The JSON of training-metric event ``step`` (~200 bytes, valid JSON, floats
    written as Python's repr so ``json.loads`` + ``json.dumps`` give the same text)."""
    return b'{"step":%d,"epoch":%d,"tokens":%d,%s' % (
        step,
        step // 100_000,
        step * 2048,
        _METRIC_TAILS[step % _METRIC_CYCLE],
    )


def demo_payloads(events: int, seed: int = 42) -> list[bytes]:
    """The demo trainer's records (``mux serve-demo``: noisy loss, lr, throughput,
    memory; an eval every 50 steps), steps 1 .. N, as JSON: ``demo-sse N`` serves
    them like ``metrics-sse`` (bench_file_zstd.py -- realistic noise, where
    :func:`metric_json` repeats every 4,096 steps and compresses unrealistically)."""
    import random

    from mux_demo.server import eval_record, training_record

    rng = random.Random(seed)
    out = []
    for step in range(1, events + 1):
        out.append(orjson.dumps(training_record(step, rng, total_steps=events)))
        if step % 50 == 0 and len(out) < events:
            out.append(orjson.dumps(eval_record(step, rng)))
        if len(out) >= events:
            break
    return out


def _chunks(frames: list[bytes], per_chunk: int = 1024) -> list[bytes]:
    """Whole frames joined into ~200 KiB sends (a pong may go between two)."""
    return [b"".join(frames[k : k + per_chunk]) for k in range(0, len(frames), per_chunk)]


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final server frame (RFC 6455 section 5.2)."""
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, size])
    elif size < 1 << 16:
        head = bytes([0x80 | opcode, 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + size.to_bytes(8, "big")
    return head + payload


class _MetricsSse:
    """N events per TOKEN once, then 204 No Content for that TOKEN."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.chunks = _chunks([b"data: %s\n\n" % p for p in payloads])
        self.served: set[str] = set()

    async def __call__(self, stream: trio.SocketStream) -> None:
        buffer = bytearray()
        head = await _read_head(stream, buffer)
        if head is None:
            return
        path, _ = _target(head)
        if path in self.served:
            await stream.send_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            return
        self.served.add(path)
        await stream.send_all(_SSE_HEAD)
        for chunk in self.chunks:
            await stream.send_all(chunk)


class _MetricsSseIds:
    """N events with ids 1 .. N, resumed after a request's Last-Event-ID; once a
    stream has sent event N, a request for more gets 204 No Content (the end)."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.events = [b"id: %d\ndata: %s\n\n" % (i, p) for i, p in enumerate(payloads, 1)]

    async def __call__(self, stream: trio.SocketStream) -> None:
        buffer = bytearray()
        head = await _read_head(stream, buffer)
        if head is None:
            return
        after = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"last-event-id" and value.strip().isdigit():
                after = int(value.strip())
        if after >= len(self.events):
            await stream.send_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            return
        await stream.send_all(_SSE_HEAD)
        for first in range(after, len(self.events), 1024):
            await stream.send_all(b"".join(self.events[first : first + 1024]))


class _WsClosed(Exception):
    """The client sent a close frame (its code and reason are echoed)."""

    def __init__(self, payload: bytes) -> None:
        super().__init__(payload)
        self.payload = payload


class _MetricsWs:
    """A small RFC 6455 server: N pre-built text frames, then close 1000."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.chunks = _chunks([ws_frame(0x1, p) for p in payloads])

    async def __call__(self, stream: trio.SocketStream) -> None:
        buffer = bytearray()
        head = await _read_head(stream, buffer)
        if head is None:
            return
        accept = self._accept(head)
        if accept is None:
            await stream.send_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        pending: list[bytes] = []  # control frames to send between two chunks
        client_closed = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_frames, stream, buffer, pending, client_closed)
            for chunk in self.chunks:
                if pending:
                    await stream.send_all(b"".join(pending))
                    pending.clear()
                if client_closed.is_set():
                    break
                await stream.send_all(chunk)
            if pending:
                await stream.send_all(b"".join(pending))
                pending.clear()
            if not client_closed.is_set():
                await stream.send_all(ws_frame(0x8, (1000).to_bytes(2, "big")))
                with trio.move_on_after(10):  # the client answers the close
                    await client_closed.wait()
            nursery.cancel_scope.cancel()

    @staticmethod
    def _accept(head: bytes) -> bytes | None:
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"GET "):
            return None
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if (
            headers.get(b"upgrade", b"").lower() != b"websocket"
            or b"upgrade" not in headers.get(b"connection", b"").lower()
            or headers.get(b"sec-websocket-version") != b"13"
            or not headers.get(b"sec-websocket-key")
        ):
            return None
        return base64.b64encode(hashlib.sha1(headers[b"sec-websocket-key"] + _WS_GUID).digest())

    @staticmethod
    async def _read_frames(
        stream: trio.SocketStream,
        buffer: bytearray,
        pending: list[bytes],
        client_closed: trio.Event,
    ) -> None:
        """Client frames: masked (RFC 6455 5.3); answer pings, note the close."""

        async def need(size: int) -> None:
            while len(buffer) < size:
                data = await stream.receive_some(65536)
                if not data:
                    raise trio.BrokenResourceError("the client closed the connection")
                buffer.extend(data)

        try:
            while True:
                await need(2)
                opcode, size, offset = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
                masked = buffer[1] & 0x80
                if size == 126:
                    await need(4)
                    size, offset = int.from_bytes(buffer[2:4], "big"), 4
                elif size == 127:
                    await need(10)
                    size, offset = int.from_bytes(buffer[2:10], "big"), 10
                mask = b""
                if masked:
                    await need(offset + 4)
                    mask, offset = bytes(buffer[offset : offset + 4]), offset + 4
                await need(offset + size)
                payload = bytes(buffer[offset : offset + size])
                del buffer[: offset + size]
                if mask:
                    payload = bytes(b ^ mask[k % 4] for k, b in enumerate(payload))
                if opcode == 0x9:  # ping -> pong with the same application data
                    pending.append(ws_frame(0xA, payload))
                elif opcode == 0x8:
                    if not client_closed.is_set():
                        pending.append(ws_frame(0x8, payload[:2]))
                    client_closed.set()
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            client_closed.set()


class _MetricsRest:
    """``GET /page?after=K``: the JSON list of the next (up to) 1000 payloads."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads = payloads

    async def __call__(self, stream: trio.SocketStream) -> None:
        buffer = bytearray()
        while True:
            head = await _read_head(stream, buffer)
            if head is None:
                return
            _, query = _target(head)
            after = max(0, int(query.get("after", ["0"])[0]))
            body = b"[" + b",".join(self.payloads[after : after + PAGE_SIZE]) + b"]"
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )


_METRICS: dict[str, Callable[[list[bytes]], Callable[[trio.SocketStream], Awaitable[None]]]] = {
    "metrics-sse": _MetricsSse,
    "metrics-sse-ids": _MetricsSseIds,
    "metrics-ws": _MetricsWs,
    "metrics-rest": _MetricsRest,
}


async def _guard(
    handler: Callable[[trio.SocketStream], Awaitable[None]], stream: trio.SocketStream
) -> None:
    try:
        async with stream:
            await handler(stream)
    except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
        pass  # the client went away: the normal end of a benchmark connection


async def serve(kind: str, events: int = 0) -> None:
    raise_nofile()
    handler: Callable[[trio.SocketStream], Awaitable[None]]
    if kind in _METRICS:
        handler = _METRICS[kind]([metric_json(step) for step in range(1, events + 1)])
    elif kind == "demo-sse":
        handler = _MetricsSse(demo_payloads(events))
    elif kind == "sse":
        handler = functools.partial(_serve_sse, blob=sse_blob())
    elif kind == "ws":
        handler = functools.partial(_serve_ws, blob=ws_blob())
    elif kind == "rest":
        handler = functools.partial(_serve_rest, pages=_Pages())
    else:
        raise SystemExit(f"unknown server kind {kind!r}")
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=65535)
    port = listeners[0].socket.getsockname()[1]
    print(f"PORT {port}", flush=True)

    async def handle(stream: trio.SocketStream) -> None:
        await _guard(handler, stream)

    await trio.serve_listeners(handle, listeners)


if __name__ == "__main__":
    trio.run(serve, sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
