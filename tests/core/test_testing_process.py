"""ServerProcess: a real server process, killed, paused, resumed, restarted on its port."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from mux_core import describe_connection_error
from mux_core.testing import ServerProcess

DEADLINE = 10.0

#: A line echo server: "echo: <line>" for each line, on the host and port it is given.
ECHO = textwrap.dedent(
    """
    import socket, sys, threading

    def serve(conn):
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                conn.sendall(b"echo: " + line)

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((sys.argv[1], int(sys.argv[2])))
    server.listen(16)
    print("listening on", sys.argv[2], file=sys.stderr, flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
    """
)


@pytest.fixture
def echo(tmp_path: Path) -> list[str]:
    script = tmp_path / "echo.py"
    script.write_text(ECHO)
    return [sys.executable, str(script), "{host}", "{port}"]


async def ask(port: int, line: bytes) -> bytes:
    with trio.fail_after(DEADLINE):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(line)
            return await stream.receive_some(1024)


async def test_start_kill_restart_on_the_same_port(echo: list[str]) -> None:
    server = ServerProcess(echo)
    assert server.argv[2:] == ["127.0.0.1", str(server.port)] and server.pid is None
    async with server:
        first_pid = server.pid
        assert first_pid is not None and server.running
        assert await ask(server.port, b"one\n") == b"echo: one\n"
        await server.kill()
        assert server.pid is None and server.returncode == -signal.SIGKILL
        with pytest.raises(OSError) as refused:
            await trio.open_tcp_stream("127.0.0.1", server.port)
        assert describe_connection_error(refused.value) == "connection refused"
        await server.restart()
        assert server.pid not in (None, first_pid)
        assert await ask(server.port, b"two\n") == b"echo: two\n"
        assert "listening on" in server.output()
    assert server.pid is None and server.returncode == -signal.SIGTERM  # stopped gracefully


async def test_a_paused_server_accepts_but_answers_only_once_resumed(echo: list[str]) -> None:
    async with ServerProcess(echo) as server:
        server.pause()
        assert server.paused and server.running
        with trio.fail_after(DEADLINE):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)  # the kernel accepts
        async with stream:
            await stream.send_all(b"hello\n")
            with trio.move_on_after(0.3) as silent:
                await stream.receive_some(1024)
            assert silent.cancelled_caught  # accepted, and nothing answered
            server.resume()
            with trio.fail_after(DEADLINE):
                assert await stream.receive_some(1024) == b"echo: hello\n"


async def test_a_paused_server_is_still_stopped_on_exit(echo: list[str]) -> None:
    async with ServerProcess(echo) as server:
        pid = server.pid
        server.pause()
    assert server.returncode == -signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # type: ignore[arg-type]


async def test_stop_kills_a_server_that_ignores_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import signal, socket, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "s = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n"
        "time.sleep(3600)\n"
    )
    server = ServerProcess([sys.executable, str(script), "{port}"])
    await server.start()
    await server.stop(timeout=0.2)
    assert server.returncode == -signal.SIGKILL


async def test_a_server_that_exits_first_says_why(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text(
        "import sys\nprint('reading config')\nprint('bad option --nope', file=sys.stderr)\n"
        "sys.exit(3)\n"
    )
    with pytest.raises(RuntimeError) as failed:
        await ServerProcess([sys.executable, str(script)]).start()
    message = str(failed.value)
    assert "exited with code 3 before it accepted connections on 127.0.0.1:" in message
    assert "  | reading config\n  | bad option --nope" in message


async def test_a_server_that_never_listens_is_killed_after_ready_timeout(tmp_path: Path) -> None:
    script = tmp_path / "mute.py"
    script.write_text("import time\ntime.sleep(3600)\n")
    server = ServerProcess([sys.executable, str(script)], ready_timeout=0.3)
    with pytest.raises(RuntimeError, match=r"did not accept connections .* within 0.3 s"):
        await server.start()
    assert server.returncode == -signal.SIGKILL and server.pid is None


async def test_a_missing_binary_is_named() -> None:
    with pytest.raises(RuntimeError, match=r"cannot start no-such-server-binary.*on PATH"):
        await ServerProcess(["no-such-server-binary", "{port}"]).start()


async def test_signals_reach_what_the_server_started(echo: list[str]) -> None:
    # A wrapper shell and the server it spawned: killing only the shell would
    # leave the server listening.
    wrapper = ["sh", "-c", " ".join(f"'{a}'" for a in echo) + " & wait"]
    async with ServerProcess(wrapper) as server:
        assert await ask(server.port, b"x\n") == b"echo: x\n"
        await server.kill()
        with pytest.raises(OSError) as refused:
            await trio.open_tcp_stream("127.0.0.1", server.port)
        assert describe_connection_error(refused.value) == "connection refused"


def test_pause_needs_a_running_server(echo: list[str]) -> None:
    with pytest.raises(RuntimeError, match=r"cannot pause .*: it is not running"):
        ServerProcess(echo).pause()
