"""Screenshots of the Qt panel for the docs, from real runs, offscreen.

    .venv/bin/python scripts/screenshot_qt_panel.py [--out-dir docs/img] [--only NAME ...]

Each scene is a real run: the demo trainer (``mux serve-demo``, a process of
its own on free ports) watched by the real engine with the sse, ws and rest
transports, the restart / nonfinite / stall processors and the qt sink; the
trainer is then hurt the way the scene says, and the panel is grabbed.

- ``qt-panel-outage.png``: the trainer is killed; the sources retry (the
  state's name, then the countdown and the server's words), and a fourth
  source whose server never came up has given up (its Restart button).
- ``qt-panel-stale.png``: the trainer is stopped (SIGSTOP) for 12 s: connected,
  quiet, every row "stale".
- ``qt-panel-restart.png``: the trainer is killed and a new one starts over at
  step 1: the outage shaded by time, one "restart" marker for the three
  sources where run 2 starts, run 1 shaded under run 2 by step.
- ``qt-panel-nan.png``: the trainer's loss turns NaN (``--nan-at``): the loss
  cells say NaN, the plot marks the NaN stretch at the last finite value, the
  nonfinite alerts are marked and listed.
- ``qt-panel-replay.png``: two recordings of the trainer (the second one's
  loss turning NaN near its end) replayed side by side (``mux replay a.jsonl
  b.jsonl``), aligned by step, one legend entry per run.

No display is needed (QT_QPA_PLATFORM=offscreen). The README's
``qt-panel.png`` comes from ``scripts/render_qt_panel.py --live 12``.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import trio

import mux_file
import mux_proc
import mux_rest
import mux_sse
import mux_ws
from mux_core._config import SinkConfig, parse_config
from mux_core._plugins import PluginManager
from mux_core._run.engine import Engine
from mux_core.hookspecs import Register, hookimpl
from mux_core.sink import Overflow
from mux_qt.options import QtOptions
from mux_qt.panel import QtPanel
from mux_qt.sink import QtSink

SIZE = (1280, 860)
RATE = 20.0


def _save(panel: QtPanel, out: Path) -> None:
    panel.refresh()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not panel.grab().save(str(out)):
        raise SystemExit(f"could not write {out}")
    print(f"wrote {out}")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


class Trainer:
    """``mux serve-demo`` in a process of its own: killed, stopped, started again."""

    def __init__(self, ports: list[int], *extra: str) -> None:
        self.ports = ports
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        sse, ws, rest = self.ports
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mux_core",
                "serve-demo",
                *("--sse-port", str(sse), "--ws-port", str(ws), "--rest-port", str(rest)),
                *("--rate", str(RATE)),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
        )

    def signal(self, signum: int) -> None:
        if self.proc is not None:
            self.proc.send_signal(signum)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
            self.proc = None


class _Found:
    sink: QtSink | None = None


def _plugins(found: _Found) -> PluginManager:
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
    for module in (mux_sse, mux_ws, mux_rest, mux_file, mux_proc):
        plugins.register(module)
    plugins.register(Shot(), name="shot")
    return plugins


def _config(ports: list[int], *, gave_up: int | None = None, x: str = "step") -> str:
    sse, ws, rest = ports
    text = f"""
[retry]
initial_delay = 0.5
max_delay = 4.0

[[sources]]
name = "train-sse"
transport = "sse"
url = "http://127.0.0.1:{sse}/events"

[[sources]]
name = "train-ws"
transport = "ws"
url = "ws://127.0.0.1:{ws}/ws"
id_field = "id"
event_field = "event"
resume_param = "last_id"

[[sources]]
name = "train-rest"
transport = "rest"
url = "http://127.0.0.1:{rest}/metrics"
interval = 1.0
items = "items"
event_field = "event"
cursor_param = "after"
"""
    if gave_up is not None:
        text += f"""
[[sources]]
name = "eval-sse"
transport = "sse"
url = "http://127.0.0.1:{gave_up}/events"
retry = {{ max_attempts = 3, initial_delay = 0.3 }}
"""
    return (
        text
        + f"""
[[processors]]
type = "restart"
sources = ["train-*"]
field = "step"

[[processors]]
type = "nonfinite"
fields = ["loss"]

[[processors]]
type = "stall"
seconds = 120.0
field = "step"
events = ["metric"]

