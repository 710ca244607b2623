"""The one ``httpx.AsyncClient`` per process, and HTTP helpers shared by transports.

httpx's defaults suit request/response traffic, not hundreds of open streams:
its pool allows 100 connections (the 101st stream would wait forever for a
slot) and its 5 s read timeout kills a quiet stream. So the client has no
connection cap, and no read timeout: each transport times silence itself
(SSE's ``read_timeout``) and passes its own connect timeout per request.

Every HTTP transport (the built-in sse and rest, and third parties') gets
its client with::

    client = await shared_client(session, verify=options.verify, ca_file=options.ca_file)

One pool per run, split into shards: httpcore's connection pool scans its
connections on every request, so one client holding 10,000 streams makes
connecting O(n^2) -- minutes instead of seconds (benchmarks/bench_sse_scale.py).
A source always gets the same shard (a hash of its name); shards are created
on first use and share one TLS context, so a handful of sources still costs
a handful of clients. ``verify`` and ``ca_file`` are client-wide settings
in httpx, hence separate shards for each TLS setting.

Every TLS client follows one policy (:func:`tls_context`, in ``_tls.py``):
verification on, the operating system's trust store (certifi's bundle only
where Python sees none), ``ca_file`` to trust a private CA instead, and
``verify = false`` accepted with a warning (:func:`warn_unverified`).
Options checks use :func:`tls_problem`; a failed handshake is told in
words by :func:`mux_core.errors.describe_connection_error`.

A transport that holds one long response open per source (SSE) can skip
httpx: :class:`Http11Stream` is h11 straight over a trio socket, with the
run's TLS context from :func:`shared_tls_context` -- a tenth of httpx's cost
per read and per connection. A transport that polls (REST) has
:class:`HttpClient`: the same h11 path for request/response, one kept-alive
connection across polls, half httpx's CPU per polled page. Both speak to
servers directly, so check :func:`proxy_for` first and use the httpx client
when a proxy applies.

Importing this package is cheap: a plugin's option checks (:func:`url_problem`,
:func:`headers_problem`, :func:`tls_problem`) run in ``mux check``, which should not wait for httpx,
h11 and trio. httpx is imported by the helpers that use it, and the names of
the private modules (:class:`HttpClient`, :class:`Http11Stream`, ...) are
imported on first use.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
import zlib
from collections.abc import Mapping
from importlib import import_module
from typing import TYPE_CHECKING, Any

from ..errors import (
    Disconnected,
    Failed,
    ServerUnavailable,
    SessionError,
    describe_connection_error,
)
from ._body import ProtocolError, size_text
from ._tls import (
    certificate_names,
    start_tls,
    tls_context,
    tls_problem,
    unverified_warning,
    warn_unverified,
)

if TYPE_CHECKING:
    import ssl

    import httpx

    from ..transport import Session
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
    "basic_authorization",
    "certificate_names",
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
    "start_tls",
    "tls_context",
    "tls_problem",
    "unverified_warning",
    "url_problem",
    "warn_unverified",
]


#: Where each name of a private module lives: imported (with httpx, h11 and
#: trio) when it is first asked for, then a plain attribute of this package.
_HOMES = {
    "._client": ("BodyTooLarge", "HttpClient", "HttpResponse", "ResponseTimeout"),
    "._http11": (
        "CROSS_ORIGIN_HEADERS",
        "MAX_DECODED_READ",
        "MAX_HEAD_BYTES",
        "MAX_REDIRECTS",
        "REDIRECT_STATUSES",
        "Http11Stream",
        "ResponseHead",
        "describe_protocol_error",
        "header_value",
        "origin",
        "proxy_for",
        "redirected",
    ),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def _resolve(name: str) -> Any:
    """A name of a private module, imported on first use."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if not TYPE_CHECKING:
    # Hidden from mypy, which sees the names in the TYPE_CHECKING block above.
    __getattr__ = _resolve


def client_key(verify: bool = True, ca_file: str | None = None) -> str:
    """The SharedResources key of the client with these TLS settings."""
    key = "httpx" if verify else "httpx-noverify"
    return key if ca_file is None else f"{key}-ca:{ca_file}"


#: How many clients one run's pool is split into (see the module docstring).
CLIENT_SHARDS = 1024


def make_client(*, verify: bool | ssl.SSLContext = True) -> httpx.AsyncClient:
    """A client for many long-lived streams; an async context manager.

    ``verify``: a context from :func:`tls_context` (``True`` builds the
    default one, ``False`` one that checks nothing).
    """
    import httpx

    from ._httpx import RedirectSafeClient

    if isinstance(verify, bool):
        verify = _http_context(tls_context(verify=verify))
    return RedirectSafeClient(
        verify=verify,
        limits=httpx.Limits(
            max_connections=None, max_keepalive_connections=100, keepalive_expiry=30.0
        ),
        timeout=request_timeout(10.0),
        follow_redirects=True,
    )


