"""The protocol-neutral test kit: serve_tcp's faults, refusing_port, run_one_session(until=)."""

from __future__ import annotations

import errno
import json

import pytest
import trio

from mux_core import Disconnected, ServerUnavailable, Session, describe_connection_error
from mux_core.testing import (
    Close,
    Drop,
    Garbage,
    Raw,
    Respond,
    ScriptedOptions,
    ScriptedTransport,
    SessionResult,
    Stall,
    refusing_port,
    run_one_session,
    serve_tcp,
)

DEADLINE = 5.0


async def _read_all(port: int, send: bytes = b"") -> bytes:
    """Everything the server sends until it closes (under a deadline)."""
    with trio.fail_after(DEADLINE):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            if send:
                await stream.send_all(send)
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
            return data


async def _read_lines(port: int, n: int, send: bytes = b"") -> list[bytes]:
    """The first ``n`` lines the server sends (under a deadline)."""
    with trio.fail_after(DEADLINE):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            if send:
                await stream.send_all(send)
            data = b""
            while data.count(b"\n") < n:
                chunk = await stream.receive_some(65536)
                assert chunk, f"closed after {data!r}"
                data += chunk
            return data.split(b"\n")[:n]


async def test_history_then_live_lines_and_integer_ids() -> None:
    async with serve_tcp() as server:
        await server.publish({"loss": 0.5})
        await server.publish("plain text")
        await server.publish({"id": "x", "loss": 0.4})
        assert server.url == f"tcp://127.0.0.1:{server.port}"
        async with trio.open_nursery() as nursery:
            got: list[list[bytes]] = []

            async def client() -> None:
                got.append(await _read_lines(server.port, 4))

            nursery.start_soon(client)
            with trio.fail_after(DEADLINE):
                await server.wait_for_connections(1)
            await server.publish({"loss": 0.3})
    lines = got[0]
    assert json.loads(lines[0]) == {"loss": 0.5, "id": 1}
    assert lines[1] == b"plain text"
    assert json.loads(lines[2]) == {"id": "x", "loss": 0.4}
    assert json.loads(lines[3]) == {"loss": 0.3, "id": 4}
    assert server.history_ids == ["1", None, "x", "4"]


async def test_a_line_with_a_newline_is_refused() -> None:
    async with serve_tcp() as server:
        with pytest.raises(ValueError, match="newline"):
            await server.publish("two\nlines")


@pytest.mark.parametrize(
    ("hello", "first_line", "expected"),
    [
        ("resume_after", b'{"resume_after": 2}\n', [3]),
        ("resume_after", b'{"resume_after": "2"}\n', [3]),  # ids compare as text
        ("resume_after", b'{"resume_after": 99}\n', [1, 2, 3]),  # unknown: from the oldest
        ("resume_after", b"not json\n", [1, 2, 3]),
        (lambda line: line.split()[1], b"RESUME 1\r\n", [2, 3]),
    ],
)
async def test_hello_resumes_after_the_named_id(
    hello: object, first_line: bytes, expected: list[int]
) -> None:
    async with serve_tcp(hello=hello) as server:  # type: ignore[arg-type]
        for n in range(3):
            await server.publish({"n": n})
        lines = await _read_lines(server.port, len(expected), send=first_line)
    assert [json.loads(line)["id"] for line in lines] == expected
    assert server.received == [first_line.rstrip(b"\n").removesuffix(b"\r")]


async def test_with_a_hello_nothing_is_sent_before_the_first_line() -> None:
    async with serve_tcp(hello="resume_after") as server:
        await server.publish({"n": 1})
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                with trio.move_on_after(0.2):
                    assert await stream.receive_some(100) == b"", "sent before the hello"
                await stream.send_all(b"{}\n")
                assert json.loads(await stream.receive_some(100)) == {"n": 1, "id": 1}


async def test_stall_accepts_records_and_never_writes() -> None:
    async with serve_tcp() as server:
        await server.publish({"n": 1})
        server.script(Stall())
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(b"ping\npartial")
                assert await server.wait_for_received(1) == [b"ping"]
                with trio.move_on_after(0.2):
                    assert await stream.receive_some(100) == b"", "a stalled server wrote"
        assert server.connections == 1


async def test_drop_sends_n_lines_then_closes() -> None:
    async with serve_tcp() as server:
        for n in range(5):
            await server.publish({"n": n})
        server.script(Drop(after=2))
        data = await _read_all(server.port)
        again = await _read_lines(server.port, 5)
    assert [json.loads(line)["n"] for line in data.splitlines()] == [0, 1]
    assert len(again) == 5  # the script is used up: normal streaming


