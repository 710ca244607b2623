"""mux_tui: the ``tui`` sink, a live table of the sources in the terminal.

The same view as the Qt panel, for people who watch training over SSH::

    [[sinks]]
    type = "tui"
    plot = ["loss", "lr"]

One line per source, the state's name first (``stale 18 s`` for a connected
source gone quiet), the selected row's whole state on a detail line,
alerts in full below the table, fitted to the terminal's height with the
sources that need a look first. On a terminal, keys scroll (arrows,
PgUp/PgDn), filter (``/`` by name, ``s`` by state), restart the sources
that gave up (``r``) and pace a replay (space, ``+``/``-``).
"""

from __future__ import annotations

from mux_core.hookspecs import Register, hookimpl

from ._render import sparkline
from ._sink import TuiOptions, TuiSink

__all__ = ["TuiOptions", "TuiSink", "sparkline"]


@hookimpl
def mux_register_sinks(register: Register) -> None:
    register("tui", TuiSink)
