"""The panel window: a banner, one row per source, and live plots.

Imports PySide6 and pyqtgraph at module level: only import this module once
the Qt extra is known to be installed (:func:`mux_qt.options.require_qt`).
The widgets only paint what :class:`mux_qt.model.PanelModel` holds; a QTimer
repaints 12.5 times a second, so the retry countdown, events/s, "last event"
and staleness keep moving between records, and a burst of records costs one
repaint, not one per record.

Every string that came from a server or a config (source names, states'
details, alert messages) is shown as plain text: labels are
``Qt.TextFormat.PlainText``, tooltips and legend labels (which Qt would read
as HTML) are escaped. A ``<b>`` or an ``<img src=...>`` in an alert is shown
as those characters, never rendered.

Every point is handed to pyqtgraph; it draws what fits the pixels: clip to
the visible x range, then per group of points the min and the max ("peak"
downsampling), so a one-step spike survives at any zoom. Each run segment of
a source is a curve of its own (older runs faded, thinner), with one legend
entry per source; an outage is a gap in the line (``connect="finite"``), and
outages, restarts, alerts and values that were not finite are marked.
Marker labels never overlap: labels at the same x with the same text merge
into one with a count (three sources restarted at one step: "restart",
the multiplication sign, "3"), the others are stacked in lanes by their
width in pixels at the current zoom (:meth:`PlotView.layout_labels`).
"""

from __future__ import annotations

import datetime
import html
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

import numpy as np
import numpy.typing as npt
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QColor, QFont, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from mux_core.sink import ReplayControl
from mux_core.views import escape_controls, format_age, format_rate, format_value

from .model import (
    RED,
    STALE,
    Badge,
    Curve,
    NonFinite,
    PanelModel,
    Place,
    SourceRow,
    badge_for,
    quality_text,
    severity_colour,
)
from .series import P, S, Segment, T, Y

__all__ = ["BANNER", "ClockAxis", "PlotView", "QtPanel", "ensure_application", "plain_tooltip"]

BANNER = (
    "Client only: mux watches streams that other programs serve. "
    "It never starts a server and never opens a listening port."
)
_STATE = "State"
_ALERTS = "Alerts"
_QUALITY = "Quality"
_RESTART = ""
_CURVE_COLOURS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
)
#: Line styles of a source's recordings in an overlay (``mux replay a.jsonl b.jsonl``).
_RECORDING_STYLES = (
    Qt.PenStyle.SolidLine,
    Qt.PenStyle.DashLine,
    Qt.PenStyle.DotLine,
    Qt.PenStyle.DashDotLine,
)
#: Repaint period: 12.5 frames per second (at least 10 when the timer runs late).
REFRESH_MS = 80
#: Curves with more points than this are drawn with a 1-pixel pen. Qt strokes an
#: antialiased noisy line 2 px wide many times slower than 1 px wide (offscreen,
#: three curves of a noisy loss: 200 points 9.5 ms against 3.5 ms, 1,000 points
#: 41 ms against 4.4 ms, 5,000 points 74 ms against 3.7 ms): only a handful of
#: points is drawn thick.
_THICK_POINTS = 100
#: Markers drawn per source and kind (outages, alerts, runs, non-finite stretches): the newest.
_MAX_MARKS = 50
#: A clicked Restart button is enabled again after this long without a new state.
RESTART_PATIENCE = 5.0
#: Between a merged marker's label and its count (the multiplication sign).
TIMES = "\N{MULTIPLICATION SIGN}"
_TIME = "time"
_STEP = "step"
_PTIME = "ptime"


def ensure_application() -> QApplication:
    """The process's QApplication, created if there is none yet."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1] or ["mux"])
        app.setApplicationName("mux")
    assert isinstance(app, QApplication)
    return app


def plain_tooltip(text: str) -> str:
    """``text`` as a tooltip that shows exactly these characters.

    Qt reads a tooltip that looks like HTML as HTML (``<img src=...>`` would
    load a file); this one is HTML whose text is escaped.
    """
    return "<qt>" + html.escape(text).replace("\n", "<br>") + "</qt>"


def _plain_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setTextFormat(Qt.TextFormat.PlainText)
    return label


def _clock_text(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).strftime("%H:%M:%S")


class _ElidedLabel(QLabel):
    """Plain text cut with "…" to the width it is given; the whole text stays readable."""

    def __init__(self) -> None:
        super().__init__()
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(0)
        self._full = ""

    def full_text(self) -> str:
        return self._full

    def set_full_text(self, text: str) -> None:
        self._full = text
        self._elide()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        shown = self.fontMetrics().elidedText(
            self._full, Qt.TextElideMode.ElideRight, max(self.width(), 0)
        )
        if shown != self.text():
            self.setText(shown)


class _BadgeWidget(QFrame):
    """A rounded, coloured state badge: the state's name whole, then its detail elided."""

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("badge")
        self.badge = Badge("", "", "")
        layout = self._layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 1, 8, 1)
        layout.setSpacing(6)
        self.name = _plain_label()
        font = QFont(self.name.font())
        font.setBold(True)
        self.name.setFont(font)
        self.name.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
        self.detail = _ElidedLabel()
        layout.addWidget(self.name)
        layout.addWidget(self.detail, 1)

    def show_badge(self, badge: Badge) -> None:
        if badge == self.badge:
            return
        colour = self.badge.colour
        self.badge = badge
        if self.name.text() != badge.name:
            self.name.setText(badge.name)
            self.name.setFixedWidth(self.name.sizeHint().width())
        self.detail.set_full_text(badge.detail)
        self.detail.setVisible(bool(badge.detail))
        self.setToolTip(plain_tooltip(badge.text))
        if badge.colour != colour:
            self.setStyleSheet(
                f"#badge {{ background: {badge.colour}; border-radius: 8px; margin: 2px 4px; }}"
                " QLabel { color: white; background: transparent; }"
            )

    def name_width(self) -> int:
        """Pixels the badge needs to show its state's name whole."""
        margins = self._layout.contentsMargins()
        return self.name.sizeHint().width() + margins.left() + margins.right() + 12

    def shown_text(self) -> str:
        """What the badge shows: the name, then the detail as elided."""
        detail = self.detail.text() if self.detail.isVisibleTo(self) else ""
        return f"{self.name.text()} · {detail}" if detail else self.name.text()


