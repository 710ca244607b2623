"""``mux run --workers N`` on the user's path: several sources -> the ``file`` sink (issue 26).

Run: ``.venv/bin/python benchmarks/bench_workers.py [--quick] [--sources S]
[--events N] [--workers 1,2] [--rounds R] [sse] [ws] [rest]``. Prints a table;
asserts nothing (a failed run is a "NO" row with the child's stderr).

For each transport, S server processes (``_servers.py metrics-KIND N``), one
per source, each serving N ~200-byte training-metric events (steps 1 .. N);
``mux run CONFIG --workers W`` with S sources and one ``file`` sink at its
defaults, as a subprocess, for each W (alternating, R rounds). SSE and WS
runs end on their own; a REST run gets SIGINT once the file holds S x N
events. Measured from the outside: ev/s from the file's ``received_at``
(first to last event of all sources), CPU per event of mux and its workers
(``os.wait4`` rusage, which includes the workers it reaped; the parent's
own share from ``/proc/PID/stat``, sampled every 0.1 s, the workers' the
rest), the parent's peak RSS. Every file is read back: per source, seq 1 .. N in order and
``data.step == seq``; anything else is a failure.

With one source per server process and the servers on the same cores, the
machine's cores are shared by mux, its workers and the servers: on two
cores, mux's two workers compete with S servers.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import _harness as h
from _harness import HERE
from bench_e2e import mux_command
from orjson import loads

TRANSPORTS = ("sse", "ws", "rest")


def source_toml(transport: str, name: str, port: int) -> str:
    body = {
        "sse": f'url = "http://127.0.0.1:{port}/events/mux"\n',
        "ws": f'url = "ws://127.0.0.1:{port}/ws"\nend_on_close = true\n',
        "rest": (
            f'url = "http://127.0.0.1:{port}/page"\n'
            'cursor_param = "after"\nid_field = "step"\ninterval = 0.001\n'
        ),
    }[transport]
    return f'[[sources]]\nname = "{name}"\ntransport = "{transport}"\n{body}\n'


def count_events(path: Path) -> int:
    try:
        with open(path, "rb") as file:
            return sum(1 for line in file if b'"type":"event"' in line)
    except FileNotFoundError:
        return 0


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as file:
                found += [int(child) for child in file.read().split()]
        except OSError:
            continue
    return found


def cpu_seconds(pid: int) -> float | None:
    """user + system seconds of a running process so far (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def servers(kind: str, events: int, count: int) -> Iterator[tuple[list[int], list[int]]]:
    """``count`` server processes: (their ports, their pids); killed after."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "_servers.py"), kind, str(events)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:
        ports = []
        for proc in procs:
            assert proc.stdout is not None
            ports.append(int(proc.stdout.readline().split()[1]))
        yield ports, [proc.pid for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def run_once(
    transport: str,
    ports: list[int],
    events: int,
    workers: int,
    work: Path,
    *,
    kill_at: int | None = None,
    server_pids: Sequence[int] = (),
) -> h.Row:
    out = work / f"w{workers}.jsonl"
    out.unlink(missing_ok=True)
    config = work / "mux.toml"
    names = [f"{transport}-{i}" for i in range(len(ports))]
    config.write_text(
        "".join(source_toml(transport, n, p) for n, p in zip(names, ports, strict=True))
        + f'[[sinks]]\ntype = "file"\npath = "{out}"\n'
    )
    total = events * len(ports)
    stderr_path = work / "stderr.txt"
    extra = [] if kill_at is None else ["--state", str(work / "state")]
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [*mux_command(), "run", str(config), "--workers", str(workers), "-q", *extra],
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    started = time.monotonic()
    interrupted = False
    killed = None
    worker_cpu: dict[int, float] = {}
    parent_cpu = 0.0
    server_start = [cpu_seconds(pid) or 0.0 for pid in server_pids]
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.1)
        for child in children(proc.pid):
            worker_cpu[child] = cpu_seconds(child) or worker_cpu.get(child, 0.0)
        parent_cpu = cpu_seconds(proc.pid) or parent_cpu
        if kill_at is not None and killed is None and count_events(out) >= kill_at:
            killed = children(proc.pid)[0]
            os.kill(killed, signal.SIGKILL)
        late = time.monotonic() - started > 60 + total / 20_000
        if not interrupted and (late or (transport == "rest" and count_events(out) >= total)):
            proc.send_signal(signal.SIGINT)
            interrupted = True
    code = os.waitstatus_to_exitcode(status)
    problem = None if code == 0 else f"exit {code}: {stderr_path.read_text()[-2000:]}"
    first, last, seen = float("inf"), 0.0, 0
    expect = dict.fromkeys(names, 1)
    with open(out, "rb") as file:
        for line in file:
            record = loads(line)
            if record["type"] != "event":
                continue
            seen += 1
            source, seq = record["source"], record["seq"]
            if problem is None and (seq != expect[source] or record["data"]["step"] != seq):
                step = record["data"]["step"]
                problem = f"{source}: seq {seq} (step {step}), expected {expect[source]}"
            expect[source] = seq + 1
            first, last = min(first, record["received_at"]), max(last, record["received_at"])
    if problem is None and seen != total:
        problem = f"{seen} events, expected {total}"
    rate = seen / (last - first) if last > first else 0.0
    total = usage.ru_utime + usage.ru_stime
    cpu = total / max(seen, 1) * 1e6
    server_cpu = sum(
        (cpu_seconds(pid) or 0.0) - start
        for pid, start in zip(server_pids, server_start, strict=True)
    )
    # Sampled every 0.1 s: a worker's last moments are missed (within noise).
    # The parent's own CPU (sampled: its last 0.1 s are missed, closing the file);
    # the workers' is the rest of what wait4 counted (the workers it reaped).
    workers_cpu = total - parent_cpu if workers > 1 else 0.0
    split = (
        f" (parent {(total - workers_cpu) / max(seen, 1) * 1e6:.2f}, workers "
        f"{workers_cpu / max(seen, 1) * 1e6:.2f})"
        if workers > 1
        else ""
    )
    what = "" if kill_at is None else f", a worker SIGKILLed at {kill_at:,} (--state)"
    return h.Row(
        f"{transport}: {len(ports)} sources x {events:,}, --workers {workers}{what}",
        f"{h.rate(rate)}, {cpu:.2f} us CPU/event{split}, "
        f"servers {server_cpu / max(seen, 1) * 1e6:.2f}"
        + ("" if problem is None else f" FAILED: {problem}"),
        "",
        "",
        "",
        None if problem is None else False,
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transports", nargs="*", default=list(TRANSPORTS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--events", type=int, default=0)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--kill-at",
        type=int,
        help="SSE with ids and resume: SIGKILL a worker once the file holds this many events",
    )
    args = parser.parse_args(argv)
    events = args.events or (50_000 if args.quick else 250_000)
    counts = [int(w) for w in args.workers.split(",")]
    rows = []
    print(h.machine())
    for transport in args.transports:
        for _ in range(args.rounds):
            for workers in counts:
                # Fresh servers each run: a metrics server serves its events once.
                kind = f"metrics-{transport}" + ("-ids" if args.kill_at else "")
                with (
                    tempfile.TemporaryDirectory() as tmp,
                    servers(kind, events, args.sources) as (ports, pids),
                ):
                    row = run_once(
                        transport,
                        ports,
                        events,
                        workers,
                        Path(tmp),
                        kill_at=args.kill_at,
                        server_pids=pids,
                    )
                print(row.benchmark, row.mux, flush=True)
                rows.append(row)
    print(h.table(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
