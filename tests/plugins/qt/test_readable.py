"""What a person glancing at the panel reads (issue 22): the state's name whole,
NaN as NaN, a hung source as stale, alerts in full, a Restart button only where
it helps, one legend entry per source, marks where runs start.

Render tests of the panel's text -- labels, cells, tooltips, legend entries,
marker positions -- not pixels. Offscreen (QT_QPA_PLATFORM=offscreen).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import datetime
import html
import itertools
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

from mux_core.records import Alert, Event, Quality, Severity, State, Status
from mux_core.sink import SourceInfo
from mux_qt import panel as panel_module
from mux_qt.model import AMBER, GREEN, RED, STALE, PanelModel, badge_for
from mux_qt.panel import TIMES, QtPanel, clock_labels, ensure_application
from mux_qt.series import T, spread

pytestmark = pytest.mark.qt

SOURCES = (SourceInfo("train", "sse"), SourceInfo("eval", "ws"))


class Clock:
    """The panel's "now", moved by the test."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def event(
    seq: int,
    data: Any,
    *,
    source: str = "train",
    at: float | None = None,
    id: str | None = None,
) -> Event:
    return Event(
        source,
        "sse",
        "metric",
        str(seq) if id is None else id,
        data,
        1000.0 + seq if at is None else at,
        seq,
    )


def status(
    state: State,
    at: float,
    *,
    source: str = "train",
    detail: str = "",
    attempt: int = 1,
    retry_in: float | None = None,
) -> Status:
    return Status(source, "sse", state, attempt, retry_in, detail, at)


def alert(
    rule: str, seq: int | None, at: float, *, source: str = "train", message: str = ""
) -> Alert:
    return Alert(source, "sse", rule, Severity.WARNING, message or f"{rule} at {seq}", seq, at)


Panel = tuple[QtPanel, PanelModel, Clock, list[str]]


def make_panel(
    *,
    sources: tuple[SourceInfo, ...] = SOURCES,
    fields: tuple[str, ...] = ("loss",),
    x: str = "step",
    time_field: str | None = None,
    width: int = 1100,
    recordings: tuple[str, ...] = (),
) -> Panel:
    ensure_application()
    model = PanelModel(sources, fields=fields, x=x, time_field=time_field)
    clock = Clock()
    restarted: list[str] = []
    panel = QtPanel(
        model,
        title="test",
        on_close=lambda: None,
        clock=clock,
        on_restart=restarted.append,
        x_mode="step" if recordings else None,
        recordings=recordings,
    )
    panel.timer.stop()  # the test draws, with its own clock
    panel.resize(width, 760)
    panel.show()
    return panel, model, clock, restarted


@pytest.fixture
def made() -> Iterator[list[QtPanel]]:
    panels: list[QtPanel] = []
    yield panels
    for panel in panels:
        panel.close_quietly()


def draw(panel: QtPanel) -> None:
    from PySide6.QtWidgets import QApplication

    panel.refresh()
    QApplication.processEvents()  # lay out: cells, plots and labels get their sizes
    panel.refresh()
    QApplication.processEvents()


# -- 1. the state first ---------------------------------------------------------


LONG_DETAIL = (
    "connection refused: the trainer at http://127.0.0.1:8888/events did not answer; "
    "5 attempts in a row failed; check that it runs"
)


@pytest.mark.parametrize("width", [1300, 700])
def test_a_long_outage_detail_never_hides_the_state_name(made: list[QtPanel], width: int) -> None:
    panel, model, clock, _ = make_panel(width=width)
    made.append(panel)
    model.apply(
        [
            status(State.SERVER_UNAVAILABLE, 1000.0, detail=LONG_DETAIL, attempt=5, retry_in=8.6),
            status(State.MAX_RETRIES_EXCEEDED, 1000.0, source="eval", detail=LONG_DETAIL),
        ]
    )
    draw(panel)
    for source, name in (("train", "server unavailable"), ("eval", "max retries exceeded")):
        widget = panel.badge_widget(source)
        assert widget.name.text() == name
        assert widget.name.width() >= widget.name.sizeHint().width()  # drawn whole
        cell = panel.table.visualRect(
            panel.table.model().index(panel._row_of[source], panel._column["State"])
        )
        assert cell.width() >= widget.name_width()  # and the cell is that wide
        shown = widget.shown_text()
        if width > 1000:  # room for some of the detail: elided
            assert shown.startswith(f"{name} · ")
            assert shown.endswith("…") and len(shown) < len(widget.badge.text)
        else:  # hardly any: the name whole, the detail elided or left out
            assert shown == name or (shown.startswith(f"{name} · ") and shown.endswith("…"))
        tip = html.unescape(widget.toolTip())
        assert LONG_DETAIL in tip and name in tip  # the whole text in the tooltip
    train = panel.badge_widget("train").badge
    assert train.text.startswith("server unavailable · retry in 8.6 s · attempt 5 · connection")
    clock.now = 1003.0
    draw(panel)
    assert panel.badge("train").detail.startswith("retry in 5.6 s")  # the countdown runs


