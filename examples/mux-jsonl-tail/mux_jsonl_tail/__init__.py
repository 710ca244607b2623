"""mux_jsonl_tail: follow a growing JSON Lines file as a mux source; write CSV.

A third-party mux plugin. It is found through the entry point
``[project.entry-points.mux] jsonl-tail = "mux_jsonl_tail"`` and uses only
the public API of ``mux_core``. It provides:

* the transport ``jsonl-tail`` (:class:`TailTransport`),
* the sink ``csv`` (:class:`CsvSink`), and
* the processor ``above`` (:class:`AboveProcessor`): an alert while a field is
  above a limit, and
* the command ``mux jsonl-stats FILE.jsonl`` (:func:`jsonl_stats`): what a
  recorded run holds, per source.
"""

from __future__ import annotations

from typing import Any

from mux_core import hookimpl

from .above import AboveOptions, AboveProcessor
from .csv_sink import CsvOptions, CsvSink
from .stats import add_arguments, jsonl_stats
from .tail import TailCursor, TailOptions, TailTransport

__all__ = [
    "AboveOptions",
    "AboveProcessor",
    "CsvOptions",
    "CsvSink",
    "TailCursor",
    "TailOptions",
    "TailTransport",
    "jsonl_stats",
    "mux_register_commands",
    "mux_register_processors",
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


@hookimpl
def mux_register_processors(register: Any) -> None:
    """Provide ``[[processors]] type = "above"``."""
    register("above", AboveProcessor)


@hookimpl
def mux_register_commands(register: Any) -> None:
    """Provide ``mux jsonl-stats FILE.jsonl``."""
    register("jsonl-stats", add_arguments, jsonl_stats, help="count a recorded run's records")
