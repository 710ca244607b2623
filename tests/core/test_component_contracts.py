"""The component base classes: every optional member has one default, read from one place.

A plugin class may inherit from :class:`mux_core.Sink` (and Transport,
Processor, Discoverer) or not; either way the core behaves the same. These
tests run the real engine with a sink that inherits nothing and one that
inherits everything, and check the register hooks go through pluggy (a
hookwrapper runs; registrations are attributed to their plugin).
"""

from __future__ import annotations

import textwrap
from collections.abc import Generator
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

from mux_core import (
    Batch,
    ConfigError,
    Discoverer,
    Ended,
    Engine,
    Event,
    PluginManager,
    Processor,
    ProcessorContext,
    Session,
    Sink,
    SinkContext,
    State,
    Transport,
    hookimpl,
    parse_config,
)
from mux_core.hookspecs import Register
from mux_core.processor import is_timed
from mux_core.sink import sink_member
from tests.helpers.sinks import sink_context


@attrs.frozen
class _NoOptions:
    pass


class _BareSink:
    """A sink that inherits nothing and defines only what is required."""

    Options = _NoOptions
    written: ClassVar[list[Any]] = []

    def __init__(self, options: _NoOptions, context: SinkContext) -> None:
        self.context = context

    async def write(self, batch: Batch) -> None:
        _BareSink.written.extend(batch)


class _FullSink(Sink):
    """A sink that inherits every default and overrides only write."""

    Options = _NoOptions
    written: ClassVar[list[Any]] = []

    async def write(self, batch: Batch) -> None:
        _FullSink.written.extend(batch)


class _Plugin:
    @hookimpl
    def mux_register_sinks(self, register: Register) -> None:
        register("bare", _BareSink)
        register("full", _FullSink)


def test_optional_sink_members_default_to_the_base_class() -> None:
    for member in ("default_overflow", "default_buffer", "default_on_error"):
        assert sink_member(_BareSink, member) == getattr(Sink, member)
        assert sink_member(_FullSink, member) == getattr(Sink, member)
    assert Sink.default_overflow == "block"
    assert Sink.default_on_error == "stop"


async def test_the_base_class_methods_are_no_ops_and_write_is_required() -> None:
    sink = _BareSink(_NoOptions(), sink_context())
    for name in ("open", "sync", "aclose"):
        assert await sink_member(sink, name)() is None
    with pytest.raises(NotImplementedError, match="must define write"):
        await Sink(_NoOptions(), sink_context()).write([])


async def test_a_sink_with_or_without_the_base_class_gets_the_same_records(
    tmp_path: Path,
) -> None:
    import mux_core.testing

    _BareSink.written.clear()
    _FullSink.written.clear()
    plugins = PluginManager()
    plugins.register(mux_core.testing, name="testing")
    plugins.register(_Plugin(), name="contracts")
    config = parse_config(
        textwrap.dedent(
            """\
            [[sources]]
            name = "s"
            transport = "scripted"
            script = ["events:3"]
            then = "end"

            [[sinks]]
            type = "bare"

            [[sinks]]
            type = "full"
            """
        ),
        path=str(tmp_path / "c.toml"),
        plugins=plugins,
    )
    result = await Engine(config, plugins).run()
    assert result.final_states == {"s": State.ENDED}
    for written in (_BareSink.written, _FullSink.written):
        assert [r.seq for r in written if type(r) is Event] == [1, 2, 3]
    assert _BareSink.written == _FullSink.written


def test_check_on_the_component_class_is_a_plugin_bug_not_silently_skipped(
    tmp_path: Path,
) -> None:
    class _CheckOnClass(_BareSink):
        @classmethod
        def check(cls, options: _NoOptions) -> None:
            raise ValueError("never")

    class _Misplaced:
        @hookimpl
        def mux_register_sinks(self, register: Register) -> None:
            register("misplaced", _CheckOnClass)

    plugins = PluginManager()
    plugins.register(_Misplaced(), name="misplaced-plugin")
    with pytest.raises(ConfigError, match=r"_CheckOnClass.check is never called; define it on"):
        parse_config(
            '[[sources]]\nname = "s"\ntransport = "x"\n\n[[sinks]]\ntype = "misplaced"\n',
            path=str(tmp_path / "c.toml"),
            plugins=plugins,
        )


