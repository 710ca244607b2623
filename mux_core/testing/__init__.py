"""Helpers for testing mux and mux plugins.

* fake stream servers with faults -- ``serve_sse``, ``serve_ws``,
  ``serve_rest`` -- real servers on 127.0.0.1 (port 0 by default) that can be
  stopped, restarted on the same port and scripted per connection with the
  actions ``Respond``, ``Stall``, ``Drop``, ``Raw``, ``Close`` (HTTP) and
  ``Reject``, ``WsClose``, ``Garbage``, ``Drop``, ``Stall`` (WebSocket);
* hostile servers -- ``serve_hostile`` -- raw TCP on 127.0.0.1 that plays
  scripted bytes (``Send``, ``Flood``, ``Bomb``, ``Pause``, ``Hangup``, ``Reset``):
  garbage, compression bombs (``compression_bomb``), giant heads, endless
  bodies, for testing that nothing a server sends breaks a transport;
* a fake TCP line server -- ``serve_tcp`` -- for transports of any other
  protocol, with the same faults (``Stall``, ``Drop``, ``Raw``, ``Close``,
  ``Garbage``), scripted conversations for protocols where the server
  speaks first (``Conversation`` of ``Send``, ``Expect``, ...; a client
  that does not send what was expected is a ``Mismatch``), a record of
  what clients sent, and :func:`refusing_port`;
* real servers as processes -- :class:`ServerProcess` -- started on a free
  port, killed (SIGKILL), paused (SIGSTOP), resumed and restarted on the
  same port;
* :func:`backtest` -- processors over records in virtual time: their
  timers fire at the records' moments, a two-hour silence takes no time;
* :func:`run_one_session` -- drive one session of a transport and see what
  it emitted and how it ended (or end it yourself with ``until=``, after
  the transport finished its work on that batch: its acknowledgement);
* a scripted transport (``"scripted"``) and a collecting sink
  (``"collect"``), from a per-test :class:`Collectors` plugin object::

      collectors = Collectors()
      plugins.register(collectors, name="collectors")
      sink = await collectors.sink("collect")     # once the engine made it

  or from this module, itself a plugin providing both (its sinks are kept
  in the class-wide ``CollectingSink.instances``)::

      plugins.register(mux_core.testing, name="testing")
      # or, for a subprocess:  MUX_PLUGIN_MODULES=mux_core.testing mux run ...
"""

from __future__ import annotations

from ._backtest import backtest
from ._hostile import (
    Bomb,
    Flood,
    Hangup,
    HostileRequest,
    HostileServer,
    Pause,
    Plan,
    Reset,
    Send,
    Step,
    chunk,
    compressed,
    compression_bomb,
    http_head,
    serve_hostile,
    sse_head,
)
from ._http_servers import (
    Action,
    Close,
    Drop,
    FakeRestServer,
    FakeSseServer,
    Raw,
    RequestInfo,
    Respond,
    Stall,
    StoredEvent,
    serve_rest,
    serve_sse,
)
from ._plugin import (
    CollectingSink,
    CollectingSinkOptions,
    Collectors,
    ScriptedOptions,
    ScriptedTransport,
    mux_register_sinks,
    mux_register_transports,
)
from ._process import ServerProcess
from ._script import Conversation, ConversationStep, Expect, Mismatch
from ._session import SessionResult, run_one_session
from ._tcp import (
    FakeTcpServer,
    TcpAction,
    refusing_port,
    serve_tcp,
)
from ._ws import Close as WsClose
from ._ws import (
    FakeWsServer,
    Garbage,
    Reject,
    WsAction,
    serve_ws,
)

__all__ = [
    "Action",
    "Bomb",
    "Close",
    "CollectingSink",
    "CollectingSinkOptions",
    "Collectors",
    "Conversation",
    "ConversationStep",
    "Drop",
    "Expect",
    "FakeRestServer",
    "FakeSseServer",
    "FakeTcpServer",
    "FakeWsServer",
    "Flood",
    "Garbage",
    "Hangup",
    "HostileRequest",
    "HostileServer",
    "Mismatch",
    "Pause",
    "Plan",
    "Raw",
    "Reject",
    "RequestInfo",
    "Reset",
    "Respond",
    "ScriptedOptions",
    "ScriptedTransport",
    "Send",
    "ServerProcess",
    "SessionResult",
    "Stall",
    "Step",
    "StoredEvent",
    "TcpAction",
    "WsAction",
    "WsClose",
    "backtest",
    "chunk",
    "compressed",
    "compression_bomb",
    "http_head",
    "mux_register_sinks",
    "mux_register_transports",
    "refusing_port",
    "run_one_session",
    "serve_hostile",
    "serve_rest",
    "serve_sse",
    "serve_tcp",
    "serve_ws",
    "sse_head",
]
