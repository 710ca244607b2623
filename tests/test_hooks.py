"""Each hook of mux_core.hookspecs, exercised the way a third-party plugin uses it.

A plugin object registers a class under a new name; the name is then used in
a config and the real engine runs it. These are the tests the docs guard
(tests/test_docs.py) requires for every hook.
"""

from __future__ import annotations

import textwrap
from typing import Any, ClassVar

import attrs
import trio

from mux_core import (
    Batch,
    Ended,
    Engine,
    Event,
    PluginManager,
    Session,
    SinkContext,
    State,
    hookimpl,
    parse_config,
)
from mux_core.hookspecs import Register
from mux_core.testing import CollectingSink


@attrs.frozen(kw_only=True)
class _CountOptions:
    #: Events to send before ending the stream.
    count: int = 3


class _CountTransport:
    """Connects, sends ``count`` events in one batch, then ends the stream."""

    Options: ClassVar[type[_CountOptions]] = _CountOptions

    def __init__(self, options: _CountOptions) -> None:
        self.options = options

    async def run_session(self, session: Session) -> None:
        await session.connected()
        await session.emit([("tick", str(n), {"n": n}) for n in range(1, self.options.count + 1)])
        raise Ended("counted to the end")


@attrs.frozen(kw_only=True)
class _MemoOptions:
    #: Uppercase the source names it keeps.
    shout: bool = False


class _MemoSink:
    """Keeps the event ids it sees, per sink name, and notes that it was closed."""

    Options: ClassVar[type[_MemoOptions]] = _MemoOptions
    seen: ClassVar[dict[str, list[str]]] = {}
    closed: ClassVar[set[str]] = set()

    def __init__(self, options: _MemoOptions, context: SinkContext) -> None:
        self.options = options
        self.name = context.name
        _MemoSink.seen[self.name] = []

    async def write(self, batch: Batch) -> None:
        for record in batch:
            if type(record) is Event:
                source = record.source.upper() if self.options.shout else record.source
                _MemoSink.seen[self.name].append(f"{source}:{record.id}")

    async def aclose(self) -> None:
        _MemoSink.closed.add(self.name)


class _CountPlugin:
    @hookimpl
    def mux_register_transports(self, register: Register) -> None:
        register("count", _CountTransport)


class _MemoPlugin:
    @hookimpl
    def mux_register_sinks(self, register: Register) -> None:
        register("memo", _MemoSink)


def _engine(plugins: PluginManager, toml: str) -> Engine:
    config = parse_config(textwrap.dedent(toml), path="hooks.toml", plugins=plugins)
    CollectingSink.instances.clear()
    return Engine(config, plugins)


async def test_mux_register_transports_makes_the_name_a_transport(
    plugins: PluginManager,
) -> None:
    plugins.register(_CountPlugin(), name="count-plugin")
    assert plugins.transports()["count"].plugin == "count-plugin"
    engine = _engine(
        plugins,
        """
        [[sources]]
        name = "ticker"
        transport = "count"
        count = 4

        [[sinks]]
        type = "collect"
        """,
    )
    with trio.fail_after(10):
        result = await engine.run()
    sink = CollectingSink.instances["collect"]
    assert [e.id for e in sink.events] == ["1", "2", "3", "4"]
    assert {e.event for e in sink.events} == {"tick"}
    assert sink.statuses[-1].state is State.ENDED
    assert result.final_states == {"ticker": State.ENDED}
    assert result.exit_code == 0


async def test_mux_register_sinks_makes_the_name_a_sink_type(plugins: PluginManager) -> None:
    plugins.register(_MemoPlugin(), name="memo-plugin")
    assert plugins.sinks()["memo"].plugin == "memo-plugin"
    _MemoSink.seen.clear()
    _MemoSink.closed.clear()
    engine = _engine(
        plugins,
        """
        [[sources]]
        name = "s"
        transport = "scripted"
        script = ["events:3"]
        then = "end"
        retry = { initial_delay = 0.0, jitter = 0.0 }

        [[sinks]]
        type = "memo"
        name = "loud"
        shout = true
        """,
    )
    with trio.fail_after(10):
        result = await engine.run()
    assert _MemoSink.seen == {"loud": ["S:1", "S:2", "S:3"]}
    assert _MemoSink.closed == {"loud"}
    assert result.final_states == {"s": State.ENDED}


def test_mux_main_loop_runs_the_engine_on_the_plugins_loop(plugins: PluginManager) -> None:
    """A plugin that owns the main loop runs the engine and returns True."""
    ran_by: list[str] = []

    class OwnLoop:
        @hookimpl
        def mux_main_loop(self, engine: Any) -> bool | None:
            ran_by.append("own-loop")
            trio.run(engine.run)
            return True

    plugins.register(OwnLoop(), name="own-loop")
    engine = _engine(
        plugins,
        """
        [[sources]]
        name = "s"
        transport = "scripted"
        script = ["events:2"]
        then = "end"
        retry = { initial_delay = 0.0, jitter = 0.0 }

        [[sinks]]
        type = "collect"
        """,
    )
    assert plugins.main_loop(engine) is True
    assert ran_by == ["own-loop"]
    assert engine.result is not None
    assert engine.result.final_states == {"s": State.ENDED}
    assert [e.id for e in CollectingSink.instances["collect"].events] == ["1", "2"]


def test_mux_main_loop_declined_leaves_the_run_to_the_core(plugins: PluginManager) -> None:
    """Every implementation returning None means the core runs trio.run itself."""

    class Declines:
        @hookimpl
        def mux_main_loop(self, engine: Any) -> bool | None:
            return None

    plugins.register(Declines(), name="declines")
    engine = _engine(
        plugins,
        """
        [[sources]]
        name = "s"
        transport = "scripted"
        then = "end"
        """,
    )
    assert plugins.main_loop(engine) is False
    assert engine.result is None
