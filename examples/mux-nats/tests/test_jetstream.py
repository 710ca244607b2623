"""JetStream mode against a real nats-server: ids, acks after delivery, a durable position."""

from pathlib import Path
from typing import Any

import trio
from mux_nats import NatsOptions, NatsTransport
from publisher import connect, create_stream, nats_server
from sessions import running

from mux_core import Failed, ServerUnavailable
from mux_core.testing import run_one_session


async def _consumer(port: int, stream: str, durable: str) -> dict[str, Any]:
    async with connect(port) as nats:
        return await nats.api(f"CONSUMER.INFO.{stream}.{durable}")


async def _ack_floor(port: int) -> int:
    return int((await _consumer(port, "EVENTS", "mux"))["ack_floor"]["stream_seq"])


async def test_stream_sequence_ids_acks_after_delivery_and_a_durable_position(
    tmp_path: Path,
) -> None:
    async with nats_server("-js", "-sd", str(tmp_path)) as server:
        await create_stream(server.port, "EVENTS", ["ev.>"])
        async with connect(server.port) as nats:
            await nats.js_publish([(f"ev.{n % 2}", b'{"n": %d}' % n, str(n)) for n in range(1, 6)])
        options = NatsOptions(port=server.port, mode="jetstream", stream="EVENTS", batch=2)
        transport = NatsTransport(options)
        first = await run_one_session(transport, until=5)
        with trio.fail_after(10):  # the acks were sent; the server takes them in its own time
            while await _ack_floor(server.port) < 5:  # noqa: ASYNC110 -- the server's state
                await trio.sleep(0.02)
        async with connect(server.port) as nats:
            await nats.js_publish([("ev.6", b'{"n": 6}', "6")])
        second = await run_one_session(NatsTransport(options), until=1)  # a new mux, say
        consumer = await _consumer(server.port, "EVENTS", "mux")
    assert [(e.event, e.id, e.data) for e in first.events] == [
        (f"ev.{n % 2}", str(n), {"n": n}) for n in range(1, 6)
    ]
    assert first.delivered_at  # acknowledged only after session.delivered()
    assert [e.id for e in second.events] == ["6"]  # the server kept the consumer's place
    assert consumer["config"]["ack_policy"] == "explicit"


async def test_a_missing_stream_fails_and_no_jetstream_is_retried(tmp_path: Path) -> None:
    async with nats_server("-js", "-sd", str(tmp_path)) as server:
        options = NatsOptions(port=server.port, mode="jetstream", stream="NOPE")
        missing = await run_one_session(NatsTransport(options))
    async with nats_server() as server:  # JetStream off
        options = NatsOptions(port=server.port, mode="jetstream", stream="EVENTS")
        off = await run_one_session(NatsTransport(options))
    assert repr(missing.error) == (
        "Failed(\"stream 'NOPE' not found -- create it first (nats stream add)\")"
    )
    assert isinstance(missing.error, Failed) and isinstance(off.error, ServerUnavailable)
    assert off.error.detail == (
        "JetStream did not answer (no responders): is it enabled (nats-server -js)?"
    )


async def test_what_the_sinks_have_is_not_emitted_again_even_when_its_acks_were_lost(
    tmp_path: Path,
) -> None:
    async with nats_server("-js", "-sd", str(tmp_path)) as server:
        await create_stream(server.port, "EVENTS", ["ev.>"])
        async with connect(server.port) as nats:
            await nats.js_publish([("ev.a", b"%d" % n, str(n)) for n in range(1, 101)])
        options = NatsOptions(port=server.port, mode="jetstream", stream="EVENTS", ack_wait=0.3)
        first = await run_one_session(NatsTransport(options), until=100)
        await server.kill()  # at once: nats-server 2.9 loses the acks of its last ~0.1 s
        await server.restart()
        lost = (await _consumer(server.port, "EVENTS", "mux"))["num_ack_pending"]
        # A new mux (a new transport) resumed from the first one's state, as --state does:
        # the server sends again what it lost the acks of, the transport only acks it.
        resumed = NatsTransport(options)
        async with running(resumed, resume=first.resume, until=lambda r: bool(r.events)) as second:
            with trio.fail_after(10):
                while await _ack_floor(server.port) < 100:  # noqa: ASYNC110 -- the server's state
                    await trio.sleep(0.02)
            async with connect(server.port) as nats:
                await nats.js_publish([("ev.a", b"101", "101")])
        assert second.result is not None
        # The stream made again: its sequences start over, stored later, so they are new.
        async with connect(server.port) as nats:
            await nats.api("STREAM.DELETE.EVENTS")
        await create_stream(server.port, "EVENTS", ["ev.>"])
        async with connect(server.port) as nats:
            await nats.js_publish([("ev.a", b"1 again", "again")])
        third = await run_one_session(NatsTransport(options), resume=second.result.resume, until=1)
    assert [e.id for e in first.events] == [str(n) for n in range(1, 101)]
    assert [e.id for e in second.result.events] == ["101"], f"{lost} acks were lost"
    assert [(e.id, e.data) for e in third.events] == [("1", "1 again")]
