"""A fake TCP line server with scriptable faults, for transports of any line protocol.

The HTTP and WebSocket fakes serve one protocol each; a transport for a
protocol of its own (NDJSON over TCP, a text protocol, a proprietary feed)
still meets the same faults -- refused, killed and restarted, silent, cut
mid-stream, garbage -- and this server plays them with real sockets::

    async with serve_tcp(hello="resume_after") as server:   # tcp://127.0.0.1:<port>
        await server.publish({"loss": 0.5})           # the line {"loss":0.5,"id":1}
        server.script(Stall(), Drop(after=2), Garbage(b"\\xff\\xfe\\n"))
        await server.restart()                        # killed, back on the same port
        await server.wait_for_connections(3)          # accepted so far, across restarts
        server.received                               # the lines clients sent

Normal streaming: a connection gets every kept line (``history``), then each
line published while it is open, one line per ``\\n``. With ``hello`` the
server first waits for the client's first line and resumes after the id it
names: ``hello="resume_after"`` reads that key of a JSON object, a callable
``hello(line) -> id`` reads any other format; an absent or unknown id means
"from the oldest kept line". Ids compare as text, so ``7`` and ``"7"`` match.

Each NEW connection pops the next scripted action; none queued: normal.

* :class:`Stall` -- accept, read what the client sends, never write;
* :class:`Drop` ``(after=n)`` -- send ``n`` lines, then close the connection;
* :class:`Close` -- close at once, before reading or writing anything;
* :class:`Raw` ``(data, close=True)`` -- send exactly ``data`` (half a line,
  say), then close, or stay open and silent with ``close=False``;
* :class:`Garbage` ``(data)`` -- send ``data`` first, then stream normally:
  malformed input the transport must survive.

* :class:`Conversation` ``(*steps)`` -- a server that speaks first: send,
  expect what the client sends, send again, end with one of the faults above
  or stream normally (``mux_core/testing/_script.py``). A client that does not
  send what an :class:`Expect` waits for gets its connection closed, and the
  failure is kept in ``server.mismatches``.

``serve_tcp(conversation=...)`` plays a conversation on every connection
(the greeting of a protocol), unless the connection's scripted action is a
conversation of its own; a scripted fault then comes after it (:class:`Close`
still closes at once). With both ``conversation`` and ``hello``, the hello
line is the first line after what the conversation consumed.

:func:`refusing_port` gives a port where connections are refused.
"""

from __future__ import annotations

import collections
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeAlias

import orjson
import trio

from ._hostile import Reset
from ._http import (
    Close,
    Drop,
    Raw,
    Stall,
)
from ._listen import serve_loopback
from ._script import Conversation, Ending, Inbox, Mismatch, Unmet, log_mismatch, play
from ._ws import Garbage

__all__ = ["FakeTcpServer", "Hello", "TcpAction", "refusing_port", "serve_tcp"]

#: What :meth:`FakeTcpServer.script` accepts: the HTTP fakes' Stall, Drop, Raw
#: and Close, the WebSocket fake's Garbage, and a Conversation, with the
#: meanings above.
TcpAction: TypeAlias = Stall | Drop | Raw | Close | Garbage | Conversation

#: The id a client resumes after, read from its first line: a JSON key, or a function.
Hello: TypeAlias = str | Callable[[bytes], object]

_READ_SIZE = 65536
_WRITE_BATCH = 512
_MAX_LINE = 1 << 20


