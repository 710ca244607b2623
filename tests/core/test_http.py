"""mux_core.http: the shared client pool and header hygiene, against a real server."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mux_core.errors import Disconnected
from mux_core.http import CLIENT_SHARDS, clean_headers, shared_client, url_problem
from mux_core.records import State, Status
from mux_core.testing import Drop, run_one_session, serve_sse
from mux_core.transport import ResumeState, Session, SharedResources
from mux_rest import RestOptions, RestTransport
from mux_sse import SseOptions, SseTransport


def test_clean_headers_strips_surrounding_whitespace() -> None:
    assert clean_headers({"Authorization": "Bearer ", "X": " a b "}) == {
        "Authorization": "Bearer",
        "X": "a b",
    }


@pytest.mark.parametrize("transport", ["sse", "rest"])
async def test_an_empty_token_still_connects(transport: str) -> None:
    """``Bearer ${TRAIN_TOKEN:-}`` with the variable unset is "Bearer ": httpx
    refuses the trailing space, which used to fail the source."""
    headers = {"Authorization": "Bearer "}
    async with serve_sse(path="/p") as server:
        server.script(Drop(after=0))
        if transport == "sse":
            result = await run_one_session(
                SseTransport(SseOptions(url=server.url, headers=headers))
            )
            assert isinstance(result.error, Disconnected)
            states = [r.state for r in result.records if isinstance(r, Status)]
            assert states == [State.CONNECTED]
        else:
            options = RestOptions(url=server.url, headers=headers, interval=0.01)
            result = await run_one_session(RestTransport(options))
            assert result.error is not None
        assert server.requests[0].headers["authorization"] == "Bearer"


def _session(shared: SharedResources, source: str) -> Session:
    async def send(batch: object) -> None:
        pass

    return Session(
        source=source,
        transport="sse",
        resume=ResumeState(),
        connect_timeout=1.0,
        shared=shared,
        send=send,
        attempt=1,
    )


async def test_a_source_always_gets_the_same_client_and_sources_spread_out() -> None:
    shared = SharedResources()
    try:
        first = await shared_client(_session(shared, "a"))
        assert await shared_client(_session(shared, "a")) is first
        clients = {id(await shared_client(_session(shared, f"s{i}"))) for i in range(200)}
        assert 150 < len(clients) <= min(200, CLIENT_SHARDS)
        assert await shared_client(_session(shared, "a"), verify=False) is not first
    finally:
        await shared.aclose()


def _httpx_url_problem(url: str) -> str:
    """url_problem as it was before it learned to skip httpx: the reference."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        return f"url: invalid URL {url!r}: {exc}"
    if parsed.scheme not in ("http", "https"):
        return f"url: {url!r} must start with http:// or https://"
    if not parsed.host:
        return f"url: {url!r} has no host"
    return ""


def _outcome(check: Callable[[str], str], url: str) -> object:
    """The verdict, or the exception raised (httpx's ``URL.host`` raises on a bad xn-- host)."""
    try:
        return check(url)
    except Exception as exc:
        return (type(exc), str(exc))


def _agrees(url: str) -> bool:
    return _outcome(url_problem, url) == _outcome(_httpx_url_problem, url)


_SCHEMES = ("http://", "https://", "HtTpS://", "ftp://", "ws://", "http:", "http:/", "", "//")
_USERS = ("", "user:pw@", "@")
_HOSTS = (
    "example.com",
    "EXAMPLE.com",
    "127.0.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "256.1.1.1",
    "999.1.1.1",
    "01.2.3.4",
    "0001.2.3.4",
    "1.2.3",
    "1.2.3.4.5",
    "[::1]",
    "[zz]",
    "xn--bcher-kva.de",
    "XN--bcher-kva.de",
    "xn--zz",
    "bücher.de",
    "h_o~st-1",
    "a b",
    "",
)
_PORTS = ("", ":", ":8080", ":080", ":99999", ":-1", ":+1", ":x", ": 1", ":\u0663")
_RESTS = ("", "/", "/a b?c=d#e", "?q", "#f", "/%zz", "/ü", "/a\tb", "/\x7f", "path")


def test_url_problem_says_what_httpx_says_of_every_url() -> None:
    """A plain URL passes without httpx; every verdict is still httpx's, word for word."""
    for parts in itertools.product(_SCHEMES, _USERS, _HOSTS, _PORTS, _RESTS):
        url = "".join(parts)
        assert _agrees(url), url
    assert _agrees("http://" + "a" * 70000)


@given(st.text(alphabet="htps:/[]@.%x-01239_~ \t?#ü", max_size=40))
def test_url_problem_agrees_with_httpx_on_any_text(url: str) -> None:
    assert _agrees(url)


@given(
    st.from_regex(r"(?i:https?)://[a-z0-9.-]{1,20}(:[0-9]{0,6})?(/[ -~]{0,20})?", fullmatch=True)
)
def test_url_problem_agrees_with_httpx_on_plain_urls(url: str) -> None:
    assert _agrees(url)


def test_proxy_for_follows_the_environment_as_it_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """proxy_for works urllib's answer out again only when a variable it reads
    changed: each change is still seen (set, changed, NO_PROXY, removed)."""
    from mux_core.http import proxy_for

    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    url = httpx.URL("http://10.1.2.3:8000/events")
    assert proxy_for(url) is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy-a:3128")
    assert proxy_for(url) == "http://proxy-a:3128"
    monkeypatch.setenv("HTTP_PROXY", "http://proxy-b:3128")
    assert proxy_for(url) == "http://proxy-b:3128"
    monkeypatch.setenv("NO_PROXY", "10.1.2.3")
    assert proxy_for(url) is None
    assert proxy_for(httpx.URL("http://10.9.9.9/")) == "http://proxy-b:3128"
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.setenv("http_proxy", "http://lower:3128")  # lowercase wins, as urllib's
    assert proxy_for(url) == "http://lower:3128"
    monkeypatch.delenv("http_proxy")
    monkeypatch.delenv("HTTP_PROXY")
    assert proxy_for(url) is None
