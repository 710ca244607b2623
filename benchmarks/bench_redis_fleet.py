"""A fleet on one machine: 3 collectors x 5,000 SSE sources -> Redis -> 2 consumers (issue 27).

Run: ``.venv/bin/python benchmarks/bench_redis_fleet.py [--quick] [--layout buckets|source]``
(about 2 minutes; ``--quick``: 3 x 500 sources, about a minute). Prints a
table; asserts nothing. Run it on a quiet machine: every process shares the
two cores, and the figures are CPU shares.

What runs, each in a process of its own:

* **3 "hosts"**: a light SSE server per loopback address (127.0.0.2, .3, .4;
  this file with ``serve``), 5,000 streams each (``/s/N``). Source N sends
  event k at ``t0 + (N / 5000 + k) * period`` (one event per ``period``
  seconds per source, spread evenly: 3,000 events/s for 15,000 sources at
  5 s). Ids are k; a request with ``Last-Event-ID: j`` gets every event
  after j at once, then the live ones; the data holds the time the event
  was due (``{"n": k, "t": ...}``), so delivery latency is measured from
  the server's clock to the consumer's file.
* **Redis**: a ``redis-server`` of its own on a free port (no persistence).
* **3 collectors**: ``mux run collect-hN.toml --state DIR``, each the 5,000
  sources of one host, into a ``redis-stream`` sink: ``stream =
  "mux:{bucket}"`` with ``buckets = 16`` (``--layout buckets``, the default)
  or ``"mux:{source}"`` (``--layout source``: one stream per source), with
  ``min_interval = 0.05`` as in docs/deployment.md's recipe (``--min-interval``).
* **2 consumers**: ``mux run`` with one ``redis-stream`` source in the group
  ``archivers`` into a ``file`` sink with ``flush_interval = 0.2``.

The timeline: servers and Redis, then the consumers, then the collectors
(connect time: from their start until the servers hold every stream; each
source has events waiting from before, so every source reaches the
consumers at once); ``--settle`` seconds for that catch-up; a steady window
(CPU of each process from /proc, the whole machine from /proc/stat --
other users' work included, so the load average is printed);
then host 2's collector is killed with SIGKILL, its state file read, and
it is restarted with the same ``--state``; a second window; then the
servers stop sending, and the benchmark waits until the consumers' files
hold every event sent. Lost: events sent and never in a file. Repeats:
events in the files twice -- allowed only for the killed collector's
sources, after the last id its state file had saved.

Latency: the benchmark reads the consumers' files every 50 ms (so up to
50 ms is the reading's), for every event whose source was connected when
it was due (the killed host's outage and its catch-up are left out).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import trio

SELF = Path(__file__).resolve()
MUX = [sys.executable, "-m", "mux_core"]
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
CLK = os.sysconf("SC_CLK_TCK")


# -- the light SSE server (``serve``), one process per host --------------------------


async def serve(
    host: str, sources: int, period: float, t0: float, phases: int = 0, rounds: float = 0.0
) -> None:
    """Serve ``/s/0`` .. ``/s/{sources-1}``; print the port, then the open streams' count.

    A line ``until T`` on stdin stops the events due after T (the streams stay open).

    Made cheap on purpose (it is the benchmark's own overhead: a real fleet's
    servers are on other hosts): a connection's task sends the head and the
    catch-up after ``Last-Event-ID``, then only waits for the client to go;
    the live events of every stream are sent by one task that sleeps until the
    next is due (a heap of due times, at most every 2 ms) and writes them to the
    sockets directly. A socket that cannot take an event at once (its client
    stopped reading) is closed; the client resumes with ``Last-Event-ID``.
    """
    import heapq

    open_streams = 0
    until = math.inf
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"cache-control: no-cache\r\nconnection: close\r\n\r\n"
    )

    spread = phases or sources
    #: The live streams: n -> (fd, registration number, stream).
    live: dict[int, tuple[int, int, trio.SocketStream]] = {}
    #: (due time, n, k, registration number): stream n's next event k.
    due_heap: list[tuple[float, int, int, int]] = []
    registrations = 0
    #: live and due_heap are shared with the pump's thread.
    guard = threading.Lock()
    wake = threading.Event()
    dropped = 0

    def due(n: int, k: int) -> float:
        return t0 + ((n % spread) / spread + k) * period

    def event(k: int, at: float) -> bytes:
        return b'id: %d\nevent: metric\ndata: {"n":%d,"t":%.3f}\n\n' % (k, k, at)

    async def catch_up(stream: trio.SocketStream, n: int, after: int) -> int:
        """Send every event due by now (and by ``until``); the next k."""
        k = after + 1
        while True:
            now = time.time()
            parts = []
            while due(n, k) <= now and due(n, k) <= until:
                parts.append(event(k, due(n, k)))
                k += 1
            if not parts:
                return k
            await stream.send_all(b"".join(parts))

    def pump() -> None:
        """The live events, from a thread of their own: its waits are time.sleep,
        not a wake-up of trio's loop each (at 1,000 events a second with each
        event near its own due time, trio's wake-ups were most of this server's
        CPU: 7.3% of a core, against ~3% for the same sends in 20 ms clumps)."""
        nonlocal dropped
        while True:
            with guard:
                next_at = due_heap[0][0] if due_heap else math.inf
            if next_at > until:
                wake.wait(0.1)
                wake.clear()
                continue
            if rounds:
                # Fixed rounds (--server-round): each sends what fell due
                # meanwhile, so a host's events leave in clumps. The events'
                # times are their due times: the latency measured includes it.
                time.sleep(rounds)
            else:
                # Each event near its own due time (2 ms at the finest), at most
                # 20 ms ahead: a stream that comes meanwhile may be due sooner.
                time.sleep(min(max(next_at - time.time(), 0.002), 0.02))
            now = min(time.time(), until)
            with guard:
                while due_heap and due_heap[0][0] <= now:
                    at, n, k, number = heapq.heappop(due_heap)
                    entry = live.get(n)
                    if entry is None or entry[1] != number:
                        continue  # the stream went (or came back since)
                    data = event(k, at)
                    try:
                        sent = os.write(entry[0], data)
                    except OSError:  # gone, or full (a client that stopped reading)
                        sent = -1
                    if sent != len(data):
                        dropped += 1
                        del live[n]
                        entry[2].socket.shutdown(trio.socket.SHUT_RDWR)
                        continue
                    heapq.heappush(due_heap, (due(n, k + 1), n, k + 1, number))

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal open_streams, registrations
        request = b""
        try:
            while b"\r\n\r\n" not in request:
                chunk = await stream.receive_some(4096)
                if not chunk or len(request) > 16384:
                    return
                request += chunk
            lines = request.split(b"\r\n")
            n = int(lines[0].split(b" ")[1].rsplit(b"/", 1)[1])
            after = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"last-event-id" and value.strip().isdigit():
                    after = int(value.strip())
            await stream.send_all(head)
            open_streams += 1
            try:
                k = await catch_up(stream, n, after)
                registrations += 1
                number = registrations
                with guard:
                    live[n] = (stream.socket.fileno(), number, stream)
                    heapq.heappush(due_heap, (due(n, k), n, k, number))
                wake.set()
                try:
                    while await stream.receive_some(4096):  # until the client goes
                        pass
                finally:
                    with guard:
                        if live.get(n, (0, None))[1] == number:
                            del live[n]
            finally:
                open_streams -= 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError, IndexError):
            return

    async def report() -> None:
        last = -1
        while True:
            if open_streams != last:
                last = open_streams
                print(f"open {open_streams} {time.time():.3f}", flush=True)
            await trio.sleep(0.1)

    async def control() -> None:
        nonlocal until
        stdin = trio.lowlevel.FdStream(os.dup(0))
        buffer = b""
        async for chunk in stdin:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"until "):
                    until = float(line.split()[1])
                    wake.set()

    listeners = await trio.open_tcp_listeners(0, host=host, backlog=4096)
    print(f"port {listeners[0].socket.getsockname()[1]}", flush=True)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(report)
            nursery.start_soon(control)
            nursery.start_soon(partial(trio.to_thread.run_sync, pump, abandon_on_cancel=True))
            await trio.serve_listeners(handle, listeners)
    finally:
        if dropped:
            print(f"server {host}: {dropped} streams closed for not reading", file=sys.stderr)


# -- the benchmark ---------------------------------------------------------------------


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, every core."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return float(sum(fields) - idle), float(sum(fields))


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _collector_toml(
    host: int, port: int, sources: int, redis: str, layout: str, min_interval: float = 0.05
) -> str:
    parts = ["[retry]\nconnect_timeout = 60.0\n"]
    for n in range(sources):
        parts.append(
            f'[[sources]]\nname = "h{host}-s{n:04}"\ntransport = "sse"\n'
            f'url = "http://{HOSTS[host]}:{port}/s/{n}"\n'
        )
    stream = (
        'stream = "mux:{bucket}"\nbuckets = 16'
        if layout == "buckets"
        else 'stream = "mux:{source}"'
    )
    parts.append(
        f'[[sinks]]\ntype = "redis-stream"\nurl = "{redis}"\n{stream}\nmaxlen = 100000\n'
        f"min_interval = {min_interval}\n"
    )
    return "\n".join(parts)


def _consumer_toml(name: str, redis: str, out: Path, layout: str) -> str:
    streams = (
        'streams = ["mux:{bucket}"]\nbuckets = 16' if layout == "buckets" else 'streams = ["mux:*"]'
    )
    return (
        f'[[sources]]\nname = "relay-{name}"\ntransport = "redis-stream"\nurl = "{redis}"\n'
        f'{streams}\ngroup = "archivers"\nconsumer = "{name}"\n\n'
        f'[[sinks]]\ntype = "file"\npath = "{out}"\nflush_interval = 0.2\n'
    )


class Tail:
    """The consumers' files, read as they grow: what arrived when."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.offsets = [0] * len(paths)
        self.partial = [b""] * len(paths)
        self.seen: Counter[tuple[str, int]] = Counter()
        #: (due time, arrival time, source) of every event, first arrival only.
        self.arrivals: list[tuple[float, float, str]] = []
        #: Arrival time minus the collector's received_at, per event (first arrival).
        self.relayed: list[tuple[float, float]] = []
        #: The collector's received_at minus the due time, per event (first arrival).
        self.received: list[tuple[float, float]] = []
        self.first: float | None = None
        self.sources_seen: set[str] = set()

    def poll(self) -> None:
        now = time.time()
        for i, path in enumerate(self.paths):
            try:
                with open(path, "rb") as f:
                    f.seek(self.offsets[i])
                    data = f.read()
            except OSError:
                continue
            self.offsets[i] += len(data)
            data = self.partial[i] + data
            lines = data.split(b"\n")
            self.partial[i] = lines.pop()
            for line in lines:
                if not line.startswith(b'{"type":"event"'):
                    continue
                record = orjson.loads(line)
                key = (record["source"], int(record["id"]))
                self.seen[key] += 1
                if self.seen[key] == 1:
                    self.arrivals.append((record["data"]["t"], now, record["source"]))
                    self.relayed.append((record["data"]["t"], now - record["received_at"]))
                    self.received.append(
                        (record["data"]["t"], record["received_at"] - record["data"]["t"])
                    )
                    self.sources_seen.add(record["source"])
                    if self.first is None:
                        self.first = now

    async def run(self) -> None:
        while True:
            self.poll()
            await trio.sleep(0.05)