async def shared_client(
    session: Session, *, verify: bool = True, ca_file: str | None = None
) -> httpx.AsyncClient:
    """This source's client from the run's shared pool, created on first use.

    Raises ``Failed`` when ``ca_file`` cannot be used (see :func:`shared_tls_context`).
    """
    context = await shared_tls_context(session, verify=verify, ca_file=ca_file)
    shard = zlib.crc32(session.source.encode()) % CLIENT_SHARDS
    return await session.shared.get(
        f"{client_key(verify, ca_file)}-{shard}", functools.partial(make_client, verify=context)
    )


async def shared_tls_context(
    session: Session, *, verify: bool = True, ca_file: str | None = None
) -> ssl.SSLContext:
    """The run's one TLS client context with these settings (:func:`tls_context`,
    HTTP/1.1 by ALPN), for transports that open their own TLS connections.

    Made once per run and setting: building one reads the CA bundle. A
    ``ca_file`` that cannot be read or holds no certificate is ``Failed``
    with the reason (a config mistake: no retry can fix it).
    """
    try:
        return await session.shared.get(
            f"{client_key(verify, ca_file)}-tls", functools.partial(_tls_context, verify, ca_file)
        )
    except ValueError as exc:  # tls_context's words for a bad ca_file
        raise Failed(str(exc)) from None


def _tls_context(verify: bool, ca_file: str | None) -> contextlib.nullcontext[ssl.SSLContext]:
    return contextlib.nullcontext(_http_context(tls_context(verify=verify, ca_file=ca_file)))


def _http_context(context: ssl.SSLContext) -> ssl.SSLContext:
    # HTTP/1.1 only, which is all httpx (http2 off), _http11 and the ws handshake speak.
    context.set_alpn_protocols(["http/1.1"])
    return context


#: A URL :func:`url_problem` passes without httpx: http(s), a host of ASCII
#: letters, digits and ``-._~`` (no user info, no ``[IPv6]``), an optional
#: port of digits, then printable ASCII from the path on. httpx accepts every
#: such URL, except a dotted IPv4 address that is not one (``999.1.1.1``) and
#: an ``xn--`` host that is not valid IDNA: those two are looked at again.
_PLAIN_URL = re.compile(r"(?i:https?)://([A-Za-z0-9._~-]+)(?::[0-9]*)?(?:[/?#][ -~]*)?")
_IPV4_STYLE = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")


def url_problem(url: str) -> str:
    """Why ``url`` cannot be requested over HTTP, or "" when it can.

    For an Options ``check()``: these are config mistakes no retry can fix.
    What httpx would make of the URL decides; a plain URL (nearly every
    config's) is recognised without importing httpx, any other is parsed by
    httpx, so the verdict and its wording are httpx's either way.
    """
    if isinstance(url, str) and _is_plain_url(url):
        return ""
    return _httpx_url_problem(url)


def _is_plain_url(url: str) -> bool:
    """True when httpx parses ``url`` to an http(s) URL with a host (see _PLAIN_URL)."""
    match = _PLAIN_URL.fullmatch(url)
    if match is None or len(url) > 65536:  # httpx's limit
        return False
    host = match.group(1)
    if _IPV4_STYLE.fullmatch(host):
        # What ipaddress.IPv4Address (httpx's check) accepts: 0-255, no leading zero.
        return all(
            len(octet) <= 3 and int(octet) <= 255 and (octet == "0" or octet[0] != "0")
            for octet in host.split(".")
        )
    return not host.lower().startswith("xn--")


def _httpx_url_problem(url: str) -> str:
    import httpx

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


def basic_authorization(url: httpx.URL) -> str | None:
    """The ``Authorization`` value for credentials in ``url``
    (``http://alice:pw@host/`` -> ``Basic YWxpY2U6cHc=``), or None when it has none.

    What httpx and curl send for such a URL: the user name and password
    percent-decoded, joined by ``:``, UTF-8, base64. Send it only to the
    URL's own origin: :func:`redirected` leaves it behind on the way to
    another (it is not one of :data:`CROSS_ORIGIN_HEADERS`).
    """
    if not url.userinfo:
        return None
    import base64

    pair = f"{url.username}:{url.password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def clean_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header values without surrounding whitespace, which is not part of a value
    (RFC 9110 5.5) and which httpx refuses: ``"Bearer ${TOKEN:-}"`` with the
    variable unset must send ``Bearer``, not fail the source."""
    return {name: value.strip() for name, value in headers.items()}


def request_timeout(connect_timeout: float) -> httpx.Timeout:
    """Per-request timeouts: connect as configured, no read timeout (timed by the caller)."""
    import httpx

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
    import datetime
    import email.utils

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
    import httpx

    from ._http11 import describe_protocol_error

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
