"""The plots: every event kept, runs and outages visible, drawn downsampled with spikes kept.

Model-level tests feed records to :class:`mux_qt.model.PanelModel`; panel-level
ones to the real sink's window, offscreen (QT_QPA_PLATFORM=offscreen).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")

import numpy as np

import mux_qt
from mux_core._config import parse_config
from mux_core._plugins import PluginManager
from mux_core._run.channel import SinkChannel
from mux_core.records import Alert, Event, Severity, State, Status
from mux_core.sink import Overflow, SinkContext, SourceInfo
from mux_core.views import format_value
from mux_qt.model import PanelModel
from mux_qt.options import QtOptions
from mux_qt.series import S, Segment, T, Y, ema
from mux_qt.sink import QtSink

pytestmark = pytest.mark.qt

SOURCES = (SourceInfo("train", "sse"), SourceInfo("eval", "ws"))


def event(
    seq: int, data: Any, *, source: str = "train", at: float | None = None, id: str | None = None
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


def status(state: State, at: float, source: str = "train") -> Status:
    return Status(source, "sse", state, 1, 0.5, "", at)


def alert(rule: str, seq: int | None, at: float, *, severity: str = "warning") -> Alert:
    return Alert("train", "sse", rule, Severity(severity), f"{rule} at {seq}", seq, at)


def model(**kwargs: Any) -> PanelModel:
    kwargs.setdefault("fields", ["loss"])
    kwargs.setdefault("x", "step")
    return PanelModel([(s.name, s.transport) for s in SOURCES], **kwargs)


def columns(m: PanelModel, field: str = "loss", source: str = "train") -> list[Segment]:
    curve = m.curve(field, source)
    assert curve is not None
    return list(curve.segments)


# -- the columns -------------------------------------------------------------


def test_a_segment_keeps_exactly_the_newest_limit_points_across_flushes() -> None:
    rng = random.Random(3)
    segment = Segment(1, limit=1000)
    everything: list[float] = []
    for _ in range(60):
        for _ in range(rng.choice([1, 7, 300, 999, 2500])):
            value = float(len(everything))
            segment.add(value, value * 2, value * 3)
            everything.append(value)
        if rng.random() < 0.7:
            segment.flush()
        assert len(segment) >= min(len(everything), 1000)
    kept = everything[-1000:]
    assert segment.column(T).tolist() == kept
    assert segment.column(S).tolist() == [v * 2 for v in kept]
    assert segment.column(Y).tolist() == [v * 3 for v in kept]


def test_ema_matches_the_recurrence_and_skips_gaps() -> None:
    values = np.array([1.0, 2.0, math.nan, 4.0, 8.0])
    out, last = ema(values, 0.5)
    assert out[0] == 1.0 and out[1] == 1.5
    assert math.isnan(out[2])
    assert out[3] == 2.75 and out[4] == 5.375 and last == 5.375
    segment = Segment(1, limit=10, smoothing=0.5)
    for index, value in enumerate([1.0, 2.0, 4.0]):
        segment.add(float(index), float(index), value)
        segment.flush()  # block by block gives the same as all at once
    assert segment.values().tolist() == [1.0, 1.5, 2.75]
    segment.set_smoothing(0.0)
    assert segment.values().tolist() == [1.0, 2.0, 4.0]


# -- every event -------------------------------------------------------------


def test_every_event_is_a_point() -> None:
    m = model(fields=["loss", "lr"])
    batch = [
        event(i + 1, {"step": i, "loss": 1.0 / (i + 1), "lr": i * 1e-6}) for i in range(20_000)
    ]
    for start in range(0, len(batch), 64):
        m.apply(batch[start : start + 64])
    (loss,) = columns(m)
    assert loss.column(S).tolist() == [float(i) for i in range(20_000)]
    assert loss.column(Y).tolist() == pytest.approx([1.0 / (i + 1) for i in range(20_000)])
    (lr,) = columns(m, "lr")
    assert len(lr) == 20_000


def test_values_that_are_not_numbers_are_not_points_and_nan_is_a_marked_point() -> None:
    m = model()
    m.apply(
        [
            event(1, {"step": 1, "loss": 1.0}),
            event(2, {"step": 2, "loss": True}),
            event(3, {"step": 3, "loss": "1.0"}),
            event(4, {"step": 4, "loss": float("nan")}),
            event(5, {"step": 5, "loss": float("inf")}),
            event(6, "not a dict"),
            event(7, {"step": 7, "loss": 3}),
        ]
    )
    (segment,) = columns(m)
    y = segment.column(Y).tolist()
    assert y[0] == 1.0 and math.isnan(y[1]) and y[2] == math.inf and y[3] == 3.0
    assert segment.column(S).tolist() == [1.0, 4.0, 5.0, 7.0]
    drawn = segment.values().tolist()  # the line breaks at values that are not finite
    assert drawn[0] == 1.0 and math.isnan(drawn[1]) and math.isnan(drawn[2]) and drawn[3] == 3.0
    (stretch,) = m.curves["loss"]["train"].nonfinite  # NaN then Inf: one stretch, marked
    assert (stretch.text, stretch.count, stretch.y) == ("NaN/Inf", 2, 1.0)
    assert (stretch.first.step, stretch.last.step) == (4.0, 5.0)


def test_the_plotting_sinks_take_every_record_by_default() -> None:
    import mux_tui

    plugins = PluginManager()
    plugins.register(mux_qt, name="qt")
    plugins.register(mux_tui, name="tui")
    config = parse_config(
        '[[sources]]\nname = "a"\ntransport = "scripted"\nscript = []\n'
        '[[sinks]]\ntype = "qt"\n[[sinks]]\ntype = "tui"\n',
        path="plots.toml",
        plugins=_with_scripted(plugins),
    )
    for sink in config.sinks:
        assert sink.overflow == "drop_oldest", sink.type
        assert sink.buffer >= 100_000, sink.type
    # 100k events offered at once: nothing is dropped, nothing waits.
    channel = SinkChannel(config.sinks[0].buffer, Overflow(config.sinks[0].overflow))
    for start in range(0, 100_000, 1000):
        assert channel.offer([event(i + 1, {}) for i in range(start, start + 1000)])
    assert channel.dropped == 0 and len(channel) == 100_000


def _with_scripted(plugins: PluginManager) -> PluginManager:
    import mux_core.testing

    plugins.register(mux_core.testing, name="testing")
    return plugins


# -- runs and outages ----------------------------------------------------------


def test_an_outage_breaks_the_line_instead_of_drawing_a_diagonal() -> None:
    m = model()
    m.apply([event(i, {"step": i, "loss": float(i)}) for i in range(1, 6)])
    m.apply(
        [
            status(State.DISCONNECTED, 1005.5),
            status(State.SERVER_UNAVAILABLE, 1006.0),
            status(State.CONNECTED, 1009.0),
        ]
    )
    m.apply([event(i, {"step": i, "loss": float(i)}, at=1005.0 + i) for i in range(6, 9)])
    (segment,) = columns(m)
    y = segment.column(Y).tolist()
    assert y[:5] == [1.0, 2.0, 3.0, 4.0, 5.0] and math.isnan(y[5]) and y[6:] == [6.0, 7.0, 8.0]
    assert segment.column(S).tolist()[5] == 5.0  # x stays sorted: the break repeats the last x
    (outage,) = m.rows["train"].outages
    assert (outage.start, outage.end) == (1005.0, 1011.0)
    assert (outage.start_step, outage.end_step) == (5.0, 6.0)
    assert m.rows["train"].run == 1


def test_statuses_before_the_first_event_are_no_outage() -> None:
    m = model()
    m.apply([status(State.CONNECTING, 999.0), status(State.CONNECTED, 999.5)])
    m.apply([event(i, {"step": i, "loss": 1.0}) for i in range(1, 4)])
    (segment,) = columns(m)
    assert not np.isnan(segment.column(Y)).any()
    assert not m.rows["train"].outages


def test_a_step_going_back_starts_a_new_run_segment() -> None:
    m = model()
    m.apply([event(i, {"step": i, "loss": 2.0}) for i in range(1, 101)])
    m.apply([status(State.DISCONNECTED, 1101.0), status(State.CONNECTED, 1104.0)])
    # the trainer was restarted: steps from 1 again (its ids too)
    m.apply([event(100 + i, {"step": i, "loss": 9.0}, id=str(i)) for i in range(1, 51)])
    first, second = columns(m)
    assert (first.run, second.run) == (1, 2)
    assert len(first) == 100 and not np.isnan(first.column(Y)).any()
    assert second.column(S).tolist() == [float(i) for i in range(1, 51)]
    assert m.rows["train"].run == 2
    assert len(m.rows["train"].outages) == 1  # the outage is still recorded
    m.apply([event(151, {"step": 51, "loss": 9.0})])  # steps go on: same run
    assert m.rows["train"].run == 2


def test_an_id_going_back_starts_a_new_run_when_x_is_time() -> None:
    m = model(x="received_at")
    m.apply([event(i, {"loss": 1.0}, id=str(i)) for i in range(1, 11)])
    m.apply([event(10 + i, {"loss": 5.0}, id=str(i)) for i in range(1, 4)])
    assert [s.run for s in columns(m)] == [1, 2]
    m.apply([event(20, {"loss": 5.0}, id="3-eval")])  # not a number: no verdict
    assert m.rows["train"].run == 2


def test_older_runs_beyond_keep_runs_are_forgotten() -> None:
    m = model(keep_runs=2)
    for run in range(4):
        m.apply([event(run * 10 + i, {"step": i, "loss": float(run)}) for i in range(1, 6)])
    assert [s.run for s in columns(m)] == [3, 4]


def test_a_restart_alert_starts_a_new_run_once() -> None:
    m = model(x="received_at")
    m.apply([event(i, {"loss": 1.0}, id=f"r1-{i}") for i in range(1, 6)])
    # a processor saw the restart where mux cannot (ids that are not numbers)
    m.apply([event(6, {"loss": 4.0}, id="r2-1"), alert("restart", 6, 1006.5)])
    m.apply([event(7, {"loss": 4.0}, id="r2-2")])
    assert [s.run for s in columns(m)] == [1, 2]
    assert len(columns(m)[1]) == 1  # the event that raised it stays in the old run
    # step going back AND the alert for that same event: one new run, not two
    m2 = model()
    m2.apply([event(i, {"step": i, "loss": 1.0}) for i in range(1, 6)])
    m2.apply([event(6, {"step": 1, "loss": 4.0}), alert("restart", 6, 1006.5)])
    assert m2.rows["train"].run == 2
    assert [len(s) for s in columns(m2)] == [5, 1]


def test_alerts_are_kept_per_source_with_where_they_happened() -> None:
    m = model()
    m.apply([event(i, {"step": i * 10, "loss": 1.0}) for i in range(1, 4)])
    m.apply([alert("nonfinite", 3, 1003.2, severity="critical")])
    (mark,) = m.rows["train"].alerts
    # placed at the event that raised it (seq 3), not at the moment the alert was made
    assert (mark.at, mark.step, mark.rule, mark.severity) == (1003.0, 30.0, "nonfinite", "critical")
    assert mark.raised_at == 1003.2
    assert m.rows["train"].run == 1


def test_number_format_is_one_rule() -> None:
    assert format_value(4.86e-05) == "4.860e-05"
    assert format_value(0.0001596) == "1.596e-04"
    assert format_value(7.98) == "7.98"
    assert format_value(0.3141) == "0.3141"
    assert format_value(1500) == "1500"
    assert format_value(123456.0) == "1.235e+05"
    assert format_value(0) == "0"


# -- the panel ---------------------------------------------------------------


@asynccontextmanager
async def open_panel(options: QtOptions) -> AsyncIterator[QtSink]:
    async with trio.open_nursery() as nursery:
        context = SinkContext(
            name="qt",
            config_name="plots",
            sources=SOURCES,
            request_stop=lambda reason: None,
            start_background=lambda fn: nursery.start_soon(fn),
        )
        sink = QtSink(options, context)
        await sink.open()
        assert sink.panel is not None
        sink.panel.resize(1000, 700)
        try:
            yield sink
        finally:
            await sink.aclose()
            nursery.cancel_scope.cancel()


async def _settle(sink: QtSink) -> None:
    from PySide6.QtWidgets import QApplication

    assert sink.panel is not None
    sink.panel.refresh()
    QApplication.processEvents()  # lay out, so the plots know their pixel width
    sink.panel.refresh()


async def test_a_spike_survives_downsampling_of_100k_points() -> None:
    async with open_panel(QtOptions(plot=["loss"], x="step")) as sink:
        assert sink.panel is not None
        n = 100_000
        batch = [
            event(i + 1, {"step": i, "loss": 50.0 if i == 61_234 else 1.0 + (i % 7) * 0.01})
            for i in range(n)
        ]
        await sink.write(batch)
        await _settle(sink)
        item = sink.panel.curve("loss", "train")
        assert item is not None
        x, y = item.getData()  # what is drawn
        assert len(x) < n / 4  # reduced to what the pixels can show...
        assert float(np.nanmax(y)) == 50.0  # ...and the one-step spike is still there
        assert float(np.nanmin(y)) == 1.0
        assert len(sink.model.curves["loss"]["train"].segments[-1]) == n  # all kept


async def test_panel_draws_a_gap_a_new_run_and_markers() -> None:
    async with open_panel(QtOptions(plot=["loss"], x="received_at")) as sink:
        panel = sink.panel
        assert panel is not None
        await sink.write([event(i, {"step": i, "loss": 2.0}) for i in range(1, 21)])
        await sink.write([status(State.DISCONNECTED, 1020.5), status(State.CONNECTED, 1030.0)])
        await sink.write(
            [event(20 + i, {"step": i, "loss": 8.0}, at=1030.0 + i) for i in range(1, 11)]
        )
        await _settle(sink)
        view = panel.views["loss"]
        old, new = view.items("train")
        assert len(old.getData()[0]) == 20 and len(new.getData()[0]) == 10
        assert old.opts["pen"].color().alpha() < new.opts["pen"].color().alpha()
        assert panel.cell_text("train", "Run") == "2"
        import pyqtgraph as pg

        regions = [m for m in view.marks() if isinstance(m, pg.LinearRegionItem)]
        assert [tuple(r.getRegion()) for r in regions] == [(1020.0, 1031.0)]
        lines = [m for m in view.marks() if isinstance(m, pg.InfiniteLine)]
        assert [line.value() for line in lines] == [1031.0]  # where run 2 starts


async def test_x_by_step_or_time_log_y_and_smoothing_per_plot() -> None:
    options = QtOptions(plot=["loss", "lr"], x="step", log_y=["loss"], smoothing=0.5)
    async with open_panel(options) as sink:
        panel = sink.panel
        assert panel is not None
        await sink.write(
            [event(i, {"step": i * 10, "loss": float(i), "lr": 0.1}) for i in range(1, 4)]
        )
        await _settle(sink)
        loss = panel.views["loss"]
        assert loss.log_y.isChecked() and panel.views["lr"].log_y.isChecked() is False
        assert loss.plot.getAxis("left").logMode
        item = panel.curve("loss", "train")
        assert item is not None
        assert item.getData()[0].tolist()[:3] == pytest.approx([10.0, 20.0, 30.0])
        assert loss.smoothing.value() == 0.5
        assert sink.model.curves["loss"]["train"].segments[-1].values().tolist() == [1.0, 1.5, 2.25]
        loss.smoothing.setValue(0.0)
        assert sink.model.curves["loss"]["train"].segments[-1].values().tolist() == [1.0, 2.0, 3.0]
        loss.set_x_mode("time")
        assert loss.x_choice.currentText() == "by time received"
        assert item.getData()[0].tolist() == [1001.0, 1002.0, 1003.0]
        assert panel.views["lr"].x_mode == "step"  # the other plot keeps its own axis


async def test_hover_read_out_shows_the_values_under_the_cursor() -> None:
    async with open_panel(QtOptions(plot=["loss"], x="step")) as sink:
        panel = sink.panel
        assert panel is not None
        await sink.write([event(i, {"step": i, "loss": i / 10}) for i in range(1, 11)])
        await sink.write(
            [event(i, {"step": i, "loss": 0.000123}, source="eval") for i in range(1, 4)]
        )
        await _settle(sink)
        text = panel.views["loss"].show_readout(7.2)
        assert text == "step 7: train 0.7 · eval 1.230e-04"
        assert panel.views["loss"].readout.text() == text


async def test_alerts_show_on_the_row_and_as_markers() -> None:
    async with open_panel(QtOptions(plot=["loss"], x="step")) as sink:
        panel = sink.panel
        assert panel is not None
        await sink.write([event(i, {"step": i, "loss": 1.0}) for i in range(1, 6)])
        await sink.write([alert("nonfinite", 5, 1005.5, severity="critical")])
        await _settle(sink)
        assert panel.cell_text("train", "Alerts") == "1 · critical nonfinite: nonfinite at 5"
        import pyqtgraph as pg

        lines = [m for m in panel.views["loss"].marks() if isinstance(m, pg.InfiniteLine)]
        assert [line.value() for line in lines] == [5.0]


async def test_the_client_only_notice_stays_visible() -> None:
    async with open_panel(QtOptions(plot=["loss"])) as sink:
        assert sink.panel is not None
        await _settle(sink)
        assert sink.panel.banner.isVisible()
        assert "never opens a listening port" in sink.panel.banner.text()