def test_the_badge_name_and_detail_as_the_model_says() -> None:
    s = status(State.SERVER_UNAVAILABLE, 100.0, detail="refused", attempt=3, retry_in=2.4)
    assert badge_for(s, 101.0) == (
        "server unavailable",
        "retry in 1.4 s · attempt 3 · refused",
        AMBER,
    )
    failed = badge_for(status(State.FAILED, 100.0, detail="HTTP 404\x1b[2J"), 100.0)
    assert failed == ("failed", "HTTP 404\\x1b[2J", RED)  # control characters escaped
    assert badge_for(None, 0.0).name == "waiting"


HOSTILE = "<b>big</b><img src='/etc/passwd'> & <a href='x'>click</a>"


def test_server_text_is_plain_text_everywhere(made: list[QtPanel]) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QLabel

    hostile_source = SourceInfo("<b>bold</b>", "sse")
    panel, model, _, _ = make_panel(sources=(*SOURCES, hostile_source))
    made.append(panel)
    model.apply(
        [
            status(State.FAILED, 1000.0, detail=HOSTILE),
            event(1, {"step": 1, "loss": 1.0}),
            event(2, {"step": 2, "loss": 1.0}, source="<b>bold</b>"),
            alert("nonfinite", 1, 1001.0, message=HOSTILE),
            alert("{0}<b>{value}", 1, 1001.0, message=HOSTILE),
        ]
    )
    draw(panel)
    shown = [label.toPlainText() for label in panel.views["loss"].label_items()]
    assert sorted(shown) == ["nonfinite", "{0}<b>{value}"]  # as text, braces too
    for label in panel.findChildren(QLabel):
        assert label.textFormat() == Qt.TextFormat.PlainText, label.text()
    badge = panel.badge_widget("train")
    assert HOSTILE in badge.toolTip().replace("&lt;", "<").replace("&gt;", ">").replace(
        "&#x27;", "'"
    ).replace("&amp;", "&")
    assert "<img" not in badge.toolTip() and "<b>" not in badge.toolTip()  # escaped HTML
    cell = panel.table.item(0, panel._column["Alerts"])
    assert cell is not None
    tip = cell.toolTip()
    assert "<img" not in tip and "&lt;img" in tip
    assert HOSTILE in panel.cell_tooltip("train", "Alerts")
    assert HOSTILE in panel.cell_text("train", "Alerts")  # a table cell is plain text
    view = panel.views["loss"]
    assert "<b>bold</b>" in view.legend_entries()
    label = next(label for _, label in view.legend.items if "bold" in label.text)
    assert label.text == "&lt;b&gt;bold&lt;/b&gt;"  # the legend's label is HTML: escaped
    for _x, _text, tip_text in view.labels():
        assert HOSTILE in tip_text


# -- 2. NaN shown -------------------------------------------------------------------


def test_nan_is_shown_as_nan_never_the_last_finite_value(made: list[QtPanel]) -> None:
    panel, model, _, _ = make_panel(fields=("loss", "lr"))
    made.append(panel)
    model.apply([event(i, {"step": i, "loss": 9.407, "lr": 0.1}) for i in range(1, 11)])
    draw(panel)
    assert panel.cell_text("train", "loss") == "9.407"
    assert panel.cell_colour("train", "loss") is None
    model.apply([event(i, {"step": i, "loss": math.nan, "lr": 0.1}) for i in range(11, 16)])
    model.apply([event(16, {"step": 16, "eval_loss": 3.0})])  # no loss in it: loss stays NaN
    draw(panel)
    assert panel.cell_text("train", "loss") == "NaN"
    assert panel.cell_colour("train", "loss") == RED
    assert panel.cell_text("train", "lr") == "0.1"
    view = panel.views["loss"]
    # marked at the last finite value, from the first NaN step to the last
    ((xs, ys, tip),) = view.nonfinite_marks()
    assert xs == [11.0, 15.0] and ys == [9.407, 9.407]
    assert "train: loss NaN" in tip and "5 values" in tip
    assert view.show_readout(13.2) == "step 13: train NaN"
    item = panel.curve("loss", "train")
    assert item is not None
    drawn = item.getData()[1].tolist()
    assert drawn[:10] == [9.407] * 10 and all(math.isnan(v) for v in drawn[10:])
    model.apply([event(17, {"step": 17, "loss": math.inf, "lr": 0.1})])
    draw(panel)
    assert panel.cell_text("train", "loss") == "Inf"
    ((xs, _, tip),) = view.nonfinite_marks()  # no finite loss between: the same stretch
    assert xs == [11.0, 17.0] and "loss NaN/Inf" in tip
    model.apply([event(18, {"step": 18, "loss": 2.5, "lr": 0.1})])
    draw(panel)
    assert panel.cell_text("train", "loss") == "2.5" and panel.cell_colour("train", "loss") is None
    model.apply([event(19, {"step": 19, "loss": -math.inf, "lr": 0.1})])
    draw(panel)
    marks = sorted(view.nonfinite_marks())
    assert [(xs, ys) for xs, ys, _ in marks] == [([11.0, 17.0], [9.407] * 2), ([19.0], [2.5])]
    assert "loss -Inf" in marks[1][2]


