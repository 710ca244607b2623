"""The panel window: a banner, one row per source, and live plots.

Imports PySide6 and pyqtgraph at module level: only import this module once
the Qt extra is known to be installed (:func:`mux_qt.options.require_qt`).
The widgets only paint what :class:`mux_qt.model.PanelModel` holds; a QTimer
repaints 12.5 times a second, so the retry countdown, events/s and "last
event" keep moving between records, and a burst of records costs one
repaint, not one per record.

Every point is handed to pyqtgraph; it draws what fits the pixels: clip to
the visible x range, then per group of points the min and the max ("peak"
downsampling), so a one-step spike survives at any zoom. Each run segment of
a source is a curve of its own (older runs faded), an outage is a gap in the
line (``connect="finite"``), and outages, restarts and alerts are marked.
"""

from __future__ import annotations

import datetime
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from mux_core.records import State
from mux_core.views import format_age, format_rate, format_value

from .model import (
    Badge,
    Curve,
    PanelModel,
    SourceRow,
    badge_for,
    quality_text,
    severity_colour,
)
from .series import S, Segment, T

__all__ = ["BANNER", "PlotView", "QtPanel", "ensure_application"]

BANNER = (
    "Client only: mux watches streams that other programs serve. "
    "It never starts a server and never opens a listening port."
)
_COLUMNS = (
    "Source",
    "Transport",
    "State",
    "Events/s",
    "Last event",
    "Run",
    "Alerts",
    "Quality",
    "",
)
_STATE_COLUMN = 2
_ALERT_COLUMN = 6
_QUALITY_COLUMN = 7
_RESTART_COLUMN = 8
#: States a source can be restarted from (Engine.restart_source).
_RESTARTABLE = frozenset({State.MAX_RETRIES_EXCEEDED, State.FAILED, State.ENDED})
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
#: Repaint period: 12.5 frames per second (at least 10 when the timer runs late).
REFRESH_MS = 80
#: Curves with more points than this are drawn with a 1-pixel pen.
_THICK_POINTS = 5_000
#: Markers drawn per source and kind (outages, alerts): the newest.
_MAX_MARKS = 50
_TIME = "time"
_STEP = "step"


