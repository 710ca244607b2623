"""mux check --probe: one attempt per source, a verdict each, no run."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import trio

import mux_core.testing
from mux_core._cli.probe import probe_config, probe_sources
from mux_core._config import parse_config
from mux_core._plugins import PluginManager

CONFIG = """
[retry]
connect_timeout = 0.5
[[sources]]
name = "up"
transport = "scripted"
then = "hang"
[[sources]]
name = "down"
transport = "scripted"
then = "unavailable"
[[sources]]
name = "wrong"
transport = "scripted"
then = "fail"
[[sources]]
name = "silent"
transport = "scripted"
then = "timeout"
[[sinks]]
type = "collect"
"""


async def test_each_source_gets_a_verdict(plugins: PluginManager) -> None:
    config = parse_config(textwrap.dedent(CONFIG), path="p.toml", plugins=plugins)
    with trio.fail_after(5):
        results = await probe_sources(config, plugins)
    verdicts = {r.source: r.verdict for r in results}
    assert verdicts == {
        "up": "reachable",
        "down": "not up yet (will wait)",
        "wrong": "config problem",
        "silent": "not up yet (will wait)",
    }


def test_exit_code_is_zero_only_when_all_are_reachable(plugins: PluginManager) -> None:
    config = parse_config(textwrap.dedent(CONFIG), path="p.toml", plugins=plugins)
    out = io.StringIO()
    assert probe_config(config, plugins, out=out) == 1
    assert "wrong   config problem: HTTP 404 Not Found" in out.getvalue()
    only_up = CONFIG.split('[[sources]]\nname = "down"')[0] + '[[sinks]]\ntype = "collect"\n'
    config = parse_config(textwrap.dedent(only_up), path="p.toml", plugins=plugins)
    assert probe_config(config, plugins, out=io.StringIO()) == 0


async def test_probe_against_real_servers() -> None:
    """The verdicts a user sees for the problems --probe exists to catch."""
    import socket

    from mux_core.testing import Respond, serve_sse

    plugins = PluginManager()
    plugins.load_entry_points(only=set())
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    async with serve_sse() as up, serve_sse() as missing, serve_sse() as html:
        missing.script(Respond(404))
        html.script(Respond(200, {"content-type": "text/html"}, b"<html></html>"))
        text = f"""
        [retry]
        connect_timeout = 2.0
        [[sources]]
        name = "up"
        transport = "sse"
        url = "{up.url}"
        [[sources]]
        name = "missing"
        transport = "sse"
        url = "{missing.url}"
        [[sources]]
        name = "html"
        transport = "sse"
        url = "{html.url}"
        [[sources]]
        name = "down"
        transport = "sse"
        url = "http://127.0.0.1:{closed_port}/events"
        [[sources]]
        name = "typo"
        transport = "sse"
        url = "http://no-such-host.invalid/events"
        [[sinks]]
        type = "log"
        """
        config = parse_config(textwrap.dedent(text), path="p.toml", plugins=plugins)
        with trio.fail_after(10):
            results = {r.source: r for r in await probe_sources(config, plugins)}
    assert results["up"].verdict == "reachable"
    assert results["missing"].verdict == "config problem"
    assert "404" in results["missing"].detail
    assert results["html"].verdict == "config problem"
    assert "text/html" in results["html"].detail
    assert results["down"].verdict == "not up yet (will wait)"
    assert results["down"].detail == "connection refused"
    # As `mux run` does (ServerUnavailable: retried), not "config problem".
    assert results["typo"].verdict == "not up yet (will wait)"
    assert "DNS" in results["typo"].detail and "check the host name" in results["typo"].detail


_RUN_VERDICT = {
    "connected": "reachable",
    "ended": "reachable",
    "failed": "config problem",
    "server_unavailable": "not up yet (will wait)",
    "disconnected": "not up yet (will wait)",
}


async def test_probe_and_run_agree_on_every_transport_pointed_at_every_kind_of_url() -> None:
    """Each transport at an SSE, a WebSocket, a REST URL and a finished event
    stream: --probe's verdict is what the first attempt of `mux run` reports
    (the same state), through the one classification both use."""
    from mux_core._run.engine import Engine
    from mux_core.testing import CollectingSink, Respond, serve_rest, serve_sse, serve_ws

    plugins = PluginManager()
    plugins.load_entry_points(only=set())
    plugins.register(mux_core.testing, name="testing")
    finished = Respond(200, {"content-type": "text/event-stream"}, b"id: 1\ndata: {}\n\n")
    async with serve_sse() as sse, serve_ws() as ws, serve_rest() as rest, serve_sse() as done:
        done.script(*[finished] * 6)  # one per request: probe and run of each transport
        await sse.publish({"step": 1}, id="1")
        await rest.publish({"step": 1}, id="1")
        urls = {"sse": sse.url, "ws": ws.url, "rest": rest.url, "done": done.url}
        text = "[retry]\nconnect_timeout = 1.0\ninitial_delay = 5.0\n"
        for transport in ("sse", "ws", "rest"):
            for kind, url in urls.items():
                scheme = ("ws://", "http://") if transport == "ws" else ("http://", "ws://")
                url = scheme[0] + url.split("://", 1)[1]
                text += f'[[sources]]\nname = "{transport}-at-{kind}"\n'
                text += f'transport = "{transport}"\nurl = "{url}"\n'
        text += '[[sinks]]\ntype = "collect"\n'
        config = parse_config(text, path="p.toml", plugins=plugins)
        with trio.fail_after(10):
            probed = {r.source: r for r in await probe_sources(config, plugins)}

        CollectingSink.instances.clear()
        engine = Engine(config, plugins)
        first: dict[str, str] = {}

        def every_source_past_connecting(sink: CollectingSink) -> bool:
            for status in sink.statuses:
                if status.state.value != "connecting":
                    first.setdefault(status.source, status.state.value)
            return len(first) == len(config.sources)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.run)
            with trio.fail_after(5):
                while "collect" not in CollectingSink.instances:
                    await trio.lowlevel.checkpoint()
            await CollectingSink.instances["collect"].wait_for(every_source_past_connecting)
            engine.request_stop("test over")
    for name, result in probed.items():
        assert (name, result.state.value) == (name, first[name])
        assert (name, result.verdict) == (name, _RUN_VERDICT[first[name]])
    assert probed["ws-at-sse"].verdict == "config problem"  # a handshake answered 200
    assert probed["rest-at-done"].state.value == "failed"  # an event stream is never JSON
    assert 'use transport = "sse"' in probed["rest-at-done"].detail
    assert probed["sse-at-rest"].verdict == "config problem"  # application/json
    assert all(probed[f"{t}-at-{t}"].reachable for t in ("sse", "ws", "rest"))


async def test_check_probe_prints_verdicts_first_quiet_only_them_json_for_scripts(
    tmp_path: Path,
) -> None:
    """A real `mux check --probe` process against a real server and a closed port."""
    import socket
    import sys

    from mux_core.testing import serve_sse

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    async with serve_sse() as up:
        config = tmp_path / "p.toml"
        config.write_text(
            f'[[sources]]\nname = "up"\ntransport = "sse"\nurl = "{up.url}"\n'
            f'[[sources]]\nname = "down-here"\ntransport = "sse"\n'
            f'url = "http://127.0.0.1:{closed_port}/events"\n[[sinks]]\ntype = "log"\n'
        )

        async def check(*args: str) -> tuple[int, str]:
            command = [sys.executable, "-m", "mux_core", "check", "--probe", *args]
            with trio.fail_after(30):
                done = await trio.run_process(
                    [*command, str(config)], check=False, capture_stdout=True, capture_stderr=True
                )
            return done.returncode, done.stdout.decode()

        code, quiet = await check("--quiet")
        assert code == 1
        assert quiet.splitlines() == [
            "up         reachable: connected",
            "down-here  not up yet (will wait): connection refused",
        ]
        code, full = await check()
        assert code == 1 and full.splitlines()[:2] == quiet.splitlines()
        assert "[[sources]]" in full and len(full.splitlines()) > 10
        code, as_json = await check("--json")
        assert code == 1
        assert json.loads(as_json) == [
            {
                "source": "up",
                "transport": "sse",
                "verdict": "reachable",
                "state": "connected",
                "reachable": True,
                "detail": "connected",
            },
            {
                "source": "down-here",
                "transport": "sse",
                "verdict": "not up yet (will wait)",
                "state": "server_unavailable",
                "reachable": False,
                "detail": "connection refused",
            },
        ]
