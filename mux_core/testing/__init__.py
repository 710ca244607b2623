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
  ``Garbage``), a record of what clients sent, and :func:`refusing_port`;
* :func:`run_one_session` -- drive one session of a transport and see what
  it emitted and how it ended (or end it yourself with ``until=``);
* a scripted transport (``"scripted"``) and a collecting sink
  (``"collect"``); this module is itself a plugin providing both::

      plugins.register(mux_core.testing, name="testing")
      # or, for a subprocess:  MUX_PLUGIN_MODULES=mux_core.testing mux run ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import attrs
import trio

from .._run.supervisor import attempt_session
from ..errors import (
    Disconnected,
    Ended,
    Failed,
    ServerUnavailable,
    SessionError,
)
from ..hookspecs import Register, hookimpl
from ..records import (
    Batch,
    Event,
    Record,
    Status,
)
from ..sink import SinkContext
from ..transport import ResumeState, Session, SharedResources, Transport
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
    "Drop",
    "FakeRestServer",
    "FakeSseServer",
    "FakeTcpServer",
    "FakeWsServer",
    "Flood",
    "Garbage",
    "Hangup",
    "HostileRequest",
    "HostileServer",
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
    "SessionResult",
    "Stall",
    "Step",
    "StoredEvent",
    "TcpAction",
    "WsAction",
    "WsClose",
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

_STEPS = ("unavailable", "disconnect", "events", "fail", "end", "hang", "timeout", "crash")


