"""The Qt panel and the terminal view show the same numbers for the same records.

Both take events/s, ages and values from :mod:`mux_core.views`; these tests
feed the same events (same ``received_at``, same ``seq``) to both views'
models, and to the drawn panel and table, and compare what each shows.
The helpers' own edge cases are tested at the top.
"""

from __future__ import annotations

import io
import math
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from typing import Any

import pytest
from rich.console import Console

from mux_core.records import Event
from mux_core.sink import SinkContext, SourceInfo
from mux_core.views import RateMeter, format_age, format_rate, format_value
from mux_tui import TuiOptions, TuiSink
from mux_tui._model import TuiModel

SOURCES = (("train-sse", "sse"), ("train-ws", "ws"))


def _event(seq: int, at: float, data: Any, source: str = "train-sse") -> Event:
    return Event(source, "sse", "metric", str(seq), data, at, seq)


# -- format_value ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (7.98, "7.98"),
        (0.3141, "0.3141"),
        (1500, "1500"),
        (-2.5, "-2.5"),
        (0.001, "0.001"),
        (0.0001596, "1.596e-04"),
        (4.86e-05, "4.860e-05"),
        (123456.0, "1.235e+05"),
        (-123456.0, "-1.235e+05"),
        (0, "0"),
        (0.0, "0"),
        (math.nan, "NaN"),
        (math.inf, "Inf"),
        (-math.inf, "-Inf"),
        (None, "—"),
    ],
)
def test_format_value(value: float | None, text: str) -> None:
    assert format_value(value) == text


# -- format_age --------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0.0 s ago"),
        (0.44, "0.4 s ago"),
        (-0.3, "0.0 s ago"),  # a clock a little behind the stamps
        (12.4, "12 s ago"),
        (59.4, "59 s ago"),
        (60.0, "1m 00s ago"),
        (185.0, "3m 05s ago"),
        (3599.0, "59m 59s ago"),
        (7260.0, "2h 01m ago"),
        (None, "—"),
        (math.nan, "—"),
        (math.inf, "—"),
    ],
)
def test_format_age(seconds: float | None, text: str) -> None:
    assert format_age(seconds) == text


# -- format_rate -------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "text"),
    [
        (0.0, "0.0"),
        (-1.0, "0.0"),
        (0.04, "0.0"),
        (9.5, "9.5"),
        (10.0, "10.0"),
        (123.4, "123.4"),
        (999.9, "999.9"),
        (1234.4, "1,234"),
        (1_000_000.0, "1,000,000"),
        (math.nan, "NaN"),
        (math.inf, "inf"),
        (-math.inf, "0.0"),
    ],
)
def test_format_rate(rate: float, text: str) -> None:
    assert format_rate(rate) == text


# -- RateMeter ---------------------------------------------------------------


@pytest.mark.parametrize("window", [0.0, -1.0, math.nan, math.inf])
def test_a_rate_meter_needs_a_positive_window(window: float) -> None:
    with pytest.raises(ValueError, match="window must be > 0"):
        RateMeter(window)


def test_no_events_or_one_event_is_no_rate() -> None:
    meter = RateMeter()
    assert meter.rate(100.0) == 0.0
    meter.add(100.0, 1)
    assert meter.rate(100.0) == 0.0
    assert meter.rate(101.0) == 0.0


def test_a_steady_stream_reads_its_rate_and_decays_when_quiet() -> None:
    meter = RateMeter()
    for i in range(21):  # 10/s from t=100 to t=102
        meter.add(100.0 + i / 10, i + 1)
    assert meter.rate(102.0) == pytest.approx(10.0)
    assert meter.rate(104.0) == pytest.approx(5.0)  # 20 events over 4 s
    assert meter.rate(102.0 + RateMeter.WINDOW + 0.01) == 0.0  # quiet for a whole window


def test_events_at_one_instant_do_not_divide_by_zero() -> None:
    meter = RateMeter()
    meter.add(100.0, 1)
    meter.add(100.0, 11)
    rate = meter.rate(100.0)
    assert math.isfinite(rate)
    assert rate == pytest.approx(10 / RateMeter.MIN_SPAN)


def test_the_rate_counts_events_the_view_never_saw() -> None:
    meter = RateMeter()
    meter.add(100.0, 1)
    meter.add(101.0, 31)
    meter.add(102.0, 61)
    assert meter.rate(102.0) == pytest.approx(30.0)


def test_a_counter_that_goes_back_starts_the_measurement_afresh() -> None:
    meter = RateMeter()
    for i in range(10):
        meter.add(100.0 + i, 1000 + 100 * i)  # 100/s
    meter.add(110.0, 1)
    meter.add(111.0, 3)
    assert meter.rate(111.0) == pytest.approx(2.0)


def test_a_slow_source_still_has_a_rate() -> None:
    meter = RateMeter()
    for i in range(5):  # one event every 4 s: at most two in a window
        meter.add(100.0 + 4 * i, i + 1)
    assert meter.rate(116.0) == pytest.approx(0.25)