class _RestartCell(QWidget):
    """Holds a row's Restart button.

    The table shows every cell widget again whenever it lays its cells out
    (a resize, a new row); the button inside keeps the visibility it was
    given, so a hidden button stays hidden on a live row.
    """

    def __init__(self, source: str, on_click: Callable[[str], None]) -> None:
        super().__init__()
        layout = QHBoxLayout(self)
        layout.setContentsMargins(2, 1, 2, 1)
        self.button = QPushButton("Restart")
        self.button.setToolTip(plain_tooltip(f"Start {source} again, from where it stopped"))
        self.button.setVisible(False)
        self.button.clicked.connect(lambda _checked=False: on_click(source))
        layout.addWidget(self.button)
        #: The status the button was clicked on, and when (None: not clicked).
        self.clicked_on: Any = None
        self.clicked_at = 0.0


class ClockAxis(pg.DateAxisItem):  # type: ignore[misc]
    """A time axis labelled with clock times: ``13:02:48``, ``13:02:48.5``, never ``48.500``."""

    def tickStrings(self, values: Sequence[float], scale: float, spacing: float) -> list[str]:
        return clock_labels(values, spacing)


def clock_labels(values: Sequence[float], spacing: float) -> list[str]:
    """Tick labels for times ``values`` that are ``spacing`` seconds apart (local time)."""
    if spacing >= 86_400:
        fmt, decimals = "%b %d", 0
    elif spacing >= 60:
        fmt, decimals = "%H:%M", 0
    elif spacing >= 1:
        fmt, decimals = "%H:%M:%S", 0
    else:
        fmt, decimals = "%H:%M:%S", min(max(math.ceil(-math.log10(spacing) - 1e-9), 1), 3)
    labels = []
    scale = 10**decimals
    for value in values:
        try:
            # whole seconds and the fraction in integers: 48.96 to one decimal is 49.0
            seconds, fraction = divmod(round(value * scale), scale)
            text = datetime.datetime.fromtimestamp(seconds).strftime(fmt)
        except (OverflowError, ValueError, OSError):
            labels.append("")
            continue
        labels.append(f"{text}.{fraction:0{decimals}d}" if decimals else text)
    return labels


class _Mark(NamedTuple):
    """A labelled marker before merging: one per alert or run start."""

    x: float
    label: str
    colour: str
    tip: str
    #: Dashed (a run start) or solid (an alert).
    dashed: bool


