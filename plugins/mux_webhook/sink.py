"""The ``webhook`` sink: POST alerts (optionally events and statuses) as JSON to a URL.

So a person is told without watching a screen -- a pager, a chat channel --
and can rely on being told. Still a pure client: mux sends requests, it
never listens.

``write`` only queues: it never waits for the network, so a slow or absent
receiver never slows the sources. One background task POSTs up to
``batch`` records per request; another closes grouping windows.

* **Grouping** (``group_interval``, :mod:`._queue`): the first alert of a
  rule on a source goes at once; the alerts of that rule and source that
  follow within the window are held, and when it closes the latest goes as
  one summary that counts them (``"grouped": {"count": ...}`` in JSON,
  ``(x200 in 1.0s)`` in Slack). A storm is a handful of messages, not
  hundreds. Status changes (``statuses = true``) are grouped per source the
  same way.
* **A bounded queue** (``queue`` records) that keeps what matters: when full,
  data events go first, then statuses and info alerts, then warnings,
  critical alerts last; the oldest first within each. What was dropped is
  logged as one summary line (a second later, then at most once a minute,
  and at the end of the run), never one line per record.
* **Retries** follow the run's shared ``[retry]`` policy (backoff, jitter,
  ``max_delay``; a ``Retry-After`` honoured within the floor and cap):
  refused connections, TLS and DNS failures, timeouts, 5xx, 408, 425 and 429
  are retried, and so is a redirect to another origin (not followed: it
  would send the alerts, and the headers, elsewhere) with a message saying
  so. A redirect within the origin is followed (``303`` means the receiver
  took the POST). Any other answer means the request itself is wrong (a bad
  URL or token): the batch is dropped with an error. With ``max_attempts``
  set in ``[retry]``, a batch that failed that many times in a row is
  dropped too, and the next one gets a fresh count.
* **The URL is a secret** (a Slack webhook's path is its token): logs show
  its scheme and host only.

Bodies: ``format = "json"`` POSTs a JSON array of records, each the JSON
Lines object the file sink writes (its payload encoded by the core, so no
payload can fail a batch), as strict JSON: a NaN or an infinity, which the
file holds as a bare literal, is ``null`` here (receivers' parsers reject
the literals); ``format = "slack"`` POSTs ``{"text": "..."}``
(one line per record, ``&<>`` escaped so a server's text cannot ping a
channel), which Slack, Mattermost, Rocket.Chat and Discord's ``/slack``
endpoint accept as an incoming webhook.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs
import orjson

from mux_core import Sink
from mux_core.options import non_negative, positive, secret
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
from mux_core.views import escape_controls, format_duration

from ._queue import Grouper, Pending, SendQueue, kind, record_time

# trio and httpx are imported where they are used: loading the plugin (every
# mux command does) does not pay for them.
if TYPE_CHECKING:
    import httpx

__all__ = ["WebhookOptions", "WebhookSink", "slack_line"]

_log = logging.getLogger("mux.sink.webhook")

_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
_RETRY_STATUSES = frozenset({408, 425, 429})
#: Redirects re-sent to their target within the origin (303: the POST was taken).
_FOLLOWED = frozenset({301, 302, 307, 308})
_MAX_DATA_CHARS = 300
#: Bytes of a refusing answer's body quoted in the error.
_EXCERPT_BYTES = 200
#: Seconds from a first drop to its summary line, and at least between two.
_FIRST_REPORT = 1.0
_REPORT_EVERY = 60.0


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
    #: Seconds during which the alerts of one rule on one source after the first
    #: are held, then sent as one summary (statuses: per source); 0 = send each.
    group_interval: float = attrs.field(
        default=10.0, validator=non_negative("seconds", note="0 = no grouping")
    )
    #: Records waiting to be sent at most; beyond it the least severe (events first,
    #: critical alerts last), oldest first, are dropped and counted.
    queue: int = attrs.field(default=1000, validator=positive())
    #: Records per request at most.
    batch: int = attrs.field(default=100, validator=positive())
    #: Seconds one request may take (connect, send and answer).
    timeout: float = attrs.field(default=10.0, validator=positive())
    #: Seconds the end of a run waits for what is still queued to be sent.
    flush_timeout: float = attrs.field(default=5.0, validator=positive())
    #: Check the receiver's TLS certificate (https) against the system's trust
    #: store, or ``ca_file``; false checks nothing (mux warns at check and at start).
    verify: bool = True
    #: A PEM file of the CAs to trust instead of the system's (a private CA, a
    #: self-signed receiver's certificate).
    ca_file: str | None = None

    @classmethod
    def check(cls, options: WebhookOptions) -> None:
        """Reject a header no request could carry (non-ASCII, a line break) and a
        CA file that is not there before the run, each at its key's line,
        rather than failing every POST."""
        from mux_core.http import clean_headers, headers_problem, tls_problem
        from mux_core.options import raise_problems

        raise_problems(
            [
                headers_problem(clean_headers(options.headers)),
                tls_problem(verify=options.verify, ca_file=options.ca_file),
            ]
        )


def slack_line(record: Record) -> str:
    """One human line for a chat message (a server's text escaped: no line
    break, and no ``<!channel>`` ping or ``<url|link>``)."""
    if type(record) is Alert:
        marker = {"critical": ":red_circle:", "warning": ":warning:", "info": ":white_check_mark:"}
        text = (
            f"{marker[record.severity.value]} *{_chat(record.source)}* {_chat(record.rule)} "
            f"({record.severity.value}): {_chat(record.message)}"
        )
    elif type(record) is Status:
        detail = f": {_chat(record.detail)}" if record.detail else ""
        text = f"*{_chat(record.source)}* {record.state.value}{detail}"
    else:
        assert type(record) is Event
        data = record.data
        shown = data if isinstance(data, str) else encode_data(record).decode("utf-8", "replace")
        if len(shown) > _MAX_DATA_CHARS:
            shown = shown[: _MAX_DATA_CHARS - 1] + "\u2026"
        text = f"*{_chat(record.source)}* {_chat(record.event)} {_chat(shown)}"
    return text


def _chat(text: str) -> str:
    """Text from a server or a config as Slack shows it literally."""
    text = escape_controls(text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _summary_note(item: Pending) -> str:
    """`` (x200 in 1.0s, worst critical)`` after a summary's line."""
    span = record_time(item.record) - (item.since if item.since is not None else 0.0)
    worst = f", worst {item.worst.value}" if item.worst is not None else ""
    return f" (x{item.count} in {format_duration(max(span, 0.0))}{worst})"


