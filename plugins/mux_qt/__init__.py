"""mux_qt: a live Qt panel of every source's state, with plots of chosen fields.

Configure it with a ``[[sinks]]`` table::

    [[sinks]]
    type = "qt"
    plot = ["loss", "lr"]     # numeric fields of each event's data
    x = "step"                # or "received_at" (default), or the time_field
    time_field = "ts"         # optional: each event's own time (epoch s or ISO 8601)
    history = 2000            # points kept per curve

``examples/panel.toml`` is a whole panel config for the demo trainer. What a
row and a plot show is told in the user guide ("The Qt panel", "Plots").

PySide6 and pyqtgraph come with the ``mux[qt]`` extra. Without them this
module raises ImportError with the install hint, so ``mux plugins`` lists
the plugin as unavailable with that hint and a config using ``type = "qt"``
fails ``mux check`` with it -- never a traceback. Qt itself is imported only
when a run uses the sink.

When a run has a ``qt`` sink, :func:`mux_main_loop` makes Qt own the main
thread and runs the engine as a trio guest inside it (see :mod:`mux_qt.guest`).
"""

from __future__ import annotations

from typing import Any

from mux_core.errors import PluginError
from mux_core.hookspecs import Register, hookimpl

from .options import INSTALL_HINT, QtOptions, cannot_start, require_qt

require_qt()  # before anything else: the plugin is unavailable without its extra

from .sink import QtSink  # noqa: E402

__all__ = ["INSTALL_HINT", "QtOptions", "QtSink", "mux_main_loop", "mux_register_sinks"]

#: The ``type`` users write in a ``[[sinks]]`` table.
SINK_TYPE = "qt"


@hookimpl
def mux_register_sinks(register: Register) -> None:
    register(SINK_TYPE, QtSink)


@hookimpl
def mux_main_loop(engine: Any) -> bool | None:
    """Run the engine inside Qt's event loop when a ``qt`` sink is configured.

    Raises PluginError (a usage error for ``mux run``, exit 2) when Qt has no
    display to open the window on, or lacks system libraries it would load
    (Qt would abort the process instead: exit 134).
    """
    if not any(sink.type == SINK_TYPE for sink in engine.config.sinks):
        return None
    problem = cannot_start()
    if problem is not None:
        raise PluginError(problem)
    from .guest import run_as_guest

    return run_as_guest(engine)