def test_nan_before_any_finite_value_is_marked_at_the_axis(made: list[QtPanel]) -> None:
    panel, model, _, _ = make_panel()
    made.append(panel)
    model.apply([event(1, {"step": 1, "loss": math.nan})])
    model.apply([event(i, {"step": i, "loss": 1.0 + i}, source="eval") for i in range(1, 5)])
    draw(panel)
    ((xs, ys, _),) = panel.views["loss"].nonfinite_marks()
    low, high = panel.views["loss"].plot.vb.viewRange()[1]
    assert xs == [1.0] and low < ys[0] < low + 0.05 * (high - low)  # at the bottom, seen


# -- 3. stale ----------------------------------------------------------------------


def _feed_every(model: PanelModel, start: float, end: float, gap: float, seq: int = 1) -> int:
    at = start
    while at <= end + 1e-9:
        model.apply([event(seq, {"step": seq, "loss": 1.0}, at=at)])
        seq += 1
        at += gap
    return seq


def test_a_hung_source_is_stale_within_a_frame_and_returns_by_itself(
    made: list[QtPanel],
) -> None:
    panel, model, clock, _ = make_panel()
    made.append(panel)
    model.apply([status(State.CONNECTED, 999.0)])
    seq = _feed_every(model, 1000.0, 1010.0, 0.1)  # 10 events/s: threshold is the 5 s floor
    assert model.rows["train"].watch.threshold() == 5.0
    clock.now = 1014.9
    draw(panel)
    assert panel.badge("train") == ("connected", "", GREEN)
    clock.now = 1015.2  # just past the threshold: the next frame shows it
    draw(panel)
    badge = panel.badge("train")
    assert badge.name == "stale · 5.2 s" and badge.colour == STALE
    assert badge.detail == "connected, no event for 5.2 s (stale after 5 s)"
    assert panel.cell_colour("train", "Last event") == STALE
    clock.now = 1028.0
    draw(panel)
    assert panel.badge("train").name == "stale · 18 s"  # as the SIGSTOPped trainer read
    model.apply([event(seq, {"step": seq, "loss": 1.0}, at=1028.0)])  # it wakes up
    draw(panel)
    assert panel.badge("train") == ("connected", "", GREEN)
    assert panel.cell_colour("train", "Last event") is None


def test_stale_after_from_the_config_and_only_while_connected(made: list[QtPanel]) -> None:
    sources = (SourceInfo("train", "sse", stale_after=2.0), SourceInfo("eval", "ws"))
    panel, model, clock, _ = make_panel(sources=sources)
    made.append(panel)
    model.apply([status(State.CONNECTED, 999.0), status(State.CONNECTED, 999.0, source="eval")])
    _feed_every(model, 1000.0, 1001.0, 0.5)
    model.apply([event(1, {"step": 1, "loss": 1.0}, source="eval", at=1001.0)])
    clock.now = 1003.5
    draw(panel)
    assert panel.badge("train").name == "stale · 2.5 s"  # its own stale_after: 2 s
    assert panel.badge("eval").name == "connected"  # the 5 s floor
    model.apply([status(State.DISCONNECTED, 1003.6, retry_in=1.0)])
    draw(panel)
    assert panel.badge("train").name == "disconnected"  # not connected: not stale
    # Reconnected after the outage: quiet counts from the connection, not the old event.
    model.apply([status(State.CONNECTED, 1010.0)])
    clock.now = 1011.0
    draw(panel)
    assert panel.badge("train").name == "connected"


def test_the_redraw_timer_shows_stale_without_a_record() -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    panel, model, clock, _ = make_panel()
    try:
        model.apply([status(State.CONNECTED, 999.0)])
        _feed_every(model, 1000.0, 1001.0, 0.1)
        draw(panel)
        assert panel.badge("train").name == "connected"
        clock.now = 1007.0  # silence: no record, no refresh() of the test's own
        loop = QEventLoop()
        panel.timer.timeout.connect(loop.quit)
        QTimer.singleShot(5000, loop.quit)  # the deadline
        panel.timer.start()
        loop.exec()  # until the panel's own timer has redrawn once
        assert panel.badge("train").name == "stale · 6.0 s"
    finally:
        panel.close_quietly()


# -- 4. alerts readable -------------------------------------------------------------


def test_the_alert_cell_has_every_alert_in_full_in_its_tooltip(made: list[QtPanel]) -> None:
    panel, model, _, _ = make_panel()
    made.append(panel)
    long = "loss is NaN at step 4100 (the last finite loss was 9.407 at step 4099); " * 2
    model.apply([event(1, {"step": 1, "loss": 1.0})])
    model.apply([alert("nonfinite", 1, 1001.5, message=long.strip())])
    model.apply([alert("stall", None, 1130.0, message="no new step for 120 s")])
    draw(panel)
    assert panel.cell_text("train", "Alerts") == "2 · warning stall: no new step for 120 s"
    tip = panel.cell_tooltip("train", "Alerts")
    when = datetime.datetime.fromtimestamp(1001.5).strftime("%H:%M:%S")
    assert f"{when} warning nonfinite: {long.strip()}" in tip.splitlines()
    assert tip.splitlines()[-1].endswith("warning stall: no new step for 120 s")


