"""The one ``httpx.AsyncClient`` per process, and HTTP helpers shared by transports.

httpx's defaults suit request/response traffic, not hundreds of open streams:
its pool allows 100 connections (the 101st stream would wait forever for a
slot) and its 5 s read timeout kills a quiet stream. So the client has no
connection cap, and no read timeout: each transport times silence itself
(SSE's ``read_timeout``) and passes its own connect timeout per request.

Every HTTP transport (the built-in sse and rest, and third parties') gets
the client with::

    client = await shared_client(session, verify=options.verify)

so all HTTP sources of a run share one pool. ``verify`` is a client-wide setting
in httpx, hence a second client (key ``"httpx-noverify"``) for the sources
that turn certificate checks off.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import time

import httpx

from .session import Session

__all__ = ["client_key", "make_client", "parse_retry_after", "request_timeout", "shared_client"]


def client_key(verify: bool = True) -> str:
    """The SharedResources key of the client with this ``verify`` setting."""
    return "httpx" if verify else "httpx-noverify"


def make_client(*, verify: bool = True) -> httpx.AsyncClient:
    """A client for many long-lived streams; an async context manager."""
    return httpx.AsyncClient(
        verify=verify,
        limits=httpx.Limits(
            max_connections=None, max_keepalive_connections=100, keepalive_expiry=30.0
        ),
        timeout=request_timeout(10.0),
        follow_redirects=True,
    )


async def shared_client(session: Session, *, verify: bool = True) -> httpx.AsyncClient:
    """The run's one client (per ``verify`` setting), created on first use."""
    return await session.shared.get(
        client_key(verify), functools.partial(make_client, verify=verify)
    )


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