def _grouped(item: Pending) -> bytes:
    """The ``"grouped"`` value added to a summary's JSON object."""
    grouped: dict[str, Any] = {"count": item.count, "since": item.since}
    if item.worst is not None:
        grouped["worst"] = item.worst.value
    return orjson.dumps(grouped)


@attrs.frozen
class _Outcome:
    """What one request came to."""

    #: "sent", "refused" (dropped: retrying cannot help) or "retry".
    kind: Literal["sent", "refused", "retry"]
    #: Why, for the log (never the URL's path or query).
    reason: str = ""
    #: A server's Retry-After, in seconds.
    retry_after: float | None = None


def _shown(url: httpx.URL | str) -> str:
    """A URL as logged: its scheme, host and port (the path of a webhook URL is its token)."""
    import httpx

    try:
        parsed = httpx.URL(url) if isinstance(url, str) else url
    except (httpx.InvalidURL, TypeError):
        return "an invalid URL"
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


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
        self._where = _shown(options.url)
        self._queue = SendQueue(options.queue)
        self._grouper = Grouper(options.group_interval)
        self._queued = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        #: Set when the timer's next deadline may have moved (a group opened, a drop).
        self._timer_wake = trio.Event()
        self._client: httpx.AsyncClient | None = None
        #: Records taken off the queue by the request being made.
        self._in_flight: list[Pending] = []
        #: Drops not yet reported, by why and rank.
        self._unreported: Counter[tuple[str, int]] = Counter()
        self._reported_at: float | None = None
        #: When the next summary of drops is due (the run's clock), if one is.
        self._report_due: float | None = None
        #: Records dropped: the queue was full, or a batch was given up.
        self.dropped = 0
        #: Records the receiver accepted (a 2xx answer); a summary counts once.
        self.sent = 0
        #: Requests that failed (each retried or given up).
        self.failures = 0
        #: Set (then replaced by a fresh one) after each failed request: a test waits on it.
        self.request_failed = trio.Event()

    async def open(self) -> None:
        import httpx

        from mux_core.http import tls_context, warn_unverified

        options = self.options
        if not options.verify:
            warn_unverified(f"sink {self.context.name!r}")
        # The one TLS policy of mux (docs/security.md, TLS); a ca_file without
        # a certificate is a ValueError naming it: the sink fails to open.
        context = tls_context(verify=options.verify, ca_file=options.ca_file)
        context.set_alpn_protocols(["http/1.1"])
        self._client = httpx.AsyncClient(timeout=options.timeout, verify=context)
        self.context.start_background(self._sender)
        self.context.start_background(self._timer)

    async def write(self, batch: Batch) -> None:
        import trio

        options = self.options
        grouper = self._grouper
        now = trio.current_time()
        added = grouped = False
        for record in batch:
            if type(record) is Event:
                if not options.events:
                    continue
            elif type(record) is Alert or type(record) is Status:
                if type(record) is Alert and _RANK[record.severity] < self._min_rank:
                    continue
                if type(record) is Status and not options.statuses:
                    continue
                grouped = True
                if not grouper.offer(record, now):
                    continue  # held for its group's summary
            else:
                continue
            self._put(Pending(record))
            added = True
        if grouped:
            self._timer_wake.set()  # a window may have opened
        if added:
            self._wake_sender()

    async def aclose(self) -> None:
        """Send what is queued and held (within ``flush_timeout``), then close the client."""
        import trio

        for summary in self._grouper.flush():
            self._put(summary)
        self._wake_sender()
        with trio.move_on_after(self.options.flush_timeout):
            await self._idle.wait()
        unsent = [*self._queue.clear(), *self._in_flight]
        self._in_flight = []
        if unsent:
            why = f"not sent within flush_timeout = {self.options.flush_timeout:g} s"
            self._drop(unsent, why)
        if self._client is not None:
            with trio.CancelScope(shield=True):
                await self._client.aclose()
        self._report_drops()
        if self.dropped:
            _log.warning(
                "webhook %r: %d records dropped in this run", self.context.name, self.dropped
            )

    # -- queue, groups and drops ---------------------------------------------

    def _put(self, item: Pending) -> None:
        dropped = self._queue.put(item)
        if dropped is not None:
            self._drop([dropped], "the queue was full")

    def _wake_sender(self) -> None:
        import trio

        if len(self._queue):
            self._idle = trio.Event() if self._idle.is_set() else self._idle
            self._queued.set()

    def _drop(self, items: Sequence[Pending], why: str) -> None:
        """Count dropped records; one summary line follows (see :meth:`_report_drops`)."""
        import trio

        for item in items:
            self.dropped += item.count
            self._unreported[(why, item.rank)] += item.count
        if self._report_due is None:
            now = trio.current_time()
            due = now + _FIRST_REPORT
            if self._reported_at is not None:
                due = max(due, self._reported_at + _REPORT_EVERY)
            self._report_due = due
            self._timer_wake.set()

    def _report_drops(self) -> None:
        """One line for every drop since the last: how many, why, of what rank."""
        import trio

        self._report_due = None
        if not self._unreported:
            return
        total = sum(self._unreported.values())
        reasons: dict[str, list[str]] = {}
        for (why, level), count in sorted(self._unreported.items(), key=lambda i: -i[0][1]):
            reasons.setdefault(why, []).append(f"{count} {kind(level)}")
        detail = "; ".join(f"{why}: {', '.join(counts)}" for why, counts in reasons.items())
        _log.warning(
            "webhook %r: %d record%s dropped (%s); %d so far",
            self.context.name,
            total,
            "" if total == 1 else "s",
            detail,
            self.dropped,
        )
        self._unreported.clear()
        self._reported_at = trio.current_time()

    async def _timer(self) -> None:
        """Close grouping windows (their summaries join the queue) and report drops."""
        import trio

        while True:
            deadlines = [t for t in (self._grouper.next_close(), self._report_due) if t is not None]
            with trio.move_on_at(min(deadlines) if deadlines else float("inf")):
                await self._timer_wake.wait()
            self._timer_wake = trio.Event()
            now = trio.current_time()
            for summary in self._grouper.due(now):
                self._put(summary)
            self._wake_sender()
            if self._report_due is not None and now >= self._report_due:
                self._report_drops()

    # -- sending -------------------------------------------------------------

    async def _sender(self) -> None:
        import trio

        while True:
            if not len(self._queue):
                self._idle.set()
                self._queued = trio.Event()
                await self._queued.wait()
                continue
            items = self._queue.take(self.options.batch)
            self._in_flight = items
            dropped = await self._deliver(items)
            self._in_flight = []
            if dropped:
                self._drop(items, dropped)

    async def _deliver(self, items: list[Pending]) -> str:
        """POST ``items`` until accepted (""), or why they were given up; backs off between."""
        import trio

        body = self._body(items)
        failures = 0
        while True:
            outcome = await self._post(body)
            if outcome.kind == "sent":
                self.sent += len(items)
                return ""
            self.failures += 1
            self.request_failed.set()
            self.request_failed = trio.Event()
            if outcome.kind == "refused":
                return f"refused ({outcome.reason})"
            failures += 1
            if self.policy.gives_up(failures):
                _log.error(
                    "webhook %r: %d attempts in a row failed (last: %s); dropping %d records",
                    self.context.name,
                    failures,
                    outcome.reason,
                    len(items),
                )
                return f"given up after {failures} attempts"
            delay = self.policy.delay(failures)
            if outcome.retry_after is not None:
                delay = max(delay, self.policy.server_delay(outcome.retry_after))
            _log.warning(
                "webhook %r: %s; retry %d in %.1f s",
                self.context.name,
                outcome.reason,
                failures,
                delay,
            )
            await trio.sleep(delay)

    async def _post(self, body: bytes) -> _Outcome:
        """One delivery: the POST, and the redirects within the URL's origin."""
        import httpx
        import trio

        from mux_core.http import MAX_REDIRECTS, clean_headers, origin, parse_retry_after

        assert self._client is not None
        headers = {"Content-Type": "application/json", **clean_headers(self.options.headers)}
        url = httpx.URL(self.options.url)
        timeout = self.options.timeout
        for _ in range(MAX_REDIRECTS + 1):
            try:
                with trio.fail_after(timeout):
                    async with self._client.stream(
                        "POST", url, content=body, headers=headers
                    ) as response:
                        status = response.status_code
                        answer = response.headers
                        excerpt = b""
                        if 400 <= status < 500 and status not in _RETRY_STATUSES:
                            excerpt = await _excerpt(response)
            except trio.TooSlowError:
                return _Outcome("retry", f"no answer from {self._where} within {timeout:g} s")
            except (httpx.HTTPError, OSError, trio.BrokenResourceError) as exc:
                return _Outcome("retry", f"{self._where}: {self._describe(exc)}")
            if 200 <= status < 300 or status == 303:
                return _Outcome("sent")
            if status >= 500 or status in _RETRY_STATUSES:
                retry_after = parse_retry_after(answer.get("retry-after"))
                return _Outcome("retry", f"HTTP {status} from {self._where}", retry_after)
            if status in _FOLLOWED and "location" in answer:
                try:
                    target = url.join(answer["location"])
                except (httpx.InvalidURL, ValueError, TypeError):
                    return _Outcome("retry", f"HTTP {status} to an invalid URL: not followed")
                if origin(target) != origin(url):
                    return _Outcome(
                        "retry",
                        f"HTTP {status} from {self._where} redirects to another origin "
                        f"({_shown(target)}): not followed, it would send the alerts and "
                        "the headers there; set url to the receiver's new address",
                    )
                url = target
                continue
            why = (
                "a client error is not retried: check the url and headers"
                if status >= 400
                else "a redirect without a usable Location"
            )
            _log.error(
                "webhook %r: HTTP %d from %s: %r; dropping the batch (%s)",
                self.context.name,
                status,
                self._where,
                escape_controls(self._scrub(excerpt.decode("utf-8", "replace"))),
                why,
            )
            return _Outcome("refused", f"HTTP {status}")
        return _Outcome("retry", f"more than {MAX_REDIRECTS} redirects from {self._where}")

    def _describe(self, exc: Exception) -> str:
        """Why a request failed, in words (TLS, DNS, refused, ...), without the URL."""
        import httpx

        from mux_core import describe_connection_error

        words = describe_connection_error(exc)  # TLS, DNS, refused, reset, ...
        if words is None:
            if isinstance(exc, httpx.TimeoutException):
                words = f"no answer within {self.options.timeout:g} s"
            elif isinstance(exc, httpx.RemoteProtocolError):
                words = "the receiver's answer is not valid HTTP"
            else:
                words = str(exc) or type(exc).__name__
        return self._scrub(words)

    def _scrub(self, text: str) -> str:
        """``text`` without the URL's path or query (a receiver may echo them)."""
        import httpx

        url = httpx.URL(self.options.url)
        parts = [self.options.url, str(url), url.raw_path.decode("ascii", "replace")]
        parts += [url.path, url.query.decode("ascii", "replace")]
        for part in sorted(parts, key=len, reverse=True):
            if len(part) > 1 and part in text:
                text = text.replace(part, "***")
        return text

    def _body(self, items: list[Pending]) -> bytes:
        if self.options.format == "slack":
            text = "\n".join(
                slack_line(item.record) + (_summary_note(item) if item.count > 1 else "")
                for item in items
            )
            return orjson.dumps({"text": text})
        # The file's lines (the core's encoder: a payload it cannot write is
        # sent as text, never fails the batch) joined into one JSON array; a
        # summary's object gets a "grouped" key.
        lines = encode_jsonl([item.record for item in items])[:-1].split(b"\n")
        lines = [_strict(line) for line in lines]
        for i, item in enumerate(items):
            if item.count > 1:
                lines[i] = lines[i][:-1] + b',"grouped":' + _grouped(item) + b"}"
        return b"[" + b",".join(lines) + b"]"


def _strict(line: bytes) -> bytes:
    """A record's line as strict JSON: the file's NaN / Infinity literals as null.

    Receivers parse bodies with strict JSON parsers (JavaScript's, Go's,
    Slack's) that reject the literals: one NaN would lose the whole batch.
    """
    if b"NaN" not in line and b"Infinity" not in line:
        return line
    try:
        return orjson.dumps(json.loads(line))
    except (ValueError, RecursionError, TypeError):
        return line


async def _excerpt(response: httpx.Response) -> bytes:
    """The first bytes of an answer's body, never more (a refusal is quoted in the log)."""
    excerpt = b""
    async for chunk in response.aiter_bytes():
        excerpt += chunk
        if len(excerpt) >= _EXCERPT_BYTES:
            break
    return excerpt[:_EXCERPT_BYTES]
