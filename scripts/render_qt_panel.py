"""Render the Qt panel offscreen as a PNG, against the demo server or a script.

    .venv/bin/python scripts/render_qt_panel.py [--live SECONDS] [--out docs/img/qt-panel.png]

``--live`` (what the README shows): the demo training run (``mux serve-demo``'s
servers, in this process on free ports) is watched by the real engine with
the sse, ws and rest transports and the qt sink, plus one source whose server
is not up (so the badge shows a retry countdown); after SECONDS the panel is
grabbed and the run stopped.

Without ``--live``: three scripted sources -- connected, waiting to retry,
given up -- with loss decaying and a warm-up + cosine learning rate. No
network and no display are needed either way.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import trio

from mux_core.records import (
    Event,
    Record,
    State,
    Status,
)
from mux_core.sink import SinkContext, SourceInfo
from mux_qt.options import QtOptions
from mux_qt.sink import QtSink

STEPS = 1500
WARMUP = 150
STEP_SECONDS = 0.05
SOURCES = (
    SourceInfo("train-sse", "sse"),
    SourceInfo("train-ws", "ws"),
    SourceInfo("train-rest", "rest"),
)


def _lr(step: int, peak: float) -> float:
    if step < WARMUP:
        return peak * (step + 1) / WARMUP
    progress = (step - WARMUP) / (STEPS - WARMUP)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def _loss(step: int, floor: float, rng: random.Random) -> float:
    return floor + 2.2 * math.exp(-step / 260) + rng.gauss(0, 0.03)


def scripted_records(now: float) -> list[Record]:
    """Records as the three sources would have delivered them, oldest first."""
    rng = random.Random(7)
    start = now - STEPS * STEP_SECONDS
    records: list[tuple[float, Record]] = []
    runs = {  # source: (last step delivered, every n steps, loss floor, peak lr)
        "train-sse": (STEPS - 1, 1, 0.32, 3e-4),
        "train-ws": (1180, 1, 0.41, 5e-4),
        "train-rest": (780, 20, 0.25, 2e-4),
    }
    for source in SOURCES:
        last, every, floor, peak = runs[source.name]
        at = start - 1.0
        records.append(
            (at, Status(source.name, source.transport, State.CONNECTING, 1, None, "", at))
        )
        records.append(
            (at + 0.01, Status(source.name, source.transport, State.CONNECTED, 1, None, "", at))
        )
        for seq, step in enumerate(range(0, last + 1, every), start=1):
            received = start + step * STEP_SECONDS
            data = {"step": step, "loss": _loss(step, floor, rng), "lr": _lr(step, peak)}
            records.append(
                (
                    received,
                    Event(source.name, source.transport, "metric", str(step), data, received, seq),
                )
            )
    lost = start + 1180 * STEP_SECONDS + 0.2
    records += [
        (lost, Status("train-ws", "ws", State.DISCONNECTED, 1, 0.5, "server closed (1006)", lost)),
        (
            now - 1.3,
            Status(
                "train-ws", "ws", State.SERVER_UNAVAILABLE, 3, 4.0, "connection refused", now - 1.3
            ),
        ),
    ]
    gave_up = start + 780 * STEP_SECONDS + 12.0
    records.append(
        (
            gave_up,
            Status(
                "train-rest",
                "rest",
                State.MAX_RETRIES_EXCEEDED,
                5,
                None,
                "HTTP 503 Service Unavailable",
                gave_up,
            ),
        )
    )
    records.sort(key=lambda pair: pair[0])
    return [record for _, record in records]


async def render(out: Path) -> None:
    async with trio.open_nursery() as nursery:
        context = SinkContext(
            name="qt",
            config_name="monitor",
            sources=SOURCES,
            request_stop=lambda reason: None,
            start_background=lambda fn: nursery.start_soon(fn),
        )
        sink = QtSink(QtOptions(plot=["loss", "lr"], x="step", history=2000), context)
        await sink.open()
        assert sink.panel is not None
        sink.panel.resize(1000, 760)
        records = scripted_records(time.time())
        for start in range(0, len(records), 64):
            await sink.write(records[start : start + 64])
        sink.panel.refresh()
        await trio.sleep(0.3)  # let the pump lay out and paint the window
        out.parent.mkdir(parents=True, exist_ok=True)
        if not sink.panel.grab().save(str(out)):
            raise SystemExit(f"could not write {out}")
        await sink.aclose()
        nursery.cancel_scope.cancel()
    print(f"wrote {out}")


async def render_live(out: Path, seconds: float) -> None:
    """Watch the demo server with the real engine; grab the panel after ``seconds``."""
    import mux_rest
    import mux_sse
    import mux_ws
    from mux_core._config import parse_config
    from mux_core._plugins import PluginManager
    from mux_core._run.engine import Engine
    from mux_core.hookspecs import Register, hookimpl
    from mux_demo.monitor import demo_config_text
    from mux_demo.server import DemoOptions, serve_demo

    class ScreenshotQtSink(QtSink):
        async def open(self) -> None:
            await super().open()
            assert self.panel is not None
            self.panel.resize(1100, 760)
            self.context.start_background(self._shoot)

        async def _shoot(self) -> None:
            await trio.sleep(seconds)
            assert self.panel is not None
            self.panel.refresh()
            out.parent.mkdir(parents=True, exist_ok=True)
            if not self.panel.grab().save(str(out)):
                raise SystemExit(f"could not write {out}")
            self.context.request_stop("screenshot taken")

    class Shot:
        @hookimpl
        def mux_register_sinks(self, register: Register) -> None:
            register("qt", ScreenshotQtSink)

    async with trio.open_nursery() as nursery:
        demo = DemoOptions(sse_port=0, ws_port=0, rest_port=0, rate=20.0, seed=7)
        endpoints = await nursery.start(serve_demo, demo)
        plugins = PluginManager()
        for module in (mux_sse, mux_ws, mux_rest):
            plugins.register(module)
        plugins.register(Shot(), name="shot")
        text = demo_config_text(
            host="127.0.0.1",
            sse_port=endpoints.sse_port,
            ws_port=endpoints.ws_port,
            rest_port=endpoints.rest_port,
            view="log",
            events_path="unused",
        )
        text = text.split("[[sinks]]")[0]
        text += """
[[sources]]
name = "eval-sse"
transport = "sse"
url = "http://127.0.0.1:9/events"
retry = { initial_delay = 2.0, multiplier = 1.5 }

[[sinks]]
type = "qt"
plot = ["loss", "lr"]
x = "step"
"""
        config = parse_config(text, path="monitor.toml", plugins=plugins)
        await Engine(config, plugins).run()
        nursery.cancel_scope.cancel()
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/qt-panel.png"))
    parser.add_argument(
        "--live", type=float, metavar="SECONDS", help="watch the demo server this long"
    )
    args = parser.parse_args()
    if args.live:
        trio.run(render_live, args.out, args.live)
    else:
        trio.run(render, args.out)


if __name__ == "__main__":
    main()
