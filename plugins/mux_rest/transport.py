"""The ``rest`` transport: poll a JSON endpoint; one session = polls until one fails.

Each poll is one ``GET``. The JSON body (or the list at the dotted ``items``
path inside it) becomes ONE batch: every item is an event whose data is the
item, whose id is ``item[id_field]`` (as a string) and whose type is
``item[event_field]`` (default ``"message"``). Between polls the session
waits ``interval`` -- that is the polling cadence, not a retry. How a poll
ends decides what the supervisor does::

    200 + JSON                     -> events; the next poll follows
    304 / 204                      -> nothing new; the next poll follows
    refused, reset, timeout        -> ServerUnavailable (retry)
    5xx, 408, 429                  -> ServerUnavailable (retry, honours Retry-After)
    body is not JSON               -> ServerUnavailable (a proxy's error page, a
                                      server restarting: a monitor keeps waiting)
    body over max_page_bytes       -> ServerUnavailable (memory stays bounded)
    other 4xx (401/403/404/410...) -> Failed (terminal)
    JSON without the ``items`` key -> Failed (the config does not match the server)

No duplicates across polls and restarts: with ``cursor_param`` each poll asks
only for the items after the last id seen (``?after=41``); in every case the
items up to and including the last id seen are skipped when that id is in the
page, so a server that ignores the cursor, treats it inclusively, or returns
its whole recent list each time delivers each event once. Items are expected
oldest first. ``If-None-Match`` / ``If-Modified-Since`` are sent whenever the
server gave an ``ETag`` / ``Last-Modified``.

Polls go through :class:`mux_core.http.HttpClient` (h11 over one kept-alive
connection per session, closed when the session ends): about half the CPU
per page of httpx, whose layers cost more than parsing the page. When the
environment names a proxy for the URL, the run's shared httpx client is used
instead, since only httpx speaks to proxies.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from mux_core import Transport, __version__
from mux_core.errors import Failed, ServerUnavailable, describe_connection_error
from mux_core.options import positive, raise_problems, secret
from mux_core.transport import RawEvent, Session

from ._page import Delivered, PageReader

# trio and httpx (and mux_core.http's client modules) are imported where they
# are used: loading the plugin (every mux command does) does not pay for them.
if TYPE_CHECKING:
    import httpx

    from mux_core.http import HttpClient, HttpResponse

__all__ = ["RestOptions", "RestTransport"]


@attrs.frozen(kw_only=True)
class RestOptions:
    """The keys of a ``transport = "rest"`` source."""

    #: The endpoint's URL, ``http://`` or ``https://`` (it may carry a query).
    url: str
    #: Extra request headers (e.g. ``Authorization``); ASCII only.
    headers: dict[str, str] = attrs.field(factory=dict, metadata=secret())
    #: Seconds from the start of one poll to the start of the next.
    interval: float = attrs.field(default=1.0, validator=positive())
    #: Dotted path to the list of items in the JSON body ("data.items"); empty:
    #: the body itself is the list, or one event when it is not a list.
    items: str = ""
    #: The item key holding the event's id (stringified); None: items have no id.
    id_field: str | None = "id"
    #: The item key holding the event's type; None (or a missing key): "message".
    event_field: str | None = None
    #: The query parameter carrying the last id seen, so a poll returns only
    #: newer items (e.g. "after"); None: the URL is polled as is.
    cursor_param: str | None = None
    #: Seconds a poll may take (connect, send, wait, read) before the server counts
    #: as unavailable.
    timeout: float = attrs.field(default=10.0, validator=positive())
    #: Check the server's TLS certificate (https) against the system's trust store,
    #: or ``ca_file``; false checks nothing (mux warns at check and at start).
    verify: bool = True
    #: A PEM file of the CAs to trust instead of the system's (a private CA, a
    #: self-signed server's certificate).
    ca_file: str | None = None
    #: The largest page read, in bytes, as sent and once decompressed; a larger
    #: one is server_unavailable (retried), so a runaway server cannot exhaust memory.
    max_page_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=positive())
    #: Items remembered by id to drop exact repeats (a cursor that moved back);
    #: an id repeated with other data is a new run and is delivered.
    dedupe_items: int = attrs.field(default=20_000, validator=positive())
    #: Bytes of pages kept for that comparison (the newest pages are kept).
    dedupe_bytes: int = attrs.field(default=16 * 1024 * 1024, validator=positive())

    @classmethod
    def check(cls, options: RestOptions) -> None:
        """Reject what no poll could fix: a bad URL, header, CA file or items path."""
        from mux_core.http import headers_problem, tls_problem, url_problem

        empty_key = bool(options.items) and "" in options.items.split(".")
        raise_problems(
            [
                url_problem(options.url),
                headers_problem(options.headers),
                tls_problem(verify=options.verify, ca_file=options.ca_file),
                f"items: {options.items!r} has an empty key; write e.g. 'data.items'"
                if empty_key
                else None,
            ]
        )


class RestTransport(Transport):
    """Polls one JSON endpoint per session; see the module docstring for outcomes."""

    Options = RestOptions

    def __init__(self, options: RestOptions) -> None:
        import httpx

        from mux_core.http import basic_authorization, clean_headers, proxy_for, url_problem

        self.options = options
        headers = clean_headers(options.headers)
        self._headers = {"Accept": "application/json", **headers}
        self._problem = url_problem(options.url)
        self._url = httpx.URL(options.url) if not self._problem else None
        self._proxy = proxy_for(self._url) if self._url is not None else None
        # What HttpClient sends besides Host and Accept-Encoding; httpx adds
        # the user agent and the URL's credentials itself.
        names = {name.lower() for name in headers}
        self._direct_headers = list(self._headers.items())
        if "user-agent" not in names:
            self._direct_headers.append(("User-Agent", f"mux/{__version__}"))
        credentials = basic_authorization(self._url) if self._url is not None else None
        if credentials is not None and "authorization" not in names:
            self._direct_headers.append(("Authorization", credentials))
        self._reader = PageReader(options.items, options.id_field, options.event_field)
        # What was delivered in this run segment, by id; kept across sessions.
        self._delivered = Delivered(max_items=options.dedupe_items, max_bytes=options.dedupe_bytes)
        # verify = false is said once, when the source starts.
        self._unverified_warned = options.verify
        # Validators from the last delivered response; kept across sessions.
        self._etag: str | None = None
        self._last_modified: str | None = None

    async def run_session(self, session: Session) -> None:
        from mux_core.http import HttpClient, shared_client, shared_tls_context

        if self._url is None:
            raise Failed(self._problem)
        opts = self.options
        if not self._unverified_warned:
            from mux_core.http import warn_unverified

            self._unverified_warned = True
            warn_unverified(f"source {session.source!r}")
        if self._proxy is not None:
            client = await shared_client(session, verify=opts.verify, ca_file=opts.ca_file)
            await self._poll_forever(session, functools.partial(self._fetch_httpx, client))
            return
        direct = HttpClient(
            tls_context=functools.partial(
                shared_tls_context, session, verify=opts.verify, ca_file=opts.ca_file
            )
        )
        try:
            await self._poll_forever(session, functools.partial(self._fetch_direct, direct))
        finally:
            await direct.aclose()

    async def _poll_forever(self, session: Session, fetch: _Fetch) -> None:
        import trio

        interval = self.options.interval
        next_poll = trio.current_time()
        while True:
            await self._poll(fetch, session)
            next_poll += interval
            now = trio.current_time()
            if next_poll > now:
                await trio.sleep_until(next_poll)
            else:
                # Overdue (a slow poll, a short interval): poll again at once,
                # after a plain checkpoint -- sleep_until() with a deadline in
                # the past still arms a timeout and costs 5x as much.
                next_poll = now
                await trio.lowlevel.checkpoint()

    async def _poll(self, fetch: _Fetch, session: Session) -> None:
        """One GET: emit its new items as one batch, or raise what went wrong."""
        opts = self.options
        assert self._url is not None
        url = self._url
        if opts.cursor_param and session.resume.last_id is not None:
            url = url.copy_merge_params({opts.cursor_param: session.resume.last_id})
        conditions: list[tuple[str, bytes]] = []
        if self._etag:
            conditions.append(("If-None-Match", _raw(self._etag)))
        if self._last_modified:
            conditions.append(("If-Modified-Since", _raw(self._last_modified)))
        response = await fetch(url, conditions)
        status = response.status
        if status in (204, 304):
            await session.connected()
            return
        _check_status(response)
        content = response.content
        page = self._reader.read(content)
        if page is None:  # not the common shape: decode it and say what is off
            try:
                body = _loads(content)
            except ValueError as exc:
                if _is_event_stream(response):
                    # An SSE endpoint: no retry will make it JSON.
                    raise Failed(f'{_not_json(response)}; use transport = "sse"') from exc
                raise ServerUnavailable(_not_json(response)) from exc
            page = _general_page(_extract_items(body, opts.items), opts.id_field, opts.event_field)
        await session.connected()
        await session.emit(self._new_events(*page, session.resume.last_id, len(content)))
        self._etag = response.headers.get("etag")
        self._last_modified = response.headers.get("last-modified")

    async def _fetch_direct(
        self, client: HttpClient, url: httpx.URL, conditions: list[tuple[str, bytes]]
    ) -> HttpResponse:
        """GET through mux's own HTTP/1.1 client; errors become session errors."""
        import trio

        from mux_core.http import BodyTooLarge, ProtocolError, ResponseTimeout

        opts = self.options
        try:
            return await client.get(
                url,
                [*self._direct_headers, *conditions],
                timeout=opts.timeout,
                max_body_bytes=opts.max_page_bytes,
            )
        except ValueError as exc:  # the request cannot be sent, a bad redirect
            raise Failed(str(exc)) from exc
        except BodyTooLarge as exc:
            raise ServerUnavailable(f"{exc} (max_page_bytes)") from exc
        except (ProtocolError, ResponseTimeout) as exc:
            raise ServerUnavailable(str(exc)) from exc
        except (OSError, trio.BrokenResourceError) as exc:
            detail = describe_connection_error(exc) or str(exc) or type(exc).__name__
            raise ServerUnavailable(detail) from exc

    async def _fetch_httpx(
        self, client: httpx.AsyncClient, url: httpx.URL, conditions: list[tuple[str, bytes]]
    ) -> HttpResponse:
        """GET through the shared httpx client (which speaks to proxies)."""
        import httpx

        from mux_core.http import BodyTooLarge, HttpResponse, header_value, session_error

        pairs: list[tuple[str, str | bytes]] = [*self._headers.items(), *conditions]
        headers = [(name.encode("ascii"), header_value(value)) for name, value in pairs]
        limit = self.options.max_page_bytes
        try:
            async with client.stream(
                "GET", url, headers=headers, timeout=self.options.timeout
            ) as response:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ServerUnavailable(f"{BodyTooLarge(limit)} (max_page_bytes)")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise session_error(exc) from exc
        except httpx.InvalidURL as exc:
            raise Failed(f"invalid URL: {exc}") from exc
        return HttpResponse(
            response.status_code,
            response.reason_phrase,
            response.headers,
            b"".join(chunks),
            response.url,
        )

    def _new_events(
        self, items: list[Any], ids: list[Any], kinds: list[Any], last_id: str | None, size: int
    ) -> Iterable[RawEvent]:
        """The page's items as events, minus those already delivered.

        First the items up to and including ``last_id`` are skipped (a server
        that ignores the cursor or treats it inclusively), then exact repeats
        of items delivered earlier in this run segment (a cursor that moved
        back); an id that comes again with other data is a new run and is
        delivered. Items go to ``emit`` as a lazy ``zip`` of columns.
        """
        sids = _string_ids(ids)
        start = _after_last(sids, last_id)
        if start:
            sids, items, kinds = sids[start:], items[start:], kinds[start:]
        keep = self._delivered.filter(sids, items, size)
        if keep is not None:
            sids = [sids[i] for i in keep]
            items = [items[i] for i in keep]
            kinds = [kinds[i] for i in keep]
        if self.options.event_field is None:
            return zip(repeat("message"), sids, items)
        types = ["message" if k is None else str(k) for k in kinds]
        return zip(types, sids, items, strict=True)


