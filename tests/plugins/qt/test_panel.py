"""The Qt panel: badges per state, plots, rates, closing, and trio guest mode.

Runs offscreen (QT_QPA_PLATFORM=offscreen) and is skipped without PySide6.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

import mux_qt
from mux_core.records import Event, State, Status
from mux_core.sink import SinkContext, SourceInfo
from mux_qt.model import AMBER, GREEN, GREY, RED, badge_for
from mux_qt.options import INSTALL_HINT, QtOptions
from mux_qt.sink import QtSink

pytestmark = pytest.mark.qt

SOURCES = (SourceInfo("train-sse", "sse"), SourceInfo("train-ws", "ws"))


def status(
    state: State,
    *,
    attempt: int = 1,
    retry_in: float | None = None,
    detail: str = "",
    source: str = "train-sse",
    at: float | None = None,
) -> Status:
    return Status(
        source, "sse", state, attempt, retry_in, detail, time.time() if at is None else at
    )


def event(seq: int, data: Any, *, source: str = "train-sse", at: float | None = None) -> Event:
    return Event(source, "sse", "metric", str(seq), data, time.time() if at is None else at, seq)


@asynccontextmanager
async def open_sink(options: QtOptions | None = None) -> AsyncIterator[tuple[QtSink, list[str]]]:
    stops: list[str] = []
    async with trio.open_nursery() as nursery:
        context = SinkContext(
            name="qt",
            config_name="train",
            sources=SOURCES,
            request_stop=stops.append,
            start_background=lambda fn: nursery.start_soon(fn),
        )
        sink = QtSink(options or QtOptions(plot=["loss"], x="step"), context)
        await sink.open()
        try:
            yield sink, stops
        finally:
            await sink.aclose()
            nursery.cancel_scope.cancel()


# -- without Qt ------------------------------------------------------------


def test_without_pyside6_the_plugin_is_listed_unavailable_with_the_install_hint(
    tmp_path: Path,
) -> None:
    config = tmp_path / "panel.toml"
    config.write_text(
        '[[sources]]\nname = "a"\ntransport = "sse"\nurl = "http://127.0.0.1:9/e"\n'
        '[[sinks]]\ntype = "qt"\n'
    )
    code = (
        "import sys; sys.modules['PySide6'] = None; sys.modules['pyqtgraph'] = None\n"
        "from mux_core._cli import main\n"
        "main(['plugins', '--json'])\n"
        "sys.exit(main(['check', sys.argv[1]]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    qt = next(p for p in json.loads(result.stdout) if p["name"] == "qt")
    assert qt["sinks"] == [] and INSTALL_HINT in qt["error"]
    assert f"{config}:6: " in result.stderr and INSTALL_HINT in result.stderr
    assert "Traceback" not in result.stderr


def test_check_passes_when_qt_is_installed() -> None:
    QtSink.Options.check(QtOptions(plot=["loss"]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"history": 1}, "history must be at least 2"),
        ({"plot": ["loss", "loss"]}, "lists a field twice"),
        ({"plot": [""]}, "entries must be field names"),
        ({"x": ""}, "received_at"),
    ],
)
def test_bad_options_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        QtOptions(**kwargs)


def test_retry_countdown_runs_from_the_status_time() -> None:
    s = status(State.SERVER_UNAVAILABLE, attempt=3, retry_in=2.4, detail="refused", at=100.0)
    assert badge_for(s, 100.0).text.startswith("server unavailable · retry in 2.4 s · attempt 3")
    assert "retry in 1.4 s" in badge_for(s, 101.0).text
    assert "retry in 0.0 s" in badge_for(s, 105.0).text
    assert badge_for(s, 101.0).colour == AMBER


# -- the sink and its window ------------------------------------------------


async def test_window_lists_every_source_before_any_record() -> None:
    async with open_sink() as (sink, _):
        assert sink.panel is not None
        assert sink.panel.windowTitle() == "mux — train"
        assert sink.panel.isVisible()
        assert sink.panel.source_names() == ["train-sse", "train-ws"]
        assert sink.panel.cell_text("train-ws", "Transport") == "ws"
        assert sink.panel.badge("train-ws").colour == GREY
        assert sink.panel.cell_text("train-ws", "Last event") == "—"
        assert "never starts a server" in sink.panel.banner.text()


async def test_badge_text_and_colour_follow_each_state() -> None:
    script = [
        (status(State.CONNECTING, attempt=1), AMBER, ["connecting", "attempt 1"]),
        (status(State.CONNECTED), GREEN, ["connected"]),
        (
            status(State.SERVER_UNAVAILABLE, attempt=2, retry_in=2.4, detail="connection refused"),
            AMBER,
            ["server unavailable", "retry in", "attempt 2", "connection refused"],
        ),
        (
            status(State.DISCONNECTED, attempt=1, retry_in=0.5, detail="stream closed"),
            AMBER,
            ["disconnected", "retry in", "attempt 1"],
        ),
        (status(State.FAILED, detail="HTTP 404 Not Found"), RED, ["failed", "HTTP 404 Not Found"]),
        (
            status(State.MAX_RETRIES_EXCEEDED, attempt=3, detail="connection refused"),
            RED,
            ["max retries exceeded", "connection refused"],
        ),
        (status(State.ENDED), GREY, ["ended"]),
        (status(State.STOPPED), GREY, ["stopped"]),
    ]
    async with open_sink() as (sink, _):
        assert sink.panel is not None
        for record, colour, words in script:
            await sink.write([record])
            sink.panel.refresh()
            badge = sink.panel.badge("train-sse")
            assert badge.colour == colour, (record.state, badge)
            for word in words:
                assert word in badge.text, (record.state, badge)
        assert sink.panel.badge("train-ws").colour == GREY  # untouched row


async def test_events_become_bounded_curves_per_source() -> None:
    options = QtOptions(plot=["loss", "lr"], x="step", history=50)
    async with open_sink(options) as (sink, _):
        assert sink.panel is not None
        batch = [event(i + 1, {"step": i, "loss": 1.0 / (i + 1), "lr": 0.1}) for i in range(80)]
        batch.append(event(81, {"step": 80, "loss": "n/a"}))  # not numeric: no loss point
        batch.append(event(1, {"step": 0, "loss": 5.0}, source="train-ws"))
        await sink.write(batch)
        sink.panel.refresh()
        curve = sink.panel.curve("loss", "train-sse")
        assert curve is not None
        xs, ys = curve.getData()
        assert list(xs) == [float(i) for i in range(30, 80)]
        assert list(ys) == pytest.approx([1.0 / (i + 1) for i in range(30, 80)])
        lr = sink.panel.curve("lr", "train-sse")
        assert lr is not None and len(lr.getData()[0]) == 50
        other = sink.panel.curve("loss", "train-ws")
        assert other is not None
        assert list(other.getData()[1]) == [5.0]
        assert sink.panel.curve("lr", "train-ws") is None


async def test_events_per_second_and_last_event_age() -> None:
    async with open_sink() as (sink, _):
        assert sink.panel is not None
        now = time.time()
        # Under "latest" the sink sees a sample; seq says 200 events arrived.
        await sink.write([event(1, {"step": 1}, at=now - 1.0), event(200, {"step": 2}, at=now)])
        sink.panel.refresh()
        rate = float(sink.panel.cell_text("train-sse", "Events/s").replace(",", ""))
        assert 150 < rate < 250
        assert sink.panel.cell_text("train-sse", "Last event").endswith("s ago")
        assert sink.panel.cell_text("train-ws", "Events/s") == "0.0"


async def test_closing_the_window_requests_a_stop_once() -> None:
    async with open_sink() as (sink, stops):
        assert sink.panel is not None
        sink.panel.close()
        assert stops == ["window closed"]
    assert stops == ["window closed"]  # aclose() closes quietly


async def test_aclose_does_not_request_a_stop() -> None:
    async with open_sink() as (sink, stops):
        pass
    assert stops == []
    assert sink.panel is None


async def test_outside_a_qt_loop_the_sink_pumps_qt_events() -> None:
    async with open_sink() as (sink, _):
        panel = sink.panel
        assert panel is not None
        await sink.write([status(State.CONNECTED)])
        ticked = trio.Event()
        panel.timer.timeout.connect(ticked.set)
        with trio.fail_after(5):
            await ticked.wait()  # the repaint timer fired: Qt events are processed
        assert panel.badge("train-sse").colour == GREEN  # repainted without refresh()


# -- trio as a guest of Qt's event loop -------------------------------------


class FakeEngine:
    """Just enough of mux_core._run.engine.Engine for mux_main_loop."""

    def __init__(self, sink_types: list[str], *, fail: bool = False) -> None:
        self.config = SimpleNamespace(
            name="train",
            sinks=[SimpleNamespace(type=t, name=t, options=None) for t in sink_types],
            sources=[],
        )
        self.fail = fail
        self.result: str | None = None
        self.stop_reasons: list[str] = []
        self.loop_level = -1
        self.qt_timer_fired = False
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop = trio.Event()

    def request_stop(self, reason: str) -> None:
        self.stop_reasons.append(reason)
        assert self._token is not None
        self._token.run_sync_soon(self._stop.set)

    async def run(self) -> str:
        from PySide6.QtCore import QThread, QTimer

        self._token = trio.lowlevel.current_trio_token()
        self.loop_level = QThread.currentThread().loopLevel()
        with trio.fail_after(10):
            # A Qt timer can only fire while trio waits if Qt's loop runs us.
            fired = trio.Event()
            QTimer.singleShot(0, fired.set)
            await fired.wait()
            self.qt_timer_fired = True
            async with trio.open_nursery() as nursery:
                context = SinkContext(
                    name="qt",
                    config_name=self.config.name,
                    sources=SOURCES,
                    request_stop=self.request_stop,
                    start_background=lambda fn: nursery.start_soon(fn),
                )
                sink = QtSink(QtOptions(plot=["loss"]), context)
                await sink.open()
                await sink.write([event(1, {"loss": 0.5}), status(State.CONNECTED)])
                assert sink.panel is not None
                QTimer.singleShot(0, sink.panel.close)  # the user closes the window
                await self._stop.wait()
                await sink.aclose()
                nursery.cancel_scope.cancel()
        if self.fail:
            raise RuntimeError("engine broke")
        self.result = "done"
        return self.result


def test_main_loop_declines_runs_without_a_qt_sink() -> None:
    assert mux_qt.mux_main_loop(FakeEngine(["log", "file"])) is None


def test_main_loop_without_a_display_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from mux_core.errors import PluginError

    monkeypatch.setattr(sys, "platform", "linux")
    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    engine = FakeEngine(["qt"])
    with pytest.raises(PluginError, match="QT_QPA_PLATFORM=offscreen"):
        mux_qt.mux_main_loop(engine)
    assert engine.result is None


def test_main_loop_runs_the_engine_as_a_guest_of_qt() -> None:
    from PySide6.QtWidgets import QApplication

    engine = FakeEngine(["log", "qt"])
    assert mux_qt.mux_main_loop(engine) is True
    assert engine.result == "done"
    assert engine.loop_level >= 1  # engine.run ran inside app.exec()
    assert engine.qt_timer_fired
    assert engine.stop_reasons == ["window closed"]
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    assert app.quitOnLastWindowClosed()  # restored


def test_main_loop_reraises_what_the_engine_raised() -> None:
    with pytest.raises(RuntimeError, match="engine broke"):
        mux_qt.mux_main_loop(FakeEngine(["qt"], fail=True))


# -- end to end: the real engine inside Qt ----------------------------------

E2E_CONFIG = """
[[sources]]
name = "scripted"
transport = "scripted"
script = ["events:5"]

