"""The ``qt`` sink: feeds records to the panel window.

Importing this module does not import Qt; :meth:`QtSink.open` does, so the
sink can be registered and its options checked where PySide6 is missing.

Two ways to run it:

* ``mux run`` with a ``qt`` sink: :func:`mux_qt.guest.run_as_guest` runs the
  whole engine as a trio guest inside Qt's event loop, and the window is as
  responsive as any Qt application.
* Any other trio run (``trio.run``, a test, an embedding program): ``open``
  creates a QApplication if there is none, and because no Qt event loop is
  running it starts a background task that processes Qt events every 50 ms,
  so the window still repaints and still answers a close.
"""

from __future__ import annotations

import functools
import sys
import time
from typing import TYPE_CHECKING, ClassVar

from mux_core import Sink
from mux_core.records import Batch
from mux_core.sink import SinkContext
from mux_core.views import ViewClock

from .options import QtOptions, cannot_start, require_qt

if TYPE_CHECKING:
    from .model import PanelModel
    from .panel import QtPanel

# trio is imported by the methods that use it: loading the plugin (every mux
# command does) does not pay for it.

__all__ = ["QtSink"]

_PUMP_INTERVAL = 0.05


class QtSink(Sink):
    """Shows every source's state and live plots in a Qt window.

    Closing the window asks the run to stop ("window closed"): sources stop,
    the other sinks flush, and the app quits when the engine is done.
    """

    Options: ClassVar[type[QtOptions]] = QtOptions
    #: Every event reaches the plots: the panel's ingest is cheap (list
    #: appends), so it keeps up far beyond 100k events/s; if it ever falls a
    #: whole buffer behind, the oldest events are dropped and counted rather
    #: than holding up the sources (and a ``block`` file sink beside it).
    default_overflow: ClassVar[str] = "drop_oldest"
    default_buffer: ClassVar[int] = 100_000
    default_on_error: ClassVar[str] = "stop"
    #: ``mux replay`` into the panel plays at the recorded pace (the replay bar
    #: pauses it and makes it faster or slower; ``--speed`` sets it).
    default_replay_speed: ClassVar[float] = 1.0

    def __init__(self, options: QtOptions, context: SinkContext) -> None:
        # The model (numpy columns) is imported only when a run has a panel:
        # every mux command loads this plugin, and numpy costs ~0.2 s to import.
        from .model import PanelModel

        self.options = options
        self.context = context
        self.model: PanelModel = PanelModel(
            context.sources,
            fields=options.plot,
            x=options.x,
            history=options.history,
            keep_runs=options.keep_runs,
            time_field=options.time_field or None,
        )
        for field in options.plot:
            self.model.set_smoothing(field, options.smoothing)
        #: The wall clock, or the recording's time during a replay.
        self.clock: ViewClock = ViewClock(time.time)
        #: With several recordings (``mux replay a.jsonl b.jsonl``), each one's
        #: own time: they may have been recorded days apart.
        self.clocks: dict[str, ViewClock] = {}
        if len(context.recordings) > 1:
            self.clocks = {label: ViewClock(time.time) for label in context.recordings}
        #: When the replay was paused (wall clock), while it is.
        self._paused_at: float | None = None
        #: The window, from ``open()`` until ``aclose()``.
        self.panel: QtPanel | None = None

    async def open(self) -> None:
        import trio

        require_qt()
        widgets = sys.modules.get("PySide6.QtWidgets")
        if widgets is None or widgets.QApplication.instance() is None:
            problem = cannot_start()  # before Qt loads a library it may abort on
            if problem is not None:
                raise RuntimeError(problem)
        from PySide6.QtCore import QThread

        from .panel import QtPanel, ensure_application

        app = ensure_application()
        recordings = self.context.recordings
        self.panel = QtPanel(
            self.model,
            title=f"mux — {self.context.config_name}",
            on_close=self._window_closed,
            dropped=self.context.dropped,
            log_y=tuple(self.options.log_y),
            clock=self._now,
            on_restart=self.context.restart_source,
            # Several recordings overlaid: their runs line up by step, not by time.
            x_mode="step" if len(recordings) > 1 else None,
            recordings=recordings,
            recording_clocks={
                label: functools.partial(self._now, clock) for label, clock in self.clocks.items()
            },
            replay=self.context.replay,
        )
        self.panel.show()
        if self.context.replay is not None:
            self.context.replay.watch(self._replay_changed)
            self._replay_changed()
        if QThread.currentThread().loopLevel() == 0:
            # No Qt event loop runs this thread (not a guest run): pump it.
            async def pump() -> None:
                while True:
                    app.processEvents()
                    await trio.sleep(_PUMP_INTERVAL)

            self.context.start_background(pump)

    def _now(self, clock: ViewClock | None = None) -> float:
        """``clock``'s time (the sink's clock by default) -- standing still while a
        replay is paused, so no age grows and no source goes stale meanwhile."""
        clock = self.clock if clock is None else clock
        paused_at = self._paused_at
        return clock() if paused_at is None else paused_at - clock.lag

    def _replay_changed(self) -> None:
        """The replay was paused or resumed (called by the ReplayControl, in the
        thread that changed it): the time it stood still is not the recording's."""
        replay = self.context.replay
        if replay is None:
            return
        if replay.paused and self._paused_at is None:
            self._paused_at = self.clock.wall()
        elif not replay.paused and self._paused_at is not None:
            paused_for = self.clock.wall() - self._paused_at
            self._paused_at = None
            for clock in (self.clock, *self.clocks.values()):
                clock.lag += paused_for

    async def write(self, batch: Batch) -> None:
        self.model.apply(batch)
        self.clock.saw(batch)
        if len(self.clocks) > 1:
            self._saw_per_recording(batch)

    def _saw_per_recording(self, batch: Batch) -> None:
        """Each recording's clock notes the newest record of that recording."""
        rows = self.model.rows
        pending = set(self.clocks)
        for record in reversed(batch):
            row = rows.get(record.source)
            label = None if row is None else row.recording
            if label in pending:
                assert label is not None
                pending.discard(label)
                self.clocks[label].saw([record])
                if not pending:
                    return

    async def aclose(self) -> None:
        panel, self.panel = self.panel, None
        if panel is not None and not panel.closed:
            panel.refresh()
            panel.close_quietly()

    def _window_closed(self) -> None:
        self.context.request_stop("window closed")
