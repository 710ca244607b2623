"""What a broken or hostile server sends ends the session with a detail that says what came."""

import pytest
import trio
from mux_nats import NatsOptions, NatsTransport

from mux_core import Disconnected, Failed, ServerUnavailable, SessionError
from mux_core.testing import Flood, Plan, Send, run_one_session, serve_hostile

INFO = Send(b'INFO {"server_id":"hostile","max_payload":1024}\r\n')
PONG = Send(b"PONG\r\n")  # the answer to CONNECT's PING; a second one to the PING after SUB
PERMISSIONS = b"-ERR 'Permissions Violation for Subscription to \"a\"'\r\n"

CASES: list[tuple[Plan, type[SessionError], str]] = [
    ([Send(b"SSH-2.0-OpenSSH_9.6\r\n")], Disconnected, "not the NATS protocol: b'SSH-2.0-Op"),
    ([PONG], Disconnected, "not a NATS server: it began with PONG"),
    ([Flood(b"x" * 65536)], Disconnected, "a line longer than 65536 bytes: b'xxxxxxxxxx"),
    ([INFO, PONG, Send(b"MSG a 1 5000\r\n")], Disconnected, "a message of 5,000 bytes is over"),
    ([INFO, PONG, PONG, Send(b"MSG a 1 3\r\nabcdefgh")], Disconnected, "a message of 3 bytes is"),
    ([INFO, PONG, PONG, Send(b"-ERR 'Slow Consumer'\r\n")], Disconnected, "the server said 'Slow"),
    (
        [INFO, Send(b"-ERR 'Maximum Connections Exceeded'\r\n")],
        ServerUnavailable,
        "the server is full",
    ),
    ([INFO, PONG, Send(PERMISSIONS)], Failed, "permission denied: the server said 'Permissions"),
    ([Send(b'INFO {"tls_required":true}\r\n')], Failed, "the server requires TLS"),
]


@pytest.mark.parametrize(("plan", "kind", "detail"), CASES)
async def test_hostile_servers(plan: Plan, kind: type[SessionError], detail: str) -> None:
    async with serve_hostile(plan, read_request=False) as server:
        transport = NatsTransport(NatsOptions(port=server.port, subject="a"))
        with trio.fail_after(10):
            result = await run_one_session(transport)
    assert type(result.error) is kind
    assert result.error.detail.startswith(detail)
    assert len(result.error.detail) < 200  # what a server floods is not copied whole
    assert not result.events


async def test_a_message_before_the_subscriptions_pong_is_kept() -> None:
    early: Plan = [INFO, PONG, Send(b"MSG a 1 5\r\nearly\r\nPONG\r\nMSG a 1 4\r\nlate\r\n")]
    async with serve_hostile(early, read_request=False) as server:
        transport = NatsTransport(NatsOptions(port=server.port, subject="a"))
        with trio.fail_after(10):
            result = await run_one_session(transport, until=2)
    assert [e.data for e in result.events] == ["early", "late"]
