"""SseTransport sessions against a real HTTP server on 127.0.0.1.

The server is a few lines of trio writing raw HTTP/1.1, so a test can send
exact bytes, garbage, a stall or a dropped connection. Each test drives one
session (or two) directly and checks how it ended and what it emitted.
"""

from __future__ import annotations

import email.utils
import functools
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio

import mux_sse
from mux_core.errors import Disconnected, Ended, Failed, ServerUnavailable, SessionError
from mux_core.http import parse_retry_after
from mux_core.records import (
    Event,
    Record,
    State,
    Status,
)
from mux_core.transport import ResumeState, Session, SharedResources
from mux_sse import SseOptions, SseTransport

Respond = Callable[[trio.SocketStream, int], Awaitable[None]]


def head(
    status: str = "200 OK", content_type: str | None = "text/event-stream", extra: str = ""
) -> bytes:
    """A response head whose body runs until the server closes the connection."""
    lines = [f"HTTP/1.1 {status}", "Connection: close", "Cache-Control: no-store"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


@attrs.define
class Server:
    """Accepts connections, records each request's headers, answers with ``respond``."""

    respond: Respond
    requests: list[dict[str, str]] = attrs.Factory(list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            buffer = b""
            while b"\r\n\r\n" not in buffer:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                buffer += chunk
            lines = buffer.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)
            }
            self.requests.append(headers)
            await self.respond(stream, len(self.requests))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()


async def serve(nursery: trio.Nursery, respond: Respond) -> Server:
    server = Server(respond)
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, server._handle, 0, host="127.0.0.1")
    )
    server.port = listeners[0].socket.getsockname()[1]
    return server


def sends(*parts: bytes) -> Respond:
    """A server that writes ``parts`` one send at a time, then closes."""

    async def respond(stream: trio.SocketStream, _: int) -> None:
        for part in parts:
            await stream.send_all(part)

    return respond


@pytest.fixture
async def shared() -> AsyncIterator[SharedResources]:
    resources = SharedResources()
    yield resources
    await resources.aclose()


@attrs.define
class Outcome:
    error: SessionError
    records: list[Record]
    batches: list[list[Record]]

    @property
    def events(self) -> list[Event]:
        return [r for r in self.records if isinstance(r, Event)]

    @property
    def statuses(self) -> list[Status]:
        return [r for r in self.records if isinstance(r, Status)]


async def run_session(
    shared: SharedResources,
    url: str,
    *,
    resume: ResumeState | None = None,
    connect_timeout: float = 5.0,
    **options: Any,
) -> Outcome:
    """Run one session to its end and return how it ended and what it sent."""
    batches: list[list[Record]] = []

    async def send(batch: Any) -> None:
        batches.append(list(batch))

    session = Session(
        source="s",
        transport="sse",
        resume=resume if resume is not None else ResumeState(),
        connect_timeout=connect_timeout,
        shared=shared,
        send=send,
        attempt=1,
    )
    transport = SseTransport(SseOptions(url=url, **options))
    with trio.fail_after(10):
        with pytest.raises(SessionError) as caught:
            await transport.run_session(session)
    return Outcome(caught.value, [r for b in batches for r in b], batches)


# -- streaming ----------------------------------------------------------------


async def test_stream_events_then_server_closes(
    nursery: trio.Nursery, shared: SharedResources
) -> None:
    server = await serve(
        nursery,
        sends(
            head(content_type="Text/Event-Stream; charset=utf-8"),
            b': hello\n\nid: 1\nevent: metric\ndata: {"step": 1}\n\n',
            b"data: plain text\n\ndata: 42\n\n",
            b"id: 2\ndata: [1,\ndata: 2]\n\ndata: unterminated",
        ),
    )
    resume = ResumeState()
    out = await run_session(shared, server.url, resume=resume)
    assert isinstance(out.error, Disconnected)
    assert out.error.detail == "server closed the stream"
    assert out.statuses[0].state is State.CONNECTED
    assert [(e.event, e.id, e.data) for e in out.events] == [
        ("metric", "1", {"step": 1}),
        ("message", "1", "plain text"),
        ("message", "1", 42),
        ("message", "2", [1, 2]),
    ]
    assert [e.seq for e in out.events] == [1, 2, 3, 4]
    assert resume.last_id == "2"
    request = server.requests[0]
    assert request["accept"] == "text/event-stream"
    assert request["cache-control"] == "no-store"
    assert "last-event-id" not in request


