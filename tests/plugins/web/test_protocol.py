"""The web sink's protocol, without a browser: a real engine, real sockets.

The event stream carries exactly the file sink's records, resumes after
``Last-Event-ID``, drops a viewer that stops reading without slowing the
source, and relays into a second mux; the guard refuses what it must.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
import trio
import trio.lowlevel

from mux_core._config import parse_config
from mux_core.errors import ConfigError
from mux_core.records import Event, State
from mux_core.testing import Collectors, serve_sse
from mux_web import WebOptions
from tests.helpers.e2e import FAST_RETRY, MUX, builtin_plugins, running_engine
from tests.plugins.web.helpers import event_stream, request, wait_until, web_sink


def _config(url: str, tmp_path: Path, web: str = "") -> str:
    return (
        FAST_RETRY
        + textwrap.dedent(
            f"""
        [[sources]]
        name = "train"
        transport = "sse"
        url = "{url}"

        [[sinks]]
        type = "file"
        path = "{tmp_path / "run.jsonl"}"
        flush_interval = 0.05
        fsync = false

        [[sinks]]
        type = "web"
        listen = "127.0.0.1:0"
        fields = ["loss"]
        """
        )
        + textwrap.dedent(web)
    )


async def test_the_stream_carries_the_file_sinks_records_in_order(tmp_path: Path) -> None:
    async with serve_sse() as server:
        for step in range(1, 101):
            await server.publish({"step": step, "loss": 1 / step})
        async with running_engine(_config(server.url, tmp_path)) as (engine, collect):
            sink = await web_sink(engine)
            await collect.wait_for(lambda c: len(c.events) == 100)
            async with event_stream(sink.port) as stream:
                assert stream.status == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                hello = await stream.next()
                assert hello is not None and hello.event == "hello"
                assert orjson.loads(hello.data)["fields"] == ["loss"]
                for step in range(101, 151):
                    await server.publish({"step": step, "loss": 1 / step})
                await collect.wait_for(lambda c: len(c.events) == 150)
                engine.request_stop("test over")
                frames = []
                while (frame := await stream.next()) is not None:
                    if frame.event == "message":
                        frames.append(frame)
    lines = (tmp_path / "run.jsonl").read_bytes().splitlines()
    assert [f.data.encode() for f in frames] == lines
    # Ids number the sink's records from 1, after the sink's epoch: an event's
    # id is the number of its last record, so record i comes in an event >= i.
    numbers = [int(f.id.rpartition("-")[2]) for f in frames]
    assert numbers == sorted(numbers) and numbers[-1] == len(lines)
    assert all(number >= i for i, number in enumerate(numbers, 1))
    assert len(set(numbers)) < len(numbers)  # records went out several to an event


async def test_a_viewer_resumes_after_its_last_event_id(tmp_path: Path) -> None:
    async with (
        serve_sse() as server,
        running_engine(_config(server.url, tmp_path)) as (
            engine,
            collect,
        ),
    ):
        sink = await web_sink(engine)
        for step in range(1, 41):
            await server.publish({"step": step, "loss": 0.5})
        await collect.wait_for(lambda c: len(c.events) == 40)
        async with event_stream(sink.port) as stream:
            first = await stream.records(sink.feed.seq)
        last_id = first[-1].id
        for step in range(41, 61):
            await server.publish({"step": step, "loss": 0.5})
        await collect.wait_for(lambda c: len(c.events) == 60)
        async with event_stream(sink.port, {"Last-Event-ID": last_id}) as stream:
            hello = await stream.next()
            assert hello is not None and hello.event == "hello"
            resumed = await stream.records(sink.feed.seq - len(first))
            assert not [f for f in stream.pending if f.event == "reset"]
        assert int(resumed[0].id.rpartition("-")[2]) > int(last_id.rpartition("-")[2])
        assert len(first) + len(resumed) == sink.feed.seq  # nothing missed, nothing twice
        steps = [
            orjson.loads(f.data)["data"]["step"] for f in first + resumed if '"event"' in f.data
        ]
        assert steps == list(range(1, 61))

        # An id of another run of mux (another epoch): start over, whole history.
        async with event_stream(sink.port, {"Last-Event-ID": "0badf00d-12"}) as stream:
            kinds = [(await stream.next()) for _ in range(3)]
            assert [k.event for k in kinds if k is not None][:2] == ["hello", "reset"]
            assert kinds[2] is not None and kinds[2].data == first[0].data  # from the start


async def test_a_viewer_older_than_the_history_starts_over(tmp_path: Path) -> None:
    web = "points = 10\n"
    async with (
        serve_sse() as server,
        running_engine(_config(server.url, tmp_path, web)) as (
            engine,
            collect,
        ),
    ):
        sink = await web_sink(engine)
        await collect.wait_for(lambda c: any(s.state is State.CONNECTED for s in c.statuses))
        async with event_stream(sink.port) as stream:
            early = await stream.records(sink.feed.seq)
        for step in range(1, 31):
            await server.publish({"step": step, "loss": 0.5})
        await collect.wait_for(lambda c: len(c.events) == 30)
        async with event_stream(sink.port, {"Last-Event-ID": early[-1].id}) as stream:
            assert (await stream.next()).event == "hello"  # type: ignore[union-attr]
            assert (await stream.next()).event == "reset"  # type: ignore[union-attr]
            kept = await stream.records(10 + len(early))
        steps = [orjson.loads(f.data)["data"]["step"] for f in kept if '"event"' in f.data]
        assert steps == list(range(21, 31))  # the newest `points` events of the source


async def test_a_stalled_viewer_is_dropped_and_never_slows_the_source(tmp_path: Path) -> None:
    web = "viewer_buffer = 524288\n"
    payload = "x" * 2000
    async with (
        serve_sse() as server,
        running_engine(_config(server.url, tmp_path, web)) as (
            engine,
            collect,
        ),
    ):
        sink = await web_sink(engine)
        # A viewer that asks and then never reads a byte.
        stalled = socket.create_connection(("127.0.0.1", sink.port))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{sink.port}\r\n\r\n".encode())
        steps: list[int] = []
        try:
            async with event_stream(sink.port) as healthy, trio.open_nursery() as nursery:

                async def read_healthy() -> None:
                    while len(steps) < 2000:
                        frame = await healthy.next()
                        assert frame is not None, "the healthy viewer was dropped"
                        if frame.event == "message" and '"type":"event"' in frame.data:
                            steps.append(orjson.loads(frame.data)["data"]["step"])

                nursery.start_soon(read_healthy)
                server_of = sink.server
                assert server_of is not None
                await wait_until(lambda: server_of.streams == 2)
                # 2,000 events of 2 KB: 4 MB, far past the stalled viewer's 512 KiB
                # buffer and its socket's. Each reaches the collect sink while the
                # stalled viewer is still connected: it holds nothing up.
                for step in range(1, 2001):
                    server.publish_nowait({"step": step, "pad": payload})
                    if step % 20 == 0:
                        await trio.sleep(0.001)
                await collect.wait_for(lambda c: len(c.events) == 2000, timeout=30)
                assert [e.seq for e in collect.events] == list(range(1, 2001))
                await wait_until(lambda: sink.feed.dropped_viewers >= 1)
            assert sink.feed.dropped_viewers == 1  # the stalled one, not the reader
            assert steps == list(range(1, 2001))  # the healthy viewer got every event
            # The stalled socket was closed by the server: reading drains, then EOF.
            stalled.settimeout(10)
            total = 0
            while chunk := stalled.recv(1 << 20):
                total += len(chunk)
            assert total < 524288 + 1024 * 1024  # at most its buffer and what the kernel held
        finally:
            stalled.close()


async def test_the_token_guards_everything_and_becomes_a_cookie(tmp_path: Path) -> None:
    token = "a-long-enough-test-token-1234"
    web = f'token = "{token}"\n'
    async with (
        serve_sse() as server,
        running_engine(_config(server.url, tmp_path, web)) as (
            engine,
            _,
        ),
    ):
        port = (await web_sink(engine)).port
        for target in ("/", "/events", "/static/app.js"):
            status, headers, _body = await request(port, "GET", target)
            assert status == 401, target
            assert "access-control-allow-origin" not in headers
        status, _, _ = await request(port, "GET", "/?token=wrong-token-of-some-length")
        assert status == 403
        status, headers, _ = await request(port, "GET", f"/?token={token}")
        assert status == 303 and headers["location"] == "/"
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and token not in cookie
        pair = cookie.split(";")[0]
        status, headers, body = await request(port, "GET", "/", {"Cookie": pair})
        assert status == 200 and b"<script" in body
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "access-control-allow-origin" not in headers
        status, _, _ = await request(port, "GET", "/", {"Authorization": f"Bearer {token}"})
        assert status == 200
        # DNS rebinding: another site's name for this address is refused, token or not.
        status, _, _ = await request(
            port, "GET", "/", {"Cookie": pair, "Host": f"evil.example:{port}"}
        )
        assert status == 421
        # A POST from another origin is refused even with the cookie.
        status, _, _ = await request(
            port,
            "POST",
            "/restart?source=train",
            {"Cookie": pair, "Origin": "http://evil.example"},
        )
        assert status == 403


def test_a_non_loopback_address_needs_a_token() -> None:
    plugins = builtin_plugins(Collectors())
    toml = textwrap.dedent(
        """
        [[sources]]
        name = "train"
        transport = "sse"
        url = "http://127.0.0.1:1/events"

        [[sinks]]
        type = "web"
        listen = "0.0.0.0:8765"
        """
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(toml, path="web.toml", plugins=plugins)
    message = str(caught.value)
    assert "web.toml:7: sinks[0].token:" in message and "needs a token" in message
    with pytest.raises(ValueError, match="at least 16"):
        WebOptions(listen="0.0.0.0:8765", token="short")
    WebOptions.check(WebOptions(listen="0.0.0.0:8765", token="x" * 16))
    WebOptions.check(WebOptions(listen="[::1]:8765"))


def test_a_busy_port_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = tmp_path / "web.toml"
        config.write_text(
            textwrap.dedent(
                f"""
                [[sources]]
                name = "train"
                transport = "sse"
                url = "http://127.0.0.1:1/events"

                [[sinks]]
                type = "web"
                listen = "127.0.0.1:{port}"
                """
            )
        )
        done = subprocess.run(
            [*MUX, "run", str(config)], capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 2
    assert f"port {port} is in use" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_source_that_gave_up_restarts_from_a_post(tmp_path: Path) -> None:
    # The run lasts while another source is live: a terminal source can be restarted.
    async with serve_sse() as alive:
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{closed.getsockname()[1]}/events"
            toml = _config(url, tmp_path) + textwrap.dedent(
                f"""
                [[sources]]
                name = "alive"
                transport = "sse"
                url = "{alive.url}"
                """
            )
            toml = toml.replace(f'url = "{url}"', f'url = "{url}"\nretry = {{ max_attempts = 1 }}')
            async with running_engine(toml) as (engine, collect):
                port = (await web_sink(engine)).port
                await collect.wait_for(
                    lambda c: any(s.state is State.MAX_RETRIES_EXCEEDED for s in c.statuses)
                )
                before = len(collect.statuses)
                status, _, _ = await request(port, "POST", "/restart?source=nobody")
                assert status == 409
                status, _, _ = await request(port, "POST", "/restart?source=train")
                assert status == 202
                await collect.wait_for(
                    lambda c: any(
                        s.source == "train" and s.state is State.CONNECTING
                        for s in c.statuses[before:]
                    )
                )


async def test_a_second_mux_relays_the_first_ones_sources(tmp_path: Path) -> None:
    async with (
        serve_sse() as server,
        running_engine(_config(server.url, tmp_path)) as (
            upstream,
            up_collect,
        ),
    ):
        port = (await web_sink(upstream)).port
        for step in range(1, 51):
            await server.publish({"step": step, "loss": 1 / step})
        await up_collect.wait_for(lambda c: len(c.events) == 50)
        downstream = FAST_RETRY + textwrap.dedent(
            f"""
            [[sources]]
            name = "upstream"
            transport = "sse"
            url = "http://127.0.0.1:{port}/events"
            relay = true
            """
        )
        async with running_engine(downstream) as (_, down):
            await down.wait_for(lambda c: len([e for e in c.events if e.source == "train"]) == 50)
            # The connection breaks (the upstream drops its viewer): the relay
            # reconnects with Last-Event-ID and goes on after what it had.
            feed = (await web_sink(upstream)).feed
            for viewer in list(feed.viewers):
                viewer.drop()
            await down.wait_for(
                lambda c: (
                    [s.state for s in c.statuses if s.source == "upstream"].count(State.CONNECTED)
                    == 2
                )
            )
            for step in range(51, 101):
                await server.publish({"step": step, "loss": 1 / step})
            await down.wait_for(lambda c: len([e for e in c.events if e.source == "train"]) == 100)
            relayed = [r for r in down.records if r.source == "train"]
            own = [r for r in up_collect.records if r.source == "train"][: len(relayed)]
            assert relayed == own  # the same records: source, seq, ids, times, payloads
            seqs = [r.seq for r in relayed if type(r) is Event]
            assert sorted(set(seqs)) == seqs == list(range(1, 101))  # resumed: none twice
            upstream_states = [s.state for s in down.statuses if s.source == "upstream"]
            assert State.CONNECTED in upstream_states


def test_the_package_ships_its_page_and_the_vendored_chart() -> None:
    from mux_web._server import load_static

    static = load_static()
    for name in ("index.html", "app.js", "app.css", "uPlot.iife.min.js", "uPlot.min.css"):
        assert name in static, name
    assert sys.modules["mux_web"].__file__ is not None