def _after_last(ids: Sequence[str | None], last_id: str | None) -> int:
    """The index just past the last item whose id is ``last_id``; 0 if none is.

    With a cursor the server has already left those items out, so ``last_id``
    is usually absent: one C-level ``in`` test (~10 ns an item) says so
    before any index is looked for.
    """
    if last_id is None or last_id not in ids:
        return 0
    return len(ids) - ids[::-1].index(last_id)


def _loads(content: bytes) -> Any:
    """The JSON body; with the bare ``NaN`` / ``Infinity`` literals Python's
    ``json.dumps`` writes read as numbers (trainers send them)."""
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        if b"NaN" not in content and b"Infinity" not in content:
            raise
        return json.loads(content)


def _string_ids(ids: list[Any]) -> list[str | None]:
    """Ids as strings, exactly: an integer id stays all its digits (never a float).

    One comprehension in the common case: ``str()`` of an int id is the
    dearest step (~70 ns); a null id shows up as "None", and only then are
    the values looked at one by one.
    """
    sids: list[str | None] = [id_ if type(id_) is str else str(id_) for id_ in ids]
    if "None" in sids and None in ids:
        sids = [None if id_ is None else sid for id_, sid in zip(ids, sids, strict=True)]
    return sids


def _general_page(
    items: list[Any], id_field: str | None, event_field: str | None
) -> tuple[list[Any], list[Any], list[Any]]:
    """``(items, ids, kinds)`` of a decoded page of any shape."""
    ids: list[Any] = []
    kinds: list[Any] = []
    for item in items:
        is_object = isinstance(item, dict)
        ids.append(item.get(id_field) if is_object and id_field is not None else None)
        kinds.append(item.get(event_field) if is_object and event_field is not None else None)
    return items, ids, kinds


