"""The ``sse`` transport: one Server-Sent Events connection per session.

A session sends ``GET`` with ``Accept: text/event-stream`` (and
``Last-Event-ID`` when resuming), checks the answer, then feeds every network
read to :class:`~mux_sse._parser.SseParser` and emits what it completed as one
batch. How it ends decides what the supervisor does next::

    200 text/event-stream, body ends or breaks  -> Disconnected      (retry)
    no bytes (not even a comment) for read_timeout -> Disconnected   (retry)
    refused, reset, DNS, timeout, 5xx, 408, 429 -> ServerUnavailable (retry, Retry-After)
    204                                          -> Ended             (terminal)
    other status, other content type, bad URL   -> Failed            (terminal)

Unlike a browser's EventSource, 5xx and refused connections are retried: a
monitor keeps waiting for a restarting trainer.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import attrs
import httpx
import trio

from mux_core.errors import Disconnected, Ended, Failed, ServerUnavailable
from mux_core.http import (
    clean_headers,
    headers_problem,
    parse_retry_after,
    request_timeout,
    session_error,
    shared_client,
    url_problem,
)
from mux_core.session import Session

from ._parser import DEFAULT_MAX_EVENT_BYTES, SseParser

__all__ = ["SseOptions", "SseTransport"]


def _positive(_: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be greater than 0, got {value!r}")


@attrs.frozen(kw_only=True)
class SseOptions:
    """The keys of an ``transport = "sse"`` source."""

    #: The stream's URL, ``http://`` or ``https://``.
    url: str
    #: Extra request headers (e.g. ``Authorization``); ASCII only.
    headers: dict[str, str] = attrs.field(factory=dict)
    #: How to decode each event's data: "auto" = JSON when it parses, else the
    #: text; "json" = the same, plus a notice when an event is not JSON; "text" = as is.
    decode: Literal["auto", "json", "text"] = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "json", "text"))
    )
    #: Seconds without a single byte (comments count) before the stream counts as dead.
    read_timeout: float = attrs.field(default=45.0, validator=_positive)
    #: Events larger than this many bytes are skipped (with a notice), bounding memory.
    max_event_bytes: int = attrs.field(default=DEFAULT_MAX_EVENT_BYTES, validator=_positive)
    #: Check the server's TLS certificate (https).
    verify: bool = True

    @classmethod
    def check(cls, options: SseOptions) -> None:
        """Reject what no connection attempt could fix: a bad URL or header."""
        problem = url_problem(options.url) or headers_problem(options.headers)
        if problem:
            raise ValueError(problem)


class SseTransport:
    """Reads one event stream per session; see the module docstring for outcomes."""

    Options = SseOptions

    def __init__(self, options: SseOptions) -> None:
        self.options = options
        self._headers = {
            "Accept": "text/event-stream",
            "Cache-Control": "no-store",
            **clean_headers(options.headers),
        }

    async def run_session(self, session: Session) -> None:
        opts = self.options
        problem = url_problem(opts.url)
        if problem:
            raise Failed(problem)
        client = await shared_client(session, verify=opts.verify)
        headers = dict(self._headers)
        if session.resume.last_id:
            headers["Last-Event-ID"] = session.resume.last_id
        parser = SseParser(
            last_event_id=session.resume.last_id or "",
            max_event_bytes=opts.max_event_bytes,
            empty_id=None,
            json_data=opts.decode != "text",
        )
        with trio.CancelScope(deadline=trio.current_time() + session.connect_timeout) as scope:
            try:
                timeout = request_timeout(session.connect_timeout)
                async with client.stream(
                    "GET", opts.url, headers=headers, timeout=timeout, follow_redirects=True
                ) as response:
                    _check_response(response)
                    scope.deadline = math.inf
                    await session.connected()
                    await self._pump(session, response, parser, scope)
            except httpx.HTTPError as exc:
                raise session_error(exc, connected=session.is_connected) from exc
            except httpx.InvalidURL as exc:
                raise Failed(f"invalid URL: {exc}") from exc
        if session.is_connected:
            raise Disconnected(f"no data for {opts.read_timeout:g} s (read_timeout)")
        raise ServerUnavailable(f"no response within {session.connect_timeout:g} s")

    async def _pump(
        self, session: Session, response: httpx.Response, parser: SseParser, scope: trio.CancelScope
    ) -> None:
        """Feed reads to the parser and emit one batch per read, until the body ends.

        The parser hands out events ready to emit (ids None when empty, data
        decoded per ``decode``). The deadline is lifted while emitting, so a
        slow sink (backpressure) is never mistaken for a silent server.
        """
        read_timeout = self.options.read_timeout
        resume = session.resume
        notice_limit = f"skipped an event larger than {parser.max_event_bytes} bytes"
        skipped = 0
        retry: float | None = None
        bad_json_noticed = self.options.decode != "json"
        scope.deadline = trio.current_time() + read_timeout
        async for chunk in response.aiter_bytes():
            events = parser.feed(chunk)
            scope.deadline = math.inf
            if events:
                await session.emit(events)
                if parser.not_json and not bad_json_noticed:
                    bad_json_noticed = True
                    await session.notice("event data is not JSON; delivered as text")
            resume.last_id = parser.last_event_id or None
            if parser.retry != retry:
                retry = parser.retry
                session.set_retry_hint(retry)
            while skipped < parser.skipped:
                skipped += 1
                await session.notice(notice_limit)
            scope.deadline = trio.current_time() + read_timeout
        raise Disconnected("server closed the stream")


def _check_response(response: httpx.Response) -> None:
    """Raise unless the response opens an event stream."""
    status = response.status_code
    if status == 200:
        content_type = response.headers.get("content-type", "")
        essence = content_type.partition(";")[0].strip()
        if essence.lower() != "text/event-stream":
            got = essence or "no Content-Type"
            raise Failed(f"expected text/event-stream, got {got}")
        return
    detail = f"HTTP {status} {response.reason_phrase}".rstrip()
    if status == 204:
        raise Ended(f"{detail}: the server ended the stream")
    if status in (408, 429) or status >= 500:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise ServerUnavailable(detail, retry_after=retry_after)
    raise Failed(detail)
