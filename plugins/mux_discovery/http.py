"""The ``http`` discoverer: a URL that lists the sources to watch.

::

    [[discovery]]
    type = "http"
    url = "http://sd.internal:8080/mux-sources"
    interval = 30.0                 # seconds between two polls
    headers = { Authorization = "Bearer ${SD_TOKEN}" }

The answer is JSON: an array whose items are either source tables (like
``[[sources]]``: ``name``, ``transport``, the transport's options) or
Prometheus ``http_sd`` target groups, ``{"targets": ["host:port", ...],
"labels": {...}}``: each target becomes a source whose URL is
``SCHEME://TARGET PATH`` (labels ``scheme``, default ``http`` -- ``ws`` for
the ``ws`` transport -- and ``path``, default ``/``), named by the ``name``
label (``NAME-TARGET`` when a group has several targets; the target when
there is no ``name``), with the ``transport`` label and every other label
as a transport option (labels starting ``__`` are Prometheus's and are
ignored). An object with a ``sources`` array is accepted too.

A poll that fails (refused, timed out, not 200, not JSON) is reported once
and keeps the last good list; the next poll comes after the run's
``[retry]`` backoff (growing from ``initial_delay`` to ``max_delay``),
never giving up, and at ``interval`` again once a poll succeeds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from mux_core import Discoverer, DiscoveryContext, SourceDocument, describe_connection_error
from mux_core.options import positive, secret

# trio, ssl and mux_core.http's client are imported where they are used:
# loading the plugin (every mux command does) does not pay for them.
if TYPE_CHECKING:
    import ssl

    from mux_core.http import HttpClient

__all__ = ["HttpDiscovery", "HttpOptions", "http_sd_tables"]

#: An answer larger than this is refused (a list of sources is small).
_MAX_BODY = 16 * 1024 * 1024


def _url(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    from mux_core.http import url_problem

    problem = url_problem(value)
    if problem:
        raise ValueError(f"{attribute.name}: {problem}")


@attrs.frozen(kw_only=True)
class HttpOptions:
    #: The URL that answers with the JSON list of sources.
    url: str = attrs.field(validator=_url)
    #: Seconds between two polls that succeed.
    interval: float = attrs.field(default=30.0, validator=positive("seconds"))
    #: Headers sent with each poll (an Authorization token, ...).
    headers: dict[str, str] = attrs.field(factory=dict, metadata=secret())
    #: Seconds a poll may take, connecting included.
    timeout: float = attrs.field(default=10.0, validator=positive("seconds"))
    #: Check the server's TLS certificate (https).
    verify: bool = True


class HttpDiscovery(Discoverer):
    """Polls ``url`` and reports the sources it lists."""

    Options: ClassVar[type[HttpOptions]] = HttpOptions

    def __init__(self, options: HttpOptions, context: DiscoveryContext) -> None:
        self.options = options
        self.context = context
        self._problem: str | None = None

    async def run(self) -> None:
        import trio

        from mux_core.http import HttpClient

        client = HttpClient(tls_context=self._tls_context)
        last: bytes | None = None
        failures = 0
        try:
            while True:
                try:
                    body, document = await self.poll(client)
                except _PollFailed as exc:
                    failures += 1
                    self._report(f"{self.options.url}: {exc}; the last good list is kept")
                    await trio.sleep(self.context.retry.delay(failures))
                    continue
                failures = 0
                self._report(None)
                if body != last:
                    await self.context.update([document])
                    last = body
                await trio.sleep(self.options.interval)
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()

    async def poll(self, client: HttpClient) -> tuple[bytes, SourceDocument]:
        """One GET; the raw body and its sources, or _PollFailed saying why."""
        import ssl

        import httpx

        from mux_core.http import ProtocolError, ResponseTimeout

        headers = [("Accept", "application/json"), *self.options.headers.items()]
        try:
            response = await client.get(
                httpx.URL(self.options.url),
                headers,
                timeout=self.options.timeout,
                max_body_bytes=_MAX_BODY,
            )
        except ResponseTimeout:
            raise _PollFailed(f"no answer within {self.options.timeout:g} s") from None
        except OSError as exc:
            raise _PollFailed(describe_connection_error(exc) or str(exc)) from None
        except (ProtocolError, ssl.SSLError) as exc:
            raise _PollFailed(str(exc)) from None
        if response.status != 200:
            raise _PollFailed(f"HTTP {response.status} {response.reason}")
        try:
            data = json.loads(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _PollFailed(f"the answer is not JSON: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("sources"), list):
            data = data["sources"]
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise _PollFailed("the answer is not a JSON array of objects")
        return response.content, SourceDocument(self.options.url, http_sd_tables(data))

    def _report(self, problem: str | None) -> None:
        if problem == self._problem:
            return
        if self._problem is not None:
            self.context.forget(self._problem)
        self._problem = problem
        if problem is not None:
            self.context.report(problem)

    async def _tls_context(self) -> ssl.SSLContext:
        import ssl

        context = ssl.create_default_context()
        if not self.options.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class _PollFailed(Exception):
    """A poll that brought no list (why, for the log)."""


def http_sd_tables(items: list[Mapping[str, Any]]) -> tuple[dict[str, Any], ...]:
    """Source tables from an answer's items: target groups expanded, tables as they are."""
    tables: list[dict[str, Any]] = []
    for item in items:
        if "targets" not in item:
            tables.append(dict(item))
            continue
        targets = item.get("targets")
        labels = item.get("labels") or {}
        if not isinstance(targets, list) or not isinstance(labels, dict):
            tables.append(dict(item))  # reported by the validation, naming its keys
            continue
        options = {k: v for k, v in labels.items() if not str(k).startswith("__")}
        name = options.pop("name", None)
        transport = options.get("transport")
        scheme = options.pop("scheme", "ws" if transport == "ws" else "http")
        path = options.pop("path", "/")
        for target in targets:
            table = dict(options)
            if name is None:
                table["name"] = str(target)
            else:
                table["name"] = name if len(targets) == 1 else f"{name}-{target}"
            table["url"] = f"{scheme}://{target}{path}"
            tables.append(table)
    return tuple(tables)