def _restart_everywhere(model: PanelModel, sources: tuple[str, ...], steps: int) -> None:
    """Each source runs to ``steps``, then its trainer starts over at step 1."""
    for source in sources:
        model.apply(
            [event(i, {"step": i, "loss": 2.0}, source=source) for i in range(1, steps + 1)]
        )
    _start_over(model, sources, steps)


def _start_over(model: PanelModel, sources: tuple[str, ...], steps: int) -> None:
    """The trainers start over at step 1 after ``steps``; the ``restart`` processor's
    alert comes just before the first event of the new run."""
    for source in sources:
        first = steps + 1
        model.apply(
            [
                alert(
                    "restart",
                    first,
                    1000.0 + first,
                    source=source,
                    message=f"the stream started over: step 1 after {steps}",
                ),
                event(first, {"step": 1, "loss": 8.0}, source=source, id="1"),
                *(
                    event(first + i, {"step": 1 + i, "loss": 8.0}, source=source, id=str(1 + i))
                    for i in range(1, 20)
                ),
            ]
        )


def test_restart_marks_merge_per_x_at_the_new_runs_first_step(made: list[QtPanel]) -> None:
    panel, model, _, _ = make_panel()
    made.append(panel)
    _restart_everywhere(model, ("train", "eval"), 100)
    draw(panel)
    view = panel.views["loss"]
    ((x, text, tip),) = view.labels()
    assert x == 1.0  # where the new run starts, not the old run's last step (100)
    assert text == f"restart {TIMES}2"
    assert tip.splitlines() == [
        "train: run 2 starts -- the stream started over: step 1 after 100",
        "eval: run 2 starts -- the stream started over: step 1 after 100",
    ]
    for row in model.rows.values():
        assert row.run == 2
        ((alert_mark),) = row.alerts
        assert (alert_mark.step, alert_mark.at) == (1.0, 1101.0)
    view.set_x_mode("time")
    draw(panel)
    ((x, text, _),) = view.labels()
    assert x == 1101.0 and text == f"restart {TIMES}2"  # by time: the new run's first point


def test_marker_labels_never_overlap(made: list[QtPanel]) -> None:
    panel, model, _, _ = make_panel()
    made.append(panel)
    _restart_everywhere(model, ("train", "eval"), 100)
    # more alerts at and right next to the restart: each needs a lane of its own
    model.apply(
        [
            event(200, {"step": 21, "loss": 8.0}, id="21"),
            alert("nonfinite", None, 1300.0),
            alert("diverge", None, 1300.5),
        ]
    )
    model.apply([alert("stall", None, 1301.0, source="eval")])
    draw(panel)
    view = panel.views["loss"]
    texts = [text for _, text, _ in view.labels()]
    assert sorted(texts) == sorted([f"restart {TIMES}2", "nonfinite", "diverge", "stall"])
    shown = [label for label in view.label_items() if label.isVisible()]
    assert len(shown) == 4
    rects = [label.sceneBoundingRect() for label in shown]
    for index, rect in enumerate(rects):
        assert rect.width() > 0
        for other in rects[index + 1 :]:
            assert not rect.intersects(other), (rect, other)


# -- 5. the Restart button ------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "shown"),
    [
        (State.CONNECTING, False),
        (State.CONNECTED, False),
        (State.SERVER_UNAVAILABLE, False),
        (State.DISCONNECTED, False),
        (State.STOPPED, False),
        (State.MAX_RETRIES_EXCEEDED, True),
        (State.FAILED, True),
        (State.ENDED, True),
    ],
)
def test_the_restart_button_only_where_a_source_gave_up(
    made: list[QtPanel], state: State, shown: bool
) -> None:
    panel, model, _, restarted = make_panel()
    made.append(panel)
    model.apply([status(state, 1000.0), status(State.CONNECTED, 1000.0, source="eval")])
    draw(panel)
    # The table shows every cell widget again when it lays out (a resize, a new row,
    # a column change): a hidden button must stay hidden through that.
    panel.resize(1200, 800)
    panel.table.horizontalHeader().resizeSection(panel._column["Alerts"], 300)
    model.apply([event(1, {"step": 1, "loss": 1.0}, source="late")])
    draw(panel)
    button = panel.restart_button("train")
    assert button is not None
    assert button.isVisibleTo(panel) is shown
    assert button.isEnabled()
    live = panel.restart_button("eval")
    assert live is not None and not live.isVisibleTo(panel)
    live.click()  # even if it were clicked: a live source is not restarted
    panel._restart("eval")
    assert restarted == [] and live.isEnabled()