[[sinks]]
type = "qt"
plot = ["n"]
x = "n"

[[sinks]]
type = "collect"
"""


def test_real_engine_in_qt_stops_cleanly_when_the_window_closes() -> None:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    import mux_core.testing
    from mux_core._config import parse_config
    from mux_core._plugins import PluginManager
    from mux_core._run.engine import Engine
    from mux_qt.panel import QtPanel

    plugins = PluginManager()
    plugins.register(mux_core.testing, name="testing")
    plugins.register(mux_qt, name="qt")
    engine = Engine(parse_config(E2E_CONFIG, path="e2e.toml", plugins=plugins), plugins)
    seen: list[str] = []

    def close_once_live() -> None:
        # A user closes the window once it shows the source connected and plotted.
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, QtPanel) and widget.isVisible():
                seen.append(widget.windowTitle())
                if widget.curve("n", "scripted") and widget.badge("scripted").colour == GREEN:
                    widget.close()

    watcher = QTimer()
    watcher.timeout.connect(close_once_live)
    watcher.start(20)
    deadline = QTimer()
    deadline.setSingleShot(True)
    deadline.timeout.connect(lambda: engine.request_stop("test deadline"))
    deadline.start(10_000)
    try:
        assert plugins.main_loop(engine) is True
    finally:
        watcher.stop()
        deadline.stop()
    assert engine.result is not None
    assert engine.result.reason == "window closed"
    assert engine.result.final_states == {"scripted": State.STOPPED}
    assert engine.result.exit_code == 0
    assert "mux — e2e" in seen


def test_the_qt_binding_does_not_over_release_none() -> None:
    """PySide6 6.12.0 decrements None's refcount on every processEvents() under
    Python 3.11, until the interpreter aborts ("none_dealloc") after minutes of
    a live panel. pyproject pins it out; this catches a regression."""
    import sys

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])
    before = sys.getrefcount(None)
    for _ in range(2000):
        app.processEvents()
    assert sys.getrefcount(None) >= before - 100


# -- failing clearly before Qt aborts ----------------------------------------


def _refuse(*names: str) -> Any:
    return lambda soname: soname not in names


def test_missing_xcb_libraries_are_named_with_their_packages() -> None:
    from mux_qt.options import cannot_start

    problem = cannot_start(
        {"DISPLAY": ":0"}, loadable=_refuse("libxcb-cursor.so.0", "libxcb-icccm.so.4")
    )
    assert problem is not None
    assert "libxcb-cursor.so.0, libxcb-icccm.so.4" in problem
    assert "sudo apt-get install libxcb-cursor0 libxcb-icccm4 " in problem
    assert "xcb" in problem and "troubleshooting" in problem
    assert cannot_start(
        {"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}, loadable=_refuse("libxcb-cursor.so.0")
    )


@pytest.mark.parametrize(
    "environ",
    [
        {"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"},
        {"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"},
        {"DISPLAY": ":0", "QT_QPA_PLATFORM": "wayland;xcb"},
    ],
)
def test_xcb_libraries_are_not_needed_off_xcb(environ: dict[str, str]) -> None:
    from mux_qt.options import XCB_LIBRARIES, cannot_start

    assert cannot_start(environ, loadable=_refuse(*XCB_LIBRARIES)) is None


def test_gui_libraries_are_needed_on_every_platform() -> None:
    from mux_qt.options import cannot_start

    problem = cannot_start({"QT_QPA_PLATFORM": "offscreen"}, loadable=_refuse("libEGL.so.1"))
    assert problem is not None and "libEGL.so.1" in problem and "libegl1" in problem


def test_run_exits_2_naming_missing_libraries_instead_of_a_qt_abort(tmp_path: Path) -> None:
    from mux_qt.options import cannot_start

    environ = {"DISPLAY": ":99"}  # no X server is needed: mux must stop before Qt looks
    expected = cannot_start(environ)
    if expected is None or "libraries" not in expected:
        pytest.skip("this machine has every library Qt's xcb plugin loads")
    config = tmp_path / "panel.toml"
    config.write_text(
        '[[sources]]\nname = "a"\ntransport = "sse"\nurl = "http://127.0.0.1:9/e"\n'
        '[[sinks]]\ntype = "qt"\nplot = ["loss"]\n'
    )
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env.update(environ)
    result = subprocess.run(
        [sys.executable, "-m", "mux_core", "run", str(config), "--for", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert f"mux: error: {expected}" in result.stderr
    assert (
        "Traceback" not in result.stderr and "Could not load the Qt platform" not in result.stderr
    )


async def test_the_quality_column_shows_uptime_and_reconnects() -> None:
    from mux_core.records import Quality

    async with open_sink() as (sink, _):
        assert sink.panel is not None
        sink.panel.refresh()
        assert sink.panel.cell_text("train-sse", "Quality") == "—"
        quality = Quality("train-sse", "sse", 3600.0, 0.992, 1, 4.0, 10, 0, 0.25, 1.0)
        await sink.write([quality])
        sink.panel.refresh()
        shown = sink.panel.cell_text("train-sse", "Quality")
        assert shown == "up 99.2% · 1 reconnect · 0 gaps · lag p99 0.25 s"
        # Events without ids: gaps cannot be seen, and the column says so.
        unknown = Quality("train-sse", "sse", 3600.0, 1.0, 2, None, 10, None, None, 2.0)
        await sink.write([unknown])
        sink.panel.refresh()
        assert sink.panel.cell_text("train-sse", "Quality") == "up 100.0% · 2 reconnects · gaps n/a"


async def test_the_restart_button_starts_a_source_that_gave_up_once_its_server_is_up() -> None:
    """A real engine with a panel: ``gave-up`` reaches max_retries_exceeded against a
    closed port, its row shows "Restart"; a server comes up on that port, a click
    starts the source again, which connects, and the button goes away."""
    import socket

    import mux_core.testing
    from mux_core._config import parse_config
    from mux_core._plugins import PluginManager
    from mux_core._run.engine import Engine
    from mux_core.testing import CollectingSink, serve_sse

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    plugins = PluginManager()
    plugins.load_entry_points(only=set())
    plugins.register(mux_core.testing, name="testing")
    config = parse_config(
        f"""