class FakeTcpServer:
    """A running fake line server; use :func:`serve_tcp` to get one."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        port: int,
        hello: Hello | None,
        max_history: int,
        conversation: Conversation | None = None,
    ) -> None:
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        self._nursery = nursery
        #: The port listened on (the kernel's choice when 0 was asked; kept across restarts).
        self.port = port
        #: How the client's first line names the id to resume after; None: no hello.
        self.hello = hello
        #: The kept lines, oldest first, without their ``\\n``.
        self.history: list[bytes] = []
        #: The id of each line of ``history`` (None for a line without one).
        self.history_ids: list[str | None] = []
        #: The conversation every connection has (unless scripted otherwise); None: none.
        self.conversation = conversation
        #: The lines clients sent, in arrival order, without their ``\\n``.
        self.received: list[bytes] = []
        #: The :class:`Expect` steps clients did not meet (their connections were closed).
        self.mismatches: list[Mismatch] = []
        self._max_history = max_history
        self._base = 0  # lines trimmed off the front of history
        self._counter = 0
        self._accepted = 0
        self._actions: collections.deque[TcpAction] = collections.deque()
        self._grown = trio.Event()
        self._changed = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()

    @property
    def url(self) -> str:
        """``tcp://127.0.0.1:<port>``."""
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        """Connections accepted so far, across restarts."""
        return self._accepted

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._scope is not None

    # -- lines -----------------------------------------------------------------

    async def publish(self, data: dict[str, Any] | str | bytes) -> None:
        """Append one line to ``history`` and send it to every streaming connection.

        A dict is sent as JSON; without an ``"id"`` it gets one, the count of
        publishes as an integer (1, 2, ...), as many line servers number
        their messages. ``str`` and ``bytes`` are sent as they are -- publish
        garbage this way to put it mid-stream. A newline is added.
        """
        self._counter += 1
        id_: object = None
        if isinstance(data, dict):
            if "id" not in data:
                data = {**data, "id": self._counter}
            id_ = data["id"]
            line = orjson.dumps(data)
        else:
            line = data.encode() if isinstance(data, str) else bytes(data)
        if b"\n" in line:
            raise ValueError(f"a line must not contain a newline: {line[:60]!r}")
        self.history.append(line)
        self.history_ids.append(None if id_ is None else str(id_))
        if len(self.history) > self._max_history + max(self._max_history // 8, 1):
            excess = len(self.history) - self._max_history
            del self.history[:excess], self.history_ids[:excess]
            self._base += excess
        grown, self._grown = self._grown, trio.Event()
        grown.set()
        await trio.lowlevel.checkpoint()

    def script(self, *actions: TcpAction) -> None:
        """Queue faults: each NEW connection pops the next; none queued -> normal."""
        for action in actions:
            if not isinstance(action, Stall | Drop | Raw | Close | Garbage | Conversation):
                raise TypeError(
                    f"{action!r} is not a TCP fault; use Stall, Drop, Raw, Close, Garbage "
                    "or a Conversation"
                )
        self._actions.extend(actions)

    # -- waiting -----------------------------------------------------------------

    async def wait_for_connections(self, n: int) -> None:
        """Return once ``n`` connections have been accepted in total (across restarts)."""
        while self._accepted < n:
            await self._changed.wait()

    async def wait_for_received(self, n: int) -> list[bytes]:
        """Return ``received`` once clients have sent ``n`` lines in total."""
        while len(self.received) < n:
            await self._changed.wait()
        return self.received

    async def wait_for_mismatches(self, n: int) -> list[Mismatch]:
        """Return ``mismatches`` once ``n`` expectations have gone unmet in total."""
        while len(self.mismatches) < n:
            await self._changed.wait()
        return self.mismatches

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Listen (again) on ``port``: a restarted server. No-op when running."""
        if self._scope is None:
            self._scope = await self._nursery.start(self._serve)

    async def stop(self) -> None:
        """Stop listening and cut every open connection at once: a killed server."""
        scope, self._scope = self._scope, None
        if scope is not None:
            scope.cancel()
            await self._done.wait()

    async def restart(self) -> None:
        """:meth:`stop`, then :meth:`start` on the same port."""
        await self.stop()
        await self.start()

    async def _serve(self, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        done = self._done = trio.Event()
        try:
            await serve_loopback(self.port, self._handle, self._bound, task_status=task_status)
        finally:
            done.set()

    def _bound(self, port: int) -> None:
        self.port = port

    def _changed_now(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def _handle(self, stream: trio.SocketStream) -> None:
        self._accepted += 1
        number = self._accepted
        self._changed_now()
        action = self._actions.popleft() if self._actions else None
        try:
            async with stream:
                if not isinstance(action, Close):
                    await self._converse(stream, action, number)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away: its business, not the server's

    async def _converse(
        self, stream: trio.SocketStream, action: TcpAction | None, number: int
    ) -> None:
        inbox = Inbox()
        fault: Ending | None
        conversation: Conversation | None
        if isinstance(action, Conversation):
            conversation, fault = action, None
        else:
            conversation, fault = self.conversation, action
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, stream, inbox)
            if conversation is not None:
                try:
                    ending = await play(stream, conversation, inbox)
                except Unmet as unmet:
                    mismatch = unmet.mismatch(number)
                    self.mismatches.append(mismatch)
                    log_mismatch(mismatch)
                    self._changed_now()
                    nursery.cancel_scope.cancel()
                    return
                fault = fault if fault is not None else ending
            await self._after_conversation(stream, fault, inbox)
            nursery.cancel_scope.cancel()

    async def _after_conversation(
        self, stream: trio.SocketStream, fault: Ending | None, inbox: Inbox
    ) -> None:
        if isinstance(fault, Close):
            return
        if isinstance(fault, Reset):  # closing with a zero linger time sends RST, not FIN
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if isinstance(fault, Stall):
            inbox.stop()
            await trio.sleep_forever()
        start = self._base
        if self.hello is not None:
            line = await inbox.line()
            start = self._after(self._resume_id(line) if line is not None else None)
        inbox.stop()
        if isinstance(fault, Raw):
            await stream.send_all(fault.data)
            if not fault.close:
                await trio.sleep_forever()
            return
        if isinstance(fault, Garbage):
            await stream.send_all(fault.data)
        await self._stream(stream, start, fault.after if isinstance(fault, Drop) else None)

    async def _read(self, stream: trio.SocketStream, inbox: Inbox) -> None:
        """Keep every line the client sends in ``received``; feed ``inbox`` meanwhile."""
        buffer = b""
        while data := await stream.receive_some(_READ_SIZE):
            inbox.feed(data)
            *lines, buffer = (buffer + data).split(b"\n")
            for line in lines:
                self.received.append(line.removesuffix(b"\r"))
            if lines:
                self._changed_now()
            if len(buffer) > _MAX_LINE:
                break
        inbox.close()  # the client closed its side: stream anyway

    async def _stream(self, stream: trio.SocketStream, position: int, limit: int | None) -> None:
        sent = 0
        while limit is None or sent < limit:
            while position >= self._base + len(self.history):
                await self._grown.wait()
            position = max(position, self._base)  # a client too far behind skips the trimmed
            end = min(self._base + len(self.history), position + _WRITE_BATCH)
            if limit is not None:
                end = min(end, position + limit - sent)
            lines = self.history[position - self._base : end - self._base]
            await stream.send_all(b"".join(line + b"\n" for line in lines))
            sent += end - position
            position = end

    def _resume_id(self, line: bytes) -> str | None:
        if callable(self.hello):
            value = self.hello(line)
        else:
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                return None
            value = message.get(self.hello) if isinstance(message, dict) else None
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return None if value is None else str(value)

    def _after(self, last_id: str | None) -> int:
        """The position after ``last_id``; the oldest kept line when absent or unknown."""
        if last_id is not None:
            for index in range(len(self.history_ids) - 1, -1, -1):
                if self.history_ids[index] == last_id:
                    return self._base + index + 1
        return self._base


@asynccontextmanager
async def serve_tcp(
    *,
    port: int = 0,
    hello: Hello | None = None,
    conversation: Conversation | None = None,
    max_history: int = 100_000,
) -> AsyncIterator[FakeTcpServer]:
    """Run a :class:`FakeTcpServer` on 127.0.0.1 for the duration of the block.

    ``port=0`` lets the kernel choose (read ``server.port``). ``hello`` and
    ``conversation``: see the module docstring. On exit the server and
    every connection are closed.
    """
    async with trio.open_nursery() as nursery:
        server = FakeTcpServer(
            nursery,
            port=port,
            hello=hello,
            max_history=max_history,
            conversation=conversation,
        )
        await server.start()
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 where every connection is refused, for the block's duration.

    The port is bound but never listened on, so nothing else can take it
    meanwhile and a connect gets an immediate refusal (RST), as from a host
    whose server is not running.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()
