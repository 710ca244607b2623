"""The panel window: a banner, one row per source, and live plots.

Imports PySide6 and pyqtgraph at module level: only import this module once
the Qt extra is known to be installed (:func:`mux_qt.options.require_qt`).
The widgets only paint what :class:`mux_qt.model.PanelModel` holds; a QTimer
repaints a few times per second, so the retry countdown, events/s and
"last event" keep moving between records, and a burst of records costs one
repaint, not one per record.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .model import Badge, PanelModel, badge_for, format_age, format_rate

__all__ = ["BANNER", "QtPanel", "ensure_application"]

BANNER = (
    "Client only: mux watches streams that other programs serve. "
    "It never starts a server and never opens a listening port."
)
_COLUMNS = ("Source", "Transport", "State", "Events/s", "Last event")
_STATE_COLUMN = 2
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
REFRESH_MS = 200


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


class QtPanel(QWidget):
    """The mux panel: a status row per source and one plot per chosen field.

    ``on_close`` runs when the user closes the window (the sink asks the run
    to stop); :meth:`close_quietly` closes it without that, when the run is
    already ending.
    """

    def __init__(
        self,
        model: PanelModel,
        *,
        title: str,
        on_close: Callable[[], None],
        dropped: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.model = model
        self._on_close = on_close
        self._dropped = dropped
        self._clock = clock
        self._quiet = False
        self._row_of: dict[str, int] = {}
        self._curves: dict[tuple[str, str], pg.PlotDataItem] = {}
        self.setWindowTitle(title)
        self.resize(960, 720)

        layout = QVBoxLayout(self)
        banner = QLabel(BANNER)
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
        layout.addWidget(self.table)

        pg.setConfigOptions(antialias=True, background="w", foreground="#333333")
        self.plots: dict[str, pg.PlotItem] = {}
        self.graphics = pg.GraphicsLayoutWidget()
        self._build_plots()
        if self.plots:
            layout.addWidget(self.graphics, stretch=1)
        else:
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
        self.refresh()

    # -- building --------------------------------------------------------

    def _build_plots(self) -> None:
        model = self.model
        first: pg.PlotItem | None = None
        for index, field in enumerate(model.fields):
            axes = {}
            if model.x == "received_at":
                axes["bottom"] = pg.DateAxisItem(orientation="bottom")
            plot = self.graphics.addPlot(row=index, col=0, title=field, axisItems=axes)
            plot.showGrid(x=True, y=True, alpha=0.25)
            plot.setLabel("left", field)
            if index == len(model.fields) - 1:
                plot.setLabel("bottom", "time" if model.x == "received_at" else model.x)
            if first is None:
                first = plot
                plot.addLegend(offset=(-10, 10))
            else:
                plot.setXLink(first)
            self.plots[field] = plot

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
        for column in (3, 4):
            item = QTableWidgetItem()
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(row, column, item)
        self._fit_table()
        return row

    def _fit_table(self) -> None:
        height = self.table.horizontalHeader().height() + 2 * self.table.frameWidth()
        for row in range(self.table.rowCount()):
            height += self.table.rowHeight(row)
        self.table.setFixedHeight(height + 4)

    def _colour_of(self, source: str) -> str:
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
        for field, curves in self.model.series.items():
            for source, series in curves.items():
                if not series.dirty:
                    continue
                series.dirty = False
                curve = self._curves.get((field, source))
                if curve is None:
                    pen = pg.mkPen(self._colour_of(source), width=2)
                    curve = self.plots[field].plot(name=source, pen=pen)
                    self._curves[field, source] = curve
                count = len(series.xs)
                curve.setData(
                    np.fromiter(series.xs, dtype=float, count=count),
                    np.fromiter(series.ys, dtype=float, count=count),
                )
        dropped = self._dropped()
        self.footer.setText(
            f"{dropped:,} events skipped by the 'latest' overflow policy (the plots show a sample)"
            if dropped
            else "Every received event is shown."
        )

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

    def curve(self, field: str, source: str) -> pg.PlotDataItem | None:
        """The curve of ``field`` from ``source``, once it has points."""
        return self._curves.get((field, source))

    def source_names(self) -> list[str]:
        """The rows, in order."""
        items = (self.table.item(row, 0) for row in range(self.table.rowCount()))
        return [item.text() for item in items if item is not None]

    # -- closing ---------------------------------------------------------

    def close_quietly(self) -> None:
        """Close the window without asking the run to stop (it is ending anyway)."""
        self._quiet = True
        self.timer.stop()
        self.close()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.timer.stop()
        if not self._quiet:
            self._quiet = True
            self._on_close()
        event.accept()
