"""The ``webhook`` sink: POST alerts (optionally events and statuses) as JSON to a URL.

So a person is told without watching a screen. Still a pure client: mux
sends requests, it never listens.

``write`` only queues: it never waits for the network, so a slow or absent
receiver never slows the sources. A bounded queue (``queue`` records) sits
between ``write`` and one background task that POSTs up to ``batch``
records per request; when the queue is full the oldest record is dropped
and counted (logged, and once more at the end of the run).

Retries follow the run's shared ``[retry]`` policy (backoff, jitter,
``max_delay``, a server's ``Retry-After`` within the floor and cap):
refused connections, timeouts, 5xx, 408 and 429 are retried; any other 4xx
means the request itself is wrong (a bad URL or token) and the batch is
dropped with an error log. With ``max_attempts`` set in ``[retry]``, a batch
that failed that many times in a row is dropped too, and the next one gets
a fresh count.

Bodies: ``format = "json"`` POSTs a JSON array of records, each exactly the
JSON Lines object the file sink writes; ``format = "slack"`` POSTs
``{"text": "..."}`` (one line per record), which Slack, Mattermost,
Rocket.Chat and Discord's ``/slack`` endpoint accept as an incoming webhook.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs
import orjson

from mux_core import Sink
from mux_core.options import positive, secret
from mux_core.records import (
    Alert,
    Batch,
    Event,
    Record,
    Severity,
    Status,
    encode_data,
    encode_jsonl,
)
from mux_core.retry import RetryPolicy
from mux_core.sink import SinkContext

# trio and httpx are imported where they are used: loading the plugin (every
# mux command does) does not pay for them.
if TYPE_CHECKING:
    import httpx

__all__ = ["WebhookOptions", "WebhookSink", "slack_line"]

_log = logging.getLogger("mux.sink.webhook")

_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
_RETRY_STATUSES = frozenset({408, 425, 429})
_MAX_DATA_CHARS = 300


def _http_url(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    from mux_core.http import url_problem

    # url_problem passes exactly the http(s) URLs with a host that httpx parses,
    # and a plain one without importing httpx (mux check need not); the message
    # of any other is this sink's own.
    if not url_problem(value):
        return
    import httpx

    try:
        url = httpx.URL(value)
    except Exception as exc:
        raise ValueError(f"{attribute.name}: not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{attribute.name} must be an http:// or https:// URL, got {value!r}")


@attrs.frozen(kw_only=True)
class WebhookOptions:
    """The keys of a ``[[sinks]] type = "webhook"`` table."""

    #: The URL to POST to (http:// or https://), e.g. a Slack incoming webhook,
    #: whose path is its token.
    url: str = attrs.field(validator=_http_url, metadata=secret())
    #: Extra HTTP headers (Authorization, ...).
    headers: dict[str, str] = attrs.field(factory=dict, metadata=secret())
    #: "json" (an array of JSON Lines records) or "slack" (``{"text": ...}``).
    format: Literal["json", "slack"] = "json"
    #: The least severity of the alerts sent: "info" (also "cleared" notices),
    #: "warning" or "critical".
    min_severity: Literal["info", "warning", "critical"] = "warning"
    #: Also POST data events (mind the volume: one request carries ``batch`` records).
    events: bool = False
    #: Also POST connection status changes.
    statuses: bool = False
    #: Records waiting to be sent at most; beyond it the oldest are dropped and counted.
    queue: int = attrs.field(default=1000, validator=positive())
    #: Records per request at most.
    batch: int = attrs.field(default=100, validator=positive())
    #: Seconds one request may take (connect, send and answer).
    timeout: float = attrs.field(default=10.0, validator=positive())
    #: Seconds the end of a run waits for what is still queued to be sent.
    flush_timeout: float = attrs.field(default=5.0, validator=positive())

    @classmethod
    def check(cls, options: WebhookOptions) -> None:
        """Reject a header no request could carry (non-ASCII, a line break) before the run,
        with the key's line, rather than failing every POST."""
        from mux_core.http import clean_headers, headers_problem

        problem = headers_problem(clean_headers(options.headers))
        if problem:
            raise ValueError(problem)


def slack_line(record: Record) -> str:
    """One human line for a chat message."""
    if type(record) is Alert:
        marker = {"critical": ":red_circle:", "warning": ":warning:", "info": ":white_check_mark:"}
        return (
            f"{marker[record.severity.value]} *{record.source}* {record.rule} "
            f"({record.severity.value}): {record.message}"
        )
    if type(record) is Status:
        detail = f": {record.detail}" if record.detail else ""
        return f"*{record.source}* {record.state.value}{detail}"
    assert type(record) is Event
    data = record.data
    shown = data if isinstance(data, str) else encode_data(record).decode("utf-8", "replace")
    if len(shown) > _MAX_DATA_CHARS:
        shown = shown[: _MAX_DATA_CHARS - 1] + "\u2026"
    return f"*{record.source}* {record.event} {shown}"


