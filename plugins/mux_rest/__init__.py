"""mux_rest: the ``rest`` transport (poll a JSON endpoint; ETag, cursor, no duplicates).

Registered through the ``mux`` entry point like any third-party plugin.
"""

from __future__ import annotations

from typing import Any

from mux_core.hookspecs import hookimpl

from .transport import RestOptions as RestOptions
from .transport import RestTransport as RestTransport

__all__ = ["RestOptions", "RestTransport", "mux_register_transports"]


@hookimpl
def mux_register_transports(register: Any) -> None:
    """Provide ``transport = "rest"``."""
    register("rest", RestTransport)
