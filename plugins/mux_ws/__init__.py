"""mux_ws: the WebSocket transport, registered as ``transport = "ws"``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mux_core.hookspecs import hookimpl

from .transport import WsOptions, WsTransport

__all__ = ["WsOptions", "WsTransport", "mux_register_transports"]


@hookimpl
def mux_register_transports(register: Callable[[str, type[Any]], None]) -> None:
    register("ws", WsTransport)
