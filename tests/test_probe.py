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
