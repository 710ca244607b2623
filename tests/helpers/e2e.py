"""Shared plumbing of the end-to-end tests: real fake servers, real monitors.

The test process runs the fake servers in trio; the monitor runs either
in-process (:func:`running_engine`, a real :class:`Engine` with the built-in
transports and a collecting sink) or as a real ``mux run`` subprocess
(:func:`start_mux`) writing a JSON Lines file that :func:`read_jsonl` reads.
Waits are on conditions with deadlines; a file written by another process
can only be polled, which :func:`wait_for_file` does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

import orjson
import trio
import trio.lowlevel

from mux_core._config import parse_config
from mux_core._plugins import PluginManager
from mux_core._run.engine import Engine
from mux_core.records import Event, State, Status
from mux_core.testing import (
    CollectingSink,
    Collectors,
    FakeRestServer,
    FakeSseServer,
    FakeWsServer,
    serve_rest,
    serve_sse,
    serve_ws,
)

Server: TypeAlias = FakeSseServer | FakeWsServer | FakeRestServer
JsonRecord: TypeAlias = dict[str, Any]

TRANSPORTS = ("sse", "ws", "rest")
MUX = [sys.executable, "-m", "mux_core"]

#: Fast, deterministic retries: outages in these tests last milliseconds.
FAST_RETRY = """\
[retry]
initial_delay = 0.05
max_delay = 0.2
jitter = 0.0
connect_timeout = 2.0
"""

#: The keys each transport needs to talk to its fake server (as in demo_monitor.py).
_TRANSPORT_KEYS = {
    "sse": "",
    "ws": 'id_field = "id"\nevent_field = "event"\nresume_param = "last_id"\n',
    "rest": 'interval = 0.05\nitems = "items"\nevent_field = "event"\ncursor_param = "after"\n',
}


@asynccontextmanager
async def serve(transport: str) -> AsyncIterator[Server]:
    """The fake server for ``transport`` on 127.0.0.1, a free port."""
    if transport == "sse":
        async with serve_sse() as sse:
            yield sse
    elif transport == "ws":
        async with serve_ws() as ws:
            yield ws
    elif transport == "rest":
        async with serve_rest() as rest:
            yield rest
    else:
        raise ValueError(transport)


async def publish_range(server: Server, first: int, last: int) -> None:
    """Publish ``{"n": i}`` for i in first..last; every fake server numbers ids 1, 2, 3..."""
    for n in range(first, last + 1):
        await server.publish({"n": n})


def source_toml(name: str, transport: str, url: str, extra: str = "") -> str:
    """One ``[[sources]]`` table for ``transport`` pointed at ``url``."""
    return (
        f'\n[[sources]]\nname = "{name}"\ntransport = "{transport}"\nurl = "{url}"\n'
        + _TRANSPORT_KEYS[transport]
        + textwrap.dedent(extra)
    )


def file_sink_toml(path: Path) -> str:
    """A file sink that reaches the OS every 50 ms, so a test can read it while running."""
    return f'\n[[sinks]]\ntype = "file"\npath = "{path}"\nflush_interval = 0.05\nfsync = false\n'


@contextmanager
def closed_port() -> Iterator[int]:
    """A port bound on 127.0.0.1 that nobody listens on: connects are refused.

    Holding the bound socket for the block keeps any other program off the port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# -- in-process monitor ------------------------------------------------------


def builtin_plugins(collectors: Collectors) -> PluginManager:
    """The installed plugins (entry points) plus the test kit's collecting sink."""
    plugins = PluginManager()
    plugins.load_entry_points()
    plugins.register(collectors, name="collectors")
    return plugins


@asynccontextmanager
async def running_engine(toml: str) -> AsyncIterator[tuple[Engine, CollectingSink]]:
    """Run an engine on ``toml`` plus a ``collect`` sink; stop it cleanly on exit."""
    collectors = Collectors()
    plugins = builtin_plugins(collectors)
    text = toml + '\n[[sinks]]\ntype = "collect"\nname = "collect"\n'
    config = parse_config(text, path="e2e.toml", plugins=plugins)
    engine = Engine(config, plugins)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.run)
        yield engine, await collectors.sink("collect", timeout=5)
        engine.request_stop("test over")


def states(sink: CollectingSink, source: str) -> list[State]:
    """The states ``source`` reported, in order (notices included)."""
    return [s.state for s in sink.statuses if s.source == source]


