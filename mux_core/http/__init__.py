"""The one ``httpx.AsyncClient`` per process, and HTTP helpers shared by transports.

httpx's defaults suit request/response traffic, not hundreds of open streams:
its pool allows 100 connections (the 101st stream would wait forever for a
slot) and its 5 s read timeout kills a quiet stream. So the client has no
connection cap, and no read timeout: each transport times silence itself
(SSE's ``read_timeout``) and passes its own connect timeout per request.

Every HTTP transport (the built-in sse and rest, and third parties') gets
its client with::

    client = await shared_client(session, verify=options.verify)

One pool per run, split into shards: httpcore's connection pool scans its
connections on every request, so one client holding 10,000 streams makes
connecting O(n^2) -- minutes instead of seconds (benchmarks/bench_sse_scale.py).
A source always gets the same shard (a hash of its name); shards are created
on first use and share one TLS context, so a handful of sources still costs
a handful of clients. ``verify`` is a client-wide setting in httpx, hence
separate shards for the sources that turn certificate checks off.

A transport that holds one long response open per source (SSE) can skip
httpx: :class:`Http11Stream` is h11 straight over a trio socket, with the
run's TLS context from :func:`shared_tls_context` -- a tenth of httpx's cost
per read and per connection. A transport that polls (REST) has
:class:`HttpClient`: the same h11 path for request/response, one kept-alive
connection across polls, half httpx's CPU per polled page. Both speak to
servers directly, so check :func:`proxy_for` first and use the httpx client
when a proxy applies.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import functools
import ssl
import time
import zlib
from collections.abc import Mapping

import httpx

from ..errors import (
    Disconnected,
    Failed,
    ServerUnavailable,
    SessionError,
    describe_connection_error,
)
from ..transport import Session
from ._body import ProtocolError, size_text
from ._client import (
    BodyTooLarge,
    HttpClient,
    HttpResponse,
    ResponseTimeout,
)
from ._http11 import (
    CROSS_ORIGIN_HEADERS,
    MAX_DECODED_READ,
    MAX_HEAD_BYTES,
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    Http11Stream,
    ResponseHead,
    _is_https_upgrade,
    describe_protocol_error,
    header_value,
    origin,
    proxy_for,
    redirected,
)

__all__ = [
    "CLIENT_SHARDS",
    "CROSS_ORIGIN_HEADERS",
    "MAX_DECODED_READ",
    "MAX_HEAD_BYTES",
    "MAX_REDIRECTS",
    "REDIRECT_STATUSES",
    "BodyTooLarge",
    "Http11Stream",
    "HttpClient",
    "HttpResponse",
    "ProtocolError",
    "ResponseHead",
    "ResponseTimeout",
    "clean_headers",
    "client_key",
    "describe_protocol_error",
    "header_value",
    "headers_problem",
    "make_client",
    "origin",
    "parse_retry_after",
    "proxy_for",
    "redirected",
    "request_timeout",
    "session_error",
    "shared_client",
    "shared_tls_context",
    "size_text",
    "url_problem",
]


def client_key(verify: bool = True) -> str:
    """The SharedResources key of the client with this ``verify`` setting."""
    return "httpx" if verify else "httpx-noverify"


#: How many clients one run's pool is split into (see the module docstring).
CLIENT_SHARDS = 1024


class _RedirectSafeClient(httpx.AsyncClient):
    """httpx following redirects by mux's rules (those of :func:`redirected`).

    httpx drops only ``Authorization`` and ``Cookie`` on the way to another
    origin and follows https -> http; mux sends on nothing but
    :data:`CROSS_ORIGIN_HEADERS` and refuses the downgrade. These are
    httpx's own redirect hooks (private, stable since 0.18); the proxied
    redirect tests in tests/core/test_http_hostile.py fail should they change.
    """

    def _redirect_url(self, request: httpx.Request, response: httpx.Response) -> httpx.URL:
        url = super()._redirect_url(request, response)
        if request.url.scheme == "https" and url.scheme == "http":
            raise httpx.UnsupportedProtocol(
                f"refused a redirect from https to plain http ({str(url)[:200]}): "
                "it would send the request unencrypted",
                request=request,
            )
        return url

    def _redirect_headers(
        self, request: httpx.Request, url: httpx.URL, method: str
    ) -> httpx.Headers:
        headers = super()._redirect_headers(request, url, method)
        if origin(url) == origin(request.url) or _is_https_upgrade(request.url, url):
            return headers
        kept = [(k, v) for k, v in headers.raw if k.lower().decode() in CROSS_ORIGIN_HEADERS]
        return httpx.Headers([(b"Host", url.netloc), *kept])


def make_client(*, verify: bool | ssl.SSLContext = True) -> httpx.AsyncClient:
    """A client for many long-lived streams; an async context manager."""
    return _RedirectSafeClient(
        verify=verify,
        limits=httpx.Limits(
            max_connections=None, max_keepalive_connections=100, keepalive_expiry=30.0
        ),
        timeout=request_timeout(10.0),
        follow_redirects=True,
    )


async def shared_client(session: Session, *, verify: bool = True) -> httpx.AsyncClient:
    """This source's client from the run's shared pool, created on first use."""
    context = await shared_tls_context(session, verify=verify)
    shard = zlib.crc32(session.source.encode()) % CLIENT_SHARDS
    return await session.shared.get(
        f"{client_key(verify)}-{shard}", functools.partial(make_client, verify=context)
    )


async def shared_tls_context(session: Session, *, verify: bool = True) -> ssl.SSLContext:
    """The run's one TLS client context with this ``verify`` setting (system CAs
    via httpx's defaults), for transports that open their own TLS connections."""
    return await session.shared.get(
        f"{client_key(verify)}-tls", functools.partial(_tls_context, verify)
    )


