"""End to end, in process: the real engine and transports against real fake servers.

Outages are real: a server that is not listening yet, a server killed and
restarted on the same port mid-stream, a server that goes silent after its
headers. The monitor is the real :class:`~mux_core._run.engine.Engine` with the
built-in transports; a collecting sink records what reached the sinks.
"""

from __future__ import annotations

import pytest

from mux_core.records import State, Status
from mux_core.testing import Stall, serve_sse
from tests.helpers.e2e import (
    FAST_RETRY,
    TRANSPORTS,
    event_ids,
    ids,
    publish_range,
    records_of,
    running_engine,
    serve,
    source_toml,
    states,
    wait_for_state,
)

OUTAGE = {State.DISCONNECTED, State.SERVER_UNAVAILABLE}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_server_down_at_start_then_connected_once_it_listens(transport: str) -> None:
    async with serve(transport) as server:
        await server.stop()
        toml = FAST_RETRY + source_toml("s", transport, server.url)
        async with running_engine(toml) as (_, sink):
            down = await wait_for_state(sink, "s", State.SERVER_UNAVAILABLE)
            assert State.CONNECTED not in states(sink, "s")
            await server.start()
            await wait_for_state(sink, "s", State.CONNECTED, after=down)
            await publish_range(server, 1, 3)
            await sink.wait_for(lambda s: len(event_ids(s, "s")) >= 3)
        history = states(sink, "s")
        assert history[0] is State.CONNECTING
        assert history[1] is State.SERVER_UNAVAILABLE
        first_up = history.index(State.CONNECTED)
        assert set(history[:first_up]) <= {State.CONNECTING, State.SERVER_UNAVAILABLE}
        assert history[-1] is State.STOPPED
        assert event_ids(sink, "s") == ids(1, 3)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_killed_and_restarted_mid_stream_loses_and_repeats_nothing(transport: str) -> None:
    n = 40
    async with serve(transport) as server:
        toml = FAST_RETRY + source_toml("s", transport, server.url)
        async with running_engine(toml) as (_, sink):
            up = await wait_for_state(sink, "s", State.CONNECTED)
            await publish_range(server, 1, n)
            await sink.wait_for(lambda s: len(event_ids(s, "s")) >= n)

            await server.stop()
            await publish_range(server, n + 1, 2 * n)  # published while the server is down
            # The client must have noticed the outage and tried again in vain.
            down = await wait_for_state(sink, "s", State.SERVER_UNAVAILABLE, after=up + 1)
            assert State.CONNECTED not in states(sink, "s")[up + 1 : down]

            await server.start()
            await wait_for_state(sink, "s", State.CONNECTED, after=down)
            await publish_range(server, 2 * n + 1, 3 * n)
            await sink.wait_for(lambda s: len(event_ids(s, "s")) >= 3 * n)

        history = states(sink, "s")
        outage = history[up + 1 : history.index(State.CONNECTED, up + 1)]
        assert outage and set(outage) <= OUTAGE | {State.CONNECTING}
        assert OUTAGE & set(outage)
        assert history[-1] is State.STOPPED
        # Every id exactly once, in order: nothing lost across the outage, nothing replayed twice.
        assert event_ids(sink, "s") == ids(1, 3 * n)
        seqs = [r.seq for r in records_of(sink, "s") if not isinstance(r, Status)]
        assert seqs == list(range(1, 3 * n + 1))


async def test_stalled_sse_stream_times_out_and_reconnects() -> None:
    async with serve_sse() as server:
        server.script(Stall())  # first request: 200 headers, then silence
        toml = FAST_RETRY + source_toml("s", "sse", server.url, "read_timeout = 0.5\n")
        async with running_engine(toml) as (_, sink):
            up = await wait_for_state(sink, "s", State.CONNECTED)
            dropped = await wait_for_state(sink, "s", State.DISCONNECTED, after=up)
            await wait_for_state(sink, "s", State.CONNECTED, after=dropped)
            assert len(server.requests) == 2  # the reconnect reached the server
            await server.publish({"n": 1})
            await sink.wait_for(lambda s: event_ids(s, "s") == ["1"])
        history = states(sink, "s")
        assert history[:5] == [
            State.CONNECTING,
            State.CONNECTED,
            State.DISCONNECTED,
            State.CONNECTING,
            State.CONNECTED,
        ]
        detail = next(s.detail for s in sink.statuses if s.state is State.DISCONNECTED)
        assert "read_timeout" in detail
