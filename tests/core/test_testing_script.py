"""serve_tcp's scripted conversations: a server that speaks first, expects, and breaks."""

from __future__ import annotations

import json
import re

import pytest
import trio

from mux_core.testing import (
    Close,
    Conversation,
    Drop,
    Expect,
    FakeTcpServer,
    Pause,
    Reset,
    Send,
    Stall,
    serve_tcp,
)

DEADLINE = 5.0


class Client:
    """A raw TCP client reading up to a marker, under the test's deadline."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            data = await self.stream.receive_some(65536)
            assert data, f"closed before {marker!r}; got {self.buffer!r}"
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(marker)
        return head + marker

    async def read_to_end(self) -> bytes:
        while data := await self.stream.receive_some(65536):
            self.buffer += data
        rest, self.buffer = self.buffer, b""
        return rest


async def connect(server: FakeTcpServer) -> Client:
    return Client(await trio.open_tcp_stream("127.0.0.1", server.port))


NATS_LIKE = Conversation(
    Send(b'INFO {"server_id":"fake"}\r\n'),
    Expect(b"CONNECT"),
    Send(b"+OK\r\n"),
    Expect(re.compile(rb"SUB (\S+) (\d+)\r\n")),
    Send(b"MSG updates 1 5\r\nhello\r\n"),
    Stall(),
)


async def test_the_server_speaks_first_then_expects_then_sends() -> None:
    async with serve_tcp() as server:
        server.script(NATS_LIKE)
        with trio.fail_after(DEADLINE):
            client = await connect(server)
            async with client.stream:
                # Nothing sent yet, and the greeting is already there.
                assert await client.read_until(b"\r\n") == b'INFO {"server_id":"fake"}\r\n'
                await client.stream.send_all(b"CONNECT {}\r\n")
                assert await client.read_until(b"\r\n") == b"+OK\r\n"
                await client.stream.send_all(b"SUB upd")  # a command split over two writes
                await client.stream.send_all(b"ates 1\r\n")
                assert await client.read_until(b"hello\r\n") == b"MSG updates 1 5\r\nhello\r\n"
                await client.stream.send_all(b"PING\r\n")  # Stall: read and kept, unanswered
                await server.wait_for_received(3)
    assert server.received == [b"CONNECT {}", b"SUB updates 1", b"PING"]
    assert server.mismatches == []


async def test_a_client_that_does_not_send_what_is_expected_is_cut_and_recorded() -> None:
    async with serve_tcp() as server:
        server.script(
            Conversation(Send(b"220 ready\r\n"), Expect(b"HELO", timeout=0.2), Send(b"250\r\n")),
            Conversation(Send(b"220 ready\r\n"), Expect(re.compile(rb"^EHLO \w+"))),
        )
        with trio.fail_after(DEADLINE):
            slow = await connect(server)
            async with slow.stream:
                await slow.stream.send_all(b"NOOP\r\n")  # not HELO: the deadline passes
                assert await slow.read_to_end() == b"220 ready\r\n"  # then the server closes
            closing = await connect(server)
            async with closing.stream:
                await closing.read_until(b"\r\n")
                await closing.stream.send_all(b"QUIT\r\n")
            timeout, closed = await server.wait_for_mismatches(2)
    assert (timeout.connection, timeout.step) == (1, 2)
    assert timeout.expected == Expect(b"HELO", timeout=0.2)
    assert timeout.reason == "nothing matched within 0.2 s"
    assert timeout.unconsumed == b"NOOP\r\n"
    assert (closed.connection, closed.reason) == (
        2,
        "the client closed the connection before sending a match",
    )
    assert "connection 2, step 2" in str(closed) and "QUIT" in str(closed)


async def test_a_mismatch_is_logged_where_a_failing_test_shows_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serve_tcp(conversation=Conversation(Expect(b"AUTH", timeout=0.05))) as server:
        with trio.fail_after(DEADLINE):
            client = await connect(server)
            async with client.stream:
                assert await client.read_to_end() == b""
    assert len(server.mismatches) == 1
    assert any(
        r.name == "mux.testing" and "step 1 Expect(pattern=b'AUTH'" in r.getMessage()
        for r in caplog.records
    )


async def test_a_predicate_consumes_what_it_saw_and_the_next_expect_sees_only_the_rest() -> None:
    seen: list[bytes] = []

    def two_lines(data: bytes) -> bool:
        seen.append(data)
        return data.count(b"\n") >= 2

    async with serve_tcp() as server:
        server.script(
            Conversation(Expect(two_lines), Send(b"got two\n"), Expect(b"b"), Send(b"got b\n"))
        )
        with trio.fail_after(DEADLINE):
            client = await connect(server)
            async with client.stream:
                await client.stream.send_all(b"a\nb\n")
                assert await client.read_until(b"\n") == b"got two\n"
                # "b" was consumed by the predicate: only this new one matches now.
                await client.stream.send_all(b"xyz b\n")
                assert await client.read_until(b"\n") == b"got b\n"
    assert seen[-1] == b"a\nb\n"


async def test_the_conversation_of_every_connection_and_a_scripted_fault_after_it() -> None:
    greeting = Conversation(Send(b"HELLO\n"), Expect(b"READY\n"))
    async with serve_tcp(conversation=greeting) as server:
        await server.publish("line 1")
        await server.publish("line 2")
        server.script(Drop(after=1), Close(), Conversation(Send(b"OTHER\n")))
        with trio.fail_after(DEADLINE):
            first = await connect(server)  # greeting, then Drop(after=1)
            async with first.stream:
                assert await first.read_until(b"\n") == b"HELLO\n"
                await first.stream.send_all(b"READY\n")
                assert await first.read_to_end() == b"line 1\n"
            second = await connect(server)  # Close: at once, no greeting
            async with second.stream:
                assert await second.read_to_end() == b""
            third = await connect(server)  # a conversation of its own, then streaming
            async with third.stream:
                assert await third.read_until(b"line 2\n") == b"OTHER\nline 1\nline 2\n"
            fourth = await connect(server)  # nothing scripted: greeting, then streaming
            async with fourth.stream:
                assert await fourth.read_until(b"\n") == b"HELLO\n"
                await fourth.stream.send_all(b"READY\n")
                assert await fourth.read_until(b"line 2\n") == b"line 1\nline 2\n"


async def test_hello_reads_the_first_line_after_the_conversation() -> None:
    greeting = Conversation(Send(b"AUTH?\n"), Expect(b"AUTH secret\n"))
    async with serve_tcp(hello="resume_after", conversation=greeting) as server:
        for n in range(3):
            await server.publish({"n": n})
        with trio.fail_after(DEADLINE):
            client = await connect(server)
            async with client.stream:
                assert await client.read_until(b"\n") == b"AUTH?\n"
                await client.stream.send_all(b'AUTH secret\n{"resume_after": 2}\n')
                assert json.loads(await client.read_until(b"\n")) == {"n": 2, "id": 3}


async def test_a_conversation_can_end_in_a_reset() -> None:
    async with serve_tcp() as server:
        server.script(Conversation(Send(b"BYE\n"), Pause(0), Reset()))
        with trio.fail_after(DEADLINE):
            client = await connect(server)
            async with client.stream:
                assert await client.read_until(b"\n") == b"BYE\n"
                with pytest.raises(trio.BrokenResourceError) as reset:
                    await client.read_to_end()
    assert isinstance(reset.value.__cause__, ConnectionResetError)


def test_a_conversation_is_checked_when_it_is_written() -> None:
    with pytest.raises(ValueError, match=r"Close\(\) ends the connection.*step 1 of 2"):
        Conversation(Close(), Send(b"late"))
    with pytest.raises(TypeError, match="not a conversation step"):
        Conversation(b"INFO")  # type: ignore[arg-type]
    assert Conversation(Send(b"x"), Expect(b"y")).steps == (Send(b"x"), Expect(b"y"))
