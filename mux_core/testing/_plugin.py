"""The kit's plugin: the ``scripted`` transport and the ``collect`` sink.

Two ways to have them in a test's :class:`~mux_core.PluginManager`:

* ``plugins.register(Collectors())`` -- the way to use: the sinks the engine
  creates are kept on that object, for that test only, and
  ``await collectors.sink("name")`` waits for one to exist;
* ``plugins.register(mux_core.testing, name="testing")`` -- the module as a
  plugin (what ``MUX_PLUGIN_MODULES=mux_core.testing`` does for a
  subprocess); its sinks land in the class-wide
  :attr:`CollectingSink.instances`, which a test must clear itself.

Both provide the same two names, so a test registers one of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import trio

from ..errors import Disconnected, Ended, Failed, ServerUnavailable
from ..hookspecs import Register, hookimpl
from ..records import Batch, Event, Record, Status
from ..sink import SinkContext
from ..transport import Session, Transport

__all__ = [
    "CollectingSink",
    "CollectingSinkOptions",
    "Collectors",
    "ScriptedOptions",
    "ScriptedTransport",
    "mux_register_sinks",
    "mux_register_transports",
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
                # As a real transport's next read would: a stop is seen between
                # batches (emit itself does not wait while the sinks have room).
                await trio.lowlevel.checkpoint()
        raise Disconnected("server closed the stream")


@attrs.frozen(kw_only=True)
class CollectingSinkOptions:
    #: Raise in write() once this many records were received (0 = never).
    fail_after: int = 0
    #: Seconds to sleep per batch, to play a slow sink.
    delay: float = 0.0


class CollectingSink:
    """A sink that keeps every record it receives, for assertions.

    Made by a :class:`Collectors` (``await collectors.sink(name)`` finds
    it), or, with the module registered as the plugin, kept in the
    class-wide :attr:`instances` by sink name.
    """

    Options: ClassVar[type[CollectingSinkOptions]] = CollectingSinkOptions
    #: The sinks the module's plugin created, by sink name, across tests:
    #: clear it before a run. A :class:`Collectors` keeps its own instead.
    instances: ClassVar[dict[str, CollectingSink]] = {}

    def __init__(self, options: CollectingSinkOptions, context: SinkContext) -> None:
        self.options = options
        self.context = context
        self.records: list[Record] = []
        self.batches = 0
        self.opened = self.closed = False
        #: Set on every write; tests wait on it with a deadline.
        self.changed = trio.Event()
        self._created()

    def _created(self) -> None:
        CollectingSink.instances[self.context.name] = self

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

    async def wait_for(
        self, predicate: Callable[[CollectingSink], object], *, timeout: float = 10.0
    ) -> None:
        """Wait until ``predicate(self)`` holds, failing after ``timeout`` seconds."""
        with trio.fail_after(timeout):
            while not predicate(self):
                await self.changed.wait()


class Collectors:
    """One test's ``collect`` sinks, found without a class-wide registry.

    A plugin object: register it, run an engine whose config has
    ``[[sinks]] type = "collect"`` (it provides the ``scripted`` transport
    too, as the module does, so register it *instead of* the module), and
    wait for the sink the engine creates::

        collectors = Collectors()
        plugins.register(collectors, name="collectors")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.run)
            sink = await collectors.sink("collect", timeout=5)  # the sink's name
            await sink.wait_for(lambda s: len(s.events) >= 3)

    Sinks made by another engine (or another test) never show up here.
    """

    def __init__(self) -> None:
        #: The sinks created so far, by sink name (a later sink of the same
        #: name -- the next run's -- replaces the earlier one).
        self.sinks: dict[str, CollectingSink] = {}
        self._changed = trio.Event()
        collectors = self

        class BoundCollectingSink(CollectingSink):
            def _created(self) -> None:
                collectors._add(self)

        self._sink_class = BoundCollectingSink

    async def sink(self, name: str = "collect", *, timeout: float = 10.0) -> CollectingSink:
        """The sink called ``name`` once the engine has created it.

        ``name`` is the sink's ``name`` key, or its type (``"collect"``)
        without one. Fails with :class:`trio.TooSlowError` after ``timeout``
        seconds.
        """
        with trio.fail_after(timeout):
            while name not in self.sinks:
                await self._changed.wait()
        return self.sinks[name]

    def _add(self, sink: CollectingSink) -> None:
        self.sinks[sink.context.name] = sink
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    @hookimpl
    def mux_register_transports(self, register: Register) -> None:
        register("scripted", ScriptedTransport)

    @hookimpl
    def mux_register_sinks(self, register: Register) -> None:
        register("collect", self._sink_class)


@hookimpl
def mux_register_transports(register: Register) -> None:
    register("scripted", ScriptedTransport)


@hookimpl
def mux_register_sinks(register: Register) -> None:
    register("collect", CollectingSink)