class Fleet:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.dir = workdir
        self.open: list[int] = [0] * len(HOSTS)
        self.all_open_at: list[float | None] = [None] * len(HOSTS)
        self.first_open_at: list[float | None] = [None] * len(HOSTS)
        self.ports: list[int] = []
        self.servers: list[trio.Process] = []
        self.collectors: list[trio.Process] = []
        self.consumers: list[trio.Process] = []
        self.redis: Any = None

    async def start_server(self, nursery: trio.Nursery, host: int, t0: float) -> None:
        process = await trio.lowlevel.open_process(
            [
                sys.executable, str(SELF), "serve", HOSTS[host],
                str(self.args.sources), str(self.args.period), f"{t0:.3f}", str(self.args.phases),
                str(self.args.server_round),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        self.servers.append(process)
        assert process.stdout is not None
        lines = _lines(process.stdout)
        first = await lines.__anext__()
        self.ports.append(int(first.split()[1]))

        async def follow() -> None:
            async for text in lines:
                _, count, at = text.split()
                self.open[host] = int(count)
                if int(count) and self.first_open_at[host] is None:
                    self.first_open_at[host] = float(at)
                if int(count) == self.args.sources:
                    self.all_open_at[host] = float(at)

        nursery.start_soon(follow)

    async def start_mux(self, config: Path, *args: str) -> trio.Process:
        stderr = os.open(config.with_suffix(".stderr"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            return await trio.lowlevel.open_process(
                [*MUX, "run", "-q", str(config), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={k: v for k, v in os.environ.items() if not k.startswith("MUX_")},
            )
        finally:
            os.close(stderr)

    def pids(self) -> dict[str, int]:
        pids = {"redis": self.redis.pid}
        pids.update({f"collector h{h}": p.pid for h, p in enumerate(self.collectors)})
        pids.update({f"consumer {c}": p.pid for c, p in zip("ab", self.consumers, strict=True)})
        pids.update({f"server h{h}": p.pid for h, p in enumerate(self.servers)})
        pids["benchmark (reads files)"] = os.getpid()
        return pids


async def _lines(stream: Any) -> Any:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.decode()


async def wait_until(condition: Any, timeout: float) -> bool:
    """Poll ``condition()`` (other processes' files and output) until true or ``timeout``."""
    with trio.move_on_after(timeout):
        while not condition():  # noqa: ASYNC110 (polls what other processes do)
            await trio.sleep(0.05)
        return True
    return False


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from mux_core.testing import ServerProcess

    workdir = Path(tempfile.mkdtemp(prefix="mux-fleet-"))
    fleet = Fleet(args, workdir)
    hosts = range(len(HOSTS))
    result: dict[str, Any] = {
        "sources": args.sources * len(HOSTS),
        "layout": args.layout + ("" if args.state else ", restarted without --state"),
    }
    start = time.time()
    t0 = start - args.period  # every source has one event waiting when it connects
    fleet.redis = ServerProcess(
        ["redis-server", "--port", "{port}", "--bind", "{host}", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)]
    )  # fmt: skip
    await fleet.redis.start()
    url = f"redis://127.0.0.1:{fleet.redis.port}/0"
    outs = [workdir / f"consumer-{c}.jsonl" for c in "ab"]
    tail = Tail(outs)
    try:
        async with trio.open_nursery() as nursery:
            for host in hosts:
                await fleet.start_server(nursery, host, t0)
            for c, out in zip("ab", outs, strict=True):
                config = workdir / f"consume-{c}.toml"
                config.write_text(_consumer_toml(c, url, out, args.layout))
                fleet.consumers.append(await fleet.start_mux(config))
            configs, states = [], []
            for host in hosts:
                config = workdir / f"collect-h{host}.toml"
                config.write_text(
                    _collector_toml(
                        host, fleet.ports[host], args.sources, url, args.layout, args.min_interval
                    )
                )
                configs.append(config)
                states.append(workdir / f"state-h{host}")
            nursery.start_soon(tail.run)
            launched = time.time()
            for host in hosts:
                fleet.collectors.append(
                    await fleet.start_mux(configs[host], "--state", str(states[host]))
                )
            everyone = [f"h{h}-s{n:04}" for h in hosts for n in range(args.sources)]
            ok = await wait_until(lambda: all(fleet.all_open_at), 120)
            connected = max(t for t in fleet.all_open_at if t is not None) if ok else time.time()
            result["connect_s"] = connected - launched if ok else float("nan")
            first_open = min(t for t in fleet.first_open_at if t is not None)
            result["first_open_s"] = first_open - launched
            await wait_until(lambda: len(tail.sources_seen) == len(everyone), 60)
            result["first_record_after_launch_s"] = (tail.first or time.time()) - launched
            result["all_sources_at_consumers_after_connected_s"] = time.time() - connected
            # Steady window: CPU per process and of the machine.
            # The start-up catch-up (each source's events since t0) settles first.
            await trio.sleep(args.settle)
            pids = fleet.pids()
            cpu0 = {name: _proc_cpu(pid) for name, pid in pids.items()}
            busy0, total0 = _machine_cpu()
            w0 = time.time()
            await trio.sleep(args.window)
            w1 = time.time()
            cpu1 = {name: _proc_cpu(pid) for name, pid in pids.items()}
            busy1, total1 = _machine_cpu()
            result["window"] = (w0, w1)
            result["cpu"] = {name: (cpu1[name] - cpu0[name]) / (w1 - w0) for name in pids}
            result["machine_cpu"] = (busy1 - busy0) / (total1 - total0)
            result["load"] = os.getloadavg()
            result["rss_mib"] = {
                f"collector h{h}": _rss_mib(p.pid) for h, p in enumerate(fleet.collectors)
            }
            result["rss_mib"].update(
                {
                    f"consumer {c}": _rss_mib(p.pid)
                    for c, p in zip("ab", fleet.consumers, strict=True)
                }
            )
            info = await trio.run_process(
                ["redis-cli", "-p", str(fleet.redis.port), "INFO", "memory"], capture_stdout=True
            )
            used = next(
                line
                for line in info.stdout.decode().splitlines()
                if line.startswith("used_memory:")
            )
            result["redis_used_mib"] = int(used.split(":")[1]) / 2**20
            # kill -9 host 1's collector, restart it with its state.
            killed = 1
            fleet.collectors[killed].send_signal(signal.SIGKILL)
            await fleet.collectors[killed].wait()
            kill_at = time.time()
            saved = json.loads((states[killed] / "mux-state.json").read_text())["sources"]
            await wait_until(lambda: fleet.open[killed] == 0, 10)
            fleet.all_open_at[killed] = None
            await trio.sleep(args.outage)
            restart_at = time.time()
            restart = ["--state", str(states[killed])] if args.state else []
            fleet.collectors[killed] = await fleet.start_mux(configs[killed], *restart)
            await wait_until(lambda: fleet.all_open_at[killed] is not None, 60)
            back = fleet.all_open_at[killed] or time.time()
            result["restart_reconnect_s"] = back - restart_at
            result["kill"] = (kill_at, back)
            # The second window, then the servers stop and everything sent must arrive.
            await trio.sleep(args.window2)
            until = time.time()
            for process in fleet.servers:
                assert process.stdin is not None
                await process.stdin.send_all(b"until %.3f\n" % until)
            spread = args.phases or args.sources
            expected = {
                (f"h{h}-s{n:04}", k)
                for h in hosts
                for n in range(args.sources)
                for k in range(1, int((until - t0) / args.period) + 2)
                if t0 + ((n % spread) / spread + k) * args.period <= until
            }
            await wait_until(lambda: expected <= set(tail.seen), 120)
            await trio.sleep(1.0)  # a repeat may arrive after its first copy
            tail.poll()
            for process in [*fleet.collectors, *fleet.consumers]:
                process.send_signal(signal.SIGTERM)
            for process in [*fleet.collectors, *fleet.consumers]:
                with trio.move_on_after(60):
                    await process.wait()
            for process in fleet.servers:
                process.kill()
            nursery.cancel_scope.cancel()
    finally:
        await fleet.redis.kill()
        for process in [*fleet.collectors, *fleet.consumers, *fleet.servers]:
            if process.returncode is None:
                process.kill()
    tail.poll()
    seen = tail.seen
    result["events_sent"] = len(expected)
    result["lost"] = len(expected - set(seen))
    repeats = {key: n for key, n in seen.items() if n > 1}
    result["repeated"] = sum(n - 1 for n in repeats.values())
    result["repeats_outside_last_save"] = sum(
        1
        for (name, k) in repeats
        if not name.startswith(f"h{killed}-") or k <= int(saved.get(name, {}).get("last_id") or 0)
    )
    w0, w1 = result["window"]
    kill_at, back = result["kill"]
    steady = [a - d for d, a, _ in tail.arrivals if w0 <= d <= w1]
    after = [a - d for d, a, source in tail.arrivals if d > back + 2.0 and d <= until]
    untouched = [
        a - d
        for d, a, source in tail.arrivals
        if d >= w0 and d <= until and not source.startswith(f"h{killed}-")
    ]
    result["latency"] = {
        "steady window": steady,
        "server -> collector (received_at), steady window": [
            late for due, late in tail.received if w0 <= due <= w1
        ],
        "collector -> consumer file, steady window": [
            late for due, late in tail.relayed if w0 <= due <= w1
        ],
        "collector -> consumer file, first 5 s after all connected": [
            late for due, late in tail.relayed if connected <= due <= connected + 5
        ],
        "after the restart": after,
        "the other hosts, whole run": untouched,
    }
    result["rate"] = len(steady) / (w1 - w0) if steady else 0.0
    result["workdir"] = str(workdir)
    return result


def report(result: dict[str, Any]) -> str:
    n = result["sources"]
    cpu = result["cpu"]
    ours = sum(v for k, v in cpu.items() if not k.startswith(("server", "benchmark")))
    rows = [
        ("collectors started -> a first stream open", f"{result['first_open_s']:.1f} s"),
        ("collectors started -> every stream open", f"{result['connect_s']:.1f} s"),
        (
            "first record at a consumer, after the collectors started",
            f"{result['first_record_after_launch_s']:.1f} s",
        ),
        (
            "every source at the consumers, after all connected",
            f"{result['all_sources_at_consumers_after_connected_s']:.1f} s",
        ),
        ("whole machine CPU (2 cores = 100%)", f"{result['machine_cpu'] * 100:.0f}%"),
        ("mux + Redis CPU (collectors, consumers, Redis; of 2 cores)", f"{ours * 50:.0f}%"),
    ]
    rows += [(f"CPU {name} (of one core)", f"{value * 100:.1f}%") for name, value in cpu.items()]
    rows += [(f"RSS {name}", f"{value:.0f} MiB") for name, value in result["rss_mib"].items()]
    rows.append(("Redis used_memory", f"{result['redis_used_mib']:.0f} MiB"))
    rows += [
        (
            f"delivery latency p50 / p99, {name} ({len(values):,} events)",
            f"{_percentile(values, 0.5):.2f} / {_percentile(values, 0.99):.2f} s",
        )
        for name, values in result["latency"].items()
    ]
    rows += [
        (
            "killed collector restarted -> its streams open again",
            f"{result['restart_reconnect_s']:.1f} s",
        ),
        ("events sent / lost", f"{result['events_sent']:,} / {result['lost']:,}"),
        ("repeated", f"{result['repeated']:,}"),
        (
            "repeats not after the killed collector's last saved id",
            f"{result['repeats_outside_last_save']:,}",
        ),
    ]
    collectors = [v for k, v in result["rss_mib"].items() if k.startswith("collector")]
    collector_cpu = statistics.mean(v for k, v in cpu.items() if k.startswith("collector"))
    thousands = result["sources"] / len(HOSTS) / 1000
    return "\n".join(
        [
            f"fleet: {n:,} SSE sources on {len(HOSTS)} hosts, layout {result['layout']}, "
            f"{result['rate']:,.0f} events/s in the steady window",
            "load average at the end of the window: "
            + " ".join(f"{x:.2f}" for x in result["load"]),
            "",
            "| measure | value |",
            "|---|---|",
            *[f"| {label} | {value} |" for label, value in rows],
            "",
            f"a collector of {thousands * 1000:,.0f} sources: RSS {statistics.mean(collectors):.0f}"
            f" MiB, CPU {collector_cpu * 100:.1f}% of a core "
            f"({collector_cpu * 100 / thousands:.1f}% per 1,000 sources)",
            f"(files in {result['workdir']})",
        ]
    )


def main(argv: list[str]) -> None:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if argv[:1] == ["serve"]:
        host, sources, period, t0, phases, rounds = argv[1:7]
        trio.run(serve, host, int(sources), float(period), float(t0), int(phases), float(rounds))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 x 500 sources, shorter windows")
    parser.add_argument("--layout", choices=("buckets", "source"), default="buckets")
    parser.add_argument(
        "--no-state",
        dest="state",
        action="store_false",
        help="restart the killed collector without --state (to see what that costs)",
    )
    parser.add_argument("--sources", type=int, default=5000, help="sources per host")
    parser.add_argument(
        "--period", type=float, default=5.0, help="seconds between a source's events"
    )
    parser.add_argument(
        "--phases",
        type=int,
        default=0,
        help="the sources of a host send at this many instants per period (1: all at once, "
        "as a broadcast would); 0 (the default): each at its own",
    )
    parser.add_argument(
        "--server-round",
        type=float,
        default=0.0,
        help="the light servers send in rounds this many seconds apart (each round what fell "
        "due: clumps); 0 (the default): each event near its own due time",
    )
    parser.add_argument(
        "--settle", type=float, default=20.0, help="seconds after every source was seen"
    )
    parser.add_argument("--window", type=float, default=30.0, help="the steady window, seconds")
    parser.add_argument(
        "--min-interval",
        type=float,
        default=0.05,
        help="the collectors' redis-stream min_interval (the fleet recipe's 0.05)",
    )
    parser.add_argument("--outage", type=float, default=2.0, help="seconds a collector is down")
    parser.add_argument("--window2", type=float, default=20.0, help="seconds after the restart")
    args = parser.parse_args(argv)
    if args.quick:
        args.sources, args.settle, args.window, args.window2 = 500, 5.0, 15.0, 10.0
    result = trio.run(bench, args)
    print(report(result))


if __name__ == "__main__":
    main(sys.argv[1:])
