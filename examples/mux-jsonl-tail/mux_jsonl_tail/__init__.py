"""mux_jsonl_tail: follow a growing JSON Lines file as a mux source; write CSV.

A third-party mux plugin. It is found through the entry point
``[project.entry-points.mux] jsonl-tail = "mux_jsonl_tail"`` and uses only
the public API of ``mux_core``. It provides:

* the transport ``jsonl-tail`` (:class:`TailTransport`), and
* the sink ``csv`` (:class:`CsvSink`).
"""

from __future__ import annotations

from typing import Any

from mux_core import hookimpl

from .csv_sink import CsvOptions, CsvSink
from .tail import TailCursor, TailOptions, TailTransport

__all__ = [
    "CsvOptions",
    "CsvSink",
    "TailCursor",
    "TailOptions",
    "TailTransport",
    "mux_register_sinks",
    "mux_register_transports",
]


@hookimpl
def mux_register_transports(register: Any) -> None:
    """Provide ``transport = "jsonl-tail"``."""
    register("jsonl-tail", TailTransport)


@hookimpl
def mux_register_sinks(register: Any) -> None:
    """Provide ``[[sinks]] type = "csv"``."""
    register("csv", CsvSink)
