"""mux_web: the ``web`` sink -- the live panel in any browser, on the one port the config names.

Configure it with a ``[[sinks]]`` table::

    [[sinks]]
    type = "web"
    listen = "127.0.0.1:8765"     # loopback by default; anything else needs a token
    fields = ["loss", "lr"]       # plotted, one plot per field
    token = "${MUX_WEB_TOKEN}"    # optional on loopback

and open ``http://127.0.0.1:8765/`` (from another machine: through
``ssh -L 8765:127.0.0.1:8765 HOST``). The page is plain HTML, JavaScript and
CSS shipped in this package with a vendored copy of uPlot -- no build step,
nothing fetched at run time. Its event stream ``/events`` is a documented
endpoint: another mux reads it with ``transport = "sse"`` and ``relay =
true`` (docs/web.md).

The server is h11 on the run's own trio loop (:mod:`mux_web._server`); h11
and trio are mux's own dependencies, so the ``mux[web]`` extra adds nothing
today.
"""

from __future__ import annotations

from mux_core.hookspecs import Register, hookimpl

from .options import WebOptions
from .sink import WebSink

__all__ = ["WebOptions", "WebSink", "mux_register_sinks"]


@hookimpl
def mux_register_sinks(register: Register) -> None:
    """Provide ``type = "web"``."""
    register("web", WebSink)
