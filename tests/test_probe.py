"""mux check --probe: one attempt per source, a verdict each, no run."""

from __future__ import annotations

import io
import textwrap

import trio

from mux_core.config import parse_config
from mux_core.plugins import PluginManager
from mux_core.probe import probe_config, probe_sources

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
