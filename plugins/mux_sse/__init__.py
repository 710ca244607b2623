"""mux_sse: the ``sse`` transport (Server-Sent Events, WHATWG event-stream rules).

Registered through the ``mux`` entry point like any third-party plugin. The
parser (:class:`SseParser`) is usable on its own; the HTTP client helpers in
``mux_core.http`` are shared with the REST transport (key ``"httpx"``).
"""

from __future__ import annotations

from typing import Any

from mux_core.hookspecs import hookimpl

from ._parser import SseEvent as SseEvent
from ._parser import SseParser as SseParser
from .transport import SseOptions as SseOptions
from .transport import SseTransport as SseTransport

__all__ = ["SseEvent", "SseOptions", "SseParser", "SseTransport", "mux_register_transports"]


@hookimpl
def mux_register_transports(register: Any) -> None:
    """Provide ``transport = "sse"``."""
    register("sse", SseTransport)
