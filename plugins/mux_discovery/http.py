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

A poll that fails -- refused, reset, a TLS failure, timed out, not 200,
not HTTP, not JSON, nested too deeply, larger than ``max_answer_bytes`` --
is reported once, in words, and keeps the last good list; the next poll
comes after the run's ``[retry]`` backoff (growing from ``initial_delay``
to ``max_delay``), never giving up, and at ``interval`` again once a poll
succeeds. Nothing a server does ends the discoverer.

The answer is data, not config (docs/security.md): its tables are checked
against what the ``[[discovery]]`` table allows, and the URL is shown with
its password and secrets masked wherever it is logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from mux_core import Discoverer, DiscoveryContext, SourceDocument, describe_connection_error
from mux_core.options import positive, raise_problems, secret

# trio, ssl and mux_core.http's client are imported where they are used:
# loading the plugin (every mux command does) does not pay for them.
if TYPE_CHECKING:
    import ssl

    from mux_core.http import HttpClient

__all__ = ["MAX_ANSWER_BYTES", "HttpDiscovery", "HttpOptions", "http_sd_tables"]

_log = logging.getLogger("mux.discovery")

#: ``max_answer_bytes`` by default: a list of sources is small (1,000 sources
#: take about 100 KiB), and a larger answer is refused, never parsed -- an
#: ``http_sd`` target list of 1 MiB expands to ~70,000 tables (~30 MiB) at most.
MAX_ANSWER_BYTES = 1024 * 1024


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
    #: Check the server's TLS certificate (https) against the system's trust store, or
    #: ``ca_file``; false checks nothing (mux warns at check and at start).
    verify: bool = True
    #: A PEM file of the CAs to trust instead of the system's (a private CA, a self-signed
    #: server's certificate).
    ca_file: str | None = None
    #: The largest answer read, in bytes (as sent and decompressed); a larger one is a failed poll.
    max_answer_bytes: int = attrs.field(default=MAX_ANSWER_BYTES, validator=positive())

    @classmethod
    def check(cls, options: HttpOptions) -> None:
        """Reject what no poll could fix: a header no request can carry, a bad CA file."""
        from mux_core.http import headers_problem, tls_problem

        raise_problems(
            [
                headers_problem(options.headers),
                tls_problem(verify=options.verify, ca_file=options.ca_file),
            ]
        )


class HttpDiscovery(Discoverer):
    """Polls ``url`` and reports the sources it lists."""

    Options: ClassVar[type[HttpOptions]] = HttpOptions

    def __init__(self, options: HttpOptions, context: DiscoveryContext) -> None:
        self.options = options
        self.context = context
        self._problem: str | None = None
        self._tls: ssl.SSLContext | None = None

    async def run(self) -> None:
        import trio

        from mux_core.http import HttpClient, warn_unverified

        if not self.options.verify:
            warn_unverified(f"discovery {self.context.name!r}")
        client = HttpClient(tls_context=self._tls_context)
        last: bytes | None = None
        failures = 0
        try:
            while True:
                try:
                    body, document = await self.poll(client)
                except Exception as exc:  # whatever a server did: a failed poll, never the end
                    failures += 1
                    why = str(exc) if isinstance(exc, _PollFailed) else _unexpected(exc)
                    self._report(f"{self.options.url}: {why}; the last good list is kept")
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
        import httpx
        import trio

        from mux_core.http import BodyTooLarge, ProtocolError, ResponseTimeout

        headers = [("Accept", "application/json"), *self.options.headers.items()]
        limit = self.options.max_answer_bytes
        try:
            response = await client.get(
                httpx.URL(self.options.url),
                headers,
                timeout=self.options.timeout,
                max_body_bytes=limit,
            )
        except ResponseTimeout:
            raise _PollFailed(f"no answer within {self.options.timeout:g} s") from None
        except BodyTooLarge:
            too_large = f"the answer is larger than {limit} bytes (max_answer_bytes)"
            raise _PollFailed(too_large) from None
        except ProtocolError as exc:
            raise _PollFailed(str(exc)) from None
        except (OSError, trio.BrokenResourceError) as exc:  # refused, reset, TLS (ssl.SSLError)
            raise _PollFailed(describe_connection_error(exc) or "connection lost") from None
        except ValueError as exc:  # a redirect that cannot be followed
            raise _PollFailed(str(exc)) from None
        if response.status != 200:
            raise _PollFailed(f"HTTP {response.status} {_printable(response.reason)}")
        try:
            data = json.loads(response.content)
        except RecursionError:
            raise _PollFailed("the answer is not JSON: nested too deeply") from None
        except UnicodeDecodeError:
            raise _PollFailed("the answer is not JSON: not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise _PollFailed(f"the answer is not JSON: {exc}") from None
        except ValueError:  # an integer of thousands of digits
            raise _PollFailed("the answer is not JSON mux reads: a number too long") from None
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
        """mux's one TLS policy (``mux_core.http.tls_context``), built once; a CA file
        that holds no certificate raises ``ValueError``: a failed poll, told in words."""
        if self._tls is None:
            from mux_core.http import tls_context

            self._tls = tls_context(verify=self.options.verify, ca_file=self.options.ca_file)
        return self._tls


class _PollFailed(Exception):
    """A poll that brought no list (why, for the log)."""


def _unexpected(exc: Exception) -> str:
    """Words for an error no branch of :meth:`HttpDiscovery.poll` expected: still a
    failed poll (the traceback goes to the debug log, for a bug report)."""
    _log.debug("discovery poll failed", exc_info=exc)
    return describe_connection_error(exc) or _printable(f"{type(exc).__name__}: {exc}")


def _printable(text: str) -> str:
    """A server's words, shown: control characters escaped, 200 characters at most."""
    shown = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    return shown if len(shown) <= 200 else shown[:200] + "..."


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