[[sinks]]
type = "qt"
plot = ["loss", "lr"]
x = "{x}"
"""
    )


Script = Callable[[Trainer, _Found], Awaitable[None]]


async def _scene(
    out: Path, script: Script, *, trainer_args: tuple[str, ...] = (), **kw: Any
) -> None:
    """A real run against a trainer of its own; ``script`` hurts it, then the panel is grabbed."""
    found = _Found()
    plugins = _plugins(found)
    ports = _free_ports(4)
    trainer = Trainer(ports[:3], *trainer_args)
    trainer.start()
    config = parse_config(_config(ports[:3], **kw), path="panel.toml", plugins=plugins)
    engine = Engine(config, plugins)

    async def drive() -> None:
        try:
            await _until(lambda: _all_connected(found), 20)
            await script(trainer, found)
            assert found.sink is not None and found.sink.panel is not None
            _save(found.sink.panel, out)
        finally:
            await trio.to_thread.run_sync(trainer.kill)
            engine.request_stop("screenshot taken")

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drive)
            await engine.run()
    finally:
        trainer.kill()


def _all_connected(found: _Found) -> bool:
    sink = found.sink
    if sink is None:
        return False
    rows = [row for name, row in sink.model.rows.items() if name.startswith("train-")]
    return bool(rows) and all(row.events_seen > 0 for row in rows)


async def _until(condition: Callable[[], bool], seconds: float, every: float = 0.1) -> None:
    """Look every ``every`` s until ``condition()`` holds (a scene takes seconds anyway)."""
    deadline = trio.current_time() + seconds
    while not condition():
        if trio.current_time() > deadline:
            raise SystemExit(f"the scene did not come about within {seconds:g} s")
        await trio.sleep(every)


# -- the scenes ------------------------------------------------------------------


async def _outage(trainer: Trainer, found: _Found) -> None:
    await trio.sleep(8.0)
    await trio.to_thread.run_sync(trainer.kill)  # the trainer dies
    await trio.sleep(7.0)  # the sources retry; eval-sse gave up long ago


async def _hang(trainer: Trainer, found: _Found) -> None:
    await trio.sleep(8.0)
    trainer.signal(signal.SIGSTOP)  # hung: the connections stay open, nothing comes
    await trio.sleep(12.0)  # past the polled source's threshold too (10 x its 1 s pages)


async def _restart(trainer: Trainer, found: _Found) -> None:
    await trio.sleep(9.0)
    await trio.to_thread.run_sync(trainer.kill)
    await trio.sleep(3.0)
    trainer.start()  # a new trainer: step 1 again

    def restarted() -> bool:
        sink = found.sink
        return sink is not None and all(
            row.run >= 2 and row.events_seen > 0 for row in sink.model.rows.values()
        )

    await _until(restarted, 20)
    await trio.sleep(5.0)
    assert found.sink is not None and found.sink.panel is not None
    found.sink.panel.views["loss"].set_x_mode("time")  # the outage, shaded
    await trio.sleep(0.5)


async def _nan(trainer: Trainer, found: _Found) -> None:
    def nan_seen() -> bool:
        sink = found.sink
        return sink is not None and all(row.alerts for row in sink.model.rows.values())

    await _until(nan_seen, 30)
    await trio.sleep(3.0)


# -- two recordings, replayed ----------------------------------------------------


async def _record(path: Path, seconds: float, *trainer_args: str) -> None:
    """Record the trainer's SSE stream at 10x the demo's pace for ``seconds``."""
    ports = _free_ports(3)
    trainer = Trainer(ports, *trainer_args)
    trainer.start()
    plugins = _plugins(_Found())
    text = (
        f'[[sources]]\nname = "train-sse"\ntransport = "sse"\n'
        f'url = "http://127.0.0.1:{ports[0]}/events"\n'
        f'[[sinks]]\ntype = "file"\npath = "{path}"\n'
    )
    try:
        await Engine(
            parse_config(text, path="record.toml", plugins=plugins), plugins, duration=seconds
        ).run()
    finally:
        trainer.kill()


async def _replay(out: Path, recordings: list[Path]) -> None:
    from mux_core._run.recordings import find_recordings
    from mux_core._run.replay import Replay

    found = _Found()
    plugins = _plugins(found)
    options = QtOptions(plot=["loss", "lr"], x="step", log_y=["loss"])
    sink = SinkConfig("qt", "qt", options, Overflow.DROP_OLDEST, 100_000, "stop", None)
    replay = Replay(
        find_recordings(recordings, missing_ok=False),
        [sink],
        plugins,
        name=" ".join(path.name for path in recordings),
        speed=math.inf,
        hold_open=True,
    )

    async def shoot() -> None:
        seen = [-1]

        def done() -> bool:  # every record is in: the count stood still for a second
            sink = found.sink
            count = -1 if sink is None else sum(r.events_seen for r in sink.model.rows.values())
            still, seen[0] = count == seen[0] and count > 1000, count
            return still

        await _until(done, 60, every=1.0)
        await trio.sleep(0.5)  # within a 1 s look: the newest frame drawn
        assert found.sink is not None and found.sink.panel is not None
        _save(found.sink.panel, out)
        replay.request_stop("screenshot taken")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(shoot)
        await replay.run()


SCENES: dict[str, Callable[[Path, Path], Awaitable[None]]] = {
    "outage": lambda out, tmp: _scene(
        out / "qt-panel-outage.png", _outage, gave_up=_free_ports(1)[0]
    ),
    "stale": lambda out, tmp: _scene(out / "qt-panel-stale.png", _hang),
    "restart": lambda out, tmp: _scene(out / "qt-panel-restart.png", _restart),
    "nan": lambda out, tmp: _scene(
        out / "qt-panel-nan.png", _nan, trainer_args=("--nan-at", "160"), x="step"
    ),
}


async def _replay_scene(out: Path, tmp: Path) -> None:
    a, b = tmp / "a.jsonl", tmp / "b.jsonl"
    await _record(a, 10.0, "--rate", "200")
    await _record(b, 10.0, "--rate", "200", "--nan-at", "1200")
    await _replay(out / "qt-panel-replay.png", [a, b])


SCENES["replay"] = _replay_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("docs/img"))
    parser.add_argument("--only", nargs="*", choices=sorted(SCENES), help="these scenes only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or SCENES:
            trio.run(SCENES[name], args.out_dir, Path(tmp))


if __name__ == "__main__":
    main()
