from mux_ndjson_tcp import NdjsonTcpOptions, NdjsonTcpTransport

from mux_core.testing import Stall, refusing_port, run_one_session, serve_tcp


async def test_refused_restart_resume_garbage_silence() -> None:
    with refusing_port() as port:
        refused = await run_one_session(NdjsonTcpTransport(NdjsonTcpOptions(port=port)))
    async with serve_tcp(hello="resume_after") as server:
        transport = NdjsonTcpTransport(NdjsonTcpOptions(port=server.port, read_timeout=0.3))
        await server.publish({"n": 1})
        first = await run_one_session(transport, until=1)
        await server.restart()  # killed, back on the same port, then garbage mid-stream
        await server.publish(b"\xff not json")
        await server.publish({"n": 3})
        second = await run_one_session(transport, resume=first.resume, until=1)
        server.script(Stall())  # accepts, then silence
        silent = await run_one_session(transport, resume=second.resume)
    assert repr(refused.error) == "ServerUnavailable('connection refused')"
    assert [e.id for e in first.events + second.events] == ["1", "3"]  # no duplicate, no gap
    assert "skipped a malformed line" in repr(second.records)
    assert repr(silent.error) == "Disconnected('no data for 0.3 s')"
    assert server.received[-1] == b'{"resume_after":3}'  # the id goes back as an integer