def _check_steps(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    for step in [*instance.script, value]:
        kind = step.split(":", 1)[0]
        if kind not in _STEPS:
            raise ValueError(f"unknown step {step!r}; steps are {', '.join(_STEPS)}")


@attrs.frozen(kw_only=True)
class ScriptedOptions:
    """What each session of a scripted source does, one step per session."""

    #: Steps, one per session: "unavailable[:retry_after]", "disconnect",
    #: "events:N" (connect, send N events, disconnect), "fail", "end", "hang"
    #: (connect, then stay silent), "timeout" (never connect), "crash" (a bug).
    script: list[str] = attrs.field(factory=list)
    #: The step used once the script is exhausted.
    then: str = attrs.field(default="hang", validator=_check_steps)
    #: Events per batch for "events:N".
    batch: int = 1


@attrs.define
class ScriptedTransport(Transport):
    """A transport whose sessions follow a script: the supervisor's test double.

    Event ids continue from the resume state's last id, so a test can see
    that reconnects resume (ids 1..N, then N+1.. on the next session).
    """

    Options: ClassVar[type[ScriptedOptions]] = ScriptedOptions
    options: ScriptedOptions
    sessions: int = 0
    seen_last_ids: list[str | None] = attrs.field(factory=list)

    async def run_session(self, session: Session) -> None:
        steps = self.options.script
        step = steps[self.sessions] if self.sessions < len(steps) else self.options.then
        self.sessions += 1
        self.seen_last_ids.append(session.resume.last_id)
        kind, _, arg = step.partition(":")
        if kind == "unavailable":
            raise ServerUnavailable("connection refused", retry_after=float(arg) if arg else None)
        if kind == "fail":
            raise Failed("HTTP 404 Not Found")
        if kind == "end":
            raise Ended("HTTP 204 No Content")
        if kind == "crash":
            raise RuntimeError("scripted crash")
        if kind == "timeout":
            await trio.sleep_forever()
        await session.connected()
        if kind == "hang":
            await trio.sleep_forever()
        if kind == "events":
            start = int(session.resume.last_id or 0)
            ids = range(start + 1, start + int(arg or 1) + 1)
            size = max(self.options.batch, 1)
            for first in range(0, len(ids), size):
                chunk = ids[first : first + size]
                await session.emit([("message", str(i), {"n": i}) for i in chunk])
        raise Disconnected("server closed the stream")


@attrs.frozen(kw_only=True)
class CollectingSinkOptions:
    #: Raise in write() once this many records were received (0 = never).
    fail_after: int = 0
    #: Seconds to sleep per batch, to play a slow sink.
    delay: float = 0.0


class CollectingSink:
    """A sink that keeps every record it receives, for assertions.

    Instances register themselves in :attr:`instances` (by sink name) so a
    test can find the sink an engine created.
    """

    Options: ClassVar[type[CollectingSinkOptions]] = CollectingSinkOptions
    instances: ClassVar[dict[str, CollectingSink]] = {}

    def __init__(self, options: CollectingSinkOptions, context: SinkContext) -> None:
        self.options = options
        self.context = context
        self.records: list[Record] = []
        self.batches = 0
        self.opened = self.closed = False
        #: Set on every write; tests wait on it with a deadline.
        self.changed = trio.Event()
        CollectingSink.instances[context.name] = self

    async def open(self) -> None:
        self.opened = True

    async def write(self, batch: Batch) -> None:
        if self.options.delay:
            await trio.sleep(self.options.delay)
        self.records.extend(batch)
        self.batches += 1
        self.changed.set()
        self.changed = trio.Event()
        if self.options.fail_after and len(self.records) >= self.options.fail_after:
            raise OSError("disk full (scripted)")

    async def aclose(self) -> None:
        self.closed = True

    @property
    def events(self) -> list[Event]:
        return [r for r in self.records if type(r) is Event]

    @property
    def statuses(self) -> list[Status]:
        return [r for r in self.records if type(r) is Status]

    async def wait_for(self, predicate: Any, *, timeout: float = 10.0) -> None:
        """Wait until ``predicate(self)`` holds, failing after ``timeout`` seconds."""
        with trio.fail_after(timeout):
            while not predicate(self):
                await self.changed.wait()


@hookimpl
def mux_register_transports(register: Register) -> None:
    register("scripted", ScriptedTransport)


@hookimpl
def mux_register_sinks(register: Register) -> None:
    register("collect", CollectingSink)


@attrs.define
class SessionResult:
    """What one session emitted and how it ended."""

    batches: list[Sequence[Record]]
    error: SessionError | None
    resume: ResumeState
    #: True when ``until`` held and the session was ended there (``error`` is None).
    until_met: bool = False

    @property
    def records(self) -> list[Record]:
        return [r for batch in self.batches for r in batch]

    @property
    def events(self) -> list[Event]:
        return [r for r in self.records if type(r) is Event]


async def run_one_session(
    transport: Any,
    *,
    resume: ResumeState | None = None,
    until: int | Callable[[SessionResult], bool] | None = None,
    connect_timeout: float = 5.0,
    timeout: float = math.inf,
    shared: SharedResources | None = None,
    source: str = "test",
    transport_name: str = "test",
) -> SessionResult:
    """Run ``transport.run_session`` once, collecting what it emitted.

    The session runs as in ``mux run``: it must call ``session.connected()``
    within ``connect_timeout`` seconds (else ``error`` is
    :class:`ServerUnavailable`), and returning counts as :class:`Disconnected`.
    Returns when the session raises a :class:`SessionError` (kept in
    ``error``), when ``until`` holds -- an event count (``until=3``: three
    events emitted) or ``until(result)`` checked after each batch -- and the
    session is cancelled there (``until_met``, ``error`` None), or when
    ``timeout`` seconds pass (``error`` None). Other exceptions propagate:
    they are transport bugs. Pass ``result.resume`` to the next call to test
    resuming.
    """
    resume = resume if resume is not None else ResumeState()
    result = SessionResult([], None, resume)
    if isinstance(until, int):
        count = until

        def until_count(result: SessionResult) -> bool:
            return len(result.events) >= count

        until = until_count

    own_shared = shared is None
    shared = shared if shared is not None else SharedResources()
    with trio.move_on_after(timeout) as scope:

        async def send(batch: Sequence[Record]) -> None:
            result.batches.append(batch)
            if until is not None and not result.until_met and until(result):
                result.until_met = True
                scope.cancel()
                await trio.lowlevel.checkpoint()  # end right here, not at the next read

        session = Session(
            source=source,
            transport=transport_name,
            resume=resume,
            connect_timeout=connect_timeout,
            shared=shared,
            send=send,
            attempt=1,
        )
        try:
            # The way a run attempts a session: the same connect deadline, the
            # same classification of how it ended.
            result.error = await attempt_session(
                transport,
                session,
                connect_timeout,
                transport_name=transport_name,
                source=source,
                reraise_bugs=True,
            )
        finally:
            if own_shared:
                await shared.aclose()
    return result
