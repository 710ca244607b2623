"""End to end, as a user runs it: real ``mux run`` processes against real fake servers.

The fake servers run in this test's trio loop; each monitor is a separate
``python -m mux_core._cli run`` process writing a JSON Lines file, which is
what the assertions read (plus exit codes and what the servers saw).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from mux_core.testing import Reject, Respond, serve_sse, serve_ws
from tests.helpers.e2e import (
    FAST_RETRY,
    TRANSPORTS,
    JsonRecord,
    Server,
    closed_port,
    file_ids,
    file_sink_toml,
    file_states,
    ids,
    publish_range,
    read_jsonl_strict,
    serve,
    source_toml,
    start_mux,
    stderr_of,
    terminate,
    wait_exit,
    wait_for_file,
    write_config,
)

URLS = {
    "sse": "http://127.0.0.1:{port}/events",
    "ws": "ws://127.0.0.1:{port}/ws",
    "rest": "http://127.0.0.1:{port}/metrics",
}


async def test_max_attempts_3_against_a_closed_port_gives_up_with_exit_3(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    with closed_port() as port:
        toml = (
            FAST_RETRY
            + "max_attempts = 3\n"
            + "".join(source_toml(t, t, URLS[t].format(port=port)) for t in TRANSPORTS)
            + file_sink_toml(out)
        )
        config = write_config(tmp_path / "m.toml", toml)
        async with trio.open_nursery() as nursery:
            process = await start_mux(nursery, config)
            assert await wait_exit(process, config) == 3, stderr_of(config)
    records = read_jsonl_strict(out)
    for source in TRANSPORTS:
        assert file_states(records, source) == [
            "connecting",
            "server_unavailable",
            "connecting",
            "server_unavailable",
            "connecting",
            "max_retries_exceeded",
        ], source
        last = [r for r in records if r["source"] == source][-1]
        assert last["attempt"] == 3
        assert "3 attempts in a row failed" in last["detail"]
    assert not [r for r in records if r["type"] == "event"]


async def test_sse_204_ends_the_run_cleanly_without_a_retry(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    async with serve_sse() as server:
        server.script(Respond(204))
        toml = FAST_RETRY + source_toml("s", "sse", server.url) + file_sink_toml(out)
        config = write_config(tmp_path / "m.toml", toml)
        async with trio.open_nursery() as nursery:
            process = await start_mux(nursery, config)
            assert await wait_exit(process, config) == 0, stderr_of(config)
        assert len(server.requests) == 1
    assert file_states(read_jsonl_strict(out), "s") == ["connecting", "ended"]


async def test_sse_404_and_ws_rejected_404_fail_without_a_retry_exit_3(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    async with serve_sse() as sse, serve_ws() as ws:
        sse.script(Respond(404))
        ws.script(Reject(404))
        toml = (
            FAST_RETRY
            + source_toml("sse", "sse", sse.url)
            + source_toml("ws", "ws", ws.url)
            + file_sink_toml(out)
        )
        config = write_config(tmp_path / "m.toml", toml)
        async with trio.open_nursery() as nursery:
            process = await start_mux(nursery, config)
            assert await wait_exit(process, config) == 3, stderr_of(config)
        assert len(sse.requests) == 1
        assert len(ws.requests) == 1
    records = read_jsonl_strict(out)
    for source in ("sse", "ws"):
        assert file_states(records, source) == ["connecting", "failed"], source
        assert "404" in [r for r in records if r["source"] == source][-1]["detail"]


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_five_monitors_on_one_server_each_receive_every_event(
    transport: str, tmp_path: Path
) -> None:
    count, n_events = 5, 200
    outs = [tmp_path / f"events-{i}.jsonl" for i in range(count)]
    async with serve(transport) as server, trio.open_nursery() as nursery:
        processes = []
        for i, out in enumerate(outs):
            toml = FAST_RETRY + source_toml("s", transport, server.url) + file_sink_toml(out)
            config = write_config(tmp_path / f"m{i}.toml", toml)
            processes.append((await start_mux(nursery, config), config))
        with trio.fail_after(20):
            await server.wait_for_connections(count)
        await publish_range(server, 1, n_events)
        for (process, _), out in zip(processes, outs, strict=True):
            await wait_for_file(
                out, lambda r: len(file_ids(r, "s")) >= n_events, process=process, timeout=20
            )
        for process, config in processes:
            assert await terminate(process, config) == 0, stderr_of(config)
    for out in outs:
        records = read_jsonl_strict(out)
        assert file_ids(records, "s") == ids(1, n_events), out
        assert file_states(records, "s") == ["connecting", "connected", "stopped"], out


async def test_sigterm_mid_stream_keeps_a_gap_free_prefix_and_ends_with_stopped(
    tmp_path: Path,
) -> None:
    """SIGTERM while three servers keep publishing: exit 0, nothing received is lost.

    What the process had received when the signal came cannot be observed
    from outside, but its file must hold a gap-free, duplicate-free prefix
    1..k of every stream, with k at least what was already in the file when
    the signal was sent, whole lines only, and ``stopped`` as the last record
    of every source.
    """
    out = tmp_path / "events.jsonl"
    async with serve("sse") as sse, serve("ws") as ws, serve("rest") as rest:
        servers: dict[str, Server] = {"sse": sse, "ws": ws, "rest": rest}
        toml = (
            FAST_RETRY
            + "".join(source_toml(t, t, s.url) for t, s in servers.items())
            + file_sink_toml(out)
        )
        config = write_config(tmp_path / "m.toml", toml)
        async with trio.open_nursery() as nursery:
            process = await start_mux(nursery, config)
            for server in servers.values():
                await publish_range(server, 1, 500)
            # Every source is streaming (REST has polled past its first page)...
            await wait_for_file(
                out,
                lambda r: all(len(file_ids(r, t)) >= 500 for t in servers),
                process=process,
                timeout=20,
            )

            async def keep_publishing(server: Server) -> None:
                n = 500
                while process.returncode is None:
                    await publish_range(server, n + 1, n + 20)
                    n += 20
                    await trio.sleep(0.005)  # pacing, not waiting for anything

            for server in servers.values():
                nursery.start_soon(keep_publishing, server)
            # ... and the signal lands while the servers keep publishing.
            before = await wait_for_file(
                out,
                lambda r: all(len(file_ids(r, t)) >= 700 for t in servers),
                process=process,
                timeout=20,
            )
            assert await terminate(process, config) == 0, stderr_of(config)
            nursery.cancel_scope.cancel()
    records = read_jsonl_strict(out)  # whole lines only
    for source, server in servers.items():
        got = file_ids(records, source)
        seen_before = len(file_ids(before, source))
        assert got == ids(1, len(got)), f"{source}: not a gap-free prefix"
        assert seen_before <= len(got) <= len(server.history), source
        mine: list[JsonRecord] = [r for r in records if r["source"] == source]
        assert mine[-1]["type"] == "status" and mine[-1]["state"] == "stopped", source
        assert file_states(records, source).count("stopped") == 1
    # The last records: each source's stopped (after its last quality record).
    last = [r for r in records if r["type"] != "quality"][-3:]
    assert {r["source"] for r in last} == set(servers)
    assert all(r["state"] == "stopped" for r in last)
    assert [r["type"] for r in records[-6:]].count("quality") == 3


# -- the monitor never listens -------------------------------------------------

_TCP_LISTEN = "0A"
_TCP_ESTABLISHED = "01"
_UNIX_ACCEPTCON = 0x10000


def _socket_inodes(pid: int) -> set[str]:
    """The inodes of every socket ``pid`` has open (from /proc/PID/fd)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _tcp_rows(pid: int) -> list[tuple[str, int, int, str]]:
    """(state, local port, remote port, inode) of every TCP socket in pid's namespace."""
    rows = []
    for name in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            rows.append(
                (state, int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), inode)
            )
    return rows


