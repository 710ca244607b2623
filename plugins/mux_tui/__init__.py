"""mux_tui: the ``tui`` sink, a live table of the sources in the terminal.

The same view as the Qt panel, for people who watch training over SSH::

    [[sinks]]
    type = "tui"
    plot = ["loss", "lr"]

On a terminal, the key ``r`` restarts the sources that gave up.
"""

from __future__ import annotations

from mux_core.hookspecs import Register, hookimpl

from ._render import sparkline
from ._sink import TuiOptions, TuiSink

__all__ = ["TuiOptions", "TuiSink", "sparkline"]


@hookimpl
def mux_register_sinks(register: Register) -> None:
    register("tui", TuiSink)
