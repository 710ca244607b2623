"""One way for every fake server of the kit to listen on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import trio

__all__ = ["serve_loopback"]


async def serve_loopback(
    port: int,
    handle: Callable[[trio.SocketStream], Awaitable[None]],
    bound: Callable[[int], None],
    *,
    task_status: trio.TaskStatus[trio.CancelScope],
) -> None:
    """Serve ``handle`` per connection on 127.0.0.1:``port`` (0 = a free port).

    ``bound(port)`` is told the port actually bound before anyone can
    connect; ``task_status.started`` gets the cancel scope that stops the
    server (the listeners are closed at once, connections are cancelled).
    """
    with trio.CancelScope() as scope:
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        try:
            bound(listeners[0].socket.getsockname()[1])
            async with trio.open_nursery() as connections:
                serve = partial(
                    trio.serve_listeners, handle, listeners, handler_nursery=connections
                )
                await connections.start(serve)
                task_status.started(scope)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)