class WebhookSink(Sink):
    """POST alerts (optionally events and statuses) as JSON to a URL, with retries."""

    Options = WebhookOptions
    default_overflow: ClassVar[str] = "drop_oldest"
    default_on_error: ClassVar[str] = "drop"

    def __init__(self, options: WebhookOptions, context: SinkContext) -> None:
        import trio

        self.options = options
        self.context = context
        self.policy: RetryPolicy = context.retry
        self._min_rank = _RANK[Severity(options.min_severity)]
        self._queue: deque[Record] = deque()
        self._queued = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._client: httpx.AsyncClient | None = None
        #: Records taken off the queue by the request being made.
        self._in_flight = 0
        #: Records dropped: the queue was full, or a batch was given up.
        self.dropped = 0
        #: Records the receiver accepted (a 2xx answer).
        self.sent = 0
        #: Requests that failed (each retried or given up).
        self.failures = 0
        #: Set (then replaced by a fresh one) after each failed request: a test waits on it.
        self.request_failed = trio.Event()

    async def open(self) -> None:
        import httpx

        self._client = httpx.AsyncClient(timeout=self.options.timeout)
        self.context.start_background(self._sender)

    async def write(self, batch: Batch) -> None:
        import trio

        options = self.options
        queue = self._queue
        added = False
        for record in batch:
            if type(record) is Alert:
                if _RANK[record.severity] < self._min_rank:
                    continue
            elif type(record) is Event:
                if not options.events:
                    continue
            elif type(record) is Status:
                if not options.statuses:
                    continue
            else:
                continue
            if len(queue) >= options.queue:
                queue.popleft()
                self._drop(1, "the queue is full")
            queue.append(record)
            added = True
        if added:
            self._idle = trio.Event() if self._idle.is_set() else self._idle
            self._queued.set()

    async def aclose(self) -> None:
        """Send what is queued (within ``flush_timeout``), then close the client."""
        import trio

        with trio.move_on_after(self.options.flush_timeout):
            await self._idle.wait()
        unsent = len(self._queue) + self._in_flight
        if unsent:
            self._drop(unsent, f"not sent within flush_timeout = {self.options.flush_timeout:g} s")
            self._queue.clear()
            self._in_flight = 0
        if self._client is not None:
            with trio.CancelScope(shield=True):
                await self._client.aclose()
        if self.dropped:
            _log.warning(
                "webhook %r: %d records dropped in this run", self.context.name, self.dropped
            )

    # -- sending -------------------------------------------------------------

    async def _sender(self) -> None:
        import trio

        while True:
            if not self._queue:
                self._idle.set()
                self._queued = trio.Event()
                await self._queued.wait()
                continue
            size = min(self.options.batch, len(self._queue))
            records = [self._queue.popleft() for _ in range(size)]
            self._in_flight = size
            delivered = await self._deliver(records)
            self._in_flight = 0
            if not delivered:
                self._drop(size, "given up")

    async def _deliver(self, records: list[Record]) -> bool:
        """POST ``records`` until accepted (True) or given up (False), backing off between."""
        import trio

        body = self._body(records)
        failures = 0
        while True:
            outcome, retry_after = await self._post(body)
            if outcome == "sent":
                self.sent += len(records)
                return True
            self.failures += 1
            self.request_failed.set()
            self.request_failed = trio.Event()
            if outcome == "refused":
                return False
            failures += 1
            if self.policy.gives_up(failures):
                _log.error(
                    "webhook %r: %d attempts in a row failed; dropping %d records",
                    self.context.name,
                    failures,
                    len(records),
                )
                return False
            delay = self.policy.delay(failures)
            if retry_after is not None:
                delay = max(delay, self.policy.server_delay(retry_after))
            _log.warning(
                "webhook %r: %s; retry %d in %.1f s", self.context.name, outcome, failures, delay
            )
            await trio.sleep(delay)

    async def _post(self, body: bytes) -> tuple[str, float | None]:
        """One request: ("sent", None), ("refused", None) or (a reason to retry, Retry-After)."""
        import httpx

        from mux_core.http import clean_headers

        assert self._client is not None
        headers = {"Content-Type": "application/json", **clean_headers(self.options.headers)}
        try:
            response = await self._client.post(self.options.url, content=body, headers=headers)
        except httpx.TimeoutException:
            return f"no answer within {self.options.timeout:g} s", None
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, None
        status = response.status_code
        if 200 <= status < 300:
            return "sent", None
        if status >= 500 or status in _RETRY_STATUSES:
            return f"HTTP {status}", _retry_after(response.headers.get("retry-after"))
        _log.error(
            "webhook %r: HTTP %d from %s: %s; dropping the batch (a client error is not retried)",
            self.context.name,
            status,
            self.options.url,
            response.text[:200],
        )
        return "refused", None

    def _body(self, records: list[Record]) -> bytes:
        if self.options.format == "slack":
            text = "\n".join(slack_line(record) for record in records)
            return orjson.dumps({"text": text})
        # The file's lines (the core's encoder: a payload it cannot write is
        # sent as text, never fails the batch) joined into one JSON array.
        return b"[" + encode_jsonl(records)[:-1].replace(b"\n", b",") + b"]"

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        _log.warning(
            "webhook %r: %d records dropped (%s); %d so far",
            self.context.name,
            count,
            why,
            self.dropped,
        )


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
