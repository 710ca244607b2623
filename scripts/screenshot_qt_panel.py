"""Screenshots of the Qt panel for the docs, from real runs, offscreen.

    .venv/bin/python scripts/screenshot_qt_panel.py [--out-dir docs/img]

1. ``qt-panel-restart.png``: the demo trainer (``mux serve-demo``'s servers,
   in this process on free ports) is watched by the real engine (sse, ws and
   rest transports, the qt sink, a file sink); after a while the trainer is
   killed, stays down for a few seconds (the sources retry), and a new one
   starts over at step 1 on the same ports. The loss is plotted by time (the
   outage shaded, the new run marked), the learning rate by step (the old run
   faded under the new one).
2. ``qt-panel-replay.png``: a recording of the demo -- 6,000 steps, what ten
   minutes of ``mux demo`` produce, recorded by the file sink at 20x its pace,
   with a trainer restart at step 4,000 -- fed back by ``mux replay``'s
   :class:`~mux_core._run.replay.Replay` into the panel, grabbed during the replay.

No display is needed (QT_QPA_PLATFORM=offscreen).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import trio

import mux_file
import mux_rest
import mux_sse
import mux_ws
from mux_core._config import parse_config
from mux_core._plugins import PluginManager
from mux_core._run.engine import Engine
from mux_core.hookspecs import Register, hookimpl
from mux_demo.monitor import demo_config_text
from mux_demo.server import DemoOptions, serve_demo
from mux_qt.panel import QtPanel
from mux_qt.sink import QtSink

SIZE = (1150, 820)


def _save(panel: QtPanel, out: Path) -> None:
    panel.refresh()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not panel.grab().save(str(out)):
        raise SystemExit(f"could not write {out}")
    print(f"wrote {out}")


class _Found:
    sink: QtSink | None = None


def _plugins(found: type[_Found]) -> PluginManager:
    class ShotQtSink(QtSink):
        async def open(self) -> None:
            await super().open()
            assert self.panel is not None
            self.panel.resize(*SIZE)
            found.sink = self

    class Shot:
        @hookimpl
        def mux_register_sinks(self, register: Register) -> None:
            register("qt", ShotQtSink)

    plugins = PluginManager()
    for module in (mux_sse, mux_ws, mux_rest, mux_file):
        plugins.register(module)
    plugins.register(Shot(), name="shot")
    return plugins


def _sources(endpoints: Any) -> str:
    text = demo_config_text(
        host="127.0.0.1",
        sse_port=endpoints.sse_port,
        ws_port=endpoints.ws_port,
        rest_port=endpoints.rest_port,
        view="log",
        events_path="unused",
    )
    return text.split("[[sinks]]")[0]


async def restart_shot(out: Path, recording: Path) -> None:
    """The panel after a trainer restart: a new run segment and the outage between."""

    class Found(_Found):
        pass

    plugins = _plugins(Found)
    async with trio.open_nursery() as nursery:
        first = DemoOptions(sse_port=0, ws_port=0, rest_port=0, rate=20.0, seed=7)
        scope = trio.CancelScope()

        async def trainer(
            options: DemoOptions, scope: trio.CancelScope, *, task_status: Any
        ) -> None:
            with scope:
                await serve_demo(options, task_status=task_status)

        endpoints = await nursery.start(trainer, first, scope)
        text = _sources(endpoints)
        text += f"""
[[sinks]]
type = "qt"
plot = ["loss", "lr"]
x = "received_at"

[[sinks]]
type = "file"
path = "{recording}"
"""
        config = parse_config(text, path="monitor.toml", plugins=plugins)
        engine = Engine(config, plugins)

        async def script() -> None:
            await trio.sleep(9.0)
            scope.cancel()  # the trainer dies: every source loses its server
            await trio.sleep(4.0)
            again = DemoOptions(
                sse_port=endpoints.sse_port,
                ws_port=endpoints.ws_port,
                rest_port=endpoints.rest_port,
                rate=20.0,
                seed=11,
            )
            second = trio.CancelScope()
            await nursery.start(trainer, again, second)  # a new run: step 1 again
            while Found.sink is not None and Found.sink.panel is not None:
                row = Found.sink.model.rows.get("train-rest")
                if row is not None and row.run >= 2 and row.events_seen > 0:
                    break
                await trio.sleep(0.2)
            await trio.sleep(5.0)
            sink = Found.sink
            assert sink is not None and sink.panel is not None
            sink.panel.views["lr"].set_x_mode("step")
            await trio.sleep(0.3)  # let the pump lay the new axis out
            _save(sink.panel, out)
            engine.request_stop("screenshot taken")
            second.cancel()

        nursery.start_soon(script)
        await engine.run()


async def record(recording: Path) -> None:
    """Record 6,000 demo steps at 20x the demo's pace, with a restart at step 4,000."""
    plugins = _plugins(_Found)
    async with trio.open_nursery() as nursery:
        options = DemoOptions(
            sse_port=0, ws_port=0, rest_port=0, rate=200.0, seed=3, steps=6000, restart_at=4000
        )
        endpoints = await nursery.start(serve_demo, options)
        text = _sources(endpoints) + f'\n[[sinks]]\ntype = "file"\npath = "{recording}"\n'
        config = parse_config(text, path="record.toml", plugins=plugins)
        engine = Engine(config, plugins, duration=6000 / 200.0 + 3.0)
        await engine.run()
        nursery.cancel_scope.cancel()


async def replay_shot(out: Path, recording: Path) -> None:
    from mux_core._config import SinkConfig
    from mux_core._run.replay import Replay, replay_files
    from mux_core.sink import Overflow, SourceInfo
    from mux_qt.options import QtOptions

    class Found(_Found):
        pass

    plugins = _plugins(Found)
    options = QtOptions(plot=["loss", "lr"], x="step", log_y=["loss"])
    sink = SinkConfig("qt", "qt", options, Overflow.DROP_OLDEST, 100_000, "stop", None)
    sources = [
        SourceInfo("train-sse", "sse"),
        SourceInfo("train-ws", "ws"),
        SourceInfo("train-rest", "rest"),
    ]
    files = replay_files(recording)
    # 4x the recorded pace (the recording is 20x the demo's): grabbed mid-replay
    replay = Replay(files, [sink], plugins, name=recording.name, sources=sources, speed=4.0)

    async def shoot() -> None:
        while True:  # until the restarted run is well under way
            found = Found.sink
            row = None if found is None else found.model.rows.get("train-sse")
            if row is not None and row.run >= 2 and row.events_seen >= 5000:
                break
            await trio.sleep(0.05)
        assert found is not None and found.panel is not None
        _save(found.panel, out)
        replay.request_stop("screenshot taken")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(shoot)
        await replay.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trio.run(restart_shot, args.out_dir / "qt-panel-restart.png", Path(tmp) / "live.jsonl")
        recording = Path(tmp) / "demo-6000-steps.jsonl"
        trio.run(record, recording)
        trio.run(replay_shot, args.out_dir / "qt-panel-replay.png", recording)


if __name__ == "__main__":
    main()
