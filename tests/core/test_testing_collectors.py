"""Collectors: a test's own collecting sinks, awaited, without the class-wide registry."""

from __future__ import annotations

import textwrap

import pytest
import trio

import mux_core.testing
from mux_core import Engine, PluginError, PluginManager, State, parse_config
from mux_core.testing import CollectingSink, Collectors

SOURCES = """
    [[sources]]
    name = "train"
    transport = "scripted"
    script = ["events:3"]
    then = "end"
    retry = { initial_delay = 0.0 }
"""


def engine(plugins: PluginManager, sinks: str) -> Engine:
    config = parse_config(textwrap.dedent(SOURCES + sinks), path="t.toml", plugins=plugins)
    return Engine(config, plugins)


def with_collectors() -> tuple[PluginManager, Collectors]:
    plugins = PluginManager()
    collectors = Collectors()
    plugins.register(collectors, name="collectors")
    return plugins, collectors


async def test_a_sink_is_awaited_until_the_engine_creates_it() -> None:
    plugins, collectors = with_collectors()
    run = engine(plugins, '[[sinks]]\ntype = "collect"\n')
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run.run)
        sink = await collectors.sink("collect", timeout=5)  # before the engine made it
        await sink.wait_for(lambda s: len(s.events) == 3, timeout=5)
    assert run.result is not None and run.result.final_states == {"train": State.ENDED}
    assert [e.data for e in sink.events] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert sink.opened and sink.closed
    assert collectors.sinks == {"collect": sink}
    assert sink not in CollectingSink.instances.values()  # not in the class-wide registry


async def test_each_test_sees_only_its_own_sinks() -> None:
    (first_plugins, first), (second_plugins, second) = with_collectors(), with_collectors()
    named = '[[sinks]]\ntype = "collect"\nname = "{}"\n'
    runs = [
        engine(first_plugins, named.format("a") + named.format("b")),
        engine(second_plugins, named.format("a")),
    ]
    async with trio.open_nursery() as nursery:
        for run in runs:
            nursery.start_soon(run.run)
        a, b, other_a = await first.sink("a"), await first.sink("b"), await second.sink("a")
        for sink in (a, b, other_a):
            await sink.wait_for(lambda s: len(s.events) == 3, timeout=5)
    assert len({id(a), id(b), id(other_a)}) == 3
    assert set(first.sinks) == {"a", "b"} and second.sinks == {"a": other_a}


async def test_a_sink_that_never_comes_fails_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    _, collectors = with_collectors()
    with pytest.raises(trio.TooSlowError):
        await collectors.sink("missing", timeout=3)


def test_collectors_replace_the_module_as_the_plugin() -> None:
    plugins, _ = with_collectors()
    assert set(plugins.transports()) == {"scripted"} and set(plugins.sinks()) == {"collect"}
    plugins.register(mux_core.testing, name="testing")
    with pytest.raises(PluginError, match="registered by two plugins"):
        plugins.sinks()