def test_a_clicked_button_waits_for_the_next_state_and_never_stays_disabled(
    made: list[QtPanel], monkeypatch: pytest.MonkeyPatch
) -> None:
    panel, model, _, restarted = make_panel()
    made.append(panel)
    model.apply([status(State.MAX_RETRIES_EXCEEDED, 1000.0, detail="refused")])
    draw(panel)
    button = panel.restart_button("train")
    assert button is not None and button.isVisibleTo(panel)
    button.click()
    button.click()  # a second click meanwhile: not asked twice
    assert restarted == ["train"] and not button.isEnabled()
    draw(panel)
    assert not button.isEnabled()
    model.apply([status(State.CONNECTING, 1001.0)])  # it starts again
    draw(panel)
    assert button.isEnabled() and not button.isVisibleTo(panel)
    model.apply([status(State.MAX_RETRIES_EXCEEDED, 1002.0)])
    draw(panel)
    button.click()
    assert restarted == ["train", "train"]
    # No new state comes (the run could not restart it): the button comes back.
    real = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real() + panel_module.RESTART_PATIENCE + 1)
    draw(panel)
    assert button.isEnabled() and button.isVisibleTo(panel)


def test_after_a_restart_quality_counts_from_the_new_session(made: list[QtPanel]) -> None:
    panel, model, _, _ = make_panel()
    made.append(panel)
    old = Quality("train", "sse", 60.0, 0.35, 4, 12.0, 100, 0, None, 1000.0)
    model.apply([old, status(State.MAX_RETRIES_EXCEEDED, 1000.0)])
    draw(panel)
    assert panel.cell_text("train", "Quality").startswith("up 35.0%")
    model.apply([status(State.CONNECTING, 1001.0), status(State.CONNECTED, 1001.1)])
    draw(panel)
    assert panel.cell_text("train", "Quality") == "—"  # not the old session's figure
    new = Quality("train", "sse", 5.0, 1.0, 0, None, 50, 0, None, 1006.0)
    model.apply([new])
    draw(panel)
    assert panel.cell_text("train", "Quality").startswith("up 100.0% · 0 reconnects")
    assert model.rows["train"].restarts == 1


async def test_restarting_a_live_source_leaves_its_quality_alone() -> None:
    """The issue's click on a live row: the run must not start a new quality tracker
    for a live source (its uptime then read 0.0% while events arrived)."""
    import trio

    import mux_core.testing
    from mux_core._config import parse_config
    from mux_core._plugins import PluginManager
    from mux_core._run.engine import Engine
    from mux_core.testing import CollectingSink

    plugins = PluginManager()
    plugins.load_entry_points(only=set())
    plugins.register(mux_core.testing, name="testing")
    config = parse_config(
        'quality_interval = 0.2\n[[sources]]\nname = "live"\ntransport = "scripted"\n'
        'script = ["events:3"]\nthen = "hang"\n[[sinks]]\ntype = "collect"\n',
        path="live.toml",
        plugins=plugins,
    )
    CollectingSink.instances.clear()
    engine = Engine(config, plugins)

    def qualities(sink: CollectingSink) -> list[Quality]:
        return [r for r in sink.records if type(r) is Quality]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.run)
        with trio.fail_after(10):
            while "collect" not in CollectingSink.instances:
                await trio.lowlevel.checkpoint()
        collect = CollectingSink.instances["collect"]
        await collect.wait_for(lambda s: any(q.uptime > 0.5 for q in qualities(s)))
        engine.restart_source("live")  # what a click on a live row asked
        seen = len(qualities(collect))
        await collect.wait_for(lambda s: len(qualities(s)) >= seen + 3)
        before, *after = qualities(collect)[seen - 1 :]
        # the same tracker: its window goes on growing, its uptime stays high
        assert all(q.uptime > 0.5 and q.window > before.window for q in after), after
        assert engine.source_states() == {"live": State.CONNECTED}
        engine.request_stop("test over")


# -- 6. plots ---------------------------------------------------------------------------


def test_one_legend_entry_per_source_and_older_runs_faded_for_every_source(
    made: list[QtPanel],
) -> None:
    panel, model, _, _ = make_panel()
    made.append(panel)
    model.apply([event(i, {"step": i, "loss": 2.0}) for i in range(1, 51)])
    model.apply([event(i, {"step": i, "loss": 3.0}, source="eval") for i in range(1, 51)])
    draw(panel)  # run 1 drawn as the newest first, then the restarts
    _start_over(model, ("train", "eval"), 50)
    draw(panel)
    view = panel.views["loss"]
    assert view.legend_entries() == ["train", "eval"]  # not one per run
    for source in ("train", "eval"):
        old, new = view.items(source)
        old_pen, new_pen = old.opts["pen"], new.opts["pen"]
        assert old_pen.color().alpha() < new_pen.color().alpha(), source
        assert old_pen.color().rgb() == new_pen.color().rgb()  # same colour, shaded
    assert view.legend.opts["brush"].color().alpha() > 200  # a background under it
    legend, data = view.legend.sceneBoundingRect(), view.plot.vb.sceneBoundingRect()
    assert legend.width() > 0 and legend.left() >= data.right() - 1  # beside the data


