"""What the web sink's tests share: finding the sink in a running engine, an SSE reader."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import h11
import trio

from mux_core._run.engine import Engine
from mux_sse import SseParser
from mux_web import WebSink


async def web_sink(engine: Engine, name: str = "web", timeout: float = 10.0) -> WebSink:
    """The engine's web sink ``name``, once it serves."""
    with trio.fail_after(timeout):
        while True:
            for runner in engine._sinks:
                sink = runner.sink
                if runner.config.name == name and isinstance(sink, WebSink) and sink.server:
                    return sink
            await trio.sleep(0.01)


@attrs.frozen
class Frame:
    """One Server-Sent Event as a browser's EventSource would dispatch it; an
    event of records ("message") as one Frame per record (per line of its
    data), each with the event's id (the number of its last record)."""

    event: str
    id: str
    data: str


@attrs.define
class EventStream:
    """An open ``GET /events``: its status and headers, then its events as they come."""

    status: int
    headers: dict[str, str]
    stream: trio.SocketStream
    conn: h11.Connection
    parser: SseParser
    pending: list[Frame] = attrs.field(factory=list)
    ended: bool = False

    async def next(self) -> Frame | None:
        """The next event, or None once the server closed the stream."""
        while not self.pending:
            if self.ended:
                return None
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:  # closed mid-body: a dropped viewer
                self.ended = True
                continue
            if event is h11.NEED_DATA:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                self.conn.receive_data(data)
            elif isinstance(event, h11.Data):
                for kind, last_id, text in self.parser.feed(bytes(event.data)):
                    lines = text.split("\n") if kind == "message" else [text]
                    self.pending.extend(Frame(kind, last_id, line) for line in lines)
            else:  # EndOfMessage, ConnectionClosed
                self.ended = True
        return self.pending.pop(0)

    async def records(self, n: int) -> list[Frame]:
        """The next ``n`` record frames (events of type "message"), skipping hello/reset."""
        found: list[Frame] = []
        while len(found) < n:
            frame = await self.next()
            assert frame is not None, f"stream ended after {len(found)} of {n} records"
            if frame.event == "message":
                found.append(frame)
        return found


async def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll ``predicate`` (state another task changes without an event) until it holds."""
    with trio.fail_after(timeout):
        while True:
            if predicate():
                return
            await trio.sleep(0.01)


async def request(
    port: int,
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    """One whole request on a fresh connection: (status, headers lower-cased, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        all_headers = {"Host": f"127.0.0.1:{port}", "Content-Length": str(len(body))}
        all_headers.update(headers or {})
        data = conn.send(
            h11.Request(method=method, target=target, headers=list(all_headers.items()))
        )
        data = (data or b"") + (conn.send(h11.Data(data=body)) or b"") if body else (data or b"")
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)
        status = 0
        got: dict[str, str] = {}
        content = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                got = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                content += event.data
            else:
                return status, got, bytes(content)


@asynccontextmanager
async def event_stream(
    port: int, headers: dict[str, str] | None = None
) -> AsyncIterator[EventStream]:
    """``GET /events`` on a fresh connection, open for the block."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        all_headers = {"Host": f"127.0.0.1:{port}", "Accept": "text/event-stream"}
        all_headers.update(headers or {})
        await stream.send_all(
            (
                conn.send(
                    h11.Request(method="GET", target="/events", headers=list(all_headers.items()))
                )
                or b""
            )
            + (conn.send(h11.EndOfMessage()) or b"")
        )
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                headers_got = {k.decode().lower(): v.decode() for k, v in event.headers}
                parser = SseParser(empty_id="", json_data=False)
                yield EventStream(event.status_code, headers_got, stream, conn, parser)
                return
            else:
                raise AssertionError(f"unexpected {event!r}")
