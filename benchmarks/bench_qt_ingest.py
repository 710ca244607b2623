"""Qt panel ingest: 100k events/s across sources reach the plots while the panel redraws.

Run: ``QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_qt_ingest.py
[--rate 100000] [--sources 4] [--seconds 10]``. Prints a table; asserts nothing.

A paced SSE server (this file with ``--serve``, its own process) sends each
connection ``rate / sources`` events per second, in bursts every 5 ms, from a
pre-built blob (``data: {"step":N,"loss":...}``, steps rising). mux is the
real engine run the way ``mux run`` runs a ``qt`` sink: as a trio guest of
Qt's event loop (offscreen), with the ``sse`` transport, the ``qt`` sink
(its default overflow: ``drop_oldest``, 100,000 records) plotting ``loss`` by
step, and a ``file`` sink (``block``) beside it.

Measured over the run: events that reached the panel's series, frames
painted per second (paint events of the plot's viewport), what the panel's
channel dropped, and the lines the file sink wrote -- the same run without
the qt sink gives the file sink's figure on its own.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import trio

_BURST_SECONDS = 0.005


# -- the paced server (its own process) ---------------------------------------


def _blob(events: int) -> tuple[bytes, list[int]]:
    """Pre-built SSE events, and the byte offset where each one starts."""
    parts = []
    offsets = [0]
    size = 0
    for step in range(1, events + 1):
        part = b'data: {"step":%d,"loss":%.4f}\n\n' % (step, 2.0 / (1 + step / 5000))
        parts.append(part)
        size += len(part)
        offsets.append(size)
    return b"".join(parts), offsets


async def _serve_paced(per_connection: float, seconds: float) -> None:
    blob, offsets = _blob(int(per_connection * (seconds + 30)))
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )

    async def handle(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            data = await stream.receive_some(4096)
            if not data:
                return
            request += data
        await stream.send_all(head)
        start = trio.current_time()
        sent = 0
        total = len(offsets) - 1
        try:
            while sent < total:
                due = min(int((trio.current_time() - start) * per_connection), total)
                if due > sent:
                    await stream.send_all(blob[offsets[sent] : offsets[due]])
                    sent = due
                await trio.sleep(_BURST_SECONDS)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(f"PORT {listeners[0].socket.getsockname()[1]}", flush=True)
    await trio.serve_listeners(handle, listeners)


# -- the client ----------------------------------------------------------------


def _run_client(port: int, *, sources: int, seconds: float, qt: bool, out: Path) -> dict[str, Any]:
    from PySide6.QtCore import QEvent, QObject

    import mux_file
    import mux_qt
    import mux_sse
    from mux_core._config import parse_config
    from mux_core._plugins import PluginManager
    from mux_core._run.engine import Engine
    from mux_core.hookspecs import Register, hookimpl
    from mux_qt.panel import ensure_application
    from mux_qt.sink import QtSink

    found: dict[str, Any] = {}

    class PaintCounter(QObject):
        def __init__(self) -> None:
            super().__init__()
            self.paints = 0

        def eventFilter(self, watched: QObject, event: QEvent) -> bool:
            if event.type() == QEvent.Type.Paint:
                self.paints += 1
            return False

    class CountedQtSink(QtSink):
        async def open(self) -> None:
            await super().open()
            assert self.panel is not None
            self.panel.resize(1100, 700)
            counter = PaintCounter()
            self.panel.views["loss"].widget.viewport().installEventFilter(counter)
            found["sink"], found["counter"] = self, counter
            self.panel.timer.timeout.connect(self._count_refresh)
            found["refreshes"] = 0

        def _count_refresh(self) -> None:
            found["refreshes"] += 1

    class Bench:
        @hookimpl
        def mux_register_sinks(self, register: Register) -> None:
            register("qt", CountedQtSink)

        @hookimpl
        def mux_main_loop(self, engine: Any) -> bool | None:
            return mux_qt.mux_main_loop(engine)

    ensure_application()
    plugins = PluginManager()
    for module in (mux_sse, mux_file):
        plugins.register(module)
    if qt:
        plugins.register(Bench(), name="bench")
    text = "".join(
        f'[[sources]]\nname = "run-{i}"\ntransport = "sse"\n'
        f'url = "http://127.0.0.1:{port}/events"\n\n'
        for i in range(sources)
    )
    text += f'[[sinks]]\ntype = "file"\npath = "{out}"\n'
    if qt:
        text += '[[sinks]]\ntype = "qt"\nplot = ["loss"]\nx = "step"\nhistory = 1000000\n'
    config = parse_config(text, path="bench.toml", plugins=plugins)
    engine = Engine(config, plugins, duration=seconds)
    started = time.perf_counter()
    cpu = time.process_time()
    if not plugins.main_loop(engine):
        trio.run(engine.run)
    elapsed = time.perf_counter() - started
    result: dict[str, Any] = {
        "elapsed": elapsed,
        "cpu": time.process_time() - cpu,
        "file_lines": sum(1 for _ in out.open("rb")),
    }
    assert engine.result is not None
    result["dropped"] = dict(engine.result.dropped)
    if qt:
        sink = found["sink"]
        result["ingested"] = sum(row.events_seen for row in sink.model.rows.values())
        result["points"] = sum(
            len(segment)
            for curve in sink.model.curves["loss"].values()
            for segment in curve.segments
        )
        result["frames"] = found["counter"].paints
        result["refreshes"] = found["refreshes"]
    return result


def _client_process(port: int, sources: int, seconds: float, qt: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "events.jsonl"
        code = (
            "import json, sys; sys.path.insert(0, sys.argv[1]);"
            "import bench_qt_ingest as b; from pathlib import Path;"
            "r = b._run_client(int(sys.argv[2]), sources=int(sys.argv[3]),"
            " seconds=float(sys.argv[4]), qt=sys.argv[5] == '1', out=Path(sys.argv[6]));"
            "print('RESULT ' + json.dumps(r))"
        )
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                str(Path(__file__).parent),
                str(port),
                str(sources),
                str(seconds),
                "1" if qt else "0",
                str(out),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                import json

                return dict(json.loads(line[7:]))
        raise RuntimeError(f"client failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100_000.0, help="events/s in total")
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--serve", type=float, metavar="PER_CONNECTION", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        trio.run(_serve_paced, args.serve, args.seconds)
        return
    rows = []
    for qt in (False, True):
        server = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                str(args.rate / args.sources),
                "--seconds",
                str(args.seconds),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline().split()[1])
            rows.append((qt, _client_process(port, args.sources, args.seconds, qt)))
        finally:
            server.kill()
            server.wait()
    offered = args.rate * args.seconds
    print(
        f"offered: {args.rate:,.0f} ev/s over {args.sources} SSE sources for {args.seconds:g} s"
        f" (~{offered:,.0f} events)"
    )
    for qt, r in rows:
        label = "file + qt" if qt else "file only"
        line = (
            f"{label:10} file sink wrote {r['file_lines']:>9,} lines "
            f"({r['file_lines'] / args.seconds:>9,.0f}/s); client CPU {r['cpu']:.1f} s"
            f" of {r['elapsed']:.1f} s ({r['file_lines'] / r['cpu']:,.0f} events per CPU-second);"
            f" dropped {r['dropped']}"
        )
        print(line)
        if qt:
            print(
                f"{'':10} panel series got {r['ingested']:>9,} events "
                f"({r['ingested'] / args.seconds:>9,.0f}/s), {r['points']:,} points; "
                f"{r['frames'] / args.seconds:.1f} paints/s of the plot, "
                f"{r['refreshes'] / args.seconds:.1f} refreshes/s"
            )


if __name__ == "__main__":
    main()
