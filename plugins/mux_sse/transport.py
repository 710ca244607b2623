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

With ``relay = true`` the stream is another mux's ``web`` sink: each event's
data is one of its records, handed on with :meth:`Session.relay` as the
``redis-stream`` transport does, and ``Last-Event-ID`` resumes it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Literal

import attrs

from mux_core import Transport, __version__
from mux_core.errors import (
    Disconnected,
    Ended,
    Failed,
    ServerUnavailable,
    describe_connection_error,
)
from mux_core.options import positive, raise_problems, secret
from mux_core.transport import Session

from ._parser import DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_ID_BYTES, SseEvent, SseParser

# trio and httpx (and mux_core.http's client modules) are imported where they
# are used: loading the plugin (every mux command does) does not pay for them.
if TYPE_CHECKING:
    import httpx
    import trio

    from mux_core.http import Http11Stream

__all__ = ["SseOptions", "SseTransport"]


@attrs.frozen(kw_only=True)
class SseOptions:
    """The keys of an ``transport = "sse"`` source."""

    #: The stream's URL, ``http://`` or ``https://``.
    url: str
    #: Extra request headers (e.g. ``Authorization``); ASCII only.
    headers: dict[str, str] = attrs.field(factory=dict, metadata=secret())
    #: How to decode each event's data: "auto" = JSON when it parses, else the
    #: text; "json" = the same, plus a notice when an event is not JSON; "text" = as is.
    decode: Literal["auto", "json", "text"] = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "json", "text"))
    )
    #: Seconds without a single byte (comments count) before the stream counts as
    #: dead (checked lazily: up to 1/16 of it, at most 1 s, later).
    read_timeout: float = attrs.field(default=45.0, validator=positive())
    #: Events larger than this many bytes are skipped (with a notice), bounding memory.
    max_event_bytes: int = attrs.field(default=DEFAULT_MAX_EVENT_BYTES, validator=positive())
    #: Ids longer than this many bytes are ignored (the last id stays in effect,
    #: with one notice): every later event carries the id, so it must stay small.
    max_id_bytes: int = attrs.field(default=DEFAULT_MAX_ID_BYTES, validator=positive())
    #: Check the server's TLS certificate (https) against the system's trust store,
    #: or ``ca_file``; false checks nothing (mux warns at check and at start).
    verify: bool = True
    #: A PEM file of the CAs to trust instead of the system's (a private CA, a
    #: self-signed server's certificate).
    ca_file: str | None = None
    #: The stream is another mux's ``web`` sink (``http://HOST:PORT/events``):
    #: each event is one of its records, handed on as it is, so the sinks here
    #: see the upstream's sources by their own names, seqs and times (this
    #: source's own states keep its name). ``decode`` does not apply.
    relay: bool = False

    @classmethod
    def check(cls, options: SseOptions) -> None:
        """Reject what no connection attempt could fix: a bad URL, header or CA file."""
        from mux_core.http import headers_problem, tls_problem, url_problem

        raise_problems(
            [
                url_problem(options.url),
                headers_problem(options.headers),
                tls_problem(verify=options.verify, ca_file=options.ca_file),
            ]
        )


