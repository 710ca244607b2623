"""The web sink under load: 100 viewers on one mux, and a relay mux -> mux -> file.

Run: ``.venv/bin/python benchmarks/bench_web.py [--quick] [--relay | --viewers]
[--runs N]``. Prints a table; asserts nothing (the numbers go to RESULTS.md
by hand). ``--relay`` / ``--viewers`` run one part only; ``--runs N`` repeats
it N times (the machine is shared: report the range).

Viewers: ``mux run`` as a process reads three SSE sources at 1,000 events/s
each (``_servers.py sse``, ``GET /tick?rate=1000``, its own process) into a
``file`` sink and a ``web`` sink. Over a window with no viewer, then over the
same window with 100 SSE clients on ``/events`` (a separate load process:
raw trio sockets that read and count), it measures what the file sink wrote
per second (the sources' rate as delivered), mux's CPU (user + system, from
/proc) and its RSS; per-viewer memory is the RSS difference over 100.

Relay: an upstream ``mux run`` reads ``_servers.py metrics-sse N`` (N
~200-byte training-metric events, as fast as they come) into a ``web`` sink
that keeps all N (``points``) and never drops (``overflow = "block"``: the
view's default, ``drop_oldest``, drops what it cannot take at this rate);
a downstream ``mux run`` reads it with ``transport = "sse"``, ``relay =
true`` into a ``file`` sink. The rate is N
over the time from the downstream file's first relayed event to its N-th.
The upstream's port is picked below the kernel's ephemeral range
(:func:`_harness.free_port`): one picked by ``bind(0)`` was at times taken by
another program's outgoing connection before the upstream bound it, and the
run then waited for nothing. A run fails at once, printing both muxes' logs,
when a mux exits or no relayed event comes for :data:`STALL` seconds.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import _harness as h

HERE = Path(__file__).resolve().parent
MUX = [sys.executable, "-m", "mux_core"]
VIEWERS = 100
#: Seconds without a new relayed event before the relay counts as stuck.
STALL = 60.0


def _cpu_seconds(pid: int) -> float:
    return sum(_cpu_split(pid))


def _cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    """The process's RSS now (``VmHWM``: its peak so far), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _events(path: Path) -> int:
    """Relayed events of source "train" in a JSON Lines file."""
    try:
        with path.open("rb") as f:
            marker = b'{"type":"event","source":"train"'
            return sum(line.startswith(marker) for line in f)
    except FileNotFoundError:
        return 0


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def _window(pid: int, seconds: float) -> tuple[float, float, float, int]:
    """(wall start, wall end, CPU share of one core, RSS KiB at the end)."""
    cpu0, t0, w0 = _cpu_seconds(pid), time.monotonic(), time.time()
    time.sleep(seconds)
    cpu1, t1, w1 = _cpu_seconds(pid), time.monotonic(), time.time()
    return w0, w1, (cpu1 - cpu0) / (t1 - t0), _rss_kib(pid)


def _rate(path: Path, start: float, end: float) -> float:
    """Events per second the file holds with received_at in [start, end)."""
    import orjson

    count = 0
    with path.open("rb") as f:
        for line in f:
            if line.startswith(b'{"type":"event"'):
                at = orjson.loads(line)["received_at"]
                count += start <= at < end
    return count / (end - start)


_LOAD = textwrap.dedent(
    """
    import sys, trio
    port, n, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    total = [0, 0]
    async def viewer():
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /events HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n")
        total[1] += 1
        while data := await stream.receive_some(65536):
            total[0] += len(data)
    async def main():
        with trio.move_on_after(seconds):
            async with trio.open_nursery() as nursery:
                for _ in range(n):
                    nursery.start_soon(viewer)
        print(total[1], total[0], flush=True)
    trio.run(main)
    """
)