[[sources]]
name = "gave-up"
transport = "sse"
url = "http://127.0.0.1:{port}/events"
retry = {{ max_attempts = 2, initial_delay = 0.05 }}

[[sources]]
name = "alive"
transport = "scripted"
then = "hang"

[[sinks]]
type = "qt"

[[sinks]]
type = "collect"
""",
        path="restart.toml",
        plugins=plugins,
    )
    CollectingSink.instances.clear()
    engine = Engine(config, plugins)

    def reached(state: State, after: int = 0) -> Any:
        def seen(sink: CollectingSink) -> bool:
            states = [s.state for s in sink.statuses if s.source == "gave-up"]
            return state in states[after:]

        return seen

    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.run)
        with trio.fail_after(10):
            while "collect" not in CollectingSink.instances:
                await trio.lowlevel.checkpoint()
        collect = CollectingSink.instances["collect"]
        await collect.wait_for(reached(State.MAX_RETRIES_EXCEEDED))
        qt = next(r.sink for r in engine._sinks if isinstance(r.sink, QtSink))
        panel = qt.panel
        assert panel is not None
        with trio.fail_after(10):  # the model is fed by the qt sink's own channel
            while not panel.badge("gave-up").text.startswith("max retries exceeded"):
                await trio.lowlevel.checkpoint()
                panel.refresh()
        button = panel.restart_button("gave-up")
        alive_button = panel.restart_button("alive")
        assert button is not None and not button.isHidden() and button.isEnabled()
        assert alive_button is not None and alive_button.isHidden()
        before = len(collect.statuses)

        async with serve_sse(port=port) as server:
            await server.publish({"step": 1}, id="1")
            button.click()
            assert not button.isEnabled()  # clicked once: no second restart meanwhile
            await collect.wait_for(reached(State.CONNECTED))
            with trio.fail_after(10):
                while not button.isHidden():
                    await trio.lowlevel.checkpoint()
                    panel.refresh()
            await collect.wait_for(lambda s: any(e.source == "gave-up" for e in s.events))
            assert [e.data for e in collect.events if e.source == "gave-up"][:1] == [{"step": 1}]
            assert any(s.source == "gave-up" for s in collect.statuses[before:])
            engine.request_stop("test over")