class PlotView(QWidget):
    """One field's plot: its controls (x by step, time or payload time, log y, EMA),
    the plot, a read-out.

    Each run segment of each source is one pyqtgraph curve; only segments
    that got points since the last frame are handed over again.
    """

    def __init__(self, panel: QtPanel, field: str, *, x_mode: str, log_y: bool) -> None:
        super().__init__()
        self.panel = panel
        self.field = field
        self.x_mode = x_mode
        self._items: dict[tuple[str, int], pg.PlotDataItem] = {}
        self._points: dict[tuple[str, int], int] = {}
        #: The run each source's newest segment had when last drawn.
        self._newest: dict[str, int] = {}
        #: What each newest segment was last drawn with: x, raw values, gap rows (the read-out).
        self._drawn: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._legend_samples: dict[str, pg.PlotDataItem] = {}
        self._marks: list[Any] = []
        #: The labelled lines and their labels' text (merged markers).
        self._labelled: list[tuple[pg.InfiniteLine, str]] = []
        self._nonfinite: dict[int, tuple[NonFinite, int, pg.PlotDataItem]] = {}
        self._marks_version = -1
        self._labels_dirty = True

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        bar = QHBoxLayout()
        title = _plain_label(field)
        bold = QFont(title.font())
        bold.setBold(True)
        title.setFont(bold)
        bar.addWidget(title)
        bar.addSpacing(12)
        bar.addWidget(_plain_label("x:"))
        self.x_choice = QComboBox()
        model = panel.model
        self._modes = [_STEP, _TIME]
        self.x_choice.addItem(f"by {model.step_field}", _STEP)
        self.x_choice.addItem("by time received", _TIME)
        if model.time_field is not None:
            self._modes.append(_PTIME)
            self.x_choice.addItem(f"by {model.time_field} (payload time)", _PTIME)
        self.x_choice.setCurrentIndex(self._modes.index(x_mode))
        self.x_choice.currentIndexChanged.connect(self._x_changed)
        bar.addWidget(self.x_choice)
        self.log_y = QCheckBox("log y")
        self.log_y.setChecked(log_y)
        self.log_y.toggled.connect(self._log_changed)
        bar.addWidget(self.log_y)
        bar.addWidget(_plain_label("smoothing:"))
        self.smoothing = QDoubleSpinBox()
        self.smoothing.setRange(0.0, 0.999)
        self.smoothing.setSingleStep(0.1)
        self.smoothing.setDecimals(3)
        self.smoothing.setToolTip("EMA weight of the past (0 = off, 0.9 = smooth)")
        self.smoothing.setValue(model.smoothing_of(field))
        self.smoothing.valueChanged.connect(self._smoothing_changed)
        bar.addWidget(self.smoothing)
        bar.addStretch(1)
        self.readout = _plain_label("")
        self.readout.setStyleSheet("QLabel { color: #333333; font-family: monospace; }")
        bar.addWidget(self.readout)
        layout.addLayout(bar)

        self.widget = pg.PlotWidget()
        self.plot: pg.PlotItem = self.widget.getPlotItem()
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        for side in ("left", "bottom"):
            self.plot.getAxis(side).setStyle(maxTickLevel=0)
        self.plot.setLabel("left", html.escape(field))
        # One entry per source, beside the plot (right of the data, never over
        # it), on a background.
        self.legend = pg.LegendItem(
            brush=pg.mkBrush(255, 255, 255, 225),
            pen=pg.mkPen("#b0b0b0"),
            labelTextColor="#333333",
        )
        self.legend.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.plot.layout.addItem(self.legend, 2, 3)
        self.plot.layout.setAlignment(self.legend, Qt.AlignmentFlag.AlignTop)
        self.plot.setLogMode(x=False, y=log_y)
        self.crosshair = pg.InfiniteLine(
            angle=90, pen=pg.mkPen("#999999", style=Qt.PenStyle.DotLine)
        )
        self.crosshair.setVisible(False)
        self.plot.addItem(self.crosshair, ignoreBounds=True)
        self._axis()
        layout.addWidget(self.widget, stretch=1)
        self.widget.scene().sigMouseMoved.connect(self._mouse_moved)
        self.plot.vb.sigXRangeChanged.connect(self._range_changed)
        self.plot.vb.sigResized.connect(self._range_changed)

    # -- controls ----------------------------------------------------------

    def _axis(self) -> None:
        model = self.panel.model
        if self.x_mode == _STEP:
            self.plot.setAxisItems({"bottom": pg.AxisItem(orientation="bottom")})
            self.plot.setLabel("bottom", html.escape(model.step_field))
        else:
            self.plot.setAxisItems({"bottom": ClockAxis(orientation="bottom")})
            what = "time received" if self.x_mode == _TIME else f"{model.time_field} (payload)"
            self.plot.setLabel("bottom", html.escape(what))
        bottom = self.plot.getAxis("bottom")
        bottom.setStyle(maxTickLevel=0)
        bottom.setGrid(int(0.25 * 255))

    def set_x_mode(self, mode: str) -> None:
        """Draw against the step field ("step"), the receive time ("time") or the
        payload's time ("ptime", with a ``time_field``)."""
        if mode == self.x_mode or mode not in self._modes:
            return
        self.x_mode = mode
        self.x_choice.setCurrentIndex(self._modes.index(mode))
        self._axis()
        self._redraw_all()
        self.plot.enableAutoRange()

    def _x_changed(self, index: int) -> None:
        self.set_x_mode(str(self.x_choice.itemData(index)))

    def _log_changed(self, on: bool) -> None:
        self.plot.setLogMode(x=False, y=on)

    def _smoothing_changed(self, value: float) -> None:
        self.panel.model.set_smoothing(self.field, float(value))
        self._redraw_all()

    def _redraw_all(self) -> None:
        for curve in self.panel.model.curves[self.field].values():
            for segment in curve.segments:
                segment.dirty = True
        self._marks_version = -1
        self.refresh()

    def _range_changed(self, *_args: Any) -> None:
        self._labels_dirty = True

    # -- drawing -----------------------------------------------------------

    def _x_row(self) -> int:
        return {_STEP: S, _TIME: T, _PTIME: P}[self.x_mode]

    def _xy(
        self, segment: Segment
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, npt.NDArray[np.bool_]]:
        """x, the drawn y, the raw values and the gap rows, in x order; points without x dropped."""
        y = segment.values()
        raw = segment.column(Y)
        gaps = segment.is_gap()
        x = segment.column(self._x_row())
        if self.x_mode != _TIME:
            finite = np.isfinite(x)
            if not finite.all():  # events without the step field / the payload time
                x, y, raw, gaps = x[finite], y[finite], raw[finite], gaps[finite]
            if self.x_mode == _PTIME and len(x) > 1 and (np.diff(x) < 0).any():
                order = np.argsort(x, kind="stable")  # clip-to-view needs x sorted
                x, y, raw, gaps = x[order], y[order], raw[order], gaps[order]
        return x, y, raw, gaps

    def refresh(self) -> None:
        """Hand new points to pyqtgraph; drop curves of runs no longer kept; marks."""
        curves = self.panel.model.curves[self.field]
        live: set[tuple[str, int]] = set()
        for source, curve in curves.items():
            newest = curve.segments[-1].run if curve.segments else 0
            restyle = self._newest.get(source) != newest
            self._newest[source] = newest
            for segment in curve.segments:
                key = (source, segment.run)
                live.add(key)
                item = self._items.get(key)
                fresh = item is None
                if item is None:
                    if not len(segment):
                        continue
                    item = self._new_item(curve, segment)
                if segment.dirty or fresh:
                    segment.dirty = False
                    x, y, raw, gaps = self._xy(segment)
                    item.setData(x, y, connect="finite")
                    self._points[key] = len(x)
                    if segment.run == newest:
                        self._drawn[source] = (x, raw, gaps)
                elif not restyle:
                    continue
                self._style(item, source, current=segment.run == newest, points=self._points[key])
        for key in [key for key in self._items if key not in live]:
            self.plot.removeItem(self._items.pop(key))
            self._points.pop(key, None)
        if self._marks_version != self.panel.model.marks_version:
            self._draw_marks()
        self._update_nonfinite(moved=self._labels_dirty)
        if self._labels_dirty:
            self.layout_labels()

    def _new_item(self, curve: Curve, segment: Segment) -> pg.PlotDataItem:
        # min and max of the points under each pixel column: spikes survive
        item = self.plot.plot(autoDownsampleFactor=1.0, antialias=True)
        item.setDownsampling(auto=True, method="peak")
        item.setClipToView(True)
        self._items[curve.source, segment.run] = item
        if curve.source not in self._legend_samples:
            sample = pg.PlotDataItem()
            sample.setPen(self._pen(curve.source, current=True, points=0))
            self._legend_samples[curve.source] = sample
            self.legend.clear()  # in the rows' order, whichever source came first
            for source in self.panel.model.rows:
                if source in self._legend_samples:
                    self.legend.addItem(self._legend_samples[source], html.escape(source))
            self.legend.updateSize()
            self.plot.layout.invalidate()
        return item

    def _pen(self, source: str, *, current: bool, points: int) -> Any:
        colour_text, style = self.panel.style_of(source)
        colour = QColor(colour_text)
        if not current:
            colour.setAlpha(80)
        width = 2 if current and points <= _THICK_POINTS else 1
        return pg.mkPen(colour, width=width, style=style)

    def _style(self, item: pg.PlotDataItem, source: str, *, current: bool, points: int) -> None:
        pen = self._pen(source, current=current, points=points)
        if item.opts["pen"] != pen:
            item.setPen(pen)

    def _place_x(self, place: Place) -> float:
        return {_STEP: place.step, _TIME: place.at, _PTIME: place.ptime}[self.x_mode]

    def _draw_marks(self) -> None:
        for mark in self._marks:
            self.plot.removeItem(mark)
        self._marks = []
        self._labelled = []
        self._marks_version = self.panel.model.marks_version
        by_time = self.x_mode != _STEP
        labelled: list[_Mark] = []
        for row in self.panel.model.rows.values():
            colour = QColor(self.panel.style_of(row.name)[0])
            for outage in list(row.outages)[-_MAX_MARKS:]:
                start, end = {
                    _STEP: (outage.start_step, outage.end_step),
                    _TIME: (outage.start, outage.end),
                    _PTIME: (outage.start_ptime, outage.end_ptime),
                }[self.x_mode]
                tip = plain_tooltip(f"{row.name}: not connected")
                if by_time and math.isfinite(start) and math.isfinite(end):
                    fill = QColor(colour)
                    fill.setAlpha(40)
                    region = pg.LinearRegionItem(
                        (start, end), movable=False, brush=fill, pen=pg.mkPen(None)
                    )
                    region.setToolTip(tip)
                    self._add_mark(region)
                elif not by_time and math.isfinite(start):
                    pen = pg.mkPen(colour, style=Qt.PenStyle.DotLine)
                    line = pg.InfiniteLine(start, angle=90, pen=pen)
                    line.setToolTip(tip)
                    self._add_mark(line)
            for start_of_run in list(row.runs)[-_MAX_MARKS:]:
                x = self._run_x(row, start_of_run.run, start_of_run.place)
                if start_of_run.placed and math.isfinite(x):
                    tip = f"{row.name}: run {start_of_run.run} starts -- {start_of_run.reason}"
                    labelled.append(_Mark(x, "restart", colour.name(), tip, True))
            for alert in list(row.alerts)[-_MAX_MARKS:]:
                x = self._place_x(alert.place)
                if alert.rule == "restart" or not alert.placed or not math.isfinite(x):
                    continue  # a restart is drawn where its run starts
                tip = f"{row.name}: {alert.severity} {alert.rule}: {alert.message}"
                labelled.append(_Mark(x, alert.rule, severity_colour(alert.severity), tip, False))
        for x, label, colour_text, tips, dashed in _merge(labelled):
            pen = pg.mkPen(
                colour_text,
                width=1.5,
                style=Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine,
            )
            line = pg.InfiniteLine(
                x,
                angle=90,
                pen=pen,
                # pyqtgraph formats a line's label with str.format: braces kept as text
                label=label.replace("{", "{{").replace("}", "}}"),
                labelOpts={"position": 0.95, "color": colour_text, "fill": (255, 255, 255, 200)},
            )
            line.setToolTip(plain_tooltip(tips))
            self._add_mark(line)
            self._labelled.append((line, label))
        for _stretch, _count, item in self._nonfinite.values():
            self.plot.removeItem(item)
        self._nonfinite = {}
        self._labels_dirty = True

    def _run_x(self, row: SourceRow, run: int, place: Place) -> float:
        """Where run ``run`` starts on this axis: its first point as drawn, else its event."""
        if self.x_mode == _TIME:
            curve = self.panel.model.curve(self.field, row.name)
            for segment in curve.segments if curve is not None else ():
                if segment.run == run and len(segment):
                    return float(segment.column(T)[0])
        return self._place_x(place)

    def _update_nonfinite(self, *, moved: bool) -> None:
        """A red ✕ at each end of every stretch of values that were not finite, at
        the last finite value before it, or at the bottom of the plot when there was
        none (kept there as the view ``moved``)."""
        curves = self.panel.model.curves[self.field]
        for source, curve in curves.items():
            for stretch in list(curve.nonfinite)[-_MAX_MARKS:]:
                key = id(stretch)
                drawn = self._nonfinite.get(key)
                if (
                    drawn is not None
                    and drawn[1] == stretch.count
                    and not (moved and stretch.y is None)
                ):
                    continue
                first, last = self._place_x(stretch.first), self._place_x(stretch.last)
                if not (math.isfinite(first) and math.isfinite(last)):
                    continue
                item = drawn[2] if drawn is not None else None
                if item is None:
                    item = pg.PlotDataItem(
                        pen=pg.mkPen(RED, width=2),
                        symbol="x",
                        symbolSize=11,
                        symbolPen=pg.mkPen(RED, width=2),
                        symbolBrush=pg.mkBrush(RED),
                    )
                    self.plot.addItem(item, ignoreBounds=stretch.y is None)
                y = stretch.y
                if y is None:  # nothing finite before it: at the axis
                    low, high = self.plot.vb.viewRange()[1]
                    y = low + 0.03 * (high - low)
                    y = 10**y if self.log_y.isChecked() else y
                xs = [first] if first == last else [first, last]
                item.setData(xs, [y] * len(xs))
                where = self.panel.model.step_field if self.x_mode == _STEP else "time"
                span = (
                    f"at {where} {format_value(stretch.first.step)}"
                    if stretch.count == 1
                    else f"{stretch.count} values from {where} "
                    f"{format_value(stretch.first.step)} to {format_value(stretch.last.step)}"
                )
                if self.x_mode != _STEP:
                    span = (
                        f"{stretch.count} value(s) from {_clock_text(first)} to {_clock_text(last)}"
                    )
                what = f"{source}: {stretch.field} {stretch.text} -- {span}"
                item.setToolTip(plain_tooltip(what))
                self._nonfinite[key] = (stretch, stretch.count, item)

    def layout_labels(self) -> None:
        """Stack the marker labels in lanes so that no two overlap at the current zoom."""
        self._labels_dirty = False
        vb = self.plot.vb
        (x0, x1), _ = vb.viewRange()
        width, height = vb.width(), vb.height()
        if not self._labelled or width <= 0 or height <= 0 or x1 <= x0:
            return
        sizes = [line.label.boundingRect() for line, _ in self._labelled]
        lane_height = (max(size.height() for size in sizes) + 3) / height
        lanes = max(1, int(0.75 / lane_height))
        ends: list[float] = [-math.inf] * lanes
        spans = []
        for (line, _text), size in zip(self._labelled, sizes, strict=True):
            px = (line.value() - x0) / (x1 - x0) * width
            spans.append((px, size.width() / 2 + 4, line))
        for px, half, line in sorted(spans, key=lambda span: span[0]):
            label = line.label
            for lane in range(lanes):
                if ends[lane] <= px - half:
                    ends[lane] = px + half
                    label.setPosition(0.97 - lane * lane_height)
                    label.setVisible(True)
                    break
            else:  # no room left at this zoom: the line and its tooltip stay
                label.setVisible(False)

    def _add_mark(self, item: Any) -> None:
        self.plot.addItem(item, ignoreBounds=True)
        self._marks.append(item)

    # -- the hover read-out --------------------------------------------------

    def _mouse_moved(self, pos: QPointF) -> None:
        if not self.plot.sceneBoundingRect().contains(pos):
            self.crosshair.setVisible(False)
            return
        x = float(self.plot.vb.mapSceneToView(pos).x())
        self.show_readout(x)

    def show_readout(self, x: float) -> str:
        """Show (and return) the values of each source's newest run nearest to ``x``
        (NaN and infinities as such)."""
        self.crosshair.setPos(x)
        self.crosshair.setVisible(True)
        parts = []
        for source, (xs, raw, gaps) in self._drawn.items():
            if not len(xs):
                continue
            index = int(np.searchsorted(xs, x))
            if index >= len(xs) or (index > 0 and x - xs[index - 1] < xs[index] - x):
                index -= 1
            index = max(index, 0)
            if gaps[index] and index > 0:
                index -= 1
            if not gaps[index]:
                parts.append(f"{source} {format_value(float(raw[index]))}")
        if self.x_mode == _STEP:
            where = f"{self.panel.model.step_field} {x:,.0f}"
        else:
            where = f"time {_clock_text(x)}"
        text = f"{where}: " + " · ".join(parts) if parts else ""
        self.readout.setText(text)
        return text

    # -- reading (tests, scripts) ----------------------------------------

    def item(self, source: str) -> pg.PlotDataItem | None:
        """The curve of ``source``'s newest run."""
        runs = [run for (name, run) in self._items if name == source]
        return self._items.get((source, max(runs))) if runs else None

    def items(self, source: str) -> list[pg.PlotDataItem]:
        """Every kept run's curve of ``source``, oldest first."""
        return [self._items[key] for key in sorted(k for k in self._items if k[0] == source)]

    def marks(self) -> list[Any]:
        return list(self._marks)

    def labels(self) -> list[tuple[float, str, str]]:
        """The marker labels: (x, text, tooltip as plain text), by x."""
        found = []
        for line, text in self._labelled:
            tip = html.unescape(line.toolTip().removeprefix("<qt>").removesuffix("</qt>"))
            found.append((float(line.value()), text, tip.replace("<br>", "\n")))
        return sorted(found)

    def label_items(self) -> list[Any]:
        """The labels' text items (for geometry checks)."""
        return [line.label for line, _ in self._labelled]

    def nonfinite_marks(self) -> list[tuple[list[float], list[float], str]]:
        """The drawn marks of values that were not finite: (xs, ys, tooltip as plain text)."""
        found = []
        for _stretch, _count, item in self._nonfinite.values():
            xs, ys = item.getData()
            tip = html.unescape(item.toolTip().removeprefix("<qt>").removesuffix("</qt>"))
            found.append(([float(v) for v in xs], [float(v) for v in ys], tip))
        return found

    def legend_entries(self) -> list[str]:
        """The legend's labels, in order (as plain text)."""
        return [html.unescape(label.text) for _sample, label in self.legend.items]


