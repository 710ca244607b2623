"""Run the engine as a trio guest inside Qt's event loop.

Qt must own the main thread, and trio's guest mode lets it: trio asks its
host to "run this callback on the main thread soon" and we answer by posting
a QEvent to a small QObject, which Qt delivers from its own loop. No extra
threads of ours, no polling: the UI never freezes, and trio's timers and I/O
wake Qt only when there is something to do. (qtrio does the same; it is
thinly maintained, so this is the twenty lines we need.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import outcome
import trio
from PySide6.QtCore import QCoreApplication, QEvent, QObject

from mux_core.hookspecs import Runnable

from .panel import ensure_application

__all__ = ["run_as_guest"]


_CALL = QEvent.Type(QEvent.registerEventType())


class _CallEvent(QEvent):
    """Carries one trio callback to the main thread."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(_CALL)
        self.fn = fn


class _Reenter(QObject):
    """Runs the callbacks that :class:`_CallEvent` carries, on Qt's thread."""

    def event(self, event: QEvent) -> bool:
        if event.type() == _CALL:
            assert isinstance(event, _CallEvent)
            event.fn()
            return True
        return super().event(event)


def run_as_guest(engine: Runnable) -> bool:
    """Run ``engine.run()`` as a trio guest of the Qt event loop, until it ends.

    Returns True once the engine has finished (it has set ``engine.result``);
    re-raises whatever ``engine.run`` raised. If something quits the Qt loop
    while the engine still runs, the engine is asked to stop and the loop
    resumes until it has, so sinks are always closed cleanly.
    """
    app = ensure_application()
    quit_on_close = app.quitOnLastWindowClosed()
    # Closing the panel asks the engine to stop; the app quits when it has.
    app.setQuitOnLastWindowClosed(False)
    reenter = _Reenter()
    done: list[outcome.Outcome[Any]] = []

    def run_sync_soon_threadsafe(fn: Callable[[], object]) -> None:
        QCoreApplication.postEvent(reenter, _CallEvent(fn))

    def done_callback(result: outcome.Outcome[Any]) -> None:
        done.append(result)
        app.quit()

    try:
        trio.lowlevel.start_guest_run(
            engine.run,
            run_sync_soon_threadsafe=run_sync_soon_threadsafe,
            done_callback=done_callback,
        )
        while not done:
            app.exec()
            if not done:
                engine.request_stop("Qt event loop quit")
    finally:
        app.setQuitOnLastWindowClosed(quit_on_close)
    done[0].unwrap()
    return True
