"""The engine end to end with the scripted transport and the collecting sink."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import ClassVar

import attrs
import trio
import trio.testing

from mux_core._config import parse_config
from mux_core._plugins import PluginManager
from mux_core._run.engine import Engine
from mux_core.errors import Ended
from mux_core.hookspecs import hookimpl
from mux_core.records import Event, State, Status
from mux_core.testing import CollectingSink
from mux_core.transport import Session


def engine_for(plugins: PluginManager, toml: str, **kwargs: object) -> Engine:
    config = parse_config(textwrap.dedent(toml), path="t.toml", plugins=plugins)
    CollectingSink.instances.clear()
    return Engine(config, plugins, **kwargs)  # type: ignore[arg-type]


def per_source(sink: CollectingSink) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    for r in sink.records:
        out.setdefault(r.source, []).append(r)
    return out


async def test_order_per_source_is_kept_through_fan_in_and_fan_out(
    plugins: PluginManager,
) -> None:
    sources = "".join(
        f"""
        [[sources]]
        name = "s{i}"
        transport = "scripted"
        script = ["events:500", "unavailable", "events:500"]
        then = "end"
        batch = {i + 3}
        retry = {{ initial_delay = 0.0, jitter = 0.0 }}
        """
        for i in range(4)
    )
    engine = engine_for(
        plugins,
        sources
        + """
        [[sinks]]
        type = "collect"
        name = "one"
        buffer = 7
        [[sinks]]
        type = "collect"
        name = "two"
        """,
    )
    result = await engine.run()
    assert result.exit_code == 0
    assert result.reason == "every source reached a terminal state"
    for sink in CollectingSink.instances.values():
        assert sink.closed
        for records in per_source(sink).values():
            events = [r for r in records if isinstance(r, Event)]
            assert [e.seq for e in events] == list(range(1, 1001))
            assert [e.id for e in events] == [str(n) for n in range(1, 1001)]
            last = records[-1]
            assert isinstance(last, Status) and last.state is State.ENDED


async def test_stop_delivers_everything_received_and_stopped_comes_last(
    plugins: PluginManager,
) -> None:
    engine = engine_for(
        plugins,
        """
        [[sources]]
        name = "a"
        transport = "scripted"
        script = ["events:300"]
        then = "hang"
        retry = { initial_delay = 0.0 }
        [[sources]]
        name = "b"
        transport = "scripted"
        script = ["fail"]
        [[sinks]]
        type = "collect"
        delay = 0.001
        buffer = 10
        """,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.run)
        await trio.testing.wait_all_tasks_blocked()
        sink = CollectingSink.instances["collect"]
        await sink.wait_for(lambda s: len(s.events) >= 50)
        with trio.fail_after(10):
            while (
                sum(isinstance(r, Status) and r.state is State.CONNECTED for r in sink.records) < 2
            ):
                await sink.changed.wait()
        engine.request_stop("test says stop")
    assert engine.result is not None
    records = per_source(sink)
    a_events = [r for r in records["a"] if isinstance(r, Event)]
    assert [e.seq for e in a_events] == list(range(1, 301))
    last_a = records["a"][-1]
    assert isinstance(last_a, Status) and last_a.state is State.STOPPED
    assert last_a.detail == "test says stop"
    last_b = records["b"][-1]
    assert isinstance(last_b, Status) and last_b.state is State.FAILED
    assert not any(isinstance(r, Status) and r.state is State.STOPPED for r in records["b"])
    assert engine.result.exit_code == 3
    assert engine.result.final_states == {"a": State.STOPPED, "b": State.FAILED}


async def test_duration_stops_the_run(
    plugins: PluginManager, autojump_clock: trio.testing.MockClock
) -> None:
    engine = engine_for(
        plugins,
        """
        [[sources]]
        name = "a"
        transport = "scripted"
        then = "unavailable"
        [[sinks]]
        type = "collect"
        """,
        duration=60.0,
    )
    start = trio.current_time()
    result = await engine.run()
    assert trio.current_time() - start >= 60.0
    assert result.reason == "--for 60 s elapsed"
    assert result.exit_code == 0
    assert CollectingSink.instances["collect"].records[-1].state is State.STOPPED  # type: ignore[union-attr]


async def test_a_failing_sink_with_on_error_stop_stops_the_run(plugins: PluginManager) -> None:
    engine = engine_for(
        plugins,
        """
        [[sources]]
        name = "a"
        transport = "scripted"
        then = "events:10"
        retry = { initial_delay = 0.0 }
        [[sinks]]
        type = "collect"
        name = "bad"
        fail_after = 25
        on_error = "stop"
        [[sinks]]
        type = "collect"
        name = "good"
        """,
    )
    with trio.fail_after(10):
        result = await engine.run()
    assert result.exit_code == 1
    assert result.reason == "sink 'bad' failed"
    good = CollectingSink.instances["good"]
    assert good.closed
    assert good.records[-1].state is State.STOPPED  # type: ignore[union-attr]
    seqs = [e.seq for e in good.events]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_a_failing_sink_with_on_error_drop_leaves_the_others_running(
    plugins: PluginManager,
) -> None:
    engine = engine_for(
        plugins,
        """
        [[sources]]
        name = "a"
        transport = "scripted"
        script = ["events:200"]
        then = "end"
        retry = { initial_delay = 0.0 }
        [[sinks]]
        type = "collect"
        name = "bad"
        fail_after = 5
        on_error = "drop"
        [[sinks]]
        type = "collect"
        name = "good"
        """,
    )
    with trio.fail_after(10):
        result = await engine.run()
    assert result.exit_code == 0
    assert len(CollectingSink.instances["good"].events) == 200
    assert CollectingSink.instances["bad"].closed


async def test_a_slow_drop_sink_does_not_slow_a_block_sink(plugins: PluginManager) -> None:
    engine = engine_for(
        plugins,
        """
        [[sources]]
        name = "a"
        transport = "scripted"
        script = ["events:2000"]
        then = "end"
        [[sinks]]
        type = "collect"
        name = "slow"
        delay = 0.05
        overflow = "drop_oldest"
        buffer = 10
        [[sinks]]
        type = "collect"
        name = "all"
        """,
    )
    with trio.fail_after(20):
        result = await engine.run()
    assert len(CollectingSink.instances["all"].events) == 2000
    slow = CollectingSink.instances["slow"]
    assert result.dropped["slow"] > 0
    assert len(slow.events) + result.dropped["slow"] == 2000
    assert slow.records[-1].state is State.ENDED  # type: ignore[union-attr]


async def test_a_batch_held_up_by_a_block_sink_still_reaches_every_sink_on_stop(
    plugins: PluginManager,
) -> None:
    """Stopping while a source waits for room in a slow block sink must not
    lose that batch, in that sink or in the sinks after it."""
    engine = engine_for(
        plugins,
        """
        [[sources]]
        name = "a"
        transport = "scripted"
        script = ["events:400"]
        then = "hang"
        batch = 50
        [[sinks]]
        type = "collect"
        name = "slow"
        buffer = 10
        delay = 0.01
        [[sinks]]
        type = "collect"
        name = "after"
        """,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.run)
        await trio.testing.wait_all_tasks_blocked()
        slow = CollectingSink.instances["slow"]
        await slow.wait_for(lambda s: len(s.events) >= 20)
        engine.request_stop("test")
    slow_seqs = [e.seq for e in slow.events]
    after_seqs = [e.seq for e in CollectingSink.instances["after"].events]
    assert slow_seqs == after_seqs == list(range(1, len(slow_seqs) + 1))
    assert len(slow_seqs) % 50 == 0  # whole batches only
    assert slow.records[-1].state is State.STOPPED  # type: ignore[union-attr]


@attrs.frozen
class _ProbeOptions:
    pass


class _WokeProbe:
    """Connects, lets the sink park, then emits twice and notes what emit said."""

    Options = _ProbeOptions
    woke: ClassVar[list[bool]] = []

    def __init__(self, options: _ProbeOptions) -> None:
        pass

    async def run_session(self, session: Session) -> None:
        await session.connected()
        await trio.testing.wait_all_tasks_blocked()  # the sink took it and parked
        self.woke.append(await session.emit([("message", "1", 1)]))
        self.woke.append(await session.emit([("message", "2", 2)]))
        raise Ended("done")


class _WokeProbePlugin:
    @hookimpl
    def mux_register_transports(self, register: Callable[[str, type], None]) -> None:
        register("probe", _WokeProbe)


async def test_emit_says_whether_it_woke_a_waiting_sink(plugins: PluginManager) -> None:
    """True for a batch that wakes a parked sink. The core then lets that sink
    run before emit returns (a small batch), so the next batch finds it parked
    again and wakes it too: no transport needs to yield for it."""
    plugins.register(_WokeProbePlugin(), name="probe")
    _WokeProbe.woke.clear()
    engine = engine_for(
        plugins,
        """
        [[sources]]
        name = "p"
        transport = "probe"
        [[sinks]]
        type = "collect"
        """,
    )
    result = await engine.run()
    assert result.exit_code == 0
    assert _WokeProbe.woke == [True, True]


async def test_an_embedded_run_leaves_the_applications_frozen_objects_frozen(
    plugins: PluginManager,
) -> None:
    """Engine.run embedded in another program (no signal handlers: it does not own the
    process) must not gc.unfreeze() what that program froze for itself."""
    import gc

    gc.freeze()
    frozen = gc.get_freeze_count()
    try:
        engine = engine_for(
            plugins,
            """
            [[sources]]
            name = "s"
            transport = "scripted"
            script = ["events:2"]
            then = "end"
            [[sinks]]
            type = "collect"
            """,
        )
        result = await engine.run()
        assert result.final_states == {"s": State.ENDED}
        # (a few frozen objects may die meanwhile; unfrozen, the count would be 0)
        assert gc.get_freeze_count() > frozen // 2 > 0
    finally:
        gc.unfreeze()
