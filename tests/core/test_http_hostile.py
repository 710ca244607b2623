"""Hostile HTTP servers against the sse and rest transports (issue 10).

Each case is a raw server (mux_core.testing.serve_hostile) that misbehaves
on its first connection and behaves on the next ones. Every case asserts:

* bounded memory: the peak RSS growth of the test process stays far below
  the issue's ~300 MB (RSS_BUDGET, 100 MiB);
* a readable detail: a short sentence, never h11's or a codec's wording;
* the source state: retried (server_unavailable / disconnected), never
  terminal;
* that the events after the bad part still arrive: on the next connection,
  or on the same one where the stream allows it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mux_core.records import State
from mux_core.retry import RetryPolicy
from mux_core.testing import (
    Flood,
    Hangup,
    Pause,
    Plan,
    Send,
    chunk,
    compressed,
    http_head,
    run_one_session,
    serve_hostile,
    sse_head,
)
from mux_rest import RestOptions, RestTransport
from mux_sse import SseOptions, SseTransport
from tests.helpers.hostile import (
    GOOD_REST,
    GOOD_SSE,
    HUGE_ID,
    JSON,
    REST_CASES,
    SSE_CASES,
    SSE_FIELD_CASES,
    PeakRss,
    assert_readable,
    assert_still_retrying,
    both,
    event_data,
    events,
    retried_with,
    statuses,
    watch,
)

#: Fast, with a floor for server hints a test can see.
FAST_FLOOR = RetryPolicy(initial_delay=0.01, min_delay=0.05, max_delay=1.0, jitter=0.0)


def sse(url: str, **options: Any) -> SseTransport:
    return SseTransport(SseOptions(url=url, read_timeout=5.0, **options))


# -- sse: one bad connection, then a good one -----------------------------------------


@pytest.mark.parametrize("case", SSE_CASES, ids=list(SSE_CASES))
async def test_sse_survives(case: str) -> None:
    bad, detail = SSE_CASES[case]
    with PeakRss() as rss:
        async with serve_hostile(bad, GOOD_SSE) as server:
            records = await watch(
                sse(server.url("/events")), both(retried_with(detail), event_data("after"))
            )
    rss.check()
    assert_still_retrying(records)
    assert server.connections >= 2


async def test_sse_chunked_garbage_keeps_the_events_before_it() -> None:
    """The good events of the read that holds the garbage are delivered first."""
    bad: Plan = [
        Send(sse_head(chunked=True) + chunk(b"data: 1\n\ndata: 2\n\n") + b"zz\r\nmore\r\n"),
        Pause(),
    ]
    async with serve_hostile(bad, GOOD_SSE) as server:
        records = await watch(
            sse(server.url("/events")),
            both(retried_with("malformed chunked body"), event_data("after")),
        )
    assert [e.data for e in events(records)] == [1, 2, "after"]
    assert_still_retrying(records)
    lost = next(s for s in statuses(records) if s.state is State.DISCONNECTED)
    assert lost.detail == (
        "connection lost: the server sent a malformed chunked body"
        " (a chunk size that is not a hex number)"
    )


async def test_sse_an_endless_line_is_skipped_and_the_stream_goes_on() -> None:
    """200 MB without a line end, then events: on the same connection."""
    plan: Plan = [
        Send(sse_head(chunked=False)),
        Flood(b"x" * 65536, times=3200),
        Send(b"\n\ndata: after\n\n"),
        Pause(),
    ]
    with PeakRss() as rss:
        async with serve_hostile(plan) as server:
            records = await watch(
                sse(server.url("/events"), max_event_bytes=1024 * 1024), event_data("after")
            )
    rss.check()
    assert server.connections == 1
    assert_still_retrying(records)


async def test_sse_a_gzip_bomb_with_events_after_it_on_the_same_stream() -> None:
    payload = compressed(b": " + b"x" * (64 * 1024 * 1024) + b"\n\ndata: after\n\n")
    plan: Plan = [Send(sse_head(("Content-Encoding", "gzip"))), Send(payload), Pause()]
    with PeakRss() as rss:
        async with serve_hostile(plan) as server:
            records = await watch(sse(server.url("/events")), event_data("after"))
    rss.check()
    assert server.connections == 1
    assert_still_retrying(records)


# -- sse: ids a server chose come back as Last-Event-ID -------------------------------


@pytest.mark.parametrize(
    ("id_line", "sent"),
    [
        ("café 🚀".encode(), "café 🚀".encode()),  # UTF-8, as a browser sends it
        (b"7 ", b"7"),  # what a server reads from a browser: no space to escape
        (b"  spaced\t", b"spaced"),
        (b"a b", b"a b"),
        (b"a\x01b\x7fc", b"a%01b%7Fc"),  # control characters
        (b"100%", b"100%"),  # nothing else is touched
        (b"x" * 1024, b"x" * 1024),  # as long as max_id_bytes allows
    ],
    ids=["utf-8", "trailing space", "spaces around", "inner space", "controls", "percent", "long"],
)
async def test_sse_any_id_comes_back_as_last_event_id(id_line: bytes, sent: bytes) -> None:
    first: Plan = [Send(sse_head()), Send(b"id: " + id_line + b"\ndata: 1\n\n"), Hangup()]
    async with serve_hostile(first, GOOD_SSE) as server:
        records = await watch(sse(server.url("/events")), event_data("after"))
    assert b"\r\nLast-Event-ID: " + sent + b"\r\n" in server.requests[1].raw + b"\r\n"
    assert b"last-event-id" not in server.requests[0].headers
    assert_still_retrying(records)
    assert events(records)[0].id == id_line.decode()


# -- sse: fields that outlive their event (issue 21) ---------------------------------


def _datas(records: list[Any]) -> list[Any]:
    return [e.data for e in events(records)]


async def test_sse_a_huge_id_is_ignored_and_the_events_keep_the_last_good_one() -> None:
    case = SSE_FIELD_CASES["1 MiB id then tiny events"]
    async with serve_hostile(case, GOOD_SSE) as server:
        records = await watch(sse(server.url("/events")), event_data("after"))
    got = events(records)
    assert [e.data for e in got[:2]] == ["first", "tiny"] and "last" in _datas(records)
    assert len(got) == 5000 + 3
    assert {e.id for e in got if e.data != "after"} == {"1"}  # the last good id, not 1 MiB
    assert b"last-event-id: 1" in server.requests[1].raw.lower()
    assert len(server.requests[1].raw) < 4096
    notices = [s.detail for s in statuses(records) if "max_id_bytes" in s.detail]
    assert notices == [
        "ignored an id longer than 1024 bytes (max_id_bytes): events keep the last id"
    ]
    assert_still_retrying(records)


async def test_sse_max_id_bytes_sets_the_bound() -> None:
    plan: Plan = [Send(sse_head()), Send(b"id: 12345\ndata: a\n\nid: 123456\ndata: b\n\n")]
    async with serve_hostile(plan) as server:
        records = await watch(sse(server.url("/events"), max_id_bytes=5), event_data("b"))
    assert [(e.id, e.data) for e in events(records)] == [("12345", "a"), ("12345", "b")]
    assert any("longer than 5 bytes" in s.detail for s in statuses(records))


async def test_sse_a_retry_of_5000_digits_is_ignored_not_fatal() -> None:
    case = SSE_FIELD_CASES["retry with 5000 digits"]
    async with serve_hostile(case, GOOD_SSE) as server:
        records = await watch(sse(server.url("/events")), event_data("after"))
    assert _datas(records)[:2] == ["first", "last"]
    assert_still_retrying(records)
    lost = next(s for s in statuses(records) if s.state is State.DISCONNECTED)
    assert lost.retry_in == 0.01  # the policy's delay: the server's hint was ignored
    assert server.connections >= 2


async def test_sse_an_id_with_a_trailing_space_is_resumed_as_a_browser_would() -> None:
    case = SSE_FIELD_CASES["id with a trailing space"]
    async with serve_hostile(case, GOOD_SSE) as server:
        records = await watch(sse(server.url("/events")), event_data("after"))
    assert [e.id for e in events(records)][:2] == ["42 ", "42 "]  # the data as sent
    assert b"\r\nLast-Event-ID: 42\r\n" in server.requests[1].raw + b"\r\n"
    assert_still_retrying(records)


def test_the_huge_id_case_is_bigger_than_the_default_bound() -> None:
    assert len(HUGE_ID) > SseOptions(url="http://x").max_id_bytes


# -- sse: zero retry hints -------------------------------------------------------------


async def test_sse_retry_zero_is_floored() -> None:
    plan: Plan = [Send(sse_head()), Send(b"retry: 0\ndata: x\n\n"), Hangup()]
    policy = FAST_FLOOR
    async with serve_hostile(plan) as server:
        records = await watch(
            sse(server.url("/events")),
            lambda r: sum(s.state is State.DISCONNECTED for s in statuses(r)) >= 3,
            policy=policy,
        )
    waits = [s.retry_in for s in statuses(records) if s.retry_in is not None]
    assert waits and all(w >= policy.min_delay for w in waits)
    assert server.connections <= 4


async def test_sse_retry_after_zero_backs_off() -> None:
    plan: Plan = [Send(http_head(503, {"Retry-After": "0", "Content-Length": "0"})), Hangup()]
    async with serve_hostile(plan) as server:
        records = await watch(
            sse(server.url("/events")),
            lambda r: sum(s.state is State.SERVER_UNAVAILABLE for s in statuses(r)) >= 4,
            policy=RetryPolicy(initial_delay=0.05, min_delay=0.05, jitter=0.0),
        )
    waits = [s.retry_in for s in statuses(records) if s.retry_in is not None]
    assert waits[:4] == [0.05, 0.1, 0.2, 0.4]  # grows although the server says 0
    assert_still_retrying(records)


# -- redirects ----------------------------------------------------------------------


async def test_a_cross_origin_redirect_sends_no_configured_header_and_no_last_event_id() -> None:
    async with serve_hostile(GOOD_SSE) as target:
        elsewhere = target.url("/final").replace("127.0.0.1", "localhost")
        hop: Plan = [Send(http_head(302, {"Location": elsewhere, "Content-Length": "0"}))]
        first: Plan = [Send(sse_head()), Send(b"id: 5\ndata: 1\n\n"), Hangup()]
        async with serve_hostile(first, hop) as origin:
            headers = {"X-Api-Key": "secret", "Authorization": "Bearer t", "Accept-Language": "de"}
            records = await watch(sse(origin.url("/events"), headers=headers), event_data("after"))
    assert origin.requests[1].headers[b"x-api-key"] == b"secret"  # same origin: all of them
    assert origin.requests[1].headers[b"last-event-id"] == b"5"
    sent = target.requests[0].headers
    for name in (b"x-api-key", b"authorization", b"last-event-id", b"cookie"):
        assert name not in sent
    assert sent[b"accept"] == b"text/event-stream"
    assert sent[b"accept-language"] == b"de"
    assert_still_retrying(records)


@pytest.mark.usefixtures("trust_ca")
async def test_an_https_to_http_redirect_is_refused(tls_server_context: Any) -> None:
    async with serve_hostile(GOOD_SSE) as plain:
        to_http: Plan = [
            Send(http_head(307, {"Location": plain.url("/events"), "Content-Length": "0"}))
        ]
        async with serve_hostile(to_http, tls=tls_server_context) as secure:
            result = await run_one_session(sse(secure.url("/events")))
    assert result.error is not None and type(result.error).__name__ == "Failed"
    assert result.error.detail.startswith("refused a redirect from https to plain http")
    assert plain.connections == 0
    assert_readable([result.error.detail])


# -- rest ----------------------------------------------------------------------------


def rest(url: str, **options: Any) -> RestTransport:
    return RestTransport(RestOptions(url=url, interval=0.01, timeout=5.0, **options))


def page_event(records: list[Any]) -> bool:
    return any(e.data == {"id": 9, "v": "after"} for e in events(records))


@pytest.mark.parametrize("case", REST_CASES, ids=list(REST_CASES))
async def test_rest_survives(case: str) -> None:
    bad, detail, options = REST_CASES[case]
    with PeakRss() as rss:
        async with serve_hostile(bad, GOOD_REST) as server:
            records = await watch(
                rest(server.url("/metrics"), **options), both(retried_with(detail), page_event)
            )
    rss.check()
    assert_still_retrying(records)


async def test_rest_a_304_may_name_any_content_length() -> None:
    """A 304's Content-Length is the unchanged page's: no body follows it."""
    not_modified: Plan = [Send(http_head(304, {"Content-Length": str(1 << 40)})), Hangup()]
    async with serve_hostile(not_modified, GOOD_REST) as server:
        records = await watch(rest(server.url("/metrics"), max_page_bytes=1024), page_event)
    assert not [s for s in statuses(records) if s.state is State.SERVER_UNAVAILABLE]
    assert_still_retrying(records)


async def test_rest_a_non_ascii_etag_is_echoed_as_sent() -> None:
    etag = b'"caf\xc3\xa9 \xff"'
    first: Plan = [
        Send(
            http_head(
                200,
                [
                    JSON,
                    ("ETag", etag),
                    ("Last-Modified", b"Mon, 1 Jan 2024 \xe9"),
                    ("Content-Length", "2"),
                ],
            )
            + b"[]"
        ),
        Hangup(),
    ]
    async with serve_hostile(first, GOOD_REST) as server:
        records = await watch(rest(server.url("/metrics")), page_event)
    assert server.requests[1].headers[b"if-none-match"] == etag
    assert server.requests[1].headers[b"if-modified-since"] == b"Mon, 1 Jan 2024 \xe9"
    assert_still_retrying(records)


async def test_rest_a_cross_origin_redirect_sends_no_configured_header() -> None:
    async with serve_hostile(GOOD_REST) as target:
        elsewhere = target.url("/final").replace("127.0.0.1", "localhost")
        hop: Plan = [Send(http_head(301, {"Location": elsewhere, "Content-Length": "0"}))]
        async with serve_hostile(hop) as origin:
            records = await watch(
                rest(origin.url("/metrics"), headers={"X-Api-Key": "secret"}), page_event
            )
    assert origin.requests[0].headers[b"x-api-key"] == b"secret"
    assert b"x-api-key" not in target.requests[0].headers
    assert_still_retrying(records)


# -- through a proxy (httpx): the same rules ----------------------------------------


async def test_through_a_proxy_ids_are_sent_and_redirects_keep_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hostile server plays the proxy: it answers the absolute-form
    requests itself, so the stream's hosts need not exist."""
    first: Plan = [Send(sse_head()), Send("id: café \ndata: 1\n\n".encode()), Hangup()]
    hop: Plan = [
        Send(http_head(302, {"Location": "http://elsewhere.invalid/x", "Content-Length": "0"}))
    ]
    async with serve_hostile(first, hop, GOOD_SSE) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        transport = sse("http://trainer.invalid:8888/events", headers={"X-Api-Key": "secret"})
        records = await watch(transport, event_data("after"))
    resumed, redirected = proxy.requests[1], proxy.requests[2]
    assert resumed.line == "GET http://trainer.invalid:8888/events HTTP/1.1"
    assert b"\r\nLast-Event-ID: " + "café".encode() + b"\r\n" in resumed.raw + b"\r\n"
    assert resumed.headers[b"x-api-key"] == b"secret"
    assert redirected.line == "GET http://elsewhere.invalid/x HTTP/1.1"
    assert b"x-api-key" not in redirected.headers
    assert b"last-event-id" not in redirected.headers
    assert_still_retrying(records)


def test_the_shared_httpx_client_refuses_an_https_to_http_redirect() -> None:
    from mux_core.http import make_client

    client = make_client()
    request = httpx.Request("GET", "https://trainer.example/events")
    response = httpx.Response(302, headers={"Location": "http://trainer.example/"}, request=request)
    with pytest.raises(httpx.UnsupportedProtocol, match="refused a redirect from https"):
        client._redirect_url(request, response)
    upgrade = httpx.Request("GET", "http://trainer.example/events", headers={"X-Api-Key": "k"})
    kept = client._redirect_headers(upgrade, httpx.URL("https://trainer.example/e"), "GET")
    assert kept["x-api-key"] == "k"  # http -> https on the same host: the same server
    moved = client._redirect_headers(upgrade, httpx.URL("https://other.example/e"), "GET")
    assert "x-api-key" not in moved and moved["host"] == "other.example"