def test_time_ticks_read_as_clock_times() -> None:
    at = datetime.datetime(2026, 12, 7, 13, 2, 48).timestamp()
    assert clock_labels([at, at + 0.5], 0.5) == ["13:02:48.0", "13:02:48.5"]
    assert clock_labels([at + 0.25], 0.05) == ["13:02:48.25"]
    assert clock_labels([at, at + 10], 10) == ["13:02:48", "13:02:58"]
    assert clock_labels([at], 300) == ["13:02"]
    assert clock_labels([at + 0.96], 0.5) == ["13:02:49.0"]  # rounded, never 48.9 or 48.10


def test_a_short_time_range_is_labelled_with_clock_times(made: list[QtPanel]) -> None:
    panel, model, _, _ = make_panel(x="received_at")
    made.append(panel)
    start = datetime.datetime(2026, 12, 7, 13, 2, 48).timestamp()
    model.apply([event(i, {"step": i, "loss": 1.0}, at=start + i * 0.05) for i in range(1, 20)])
    draw(panel)
    axis = panel.views["loss"].plot.getAxis("bottom")
    (x0, x1), _ = panel.views["loss"].plot.vb.viewRange()
    ticks = axis.tickValues(x0, x1, axis.width() or 800)
    labels = [text for spacing, values in ticks for text in axis.tickStrings(values, 1, spacing)]
    assert labels and all(text.startswith("13:02:4") for text in labels), labels


def test_a_rest_page_is_spread_not_a_staircase() -> None:
    model = PanelModel(SOURCES, fields=("loss",), x="received_at")
    for page in range(3):  # pages of ten events, each received at once, a second apart
        at = 1000.0 + page
        model.apply([event(page * 10 + i, {"loss": float(i)}, at=at) for i in range(1, 11)])
    curve = model.curve("loss", "train")
    assert curve is not None
    t = curve.segments[-1].column(T).tolist()
    assert t[:10] == [1000.0] * 10  # the first page: nothing before it to spread over
    assert t[10:20] == pytest.approx([1000.1 * 1 + 0.1 * i for i in range(10)])
    assert t[19] == 1001.0 and t[29] == 1002.0  # the last of each page when it came
    assert all(b > a for a, b in itertools.pairwise(t[9:]))
    assert spread(np.array([5.0, 7.0, 7.0]), 4.0).tolist() == [5.0, 6.0, 7.0]


def test_x_by_a_payload_time_draws_a_backlog_when_it_happened(made: list[QtPanel]) -> None:
    panel, model, _, _ = make_panel(x="ts", time_field="ts")
    made.append(panel)
    iso = datetime.datetime.fromtimestamp(1000.0).isoformat()
    model.apply([event(1, {"step": 1, "loss": 1.0, "ts": iso}, at=1000.2)])
    model.apply(
        [event(i, {"step": i, "loss": 1.0, "ts": 1000.0 + i}, at=1000.2 + i) for i in range(2, 6)]
    )
    model.apply([status(State.DISCONNECTED, 1006.0), status(State.CONNECTED, 1030.0)])
    # the backlog of the outage, received in one burst
    model.apply(
        [event(i, {"step": i, "loss": 2.0, "ts": 1000.0 + i}, at=1030.5) for i in range(6, 31)]
    )
    draw(panel)
    view = panel.views["loss"]
    assert view.x_mode == "ptime" and view.x_choice.currentText() == "by ts (payload time)"
    item = panel.curve("loss", "train")
    assert item is not None
    xs = [x for x in item.getData()[0].tolist()]
    assert xs[0] == pytest.approx(1000.0)  # ISO 8601 text too
    assert xs[-25:] == [1000.0 + i for i in range(6, 31)]  # when they happened, not at 1030.5
    view.set_x_mode("time")
    draw(panel)
    xs = item.getData()[0].tolist()
    assert xs[-1] == 1030.5 and xs[-25] > 1005.2  # by receive time: the burst, spread


def test_two_recordings_overlaid_one_legend_entry_per_run_aligned_by_step(
    made: list[QtPanel],
) -> None:
    sources = (
        SourceInfo("train@a", "sse", recording="a"),
        SourceInfo("train@b", "sse", recording="b"),
    )
    panel, model, _, _ = make_panel(sources=sources, x="received_at", recordings=("a", "b"))
    made.append(panel)
    model.apply(
        [event(i, {"step": i, "loss": 2.0}, source="train@a", at=10.0 + i) for i in range(1, 31)]
    )
    model.apply(
        [event(i, {"step": i, "loss": 1.5}, source="train@b", at=9000.0 + i) for i in range(1, 31)]
    )
    draw(panel)
    view = panel.views["loss"]
    assert view.x_mode == "step"  # runs of different days line up by step
    assert view.legend_entries() == ["train@a", "train@b"]
    a, b = panel.curve("loss", "train@a"), panel.curve("loss", "train@b")
    assert a is not None and b is not None
    assert a.getData()[0].tolist() == b.getData()[0].tolist() == [float(i) for i in range(1, 31)]
    from PySide6.QtCore import Qt

    assert a.opts["pen"].color() != b.opts["pen"].color()  # a colour per run
    assert a.opts["pen"].style() == Qt.PenStyle.SolidLine
    assert b.opts["pen"].style() == Qt.PenStyle.DashLine  # told apart by the dash


