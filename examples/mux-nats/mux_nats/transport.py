"""The ``nats`` transport: its options, and one session in core or JetStream mode.

core: a plain subscription. Messages arrive while mux is connected and
only then: what is published while mux is away is gone (at most once), and
events have no id.

jetstream: a durable pull consumer. Each message is emitted with its
stream sequence as the id and its subject as the event type, and
acknowledged only once ``session.delivered()`` says every sink has it; what
was not acknowledged (mux killed, a connection cut) the server sends again
after ``ack_wait`` (at least once). A message sent again that every sink
already has -- its ack lost when nats-server was killed, or never sent when
mux was (and restarted with ``--state``) -- is acknowledged again, not
emitted twice (``delivered.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import attrs

from mux_core import Session, Transport
from mux_core.options import at_least_one, positive, raise_problems, secret

from .client import Credentials, NatsConnection
from .delivered import Delivered
from .jetstream import PullConsumer
from .protocol import sub

__all__ = ["NatsOptions", "NatsTransport"]

_MODES = ("core", "jetstream")
_DEFAULT_PORT = 4222


def _token(*, dots: bool) -> Callable[[Any, attrs.Attribute[str], str], None]:
    """A validator for a subject (``dots``: wildcards and dots allowed) or a name."""
    banned = " \t\r\n" if dots else " \t\r\n.*>"

    def check(_instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
        if any(c in banned for c in value):
            what = "spaces" if dots else "spaces, '.', '*' or '>'"
            raise ValueError(f"{attribute.name} must not contain {what}, got {value!r}")

    return check


@attrs.frozen(kw_only=True)
class NatsOptions:
    #: The server as ``nats://host:port``; instead of ``host`` and ``port``.
    url: str = ""
    #: The server's host name or address (when ``url`` is not given).
    host: str = "127.0.0.1"
    #: The server's port (when ``url`` is not given).
    port: int = _DEFAULT_PORT
    #: The subject to receive, wildcards allowed (``metrics.>``). jetstream: a
    #: filter within the stream (empty: the whole stream).
    subject: str = attrs.field(default="", validator=_token(dots=True))
    #: "core" (a subscription; at most once) or "jetstream" (a durable consumer; at least once).
    mode: str = "core"
    #: jetstream: the stream to read; it must exist.
    stream: str = attrs.field(default="", validator=_token(dots=False))
    #: jetstream: the durable consumer's name; the server keeps its position.
    durable: str = attrs.field(default="mux", validator=_token(dots=False))
    #: jetstream: messages asked for per pull request.
    batch: int = attrs.field(default=100, validator=at_least_one())
    #: jetstream: seconds the server waits for an ack before it sends a message again.
    ack_wait: float = attrs.field(default=30.0, validator=positive("seconds"))
    #: The user name, with ``password``.
    user: str = ""
    #: The password of ``user``.
    password: str = attrs.field(default="", repr=False, metadata=secret())
    #: A token, instead of ``user`` and ``password``.
    token: str = attrs.field(default="", repr=False, metadata=secret())
    #: The largest message accepted, in bytes; the server's own max_payload lowers it.
    max_payload: int = attrs.field(default=8 << 20, validator=at_least_one())
    #: Seconds of silence before a PING; after two unanswered the connection is dropped.
    ping_interval: float = attrs.field(default=10.0, validator=positive("seconds"))

    @classmethod
    def check(cls, options: NatsOptions) -> None:
        """Problems visible without connecting, each reported at its key's line."""
        raise_problems(_problems(options))

    def address(self) -> tuple[str, int]:
        return _split_url(self.url) if self.url else (self.host, self.port)


def _problems(options: NatsOptions) -> Iterator[str]:
    if options.mode not in _MODES:
        yield f"mode: must be one of {', '.join(_MODES)}, got {options.mode!r}"
    if options.mode == "core" and not options.subject:
        yield 'subject: mode = "core" needs a subject to subscribe to'
    if options.mode == "jetstream" and not options.stream:
        yield 'stream: mode = "jetstream" needs the stream to read'
    if options.url:
        if options.host != "127.0.0.1" or options.port != _DEFAULT_PORT:
            yield "url: give url, or host and port, not both"
        try:
            _split_url(options.url)
        except ValueError as exc:
            yield f"url: {exc}"
    if options.password and not options.user:
        yield "password: needs a user"
    if options.token and options.user:
        yield "token: give user and password, or token, not both"


def _split_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.username or parts.password:  # checked first: the url is not shown then
        raise ValueError("put credentials in user and password (or token), not in the url")
    if parts.scheme != "nats" or not parts.hostname:
        raise ValueError(f"must look like nats://host:4222, got {url!r}")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"must be nats://host:port and nothing more, got {url!r}")
    try:
        return parts.hostname, parts.port or _DEFAULT_PORT
    except ValueError:
        raise ValueError(f"has a bad port: {url!r}") from None


class NatsTransport(Transport):
    """NATS subscriptions (core) and durable pull consumers (jetstream), by hand over trio."""

    Options = NatsOptions
    options: NatsOptions

    async def run_session(self, session: Session) -> None:
        options = self.options
        host, port = options.address()
        credentials = Credentials(user=options.user, password=options.password, token=options.token)
        connection = await NatsConnection.open(
            host,
            port,
            credentials=credentials,
            max_payload=options.max_payload,
            ping_interval=options.ping_interval,
            name=f"mux {session.source}",
        )
        async with connection:
            if options.mode == "jetstream":
                await self._consume(connection, session)
            else:
                await self._subscribe(connection, session)

    async def _subscribe(self, connection: NatsConnection, session: Session) -> None:
        sid = connection.new_sid()
        await connection.send(sub(self.options.subject, sid))
        await connection.flush()  # a refused SUB's -ERR comes before the PONG
        await session.connected()
        while True:
            messages = await connection.receive()
            await session.emit([(m.subject, None, m.payload) for m in messages if m.sid == sid])

    async def _consume(self, connection: NatsConnection, session: Session) -> None:
        options = self.options
        consumer = PullConsumer(
            connection,
            stream=options.stream,
            durable=options.durable,
            subject=options.subject,
            batch=options.batch,
            ack_wait=options.ack_wait,
            timeout=session.connect_timeout,
        )
        await consumer.prepare()
        await session.connected()
        delivered = Delivered.of(
            session.resume.cursor,
            stream=options.stream,
            durable=options.durable,
            subject=options.subject,
        )
        while True:
            messages = await consumer.next_messages()
            fresh = [m for m in messages if m not in delivered]
            if fresh:
                await session.emit([(m.subject, str(m.stream_seq), m.payload) for m in fresh])
                if not await session.delivered():  # a sink failed: ack only the repeats
                    await session.notice(
                        f"a sink failed: {len(fresh)} messages left unacknowledged"
                        " (the server sends them again after ack_wait)"
                    )
                    await consumer.ack([m for m in messages if m in delivered])
                    continue
                delivered = delivered.adding(fresh)  # before the ack, which may be lost
                session.resume.cursor = delivered.cursor()
            await consumer.ack(messages)