class SseTransport(Transport):
    """Reads one event stream per session; see the module docstring for outcomes.

    Connections are opened by :class:`mux_core.http.Http11Stream` (h11 straight over a
    trio socket: a tenth of httpx's cost per read and per connection), or by
    the run's shared httpx client when the environment names a proxy for the
    URL, since only httpx speaks to proxies.
    """

    Options = SseOptions

    def __init__(self, options: SseOptions) -> None:
        import httpx

        from mux_core.http import basic_authorization, clean_headers, proxy_for, url_problem

        self.options = options
        headers = clean_headers(options.headers)
        self._problem = url_problem(options.url)
        self._url = httpx.URL(options.url) if not self._problem else None
        # What _http11 sends besides Host; httpx adds the defaults and the URL's
        # credentials (as Basic auth, unless an Authorization header is set) itself.
        # Neither list is changed once made: a source without headers of its own
        # shares the plain ones (100,000 idle sources: ~350 bytes each).
        names = {name.lower() for name in headers}
        if headers:
            self._headers = {**_PLAIN_HEADERS, **headers}
            direct = [
                *self._headers.items(),
                *[(k, v) for k, v in _DIRECT_DEFAULTS if k.lower() not in names],
            ]
        else:
            self._headers, direct = _PLAIN_HEADERS, _PLAIN_DIRECT
        credentials = basic_authorization(self._url) if self._url is not None else None
        if credentials is not None and "authorization" not in names:
            direct = [*direct, ("Authorization", credentials)]
        self._direct_headers = direct
        self._proxy = proxy_for(self._url) if self._url is not None else None
        # One notice per source for ids over max_id_bytes, not one per connection.
        self._long_id_noticed = False
        # relay = true: one notice per source for events that are not mux records.
        self._not_records_noticed = False
        # verify = false is said once, when the source starts.
        self._unverified_warned = options.verify

    async def run_session(self, session: Session) -> None:
        import trio

        from mux_core.http import ProtocolError

        opts = self.options
        if self._url is None:
            raise Failed(self._problem)
        if not self._unverified_warned:
            from mux_core.http import warn_unverified

            self._unverified_warned = True
            warn_unverified(f"source {session.source!r}")
        parser = SseParser(
            last_event_id=session.resume.last_id or "",
            max_event_bytes=opts.max_event_bytes,
            max_id_bytes=opts.max_id_bytes,
            empty_id=None,
            json_data=opts.decode != "text" or opts.relay,
            check_json=opts.decode == "json" and not opts.relay,
            records=opts.relay,
        )
        if self._proxy is not None:
            with trio.CancelScope(deadline=trio.current_time() + session.connect_timeout) as scope:
                await self._run_httpx(session, parser, scope)
            raise ServerUnavailable(f"no response within {session.connect_timeout:g} s")
        stream = None
        with trio.move_on_after(session.connect_timeout):
            stream = await self._open(session, self._url)
        if stream is None:
            raise ServerUnavailable(f"no response within {session.connect_timeout:g} s")
        # Streaming runs outside the connect deadline's scope: one cancel
        # scope less per connected source (10,000 idle sources, ~1 KB each).
        try:
            await session.connected()
            await self._pump(session, stream.receive, parser)
        except ProtocolError as exc:
            raise _lost(session, str(exc)) from exc
        except (OSError, trio.BrokenResourceError) as exc:
            raise _lost(session, _network_detail(exc)) from exc
        finally:
            await stream.aclose()

    async def _open(self, session: Session, url: httpx.URL) -> Http11Stream:
        """Connect with _http11, following redirects, up to an accepted stream's head."""
        import trio

        from mux_core.http import (
            MAX_REDIRECTS,
            REDIRECT_STATUSES,
            Http11Stream,
            ProtocolError,
            redirected,
            shared_tls_context,
        )

        headers = list(self._direct_headers)
        if session.resume.last_id:
            headers.append(("Last-Event-ID", session.resume.last_id))
        for _ in range(MAX_REDIRECTS + 1):
            tls = None
            if url.scheme == "https":
                tls = await shared_tls_context(
                    session, verify=self.options.verify, ca_file=self.options.ca_file
                )
            try:
                stream = await Http11Stream.connect(url, tls)
            except (OSError, trio.BrokenResourceError) as exc:
                raise ServerUnavailable(_network_detail(exc)) from exc
            accepted = False
            try:
                head = await stream.request(url, headers)
                location = (
                    head.headers.get("location") if head.status in REDIRECT_STATUSES else None
                )
                if location is not None:
                    url, headers = redirected(url, location, headers)
                    continue
                _check_response(head.status, head.reason, head.headers)
                accepted = True
                return stream
            except ValueError as exc:  # the request cannot be sent (or a bad Location)
                raise Failed(str(exc)) from exc
            except ProtocolError as exc:
                raise _lost(session, str(exc)) from exc
            except (OSError, trio.BrokenResourceError) as exc:
                raise _lost(session, _network_detail(exc)) from exc
            finally:
                if not accepted:
                    with trio.CancelScope(shield=True):
                        await stream.aclose()
        raise Failed(f"more than {MAX_REDIRECTS} redirects")

    async def _run_httpx(
        self, session: Session, parser: SseParser, scope: trio.CancelScope
    ) -> None:
        """The same session through the shared httpx client (which speaks to proxies)."""
        import httpx

        from mux_core.http import header_value, request_timeout, session_error, shared_client

        opts = self.options
        client = await shared_client(session, verify=opts.verify, ca_file=opts.ca_file)
        headers = [(name.encode("ascii"), header_value(v)) for name, v in self._headers.items()]
        if session.resume.last_id:  # any id, sent as _http11 sends it
            headers.append((b"Last-Event-ID", header_value(session.resume.last_id)))
        try:
            timeout = request_timeout(session.connect_timeout)
            async with client.stream(
                "GET", opts.url, headers=headers, timeout=timeout, follow_redirects=True
            ) as response:
                _check_response(response.status_code, response.reason_phrase, response.headers)
                scope.deadline = math.inf
                await session.connected()
                chunks = response.aiter_bytes()

                async def receive() -> bytes:
                    async for chunk in chunks:
                        if chunk:
                            return chunk
                    return b""

                await self._pump(session, receive, parser)
        except httpx.HTTPError as exc:
            raise session_error(exc, connected=session.is_connected) from exc
        except httpx.InvalidURL as exc:
            raise Failed(f"invalid URL: {exc}") from exc

    async def _pump(
        self,
        session: Session,
        receive: Callable[[], Awaitable[bytes]],
        parser: SseParser,
    ) -> None:
        """Feed reads to the parser and emit one batch per read, until the body ends.

        The parser hands out events ready to emit (ids None when empty, data
        decoded per ``decode``). Silence is timed by a cancel scope whose
        deadline moves lazily: only once it is less than ``read_timeout``
        away, to ``read_timeout`` plus a slack of 1/16 of it (at most 1 s) --
        moving a trio deadline costs ~2 µs, a real share of an event's
        latency when done twice per read. So silence ends the stream after
        between ``read_timeout`` and ``read_timeout`` + slack, never sooner.

        A sink that makes ``emit`` wait (backpressure) is not silence: when the
        deadline passed during such a wait, the scope is left and a fresh
        one started instead of ending the stream.
        """
        import trio

        read_timeout = self.options.read_timeout
        slack = min(read_timeout / 16, 1.0)
        resume = session.resume
        notice_limit = f"skipped an event larger than {parser.max_event_bytes} bytes"
        parser_id_limit = self.options.max_id_bytes
        skipped = 0
        retry: float | None = None
        bad_json_noticed = self.options.decode != "json"
        relay = self.options.relay
        current_time = trio.current_time
        while True:
            with trio.CancelScope(deadline=current_time() + read_timeout + slack) as silence:
                while chunk := await receive():
                    now = current_time()
                    if now + read_timeout > silence.deadline:
                        silence.deadline = now + read_timeout + slack
                    events = parser.feed(chunk)
                    if events:
                        if relay:
                            await self._relay(session, events)
                        else:
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
                    if parser.long_ids and not self._long_id_noticed:
                        self._long_id_noticed = True
                        await session.notice(
                            f"ignored an id longer than {parser_id_limit} bytes (max_id_bytes):"
                            " events keep the last id"
                        )
                    if silence.cancel_called:  # it expired while a sink made us wait
                        break
                else:
                    raise Disconnected("server closed the stream")
            if silence.cancelled_caught:
                raise Disconnected(f"no data for {read_timeout:g} s (read_timeout)")

    async def _relay(self, session: Session, events: list[SseEvent]) -> None:
        """``relay = true``: hand on the records a mux web sink sent, as they are.

        Its ``hello`` and ``reset`` events carry no record and are skipped.
        Each event's data is one or more records, a JSON Lines line each,
        decoded together (the parser hands them out as bytes); a line that is
        not a mux record is skipped with one notice. The batch handed on knows
        its size, so the sinks' channels need not measure it.
        """
        from mux_core.records import decode_jsonl_lines

        records = None
        bad = 0
        for kind, _id, data in events:
            if kind != "message":
                continue
            batch, skipped = decode_jsonl_lines(data)
            bad += skipped
            if records is None:
                records = batch
            else:
                records.extend(batch)
                records.nbytes += batch.nbytes
        if records:
            await session.relay(records)
        if bad and not self._not_records_noticed:
            self._not_records_noticed = True
            await session.notice(
                f"skipped {bad} events that are not mux records: relay = true reads"
                " another mux's web sink (http://HOST:PORT/events)"
            )


