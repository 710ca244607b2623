"""``mux check --probe``: try each source once, without starting a run.

Each source gets one session under its own connect timeout. The session is
cut short as soon as it reports ``connected`` -- nothing is streamed, no sink
is opened. The verdicts say what a user should do next:

* ``reachable`` -- ``mux run`` will connect;
* ``not up yet (will wait)`` -- refused, 5xx, timed out, a host name that
  does not resolve (yet): a run would wait and retry, which is fine for a
  trainer that has not started;
* ``config problem`` -- 401/403/404, wrong content type, a bad URL:
  retrying cannot help, fix the config.

A probe says what ``mux run`` would do, so it classifies as the supervisor
does -- through the same functions (:func:`mux_core._run.supervisor.attempt_session`
and :func:`~mux_core._run.supervisor.outcome_state`): an attempt ending in a
retried state (``server_unavailable``, ``disconnected``) is "not up yet",
``failed`` is a "config problem", ``connected`` (or ``ended``: the server
answered that the stream is over) is "reachable". That includes DNS failures
-- a container's or a cluster service's name resolves only once it is up --
with a hint to check the name should it stay so, and a ``ws`` or ``rest``
source pointed at an event stream (or the reverse): whatever verdict it gets
here, ``mux run`` reports the matching state.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TextIO

import attrs
import trio

from .._config import Config, SourceConfig
from .._config.render import mask
from .._plugins import PluginManager
from .._run.exit_codes import ExitCode
from .._run.supervisor import attempt_session, outcome_state
from ..records import Record, State
from ..transport import ResumeState, Session, SharedResources

__all__ = ["ProbeResult", "probe_config", "probe_sources"]

REACHABLE = "reachable"
NOT_UP_YET = "not up yet (will wait)"
CONFIG_PROBLEM = "config problem"

_DNS_HINTS = (
    "dns lookup failed",
    "name or service not known",
    "nodename nor servname",
    "name resolution",
    "getaddrinfo",
)


#: The verdict for each state a run's first attempt can end in.
_VERDICTS = {
    State.CONNECTED: REACHABLE,
    State.ENDED: REACHABLE,
    State.FAILED: CONFIG_PROBLEM,
    State.SERVER_UNAVAILABLE: NOT_UP_YET,
    State.DISCONNECTED: NOT_UP_YET,
}


@attrs.frozen
class ProbeResult:
    source: str
    verdict: str
    detail: str
    #: The state ``mux run`` reports for the same first attempt.
    state: State = State.CONNECTED
    transport: str = ""

    @property
    def reachable(self) -> bool:
        return self.verdict == REACHABLE


async def _probe_one(
    cfg: SourceConfig, plugins: PluginManager, shared: SharedResources
) -> ProbeResult:
    transport = plugins.transports()[cfg.transport].cls(cfg.options)

    async def send(batch: Sequence[Record]) -> None:
        pass

    session = Session(
        source=cfg.name,
        transport=cfg.transport,
        resume=ResumeState(),
        connect_timeout=cfg.retry.connect_timeout,
        shared=shared,
        send=send,
        attempt=1,
    )
    outcome = await attempt_session(
        transport,
        session,
        cfg.retry.connect_timeout,
        transport_name=cfg.transport,
        source=cfg.name,
        stop_when_connected=True,
    )
    if outcome is None:
        return ProbeResult(cfg.name, REACHABLE, "connected", State.CONNECTED, cfg.transport)
    state = outcome_state(outcome)
    detail = mask(outcome.detail, cfg.secrets)
    if state is State.ENDED:
        detail = f"the server says the stream is over ({detail})"
    elif state is State.SERVER_UNAVAILABLE and any(h in detail.lower() for h in _DNS_HINTS):
        detail += " (a run retries it; check the host name if it stays so)"
    return ProbeResult(cfg.name, _VERDICTS[state], detail, state, cfg.transport)


async def probe_sources(config: Config, plugins: PluginManager) -> list[ProbeResult]:
    """Probe every source concurrently; results in config order."""
    results: dict[str, ProbeResult] = {}
    shared = SharedResources()
    try:
        async with trio.open_nursery() as nursery:
            for cfg in config.sources:

                async def one(cfg: SourceConfig = cfg) -> None:
                    results[cfg.name] = await _probe_one(cfg, plugins, shared)

                nursery.start_soon(one)
    finally:
        await shared.aclose()
    return [results[cfg.name] for cfg in config.sources]


def probe_config(
    config: Config, plugins: PluginManager, *, out: TextIO | None = None, as_json: bool = False
) -> int:
    """Print one line per source (or a JSON list); exit 0 only when every source is reachable."""
    out = out or sys.stdout
    results = trio.run(probe_sources, config, plugins)
    if as_json:
        rows = [
            {
                "source": r.source,
                "transport": r.transport,
                "verdict": r.verdict,
                "state": r.state.value,
                "reachable": r.reachable,
                "detail": r.detail,
            }
            for r in results
        ]
        print(json.dumps(rows, indent=2), file=out)
    elif results:
        width = max(len(r.source) for r in results)
        for result in results:
            print(f"{result.source.ljust(width)}  {result.verdict}: {result.detail}", file=out)
    return ExitCode.OK if all(r.reachable for r in results) else ExitCode.UNREACHABLE
