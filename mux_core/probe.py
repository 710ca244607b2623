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
does: whatever a transport raises as ``ServerUnavailable`` is retried by a
run, and is "not up yet" here. That includes DNS failures -- a container's
or a cluster service's name resolves only once it is up -- with a hint to
check the name should it stay so.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

import attrs
import trio

from .config import Config, SourceConfig
from .errors import Disconnected, Ended, Failed, ServerUnavailable, SessionError
from .events import Record
from .plugins import PluginManager
from .session import ResumeState, Session, SharedResources

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


@attrs.frozen
class ProbeResult:
    source: str
    verdict: str
    detail: str

    @property
    def reachable(self) -> bool:
        return self.verdict == REACHABLE


class _Reached(Exception):
    """Raised from ``connected()`` to end the probe session at once."""


async def _probe_one(
    cfg: SourceConfig, plugins: PluginManager, shared: SharedResources
) -> ProbeResult:
    transport = plugins.transports()[cfg.transport].cls(cfg.options)

    async def send(batch: Sequence[Record]) -> None:
        pass

    def reached() -> None:
        raise _Reached

    session = Session(
        source=cfg.name,
        transport=cfg.transport,
        resume=ResumeState(),
        connect_timeout=cfg.retry.connect_timeout,
        shared=shared,
        send=send,
        attempt=1,
        on_connected=reached,
    )
    try:
        with trio.fail_after(cfg.retry.connect_timeout + 1):
            await transport.run_session(session)
    except _Reached:
        return ProbeResult(cfg.name, REACHABLE, "connected")
    except trio.TooSlowError:
        return ProbeResult(
            cfg.name, NOT_UP_YET, f"no connection within {cfg.retry.connect_timeout:g} s"
        )
    except Ended as exc:
        return ProbeResult(
            cfg.name, REACHABLE, f"the server says the stream is over ({exc.detail})"
        )
    except Failed as exc:
        return ProbeResult(cfg.name, CONFIG_PROBLEM, exc.detail)
    except ServerUnavailable as exc:
        detail = exc.detail
        if any(hint in detail.lower() for hint in _DNS_HINTS):
            detail += " (a run retries it; check the host name if it stays so)"
        return ProbeResult(cfg.name, NOT_UP_YET, detail)
    except (Disconnected, SessionError) as exc:
        return ProbeResult(cfg.name, NOT_UP_YET, exc.detail)
    except Exception as exc:  # a transport bug: report it, do not crash the check
        return ProbeResult(cfg.name, CONFIG_PROBLEM, f"internal error in transport: {exc!r}")
    return ProbeResult(cfg.name, NOT_UP_YET, "the stream ended before it connected")


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


def probe_config(config: Config, plugins: PluginManager, *, out: TextIO | None = None) -> int:
    """Print one line per source; exit code 0 only when every source is reachable."""
    out = out or sys.stdout
    results = trio.run(probe_sources, config, plugins)
    width = max(len(r.source) for r in results)
    for result in results:
        print(f"{result.source.ljust(width)}  {result.verdict}: {result.detail}", file=out)
    return 0 if all(r.reachable for r in results) else 1