async def test_reconnect_sends_last_event_id_and_events_keep_it(
    nursery: trio.Nursery, shared: SharedResources
) -> None:
    async def respond(stream: trio.SocketStream, n: int) -> None:
        await stream.send_all(head())
        if n == 1:
            await stream.send_all(b"id: 41\ndata: a\n\nid: 42\n\n")  # id-only event at the end
        else:
            await stream.send_all(b"data: b\n\n")

    server = await serve(nursery, respond)
    resume = ResumeState()
    first = await run_session(shared, server.url, resume=resume, headers={"X-Token": "t"})
    assert [e.id for e in first.events] == ["41"]
    assert resume.last_id == "42"  # updated although no event carried it
    second = await run_session(shared, server.url, resume=resume, headers={"X-Token": "t"})
    assert server.requests[1]["last-event-id"] == "42"
    assert server.requests[1]["x-token"] == "t"
    assert [(e.id, e.data) for e in second.events] == [("42", "b")]


async def test_empty_id_clears_resume_id(nursery: trio.Nursery, shared: SharedResources) -> None:
    server = await serve(nursery, sends(head(), b"id: 5\ndata: a\n\nid\ndata: b\n\n"))
    resume = ResumeState(last_id="4")
    out = await run_session(shared, server.url, resume=resume)
    assert [e.id for e in out.events] == ["5", None]
    assert resume.last_id is None


async def test_one_batch_per_read(nursery: trio.Nursery, shared: SharedResources) -> None:
    sent = trio.Event()
    got_first = trio.Event()

    async def respond(stream: trio.SocketStream, _: int) -> None:
        await stream.send_all(head() + b"data: 1\n\ndata: 2\n\ndata: 3\n\n")
        await got_first.wait()
        await stream.send_all(b"data: 4\n\n")
        sent.set()

    server = await serve(nursery, respond)
    batches: list[list[Record]] = []

    async def send(batch: Any) -> None:
        batches.append(list(batch))
        if any(isinstance(r, Event) for r in batch):
            got_first.set()

    session = Session(
        source="s", transport="sse", resume=ResumeState(), connect_timeout=5,
        shared=shared, send=send, attempt=1,
    )  # fmt: skip
    with trio.fail_after(10), pytest.raises(Disconnected):
        await SseTransport(SseOptions(url=server.url)).run_session(session)
    event_batches = [[r.data for r in b if isinstance(r, Event)] for b in batches]
    event_batches = [b for b in event_batches if b]
    assert event_batches[0] == [1, 2, 3]  # the three events of the first read, together
    assert event_batches[-1] == [4]


async def test_retry_field_sets_retry_hint(nursery: trio.Nursery, shared: SharedResources) -> None:
    server = await serve(nursery, sends(head(), b"retry: 2500\n\ndata: x\n\n"))
    resume = ResumeState()
    await run_session(shared, server.url, resume=resume)
    assert resume.retry_hint == 2.5


async def test_decode_text_keeps_strings(nursery: trio.Nursery, shared: SharedResources) -> None:
    server = await serve(nursery, sends(head(), b'data: 42\n\ndata: {"a": 1}\n\n'))
    out = await run_session(shared, server.url, decode="text")
    assert [e.data for e in out.events] == ["42", '{"a": 1}']


async def test_decode_json_reports_non_json_once(
    nursery: trio.Nursery, shared: SharedResources
) -> None:
    server = await serve(nursery, sends(head(), b"data: 1\n\ndata: oops\n\ndata: nope\n\n"))
    out = await run_session(shared, server.url, decode="json")
    assert [e.data for e in out.events] == [1, "oops", "nope"]
    notices = [s.detail for s in out.statuses if "not JSON" in s.detail]
    assert len(notices) == 1


async def test_oversized_event_is_skipped_with_a_notice(
    nursery: trio.Nursery, shared: SharedResources
) -> None:
    big = b"data: " + b"x" * 5000 + b"\n\n"
    server = await serve(nursery, sends(head(), b"data: a\n\n", big, b"data: b\n\n"))
    out = await run_session(shared, server.url, max_event_bytes=1000)
    assert [e.data for e in out.events] == ["a", "b"]
    notices = [s for s in out.statuses if s.detail.startswith("skipped")]
    assert [s.detail for s in notices] == ["skipped an event larger than 1000 bytes"]
    assert notices[0].state is State.CONNECTED