def _extract_items(body: Any, path: str) -> list[Any]:
    """The list of items at ``path`` (dotted) in ``body``; a non-list is one item."""
    node = body
    if path:
        for key in path.split("."):
            if not isinstance(node, dict) or key not in node:
                shape = (
                    f"keys {sorted(node)[:8]}" if isinstance(node, dict) else type(node).__name__
                )
                raise Failed(f"items: {path!r} not found in the response (at {key!r}: {shape})")
            node = node[key]
    if node is None:
        return []
    return node if isinstance(node, list) else [node]


if TYPE_CHECKING:
    #: One GET of a poll: (url, conditional headers) -> the response, or a SessionError.
    _Fetch = Callable[[httpx.URL, list[tuple[str, bytes]]], Awaitable[HttpResponse]]


def _raw(value: str) -> bytes:
    """A validator (ETag, Last-Modified) as the bytes the server sent, to echo it exactly."""
    try:
        return value.encode("latin-1")  # how response headers were decoded
    except UnicodeEncodeError:  # httpx decoded it as UTF-8
        return value.encode("utf-8")


def _check_status(response: HttpResponse) -> None:
    """Raise unless the status is a 2xx with a body to read."""
    status = response.status
    if 200 <= status < 300:
        return
    detail = f"HTTP {status} {response.reason}".rstrip()
    if status in (408, 429) or status >= 500:
        from mux_core.http import parse_retry_after

        retry_after = parse_retry_after(response.headers.get("retry-after"))
        raise ServerUnavailable(detail, retry_after=retry_after)
    raise Failed(detail)


def _is_event_stream(response: HttpResponse) -> bool:
    content_type = response.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower() == "text/event-stream"


def _not_json(response: HttpResponse) -> str:
    content_type = response.headers.get("content-type", "no Content-Type")
    start = response.content[:60].decode("utf-8", "replace")
    return f"response is not JSON ({content_type}): {start!r}"
