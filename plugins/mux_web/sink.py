"""The ``web`` sink: the live panel in any browser, served from inside the run.

mux never opens a port on its own; this sink is the one explicit exception,
on the address its ``listen`` key names. It binds when it is built -- so a
port already in use stops ``mux run`` before anything connects, with exit
code 2 and the port named -- and serves from ``open()`` on, in a task of
the run's trio loop (:mod:`mux_web._server`): no thread, one task per
connection.

``write`` hands each batch to the :class:`~mux_web._feed.Feed`, which numbers,
keeps and queues it for every viewer without waiting, so a browser -- however
slow -- never slows a source or another sink.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import TYPE_CHECKING, Any, ClassVar

from mux_core import Sink
from mux_core.records import Batch
from mux_core.sink import SinkContext

from .options import WebOptions, is_loopback, parse_listen

if TYPE_CHECKING:
    from ._feed import Feed
    from ._server import WebServer

__all__ = ["PortInUse", "WebSink"]

_log = logging.getLogger("mux.sink.web")

#: Listening sockets held by the web sinks of this process, by address: a
#: reload that rebuilds a web sink takes over its predecessor's socket (the
#: new sink is built while the old one still serves).
_LISTENING: dict[tuple[str, int], socket.socket] = {}


#: Seconds the viewers have, when the sink closes, to be sent what they were given.
_CLOSE_GRACE = 2.0


class PortInUse(Exception):
    """The port ``listen`` names is taken by another program."""


class WebSink(Sink):
    """Serves the page, its event stream and restarts; see the module docstring."""

    Options = WebOptions
    default_overflow: ClassVar[str] = "drop_oldest"
    default_buffer: ClassVar[int] = 100_000
    default_replay_speed: ClassVar[float] = 1.0

    def __init__(self, options: WebOptions, context: SinkContext) -> None:
        self.options = options
        self.context = context
        host, port = parse_listen(options.listen)
        self.host = "127.0.0.1" if host == "localhost" else host
        from ._feed import Feed  # (trio: only a run pays for it)

        self.feed: Feed = Feed(points=options.points, viewer_buffer=options.viewer_buffer)
        self._socket = _bind(self.host, port, options.listen)
        #: The port actually listened on (``listen = "127.0.0.1:0"`` picks a free one).
        self.port: int = self._socket.getsockname()[1]
        self._seen: set[str] = {s.name for s in context.sources}
        self.server: WebServer | None = None

    @property
    def url(self) -> str:
        """Where a browser on this machine opens the page."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}/"

    async def open(self) -> None:
        import trio

        from ._server import Guard, WebServer, load_static

        options = self.options
        guard = Guard(options.token, port=self.port, hosts=options.hosts)
        self.server = WebServer(
            self.feed,
            guard,
            hello=self._hello,
            restart=self._restart,
            static=load_static(),
            max_viewers=options.max_viewers,
        )
        self._socket.listen(128)
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self._socket.dup()))
        server = self.server

        async def serve() -> None:
            async with listener:
                await server.serve(listener)

        self.context.start_background(serve)
        how = "open it once with ?token=<the token>" if options.token else "no token"
        exposed = "" if is_loopback(self.host) else " (reachable from other machines)"
        _log.info("web view at %s%s: %s", self.url, exposed, how)

    async def write(self, batch: Batch) -> None:
        seen = self._seen
        for record in batch:
            if record.source not in seen:
                seen.add(record.source)
        self.feed.publish(batch)

    async def aclose(self) -> None:
        """End every viewer's stream after what it was sent (for up to 2 s), then stop."""
        import trio

        feed = self.feed
        for viewer in list(feed.viewers):
            viewer.close()
        with trio.move_on_after(_CLOSE_GRACE):
            await feed.wait_empty()
        for viewer in list(feed.viewers):
            viewer.drop()
        feed.viewers.clear()
        sock = self._socket
        key = (self.host, self.port)
        if _LISTENING.get(key) is sock:
            del _LISTENING[key]
        sock.close()

    def _restart(self, name: str) -> bool:
        if self.context.replay is not None or name not in self._seen:
            return False
        self.context.restart_source(name)
        return True

    def _hello(self) -> dict[str, Any]:
        context = self.context
        options = self.options
        return {
            "config": context.config_name,
            "epoch": self.feed.epoch,
            "fields": options.fields,
            "x": options.x,
            "time_field": options.time_field or None,
            "log_y": options.log_y,
            "points": options.points,
            "replay": context.replay is not None,
            "recordings": list(context.recordings),
            "sources": [
                {
                    "name": s.name,
                    "transport": s.transport,
                    "stale_after": s.stale_after,
                    "recording": s.recording,
                }
                for s in context.sources
            ],
        }


def _bind(host: str, port: int, listen: str) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening), or a readable error.

    A web sink of this process already holding the address (a reload
    rebuilding it) hands over a duplicate of its socket.
    """
    held = _LISTENING.get((host, port)) if port else None
    if held is not None and held.fileno() != -1:
        sock = held.dup()
        _LISTENING[(host, port)] = sock
        return sock
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(_bind_problem(exc, host, port, listen)) from None
    bound = sock.getsockname()[1]
    _LISTENING[(host, bound)] = sock
    return sock


def _bind_problem(exc: OSError, host: str, port: int, listen: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {listen}: port {port} is in use (another mux web view,"
            " or another program); choose another port in the sink's listen key"
        )
    if exc.errno == errno.EACCES:
        return (
            f"cannot listen on {listen}: permission denied (ports below 1024 need root);"
            " choose a port above 1023"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {listen}: {host} is not an address of this machine;"
            " use 127.0.0.1 (and an ssh tunnel), or an address this machine has"
        )
    reason = exc.strerror or str(exc)
    return f"cannot listen on {listen}: {reason}"
