"""Credentials in an SSE URL (``http://alice:pw@host/...``) are sent as Basic auth,
as the rest transport, httpx and curl send them -- and only to the URL's origin.

Servers are mux_core.testing's serve_sse, which records every request's headers.
"""

from __future__ import annotations

import base64

import pytest

from mux_core.testing import Respond, run_one_session, serve_sse
from mux_sse import SseOptions, SseTransport


def basic(pair: str) -> str:
    return "Basic " + base64.b64encode(pair.encode()).decode()


def with_credentials(url: str, userinfo: str) -> str:
    return url.replace("http://", f"http://{userinfo}@", 1)


async def test_url_credentials_are_sent_as_basic_auth() -> None:
    async with serve_sse() as server:
        server.publish_nowait("hello")
        url = with_credentials(server.url, "alice:p%40ss%20w%C3%B6rd")
        result = await run_one_session(SseTransport(SseOptions(url=url)), until=1)
    assert [e.data for e in result.events] == ["hello"]
    assert server.requests[0].headers["authorization"] == basic("alice:p@ss wörd")
    assert server.requests[0].target == "/events"  # the credentials are not in the request line


async def test_a_user_without_a_password_is_sent_too() -> None:
    async with serve_sse() as server:
        server.publish_nowait("hello")
        url = with_credentials(server.url, "alice")
        await run_one_session(SseTransport(SseOptions(url=url)), until=1)
    assert server.requests[0].headers["authorization"] == basic("alice:")


async def test_a_configured_authorization_header_wins_over_the_url() -> None:
    async with serve_sse() as server:
        server.publish_nowait("hello")
        options = SseOptions(
            url=with_credentials(server.url, "alice:pw"), headers={"Authorization": "Bearer t"}
        )
        await run_one_session(SseTransport(options), until=1)
    assert server.requests[0].headers["authorization"] == "Bearer t"


async def test_a_url_without_credentials_sends_no_authorization() -> None:
    async with serve_sse() as server:
        server.publish_nowait("hello")
        await run_one_session(SseTransport(SseOptions(url=server.url)), until=1)
    assert "authorization" not in server.requests[0].headers


async def test_the_credentials_follow_a_redirect_within_the_origin_only() -> None:
    async with serve_sse() as elsewhere, serve_sse() as origin:
        elsewhere.publish_nowait("moved")
        other_origin = elsewhere.url.replace("127.0.0.1", "localhost")
        origin.script(
            Respond(307, {"Location": "/events?hop=1"}),  # same origin: credentials kept
            Respond(302, {"Location": other_origin}),  # another origin: left behind
        )
        url = with_credentials(origin.url, "alice:pw")
        result = await run_one_session(SseTransport(SseOptions(url=url)), until=1)
    assert [e.data for e in result.events] == ["moved"]
    assert [r.target for r in origin.requests] == ["/events", "/events?hop=1"]
    assert all(r.headers["authorization"] == basic("alice:pw") for r in origin.requests)
    assert "authorization" not in elsewhere.requests[0].headers
    assert elsewhere.requests[0].headers["accept"] == "text/event-stream"


async def test_through_a_proxy_the_credentials_go_to_the_origin_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """serve_sse plays the proxy (it answers absolute-form requests itself); the
    shared httpx client sends the credentials, and not past a cross-origin redirect."""
    async with serve_sse() as proxy:
        proxy.publish_nowait("via proxy")
        monkeypatch.setenv("HTTP_PROXY", proxy.url.removesuffix("/events"))
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        proxy.script(Respond(302, {"Location": "http://elsewhere.invalid/events"}))
        url = "http://alice:pw@trainer.invalid:8888/events"
        result = await run_one_session(SseTransport(SseOptions(url=url)), until=1)
    assert [e.data for e in result.events] == ["via proxy"]
    first, moved = proxy.requests
    assert first.target == "http://trainer.invalid:8888/events"
    assert first.headers["authorization"] == basic("alice:pw")
    assert moved.target == "http://elsewhere.invalid/events"
    assert "authorization" not in moved.headers
