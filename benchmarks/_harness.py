"""What every end-to-end benchmark shares: server processes, null sinks, the
real engine, and the results table.

mux is measured the way a user runs it: a TOML config parsed by
:func:`mux_core._config.parse_config`, the real :class:`~mux_core._run.engine.Engine`,
the real transport plugins, and a sink registered through
``mux_register_sinks`` -- a *null* sink that only counts (or timestamps)
what reaches it, so the numbers are mux's cost and not a sink's.
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import attrs
import trio

from mux_core._config import parse_config
from mux_core._plugins import PluginManager
from mux_core._run.engine import Engine, RunResult
from mux_core.hookspecs import hookimpl
from mux_core.records import (
    Batch,
    Event,
    State,
    Status,
)
from mux_core.sink import SinkContext

HERE = Path(__file__).resolve().parent


# -- server processes ----------------------------------------------------


def free_port() -> int:
    """A free TCP port of 127.0.0.1, for a server another process binds by number.

    Not the port ``bind(0)`` picks: that one is in the kernel's ephemeral range
    (``ip_local_port_range``), from which every outgoing connection on the
    machine takes its local port, so while something makes many connections
    (a 100,000-source scale run on this shared machine) a port found free is
    often taken before the server starts and binds it -- the server then
    exits "port in use", and whatever waits for it waits forever. A port below
    that range is only taken by a program that binds it by number.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    first = 10_000 if low > 11_000 else 1024
    for _ in range(200):
        port = random.randrange(first, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port found in {first}..{low - 1}")


@contextmanager
def server_process(kind: str, *args: str) -> Iterator[int]:
    """Start ``_servers.py KIND [ARGS]`` in its own process; yield its port; kill it after."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_servers.py"), kind, *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"{kind} server did not start: {line!r}")
        yield int(line.split()[1])
    finally:
        proc.kill()
        proc.wait()


# -- null sinks ----------------------------------------------------------


@attrs.frozen(kw_only=True)
class CountOptions:
    #: Ask the run to stop once this many events have arrived (0 = never).
    stop_after: int = 0


class CountSink:
    """Counts events; asks the run to stop at ``stop_after``. Nothing else."""

    Options = CountOptions
    last: ClassVar[CountSink | None] = None

    def __init__(self, options: CountOptions, context: SinkContext) -> None:
        self.stop_after = options.stop_after
        self.context = context
        self.events = 0  # records, really: a Status or two among millions
        #: (perf_counter, process_time) when stop_after was reached.
        self.done: tuple[float, float] | None = None
        CountSink.last = self

    async def write(self, batch: Batch) -> None:
        self.events += len(batch)
        if self.done is None and self.stop_after and self.events >= self.stop_after:
            self.done = (time.perf_counter(), time.process_time())
            self.context.request_stop("benchmark target reached")


@attrs.frozen(kw_only=True)
class LatencyOptions:
    #: Ask the run to stop once this many events have arrived.
    stop_after: int = 1000


class LatencySink:
    """Notes ``perf_counter_ns() - data["t"]`` of each event as it arrives."""

    Options = LatencyOptions
    last: ClassVar[LatencySink | None] = None

    def __init__(self, options: LatencyOptions, context: SinkContext) -> None:
        self.stop_after = options.stop_after
        self.context = context
        self.latencies_ns: list[int] = []
        LatencySink.last = self

    async def write(self, batch: Batch) -> None:
        now = time.perf_counter_ns()
        for record in batch:
            if type(record) is Event:
                self.latencies_ns.append(now - record.data["t"])
        if len(self.latencies_ns) >= self.stop_after:
            self.context.request_stop("benchmark target reached")


@attrs.frozen(kw_only=True)
class ConnectOptions:
    #: Sources that must report ``connected``.
    expect: int = 1


class ConnectSink:
    """Notes when every source has reported ``connected`` (and any that did not)."""

    Options = ConnectOptions
    last: ClassVar[ConnectSink | None] = None
    #: Set when an instance is created; replace it before each run.
    created: ClassVar[trio.Event] = trio.Event()

    def __init__(self, options: ConnectOptions, context: SinkContext) -> None:
        self.expect = options.expect
        self.connected: set[str] = set()
        self.problems: dict[str, str] = {}
        self.all_connected = trio.Event()
        self.all_connected_at: float | None = None
        ConnectSink.last = self
        ConnectSink.created.set()

    async def write(self, batch: Batch) -> None:
        for record in batch:
            if type(record) is Status:
                if record.state is State.CONNECTED:
                    self.connected.add(record.source)
                elif record.state not in (State.CONNECTING, State.STOPPED):
                    self.problems[record.source] = f"{record.state.value}: {record.detail}"
        if len(self.connected) >= self.expect and self.all_connected_at is None:
            self.all_connected_at = time.perf_counter()
            self.all_connected.set()


class BenchPlugin:
    """Registers the null sinks like any plugin would."""

    @hookimpl
    def mux_register_sinks(self, register: Any) -> None:
        register("bench-count", CountSink)
        register("bench-latency", LatencySink)
        register("bench-connect", ConnectSink)


def plugins() -> PluginManager:
    """The built-in transports (not the UI sinks) plus the benchmark sinks."""
    import mux_rest
    import mux_sse
    import mux_ws

    manager = PluginManager()
    manager.register(mux_sse, name="mux_sse")
    manager.register(mux_ws, name="mux_ws")
    manager.register(mux_rest, name="mux_rest")
    manager.register(BenchPlugin(), name="bench")
    return manager


def engine(toml: str, manager: PluginManager | None = None) -> Engine:
    """A real engine for ``toml``, parsed as a config file would be."""
    manager = manager or plugins()
    config = parse_config(toml, path="bench.toml", plugins=manager)
    return Engine(config, manager)


async def run_engine(eng: Engine) -> RunResult:
    return await eng.run()


def count_through_mux(source_toml: str, events: int) -> Sample:
    """Run one ``[[sources]]`` table into a counting null sink until it has
    seen ``events`` events; the time and CPU it took."""
    eng = engine(f'{source_toml}\n[[sinks]]\ntype = "bench-count"\nstop_after = {events}\n')
    clock = Clock()
    trio.run(run_engine, eng)
    sink = CountSink.last
    assert sink is not None and sink.done is not None, "the run stopped early"
    return clock.sample(sink.events, sink.done)


# -- measuring -----------------------------------------------------------


@attrs.frozen
class Sample:
    """``events`` received in ``wall`` seconds, using ``cpu`` seconds of this process."""

    events: int
    wall: float
    cpu: float


class Clock:
    """Wall and CPU time since creation. CPU time is this process's only, so it
    shows what mux costs even when other programs load the machine."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def sample(self, events: int, at: tuple[float, float] | None = None) -> Sample:
        wall, cpu = at if at is not None else (time.perf_counter(), time.process_time())
        return Sample(events, wall - self.wall, cpu - self.cpu)


#: A way to read ``amount`` events from the server on ``port``, timed.
Reader = Callable[[int, int], Sample]


def in_trio(reader: Callable[[int, int], Awaitable[Sample]]) -> Reader:
    """A bare async reader as a :data:`Reader` (each call is its own trio.run)."""
    return lambda port, amount: trio.run(reader, port, amount)


def alternate(
    kind: str, readers: Sequence[tuple[Reader, int, int]], repeats: int
) -> list[list[Sample]]:
    """Samples of each ``(reader, warm_up, amount)`` against one server process.

    Every reader runs once for ``warm_up`` events (imports, caches; not
    measured), then the readers take turns ``repeats`` times, so a burst of
    load elsewhere on the machine hits each of them alike.
    """
    samples: list[list[Sample]] = [[] for _ in readers]
    with server_process(kind) as port:
        for reader, warm_up, _ in readers:
            reader(port, warm_up)
        for _ in range(repeats):
            for (reader, _, amount), taken in zip(readers, samples, strict=True):
                taken.append(reader(port, amount))
    return samples


def median_rate(samples: list[Sample], *, cpu: bool = False) -> float:
    """The median of events per wall second (or per CPU second)."""
    return statistics.median(s.events / (s.cpu if cpu else s.wall) for s in samples)


def rss_kib() -> int:
    """This process's resident set size (VmRSS) in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


# -- the table -----------------------------------------------------------


@attrs.frozen
class Row:
    """One line of the results table."""

    benchmark: str
    mux: str
    bare: str
    ratio: str
    target: str
    met: bool | None  # None: informational, no target

    @property
    def verdict(self) -> str:
        return "-" if self.met is None else ("yes" if self.met else "NO")


HEADERS = ("benchmark", "mux", "bare", "ratio", "target", "met?")


def table(rows: list[Row], *, markdown: bool = False) -> str:
    cells = [HEADERS] + [(r.benchmark, r.mux, r.bare, r.ratio, r.target, r.verdict) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADERS))]
    lines = []
    for index, row in enumerate(cells):
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append(("| " + " | ".join(padded) + " |") if markdown else " | ".join(padded))
        if index == 0:
            rule = ["-" * w for w in widths]
            lines.append(("|-" + "-|-".join(rule) + "-|") if markdown else "-+-".join(rule))
    return "\n".join(lines)


def rate(value: float) -> str:
    return f"{value:,.0f} ev/s"


def versus(
    label: str, mux: float, bare: float, target: str = "(context)", met: bool | None = None
) -> Row:
    """A row comparing two event rates: mux's and a bare loop's."""
    return Row(label, rate(mux), rate(bare), f"{mux / bare:.2f}", target, met)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores, {cpu}, Python {sys.version.split()[0]}, trio {trio.__version__}"
    )


def quick_flag(argv: list[str] | None = None) -> bool:
    return "--quick" in (sys.argv[1:] if argv is None else argv)
