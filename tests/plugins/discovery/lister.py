"""A tiny real HTTP server for the ``http`` discoverer's tests: it answers every
GET with ``body`` (then closes) and keeps each request head as it arrived."""

from __future__ import annotations

import trio

#: What a [[discovery]] table must allow for the test kit's scripted sources.
SCRIPTED_ALLOWED = 'allow_transports = ["scripted"]\nallow_options = ["script", "then"]\n'


class ListServer:
    """Answers every GET with ``body``; ``start`` it in a nursery, ``stop`` it, start it again."""

    def __init__(self) -> None:
        self.body = b"[]"
        self.port = 0
        #: Requests answered so far.
        self.polls = 0
        #: Each request head as it arrived (request line and headers).
        self.heads: list[bytes] = []
        self._scope: trio.CancelScope | None = None
        self._polled = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sd"

    async def start(self, nursery: trio.Nursery) -> None:
        self._scope = trio.CancelScope()
        listeners = await nursery.start(self._serve, self._scope)
        self.port = listeners[0].socket.getsockname()[1]

    def stop(self) -> None:
        assert self._scope is not None
        self._scope.cancel()

    async def wait_for_polls(self, count: int, *, timeout: float = 10.0) -> None:
        """Wait until ``count`` requests were answered, failing after ``timeout``."""
        with trio.fail_after(timeout):
            while self.polls < count:
                await self._polled.wait()

    async def _serve(
        self,
        scope: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]],
    ) -> None:
        with scope:
            await trio.serve_tcp(self._answer, self.port, host="127.0.0.1", task_status=task_status)

    async def _answer(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                head += chunk
            self.heads.append(head.split(b"\r\n\r\n", 1)[0])
            body = self.body
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            self.polls += 1
            self._polled.set()
            self._polled = trio.Event()
