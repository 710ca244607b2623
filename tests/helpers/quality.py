"""A scripted transport whose sessions follow a script of uptimes and refusals.

Shared by the connection-quality tests (tests/core/test_quality.py and
tests/plugins/prometheus/test_sink.py):
on trio's MockClock each outage lasts exactly as scripted.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from typing import ClassVar

import attrs
import trio

from mux_core._config import parse_config
from mux_core._plugins import PluginManager
from mux_core._run.engine import Engine
from mux_core.errors import Disconnected, ServerUnavailable
from mux_core.hookspecs import hookimpl
from mux_core.testing import CollectingSink
from mux_core.transport import Session


@attrs.frozen(kw_only=True)
class OutageOptions:
    #: One entry per session: "up SECONDS ID,ID,..." or "refused"; then hang up.
    sessions: list[str] = attrs.field(factory=list)
    #: Seconds before received_at that each payload's "t" field says.
    late: float = 0.0


class OutageTransport:
    """Sessions that follow a script of uptimes and refusals, on the trio clock."""

    Options: ClassVar[type[OutageOptions]] = OutageOptions

    def __init__(self, options: OutageOptions) -> None:
        self.options = options
        self.sessions = 0

    async def run_session(self, session: Session) -> None:
        script = self.options.sessions
        step = script[self.sessions] if self.sessions < len(script) else "up inf"
        self.sessions += 1
        kind, *args = step.split()
        if kind == "refused":
            raise ServerUnavailable("connection refused")
        await session.connected()
        ids = args[1].split(",") if len(args) > 1 else []
        if ids:
            stamp = time.time() - self.options.late
            payloads = [json.dumps({"t": stamp, "id": int(i)}).encode() for i in ids]
            await session.emit([("metric", i, p) for i, p in zip(ids, payloads, strict=True)])
        await trio.sleep(float(args[0]))
        raise Disconnected("server closed the stream")


class _OutagePlugin:
    @hookimpl
    def mux_register_transports(self, register: Callable[[str, type], None]) -> None:
        register("outages", OutageTransport)


#: Up 0-10 s (ids 1-3), blind 10-15, up 15-35 (ids 6,7: 4 and 5 are missing),
#: blind 35-45 (one refused attempt at 40), up from 45 (id 8) until the run stops at 60.
SCRIPT = '["up 10 1,2,3", "up 20 6,7", "refused", "up inf 8"]'


def outage_engine(
    plugins: PluginManager, top: str = "", source: str = "", sinks: str = ""
) -> Engine:
    """An engine running SCRIPT for 60 s on source "train", with a collect sink."""
    plugins.register(_OutagePlugin(), name="outages")
    toml = f"""
        {top}
        [retry]
        initial_delay = 5.0
        min_delay = 5.0
        max_delay = 5.0
        jitter = 0.0
        [[sources]]
        name = "train"
        transport = "outages"
        sessions = {SCRIPT}
        {source}
        [[sinks]]
        type = "collect"
        {sinks}
    """
    config = parse_config(textwrap.dedent(toml), path="q.toml", plugins=plugins)
    CollectingSink.instances.clear()
    return Engine(config, plugins, duration=60.0)