def _port(address: str) -> int:
    """The port of a /proc/net/tcp address ("0100007F:1F90")."""
    return int(address.rsplit(":", 1)[1], 16)


def _listening_sockets(pid: int) -> set[str]:
    """Descriptions of the sockets owned by ``pid`` that accept connections (TCP or Unix)."""
    mine = _socket_inodes(pid)
    found = {
        f"tcp port {port}"
        for state, port, _, inode in _tcp_rows(pid)
        if state == _TCP_LISTEN and inode in mine
    }
    for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        flags, inode = int(fields[3], 16), fields[6]
        if flags & _UNIX_ACCEPTCON and inode in mine:
            found.add(f"unix socket {fields[7] if len(fields) > 7 else inode}")
    return found


async def test_the_monitor_never_listens(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    async with serve("sse") as sse, serve("ws") as ws, serve("rest") as rest:
        servers: dict[str, Server] = {"sse": sse, "ws": ws, "rest": rest}
        toml = (
            FAST_RETRY
            + "".join(source_toml(t, t, s.url) for t, s in servers.items())
            + file_sink_toml(out)
        )
        config = write_config(tmp_path / "m.toml", toml)
        async with trio.open_nursery() as nursery:
            process = await start_mux(nursery, config)
            for server in servers.values():
                await server.publish({"n": 1})
            await wait_for_file(
                out,
                lambda r: all(file_ids(r, t) == ["1"] for t in servers),
                process=process,
            )
            pid = process.pid
            # The check sees the monitor's sockets: one established connection per server.
            mine = _socket_inodes(pid)
            remote_ports = {
                remote
                for state, _, remote, inode in _tcp_rows(pid)
                if state == _TCP_ESTABLISHED and inode in mine
            }
            assert {s.port for s in servers.values()} <= remote_ports
            assert _listening_sockets(pid) == set()
            # ... and the check can fail: this process serves, so it listens.
            assert {f"tcp port {s.port}" for s in servers.values()} <= _listening_sockets(
                os.getpid()
            )
            assert await terminate(process, config) == 0, stderr_of(config)
