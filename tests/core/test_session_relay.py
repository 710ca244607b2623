"""Session.relay and Session.delivered: what a relaying transport (redis-stream) relies on.

``relay`` hands records made elsewhere to the sinks unchanged; ``delivered``
returns only once every sink's ``write`` returned for them (or a policy
dropped them), and False when a sink failed first.
"""

from __future__ import annotations

import textwrap
from typing import Any, ClassVar

import attrs
import trio

from mux_core._config import parse_config
from mux_core._plugins import PluginManager
from mux_core._run.channel import SinkChannel
from mux_core._run.engine import Engine
from mux_core.errors import Ended
from mux_core.hookspecs import hookimpl
from mux_core.records import Event, Status
from mux_core.sink import Overflow
from mux_core.testing import CollectingSink
from mux_core.transport import Session

ORIGINAL = [
    Event("collector-a", "sse", "metric", str(n), {"step": n}, 1764250000.0 + n, n)
    for n in range(1, 101)
]


@attrs.frozen
class _RelayOptions:
    pass


class _RelayTransport:
    """Relays ORIGINAL in four batches; records what delivered() saw each time."""

    Options = _RelayOptions
    seen_at_delivery: ClassVar[list[tuple[bool, int]]] = []

    def __init__(self, options: _RelayOptions) -> None:
        self.options = options

    async def run_session(self, session: Session) -> None:
        await session.connected()
        for start in range(0, len(ORIGINAL), 25):
            await session.relay(ORIGINAL[start : start + 25])
            reached = await session.delivered()
            written = len(CollectingSink.instances["slow"].events)
            _RelayTransport.seen_at_delivery.append((reached, written))
        raise Ended("done")


class _Plugin:
    @hookimpl
    def mux_register_transports(self, register: Any) -> None:
        register("relay-test", _RelayTransport)


def _engine(plugins: PluginManager, sinks: str) -> Engine:
    plugins.register(_Plugin(), name="relay-test")
    toml = (
        """
        [[sources]]
        name = "relay"
        transport = "relay-test"
        """
        + sinks
    )
    config = parse_config(textwrap.dedent(toml), path="t.toml", plugins=plugins)
    CollectingSink.instances.clear()
    _RelayTransport.seen_at_delivery.clear()
    return Engine(config, plugins)


async def test_relayed_records_reach_the_sinks_unchanged_and_delivered_waits_for_writes(
    plugins: PluginManager,
) -> None:
    engine = _engine(
        plugins,
        """
        [[sinks]]
        type = "collect"
        name = "slow"
        delay = 0.02
        [[sinks]]
        type = "collect"
        name = "fast"
        """,
    )
    result = await engine.run()
    assert result.exit_code == 0
    for sink in CollectingSink.instances.values():
        assert sink.events == ORIGINAL  # source, seq, times: as they came
        statuses = [r for r in sink.records if type(r) is Status]
        assert {s.source for s in statuses} == {"relay"}  # its own states, its own name
    # Each delivered() returned only after the slow sink had written that batch.
    assert _RelayTransport.seen_at_delivery == [
        (True, 25),
        (True, 50),
        (True, 75),
        (True, 100),
    ]


async def test_delivered_is_false_when_a_sink_fails_before_writing(
    plugins: PluginManager,
) -> None:
    engine = _engine(
        plugins,
        """
        [[sinks]]
        type = "collect"
        name = "slow"
        delay = 0.01
        fail_after = 30
        on_error = "drop"
        """,
    )
    await engine.run()
    reached = [r for r, _ in _RelayTransport.seen_at_delivery]
    assert reached[0] is True
    assert False in reached  # after the failure, nothing claims to be delivered


async def test_channel_counts_written_and_dropped_records_as_finished() -> None:
    channel = SinkChannel(4, Overflow.DROP_OLDEST)
    channel.offer(ORIGINAL[:6])  # two oldest dropped at once
    assert (channel.entered, channel.finished, channel.dropped) == (6, 2, 2)
    batch = await channel.get()
    assert len(batch) == 4 and channel.finished == 2  # handed out, not yet written
    with trio.move_on_after(0.05) as waiting:
        await channel.wait_finished(6)
    assert waiting.cancelled_caught

    async def ask_again() -> None:  # the sink asks again: the batch was written
        try:
            await channel.get()
        except trio.EndOfChannel:
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask_again)
        assert await channel.wait_finished(6) is True
        channel.close()
    newest = SinkChannel(2, Overflow.DROP_NEWEST)
    newest.offer(ORIGINAL[:5])  # three never enter: neither entered nor finished
    assert (newest.entered, newest.finished, newest.dropped) == (2, 0, 3)
    newest.close()
    assert await newest.wait_finished(2) is False  # closed short of the mark