def _merge(marks: list[_Mark]) -> list[tuple[float, str, str, str, bool]]:
    """One marker per x and label ("restart" three times: ``restart`` TIMES ``3``), with
    every tooltip line."""
    groups: dict[tuple[float, str], list[_Mark]] = {}
    for mark in marks:
        groups.setdefault((mark.x, mark.label), []).append(mark)
    merged = []
    for (x, label), group in sorted(groups.items()):
        text = label if len(group) == 1 else f"{label} {TIMES}{len(group)}"
        tips = "\n".join(mark.tip for mark in group)
        merged.append((x, text, group[0].colour, tips, group[0].dashed))
    return merged


class QtPanel(QWidget):
    """The mux panel: a status row per source and one plot per chosen field.

    ``on_close`` runs when the user closes the window (the sink asks the run
    to stop); :meth:`close_quietly` closes it without that, when the run is
    already ending. ``on_restart(source)``, when given, is what a row's
    "Restart" button calls; the button shows only while the source is in
    ``max_retries_exceeded``, ``failed`` or ``ended``.
    """

    def __init__(
        self,
        model: PanelModel,
        *,
        title: str,
        on_close: Callable[[], None],
        dropped: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.time,
        log_y: tuple[str, ...] = (),
        subtitle: str = "",
        on_restart: Callable[[str], None] | None = None,
        x_mode: str | None = None,
        recordings: Sequence[str] = (),
        recording_clocks: Mapping[str, Callable[[], float]] | None = None,
        replay: ReplayControl | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self._on_close = on_close
        self._on_restart = on_restart
        self._dropped = dropped
        self._clock = clock
        self._clocks = dict(recording_clocks or {})
        self._recordings = list(recordings)
        self.replay = replay
        self._quiet = False
        self._closed = False
        self._row_of: dict[str, int] = {}
        self._colour_index: dict[str, int] = {}
        self.columns: tuple[str, ...] = (
            "Source",
            "Transport",
            _STATE,
            "Events/s",
            "Last event",
            *model.fields,
            "Run",
            _ALERTS,
            _QUALITY,
            _RESTART,
        )
        self._column = {name: index for index, name in enumerate(self.columns)}
        self.setWindowTitle(title)
        self.resize(1000, 760)
        # Deleted by Qt once closed, while the application still runs: left to
        # Python's shutdown, pyqtgraph's items are asked for size hints half torn down.
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

        layout = QVBoxLayout(self)
        banner = _plain_label(BANNER + (f" {subtitle}" if subtitle else ""))
        banner.setWordWrap(True)
        banner.setStyleSheet(
            "QLabel { background: #e3f2fd; color: #0d47a1; border: 1px solid #90caf9;"
            " border-radius: 4px; padding: 6px; }"
        )
        self.banner = banner
        layout.addWidget(banner)
        if replay is not None:
            layout.addLayout(self._replay_bar(replay))

        self.table = QTableWidget(0, len(self.columns))
        self.table.setHorizontalHeaderLabels(list(self.columns))
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(30)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(self._column[_STATE], QHeaderView.ResizeMode.Stretch)
        # The state gets the room: the alerts and the quality are cut to a fixed width
        # (the user can widen them), the whole text in their tooltips.
        for name, width in ((_ALERTS, 200), (_QUALITY, 170)):
            header.setSectionResizeMode(self._column[name], QHeaderView.ResizeMode.Interactive)
            header.resizeSection(self._column[name], width)
        layout.addWidget(self.table)

        # Antialiasing for the curves only, and a grid at the major ticks only:
        # an antialiased alpha grid at every tick level cost more than all the
        # curves together (offscreen, 4 curves of 100k points: ~25 ms vs ~5 ms).
        pg.setConfigOptions(antialias=False, background="w", foreground="#333333")
        if x_mode is None:
            x_mode = {"received_at": _TIME, model.time_field: _PTIME}.get(model.x, _STEP)
        self.views: dict[str, PlotView] = {}
        for field in model.fields:
            view = PlotView(self, field, x_mode=x_mode, log_y=field in log_y)
            self.views[field] = view
            layout.addWidget(view, stretch=1)
        if not self.views:
            hint = _plain_label('No plots: list numeric fields with plot = ["loss", "lr"].')
            hint.setStyleSheet("QLabel { color: #666666; }")
            layout.addWidget(hint)
            layout.addStretch(1)

        self.footer = _plain_label()
        self.footer.setStyleSheet("QLabel { color: #555555; }")
        layout.addWidget(self.footer)

        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        #: Frames drawn so far (the benchmark counts them).
        self.frames = 0
        self.refresh()

    def _replay_bar(self, replay: ReplayControl) -> QHBoxLayout:
        """Pause / resume, slower, faster, and the pace, for ``mux replay``."""
        bar = QHBoxLayout()
        bar.addWidget(_plain_label("Replay:"))
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(
            lambda _checked=False: replay.resume() if replay.paused else replay.pause()
        )
        slower = QPushButton("Slower")
        slower.clicked.connect(lambda _checked=False: replay.slower())
        faster = QPushButton("Faster")
        faster.clicked.connect(lambda _checked=False: replay.faster())
        self.pace = _plain_label()
        for widget in (self.pause_button, slower, faster, self.pace):
            bar.addWidget(widget)
        bar.addStretch(1)
        return bar

    def _show_pace(self, replay: ReplayControl) -> None:
        speed = replay.speed
        pace = "as fast as it goes" if math.isinf(speed) else f"{speed:g}{TIMES} the recorded pace"
        text = f"paused ({pace})" if replay.paused else pace
        if self.pace.text() != text:
            self.pace.setText(text)
            self.pause_button.setText("Resume" if replay.paused else "Pause")

    @property
    def plots(self) -> dict[str, pg.PlotItem]:
        """The plot of each field."""
        return {field: view.plot for field, view in self.views.items()}

    # -- building --------------------------------------------------------

    def _ensure_row(self, source: str) -> int:
        row = self._row_of.get(source)
        if row is not None:
            return row
        row = self.table.rowCount()
        self.table.insertRow(row)
        self._row_of[source] = row
        info = self.model.rows[source]
        for column, text in ((0, escape_controls(info.name)), (1, info.transport)):
            item = QTableWidgetItem(text)
            item.setToolTip(plain_tooltip(text))
            self.table.setItem(row, column, item)
        self.table.setCellWidget(row, self._column[_STATE], _BadgeWidget())
        right = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        for name in ("Events/s", "Last event", *self.model.fields, "Run"):
            item = QTableWidgetItem()
            item.setTextAlignment(right)
            self.table.setItem(row, self._column[name], item)
        self.table.setItem(row, self._column[_ALERTS], QTableWidgetItem())
        self.table.setItem(row, self._column[_QUALITY], QTableWidgetItem())
        if self._on_restart is not None:
            self.table.setCellWidget(
                row, self._column[_RESTART], _RestartCell(source, self._restart)
            )
        self._fit_table()
        return row

    def _restart(self, source: str) -> None:
        """A click on ``source``'s Restart button: only a source that gave up is restarted."""
        info = self.model.rows.get(source)
        cell = self._restart_cell(source)
        if info is None or not info.gave_up or cell is None or not cell.button.isEnabled():
            return  # live (or already asked): nothing to restart
        cell.clicked_on = info.status
        cell.clicked_at = time.monotonic()
        cell.button.setEnabled(False)  # until the source's next state, or RESTART_PATIENCE
        if self._on_restart is not None:
            self._on_restart(source)

    def _fit_table(self) -> None:
        height = self.table.horizontalHeader().height() + 2 * self.table.frameWidth()
        for row in range(self.table.rowCount()):
            height += self.table.rowHeight(row)
        if self.table.horizontalScrollBar().isVisible():
            height += self.table.horizontalScrollBar().height()
        self.table.setFixedHeight(height + 4)

    def style_of(self, source: str) -> tuple[str, Qt.PenStyle]:
        """The colour and line style of ``source``'s curves: a colour per row; in an
        overlay of recordings (``train@a``, ``train@b``) also a line style per
        recording (solid, dashed, dotted, ...)."""
        index = self._colour_index.get(source)
        if index is None:  # the rows' order: the same colour in every plot and run
            for name in (*self.model.rows, source):
                self._colour_index.setdefault(name, len(self._colour_index))
            index = self._colour_index[source]
        colour = _CURVE_COLOURS[index % len(_CURVE_COLOURS)]
        info = self.model.rows.get(source)
        recording = None if info is None else info.recording
        style = Qt.PenStyle.SolidLine
        if recording is not None:
            if recording not in self._recordings:
                self._recordings.append(recording)
            index = self._recordings.index(recording)
            style = _RECORDING_STYLES[index % len(_RECORDING_STYLES)]
        return colour, style

    def colour_of(self, source: str) -> str:
        return self.style_of(source)[0]

    # -- painting --------------------------------------------------------

    def refresh(self) -> None:
        """Repaint rows and curves from the model (the timer calls this)."""
        default_now = self._clock()
        clocks = self._clocks
        needed = 0
        for name, info in self.model.rows.items():
            row = self._ensure_row(name)
            clock = clocks.get(info.recording) if info.recording is not None else None
            now = default_now if clock is None else clock()
            badge = self.table.cellWidget(row, self._column[_STATE])
            assert isinstance(badge, _BadgeWidget)
            quiet = info.quiet(now)
            badge.show_badge(
                badge_for(info.status, now, quiet=quiet, threshold=info.watch.threshold())
            )
            needed = max(needed, badge.name_width())
            self._set_text(row, "Events/s", format_rate(info.meter.rate(now)))
            age = None if info.last_event_at is None else now - info.last_event_at
            self._set_text(row, "Last event", format_age(age), STALE if quiet else None)
            for field in self.model.fields:
                curve = self.model.curve(field, name)
                value = None if curve is None else curve.last_value()
                finite = value is None or value - value == 0.0
                self._set_text(row, field, format_value(value), None if finite else RED)
            self._set_text(row, "Run", str(info.run))
            self._show_alerts(row, info)
            quality = quality_text(info.quality)
            if self._set_text(row, _QUALITY, quality):
                item = self.table.item(row, self._column[_QUALITY])
                if item is not None:
                    item.setToolTip(plain_tooltip(quality))
            self._show_restart(row, info)
        self._keep_state_readable(needed)
        if self.replay is not None:
            self._show_pace(self.replay)
        for view in self.views.values():
            view.refresh()
        dropped = self._dropped()
        self.footer.setText(
            f"{dropped:,} events dropped: the panel fell behind its buffer "
            "(raise the sink's buffer, or plot fewer fields)"
            if dropped
            else "Every received event is plotted (min/max per pixel when zoomed out)."
        )
        self.frames += 1

    def _keep_state_readable(self, needed: int) -> None:
        """The window never gets so narrow that a state's name would be cut."""
        header = self.table.horizontalHeader()
        state = self._column[_STATE]
        others = sum(header.sectionSize(i) for i in range(len(self.columns)) if i != state)
        minimum = others + needed + 2 * self.table.frameWidth() + 4
        if self.table.minimumWidth() < minimum:
            self.table.setMinimumWidth(minimum)

    def _show_alerts(self, row: int, info: SourceRow) -> None:
        item = self.table.item(row, self._column[_ALERTS])
        if item is None or not info.alerts:
            return
        last = info.alerts[-1]
        text = f"{info.alerts_seen} · {last.severity} {last.rule}: {last.message}"
        if item.text() != text:
            item.setText(text)
            lines = [
                f"{_clock_text(a.raised_at)} {a.severity} {a.rule}: {a.message}"
                for a in info.alerts
            ]
            if info.alerts_seen > len(lines):
                lines.insert(0, f"(the newest {len(lines)} of {info.alerts_seen})")
            item.setToolTip(plain_tooltip("\n".join(lines)))
            item.setForeground(QColor(severity_colour(last.severity)))

    def _show_restart(self, row: int, info: SourceRow) -> None:
        cell = self.table.cellWidget(row, self._column[_RESTART])
        if not isinstance(cell, _RestartCell):
            return
        button = cell.button
        show = info.gave_up
        if button.isHidden() == show:
            button.setVisible(show)
        if not button.isEnabled() and (
            info.status is not cell.clicked_on
            or time.monotonic() - cell.clicked_at > RESTART_PATIENCE
        ):
            button.setEnabled(True)  # a new state came (or none for a while): ask again
            cell.clicked_on = None

    def _set_text(self, row: int, column: str, text: str, colour: str | None = None) -> bool:
        """Show ``text`` (in ``colour``); True when the text changed."""
        item = self.table.item(row, self._column[column])
        if item is None:
            return False
        changed = item.text() != text
        if changed:
            item.setText(text)
        brush = item.foreground()
        wanted = QColor(colour) if colour is not None else None
        if wanted is not None and brush.color() != wanted:
            item.setForeground(wanted)
        elif wanted is None and brush.style() != Qt.BrushStyle.NoBrush:
            item.setData(Qt.ItemDataRole.ForegroundRole, None)
        return changed

    # -- reading (tests, scripts) ----------------------------------------

    def _restart_cell(self, source: str) -> _RestartCell | None:
        row = self._row_of.get(source)
        widget = None if row is None else self.table.cellWidget(row, self._column[_RESTART])
        return widget if isinstance(widget, _RestartCell) else None

    def badge(self, source: str) -> Badge:
        """The badge currently shown for ``source``."""
        widget = self.badge_widget(source)
        return widget.badge

    def badge_widget(self, source: str) -> _BadgeWidget:
        widget = self.table.cellWidget(self._row_of[source], self._column[_STATE])
        assert isinstance(widget, _BadgeWidget)
        return widget

    def cell_text(self, source: str, column: str) -> str:
        """The text shown in ``column`` (a header, e.g. "Events/s") for ``source``."""
        item = self.table.item(self._row_of[source], self._column[column])
        return "" if item is None else item.text()

    def cell_tooltip(self, source: str, column: str) -> str:
        """The tooltip of ``column`` for ``source``, as plain text."""
        item = self.table.item(self._row_of[source], self._column[column])
        tip = "" if item is None else item.toolTip()
        return html.unescape(tip.removeprefix("<qt>").removesuffix("</qt>").replace("<br>", "\n"))

    def cell_colour(self, source: str, column: str) -> str | None:
        """The text colour of ``column`` for ``source`` ("#rrggbb"), None: the default."""
        item = self.table.item(self._row_of[source], self._column[column])
        if item is None or item.foreground().style() == Qt.BrushStyle.NoBrush:
            return None
        return str(item.foreground().color().name())

    def restart_button(self, source: str) -> QPushButton | None:
        """The "Restart" button of ``source``'s row (None without ``on_restart``)."""
        cell = self._restart_cell(source)
        return None if cell is None else cell.button

    def curve(self, field: str, source: str) -> pg.PlotDataItem | None:
        """The curve of ``field`` from ``source``'s newest run, once it has points."""
        view = self.views.get(field)
        return None if view is None else view.item(source)

    def source_names(self) -> list[str]:
        """The rows, in order."""
        items = (self.table.item(row, 0) for row in range(self.table.rowCount()))
        return [item.text() for item in items if item is not None]

    # -- closing ---------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once the window was closed (Qt then deletes it: do not touch it)."""
        return self._closed

    def close_quietly(self) -> None:
        """Close the window without asking the run to stop (it is ending anyway)."""
        self._quiet = True
        self.timer.stop()
        self.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        self._closed = True
        self.timer.stop()
        if not self._quiet:
            self._quiet = True
            self._on_close()
        event.accept()
