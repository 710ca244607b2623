"""Fake HTTP stream servers (SSE and REST) with scriptable faults.

The public names that :mod:`mux_core.testing` re-exports::

    async with serve_sse() as server:             # or serve_rest()
        server.script(Respond(503, {"Retry-After": "1"}), Drop(after=2))
        await server.publish({"step": 1, "loss": 0.5}, event="metric")
        ...                                       # point a client at server.url
        await server.stop(); await server.start() # kill and restart, same port

Faults: :class:`Respond`, :class:`Stall`, :class:`Drop`, :class:`Raw`,
:class:`Close` -- each new request pops the next scripted one.
"""

from __future__ import annotations

from ._http import (
    Action,
    Close,
    Drop,
    Raw,
    RequestInfo,
    Respond,
    Stall,
    StoredEvent,
)
from ._rest import FakeRestServer, serve_rest
from ._sse import FakeSseServer, serve_sse

__all__ = [
    "Action",
    "Close",
    "Drop",
    "FakeRestServer",
    "FakeSseServer",
    "Raw",
    "RequestInfo",
    "Respond",
    "Stall",
    "StoredEvent",
    "serve_rest",
    "serve_sse",
]