async def test_close_closes_at_once_and_raw_sends_exact_bytes() -> None:
    async with serve_tcp() as server:
        await server.publish({"n": 1})
        server.script(Close(), Raw(b'{"n": 1}\n{"n": 2'), Raw(b"half", close=False))
        assert await _read_all(server.port) == b""
        assert await _read_all(server.port) == b'{"n": 1}\n{"n": 2'
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                assert await stream.receive_some(100) == b"half"
                with trio.move_on_after(0.2):
                    assert await stream.receive_some(100) == b"", "Raw(close=False) closed"


async def test_garbage_comes_first_then_the_stream_goes_on() -> None:
    async with serve_tcp() as server:
        await server.publish({"n": 1})
        await server.publish(b"\xff\xfe mid-stream garbage")
        await server.publish({"n": 3})
        server.script(Garbage(b"\x00\x01 not a line\n"))
        lines = await _read_lines(server.port, 4)
    assert lines[0] == b"\x00\x01 not a line"
    assert lines[2] == b"\xff\xfe mid-stream garbage"
    assert json.loads(lines[3]) == {"n": 3, "id": 3}


async def test_script_refuses_an_http_only_fault() -> None:
    async with serve_tcp() as server:
        with pytest.raises(TypeError, match="not a TCP fault"):
            server.script(Respond(503))  # type: ignore[arg-type]


async def test_stop_refuses_start_and_restart_come_back_on_the_same_port() -> None:
    async with serve_tcp() as server:
        port = server.port
        await server.publish({"n": 1})
        await server.stop()
        assert not server.running
        with pytest.raises(OSError) as refused:
            await trio.open_tcp_stream("127.0.0.1", port)
        assert describe_connection_error(refused.value) == "connection refused"
        await server.start()
        assert server.port == port and server.running
        assert len(await _read_lines(port, 1)) == 1
        await server.restart()
        assert len(await _read_lines(port, 1)) == 1
        assert server.connections == 2


async def test_stop_cuts_open_connections() -> None:
    async with serve_tcp() as server:
        server.script(Stall())
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await server.wait_for_connections(1)
            await server.stop()
            try:
                assert await stream.receive_some(100) == b""
            except trio.BrokenResourceError:
                pass  # a reset is a cut too
            await stream.aclose()


async def test_history_is_trimmed_to_max_history() -> None:
    async with serve_tcp(max_history=8) as server:
        for n in range(20):
            await server.publish({"n": n})
        assert 8 <= len(server.history) <= 9
        lines = await _read_lines(server.port, len(server.history))
    assert json.loads(lines[-1])["n"] == 19


def test_refusing_port_refuses() -> None:
    import socket

    with refusing_port() as port:
        sock = socket.socket()
        try:
            with pytest.raises(ConnectionRefusedError) as refused:
                sock.connect(("127.0.0.1", port))
            assert refused.value.errno == errno.ECONNREFUSED
        finally:
            sock.close()


class _LineTransport:
    """Emits each received line as one event; the smallest line-protocol transport."""

    Options = ScriptedOptions

    def __init__(self, port: int) -> None:
        self.port = port

    async def run_session(self, session: Session) -> None:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", self.port)
        except OSError as exc:
            raise ServerUnavailable(describe_connection_error(exc) or "cannot connect") from exc
        async with stream:
            await session.connected()
            while data := await stream.receive_some(65536):
                await session.emit(("line", None, line) for line in data.splitlines())
        raise Disconnected("server closed the connection")


async def test_run_one_session_until_an_event_count() -> None:
    async with serve_tcp() as server:
        for n in range(3):
            await server.publish({"n": n})
        with trio.fail_after(DEADLINE):
            result = await run_one_session(_LineTransport(server.port), until=2)
    assert result.until_met and result.error is None
    assert len(result.events) >= 2
    assert result.events[0].data == {"n": 0, "id": 1}


async def test_run_one_session_until_a_condition() -> None:
    def has_status_and_event(result: SessionResult) -> bool:
        return len(result.records) >= 2

    transport = ScriptedTransport(ScriptedOptions(script=["events:10"], batch=1))
    with trio.fail_after(DEADLINE):
        result = await run_one_session(transport, until=has_status_and_event)
    assert result.until_met and result.error is None
    assert len(result.records) == 2  # connected + the first event: ended right there


async def test_run_one_session_ends_on_an_error_before_until() -> None:
    with refusing_port() as port, trio.fail_after(DEADLINE):
        refused = await run_one_session(_LineTransport(port), until=1)
    assert not refused.until_met
    assert isinstance(refused.error, ServerUnavailable)
    assert refused.error.detail == "connection refused"
    async with serve_tcp() as server:
        server.script(Drop(after=1))
        await server.publish({"n": 1})
        with trio.fail_after(DEADLINE):
            dropped = await run_one_session(_LineTransport(server.port), until=5)
    assert isinstance(dropped.error, Disconnected) and len(dropped.events) == 1
