"""One connection to a NATS server over trio: the handshake, reads kept alive, writes.

Every way it can go wrong comes out as one of mux's session errors with a
detail a user can act on, so the transport only decides what to subscribe
to: a refused connect is :class:`ServerUnavailable`, a server that closes
or sends garbage :class:`Disconnected`, refused credentials :class:`Failed`.
What the server says (its ``-ERR`` texts, the bytes of a garbage line) is
shown escaped.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from mux_core import (
    Disconnected,
    Failed,
    ServerUnavailable,
    SessionError,
    describe_connection_error,
)

from .protocol import (
    PING,
    PONG,
    Err,
    Frame,
    Info,
    Msg,
    Parser,
    Ping,
    Pong,
    ProtocolError,
    connect,
    shown,
)

if TYPE_CHECKING:
    import trio

__all__ = ["Credentials", "NatsConnection", "server_error"]

#: PINGs left unanswered before the connection counts as dead.
MAX_PINGS_OUT = 2
_READ_SIZE = 65536


@attrs.frozen(kw_only=True)
class Credentials:
    """What CONNECT sends to authenticate: a user and password, or a token."""

    user: str = ""
    password: str = attrs.field(default="", repr=False)
    token: str = attrs.field(default="", repr=False)

    def fields(self) -> dict[str, str]:
        found = {"user": self.user, "pass": self.password, "auth_token": self.token}
        return {key: value for key, value in found.items() if value}


def server_error(message: str) -> SessionError:
    """The state a ``-ERR`` puts the session in, with a readable detail."""
    lower = message.lower()
    if lower.startswith(("authorization violation", "user authentication expired")):
        return Failed(
            "authorization violation: the server refused the credentials"
            " -- check user and password, or token"
        )
    if lower.startswith("permissions violation"):
        return Failed(f"permission denied: the server said {shown(message, 120)}")
    if lower.startswith("maximum") and "connections" in lower:
        return ServerUnavailable(f"the server is full: it said {shown(message)}")
    return Disconnected(f"the server said {shown(message)}")


class NatsConnection:
    """An open, authenticated connection; use :meth:`open` and close it with ``async with``."""

    def __init__(self, stream: trio.SocketStream, parser: Parser, ping_interval: float) -> None:
        self._stream = stream
        self._parser = parser
        self._ping_interval = ping_interval
        self._pings_out = 0
        self._backlog: list[Frame] = []
        #: A prefix for this connection's reply subjects, unique per connection.
        self.inbox = f"_INBOX.{os.urandom(11).hex()}"
        self._sids = itertools.count(1)

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        credentials: Credentials,
        max_payload: int,
        ping_interval: float,
        name: str,
    ) -> NatsConnection:
        """Connect, read the server's INFO, send CONNECT and wait for its PONG."""
        import trio

        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise ServerUnavailable(describe_connection_error(exc) or "cannot connect") from exc
        connection = cls(stream, Parser(max_payload=max_payload), ping_interval)
        try:
            await connection._handshake(credentials, name)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return connection

    async def __aenter__(self) -> NatsConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        import trio

        await trio.aclose_forcefully(self._stream)

    def new_sid(self) -> str:
        return str(next(self._sids))

    async def _handshake(self, credentials: Credentials, name: str) -> None:
        frames: list[Frame] = []
        while not frames:  # the INFO line may come in pieces
            frames = await self._read()
        first = frames[0]
        if not isinstance(first, Info):
            raise Disconnected(f"not a NATS server: it began with {type(first).__name__.upper()}")
        if first.fields.get("tls_required"):
            raise Failed("the server requires TLS, which this transport does not speak")
        limit = first.fields.get("max_payload")
        if isinstance(limit, int) and 0 < limit < self._parser.max_payload:
            self._parser.max_payload = limit
        hello = {
            "verbose": False,
            "pedantic": False,
            "name": name,
            "lang": "python-mux",
            "version": "0.1.0",
            "protocol": 1,
            "headers": True,
            "no_responders": True,
            **credentials.fields(),
        }
        await self.send(connect(hello))
        await self._until_pong(frames[1:])

    async def _until_pong(self, frames: Sequence[Frame]) -> None:
        """Read up to the PONG; messages before it are kept for :meth:`receive`."""
        kept: list[Frame] = []
        while True:
            for index, frame in enumerate(frames):
                if type(frame) is Err:
                    raise server_error(frame.message)
                if type(frame) is Ping:
                    await self.send(PONG)
                elif type(frame) is Pong:
                    self._backlog = [*kept, *frames[index + 1 :]]
                    return
                elif type(frame) is Msg:
                    kept.append(frame)
            frames = await self._read()

    async def flush(self) -> None:
        """Send a PING and wait for its PONG: every command sent before it was processed
        (an -ERR for one of them, such as a refused SUB, arrives before the PONG)."""
        await self.send(PING)
        backlog, self._backlog = self._backlog, []
        await self._until_pong(backlog)

    async def send(self, data: bytes) -> None:
        import trio

        try:
            await self._stream.send_all(data)
        except trio.BrokenResourceError as exc:
            raise Disconnected(describe_connection_error(exc) or "connection lost") from exc

    async def receive(self) -> list[Msg]:
        """The messages of the next read that brings any; answers PINGs meanwhile.

        Sends a PING after ``ping_interval`` seconds of silence; after
        ``MAX_PINGS_OUT`` of them unanswered the server counts as gone.
        """
        while True:
            frames, self._backlog = self._backlog or await self._read_alive(), []
            messages: list[Msg] = []
            for frame in frames:
                if type(frame) is Msg:
                    messages.append(frame)
                elif type(frame) is Ping:
                    await self.send(PONG)
                elif type(frame) is Err:
                    raise server_error(frame.message)
            if messages:
                return messages

    async def _read_alive(self) -> list[Frame]:
        import trio

        while True:
            with trio.move_on_after(self._ping_interval):
                frames = await self._read()
                self._pings_out = 0
                return frames
            if self._pings_out >= MAX_PINGS_OUT:
                silent = self._ping_interval * (MAX_PINGS_OUT + 1)
                raise Disconnected(f"the server did not answer PING ({silent:g} s silent)")
            self._pings_out += 1
            await self.send(PING)

    async def _read(self) -> list[Frame]:
        import trio

        try:
            data = await self._stream.receive_some(_READ_SIZE)
        except trio.BrokenResourceError as exc:
            raise Disconnected(describe_connection_error(exc) or "connection lost") from exc
        if not data:
            raise Disconnected("the server closed the connection")
        try:
            return self._parser.feed(data)
        except ProtocolError as exc:
            raise Disconnected(str(exc)) from None
