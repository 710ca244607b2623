"""run_one_session(until=): the transport finishes its work on the batch that met it.

The acking transport below is a NATS-like client written for these tests: the
server greets first (``INFO``), the client answers ``CONNECT`` and ``SUB``,
then each ``MSG <id> <payload>`` line is emitted and, once delivered,
acknowledged with ``+ACK <id>`` -- the pattern of every transport that
acknowledges to its server (XACK, JetStream).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio

from mux_core import Disconnected, Failed, ServerUnavailable, Session, describe_connection_error
from mux_core.testing import (
    Conversation,
    Expect,
    FakeTcpServer,
    ScriptedOptions,
    ScriptedTransport,
    Send,
    SessionResult,
    run_one_session,
    serve_tcp,
)

DEADLINE = 5.0

GREETING = Conversation(
    Send(b'INFO {"server_id":"fake"}\r\n'),
    Expect(b"CONNECT {}\r\n"),
    Expect(re.compile(rb"SUB updates \d+\r\n")),
)


class AckingTransport:
    """Emits each ``MSG`` line and acknowledges it once every sink has it."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def run_session(self, session: Session) -> None:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        except OSError as exc:
            raise ServerUnavailable(describe_connection_error(exc) or "cannot connect") from exc
        async with stream:
            lines = _lines(stream)
            info = await anext(lines, b"")
            if not info.startswith(b"INFO "):
                raise Failed(f"not a greeting: {info[:40]!r}")
            await stream.send_all(b"CONNECT {}\r\nSUB updates 1\r\n")
            await session.connected()
            async for line in lines:
                kind, id_, payload = line.split(b" ", 2)
                if kind != b"MSG":
                    continue
                await session.emit([("msg", id_.decode(), payload)])
                if await session.delivered():
                    await stream.send_all(b"+ACK " + id_ + b"\r\n")
        raise Disconnected("server closed the connection")


async def _lines(stream: trio.SocketStream) -> AsyncIterator[bytes]:
    buffer = b""
    while data := await stream.receive_some(65536):
        *lines, buffer = (buffer + data).split(b"\n")
        for line in lines:
            yield line.removesuffix(b"\r")


async def _session(
    server: FakeTcpServer,
    until: int,
    settle: Callable[[SessionResult], Awaitable[object]] | None = None,
) -> SessionResult:
    with trio.fail_after(DEADLINE):
        return await run_one_session(AckingTransport(server.port), until=until, settle=settle)


async def test_the_event_that_met_until_is_acknowledged_and_the_next_is_not_taken() -> None:
    async with serve_tcp(conversation=GREETING) as server:
        for n in (1, 2, 3):  # all three reach the client in one read
            await server.publish(f"MSG {n} payload-{n}")
        result = await _session(server, until=2)
        with trio.fail_after(DEADLINE):
            await server.wait_for_received(4)
    assert result.until_met and result.error is None
    assert [e.id for e in result.events] == ["1", "2"]
    # delivered() was awaited after each event's batch (the first batch: "connected").
    assert result.delivered_at == [2, 3]
    # The ack of the event that met until reached the server; the third event
    # was never handed over (the session ended inside that emit), so never acked.
    assert server.received == [b"CONNECT {}", b"SUB updates 1", b"+ACK 1", b"+ACK 2"]
    assert server.mismatches == []


async def test_a_live_event_that_met_until_is_acknowledged_before_the_session_ends() -> None:
    async with serve_tcp(conversation=GREETING) as server, trio.open_nursery() as nursery:
        results: list[SessionResult] = []

        async def run() -> None:
            results.append(await _session(server, until=1))

        nursery.start_soon(run)
        with trio.fail_after(DEADLINE):
            await server.wait_for_received(2)  # CONNECT and SUB: subscribed
            await server.publish("MSG 7 live")
            await server.wait_for_received(3)
    assert results[0].until_met and [e.id for e in results[0].events] == ["7"]
    assert server.received[-1] == b"+ACK 7"


async def test_settle_decides_when_the_session_is_over() -> None:
    async with serve_tcp(conversation=GREETING) as server:
        for n in (1, 2):
            await server.publish(f"MSG {n} x")

        async def until_the_server_has_the_ack(result: SessionResult) -> None:
            await server.wait_for_received(3)

        result = await _session(server, until=1, settle=until_the_server_has_the_ack)
    # The second MSG came in the same read: emitting it ended the session, settled or not.
    assert [e.id for e in result.events] == ["1"]
    assert server.received[-1] == b"+ACK 1"


async def test_a_transport_that_keeps_emitting_is_ended_at_its_next_emit() -> None:
    def two_records(result: SessionResult) -> bool:
        return len(result.records) >= 2

    transport = ScriptedTransport(ScriptedOptions(script=["events:10"], batch=1))
    with trio.fail_after(DEADLINE):
        result = await run_one_session(transport, until=two_records)
    assert result.until_met and result.error is None
    assert len(result.records) == 2  # connected + the first event
    assert transport.sessions == 1


async def test_a_session_that_ends_right_after_the_batch_keeps_its_error() -> None:
    transport = ScriptedTransport(ScriptedOptions(script=["events:2"], batch=2))
    with trio.fail_after(DEADLINE):
        result = await run_one_session(transport, until=2)
    assert result.until_met and len(result.events) == 2
    assert isinstance(result.error, Disconnected)  # it raised while finishing: reported


async def test_a_transport_bug_propagates_as_itself() -> None:
    transport = ScriptedTransport(ScriptedOptions(script=["crash"]))
    with trio.fail_after(DEADLINE), pytest.raises(RuntimeError, match="scripted crash"):
        await run_one_session(transport)