def ensure_application() -> QApplication:
    """The process's QApplication, created if there is none yet."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1] or ["mux"])
        app.setApplicationName("mux")
    assert isinstance(app, QApplication)
    return app


class _BadgeLabel(QLabel):
    """A rounded, coloured state badge."""

    def __init__(self) -> None:
        super().__init__()
        self.badge = Badge("", "")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)

    def show_badge(self, badge: Badge) -> None:
        if badge == self.badge:
            return
        self.badge = badge
        self.setText(badge.text)
        self.setToolTip(badge.text)
        self.setStyleSheet(
            f"QLabel {{ background: {badge.colour}; color: white; font-weight: bold;"
            " border-radius: 8px; padding: 2px 10px; margin: 2px 4px; }"
        )


def _clock_text(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).strftime("%H:%M:%S")


class PlotView(QWidget):
    """One field's plot: its controls (x by step or time, log y, EMA), the plot, a read-out.

    Each run segment of each source is one pyqtgraph curve; only segments
    that got points since the last frame are handed over again.
    """

    def __init__(self, panel: QtPanel, field: str, *, x_mode: str, log_y: bool) -> None:
        super().__init__()
        self.panel = panel
        self.field = field
        self.x_mode = x_mode
        self._items: dict[tuple[str, int], pg.PlotDataItem] = {}
        #: What each newest segment was last drawn with: (x, y), for the read-out.
        self._drawn: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._marks: list[Any] = []
        self._marks_version = -1

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        bar = QHBoxLayout()
        title = QLabel(f"<b>{field}</b>")
        bar.addWidget(title)
        bar.addSpacing(12)
        bar.addWidget(QLabel("x:"))
        self.x_choice = QComboBox()
        step_name = panel.model.step_field
        self.x_choice.addItem(f"by {step_name}", _STEP)
        self.x_choice.addItem("by time", _TIME)
        self.x_choice.setCurrentIndex(0 if x_mode == _STEP else 1)
        self.x_choice.currentIndexChanged.connect(self._x_changed)
        bar.addWidget(self.x_choice)
        self.log_y = QCheckBox("log y")
        self.log_y.setChecked(log_y)
        self.log_y.toggled.connect(self._log_changed)
        bar.addWidget(self.log_y)
        bar.addWidget(QLabel("smoothing:"))
        self.smoothing = QDoubleSpinBox()
        self.smoothing.setRange(0.0, 0.999)
        self.smoothing.setSingleStep(0.1)
        self.smoothing.setDecimals(3)
        self.smoothing.setToolTip("EMA weight of the past (0 = off, 0.9 = smooth)")
        self.smoothing.setValue(panel.model.smoothing_of(field))
        self.smoothing.valueChanged.connect(self._smoothing_changed)
        bar.addWidget(self.smoothing)
        bar.addStretch(1)
        self.readout = QLabel("")
        self.readout.setStyleSheet("QLabel { color: #333333; font-family: monospace; }")
        bar.addWidget(self.readout)
        layout.addLayout(bar)

        self.widget = pg.PlotWidget()
        self.plot: pg.PlotItem = self.widget.getPlotItem()
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        for side in ("left", "bottom"):
            self.plot.getAxis(side).setStyle(maxTickLevel=0)
        self.plot.setLabel("left", field)
        self.plot.addLegend(offset=(-10, 10))
        self.plot.setLogMode(x=False, y=log_y)
        self.crosshair = pg.InfiniteLine(
            angle=90, pen=pg.mkPen("#999999", style=Qt.PenStyle.DotLine)
        )
        self.crosshair.setVisible(False)
        self.plot.addItem(self.crosshair, ignoreBounds=True)
        self._axis()
        layout.addWidget(self.widget, stretch=1)
        self.widget.scene().sigMouseMoved.connect(self._mouse_moved)

    # -- controls ----------------------------------------------------------

    def _axis(self) -> None:
        if self.x_mode == _TIME:
            self.plot.setAxisItems({"bottom": pg.DateAxisItem(orientation="bottom")})
            self.plot.setLabel("bottom", "time")
        else:
            self.plot.setAxisItems({"bottom": pg.AxisItem(orientation="bottom")})
            self.plot.setLabel("bottom", self.panel.model.step_field)
        bottom = self.plot.getAxis("bottom")
        bottom.setStyle(maxTickLevel=0)
        bottom.setGrid(int(0.25 * 255))

    def set_x_mode(self, mode: str) -> None:
        """Draw against the step field ("step") or the receive time ("time")."""
        if mode == self.x_mode:
            return
        self.x_mode = mode
        self.x_choice.setCurrentIndex(0 if mode == _STEP else 1)
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

    # -- drawing -----------------------------------------------------------

    def _xy(self, segment: Segment) -> tuple[np.ndarray, np.ndarray]:
        y = segment.values()
        x = segment.column(S if self.x_mode == _STEP else T)
        if self.x_mode == _STEP:
            finite = np.isfinite(x)
            if not finite.all():  # events without the step field
                x, y = x[finite], y[finite]
        return x, y

    def refresh(self) -> None:
        """Hand new points to pyqtgraph; drop curves of runs no longer kept."""
        curves = self.panel.model.curves[self.field]
        live: set[tuple[str, int]] = set()
        for source, curve in curves.items():
            newest = curve.segments[-1].run if curve.segments else 0
            for segment in curve.segments:
                key = (source, segment.run)
                live.add(key)
                item = self._items.get(key)
                if item is None:
                    if not len(segment):
                        continue
                    item = self._new_item(curve, segment)
                elif not segment.dirty:
                    continue
                segment.dirty = False
                x, y = self._xy(segment)
                item.setData(x, y, connect="finite")
                if segment.run == newest:
                    self._drawn[source] = (x, y)
                self._style(item, source, current=segment.run == newest, points=len(x))
        for key in [key for key in self._items if key not in live]:
            self.plot.removeItem(self._items.pop(key))
        if self._marks_version != self.panel.model.marks_version:
            self._draw_marks()

    def _new_item(self, curve: Curve, segment: Segment) -> pg.PlotDataItem:
        name = curve.source if segment.run == 1 else f"{curve.source} (run {segment.run})"
        # min and max of the points under each pixel column: spikes survive
        item = self.plot.plot(name=name, autoDownsampleFactor=1.0, antialias=True)
        item.setDownsampling(auto=True, method="peak")
        item.setClipToView(True)
        self._items[curve.source, segment.run] = item
        return item

    def _style(self, item: pg.PlotDataItem, source: str, *, current: bool, points: int) -> None:
        colour = QColor(self.panel.colour_of(source))
        if not current:
            colour.setAlpha(90)
        # Qt strokes an antialiased path wider than 1 px ~40x slower (4 curves of
        # 100k points: 300 ms a frame at width 2, 7 ms at width 1).
        width = 2 if current and points <= _THICK_POINTS else 1
        pen = pg.mkPen(colour, width=width)
        if item.opts["pen"] != pen:
            item.setPen(pen)

    def _draw_marks(self) -> None:
        for mark in self._marks:
            self.plot.removeItem(mark)
        self._marks = []
        self._marks_version = self.panel.model.marks_version
        by_time = self.x_mode == _TIME
        for index, row in enumerate(self.panel.model.rows.values()):
            colour = QColor(self.panel.colour_of(row.name))
            for outage in list(row.outages)[-_MAX_MARKS:]:
                if by_time:
                    fill = QColor(colour)
                    fill.setAlpha(40)
                    region = pg.LinearRegionItem(
                        (outage.start, outage.end), movable=False, brush=fill, pen=pg.mkPen(None)
                    )
                    region.setToolTip(f"{row.name}: not connected")
                    self._add_mark(region)
                elif math.isfinite(outage.start_step):
                    pen = pg.mkPen(colour, style=Qt.PenStyle.DotLine)
                    self._add_mark(pg.InfiniteLine(outage.start_step, angle=90, pen=pen))
            for alert in list(row.alerts)[-_MAX_MARKS:]:
                pos = alert.at if by_time else alert.step
                if not math.isfinite(pos):
                    continue
                pen = pg.mkPen(severity_colour(alert.severity), width=1.5)
                line = pg.InfiniteLine(
                    pos,
                    angle=90,
                    pen=pen,
                    label=alert.rule,
                    labelOpts={"position": 0.92, "color": severity_colour(alert.severity)},
                )
                line.setToolTip(f"{row.name}: {alert.message}")
                self._add_mark(line)
            if by_time:
                self._mark_runs(row, colour, index)

    def _mark_runs(self, row: SourceRow, colour: QColor, index: int) -> None:
        for curves in self.panel.model.curves.values():
            curve = curves.get(row.name)
            if curve is None:
                continue
            for segment in list(curve.segments)[1:]:
                start = segment.column(T)
                if len(start):
                    pen = pg.mkPen(colour, style=Qt.PenStyle.DashLine, width=1.5)
                    label = f"{row.name}: run {segment.run}"
                    line = pg.InfiniteLine(
                        float(start[0]),
                        angle=90,
                        pen=pen,
                        label=label,
                        # one label height apart per source, so they do not overlap
                        labelOpts={"position": 0.06 + 0.08 * (index % 8), "color": colour},
                    )
                    self._add_mark(line)
            return

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
        """Show (and return) the values of each source's newest run nearest to ``x``."""
        self.crosshair.setPos(x)
        self.crosshair.setVisible(True)
        parts = []
        for source, (xs, ys) in self._drawn.items():
            if not len(xs):
                continue
            index = int(np.searchsorted(xs, x))
            if index >= len(xs) or (index > 0 and x - xs[index - 1] < xs[index] - x):
                index -= 1
            index = max(index, 0)
            value = float(ys[index])
            if math.isfinite(value):
                parts.append(f"{source} {format_value(value)}")
        where = _clock_text(x) if self.x_mode == _TIME else f"{x:,.0f}"
        text = f"{self.x_mode} {where}: " + " · ".join(parts) if parts else ""
        self.readout.setText(text)
        return text

    def item(self, source: str) -> pg.PlotDataItem | None:
        """The curve of ``source``'s newest run."""
        runs = [run for (name, run) in self._items if name == source]
        return self._items.get((source, max(runs))) if runs else None

    def items(self, source: str) -> list[pg.PlotDataItem]:
        """Every kept run's curve of ``source``, oldest first."""
        return [self._items[key] for key in sorted(k for k in self._items if k[0] == source)]

    def marks(self) -> list[Any]:
        return list(self._marks)