class _Ticking(Processor):
    Options = _NoOptions

    def process(self, batch: Batch) -> Batch:
        return batch

    def tick(self, now: float) -> Batch:
        return []


class _Plain(Processor):
    Options = _NoOptions

    def process(self, batch: Batch) -> Batch:
        return batch


def test_only_a_processor_that_overrides_tick_gets_a_timer() -> None:
    context = ProcessorContext("s", "sse", "p")
    assert is_timed(_Ticking(_NoOptions(), context))
    assert not is_timed(_Plain(_NoOptions(), context))
    assert _Plain(_NoOptions(), context).next_deadline() is None
    assert _Plain(_NoOptions(), context).tick(0.0) == []


async def test_transport_and_discoverer_bases_name_what_is_missing() -> None:
    class _Half(Transport):
        Options = _NoOptions

    class _Blind(Discoverer):
        Options = _NoOptions

    with pytest.raises(NotImplementedError, match="_Half must define run_session"):
        await _Half(_NoOptions()).run_session(None)  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError, match="_Blind must define run"):
        await _Blind(_NoOptions(), None).run()  # type: ignore[arg-type]


class _Wrapping:
    """A hookwrapper around the register hooks: pluggy runs it only if mux calls through pluggy."""

    def __init__(self) -> None:
        self.wrapped: list[str] = []

    @hookimpl(wrapper=True)
    def mux_register_sinks(self, register: Register) -> Generator[None, None, None]:
        self.wrapped.append("before")
        yield
        self.wrapped.append("after")


def test_register_hooks_go_through_pluggy_and_know_their_plugin() -> None:
    wrapper = _Wrapping()
    plugins = PluginManager()
    plugins.register(_Plugin(), name="contracts")
    plugins.register(wrapper, name="wrapper")
    sinks = plugins.sinks()
    assert wrapper.wrapped == ["before", "after"]
    assert {name: provided.plugin for name, provided in sinks.items()} == {
        "bare": "contracts",
        "full": "contracts",
    }


class _Greedy(Transport):
    """Emits small batches back to back and never yields by itself (a naive third party)."""

    Options = _NoOptions
    seen_by_sink: ClassVar[list[int]] = []

    async def run_session(self, session: Session) -> None:
        await session.connected()
        for n in range(1, 6):
            await session.emit([("tick", str(n), b"{}")])
            # What the sink had when the transport got control back.
            _Greedy.seen_by_sink.append(len(_Recording.events))
        raise Ended("done")


class _Recording(Sink):
    Options = _NoOptions
    events: ClassVar[list[Event]] = []

    async def write(self, batch: Batch) -> None:
        _Recording.events.extend(r for r in batch if type(r) is Event)


class _GreedyPlugin:
    @hookimpl
    def mux_register_transports(self, register: Register) -> None:
        register("greedy", _Greedy)

    @hookimpl
    def mux_register_sinks(self, register: Register) -> None:
        register("recording", _Recording)


async def test_the_core_lets_a_woken_sink_run_before_a_transport_goes_on(tmp_path: Path) -> None:
    """Scheduling is the core's: a transport that calls no helper still has each small
    batch written before its emit returns (latency), without yielding in it."""
    _Greedy.seen_by_sink.clear()
    _Recording.events.clear()
    plugins = PluginManager()
    plugins.register(_GreedyPlugin(), name="greedy")
    config = parse_config(
        '[[sources]]\nname = "g"\ntransport = "greedy"\n\n[[sinks]]\ntype = "recording"\n',
        path=str(tmp_path / "c.toml"),
        plugins=plugins,
    )
    result = await Engine(config, plugins).run()
    assert result.final_states == {"g": State.ENDED}
    assert _Greedy.seen_by_sink == [1, 2, 3, 4, 5], _Greedy.seen_by_sink
