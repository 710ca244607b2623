"""What the webhook tests share: a receiver (a small h11 server on 127.0.0.1) and an open sink.

It answers each POST with the next scripted answer (a status and headers),
else 200, and keeps every request (status answered, path, headers, body).
Waits are on its ``changed`` event with a deadline.
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeAlias

import attrs
import h11
import orjson
import trio

from mux_core import RetryPolicy, SinkContext
from mux_webhook import WebhookOptions, WebhookSink

Headers: TypeAlias = list[tuple[str, str]]
#: A scripted answer: a status and headers, and optionally a body.
Answer: TypeAlias = tuple[int, Headers] | tuple[int, Headers, bytes]


@attrs.frozen
class Request:
    """One request the receiver answered."""

    status: int
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Answers each POST with the next scripted answer, else 200; keeps requests."""

    def __init__(self) -> None:
        self.script: deque[Answer] = deque()
        self.requests: list[Request] = []
        self.changed = trio.Event()
        self.port = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Until ``count`` requests were answered."""
        with trio.fail_after(timeout):
            while len(self.requests) < count:
                await self.changed.wait()

    async def wait_until(self, predicate: Any, timeout: float = 10.0) -> None:
        """Until ``predicate(self)`` holds."""
        with trio.fail_after(timeout):
            while not predicate(self):
                await self.changed.wait()

    def accepted(self) -> list[Any]:
        """The bodies answered with 200, decoded."""
        return [orjson.loads(r.body) for r in self.requests if r.status == 200]

    def records(self) -> list[dict[str, Any]]:
        """Every record of the accepted ``format = "json"`` bodies, in order."""
        return [record for body in self.accepted() for record in body]

    async def handle(self, stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return
                conn.receive_data(bytes(data))
            elif isinstance(event, h11.Request):
                request, body = event, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                status, extra, *rest = self.script.popleft() if self.script else (200, [])
                content = rest[0] if rest else b""
                length = ("content-length", str(len(content)))
                response = h11.Response(status_code=status, headers=[length, *extra])
                data = conn.send(response) + conn.send(h11.Data(data=content))
                await stream.send_all(data + conn.send(h11.EndOfMessage()))
                headers = {k.decode(): v.decode() for k, v in request.headers}
                self.requests.append(Request(status, request.target.decode(), headers, body))
                self.changed.set()
                self.changed = trio.Event()
                conn.start_next_cycle()
            else:
                return


@asynccontextmanager
async def serving(
    receiver: Receiver, port: int = 0, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """Run ``receiver`` on 127.0.0.1 (``port`` 0: a free one; ``tls``: over TLS)
    for the block; yield the port."""
    async with trio.open_nursery() as nursery:
        if tls is None:
            listeners = await nursery.start(
                partial(trio.serve_tcp, receiver.handle, port, host="127.0.0.1")
            )
        else:
            listeners = await nursery.start(
                partial(trio.serve_ssl_over_tcp, receiver.handle, port, tls, host="127.0.0.1")
            )
        listener = listeners[0]
        sockets = listener.transport_listener if tls is not None else listener
        receiver.port = sockets.socket.getsockname()[1]
        yield receiver.port
        nursery.cancel_scope.cancel()


#: Fast, jitter-free retries: the tests' outages last milliseconds.
FAST = RetryPolicy(initial_delay=0.05, max_delay=0.2, min_delay=0.05, jitter=0.0)


@asynccontextmanager
async def webhook_sink(
    url: str, *, retry: RetryPolicy = FAST, **options: Any
) -> AsyncIterator[WebhookSink]:
    """An open webhook sink POSTing to ``url``, its background tasks running; closed on exit."""
    async with trio.open_nursery() as nursery:

        def start_background(fn: Callable[[], Awaitable[Any]]) -> None:
            nursery.start_soon(fn)

        context = SinkContext(
            name="hook",
            config_name="t",
            sources=(),
            request_stop=lambda reason: None,
            start_background=start_background,
            retry=retry,
        )
        sink = WebhookSink(WebhookOptions(url=url, **options), context)
        await sink.open()
        yield sink
        await sink.aclose()
        nursery.cancel_scope.cancel()
