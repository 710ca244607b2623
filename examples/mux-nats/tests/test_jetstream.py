"""JetStream mode against a real nats-server: ids, acks after delivery, a durable position."""

from pathlib import Path
from typing import Any

import trio
from mux_nats import NatsOptions, NatsTransport
from publisher import connect, create_stream, nats_server

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
