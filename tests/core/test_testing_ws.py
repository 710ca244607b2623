"""The fake WebSocket server of mux_core.testing, driven by a plain trio-websocket client."""

from __future__ import annotations

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from mux_core.testing._ws import (
    Close,
    Drop,
    Reject,
    serve_ws,
)

DEADLINE = 5.0


async def test_publish_assigns_ids_without_touching_the_callers_dict() -> None:
    async with serve_ws() as server:
        mine = {"loss": 0.5}
        await server.publish(mine)
        await server.publish({"id": "custom"})
        await server.publish("text")
        await server.publish({"step": 4})
    assert mine == {"loss": 0.5}
    assert server.history == [
        {"loss": 0.5, "id": "1"},
        {"id": "custom"},
        "text",
        {"step": 4, "id": "4"},
    ]


async def test_replays_after_the_resume_param_then_streams_live() -> None:
    async with serve_ws(resume_param="after") as server:
        for i in range(3):
            await server.publish({"i": i})
        with trio.fail_after(DEADLINE):
            async with open_websocket_url(server.url + "?after=2") as ws:
                assert orjson.loads(await ws.get_message()) == {"i": 2, "id": "3"}
                await server.publish("live")
                assert await ws.get_message() == "live"
    assert server.requests[0][0] == "/ws?after=2"
    assert server.requests[0][1]["host"] == f"127.0.0.1:{server.port}"


async def test_other_paths_get_404_and_keep_the_script() -> None:
    async with serve_ws() as server:
        server.script(Reject(503, {"Retry-After": "3"}))
        with trio.fail_after(DEADLINE):
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(f"ws://127.0.0.1:{server.port}/other"):
                    pass
            assert info.value.status_code == 404
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(server.url):
                    pass
        assert info.value.status_code == 503
        assert (b"retry-after", b"3") in info.value.headers
        assert server.accepted == 0


@pytest.mark.parametrize(("action", "code"), [(Drop(after=1), 1006), (Close(4000, after=1), 4000)])
async def test_drop_cuts_the_connection_and_close_sends_a_frame(action: object, code: int) -> None:
    async with serve_ws() as server:
        await server.publish({"a": 1})
        await server.publish({"a": 2})
        server.script(action)  # type: ignore[arg-type]
        with trio.fail_after(DEADLINE):
            async with open_websocket_url(server.url) as ws:
                assert orjson.loads(await ws.get_message()) == {"a": 1, "id": "1"}
                with pytest.raises(ConnectionClosed) as info:
                    await ws.get_message()
    assert info.value.reason is not None
    assert info.value.reason.code == code


async def test_stop_drops_connections_and_start_reuses_the_port() -> None:
    async with serve_ws() as server:
        port = server.port
        with trio.fail_after(DEADLINE):
            async with open_websocket_url(server.url) as ws:
                await server.wait_for_connections(1)
                await server.stop()
                with pytest.raises(ConnectionClosed):
                    await ws.get_message()
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", port)
            await server.start()
            assert server.port == port
            async with open_websocket_url(server.url) as ws:
                await ws.send_message("hello")
                await server.wait_for_connections(2)
    assert server.accepted == 2
    assert server.received == ["hello"]


async def test_subscribe_mode_waits_for_the_clients_first_message() -> None:
    async with serve_ws(subscribe=True) as server:
        for i in range(3):
            await server.publish({"i": i})
        with trio.fail_after(DEADLINE):
            async with open_websocket_url(server.url) as ws:
                await ws.send_message('{"last_id": "1"}')
                assert orjson.loads(await ws.get_message()) == {"i": 1, "id": "2"}


async def test_history_is_bounded_and_a_late_client_starts_at_the_oldest_kept() -> None:
    """serve-demo runs for days: its WebSocket history must not grow forever."""
    import trio_websocket

    from mux_core.testing import serve_ws

    async with serve_ws(max_history=100) as server:
        for n in range(1, 1001):
            await server.publish({"n": n})
        assert len(server.history) <= 110
        async with trio_websocket.open_websocket_url(server.url + "?last_id=1") as ws:
            with trio.fail_after(5):
                first = orjson.loads(await ws.get_message())
        oldest = server.history[0]
        assert isinstance(oldest, dict)
        assert first["id"] == oldest["id"] and int(first["id"]) > 890