# -- how sessions end ---------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "error", "detail"),
    [
        (head("204 No Content", None), Ended, "HTTP 204 No Content: the server ended the stream"),
        (head("404 Not Found", "text/plain"), Failed, "HTTP 404 Not Found"),
        (head("401 Unauthorized", "text/plain"), Failed, "HTTP 401 Unauthorized"),
        (head("403 Forbidden", "text/plain"), Failed, "HTTP 403 Forbidden"),
        (head("410 Gone", "text/plain"), Failed, "HTTP 410 Gone"),
        (head("400 Bad Request", "text/plain"), Failed, "HTTP 400 Bad Request"),
        (head(content_type="text/html"), Failed, "expected text/event-stream, got text/html"),
        (head(content_type=None), Failed, "expected text/event-stream, got no Content-Type"),
        (head("500 Internal Server Error"), ServerUnavailable, "HTTP 500 Internal Server Error"),
        (head("502 Bad Gateway"), ServerUnavailable, "HTTP 502 Bad Gateway"),
    ],
)
async def test_status_and_content_type(
    nursery: trio.Nursery,
    shared: SharedResources,
    response: bytes,
    error: type[SessionError],
    detail: str,
) -> None:
    server = await serve(nursery, sends(response, b"data: never\n\n"))
    out = await run_session(shared, server.url)
    assert type(out.error) is error
    assert out.error.detail == detail
    assert out.records == []  # never connected, nothing emitted


async def test_503_with_retry_after_seconds(nursery: trio.Nursery, shared: SharedResources) -> None:
    server = await serve(
        nursery, sends(head("503 Service Unavailable", extra="Retry-After: 7\r\n"))
    )
    out = await run_session(shared, server.url)
    assert isinstance(out.error, ServerUnavailable)
    assert out.error.detail == "HTTP 503 Service Unavailable"
    assert out.error.retry_after == 7.0


async def test_429_with_retry_after_date(nursery: trio.Nursery, shared: SharedResources) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    server = await serve(
        nursery, sends(head("429 Too Many Requests", extra=f"Retry-After: {when}\r\n"))
    )
    out = await run_session(shared, server.url)
    assert isinstance(out.error, ServerUnavailable)
    assert out.error.retry_after is not None
    assert 100 < out.error.retry_after <= 121


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 60) == 60.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 + 60) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None
    assert parse_retry_after(None) is None


async def test_connection_refused(shared: SharedResources) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = await run_session(shared, f"http://127.0.0.1:{port}/events")
    assert isinstance(out.error, ServerUnavailable)
    assert out.error.detail == "connection refused"


async def test_garbage_instead_of_http(nursery: trio.Nursery, shared: SharedResources) -> None:
    server = await serve(nursery, sends(b"\x00\x01 this is not HTTP\r\n\r\n"))
    out = await run_session(shared, server.url)
    assert isinstance(out.error, ServerUnavailable)
    assert out.records == []


async def test_accept_then_close_without_response(
    nursery: trio.Nursery, shared: SharedResources
) -> None:
    server = await serve(nursery, sends())
    out = await run_session(shared, server.url)
    assert isinstance(out.error, ServerUnavailable)
    assert "disconnected" in out.error.detail.lower()


async def test_drop_mid_chunked_body_is_disconnected(
    nursery: trio.Nursery, shared: SharedResources
) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    server = await serve(nursery, sends(chunked, b"9\r\ndata: a\n\n\r\n", b"40\r\ndata: par"))
    out = await run_session(shared, server.url)
    assert isinstance(out.error, Disconnected)
    assert out.error.detail.startswith("connection lost")
    assert [e.data for e in out.events] == ["a"]


async def test_silent_server_hits_read_timeout(
    nursery: trio.Nursery, shared: SharedResources
) -> None:
    async def respond(stream: trio.SocketStream, _: int) -> None:
        await stream.send_all(head() + b"data: first\n\n")
        await trio.sleep_forever()

    server = await serve(nursery, respond)
    out = await run_session(shared, server.url, read_timeout=0.3)
    assert isinstance(out.error, Disconnected)
    assert out.error.detail == "no data for 0.3 s (read_timeout)"
    assert [e.data for e in out.events] == ["first"]