class QtPanel(QWidget):
    """The mux panel: a status row per source and one plot per chosen field.

    ``on_close`` runs when the user closes the window (the sink asks the run
    to stop); :meth:`close_quietly` closes it without that, when the run is
    already ending. ``on_restart(source)``, when given, is what a row's
    "Restart" button calls; the button shows while the source is in
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
    ) -> None:
        super().__init__()
        self.model = model
        self._on_close = on_close
        self._on_restart = on_restart
        self._dropped = dropped
        self._clock = clock
        self._quiet = False
        self._closed = False
        self._row_of: dict[str, int] = {}
        self._restart_seen: dict[int, Any] = {}
        self.setWindowTitle(title)
        self.resize(1000, 760)
        # Deleted by Qt once closed, while the application still runs: left to
        # Python's shutdown, pyqtgraph's items are asked for size hints half torn down.
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)

        layout = QVBoxLayout(self)
        banner = QLabel(BANNER + (f" {subtitle}" if subtitle else ""))
        banner.setWordWrap(True)
        banner.setStyleSheet(
            "QLabel { background: #e3f2fd; color: #0d47a1; border: 1px solid #90caf9;"
            " border-radius: 4px; padding: 6px; }"
        )
        self.banner = banner
        layout.addWidget(banner)

        self.table = QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(_COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(30)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(_STATE_COLUMN, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(_ALERT_COLUMN, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(_ALERT_COLUMN, 240)  # the full list is the cell's tooltip
        layout.addWidget(self.table)

        # Antialiasing for the curves only, and a grid at the major ticks only:
        # an antialiased alpha grid at every tick level cost more than all the
        # curves together (offscreen, 4 curves of 100k points: ~25 ms vs ~5 ms).
        pg.setConfigOptions(antialias=False, background="w", foreground="#333333")
        default_x = _TIME if model.x == "received_at" else _STEP
        self.views: dict[str, PlotView] = {}
        for field in model.fields:
            view = PlotView(self, field, x_mode=default_x, log_y=field in log_y)
            self.views[field] = view
            layout.addWidget(view, stretch=1)
        if not self.views:
            hint = QLabel('No plots: list numeric fields with plot = ["loss", "lr"].')
            hint.setStyleSheet("QLabel { color: #666666; }")
            layout.addWidget(hint)
            layout.addStretch(1)

        self.footer = QLabel()
        self.footer.setStyleSheet("QLabel { color: #555555; }")
        layout.addWidget(self.footer)

        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        #: Frames drawn so far (the benchmark counts them).
        self.frames = 0
        self.refresh()

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
        self.table.setItem(row, 0, QTableWidgetItem(info.name))
        self.table.setItem(row, 1, QTableWidgetItem(info.transport))
        self.table.setCellWidget(row, _STATE_COLUMN, _BadgeLabel())
        for column in (3, 4, 5):
            item = QTableWidgetItem()
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(row, column, item)
        self.table.setItem(row, _ALERT_COLUMN, QTableWidgetItem())
        self.table.setItem(row, _QUALITY_COLUMN, QTableWidgetItem())
        if self._on_restart is not None:
            button = QPushButton("Restart")
            button.setToolTip(f"Start {source} again, from where it stopped")
            button.setVisible(False)
            button.clicked.connect(lambda _checked=False, name=source: self._restart(name))
            self.table.setCellWidget(row, _RESTART_COLUMN, button)
        self._fit_table()
        return row

    def _restart(self, source: str) -> None:
        button = self.restart_button(source)
        if button is not None:
            button.setEnabled(False)  # until a new status arrives
        if self._on_restart is not None:
            self._on_restart(source)

    def _fit_table(self) -> None:
        height = self.table.horizontalHeader().height() + 2 * self.table.frameWidth()
        for row in range(self.table.rowCount()):
            height += self.table.rowHeight(row)
        self.table.setFixedHeight(height + 4)

    def colour_of(self, source: str) -> str:
        index = list(self.model.rows).index(source)
        return _CURVE_COLOURS[index % len(_CURVE_COLOURS)]

    # -- painting --------------------------------------------------------

    def refresh(self) -> None:
        """Repaint rows and curves from the model (the timer calls this)."""
        now = self._clock()
        for name, info in self.model.rows.items():
            row = self._ensure_row(name)
            badge = self.table.cellWidget(row, _STATE_COLUMN)
            assert isinstance(badge, _BadgeLabel)
            badge.show_badge(badge_for(info.status, now))
            self._set_text(row, 3, format_rate(info.meter.rate(now)))
            age = None if info.last_event_at is None else now - info.last_event_at
            self._set_text(row, 4, format_age(age))
            self._set_text(row, 5, str(info.run))
            self._show_alerts(row, info)
            self._set_text(row, _QUALITY_COLUMN, quality_text(info.quality))
            self._show_restart(row, info)
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

    def _show_alerts(self, row: int, info: SourceRow) -> None:
        item = self.table.item(row, _ALERT_COLUMN)
        if item is None or not info.alerts:
            return
        last = info.alerts[-1]
        text = f"{info.alerts_seen} · {last.severity}: {last.message}"
        if item.text() != text:
            item.setText(text)
            item.setToolTip("\n".join(f"{a.severity}: {a.message}" for a in info.alerts))
            item.setForeground(QColor(severity_colour(last.severity)))

    def _show_restart(self, row: int, info: SourceRow) -> None:
        button = self.table.cellWidget(row, _RESTART_COLUMN)
        if not isinstance(button, QPushButton):
            return
        status = info.status
        if status is self._restart_seen.get(row):
            return  # no new status: a clicked button stays disabled until one comes
        self._restart_seen[row] = status
        button.setVisible(status is not None and status.state in _RESTARTABLE)
        button.setEnabled(True)

    def _set_text(self, row: int, column: int, text: str) -> None:
        item = self.table.item(row, column)
        if item is not None and item.text() != text:
            item.setText(text)

    # -- reading (tests, scripts) ----------------------------------------

    def badge(self, source: str) -> Badge:
        """The badge currently shown for ``source``."""
        widget = self.table.cellWidget(self._row_of[source], _STATE_COLUMN)
        assert isinstance(widget, _BadgeLabel)
        return Badge(widget.text(), widget.badge.colour)

    def cell_text(self, source: str, column: str) -> str:
        """The text shown in ``column`` (a header, e.g. "Events/s") for ``source``."""
        item = self.table.item(self._row_of[source], _COLUMNS.index(column))
        return "" if item is None else item.text()

    def restart_button(self, source: str) -> QPushButton | None:
        """The "Restart" button of ``source``'s row (None without ``on_restart``)."""
        widget = self.table.cellWidget(self._row_of[source], _RESTART_COLUMN)
        return widget if isinstance(widget, QPushButton) else None

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
