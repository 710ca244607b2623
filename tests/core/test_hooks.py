"""Each hook of mux_core.hookspecs, exercised the way a third-party plugin uses it.

A plugin object registers a class under a new name; the name is then used in
a config and the real engine runs it. These are the tests the docs guard
(tests/docs/test_guards.py) requires for every hook.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any, ClassVar

import attrs
import pytest
import trio
import trio.lowlevel

from mux_core import (
    Batch,
    DiscoveryContext,
    Ended,
    Engine,
    Event,
    PluginError,
    PluginManager,
    Session,
    SinkContext,
    SourceDocument,
    State,
    hookimpl,
    parse_config,
)
from mux_core.hookspecs import Register
from mux_core.testing import CollectingSink, Collectors


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

        [[sinks]]
        type = "collect"
        """,
    )
    assert plugins.main_loop(engine) is False
    assert engine.result is None


@attrs.frozen(kw_only=True)
class _FoundOptions:
    #: How many scripted sources to find.
    count: int = 2


class _FoundDiscovery:
    """Finds ``count`` scripted sources, then waits to be cancelled."""

    Options: ClassVar[type[_FoundOptions]] = _FoundOptions

    def __init__(self, options: _FoundOptions, context: DiscoveryContext) -> None:
        self.options = options
        self.context = context

    async def run(self) -> None:
        tables = tuple(
            {"name": f"found-{n}", "transport": "scripted", "script": ["events:3"], "then": "end"}
            for n in range(self.options.count)
        )
        await self.context.update([SourceDocument("counted", tables)])
        await trio.sleep_forever()


class _FoundPlugin:
    @hookimpl
    def mux_register_discovery(self, register: Register) -> None:
        register("found", _FoundDiscovery)


async def test_mux_register_discovery_makes_the_name_a_discovery_type() -> None:
    """A [[discovery]] table of the registered type: its sources run, with no [[sources]]."""
    plugins, collectors = PluginManager(), Collectors()
    plugins.register(collectors, name="collectors")
    plugins.register(_FoundPlugin(), name="found-plugin")
    assert plugins.discoverers()["found"].plugin == "found-plugin"
    engine = _engine(
        plugins,
        """
        [[discovery]]
        type = "found"
        count = 3
        allow_transports = ["scripted"]
        allow_options = ["script", "then"]

        [[sinks]]
        type = "collect"
        """,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.run)
        sink = await collectors.sink("collect", timeout=10)  # made when the run starts
        await sink.wait_for(
            lambda s: sum(st.state is State.ENDED for st in s.statuses) == 3, timeout=10
        )
        engine.request_stop("test over")
    assert engine.result is not None
    assert engine.result.final_states == {f"found-{n}": State.ENDED for n in range(3)}
    assert sorted({e.source for e in sink.events}) == ["found-0", "found-1", "found-2"]
    assert engine.result.reason == "test over"  # discovery keeps the run up until stopped


def test_mux_register_commands_adds_a_subcommand(
    plugins: PluginManager, capsys: pytest.CaptureFixture[str]
) -> None:
    """A command's parser and handler; a name that is taken is an error naming both."""

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("word")

    def shout(args: argparse.Namespace) -> int:
        print(args.word.upper())
        return 7

    class Shout:
        @hookimpl
        def mux_register_commands(self, register: Any) -> None:
            register("shout", add_arguments, shout, help="say it loud")

    plugins.register(Shout(), name="shout-plugin")
    commands = plugins.commands(taken={"run"})
    assert commands["shout"].plugin == "shout-plugin"
    assert commands["shout"].help == "say it loud"
    parser = argparse.ArgumentParser()
    subs = parser.add_subparsers(dest="command")
    sub = subs.add_parser("shout")
    commands["shout"].add_arguments(sub)
    args = parser.parse_args(["shout", "hey"])
    assert commands["shout"].handler(args) == 7
    assert capsys.readouterr().out == "HEY\n"
    assert "shout" in {info.name: info for info in plugins.infos()}["shout-plugin"].commands

    class Clash:
        @hookimpl
        def mux_register_commands(self, register: Any) -> None:
            register("run", add_arguments, shout)

    plugins.register(Clash(), name="clash-plugin")
    with pytest.raises(PluginError, match="command 'run' of plugin 'clash-plugin' is already"):
        plugins.commands(taken={"run"})
