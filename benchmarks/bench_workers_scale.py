"""Scale with ``mux run --workers``: N idle SSE sources on one machine (issue 26).

Run: ``.venv/bin/python benchmarks/bench_workers_scale.py [--quick] [--sources N]
[--workers auto,1] [--live 5] [--servers S] [--addresses A] [--keepalive 30]
[--idle 30] [--deadline 240] [--keep DIR]``. Prints a table; asserts nothing.
``--keep DIR`` keeps the config, the file sink's output and mux's stderr.
Where the open-files limit cannot be raised past ~N / W per worker, use more
workers than cores (``--workers 8``): idle sources need sockets, not CPU.

``mux run CONFIG --workers W -q`` runs as a subprocess, as a user runs it,
over N idle sources (default 100,000; ``--quick``: 10,000) plus ``--live``
sources that send an event every second, all ``sse``, into one ``file`` sink
at its defaults (statuses and quality records included). Measured from the
outside:

* **time to all connected**: from the start of the process until the file
  holds a ``connected`` status for every source (the parent's sink saw it);
* **RSS**: VmRSS of the mux process and of each of its children (the
  workers), summed and divided by N -- everything, the interpreters and the
  config included; sampled once all are connected and ``--settle`` s later,
  at the end of the idle window (the larger is reported); and **PSS** at
  the end (``/proc/PID/smaps_rollup``: a page shared by k processes counts
  1/k in each -- workers forked from the parent share its pages until they
  write them, which summed RSS counts in every process);
* **idle CPU**: utime + stime of mux and its workers over ``--idle`` s once
  all are connected, as % of one core;
* **the parent's sinks stay live**: each event of the live sources carries
  the server's wall clock when sent; the bench reads the file every 0.1 s and
  notes how long after its sending each event appeared there (the file sink
  flushes every second: its default ``flush_interval``);
* how long SIGINT takes to end the run.

The servers (this file with ``--serve``, ``--servers`` processes; by default
enough that each holds its connections within the fd limit) are raw
``epoll`` loops over non-blocking sockets (~1 KiB a connection): each answers
``GET /idle`` with the SSE head and one comment, then a comment every
``--keepalive`` s (spread over the interval; mux's ``read_timeout`` is 45 s);
``GET /live`` gets an event every second. Each process listens on
``--addresses`` loopback addresses (127.0.0.2, 127.0.0.3, ...; by default
enough for <= 2,500 connections each: a listening socket's accept queue is at
most ``net.core.somaxconn``, 4096 here, and a burst of connects past it is
SYNs dropped and retried by the client 1, 3, 7 ... s later). A client
connection needs a distinct (source ip, source port, destination ip,
destination port), and Linux has ``ip_local_port_range`` (32768-60999 by
default: 28,232) ephemeral ports *per destination* -- the sources are spread
round-robin over the destinations, so each gets N / (servers x addresses).

Each source holds one socket, so the process running it needs an open-files
limit above its share of the sources. The bench raises RLIMIT_NOFILE (soft and
hard: it needs the privilege to raise the hard limit past its value, as root
or with CAP_SYS_RESOURCE) to N + 4,096 before it starts the servers and mux,
which inherit it -- what ``ulimit -n`` in the user's shell does.
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _harness as h
from bench_e2e import mux_command
from orjson import loads

from mux_core._run.workers import usable_cores

TARGET_SOURCES = 100_000
TARGET_SECONDS = 60.0
TARGET_KIB = 20.0
#: Connections per listening address (see main).
PER_LISTENER = 2_500
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Cache-Control: no-store\r\nConnection: close\r\n\r\n: connected\n\n"
)


# -- the idle SSE server -------------------------------------------------


def serve(addresses: list[str], keepalive: float) -> None:
    """Listen on each address (port 0); serve /idle and /live until killed.

    Prints ``LISTEN host:port ...`` once listening, then ``OPEN n`` each second.
    """
    poll = select.epoll()
    listeners: dict[int, socket.socket] = {}
    for host in addresses:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, 0))
        listener.listen(65535)
        listener.setblocking(False)
        listeners[listener.fileno()] = listener
        poll.register(listener.fileno(), select.EPOLLIN)
    names = " ".join("{}:{}".format(*s.getsockname()) for s in listeners.values())
    print(f"LISTEN {names}", flush=True)
    conns: dict[int, socket.socket] = {}
    heads: dict[int, bytes] = {}  # request bytes so far, until the head is complete
    idle: list[int] = []  # answered /idle connections, in keep-alive rotation order
    answered: set[int] = set()  # the idle ones still open (an fd number is reused)
    live: set[int] = set()
    turn = 0
    tick = time.monotonic() + 1.0

    def close(fd: int) -> None:
        conn = conns.pop(fd, None)
        heads.pop(fd, None)
        live.discard(fd)
        answered.discard(fd)
        if conn is not None:
            poll.unregister(fd)
            conn.close()

    def send(fd: int, data: bytes) -> None:
        try:
            conns[fd].send(data)
        except BlockingIOError:
            pass  # a client that does not read: it misses a comment
        except OSError:
            close(fd)

    while True:
        for fd, _ in poll.poll(max(0.0, tick - time.monotonic())):
            listening = listeners.get(fd)
            if listening is not None:
                for _ in range(256):
                    try:
                        accepted, _addr = listening.accept()
                    except BlockingIOError:
                        break
                    except OSError as exc:  # EMFILE: say so, keep serving the rest
                        print(f"accept: {exc}", file=sys.stderr, flush=True)
                        break
                    accepted.setblocking(False)
                    conns[accepted.fileno()] = accepted
                    heads[accepted.fileno()] = b""
                    poll.register(accepted.fileno(), select.EPOLLIN)
                continue
            conn = conns.get(fd)
            if conn is None:
                continue
            try:
                data = conn.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                close(fd)
                continue
            if fd not in heads:
                continue  # a client says nothing after its request; ignore it
            head = heads[fd] + data
            if b"\r\n\r\n" not in head:
                heads[fd] = head
                continue
            del heads[fd]
            path = head.split(b" ", 2)[1]
            send(fd, _SSE_HEAD)
            if path.startswith(b"/live"):
                live.add(fd)
            else:
                idle.append(fd)
                answered.add(fd)
        now = time.monotonic()
        if now < tick:
            continue
        tick = now + 1.0
        stamp = b'data: {"t":%.6f}\n\n' % time.time()
        for fd in list(live):
            send(fd, stamp)
        # The keep-alive comments: 1/keepalive of the idle connections each second.
        idle = [fd for fd in idle if fd in answered] if turn == 0 else idle
        share = max(1, int(len(idle) / keepalive) + 1)
        for fd in idle[turn : turn + share]:
            if fd in answered:
                send(fd, b": keep-alive\n\n")
        turn = turn + share if turn + share < len(idle) else 0
        print(f"OPEN {len(conns)}", flush=True)


class Server:
    """One ``--serve`` process; ``self.open`` follows its ``OPEN`` lines."""

    def __init__(self, addresses: list[str], keepalive: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(keepalive), *addresses],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("LISTEN "):
            raise RuntimeError(f"server did not start: {line!r}")
        self.urls = [f"http://{where}" for where in line.split()[1:]]
        self.open = 0
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("OPEN "):
                self.open = int(line.split()[1])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


# -- measuring mux from outside ------------------------------------------


def family(pid: int) -> list[int]:
    """``pid`` and its children (the workers; trio starts them from a thread)."""
    children = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return [pid, *sorted(set(children))]


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE_KIB
    except OSError:
        return 0


def pss_kib(pid: int) -> int:
    """The proportional set size: each page shared by k processes counted 1/k in each
    (forked workers share the parent's pages until written: summed RSS counts them
    in every process)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class Tail:
    """Follows the file sink's output: who is connected, when the live events land."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.connected: set[str] = set()
        self.lags: list[float] = []
        self.statuses = 0
        self.drops: list[str] = []  # statuses other than connecting/connected, after connected
        self.records = 0

    def read(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        now = time.time()
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            self.records += 1
            if b'"type":"status"' in line:
                self.statuses += 1
                record = loads(line)
                if record["state"] == "connected":
                    self.connected.add(record["source"])
                elif record["source"] in self.connected:
                    self.connected.discard(record["source"])
                    if len(self.drops) < 1000:
                        source, state = record["source"], record["state"]
                        self.drops.append(f"{source}: {state} {record['detail']}")
            elif b'"type":"event"' in line and b'"source":"live-' in line:
                self.lags.append(now - loads(line)["data"]["t"])


def config(urls: list[str], n: int, live: int, out: Path) -> str:
    parts = ["[retry]\nconnect_timeout = 60.0\n"]
    for i in range(n):
        url = urls[i % len(urls)]
        parts.append(f'[[sources]]\nname = "idle-{i}"\ntransport = "sse"\nurl = "{url}/idle"\n')
    for i in range(live):
        url = urls[i % len(urls)]
        parts.append(f'[[sources]]\nname = "live-{i}"\ntransport = "sse"\nurl = "{url}/live"\n')
    parts.append(f'[[sinks]]\ntype = "file"\npath = "{out}"\n')
    return "\n".join(parts)


def run_once(
    workers: str, servers: list[Server], args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    out = work / f"w{workers}.jsonl"
    path = work / "mux.toml"
    urls = [url for server in servers for url in server.urls]
    n = args.sources
    total = n + args.live
    path.write_text(config(urls, n, args.live, out))
    stderr_path = work / f"w{workers}.stderr"
    with open(stderr_path, "wb") as stderr:
        started = time.monotonic()
        proc = subprocess.Popen(
            [*mux_command(), "run", str(path), "--workers", workers, "-q"],
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    tail = Tail(out)
    result: dict[str, Any] = {"workers": workers, "sources": n}
    peak = 0
    all_at: float | None = None
    server_all_at: float | None = None
    while time.monotonic() - started < args.deadline and proc.poll() is None:
        time.sleep(0.1)
        tail.read()
        peak = max(peak, sum(rss_kib(p) for p in family(proc.pid)))
        if server_all_at is None and sum(s.open for s in servers) >= total:
            server_all_at = time.monotonic() - started
        if all_at is None and len(tail.connected) >= total:
            all_at = time.monotonic() - started
        if all_at is not None and server_all_at is not None:
            break
    result["connected"] = len(tail.connected)
    result["seconds"] = all_at
    result["server_seconds"] = server_all_at
    result["open_at_server"] = sum(s.open for s in servers)
    if proc.poll() is not None:
        result["error"] = f"exit {proc.returncode}: {stderr_path.read_text()[-600:]}"
        return result
    pids = family(proc.pid)
    result["processes"] = len(pids)
    # The idle window: settle, then CPU over --idle s; the live events' lag throughout.
    settle_end = time.monotonic() + args.settle
    while time.monotonic() < settle_end:
        time.sleep(0.1)
        tail.read()
    rss_start = {p: rss_kib(p) for p in pids}
    cpu_start = {p: cpu_seconds(p) for p in pids}
    servers_cpu = [cpu_seconds(s.proc.pid) for s in servers]
    tail.lags.clear()
    window_start = time.monotonic()
    window_end = window_start + args.idle
    while time.monotonic() < window_end:
        time.sleep(0.1)
        tail.read()
    window = time.monotonic() - window_start
    cpu = {p: (cpu_seconds(p) - cpu_start[p]) / window * 100 for p in pids}
    rss_end = {p: rss_kib(p) for p in pids}
    rss = rss_end if sum(rss_end.values()) >= sum(rss_start.values()) else rss_start
    result["rss_kib"] = [rss[p] for p in pids]
    result["pss_kib"] = [pss_kib(p) for p in pids]
    result["peak_kib"] = max(peak, sum(rss.values()))
    result["cpu"] = [cpu[p] for p in pids]
    result["server_cpu"] = [
        (cpu_seconds(s.proc.pid) - before) / window * 100
        for s, before in zip(servers, servers_cpu, strict=True)
    ]
    result["lags"] = sorted(tail.lags)
    result["live_expected"] = int(window) * args.live
    result["still_connected"] = len(tail.connected)
    result["drops"] = tail.drops[:5]
    result["drop_count"] = len(tail.drops)
    stopping = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        for pid in family(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.wait()
        result["stop"] = "killed after 120 s"
    else:
        result["stop"] = f"{time.monotonic() - stopping:.1f} s, exit {proc.returncode}"
    tail.read()
    result["records"] = tail.records
    result["file_mib"] = out.stat().st_size / 2**20 if out.exists() else 0.0
    # The servers close the idle connections as mux's go; wait for them.
    deadline = time.monotonic() + 60
    while sum(s.open for s in servers) > 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    return result


def rows(r: dict[str, Any]) -> list[h.Row]:
    n = int(r["sources"])
    w = r["workers"]
    label = f"--workers {w}, {n:,} idle sources"
    connected = int(r["connected"])
    seconds = r["seconds"]
    at_server = r["server_seconds"]
    opened = f"{r['open_at_server']:,} open"
    server = f"{at_server:.1f} s" if isinstance(at_server, float) else opened
    up = (
        f"{seconds:.1f} s (server side: {server})"
        if isinstance(seconds, float)
        else f"{connected:,} of {n:,} connected (server side: {server})"
    )
    big = n >= TARGET_SOURCES
    out = [
        h.Row(
            f"{label}: all connected (in the file)",
            up,
            "",
            "",
            f"<= {TARGET_SECONDS:.0f} s at {TARGET_SOURCES:,}",
            (isinstance(seconds, float) and seconds <= TARGET_SECONDS) if big else None,
        )
    ]
    if "error" in r:
        out.append(h.Row(f"{label}: FAILED", str(r["error"])[:200], "", "", "", False))
        return out
    rss = [int(k) for k in r["rss_kib"]]
    per = sum(rss) / n
    parts = ", ".join(f"{k / 1024:.0f}" for k in rss)
    peak = int(r["peak_kib"])
    out.append(
        h.Row(
            f"{label}: RSS per source, all processes",
            f"{per:.1f} KiB ({sum(rss) / 1024:,.0f} MiB: {parts} MiB; peak {peak / 1024:,.0f})",
            "",
            "",
            f"<= {TARGET_KIB:.0f} KiB",
            per <= TARGET_KIB if big else None,
        )
    )
    pss = [int(k) for k in r["pss_kib"]]
    out.append(
        h.Row(
            f"{label}: PSS per source, all processes",
            f"{sum(pss) / n:.1f} KiB ({sum(pss) / 1024:,.0f} MiB: "
            + ", ".join(f"{k / 1024:.0f}" for k in pss)
            + " MiB; shared pages counted once)",
            "",
            "",
            f"<= {TARGET_KIB:.0f} KiB",
            sum(pss) / n <= TARGET_KIB if big else None,
        )
    )
    cpu = [float(c) for c in r["cpu"]]
    server_cpu = sum(float(c) for c in r["server_cpu"])
    out.append(
        h.Row(
            f"{label}: idle CPU, % of a core",
            f"{sum(cpu):.1f}% ({', '.join(f'{c:.1f}' for c in cpu)}); servers {server_cpu:.1f}%",
            "",
            "",
            "",
            None,
        )
    )
    lags = [float(x) for x in r["lags"]]
    live = (
        f"{len(lags)} of ~{r['live_expected']} events, in the file after "
        f"p50 {h.percentile(lags, 0.5):.2f} / max {max(lags):.2f} s"
        if lags
        else f"none of ~{r['live_expected']} events reached the file"
    )
    live_met = bool(lags) and max(lags) <= 2.5 and len(lags) >= int(r["live_expected"]) * 0.9
    out.append(h.Row(f"{label}: the parent's sink live", live, "", "", "<= ~2 s", live_met))
    drops = int(r["drop_count"])
    out.append(
        h.Row(
            f"{label}: SIGINT to exit; the file",
            f"{r['stop']}; {int(r['records']):,} records, {float(r['file_mib']):.0f} MiB"
            + (f"; {drops} dropped while idle: {r['drops']}" if drops else ""),
            "",
            "",
            "",
            None,
        )
    )
    return out


def loopback(k: int) -> str:
    """The k-th loopback address: 127.0.0.k, then 127.0.1.0 ... (all of 127/8 is lo)."""
    return f"127.0.{k // 256}.{k % 256}"


def set_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE to ``wanted`` (soft and hard) if allowed; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if wanted > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sources", type=int, default=0)
    parser.add_argument("--workers", default="auto,1")
    parser.add_argument("--live", type=int, default=5)
    parser.add_argument("--servers", type=int, default=0, help="0: enough for the fd limit")
    parser.add_argument("--addresses", type=int, default=0, help="per server; 0: <= 2,500 each")
    parser.add_argument("--keepalive", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--deadline", type=float, default=240.0)
    parser.add_argument("--keep", help="a directory for the configs, files and stderr (kept)")
    args = parser.parse_args(argv)
    args.sources = args.sources or (10_000 if args.quick else TARGET_SOURCES)
    total = args.sources + args.live
    limit = set_nofile(total + 4096)
    # Each server process holds its connections' sockets: within the fd limit.
    args.servers = args.servers or max(2, -(-total // (limit - 1024)))
    # <= 2,500 connections per listening socket: a burst of connects beyond its
    # accept queue (net.core.somaxconn, 4096 by default) is dropped SYNs, retried
    # by the client after 1, 3, 7, 15 s ... -- the server's limit, not mux's.
    args.addresses = args.addresses or max(1, -(-total // (args.servers * PER_LISTENER)))
    destinations = args.servers * args.addresses
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ports = "-".join(f.read().split())
    print(h.machine())
    print(
        f"RLIMIT_NOFILE {limit:,}; {args.sources:,} idle + {args.live} live sources over "
        f"{args.servers} server processes x {args.addresses} addresses (~{total // destinations:,}"
        f" connections per destination; ephemeral ports {ports})",
        flush=True,
    )
    for workers in args.workers.split(","):
        count = usable_cores() if workers == "auto" else int(workers)
        if total / count > limit - 1024:
            print(
                f"note: --workers {workers} ({count} processes) puts ~{total // count:,} sockets "
                f"in each, over the open-files limit of {limit:,}: not all can connect",
                flush=True,
            )
    results = []
    for workers in args.workers.split(","):
        servers = [
            Server(
                [loopback(2 + s * args.addresses + a) for a in range(args.addresses)],
                args.keepalive,
            )
            for s in range(args.servers)
        ]
        try:
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(args.keep or tmp)
                work.mkdir(parents=True, exist_ok=True)
                result = run_once(workers, servers, args, work)
        finally:
            for server in servers:
                server.stop()
        results.append(result)
        for row in rows(result):
            print(row.benchmark, "|", row.mux, flush=True)
    print(h.table([row for r in results for row in rows(r)]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[3:], float(sys.argv[2]))
    else:
        main(sys.argv[1:])
