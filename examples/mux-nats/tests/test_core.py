"""Core mode against a real nats-server, and every way a connection fails."""

from mux_nats import NatsOptions, NatsTransport
from publisher import connect, nats_server
from sessions import running

from mux_core import Disconnected, Failed
from mux_core.testing import Hangup, Plan, Send, refusing_port, run_one_session, serve_hostile


async def test_core_mode_emits_each_message_with_its_subject_and_no_id() -> None:
    async with nats_server() as server:
        transport = NatsTransport(NatsOptions(port=server.port, subject="metrics.>"))
        # Publish once subscribed: core NATS keeps nothing for a subscriber not there yet.
        async with (
            running(transport, until=lambda r: len(r.events) >= 3) as session,
            connect(server.port) as nats,
        ):
            await nats.publish("metrics.train", b'{"loss": 0.5}')
            await nats.publish("other", b"not subscribed")
            await nats.publish("metrics.eval", b"plain text")
            await nats.publish("metrics.train", b'{"loss": 0.4}')
    assert session.result is not None and session.result.until_met
    assert [(e.event, e.id, e.data) for e in session.result.events] == [
        ("metrics.train", None, {"loss": 0.5}),
        ("metrics.eval", None, "plain text"),
        ("metrics.train", None, {"loss": 0.4}),
    ]


async def test_refused_wrong_credentials_and_garbage() -> None:
    with refusing_port() as port:
        refused = await run_one_session(NatsTransport(NatsOptions(port=port, subject="a")))
    async with nats_server("--user", "mux", "--pass", "right-horse") as server:
        wrong = NatsOptions(port=server.port, subject="a", user="mux", password="wrong-battery")
        denied = await run_one_session(NatsTransport(wrong))
    http: Plan = [Send(b"HTTP/1.1 400 Bad Request\r\n\r\n"), Hangup()]
    async with serve_hostile(http, read_request=False) as hostile:
        garbage = await run_one_session(NatsTransport(NatsOptions(port=hostile.port, subject="a")))
    assert repr(refused.error) == "ServerUnavailable('connection refused')"
    assert isinstance(denied.error, Failed)  # terminal: retrying cannot help
    assert denied.error.detail == (
        "authorization violation: the server refused the credentials"
        " -- check user and password, or token"
    )
    assert (
        repr(garbage.error)
        == "Disconnected(\"not the NATS protocol: b'HTTP/1.1 400 Bad Request'\")"
    )


async def test_a_frozen_server_and_a_killed_one() -> None:
    async with nats_server() as server:
        transport = NatsTransport(NatsOptions(port=server.port, subject="a", ping_interval=0.1))
        async with running(transport) as frozen:
            server.pause()  # SIGSTOP: the connection stays open, nothing answers
        unanswered = await run_one_session(transport, connect_timeout=0.5)  # still frozen
        server.resume()
        async with running(transport) as killed:
            await server.kill()  # SIGKILL: the kernel closes its sockets
    assert frozen.result is not None and unanswered.error is not None and killed.result is not None
    assert (
        repr(frozen.result.error) == "Disconnected('the server did not answer PING (0.3 s silent)')"
    )
    assert repr(unanswered.error) == "ServerUnavailable('no connection within 0.5 s')"
    assert isinstance(killed.result.error, Disconnected)
    assert killed.result.error.detail in ("the server closed the connection", "connection reset")