def viewers(seconds: float) -> list[list[str]]:
    with h.server_process("sse") as sse_port, tempfile.TemporaryDirectory() as tmp:
        web_port = h.free_port()
        path = Path(tmp) / "run.jsonl"
        sources = "".join(
            f'[[sources]]\nname = "train-{i}"\ntransport = "sse"\n'
            f'url = "http://127.0.0.1:{sse_port}/tick?rate=1000"\n\n'
            for i in range(3)
        )
        config = Path(tmp) / "web.toml"
        config.write_text(
            sources + f'[[sinks]]\ntype = "file"\npath = "{path}"\n\n'
            f'[[sinks]]\ntype = "web"\nlisten = "127.0.0.1:{web_port}"\nfields = ["t"]\n'
        )
        mux = subprocess.Popen([*MUX, "run", "-q", str(config)], stderr=subprocess.DEVNULL)
        try:
            _wait_port(web_port)
            time.sleep(3.0)  # connected, steady
            alone = _window(mux.pid, seconds)
            peak_alone = _rss_kib(mux.pid, "VmHWM")
            load = subprocess.Popen(
                [sys.executable, "-c", _LOAD, str(web_port), str(VIEWERS), str(seconds + 4)],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(3.0)  # every viewer connected, its history sent
            watched = _window(mux.pid, seconds)
            peak_watched = _rss_kib(mux.pid, "VmHWM")
            out, _ = load.communicate(timeout=60)
            opened, received = (int(x) for x in out.split())
        finally:
            mux.terminate()
            mux.wait(timeout=30)
        before, during = _rate(path, *alone[:2]), _rate(path, *watched[:2])
    per_viewer = (watched[3] - alone[3]) / VIEWERS
    peak_per_viewer = (peak_watched - peak_alone) / VIEWERS
    return [
        ["file sink, 3 sources x 1,000 ev/s, no viewer", f"{before:,.0f} ev/s", ""],
        [f"file sink, {VIEWERS} viewers", f"{during:,.0f} ev/s", ""],
        ["mux CPU, no viewer", f"{alone[2] * 100:.0f}% of a core", ""],
        [f"mux CPU, {VIEWERS} viewers", f"{watched[2] * 100:.0f}% of a core", ""],
        [
            "RSS without / with viewers",
            f"{alone[3] / 1024:.1f} / {watched[3] / 1024:.1f} MiB",
            f"{per_viewer:.0f} KiB per viewer",
        ],
        [
            "peak RSS without / with viewers (history going out)",
            f"{peak_alone / 1024:.1f} / {peak_watched / 1024:.1f} MiB",
            f"{peak_per_viewer:.0f} KiB per viewer",
        ],
        [
            "viewers connected, bytes they read",
            f"{opened} / {VIEWERS}",
            f"{received / 1e6:,.0f} MB in {seconds + 4:g} s",
        ],
    ]


def relay(events: int) -> list[list[str]]:
    with (
        h.server_process("metrics-sse", str(events)) as metrics_port,
        h.server_process("sse") as idle_port,
        tempfile.TemporaryDirectory() as tmp,
    ):
        web_port = h.free_port()
        down_file = Path(tmp) / "down.jsonl"
        up = Path(tmp) / "up.toml"
        up.write_text(
            f'[[sources]]\nname = "train"\ntransport = "sse"\n'
            f'url = "http://127.0.0.1:{metrics_port}/events/bench"\n\n'
            # An idle source keeps the upstream running once the metrics end.
            f'[[sources]]\nname = "idle"\ntransport = "sse"\n'
            f'url = "http://127.0.0.1:{idle_port}/idle"\n\n'
            f'[[sinks]]\ntype = "web"\nlisten = "127.0.0.1:{web_port}"\n'
            f'points = {events}\nviewer_buffer = 1073741824\noverflow = "block"\n'
        )
        down = Path(tmp) / "down.toml"
        down.write_text(
            '[retry]\ninitial_delay = 0.05\nmax_delay = 0.1\n\n[[sources]]\nname = "up"\n'
            f'transport = "sse"\nurl = "http://127.0.0.1:{web_port}/events"\nrelay = true\n'
            f'read_timeout = 600\n\n[[sinks]]\ntype = "file"\npath = "{down_file}"\n'
        )
        logs = Path(tmp) / "down.log", Path(tmp) / "up.log"
        with logs[0].open("w") as down_log, logs[1].open("w") as up_log:
            downstream = subprocess.Popen([*MUX, "run", "-q", str(down)], stderr=down_log)
            upstream = subprocess.Popen([*MUX, "run", "-q", str(up)], stderr=up_log)
        try:
            first = None
            # The file sink writes its last, small batch at its next flush or at
            # exit: time until all but the last 1,000, count them all after exit.
            target = events - 1_000
            seen, progress = -1, time.monotonic()
            problem = ""
            while True:
                n = _events(down_file)
                now = time.monotonic()
                if first is None and n > 1_000:
                    first = (now, n)
                    cpu0 = _cpu_split(upstream.pid) + _cpu_split(downstream.pid)
                if n >= target:
                    break
                # Fail at once, saying why, instead of waiting: a mux that exited
                # (the upstream's port taken: "port in use"), or no progress.
                gone = [
                    f"the {name} mux exited ({proc.returncode})"
                    for name, proc in (("upstream", upstream), ("downstream", downstream))
                    if proc.poll() is not None
                ]
                if gone:
                    problem = ", ".join(gone)
                    break
                if n != seen:
                    seen, progress = n, now
                elif now - progress > STALL:
                    problem = f"no relayed event for {STALL:g} s"
                    break
                time.sleep(0.05)
            done = time.monotonic()
            if not problem:
                cpu1 = _cpu_split(upstream.pid) + _cpu_split(downstream.pid)
                # The rest are in flight: give them a moment before stopping.
                settle = time.monotonic() + 10
                while _events(down_file) < events and time.monotonic() < settle:
                    time.sleep(0.2)
        finally:
            for proc in (downstream, upstream):
                proc.terminate()
                proc.wait(timeout=60)
        relayed = _events(down_file)
        if problem:  # say why: each mux's last words (its summary table)
            for log in logs:
                print(f"--- {log.name}:\n{log.read_text()[-3000:]}", file=sys.stderr)
            raise RuntimeError(f"{problem}; the relay delivered {relayed} of {events} events")
    assert first is not None  # n >= target > 1,000
    counted = target - first[1]
    rate = counted / (done - first[0])
    up_user, up_sys, down_user, down_sys = (
        (b - a) / counted * 1e6 for a, b in zip(cpu0, cpu1, strict=True)
    )
    return [
        [
            f"relay mux -> mux -> file, {events:,} events",
            f"{rate:,.0f} ev/s",
            f">= 100,000; {relayed:,} of {events:,} in the file",
        ],
        [
            "  CPU per relayed event, upstream / downstream",
            f"{up_user + up_sys:.2f} / {down_user + down_sys:.2f} us",
            f"(user {up_user:.2f} + system {up_sys:.2f} / user {down_user:.2f} + system"
            f" {down_sys:.2f}); load {os.getloadavg()[0]:.1f}",
        ],
    ]


def main() -> None:
    quick = "--quick" in sys.argv
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 1
    rows: list[list[str]] = []
    for _ in range(runs):
        if "--relay" not in sys.argv:
            rows += viewers(4.0 if quick else 8.0)
        if "--viewers" not in sys.argv:
            rows += relay(200_000 if quick else 1_000_000)
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>24}  {note}")


if __name__ == "__main__":
    main()
