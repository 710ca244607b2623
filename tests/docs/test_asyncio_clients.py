"""The asyncio-clients guide's nats-py transport, against a real nats-server.

* the guide shows tests/docs/asyncio_nats.py line for line, and it imports
  only what a third party's plugin may;
* a refused port is ``server_unavailable: connection refused`` at once --
  nats-py's own connect loop never gets to retry (its
  ``max_reconnect_attempts=0`` means no limit while connecting);
* messages published while connected arrive; a server killed with SIGKILL
  ends the session as ``disconnected``, while it is down sessions are
  refused, and once it is back the next session receives again;
* a session ended by mux (cancelled) stops the asyncio side: no thread is
  left and nothing is printed, no warning logged.
"""

from __future__ import annotations

import ast
import logging
import re
import threading

import pytest
import trio

from mux_core.records import Status
from mux_core.testing import ServerProcess, SessionResult, refusing_port, run_one_session
from tests.docs.asyncio_nats import NatsOptions, NatsTransport
from tests.helpers import ROOT

EXAMPLE = ROOT / "tests" / "docs" / "asyncio_nats.py"
GUIDE = ROOT / "docs" / "plugins" / "asyncio-clients.md"


def test_the_guide_shows_the_tested_transport_line_for_line() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    shown = [block for block in blocks if '"""mux_nats_asyncio:' in block]
    assert shown == [EXAMPLE.read_text(encoding="utf-8")], (
        "docs/plugins/asyncio-clients.md and tests/docs/asyncio_nats.py differ: copy the file "
        "into the guide"
    )


def test_the_example_imports_only_what_a_plugin_may() -> None:
    tree = ast.parse(EXAMPLE.read_text(encoding="utf-8"))
    modules = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    }
    modules |= {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    ours = {name for name in modules if name.split(".")[0] == "mux_core"}
    assert ours == {"mux_core", "mux_core.aio", "mux_core.options"}
    assert not any("._" in name for name in modules)


async def _publish(port: int, subject: str, payloads: list[bytes]) -> None:
    """Publish with the NATS text protocol, and wait for the server's PONG: it has them."""
    pubs = b"".join(b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(p), p) for p in payloads)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(b'CONNECT {"verbose":false}\r\n' + pubs + b"PING\r\n")
        received = b""
        while b"PONG\r\n" not in received:
            data = await stream.receive_some()
            assert data, "nats-server closed the publisher's connection"
            received += data


def _connected(result: SessionResult) -> bool:
    return any(isinstance(r, Status) and r.state == "connected" for r in result.records)


def _loop_threads() -> list[str]:
    """Threads of an asyncio loop still alive: ours, and asyncio's executor's."""
    return [
        t.name
        for t in threading.enumerate()
        if t.is_alive() and t.name.startswith(("mux-asyncio", "asyncio_"))
    ]


async def _receive(transport: NatsTransport, port: int, payloads: list[bytes]) -> SessionResult:
    """One session that gets ``payloads``, published once it is connected; ended by mux."""
    connected = trio.Event()

    def until(result: SessionResult) -> bool:
        if _connected(result):
            connected.set()
        return len(result.events) >= len(payloads)

    async with trio.open_nursery() as nursery:

        async def publish_once_connected() -> None:
            await connected.wait()
            await _publish(port, "metrics.loss", payloads)

        nursery.start_soon(publish_once_connected)
        with trio.fail_after(10):
            return await run_one_session(transport, until=until)


def _nats_server() -> ServerProcess:
    return ServerProcess(["nats-server", "-a", "{host}", "-p", "{port}"])


async def test_a_refused_port_is_server_unavailable_connection_refused(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with refusing_port() as port:
        transport = NatsTransport(NatsOptions(url=f"nats://127.0.0.1:{port}", subject="x"))
        with trio.fail_after(10):
            # 5 s to connect: "no connection within 5 s" would be the deadline's words.
            result = await run_one_session(transport, connect_timeout=5.0)
    assert repr(result.error) == "ServerUnavailable('connection refused')"
    assert _loop_threads() == []
    assert capfd.readouterr().err == ""
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_receive_kill_refused_restart_receive(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    async with _nats_server() as server:
        transport = NatsTransport(
            NatsOptions(url=f"nats://127.0.0.1:{server.port}", subject="metrics.>")
        )
        first = await _receive(transport, server.port, [b'{"loss":0.5}', b'{"loss":0.4}'])
        assert first.error is None and first.until_met  # ended by mux: cancelled
        assert _loop_threads() == []

        connected, received = trio.Event(), trio.Event()

        def kill_after_one(result: SessionResult) -> bool:
            if _connected(result):
                connected.set()
            if result.events:
                received.set()
            return False  # the session goes on until the server is gone

        async with trio.open_nursery() as nursery:

            async def publish_then_kill() -> None:
                await connected.wait()
                await _publish(server.port, "metrics.loss", [b'{"loss":0.3}'])
                await received.wait()
                await server.kill()  # SIGKILL

            nursery.start_soon(publish_then_kill)
            with trio.fail_after(10):
                broken = await run_one_session(transport, until=kill_after_one)
        with trio.fail_after(10):
            down = await run_one_session(transport)
        await server.start()  # the same port
        again = await _receive(transport, server.port, [b'{"loss":0.2}'])

    assert [(e.event, e.data) for e in first.events] == [
        ("metrics.loss", {"loss": 0.5}),
        ("metrics.loss", {"loss": 0.4}),
    ]
    assert repr(broken.error) == "Disconnected('the server closed the connection')"
    assert [e.data for e in broken.events] == [{"loss": 0.3}]
    assert repr(down.error) == "ServerUnavailable('connection refused')"
    assert [e.data for e in again.events] == [{"loss": 0.2}]
    assert _loop_threads() == []
    assert "Traceback" not in capfd.readouterr().err
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
