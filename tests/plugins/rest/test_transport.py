"""The ``rest`` transport, one session at a time, against the fake REST server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import attrs
import pytest
import trio

from mux_core.errors import Failed, ServerUnavailable
from mux_core.payload import decode_payload
from mux_core.records import (
    Event,
    Record,
    State,
    Status,
    encode_jsonl,
)
from mux_core.testing._http_servers import (
    FakeRestServer,
    Raw,
    Respond,
    Stall,
    serve_rest,
)
from mux_core.transport import ResumeState, Session, SharedResources
from mux_rest import RestOptions, RestTransport, mux_register_transports
from mux_rest.transport import _general_page

DEADLINE = 5.0


class Collector:
    """The ``send`` callback of a Session: keeps every batch, wakes waiters."""

    def __init__(self) -> None:
        self.batches: list[list[Record]] = []
        self._changed = trio.Event()

    async def send(self, batch: Sequence[Record]) -> None:
        self.batches.append(list(batch))
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    @property
    def events(self) -> list[Event]:
        return [r for batch in self.batches for r in batch if isinstance(r, Event)]

    @property
    def event_batches(self) -> list[list[Event]]:
        return [
            [r for r in b if isinstance(r, Event)] for b in self.batches if isinstance(b[0], Event)
        ]

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()


@pytest.fixture
async def shared() -> AsyncIterator[SharedResources]:
    resources = SharedResources()
    try:
        yield resources
    finally:
        await resources.aclose()


def _session(collector: Collector, shared: SharedResources, resume: ResumeState) -> Session:
    return Session(
        source="s",
        transport="rest",
        resume=resume,
        connect_timeout=5,
        shared=shared,
        send=collector.send,
        attempt=1,
    )


def _transport(server: FakeRestServer, **options: Any) -> RestTransport:
    options = {"items": "items", "interval": 0.01, "timeout": 2.0, **options}
    return RestTransport(RestOptions(url=server.url, **options))


async def _collect_until(
    transport: RestTransport, session: Session, condition: Callable[[], bool], collector: Collector
) -> None:
    """Run the session until ``condition`` holds, then cancel it."""
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.run_session, session)
            await collector.wait_for(condition)
            nursery.cancel_scope.cancel()


async def _run_to_error(transport: RestTransport, session: Session) -> Exception:
    with trio.fail_after(DEADLINE):
        try:
            await transport.run_session(session)
        except (ServerUnavailable, Failed) as exc:
            return exc
    raise AssertionError("run_session returned")


async def test_each_poll_is_one_batch_and_the_cursor_follows_last_id(
    shared: SharedResources,
) -> None:
    got = Collector()
    resume = ResumeState()
    async with serve_rest() as server:
        for step in range(3):
            await server.publish({"step": step}, event="metric")
        transport = _transport(server, event_field="event", cursor_param="after")
        session = _session(got, shared, resume)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.run_session, session)
            with trio.fail_after(DEADLINE):
                await got.wait_for(lambda: len(got.events) == 3)
                # Both at once (no checkpoint between): one poll sees both.
                server.publish_nowait({"step": 3})
                server.publish_nowait({"step": 4}, event="done")
                await got.wait_for(lambda: len(got.events) == 5)
                requests_before = len(server.requests)
                await server.wait_for_connections(requests_before + 2)
            nursery.cancel_scope.cancel()
    first = got.batches[0][0]
    assert isinstance(first, Status) and first.state is State.CONNECTED
    assert [len(b) for b in got.event_batches] == [3, 2]
    assert [(e.event, e.id, e.data) for e in got.events] == [
        ("metric", "1", {"id": "1", "event": "metric", "step": 0}),
        ("metric", "2", {"id": "2", "event": "metric", "step": 1}),
        ("metric", "3", {"id": "3", "event": "metric", "step": 2}),
        ("message", "4", {"id": "4", "event": None, "step": 3}),
        ("done", "5", {"id": "5", "event": "done", "step": 4}),
    ]
    assert [e.seq for e in got.events] == [1, 2, 3, 4, 5]
    assert resume.last_id == "5"
    assert server.requests[0].query == {}
    assert server.requests[-1].query == {"after": "5"}


async def test_the_first_poll_resumes_from_resume_last_id(shared: SharedResources) -> None:
    got = Collector()
    async with serve_rest() as server:
        for step in range(4):
            await server.publish({"step": step})
        session = _session(got, shared, ResumeState(last_id="2"))
        transport = _transport(server, cursor_param="after")
        await _collect_until(transport, session, lambda: len(got.events) == 2, got)
    assert server.requests[0].query == {"after": "2"}
    assert [e.id for e in got.events] == ["3", "4"]


async def test_etag_is_sent_and_304_means_nothing_new(shared: SharedResources) -> None:
    got = Collector()
    async with serve_rest() as server:
        await server.publish({"v": 1})
        transport = _transport(server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.run_session, _session(got, shared, ResumeState()))
            with trio.fail_after(DEADLINE):
                await server.wait_for_connections(4)
                await server.publish({"v": 2})
                await got.wait_for(lambda: len(got.events) == 2)
            nursery.cancel_scope.cancel()
    etags = [r.headers.get("if-none-match") for r in server.requests]
    assert etags[0] is None
    assert etags[1] == etags[2] == etags[3] == '"0-1"'
    # The page changed, so the server answered 200 with both items: the one
    # already seen is skipped by id, the new one delivered once.
    assert [e.id for e in got.events] == ["1", "2"]
    assert [len(b) for b in got.event_batches] == [1, 1]


async def test_without_cursor_whole_pages_are_deduplicated(shared: SharedResources) -> None:
    got = Collector()
    async with serve_rest() as server:
        for i in range(3):
            await server.publish({"i": i})
        transport = _transport(server)
        session = _session(got, shared, ResumeState())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.run_session, session)
            with trio.fail_after(DEADLINE):
                await got.wait_for(lambda: len(got.events) == 3)
                for i in range(3, 5):
                    await server.publish({"i": i})
                await got.wait_for(lambda: len(got.events) >= 5)
                await server.wait_for_connections(len(server.requests) + 2)
            nursery.cancel_scope.cancel()
    assert all("after" not in r.query for r in server.requests)
    assert [e.data["i"] for e in got.events] == [0, 1, 2, 3, 4]


async def test_503_with_retry_after_is_server_unavailable(shared: SharedResources) -> None:
    got = Collector()
    async with serve_rest() as server:
        server.script(Respond(503, {"Retry-After": "2"}))
        error = await _run_to_error(_transport(server), _session(got, shared, ResumeState()))
    assert isinstance(error, ServerUnavailable)
    assert error.retry_after == 2.0
    assert "503" in error.detail
    assert got.batches == []


async def test_429_and_500_are_retryable(shared: SharedResources) -> None:
    async with serve_rest() as server:
        server.script(Respond(429), Respond(500))
        for _ in range(2):
            error = await _run_to_error(
                _transport(server), _session(Collector(), shared, ResumeState())
            )
            assert isinstance(error, ServerUnavailable)
            assert error.retry_after is None


@pytest.mark.parametrize("status", [401, 403, 404, 410])
async def test_client_errors_fail(shared: SharedResources, status: int) -> None:
    async with serve_rest() as server:
        server.script(Respond(status))
        error = await _run_to_error(
            _transport(server), _session(Collector(), shared, ResumeState())
        )
    assert isinstance(error, Failed)
    assert str(status) in error.detail


async def test_a_stopped_server_is_unavailable(shared: SharedResources) -> None:
    async with serve_rest() as server:
        await server.stop()
        error = await _run_to_error(
            _transport(server), _session(Collector(), shared, ResumeState())
        )
    assert isinstance(error, ServerUnavailable)
    assert error.detail == "connection refused"


async def test_non_json_body_is_server_unavailable(shared: SharedResources) -> None:
    async with serve_rest() as server:
        server.script(
            Respond(200, {"Content-Type": "text/html"}, b"<html>proxy error</html>"),
            Raw(b'{"items": [tru'),
        )
        for _ in range(2):
            error = await _run_to_error(
                _transport(server), _session(Collector(), shared, ResumeState())
            )
            assert isinstance(error, ServerUnavailable)
            assert "not JSON" in error.detail


async def test_a_stalled_server_times_out(shared: SharedResources) -> None:
    async with serve_rest() as server:
        server.script(Stall())
        error = await _run_to_error(
            _transport(server, timeout=0.2), _session(Collector(), shared, ResumeState())
        )
    assert isinstance(error, ServerUnavailable)
    assert "timed out" in error.detail


async def test_a_missing_items_path_fails(shared: SharedResources) -> None:
    async with serve_rest() as server:
        error = await _run_to_error(
            _transport(server, items="data.rows"), _session(Collector(), shared, ResumeState())
        )
    assert isinstance(error, Failed)
    assert "'data.rows' not found" in error.detail


async def test_an_object_body_is_one_event_and_last_modified_is_sent_back(
    shared: SharedResources,
) -> None:
    got = Collector()
    stamp = "Wed, 21 Oct 2015 07:28:00 GMT"
    body = b'{"step": 7, "loss": 0.25}'
    async with serve_rest() as server:
        server.script(
            Respond(200, {"Content-Type": "application/json", "Last-Modified": stamp}, body),
            Respond(304),
            Respond(200, {"Content-Type": "application/json"}, body),
        )
        transport = _transport(server, items="", id_field=None)
        session = _session(got, shared, ResumeState())
        await _collect_until(transport, session, lambda: len(got.events) == 2, got)
    assert server.requests[1].headers["if-modified-since"] == stamp
    assert [(e.event, e.id, e.data) for e in got.events] == [
        ("message", None, {"step": 7, "loss": 0.25}),
        ("message", None, {"step": 7, "loss": 0.25}),
    ]


async def test_resume_across_a_server_restart_loses_and_repeats_nothing(
    shared: SharedResources,
) -> None:
    got = Collector()
    resume = ResumeState()
    async with serve_rest(page_size=4) as server:
        for i in range(3):
            await server.publish({"i": i})
        transport = _transport(server, cursor_param="after")
        errors: list[Exception] = []

        async def first_session() -> None:
            try:
                await transport.run_session(_session(got, shared, resume))
            except ServerUnavailable as exc:
                errors.append(exc)

        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(first_session)
                await got.wait_for(lambda: len(got.events) == 3)
                await server.stop()
        assert len(errors) == 1  # the killed server ended the session
        # The trainer keeps producing while the server is down: more than a page.
        for i in range(3, 11):
            server.publish_nowait({"i": i})
        await server.start()
        session = _session(got, shared, resume)
        await _collect_until(transport, session, lambda: len(got.events) >= 11, got)
    assert [e.data["i"] for e in got.events] == list(range(11))
    assert [e.seq for e in got.events] == list(range(1, 12))
    assert [len(b) for b in got.event_batches] == [3, 4, 4]


async def test_options_check_and_registration() -> None:
    with pytest.raises(ValueError, match="must start with http"):
        RestOptions.check(RestOptions(url="ftp://example.com/x"))
    with pytest.raises(ValueError, match="empty key"):
        RestOptions.check(RestOptions(url="http://h/x", items="a..b"))
    with pytest.raises(ValueError, match="interval must be > 0, got 0"):
        RestOptions(url="http://h/x", interval=0)
    RestOptions.check(RestOptions(url="https://h/x?token=1", headers={"X-Key": "v"}))
    assert attrs.fields(RestOptions).interval.default == 1.0
    registered: dict[str, type[Any]] = {}
    mux_register_transports(registered.__setitem__)
    assert registered == {"rest": RestTransport}


def _reference_new_events(
    items: list[Any], last_id: str | None, id_field: str | None, event_field: str | None
) -> list[tuple[str, str | None, Any]]:
    """The dedupe rule spelled out slowly: drop everything up to and including
    the LAST item whose id is ``last_id``; keep the whole page when none is."""
    events = []
    for item in items:
        id_ = item.get(id_field) if isinstance(item, dict) and id_field else None
        kind = item.get(event_field) if isinstance(item, dict) and event_field else None
        events.append(
            ("message" if kind is None else str(kind), None if id_ is None else str(id_), item)
        )
    cut = max(
        (i + 1 for i, e in enumerate(events) if last_id is not None and e[1] == last_id), default=0
    )
    return events[cut:]


_PAGE = [{"id": n, "v": n} for n in range(1, 6)]


@pytest.mark.parametrize(
    ("items", "last_id"),
    [
        (_PAGE, None),
        (_PAGE, "0"),  # a cursor honoured: the last id is not in the page
        (_PAGE, "1"),  # an inclusive cursor: the first item is the one seen
        (_PAGE, "3"),
        (_PAGE, "5"),  # nothing new
        ([*_PAGE, {"id": 3}, {"id": 9}], "3"),  # the last occurrence counts
        ([{"id": "a"}, {"id": "None"}, {"id": "b"}], "None"),  # a string id "None"
        ([{"id": 1}, {"id": None}, {"id": 2}], "1"),  # a null id: the careful path
        ([{"id": 1}, {"x": 0}, {"id": 2}], "1"),  # an item without an id
        ([{"id": 1}, "text", 7, [1], None], "1"),  # items that are not objects
        ([{"id": 1.5}, {"id": True}, {"id": {"k": 1}}], "True"),
        ([], "1"),
    ],
)
@pytest.mark.parametrize(("id_field", "event_field"), [("id", None), ("id", "e"), (None, None)])
def test_new_events_skips_what_was_seen_like_the_reference(
    items: list[Any], last_id: str | None, id_field: str | None, event_field: str | None
) -> None:
    transport = RestTransport(
        RestOptions(url="http://127.0.0.1:1/", id_field=id_field, event_field=event_field)
    )
    page = _general_page(items, id_field, event_field)
    got = list(transport._new_events(*page, last_id, 0))
    assert got == _reference_new_events(items, last_id, id_field, event_field)
    kept = items[len(items) - len(got) :]
    assert all(mine is item for (_, _, mine), item in zip(got, kept, strict=True))
    # The raw path (a JSON page read without decoding its items) agrees.
    if all(isinstance(item, dict) for item in items) and items:
        fresh = RestTransport(
            RestOptions(url="http://127.0.0.1:1/", id_field=id_field, event_field=event_field)
        )
        raw_page = fresh._reader.read(json.dumps(items).encode())
        assert raw_page is not None
        raw_got = list(fresh._new_events(*raw_page, last_id, 0))
        assert [(k, i, decode_payload(d)) for k, i, d in raw_got] == got


def _page(*items: dict[str, Any]) -> Respond:
    body = json.dumps({"items": list(items)}).encode()
    return Respond(200, {"Content-Type": "application/json"}, body)


async def test_a_cursor_that_moves_back_delivers_nothing_twice_and_a_new_run_is_kept(
    shared: SharedResources,
) -> None:
    """The duplicate rule (docs/architecture.md, Guarantees the code relies on):
    same id + same data = duplicate (dropped); same id + other data = the
    stream started over (delivered)."""
    got = Collector()
    async with serve_rest() as server:
        server.script(
            _page({"id": 1, "v": "a"}, {"id": 2, "v": "b"}, {"id": 3, "v": "c"}),
            _page({"id": 4, "v": "d"}),
            _page(
                {"id": 2, "v": "b"}, {"id": 3, "v": "c"}, {"id": 4, "v": "d"}, {"id": 5, "v": "e"}
            ),
            # A restarted trainer: ids from 1 again, with new data.
            _page({"id": 1, "v": "new-a"}, {"id": 2, "v": "new-b"}),
            _page({"id": 2, "v": "new-b"}, {"id": 3, "v": "new-c"}),
        )
        transport = _transport(server)
        session = _session(got, shared, ResumeState())
        await _collect_until(transport, session, lambda: len(got.events) == 8, got)
    assert [(e.id, e.data["v"]) for e in got.events] == [
        ("1", "a"),
        ("2", "b"),
        ("3", "c"),
        ("4", "d"),
        ("5", "e"),
        ("1", "new-a"),
        ("2", "new-b"),
        ("3", "new-c"),
    ]
    assert transport._delivered.restarts == 1


async def test_big_integer_ids_stay_exact_and_items_are_written_as_sent(
    shared: SharedResources,
) -> None:
    got = Collector()
    body = b'{"items": [{"id": 12345678901234567890123, "loss": 1.10}]}'
    async with serve_rest() as server:
        server.script(Respond(200, {"Content-Type": "application/json"}, body))
        session = _session(got, shared, ResumeState())
        await _collect_until(_transport(server), session, lambda: len(got.events) == 1, got)
    (event,) = got.events
    assert event.id == "12345678901234567890123"
    assert event.raw == b'{"id": 12345678901234567890123, "loss": 1.10}'
    assert b'"data":{"id": 12345678901234567890123, "loss": 1.10}' in encode_jsonl([event])


def test_delivered_memory_is_bounded_and_forgets_the_oldest_pages() -> None:
    from mux_rest._page import Delivered

    delivered = Delivered(max_items=4, max_bytes=10**9)
    assert delivered.filter(["1", "2"], [b"a", b"b"], 10) is None
    assert delivered.filter(["3", "4"], [b"c", b"d"], 10) is None
    assert delivered.filter(["5", "6"], [b"e", b"f"], 10) is None  # "1", "2" forgotten
    assert delivered.filter(["1", "5"], [b"a", b"e"], 10) == [0]  # "1" new again, "5" a repeat
    assert delivered.restarts == 0
    assert delivered.filter(["6"], [b"other"], 10) == [0]  # same id, other data: a new run
    assert delivered.restarts == 1
    by_bytes = Delivered(max_items=10**6, max_bytes=25)
    for n in range(10):
        by_bytes.filter([str(n)], [b"x"], 10)
    assert by_bytes.filter(["0"], [b"x"], 10) is None  # long forgotten: delivered
    assert by_bytes.filter(["9"], [b"x"], 10) == []  # the newest is remembered
