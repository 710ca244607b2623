"""mux_file: the ``file`` sink -- every record as JSON Lines on disk.

Registered through the ``mux`` entry point like any third-party plugin.
"""

from __future__ import annotations

from typing import Any

from mux_core.hookspecs import hookimpl

from .sink import FileOptions, FileSink

__all__ = ["FileOptions", "FileSink"]


@hookimpl
def mux_register_sinks(register: Any) -> None:
    register("file", FileSink)
