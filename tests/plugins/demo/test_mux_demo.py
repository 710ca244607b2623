"""``mux demo`` as a user runs it: a real process, its demo server child, Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.helpers.e2e import MUX, file_states, read_jsonl_strict, wait_for_file

SOURCES = ("train-sse", "train-ws", "train-rest")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


async def _start_demo(
    nursery: trio.Nursery, cwd: Path, ports: list[int], *args: str, own_group: bool = False
) -> trio.Process:
    """``mux demo --view log`` on these SSE/WS/REST ports, in ``cwd``."""
    sse, ws, rest = ports
    command = [*MUX, "demo", "--view", "log", *args]
    command += ["--sse-port", str(sse), "--ws-port", str(ws), "--rest-port", str(rest)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}
    process: trio.Process = await nursery.start(
        partial(
            trio.run_process,
            command,
            cwd=cwd,
            env=env,
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=own_group,
        )
    )
    return process


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
async def test_ctrl_c_stops_the_sources_first_then_the_demo_server(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the whole foreground process group. The
    demo server must not be in it: stopping at the same instant as the
    monitor, it made sources record ``disconnected`` before ``stopped``."""
    ports = _free_ports(3)
    events = tmp_path / "runs" / "demo-events.jsonl"
    async with trio.open_nursery() as nursery:
        # In a group of its own, as a shell's foreground job.
        process = await _start_demo(nursery, tmp_path, ports, "--rate", "50", own_group=True)

        def every_source_has_events(records: list[dict[str, object]]) -> bool:
            return all(
                any(r["type"] == "event" and r["source"] == s for r in records) for s in SOURCES
            )

        await wait_for_file(events, every_source_has_events, process=process, timeout=30)
        (server,) = _children(process.pid)
        assert os.getsid(server) != os.getsid(process.pid)

        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
        with trio.fail_after(20):
            code = await process.wait()
    assert code == 0
    records = read_jsonl_strict(events)
    for source in SOURCES:
        states = file_states(records, source)
        last_connected = len(states) - 1 - states[::-1].index("connected")
        assert states[last_connected:] == ["connected", "stopped"], (source, states)
    assert all(_refused(port) for port in ports)  # the server went with the monitor
    with pytest.raises(ProcessLookupError):
        os.kill(server, 0)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="prctl and /proc (Linux)")
async def test_the_demo_server_does_not_outlive_a_killed_monitor(tmp_path: Path) -> None:
    ports = _free_ports(3)
    events = tmp_path / "runs" / "demo-events.jsonl"
    async with trio.open_nursery() as nursery:
        process = await _start_demo(nursery, tmp_path, ports)
        await wait_for_file(
            events, lambda rs: any(r["type"] == "event" for r in rs), process=process, timeout=30
        )
        (server,) = _children(process.pid)
        server_exited = os.pidfd_open(server)  # readable once the server has exited
        process.kill()  # SIGKILL: no finally, no cleanup in the monitor
        await process.wait()
    try:
        with trio.fail_after(10):
            await trio.lowlevel.wait_readable(server_exited)
    finally:
        os.close(server_exited)
    assert all(_refused(port) for port in ports)


async def test_a_busy_port_is_refused_with_exit_2_before_watching_anything(tmp_path: Path) -> None:
    """With 8888 (here: the SSE port) taken, ``mux demo`` used to watch
    whatever served there and exit 0; it must say so and stop."""
    ports = _free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[0]))
        squatter.listen()
        command = [*MUX, "demo", "--view", "log", "--for", "30"]
        command += ["--sse-port", str(ports[0]), "--ws-port", str(ports[1])]
        command += ["--rest-port", str(ports[2])]
        with trio.fail_after(20):
            result = await trio.run_process(
                command,
                cwd=tmp_path,
                env=env,
                check=False,
                capture_stdout=True,
                capture_stderr=True,
            )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert f"port {ports[0]} is in use" in lines[0] and "--sse-port" in lines[0]
    assert not (tmp_path / "runs" / "demo-events.jsonl").exists()
    assert all(_refused(port) for port in ports[1:])
