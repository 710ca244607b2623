"""mux_nats_asyncio: core NATS through nats-py, an asyncio client, inside a transport."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from mux_core import Disconnected, Register, Session, Transport, hookimpl
from mux_core.aio import AsyncioChannel, asyncio_loop, session_error
from mux_core.options import at_least_one

if TYPE_CHECKING:
    from nats.aio.msg import Msg


@attrs.frozen(kw_only=True)
class NatsOptions:
    #: The NATS server, nats://host:port.
    url: str = "nats://127.0.0.1:4222"
    #: The subject to subscribe to; the wildcards * and > are allowed.
    subject: str
    #: Messages held between nats-py and mux while the sinks are behind.
    max_pending: int = attrs.field(default=4096, validator=at_least_one())


class NatsTransport(Transport):
    """Every message published on the subject while connected; core NATS resumes nothing."""

    Options = NatsOptions
    options: NatsOptions

    async def run_session(self, session: Session) -> None:
        import nats  # here, not at the top: every mux command imports every plugin
        import nats.errors

        words = {
            nats.errors.UnexpectedEOF: "the server closed the connection",
            nats.errors.StaleConnectionError: "the server stopped answering pings",
            nats.errors.AuthorizationError: "authorization violation (check the credentials)",
        }
        async with asyncio_loop() as loop:
            inbox: AsyncioChannel[Msg] = loop.channel(max_items=self.options.max_pending)

            async def on_error(exc: Exception) -> None:  # both run on the asyncio loop
                loop.fail(exc)  # the first error ends the session, also while connecting

            async def on_closed() -> None:
                loop.fail(Disconnected("the connection closed"))

            try:
                nc = await loop.run(
                    nats.connect(
                        self.options.url,
                        allow_reconnect=False,  # mux reconnects, under its retry policy
                        error_cb=on_error,
                        closed_cb=on_closed,
                    )
                )
                loop.at_exit(nc.close)
                await loop.run(nc.subscribe(self.options.subject, cb=inbox.put))
                await loop.run(nc.flush())  # the server has the subscription now
            except Exception as exc:
                permanent = (nats.errors.AuthorizationError,)
                raise session_error(exc, connected=False, words=words, permanent=permanent) from exc
            await session.connected()
            try:
                async for batch in inbox:  # everything that arrived since the last one
                    await session.emit([(msg.subject, None, msg.data) for msg in batch])
            except Exception as exc:
                raise session_error(exc, connected=True, words=words) from exc


@hookimpl
def mux_register_transports(register: Register) -> None:
    register("nats-asyncio", NatsTransport)