def _tls_context(verify: bool) -> contextlib.nullcontext[ssl.SSLContext]:
    # Made once per run: building a context loads the CA bundle (milliseconds).
    # HTTP/1.1 only, which is all httpx (http2 off) and mux_sse speak.
    context = httpx.create_ssl_context(verify=verify)
    context.set_alpn_protocols(["http/1.1"])
    return contextlib.nullcontext(context)


def url_problem(url: str) -> str:
    """Why ``url`` cannot be requested over HTTP, or "" when it can.

    For an Options ``check()``: these are config mistakes no retry can fix.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        return f"url: invalid URL {url!r}: {exc}"
    if parsed.scheme not in ("http", "https"):
        return f"url: {url!r} must start with http:// or https://"
    if not parsed.host:
        return f"url: {url!r} has no host"
    return ""


def headers_problem(headers: Mapping[str, str]) -> str:
    """Why these request headers cannot be sent, or "" when they can."""
    for name, value in headers.items():
        if not (name and name.isascii() and name.isprintable()) or set(name) & set(": "):
            return f"headers: {name!r} is not a valid HTTP header name"
        if not (value.isascii() and value.isprintable()):
            return f"headers.{name}: the value must be printable ASCII"
    return ""


def clean_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header values without surrounding whitespace, which is not part of a value
    (RFC 9110 5.5) and which httpx refuses: ``"Bearer ${TOKEN:-}"`` with the
    variable unset must send ``Bearer``, not fail the source."""
    return {name: value.strip() for name, value in headers.items()}


def request_timeout(connect_timeout: float) -> httpx.Timeout:
    """Per-request timeouts: connect as configured, no read timeout (timed by the caller)."""
    return httpx.Timeout(
        connect=connect_timeout, read=None, write=connect_timeout, pool=connect_timeout
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delay-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": GMT all the same
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def session_error(exc: httpx.HTTPError, *, connected: bool = False) -> SessionError:
    """What an httpx error means for a session, with a detail a user reads.

    A request that cannot even be sent (bad scheme, redirect loop, an illegal
    header) is ``Failed``; anything else -- refused, reset, timed out, DNS --
    is worth retrying: ``Disconnected`` once the stream was open, else
    ``ServerUnavailable``.
    """
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.TooManyRedirects):
        return Failed(str(exc) or type(exc).__name__)
    if isinstance(exc, httpx.LocalProtocolError):
        return Failed("could not send the request: a header is not valid HTTP")
    detail = describe_connection_error(exc)
    if detail is None:
        if isinstance(exc, httpx.ConnectTimeout):
            detail = "connect timed out"
        elif isinstance(exc, httpx.TimeoutException):
            detail = f"timed out ({type(exc).__name__})"
        elif isinstance(exc, httpx.RemoteProtocolError):
            detail = describe_protocol_error(exc)
        elif isinstance(exc, httpx.DecodingError):
            detail = "the server sent an unreadable compressed body"
        else:
            detail = str(exc) or type(exc).__name__
    if connected:
        return Disconnected(f"connection lost: {detail}")
    return ServerUnavailable(detail)
