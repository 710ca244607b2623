"""The fake SSE and REST servers, checked with plain httpx clients and raw sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import trio

from mux_core.testing._http_servers import (
    Close,
    Drop,
    FakeSseServer,
    Raw,
    Respond,
    Stall,
    StoredEvent,
    serve_rest,
    serve_sse,
)

DEADLINE = 5.0


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as c:
        yield c


_LINES: dict[httpx.Response, AsyncIterator[str]] = {}


async def _read_events(response: httpx.Response, n: int) -> list[list[str]]:
    """The field lines of the next ``n`` events of an SSE response."""
    events: list[list[str]] = []
    lines: list[str] = []
    # One line iterator per response: httpx streams a body only once.
    iterator = _LINES.setdefault(response, response.aiter_lines())
    async for line in iterator:
        if line:
            lines.append(line)
            continue
        events.append(lines)
        lines = []
        if len(events) == n:
            break
    return events


# -- SSE ----------------------------------------------------------------------


async def test_sse_replays_history_then_streams_live(client: httpx.AsyncClient) -> None:
    async with serve_sse() as server:
        await server.publish("first")
        await server.publish({"step": 2}, event="metric")
        with trio.fail_after(DEADLINE):
            async with client.stream("GET", server.url) as response:
                assert response.status_code == 200
                assert response.headers["content-type"] == "text/event-stream"
                assert await _read_events(response, 2) == [
                    ["id: 1", "data: first"],
                    ["id: 2", "event: metric", 'data: {"step":2}'],
                ]
                await server.publish("a\nb\r\nc", id="x7")
                assert await _read_events(response, 1) == [
                    ["id: x7", "data: a", "data: b", "data: c"]
                ]
        assert server.history[2] == StoredEvent("x7", None, "a\nb\r\nc")
        assert server.history[1].data == '{"step":2}'


async def test_sse_last_event_id_replays_only_later_events(client: httpx.AsyncClient) -> None:
    async with serve_sse() as server:
        for i in range(5):
            await server.publish(f"e{i + 1}")
        with trio.fail_after(DEADLINE):
            async with client.stream("GET", server.url, headers={"Last-Event-ID": "3"}) as r:
                assert await _read_events(r, 2) == [["id: 4", "data: e4"], ["id: 5", "data: e5"]]
            # An id the server does not know replays everything kept.
            async with client.stream("GET", server.url, headers={"Last-Event-ID": "zz"}) as r:
                assert (await _read_events(r, 1))[0] == ["id: 1", "data: e1"]
        assert server.requests[0].headers["last-event-id"] == "3"


async def test_sse_respond_actions(client: httpx.AsyncClient) -> None:
    async with serve_sse() as server:
        server.script(
            Respond(503, {"Retry-After": "7"}),
            Respond(204),
            Respond(200, {"Content-Type": "text/html"}, b"<html>hi</html>"),
        )
        with trio.fail_after(DEADLINE):
            r = await client.get(server.url)
            assert (r.status_code, r.headers["retry-after"]) == (503, "7")
            r = await client.get(server.url)
            assert (r.status_code, r.content) == (204, b"")
            r = await client.get(server.url)
            assert r.headers["content-type"] == "text/html"
            assert r.content == b"<html>hi</html>"
            # Script exhausted: normal behaviour again.
            async with client.stream("GET", server.url) as r:
                assert r.headers["content-type"] == "text/event-stream"


async def test_sse_stall_sends_headers_then_nothing(client: httpx.AsyncClient) -> None:
    async with serve_sse() as server:
        server.script(Stall())
        with trio.fail_after(DEADLINE):
            async with client.stream("GET", server.url) as stalled:
                assert stalled.status_code == 200
                async with client.stream("GET", server.url) as live:
                    await server.publish("hello")
                    # The live stream got it; the stalled one gets nothing.
                    assert await _read_events(live, 1) == [["id: 1", "data: hello"]]
                received = b""
                with trio.move_on_after(0.2):
                    async for chunk in stalled.aiter_raw():
                        received += chunk
                assert received == b""


async def test_sse_drop_sends_n_events_then_breaks(client: httpx.AsyncClient) -> None:
    async with serve_sse() as server:
        for i in range(3):
            await server.publish(f"e{i}")
        server.script(Drop(after=2))
        with trio.fail_after(DEADLINE):
            async with client.stream("GET", server.url) as r:
                lines = []
                with pytest.raises(httpx.RemoteProtocolError):
                    async for line in r.aiter_lines():
                        lines.append(line)
        assert lines == ["id: 1", "data: e0", "", "id: 2", "data: e1", ""]


async def test_sse_raw_writes_exact_bytes(client: httpx.AsyncClient) -> None:
    garbage = b"\xff\xfe not: an\revent\x00 \n\ndata: unterminated"
    async with serve_sse() as server:
        server.script(Raw(garbage), Raw(b"data: never ends", close=False))
        with trio.fail_after(DEADLINE):
            async with client.stream("GET", server.url) as r:
                assert r.headers["content-type"] == "text/event-stream"
                assert await r.aread() == garbage
            async with client.stream("GET", server.url) as r:
                chunks = r.aiter_raw()
                assert await chunks.__anext__() == b"data: never ends"


async def test_close_sends_no_response(client: httpx.AsyncClient) -> None:
    async with serve_sse() as sse, serve_rest() as rest:
        sse.script(Close())
        rest.script(Close())
        with trio.fail_after(DEADLINE):
            for url in (sse.url, rest.url):
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get(url)
            assert (await client.get(rest.url)).status_code == 200


async def test_sse_stop_drops_streams_and_start_reuses_the_port(
    client: httpx.AsyncClient,
) -> None:
    async with serve_sse() as server:
        port = server.port
        await server.publish("kept")
        with trio.fail_after(DEADLINE):
            async with client.stream("GET", server.url) as r:
                assert len(await _read_events(r, 1)) == 1
                await server.stop()
                with pytest.raises(httpx.RemoteProtocolError):
                    await _read_events(r, 1)
            with pytest.raises(httpx.ConnectError):
                await client.get(server.url)
            await server.start()
            assert server.port == port
            async with client.stream("GET", server.url, headers={"Last-Event-ID": "0"}) as r:
                assert await _read_events(r, 1) == [["id: 1", "data: kept"]]
            await server.wait_for_connections(2)
        # The refused attempt never reached the server.
        assert len(server.requests) == 2


async def test_sse_wrong_path_method_and_garbage_requests() -> None:
    async with serve_sse() as server:
        with trio.fail_after(DEADLINE):
            async with httpx.AsyncClient() as c:
                server.script(Respond(503))
                # Other paths get 404 and leave the script alone.
                assert (await c.get(server.url + "/nope")).status_code == 404
                assert (await c.get(server.url)).status_code == 503
                assert (await c.post(server.url, content=b"x")).status_code == 405
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            async with stream:
                await stream.send_all(b"\x00\x01 NOT HTTP AT ALL\r\n\r\n")
                answer = b""
                while chunk := await stream.receive_some(4096):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 400 ")
            # A client that vanishes mid-request does not hurt the server either.
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(b"GET /events HTTP/1.1\r\nHost: x\r\n")
            await stream.aclose()
            async with httpx.AsyncClient() as c, c.stream("GET", server.url) as r:
                assert r.status_code == 200


async def _raw_sse_client(server: FakeSseServer, got: list[int], i: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(b"GET /events HTTP/1.1\r\nHost: t\r\nLast-Event-ID: 0\r\n\r\n")
        received = b""
        while b"data: go" not in received:
            received += await stream.receive_some(4096)
        got.append(i)


async def test_sse_serves_many_idle_streams() -> None:
    n = 1000
    got: list[int] = []
    async with serve_sse() as server:
        with trio.fail_after(15):
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(_raw_sse_client, server, got, i)
                await server.wait_for_connections(n)
                await server.publish("go")
    assert sorted(got) == list(range(n))


async def test_history_is_trimmed_to_max_history(client: httpx.AsyncClient) -> None:
    async with serve_sse(max_history=3) as server:
        for i in range(10):
            await server.publish(f"e{i}")
        assert [e.id for e in server.history] == ["8", "9", "10"]
        with trio.fail_after(DEADLINE):
            async with client.stream("GET", server.url, headers={"Last-Event-ID": "2"}) as r:
                assert (await _read_events(r, 1))[0] == ["id: 8", "data: e7"]


# -- REST ---------------------------------------------------------------------


async def test_rest_items_cursor_and_page_size(client: httpx.AsyncClient) -> None:
    async with serve_rest(page_size=3) as server:
        await server.publish({"step": 1, "loss": 0.5}, event="metric")
        await server.publish("plain text")
        await server.publish("[1, 2]", id="c")
        await server.publish({"step": 4})
        with trio.fail_after(DEADLINE):
            r = await client.get(server.url, params={"after": "1"})
            assert r.headers["content-type"] == "application/json"
            assert orjson.loads(r.content) == {
                "items": [
                    {"id": "2", "event": None, "data": "plain text"},
                    {"id": "c", "event": None, "data": "[1, 2]"},
                    {"id": "4", "event": None, "step": 4},
                ]
            }
            # Unknown cursor: the oldest items first, capped at page_size.
            r = await client.get(server.url, params={"after": "nope"})
            assert [i["id"] for i in r.json()["items"]] == ["1", "2", "c"]
            assert r.json()["items"][0] == {"id": "1", "event": "metric", "step": 1, "loss": 0.5}
            # No cursor: the newest page_size items.
            r = await client.get(server.url)
            assert [i["id"] for i in r.json()["items"]] == ["2", "c", "4"]
            r = await client.get(server.url, params={"after": "4"})
            assert r.json() == {"items": []}
        assert server.requests[0].query == {"after": "1"}


async def test_rest_etag_and_304(client: httpx.AsyncClient) -> None:
    async with serve_rest() as server:
        await server.publish({"v": 1})
        with trio.fail_after(DEADLINE):
            r = await client.get(server.url)
            etag = r.headers["etag"]
            r = await client.get(server.url, headers={"If-None-Match": etag})
            assert (r.status_code, r.content, r.headers["etag"]) == (304, b"", etag)
            await server.publish({"v": 2})
            r = await client.get(server.url, headers={"If-None-Match": etag})
            assert r.status_code == 200
            assert r.headers["etag"] != etag
            assert [i["v"] for i in r.json()["items"]] == [1, 2]


async def test_rest_actions(client: httpx.AsyncClient) -> None:
    async with serve_rest() as server:
        await server.publish({"v": 1})
        server.script(
            Respond(503, {"Retry-After": "3"}),
            Respond(404),
            Drop(after=5),
            Raw(b"not json at all"),
            Stall(),
        )
        with trio.fail_after(DEADLINE):
            r = await client.get(server.url)
            assert (r.status_code, r.headers["retry-after"]) == (503, "3")
            assert (await client.get(server.url)).status_code == 404
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(server.url)
            r = await client.get(server.url)
            assert (r.status_code, r.content) == (200, b"not json at all")
            with pytest.raises(httpx.ReadTimeout):
                await client.get(server.url, timeout=0.2)
            assert (await client.get(server.url)).json()["items"] == [
                {"id": "1", "event": None, "v": 1}
            ]
        assert len(server.requests) == 6


async def test_rest_stop_and_start_on_the_same_port(client: httpx.AsyncClient) -> None:
    async with serve_rest(port=0) as server:
        port = server.port
        await server.publish({"v": 1})
        with trio.fail_after(DEADLINE):
            assert (await client.get(server.url)).status_code == 200
            await server.stop()
            assert not server.running
            with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError)):
                await client.get(server.url)
            await server.start()
            assert server.port == port
            assert len((await client.get(server.url)).json()["items"]) == 1


async def test_script_rejects_foreign_actions() -> None:
    async with serve_rest() as server:
        with pytest.raises(TypeError, match="not an HTTP fault"):
            server.script("Respond(503)")  # type: ignore[arg-type]