# -- replays ------------------------------------------------------------------------


def test_the_replay_bar_pauses_and_changes_the_pace(made: list[QtPanel]) -> None:
    from PySide6.QtWidgets import QPushButton

    from mux_core.sink import ReplayControl

    ensure_application()
    control = ReplayControl(1.0)
    panel = QtPanel(
        PanelModel(SOURCES, fields=("loss",)),
        title="replay",
        on_close=lambda: None,
        replay=control,
    )
    panel.timer.stop()
    made.append(panel)
    panel.refresh()
    assert panel.pace.text() == f"1{TIMES} the recorded pace"
    buttons = {b.text(): b for b in panel.findChildren(QPushButton)}
    buttons["Faster"].click()
    buttons["Faster"].click()
    panel.refresh()
    assert control.speed == 4.0 and panel.pace.text() == f"4{TIMES} the recorded pace"
    buttons["Pause"].click()
    panel.refresh()
    assert control.paused and panel.pace.text() == f"paused (4{TIMES} the recorded pace)"
    assert panel.pause_button.text() == "Resume"
    panel.pause_button.click()
    buttons["Slower"].click()
    panel.refresh()
    assert not control.paused and control.speed == 2.0
    assert panel.pause_button.text() == "Pause"


async def test_two_recordings_days_apart_each_read_on_their_own_time() -> None:
    import trio

    from mux_core.sink import SinkContext
    from mux_qt.options import QtOptions
    from mux_qt.sink import QtSink

    now = time.time()
    days = {"a": now - 3 * 86_400, "b": now - 86_400}  # when each recording was made
    sources = tuple(SourceInfo(f"train@{label}", "sse", recording=label) for label in days)
    async with trio.open_nursery() as nursery:
        context = SinkContext(
            name="qt",
            config_name="a.jsonl b.jsonl",
            sources=sources,
            request_stop=lambda reason: None,
            start_background=lambda fn: nursery.start_soon(fn),
            recordings=("a", "b"),
        )
        sink = QtSink(QtOptions(plot=["loss"]), context)
        assert sink.default_replay_speed == 1.0  # a replay into the panel plays as recorded
        await sink.open()
        panel = sink.panel
        assert panel is not None
        try:
            for step in range(1, 21):  # interleaved, as the replay feeds them
                for label, start in days.items():
                    source = f"train@{label}"
                    at = start + step * 0.5
                    await sink.write(
                        [
                            status(State.CONNECTED, at, source=source),
                            event(step, {"step": step, "loss": 1.0}, source=source, at=at),
                        ]
                    )
            panel.refresh()
            for label in days:
                age = panel.cell_text(f"train@{label}", "Last event")
                assert age.endswith(" s ago") and float(age.split()[0]) < 2.0, (label, age)
                assert panel.badge(f"train@{label}").name == "connected"  # not stale
            assert panel.views["loss"].x_mode == "step"
        finally:
            await sink.aclose()
            nursery.cancel_scope.cancel()


# -- examples/panel.toml ------------------------------------------------------------


async def test_the_example_panel_config_watches_the_demo_trainer(tmp_path: Any) -> None:
    """examples/panel.toml against the demo trainer (on free ports): every source
    connects and is plotted, and the file sink records."""
    from pathlib import Path

    import trio

    import mux_file
    import mux_proc
    import mux_qt
    import mux_rest
    import mux_sse
    import mux_ws
    from mux_core._config import parse_config
    from mux_core._plugins import PluginManager
    from mux_core._run.engine import Engine
    from mux_demo.server import DemoOptions, serve_demo
    from mux_qt.sink import QtSink

    text = (Path(__file__).parents[3] / "examples" / "panel.toml").read_text()
    recording = tmp_path / "panel.jsonl"
    plugins = PluginManager()
    for module in (mux_sse, mux_ws, mux_rest, mux_file, mux_proc, mux_qt):
        plugins.register(module)
    async with trio.open_nursery() as nursery:
        demo = DemoOptions(sse_port=0, ws_port=0, rest_port=0, rate=20.0, seed=1)
        endpoints = await nursery.start(serve_demo, demo)
        for default, port in (
            (8888, endpoints.sse_port),
            (8889, endpoints.ws_port),
            (8890, endpoints.rest_port),
        ):
            text = text.replace(f"127.0.0.1:{default}/", f"127.0.0.1:{port}/")
        text = text.replace('"runs/panel.jsonl"', f'"{recording}"')
        config = parse_config(text, path="panel.toml", plugins=plugins)
        engine = Engine(config, plugins)
        nursery.start_soon(engine.run)
        with trio.fail_after(20):
            while True:
                sink = next((r.sink for r in engine._sinks if isinstance(r.sink, QtSink)), None)
                panel = None if sink is None else sink.panel
                if panel is not None and sink is not None:
                    panel.refresh()
                    rows = sink.model.rows
                    if len(rows) == 3 and all(
                        panel.badge(name).name == "connected"
                        and sink.model.curve("loss", name) is not None
                        and panel.cell_text(name, "loss") not in ("—", "NaN")
                        for name in rows
                    ):
                        break
                await trio.sleep(0.05)
        assert panel is not None
        assert panel.views["loss"].legend_entries() == ["train-sse", "train-ws", "train-rest"]
        assert panel.views["loss"].log_y.isChecked()
        engine.request_stop("test over")
        nursery.cancel_scope.deadline = trio.current_time() + 10
    assert engine.result is not None and engine.result.exit_code == 0
    assert recording.stat().st_size > 0


