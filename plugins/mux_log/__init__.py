"""mux_log: the ``log`` sink -- one line per record through stdlib logging.

Registered through the ``mux`` entry point like any third-party plugin.
"""

from __future__ import annotations

from typing import Any

from mux_core.hookspecs import hookimpl

from .sink import LogOptions, LogSink

__all__ = ["LogOptions", "LogSink"]


@hookimpl
def mux_register_sinks(register: Any) -> None:
    register("log", LogSink)