#: Sent by _http11 unless the config sets them: mux asks for the bytes as they
#: are (no compression to undo per read) and says who is asking.
_DIRECT_DEFAULTS = (("Accept-Encoding", "identity"), ("User-Agent", f"mux/{__version__}"))
#: What every stream asks for; the headers of a source without its own (never changed).
_PLAIN_HEADERS = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
_PLAIN_DIRECT = [*_PLAIN_HEADERS.items(), *_DIRECT_DEFAULTS]


def _network_detail(exc: BaseException) -> str:
    return describe_connection_error(exc) or str(exc) or type(exc).__name__


def _lost(session: Session, detail: str) -> Disconnected | ServerUnavailable:
    """A broken connection: Disconnected once the stream was open, else ServerUnavailable."""
    if session.is_connected:
        return Disconnected(f"connection lost: {detail}")
    return ServerUnavailable(detail)


def _check_response(status: int, reason: str, headers: Mapping[str, str]) -> None:
    """Raise unless the response opens an event stream."""
    from mux_core.http import parse_retry_after

    if status == 200:
        content_type = headers.get("content-type", "")
        essence = content_type.partition(";")[0].strip()
        if essence.lower() != "text/event-stream":
            got = essence or "no Content-Type"
            raise Failed(f"expected text/event-stream, got {got}")
        return
    detail = f"HTTP {status} {reason}".rstrip()
    if status == 204:
        raise Ended(f"{detail}: the server ended the stream")
    if status in (408, 429) or status >= 500:
        retry_after = parse_retry_after(headers.get("retry-after"))
        raise ServerUnavailable(detail, retry_after=retry_after)
    raise Failed(detail)