def test_an_alert_after_a_whole_page_is_placed_at_its_own_event() -> None:
    """A REST page comes as one batch; the nonfinite processor's alert for its
    third event comes after the page's last one: the mark goes to the third."""
    model = PanelModel(SOURCES, fields=("loss",), x="step")
    page = [
        event(i, {"step": i, "loss": 1.0 if i < 163 else math.nan}, at=1010.0)
        for i in range(160, 166)
    ]
    model.apply([*page, alert("nonfinite", 163, 1010.1, message="loss is NaN at step 163")])
    (mark,) = model.rows["train"].alerts
    assert (mark.step, mark.at, mark.placed) == (163.0, 1010.0, True)


def test_a_trainer_restarted_after_an_outage_shades_the_outage_by_time(
    made: list[QtPanel],
) -> None:
    """Killed, down, a new trainer at step 1 (the restart alert just before its first
    event): by time the outage is shaded and run 2 marked where it starts; by step
    only the restart is marked (the outage has no place on a step axis starting over)."""
    import pyqtgraph as pg

    panel, model, _, _ = make_panel(x="received_at")
    made.append(panel)
    model.apply([status(State.CONNECTED, 1000.0)])
    model.apply([event(i, {"step": i, "loss": 2.0}) for i in range(1, 21)])
    model.apply([status(State.SERVER_UNAVAILABLE, 1021.0), status(State.CONNECTED, 1030.0)])
    model.apply(
        [
            alert("restart", 21, 1030.5, message="the stream started over: step 1 after 20"),
            *(
                event(20 + i, {"step": i, "loss": 8.0}, id=str(i), at=1030.0 + i)
                for i in range(1, 11)
            ),
        ]
    )
    draw(panel)
    view = panel.views["loss"]
    regions = [m for m in view.marks() if isinstance(m, pg.LinearRegionItem)]
    assert [tuple(r.getRegion()) for r in regions] == [(1020.0, 1031.0)]
    ((x, text, _),) = view.labels()
    assert (x, text) == (1031.0, "restart")
    view.set_x_mode("step")
    draw(panel)
    assert [m for m in view.marks() if not isinstance(m, pg.InfiniteLine)] == []
    assert [(x, text) for x, text, _ in view.labels()] == [(1.0, "restart")]
    assert len([m for m in view.marks() if isinstance(m, pg.InfiniteLine)]) == 1


async def test_a_paused_replay_stands_still_no_age_grows_no_source_goes_stale() -> None:
    import trio

    from mux_core.sink import ReplayControl, SinkContext
    from mux_qt.options import QtOptions
    from mux_qt.sink import QtSink

    wall = [5000.0]
    control = ReplayControl(1.0)
    async with trio.open_nursery() as nursery:
        context = SinkContext(
            name="qt",
            config_name="run.jsonl",
            sources=SOURCES,
            request_stop=lambda reason: None,
            start_background=lambda fn: nursery.start_soon(fn),
            replay=control,
        )
        sink = QtSink(QtOptions(plot=["loss"]), context)
        sink.clock.wall = lambda: wall[0]
        await sink.open()
        panel = sink.panel
        assert panel is not None
        try:
            # a recording made at t = 1000: the view reads the recording's time
            await sink.write([status(State.CONNECTED, 999.0)])
            await sink.write(
                [event(i, {"step": i, "loss": 1.0}, at=1000.0 + i * 0.1) for i in range(10)]
            )
            panel.refresh()
            assert panel.cell_text("train", "Last event") == "0.0 s ago"
            control.pause()
            panel.refresh()
            wall[0] += 60.0  # a minute paused
            panel.refresh()
            assert panel.cell_text("train", "Last event") == "0.0 s ago"
            assert panel.badge("train").name == "connected"
            assert panel.pace.text().startswith("paused")
            control.resume()
            wall[0] += 1.0
            panel.refresh()  # one second played since the pause: one second old
            assert panel.cell_text("train", "Last event") == "1.0 s ago"
            assert panel.badge("train").name == "connected"
        finally:
            await sink.aclose()
            nursery.cancel_scope.cancel()
