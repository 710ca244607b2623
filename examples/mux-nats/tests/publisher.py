"""A tiny NATS client for the tests: publish, request, JetStream publish with its ack.

Independent of mux_nats on purpose (its own few lines of protocol), so a bug
in the transport's parser cannot hide in the tests' publisher too.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from mux_core.testing import ServerProcess


def nats_server(*args: str, port: int | None = None) -> ServerProcess:
    """A real nats-server on 127.0.0.1 and a free port (never the system's 4222)."""
    return ServerProcess(["nats-server", "-a", "{host}", "-p", "{port}", *args], port=port)


class NoJetStream(Exception):
    """JetStream did not answer: a server just started, or one without -js."""


class Publisher:
    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = b""
        self._requests = 0

    async def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            data = await self._stream.receive_some(65536)
            if not data:
                raise EOFError("nats-server closed the connection")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    async def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            data = await self._stream.receive_some(65536)
            if not data:
                raise EOFError("nats-server closed the connection")
            self._buffer += data
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    async def publish(self, subject: str, payload: bytes) -> None:
        await self._stream.send_all(
            b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload)
        )

    async def flush(self) -> None:
        """PING and wait for the PONG: everything published so far was processed."""
        await self._stream.send_all(b"PING\r\n")
        while (line := await self._line()) != b"PONG":
            assert not line.startswith(b"-ERR"), line

    async def _send_request(self, subject: str, body: bytes, headers: bytes = b"") -> bytes:
        self._requests += 1
        reply = f"_INBOX.test.{self._requests}".encode()
        if headers:
            head = len(headers)
            command = b"HPUB %s %s %d %d\r\n" % (subject.encode(), reply, head, head + len(body))
            await self._stream.send_all(command + headers + body + b"\r\n")
        else:
            command = b"PUB %s %s %d\r\n" % (subject.encode(), reply, len(body))
            await self._stream.send_all(command + body + b"\r\n")
        return reply

    async def _replies(self, wanted: set[bytes]) -> dict[bytes, bytes]:
        """The payloads of the replies on ``wanted`` subjects (b"" for a 503)."""
        found: dict[bytes, bytes] = {}
        while len(found) < len(wanted):
            line = await self._line()
            if line == b"PING":
                await self._stream.send_all(b"PONG\r\n")
                continue
            if not line.startswith((b"MSG ", b"HMSG ")):
                assert not line.startswith(b"-ERR"), line
                continue
            parts = line.split()
            data = (await self._exactly(int(parts[-1]) + 2))[:-2]
            if parts[1] not in wanted:
                continue
            if line.startswith(b"HMSG "):
                data = b"" if data.startswith(b"NATS/1.0 503") else data[int(parts[-2]) :]
            found[parts[1]] = data
        return found

    async def request(self, subject: str, body: bytes = b"") -> bytes:
        """Publish with a reply subject and return the reply's payload (b"" for a 503)."""
        reply = await self._send_request(subject, body)
        return (await self._replies({reply}))[reply]

    async def api(self, call: str, request: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps(request).encode() if request is not None else b""
        answer: dict[str, Any] = json.loads(await self.request(f"$JS.API.{call}", body) or b"{}")
        return answer

    async def js_publish(self, messages: list[tuple[str, bytes, str]]) -> list[int]:
        """Publish (subject, payload, msg id) into a stream, all sent before any ack is
        read; the stream sequence of each ack. The msg id makes a message sent again
        after a lost ack a duplicate the stream drops (its sequence comes back)."""
        replies = []
        for subject, payload, msg_id in messages:
            headers = f"NATS/1.0\r\nNats-Msg-Id: {msg_id}\r\n\r\n".encode()
            replies.append(await self._send_request(subject, payload, headers))
        answers = await self._replies(set(replies))
        if not all(answers.values()):
            raise NoJetStream("no responders: JetStream is not running (yet)")
        acks = [json.loads(answers[reply]) for reply in replies]
        assert all("seq" in ack for ack in acks), acks
        return [int(ack["seq"]) for ack in acks]


@asynccontextmanager
async def connect(port: int, user: str = "", password: str = "") -> AsyncIterator[Publisher]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        publisher = Publisher(stream)
        info = await publisher._line()
        assert info.startswith(b"INFO "), info
        hello: dict[str, Any] = {"verbose": False, "pedantic": False, "headers": True}
        hello.update({"user": user, "pass": password} if user else {})
        await stream.send_all(b"CONNECT " + json.dumps(hello).encode() + b"\r\n")
        await stream.send_all(b"SUB _INBOX.test.* 1\r\n")  # where replies come
        await publisher.flush()
        yield publisher


async def create_stream(port: int, name: str, subjects: list[str]) -> None:
    """Create a file-backed stream, waiting out a JetStream that is still starting."""
    with trio.fail_after(10):
        while True:
            async with connect(port) as nats:
                answer = await nats.api(
                    f"STREAM.CREATE.{name}", {"name": name, "subjects": subjects, "storage": "file"}
                )
            if answer:
                assert "error" not in answer, answer
                return
            await trio.sleep(0.05)  # JetStream answers once it has started: only polling tells
