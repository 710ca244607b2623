"""The ndjson-tcp transport through the real engine: configured by TOML, run by mux."""

import textwrap

import trio
from mux_ndjson_tcp import NdjsonTcpOptions, NdjsonTcpTransport

from mux_core import Engine, PluginManager, State, parse_config
from mux_core.testing import Collectors, Drop, run_one_session, serve_tcp


async def test_each_line_is_one_event_with_its_id_as_a_string() -> None:
    async with serve_tcp(hello="resume_after") as server:
        await server.publish({"id": 41, "loss": 0.5})
        await server.publish({"id": 42, "loss": 0.4})
        transport = NdjsonTcpTransport(NdjsonTcpOptions(port=server.port))
        with trio.fail_after(5):
            result = await run_one_session(transport, until=2)
    assert [(e.id, e.data) for e in result.events] == [
        ("41", {"id": 41, "loss": 0.5}),
        ("42", {"id": 42, "loss": 0.4}),
    ]
    assert result.resume.last_id == "42"
    assert server.received == [b'{"resume_after":null}']


async def test_a_run_survives_a_cut_connection_without_duplicates_or_gaps() -> None:
    plugins = PluginManager()
    collectors = Collectors()  # the "collect" sink, found by this test alone
    plugins.register(collectors, name="collectors")
    plugins.load_entry_points(only={"ndjson-tcp"})  # this package, installed
    async with serve_tcp(hello="resume_after") as server:
        for n in range(1, 6):
            await server.publish({"n": n})
        server.script(Drop(after=2))  # the first connection is cut after two lines
        config = parse_config(
            textwrap.dedent(f"""
                [[sources]]
                name = "feed"
                transport = "ndjson-tcp"
                port = {server.port}
                retry = {{ initial_delay = 0.0 }}

                [[sinks]]
                type = "collect"
                name = "ndjson-run"
            """),
            path="test.toml",
            plugins=plugins,
        )
        engine = Engine(config, plugins)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.run)
            sink = await collectors.sink("ndjson-run", timeout=10)
            await sink.wait_for(lambda s: len(s.events) >= 5)
            engine.request_stop("test over")
    assert [e.id for e in sink.events] == ["1", "2", "3", "4", "5"]
    states = [s.state for s in sink.statuses]
    assert State.DISCONNECTED in states and states[-1] is State.STOPPED
