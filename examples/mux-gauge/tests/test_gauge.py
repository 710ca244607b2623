from mux_gauge import GaugeOptions, GaugeTransport

from mux_core import Failed, ServerUnavailable
from mux_core.testing import Respond, run_one_session, serve_rest


async def test_each_poll_is_one_event() -> None:
    async with serve_rest() as server:
        await server.publish({"loss": 0.5}, event="metric")
        transport = GaugeTransport(GaugeOptions(url=server.url, interval=0.01))
        result = await run_one_session(transport, until=2)  # two polls, then stop
    assert result.until_met and len(result.events) == 2
    assert result.events[0].data == {"items": [{"id": "1", "event": "metric", "loss": 0.5}]}


async def test_503_is_retried_and_404_is_not() -> None:
    async with serve_rest() as server:
        server.script(Respond(503, {"Retry-After": "2"}), Respond(404))
        transport = GaugeTransport(GaugeOptions(url=server.url))
        first = await run_one_session(transport)
        second = await run_one_session(transport)
    assert isinstance(first.error, ServerUnavailable) and first.error.retry_after == 2.0
    assert isinstance(second.error, Failed)


async def test_a_restarted_server_is_polled_again() -> None:
    async with serve_rest() as server:
        transport = GaugeTransport(GaugeOptions(url=server.url, interval=0.01))
        await server.stop()  # killed: connections refused
        down = await run_one_session(transport)
        await server.start()  # back, on the same port
        await server.publish({"loss": 0.4}, event="metric")
        up = await run_one_session(transport, until=1)
    assert isinstance(down.error, ServerUnavailable)
    assert down.error.detail == "connection refused"
    assert up.events[0].data == {"items": [{"id": "1", "event": "metric", "loss": 0.4}]}