async def test_waiting_for_a_slow_sink_is_not_silence(
    nursery: trio.Nursery, shared: SharedResources
) -> None:
    """The engine makes ``emit`` wait (shielded) while a block sink is full;
    a wait longer than read_timeout must not end the stream as silent."""
    sink_caught_up = trio.Event()

    async def respond(stream: trio.SocketStream, _: int) -> None:
        await stream.send_all(head() + b"data: 1\n\n")
        await sink_caught_up.wait()
        await stream.send_all(b"data: 2\n\n")

    server = await serve(nursery, respond)
    events: list[Any] = []

    async def send(batch: Any) -> None:
        if type(batch[0]) is Event:
            events.extend(r.data for r in batch)
            if len(events) == 1:
                with trio.CancelScope(shield=True):  # as the engine's waiting fan-out
                    await trio.sleep(0.5)  # the sink's pace: 2.5 x read_timeout
                sink_caught_up.set()

    session = Session(
        source="s", transport="sse", resume=ResumeState(), connect_timeout=5,
        shared=shared, send=send, attempt=1,
    )  # fmt: skip
    with trio.fail_after(10), pytest.raises(Disconnected) as caught:
        await SseTransport(SseOptions(url=server.url, read_timeout=0.2)).run_session(session)
    assert caught.value.detail == "server closed the stream"
    assert events == [1, 2]


async def test_comments_keep_the_stream_alive(
    nursery: trio.Nursery, shared: SharedResources
) -> None:
    async def respond(stream: trio.SocketStream, _: int) -> None:
        await stream.send_all(head())
        for _ in range(6):  # 0.6 s of comments only, twice the read timeout
            await stream.send_all(b": keep-alive\n")
            await trio.sleep(0.1)  # the server's pace, not a wait in the test
        await stream.send_all(b"data: done\n\n")

    server = await serve(nursery, respond)
    out = await run_session(shared, server.url, read_timeout=0.3)
    assert isinstance(out.error, Disconnected)
    assert out.error.detail == "server closed the stream"
    assert [e.data for e in out.events] == ["done"]


async def test_server_that_never_answers(nursery: trio.Nursery, shared: SharedResources) -> None:
    async def respond(stream: trio.SocketStream, _: int) -> None:
        await trio.sleep_forever()

    server = await serve(nursery, respond)
    out = await run_session(shared, server.url, connect_timeout=0.3)
    assert isinstance(out.error, ServerUnavailable)
    assert out.error.detail == "no response within 0.3 s"


async def test_bad_url_at_runtime_is_failed(shared: SharedResources) -> None:
    out = await run_session(shared, "ftp://127.0.0.1/events")
    assert isinstance(out.error, Failed)
    assert "http://" in out.error.detail


async def test_more_than_a_hundred_streams_share_one_client(
    nursery: trio.Nursery, shared: SharedResources
) -> None:
    """httpx's default pool holds 100 connections; the 101st stream must not wait."""
    streams = 101
    connected = 0
    all_connected = trio.Event()

    async def respond(stream: trio.SocketStream, _: int) -> None:
        await stream.send_all(head() + b": open\n")
        await trio.sleep_forever()

    server = await serve(nursery, respond)

    def on_connected() -> None:
        nonlocal connected
        connected += 1
        if connected == streams:
            all_connected.set()

    async def one() -> None:
        async def send(batch: Any) -> None:
            pass

        session = Session(
            source="s", transport="sse", resume=ResumeState(), connect_timeout=5,
            shared=shared, send=send, attempt=1, on_connected=on_connected,
        )  # fmt: skip
        await SseTransport(SseOptions(url=server.url)).run_session(session)

    with trio.fail_after(10):
        async with trio.open_nursery() as clients:
            for _ in range(streams):
                clients.start_soon(one)
            await all_connected.wait()
            clients.cancel_scope.cancel()
    assert connected == streams
    assert len(server.requests) == streams


# -- options and registration -------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"url": "ftp://example.com/x"},
        {"url": "example.com/events"},
        {"url": "http:///nohost"},
        {"url": "http://h/", "headers": {"Bad Name": "v"}},
        {"url": "http://h/", "headers": {"X": "line\r\nbreak"}},
        {"url": "http://h/", "headers": {"X": "caf\u00e9"}},
    ],
)
def test_check_rejects(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SseOptions.check(SseOptions(**options))


def test_check_accepts_good_options() -> None:
    SseOptions.check(SseOptions(url="https://h:8443/e?x=1", headers={"Authorization": "Bearer t"}))


@pytest.mark.parametrize(
    "options",
    [{"read_timeout": 0}, {"read_timeout": -1.0}, {"max_event_bytes": 0}, {"decode": "xml"}],
)
def test_option_validators(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SseOptions(url="http://h/", **options)


def test_registers_sse_transport() -> None:
    registered: dict[str, type] = {}
    mux_sse.mux_register_transports(lambda name, cls: registered.__setitem__(name, cls))
    assert registered == {"sse": SseTransport}
