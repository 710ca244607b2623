"""The WebSocket transport, one session at a time, against the real fake server."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State as ProtocolState
from websockets.uri import parse_uri

from mux_core.errors import Disconnected, Ended, Failed, ServerUnavailable, SessionError
from mux_core.records import (
    Event,
    Record,
    State,
    Status,
)
from mux_core.testing._ws import (
    Close,
    Drop,
    Garbage,
    Reject,
    Stall,
    serve_ws,
)
from mux_core.transport import ResumeState, Session, SharedResources
from mux_ws import WsOptions, WsTransport
from mux_ws._frames import FrameSplitter

DEADLINE = 5.0


class Recorder:
    """The ``send`` of a Session: keeps every batch and wakes waiters."""

    def __init__(self) -> None:
        self.batches: list[list[Record]] = []
        self.gate: trio.Event | None = None
        self._changed = trio.Event()

    async def send(self, batch: Sequence[Record]) -> None:
        self.batches.append(list(batch))
        changed, self._changed = self._changed, trio.Event()
        changed.set()
        if self.gate is not None and any(isinstance(r, Event) for r in batch):
            await self.gate.wait()

    @property
    def events(self) -> list[Event]:
        return [r for b in self.batches for r in b if isinstance(r, Event)]

    @property
    def statuses(self) -> list[Status]:
        return [r for b in self.batches for r in b if isinstance(r, Status)]

    async def wait_events(self, n: int) -> None:
        while len(self.events) < n:
            await self._changed.wait()


def make_session(rec: Recorder, resume: ResumeState | None = None, timeout: float = 5) -> Session:
    return Session(
        source="s",
        transport="ws",
        resume=resume if resume is not None else ResumeState(),
        connect_timeout=timeout,
        shared=SharedResources(),
        send=rec.send,
        attempt=1,
    )


async def outcome_of(session: Session, **options: Any) -> SessionError:
    """Run one session to its end and return the SessionError it raised."""
    with trio.fail_after(DEADLINE), pytest.raises(SessionError) as info:
        await WsTransport(WsOptions(**options)).run_session(session)
    return info.value


@attrs.define
class Background:
    """A session running in a nursery; ``error`` is set when it ends."""

    done: trio.Event = attrs.Factory(trio.Event)
    error: BaseException | None = None

    async def run(self, session: Session, options: WsOptions) -> None:
        try:
            await WsTransport(options).run_session(session)
        except SessionError as exc:
            self.error = exc
        finally:
            self.done.set()


async def test_events_carry_id_type_and_decoded_data() -> None:
    rec = Recorder()
    async with serve_ws() as server, trio.open_nursery() as nursery:
        await server.publish({"seq": 7, "kind": "metric", "loss": 0.5})
        await server.publish({"kind": "log", "text": "hi"})  # gets "id": "2"
        await server.publish("plain text")
        await server.publish('{"seq": "x9"}')
        opts = WsOptions(url=server.url, id_field="seq", event_field="kind")
        nursery.start_soon(Background().run, make_session(rec), opts)
        with trio.fail_after(DEADLINE):
            await rec.wait_events(4)
        nursery.cancel_scope.cancel()
    assert rec.statuses[0].state is State.CONNECTED
    got = [(e.event, e.id, e.data) for e in rec.events]
    assert got == [
        ("metric", "7", {"seq": 7, "kind": "metric", "loss": 0.5, "id": "1"}),
        ("log", None, {"kind": "log", "text": "hi", "id": "2"}),
        ("message", None, "plain text"),
        ("message", "x9", {"seq": "x9"}),
    ]
    assert [e.seq for e in rec.events] == [1, 2, 3, 4]


async def test_one_key_may_be_both_the_id_and_the_type() -> None:
    async with serve_ws() as server:
        await server.publish({"kind": "metric"})
        server.script(Close(after=1))
        rec = Recorder()
        await outcome_of(make_session(rec), url=server.url, id_field="kind", event_field="kind")
    assert [(e.event, e.id) for e in rec.events] == [("metric", "metric")]


async def test_decode_text_and_json_modes() -> None:
    async with serve_ws() as server:
        await server.publish('{"a": 1}')
        await server.publish("not json")
        server.script(Close(after=2), Close(after=2))
        text = Recorder()
        await outcome_of(make_session(text), url=server.url, decode="text")
        assert [e.data for e in text.events] == ['{"a": 1}', "not json"]
        strict = Recorder()
        await outcome_of(make_session(strict), url=server.url, decode="json")
    assert [e.data for e in strict.events] == [{"a": 1}]
    assert any("not JSON" in s.detail for s in strict.statuses)


async def test_buffered_messages_arrive_as_one_batch() -> None:
    rec = Recorder()
    rec.gate = trio.Event()
    async with serve_ws() as server, trio.open_nursery() as nursery:
        for i in range(50):
            await server.publish({"i": i})
        nursery.start_soon(Background().run, make_session(rec), WsOptions(url=server.url))
        with trio.fail_after(DEADLINE):
            await rec.wait_events(1)
            await trio.testing.wait_all_tasks_blocked()  # the rest sits in the client's queue
            rec.gate.set()
            await rec.wait_events(50)
        nursery.cancel_scope.cancel()
    event_batches = [b for b in rec.batches if any(isinstance(r, Event) for r in b)]
    assert len(event_batches) <= 2  # one message per batch would make 50
    assert [e.data["i"] for e in rec.events] == list(range(50))


async def test_headers_are_sent_with_the_handshake() -> None:
    async with serve_ws() as server:
        server.script(Close())
        await outcome_of(make_session(Recorder()), url=server.url, headers={"X-Token": "s3"})
    assert server.requests[0][0] == "/ws"
    assert server.requests[0][1]["x-token"] == "s3"


@pytest.mark.parametrize("status", [401, 403, 404, 410])
async def test_rejected_handshake_fails(status: int) -> None:
    rec = Recorder()
    async with serve_ws() as server:
        server.script(Reject(status))
        error = await outcome_of(make_session(rec), url=server.url)
    assert isinstance(error, Failed)
    assert str(status) in error.detail
    assert rec.batches == []  # never connected


async def test_unknown_path_fails() -> None:
    async with serve_ws() as server:
        error = await outcome_of(make_session(Recorder()), url=server.url + "/nope")
    assert isinstance(error, Failed)
    assert "404" in error.detail


async def test_503_is_unavailable_with_retry_after() -> None:
    async with serve_ws() as server:
        server.script(Reject(503, {"Retry-After": "7"}))
        error = await outcome_of(make_session(Recorder()), url=server.url)
    assert isinstance(error, ServerUnavailable)
    assert error.retry_after == 7.0


async def test_refused_port_is_unavailable() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    error = await outcome_of(make_session(Recorder()), url=f"ws://127.0.0.1:{port}/ws")
    assert isinstance(error, ServerUnavailable)
    assert "refused" in error.detail


async def test_silent_server_times_out_the_handshake() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")  # never accepts: no response
    async with listeners[0]:
        port = listeners[0].socket.getsockname()[1]
        session = make_session(Recorder(), timeout=0.2)
        error = await outcome_of(session, url=f"ws://127.0.0.1:{port}/ws")
    assert isinstance(error, ServerUnavailable)
    assert "within 0.2 s" in error.detail


async def test_server_closing_during_handshake_is_reported_at_once() -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, hang_up, 0)
        port = listeners[0].socket.getsockname()[1]
        # connect_timeout is long: only noticing the closed socket ends this quickly.
        session = make_session(Recorder(), timeout=60)
        error = await outcome_of(session, url=f"ws://127.0.0.1:{port}/ws")
        nursery.cancel_scope.cancel()
    assert isinstance(error, ServerUnavailable)
    assert "during the handshake" in error.detail


def test_check_rejects_other_schemes() -> None:
    with pytest.raises(ValueError, match="ws:// or wss://"):
        WsTransport.Options.check(WsOptions(url="http://127.0.0.1/ws"))
    with pytest.raises(ValueError, match="no host"):
        WsTransport.Options.check(WsOptions(url="ws:///ws"))
    WsTransport.Options.check(WsOptions(url="wss://example.org:9443/x?y=1"))


async def test_bad_url_fails_the_session() -> None:
    error = await outcome_of(make_session(Recorder()), url="ftp://127.0.0.1/ws")
    assert isinstance(error, Failed)


def test_options_validate_values() -> None:
    with pytest.raises(ValueError, match="ping_timeout"):
        WsOptions(url="ws://h/", ping_timeout=0)
    with pytest.raises(ValueError, match="ping_interval"):
        WsOptions(url="ws://h/", ping_interval=-1)


async def test_drop_is_disconnected_after_the_sent_messages() -> None:
    rec = Recorder()
    session = make_session(rec)
    async with serve_ws() as server:
        for i in range(3):
            await server.publish({"i": i})
        server.script(Drop(after=2))
        error = await outcome_of(session, url=server.url, id_field="id")
    assert isinstance(error, Disconnected)
    assert [e.id for e in rec.events] == ["1", "2"]
    assert session.resume.last_id == "2"


@pytest.mark.parametrize("end_on_close", [True, False])
async def test_close_1000(end_on_close: bool) -> None:
    rec = Recorder()
    async with serve_ws() as server:
        await server.publish({"a": 1})
        server.script(Close(code=1000, after=1))
        error = await outcome_of(make_session(rec), url=server.url, end_on_close=end_on_close)
    assert isinstance(error, Ended if end_on_close else Disconnected)
    assert "1000" in error.detail
    assert len(rec.events) == 1


async def test_other_close_codes_are_disconnections_even_with_end_on_close() -> None:
    async with serve_ws() as server:
        server.script(Close(code=1011, reason="overloaded"))
        error = await outcome_of(make_session(Recorder()), url=server.url, end_on_close=True)
    assert isinstance(error, Disconnected)
    assert "1011: overloaded" in error.detail


async def test_stalled_server_misses_pong() -> None:
    rec = Recorder()
    async with serve_ws() as server:
        server.script(Stall())
        error = await outcome_of(
            make_session(rec), url=server.url, ping_interval=0.05, ping_timeout=0.2
        )
    assert isinstance(error, Disconnected)
    assert error.detail == "no pong within 0.2 s"
    assert rec.statuses[0].state is State.CONNECTED


async def test_heartbeat_keeps_a_quiet_healthy_connection() -> None:
    rec = Recorder()
    async with serve_ws() as server, trio.open_nursery() as nursery:
        runner = Background()
        opts = WsOptions(url=server.url, ping_interval=0.01, ping_timeout=1.0)
        nursery.start_soon(runner.run, make_session(rec), opts)
        await server.wait_for_connections(1)
        for i in range(20):  # many ping rounds pass while the stream idles between publishes
            await server.publish({"i": i})
            with trio.fail_after(DEADLINE):
                await rec.wait_events(i + 1)
        assert not runner.done.is_set()
        nursery.cancel_scope.cancel()


async def test_garbage_after_handshake_is_disconnected() -> None:
    async with serve_ws() as server:
        server.script(Garbage(b"\xff\xfe not a websocket frame"))
        error = await outcome_of(make_session(Recorder()), url=server.url)
    assert isinstance(error, Disconnected)


async def test_oversized_message_is_reported_then_disconnected() -> None:
    rec = Recorder()
    async with serve_ws() as server:
        await server.publish({"small": 1})
        await server.publish("x" * 500)
        error = await outcome_of(make_session(rec), url=server.url, max_message_bytes=100)
    assert isinstance(error, Disconnected)
    assert "1009" in error.detail
    assert len(rec.events) == 1
    assert any("max_message_bytes (100)" in s.detail for s in rec.statuses)


async def test_cancelled_session_sends_a_close_frame() -> None:
    async with serve_ws() as server:
        async with trio.open_nursery() as nursery:
            runner = Background()
            nursery.start_soon(runner.run, make_session(Recorder()), WsOptions(url=server.url))
            await server.wait_for_connections(1)
            nursery.cancel_scope.cancel()
        assert runner.error is None  # cancellation is not reported as a session outcome
        with trio.fail_after(DEADLINE):
            await trio.testing.wait_all_tasks_blocked()
        assert server.client_closes == [1000]


async def _stream_until(
    server: Any, session: Session, rec: Recorder, n: int, **options: Any
) -> BaseException | None:
    """Run a session until ``n`` events in total were recorded, then stop the server."""
    runner = Background()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run, session, WsOptions(url=server.url, **options))
        with trio.fail_after(DEADLINE):
            await rec.wait_events(n)
            await server.stop()
            await runner.done.wait()
    return runner.error


async def test_resume_param_across_a_restart_loses_and_repeats_nothing() -> None:
    rec = Recorder()
    resume = ResumeState()
    opts: dict[str, Any] = {"id_field": "id", "resume_param": "last_id"}
    async with serve_ws() as server:
        for i in range(3):
            await server.publish({"i": i})
        error = await _stream_until(server, make_session(rec, resume), rec, 3, **opts)
        assert isinstance(error, Disconnected)
        assert resume.last_id == "3"
        await server.publish({"i": 3})  # published while the server is down
        await server.publish({"i": 4})
        await server.start()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                Background().run, make_session(rec, resume), WsOptions(url=server.url, **opts)
            )
            with trio.fail_after(DEADLINE):
                await rec.wait_events(5)
                await server.publish({"i": 5})  # live
                await rec.wait_events(6)
            nursery.cancel_scope.cancel()
    assert server.requests[0][0] == "/ws"
    assert server.requests[1][0] == "/ws?last_id=3"
    assert [e.id for e in rec.events] == ["1", "2", "3", "4", "5", "6"]
    assert [e.data["i"] for e in rec.events] == [0, 1, 2, 3, 4, 5]


async def test_subscribe_carries_the_last_id() -> None:
    rec = Recorder()
    resume = ResumeState()
    opts: dict[str, Any] = {"id_field": "id", "subscribe": '{"op": "sub", "last_id": "{last_id}"}'}
    async with serve_ws(subscribe=True) as server:
        for i in range(2):
            await server.publish({"i": i})
        error = await _stream_until(server, make_session(rec, resume), rec, 2, **opts)
        assert isinstance(error, Disconnected)
        await server.publish({"i": 2})
        await server.start()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                Background().run, make_session(rec, resume), WsOptions(url=server.url, **opts)
            )
            with trio.fail_after(DEADLINE):
                await rec.wait_events(3)
            nursery.cancel_scope.cancel()
    assert server.received == ['{"op": "sub", "last_id": ""}', '{"op": "sub", "last_id": "2"}']
    assert [e.id for e in rec.events] == ["1", "2", "3"]
    assert "?" not in server.requests[1][0]  # no resume_param configured


async def test_resume_param_keeps_the_urls_own_query() -> None:
    resume = ResumeState(last_id="a b&c")
    async with serve_ws() as server:
        server.script(Close())
        await outcome_of(
            make_session(Recorder(), resume), url=server.url + "?run=7", resume_param="after"
        )
    assert server.requests[0][0] == "/ws?run=7&after=a+b%26c"


# -- the frame splitter: the same messages as websockets alone, however the bytes are cut


def _frame(opcode: int, payload: bytes, *, fin: bool = True, wide: int = 0) -> bytes:
    """One unmasked server frame; ``wide`` forces the 16- (2) or 64-bit (8) length form."""
    size = len(payload)
    first = (0x80 if fin else 0) | opcode
    if wide == 8 or size >= 1 << 16:
        return bytes([first, 127]) + size.to_bytes(8, "big") + payload
    if wide == 2 or size >= 126:
        return bytes([first, 126]) + size.to_bytes(2, "big") + payload
    return bytes([first, size]) + payload


_payloads = st.binary(max_size=300)


@st.composite
def _streams(draw: st.DrawFn) -> bytes:
    """Messages whole and fragmented, with pings and pongs between and inside them."""
    parts: list[bytes] = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["text", "binary", "fragmented", "ping", "pong", "bad"]))
        wide = draw(st.sampled_from([0, 0, 2, 8]))
        if kind in ("text", "binary"):
            parts.append(_frame(1 if kind == "text" else 2, draw(_payloads), wide=wide))
        elif kind == "bad":  # reserved bit, unknown opcode, masked, control frame too long
            bad = draw(st.sampled_from([b"\xc1\x01x", b"\x83\x00", b"\x81\x81abcdx", b"\x89\x7e"]))
            parts.append(bad + b"\x00\x80" + b"y" * 128)
        elif kind in ("ping", "pong"):
            parts.append(_frame(9 if kind == "ping" else 10, draw(st.binary(max_size=125))))
        else:
            pieces = draw(st.lists(_payloads, min_size=2, max_size=4))
            parts.append(_frame(1, pieces[0], fin=False, wide=wide))
            for i, piece in enumerate(pieces[1:], start=2):
                if draw(st.booleans()):
                    parts.append(_frame(9, b"p"))
                parts.append(_frame(0, piece, fin=i == len(pieces)))
    if draw(st.booleans()):
        parts.append(_frame(8, (1000).to_bytes(2, "big")))
    return b"".join(parts)


def _messages_of(items: list[Any], parts: list[bytes]) -> list[bytes]:
    """Messages from the splitter's items or the protocol's frames (fragments joined)."""
    out: list[bytes] = []
    for item in items:
        if type(item) is bytes:
            out.append(item)
        elif item.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            parts.append(bytes(item.data))
            if item.fin:
                out.append(b"".join(parts))
                parts.clear()
    return out


def _open_protocol(max_size: int) -> ClientProtocol:
    return ClientProtocol(parse_uri("ws://h/"), state=ProtocolState.OPEN, max_size=max_size)


@settings(max_examples=300, deadline=None)
@given(
    stream=_streams(),
    cuts=st.lists(st.integers(0, 5000), max_size=8),
    small_frame=st.sampled_from([4, 40, 200, 65536]),
    max_size=st.sampled_from([100, 250, 8 << 20]),
)
def test_splitter_gives_what_the_protocol_alone_gives(
    stream: bytes, cuts: list[int], small_frame: int, max_size: int
) -> None:
    reference = _open_protocol(max_size)
    reference.receive_data(stream)
    expected = _messages_of(reference.events_received(), [])

    protocol = _open_protocol(max_size)
    splitter = FrameSplitter(protocol, max_size, small_frame=small_frame)
    got: list[bytes] = []
    parts: list[bytes] = []
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    for start, end in itertools.pairwise(bounds):
        got += _messages_of(splitter.feed(stream[start:end]), parts)
    assert got == expected
    assert protocol.state is reference.state
    assert type(protocol.parser_exc) is type(reference.parser_exc)
    # The same pongs and close echo (each masked with its own random key).
    assert _unmasked(protocol.data_to_send()) == _unmasked(reference.data_to_send())


def _unmasked(writes: list[bytes]) -> list[tuple[int, bytes]]:
    """(first byte, payload) of the client's control frames (payloads <= 125 bytes)."""
    frames = []
    data = b"".join(writes)
    while data:
        size = data[1] & 0x7F
        key, payload = data[2:6], data[6 : 6 + size]
        frames.append((data[0], bytes(b ^ key[i % 4] for i, b in enumerate(payload))))
        data = data[6 + size :]
    return frames