def test_a_source_that_resumes_after_a_pause_is_not_averaged_over_the_pause() -> None:
    meter = RateMeter()
    meter.add(0.0, 1)
    meter.add(1.0, 2)
    for i in range(31):  # 10/s from t=1000 to t=1003
        meter.add(1000.0 + i / 10, 3 + i)
    assert meter.rate(1003.0) == pytest.approx(10.0)


def test_a_fast_source_keeps_a_bounded_number_of_samples() -> None:
    meter = RateMeter()
    for i in range(200_000):  # 20,000/s for ten seconds
        meter.add(100.0 + i / 20_000, i + 1)
    assert meter.rate(110.0) == pytest.approx(20_000, rel=0.01)
    assert len(meter._samples) <= 34  # one per 1/32 of the window, not one per event


# -- the two views agree -------------------------------------------------------


def _feed() -> list[Event]:
    """Two sources: ~12/s with a gap and a skipped stretch, and a slow one."""
    events = [_event(i + 1, 100.0 + i / 12, {"step": i, "loss": 1 / (i + 1)}) for i in range(40)]
    events.append(_event(400, 104.0, {"step": 40, "loss": 0.0001596}))  # 359 events skipped
    events += [
        _event(i + 1, 100.0 + 1.5 * i, {"step": i, "loss": 4.86e-05}, source="train-ws")
        for i in range(3)
    ]
    events.sort(key=lambda e: e.received_at)
    return events


NOWS = (100.0, 100.5, 101.0, 102.5, 103.3, 104.0, 105.0, 107.2, 109.0, 115.0, 4000.0)


def test_both_models_report_the_same_rates() -> None:
    pytest.importorskip("numpy")
    from mux_qt.model import PanelModel

    qt = PanelModel(SOURCES, fields=("loss",), x="step")
    tui = TuiModel(plot=("loss",), width=40)
    for name, transport in SOURCES:
        tui.add_source(name, transport)
    events = _feed()
    # The terminal view reads the rate at its refresh while records still arrive.
    for start in range(0, len(events), 7):
        batch = events[start : start + 7]
        qt.apply(batch)
        tui.ingest(batch)
        now = batch[-1].received_at
        for name, _ in SOURCES:
            assert qt.rows[name].meter.rate(now) == tui.rows[name].rate(now), (name, now)
    for now in NOWS:
        for name, _ in SOURCES:
            qt_rate, tui_rate = qt.rows[name].meter.rate(now), tui.rows[name].rate(now)
            assert qt_rate == tui_rate, (name, now)
    assert qt.rows["train-sse"].meter.rate(104.0) > 50  # the skipped events count
    for name, _ in SOURCES:
        assert qt.rows[name].last_event_at == tui.rows[name].last_event_at


def test_the_panel_and_the_table_show_the_same_rate_age_and_value() -> None:
    pytest.importorskip("PySide6")
    pytest.importorskip("pyqtgraph")
    from PySide6.QtWidgets import QApplication

    from mux_qt.model import PanelModel
    from mux_qt.panel import QtPanel, ensure_application

    ensure_application()
    clock = [100.0]
    model = PanelModel(SOURCES, fields=("loss",), x="step")
    panel = QtPanel(model, title="agree", on_close=lambda: None, clock=lambda: clock[0])
    panel.show()
    context = SinkContext(
        name="tui",
        config_name="agree",
        sources=tuple(SourceInfo(name, transport) for name, transport in SOURCES),
        request_stop=lambda reason: None,
        start_background=lambda fn: None,
    )
    console = Console(record=True, width=200, file=io.StringIO())
    tui = TuiSink(TuiOptions(plot=["loss"], width=8), context, console=console)
    events = _feed()
    model.apply(events)
    tui.model.ingest(events)
    try:
        seen = set()
        for now in (104.0, 105.0, 107.2, 115.0):
            clock[0] = now
            panel.refresh()
            QApplication.processEvents()
            panel.refresh()
            console.print(tui.render(now))
            table = console.export_text()
            for name, _ in SOURCES:
                rate = panel.cell_text(name, "Events/s")
                age = panel.cell_text(name, "Last event")
                row = next(line for line in table.splitlines() if line.lstrip().startswith(name))
                assert f" {rate}/s " in row, (now, name, rate, row)
                assert f" {age} " in row, (now, name, age, row)
                seen.add((name, rate, age))
        readout = panel.views["loss"].show_readout(40.0)
        for name, value in (("train-sse", "1.596e-04"), ("train-ws", "4.860e-05")):
            assert f"{name} {value}" in readout  # the panel's value under the cursor
            row = next(line for line in table.splitlines() if line.lstrip().startswith(name))
            assert f" {value}" in row  # the table's newest value
    finally:
        panel.close_quietly()
    assert ("train-sse", "0.0", "11 s ago") in seen  # quiet for a window: both read 0
    assert len({rate for _, rate, _ in seen}) > 2  # not one constant that trivially agrees