def event_ids(sink: CollectingSink, source: str) -> list[str | None]:
    return [e.id for e in sink.events if e.source == source]


def records_of(sink: CollectingSink, source: str) -> list[Event | Status]:
    """The events and statuses of ``source``, in order (not its Quality records)."""
    return [r for r in sink.records if isinstance(r, Event | Status) and r.source == source]


async def wait_for_state(
    sink: CollectingSink, source: str, state: State, *, after: int = 0, timeout: float = 10.0
) -> int:
    """Wait until ``source`` reports ``state`` at a status index >= ``after``; return the index."""
    found: list[int] = []

    def seen(s: CollectingSink) -> bool:
        history = states(s, source)
        found[:] = [i for i in range(after, len(history)) if history[i] is state]
        return bool(found)

    await sink.wait_for(seen, timeout=timeout)
    return found[0]


# -- mux run subprocesses ----------------------------------------------------


def write_config(path: Path, toml: str) -> Path:
    path.write_text(toml)
    return path


def _open_stderr(config: Path) -> BinaryIO:
    return open(config.with_suffix(".stderr"), "wb")


async def start_mux(
    nursery: trio.Nursery,
    config: Path,
    *args: str,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], Any] | None = None,
) -> trio.Process:
    """Start ``python -m mux_core run CONFIG``; stderr goes to CONFIG.stderr.

    The process gets this one's environment without its ``MUX_*`` variables,
    plus ``env``; ``preexec_fn`` runs in the child before mux (a limit to set).
    """
    stderr = _open_stderr(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUX_")} | (env or {})
    try:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [*MUX, "run", "-q", str(config), *args],
                check=False,
                stdin=None,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
                preexec_fn=preexec_fn,
            )
        )
    finally:
        stderr.close()
    return process


def stderr_of(config: Path) -> str:
    return config.with_suffix(".stderr").read_text(errors="replace")


async def wait_exit(process: trio.Process, config: Path, *, timeout: float = 15.0) -> int:
    """The exit code of ``process``, failing (and killing it) after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        return await process.wait()
    process.kill()
    await process.wait()
    raise AssertionError(f"mux run did not exit within {timeout} s; stderr:\n{stderr_of(config)}")


async def terminate(process: trio.Process, config: Path) -> int:
    """SIGTERM, then the exit code."""
    process.send_signal(signal.SIGTERM)
    return await wait_exit(process, config)


def _loads(line: bytes) -> JsonRecord:
    """One line: orjson, or the standard library for the NaN / Infinity literals
    a file holds for non-finite numbers (orjson rejects them)."""
    try:
        record: JsonRecord = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = json.loads(line)
    return record


def read_jsonl(path: Path) -> list[JsonRecord]:
    """Every record of a file sink's output; every line must be whole JSON."""
    if not path.exists():
        return []
    data = path.read_bytes()
    return [_loads(line) for line in data.splitlines(keepends=True) if line.endswith(b"\n")]


def read_jsonl_strict(path: Path) -> list[JsonRecord]:
    """Like :func:`read_jsonl` for a finished run: no half-written last line allowed."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path} ends with a half-written line: {data[-80:]!r}"
    return [_loads(line) for line in data.splitlines()]


def file_ids(records: list[JsonRecord], source: str) -> list[str]:
    return [r["id"] for r in records if r["type"] == "event" and r["source"] == source]


def file_states(records: list[JsonRecord], source: str) -> list[str]:
    return [r["state"] for r in records if r["type"] == "status" and r["source"] == source]


async def wait_for_file(
    path: Path,
    predicate: Callable[[list[JsonRecord]], bool],
    *,
    process: trio.Process | None = None,
    timeout: float = 15.0,
) -> list[JsonRecord]:
    """Poll the file another process writes until ``predicate(records)`` holds."""
    with trio.move_on_after(timeout):
        while True:
            records = read_jsonl(path)
            if predicate(records):
                return records
            if process is not None and process.returncode is not None:
                break
            await trio.sleep(0.02)
    raise AssertionError(
        f"condition not met on {path} within {timeout} s"
        + ("" if process is None else f" (process exit code {process.returncode})")
        + f"; last records: {read_jsonl(path)[-5:]}"
    )


def ids(first: int, last: int) -> list[str]:
    return [str(n) for n in range(first, last + 1)]
