"""mux_core.http: the shared client pool and header hygiene, against a real server."""

from __future__ import annotations

import pytest

from mux_core.errors import Disconnected
from mux_core.http import CLIENT_SHARDS, clean_headers, shared_client
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
