"""mux_gauge: poll one JSON document and emit it as one event per poll."""

from __future__ import annotations

import attrs

from mux_core import Failed, ServerUnavailable, Session, describe_connection_error, hookimpl
from mux_core.hookspecs import Register
from mux_core.http import parse_retry_after, request_timeout, shared_client
from mux_core.options import positive


@attrs.frozen(kw_only=True)
class GaugeOptions:
    #: The JSON document to poll, http:// or https://.
    url: str
    #: Seconds between two polls.
    interval: float = attrs.field(default=5.0, validator=positive())

    @classmethod
    def check(cls, options: GaugeOptions) -> None:
        if not options.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {options.url!r}")


class GaugeTransport:
    """Poll one JSON document; each poll is one event."""

    Options = GaugeOptions

    def __init__(self, options: GaugeOptions) -> None:
        self.options = options

    async def run_session(self, session: Session) -> None:
        # Imported here, not at the top: every mux command imports every plugin.
        import httpx
        import trio

        client = await shared_client(session)
        timeout = request_timeout(session.connect_timeout)
        while True:
            try:
                response = await client.get(self.options.url, timeout=timeout)
            except httpx.TransportError as exc:
                detail = describe_connection_error(exc) or type(exc).__name__
                raise ServerUnavailable(detail) from exc
            if response.status_code >= 500 or response.status_code == 429:
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                raise ServerUnavailable(f"HTTP {response.status_code}", retry_after=retry_after)
            if response.status_code != 200:
                raise Failed(f"HTTP {response.status_code}")
            await session.connected()  # no-op after the first poll
            await session.emit([("gauge", None, response.content)])  # bytes: decoded lazily
            await trio.sleep(self.options.interval)  # the polling cadence, not a retry


@hookimpl
def mux_register_transports(register: Register) -> None:
    register("gauge", GaugeTransport)
