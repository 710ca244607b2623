"""What the hostile-server tests share: the bad plans, and the checks of memory, details, states.

The plans (``SSE_CASES``, ``SSE_FIELD_CASES``, ``REST_CASES``) are played one
connection each by the in-process tests (tests/core/test_http_hostile.py) and
all in turn by one ``mux run`` process (tests/e2e/test_hostile_servers.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from mux_core._run.supervisor import Supervisor
from mux_core.records import (
    Event,
    Record,
    State,
    Status,
)
from mux_core.retry import RetryPolicy
from mux_core.testing import (
    Bomb,
    Flood,
    Hangup,
    Pause,
    Plan,
    Reset,
    Send,
    chunk,
    compressed,
    http_head,
    sse_head,
)
from mux_core.transport import SharedResources

#: Peak RSS growth allowed in one hostile case; the issue's bound for the
#: whole process is ~300 MB, and a careless client grows by the bomb's size.
RSS_BUDGET = 100 * 1024 * 1024

#: A retry policy for tests: fast, but still with a floor for server hints.
FAST = RetryPolicy(initial_delay=0.01, min_delay=0.01, max_delay=0.05, jitter=0.0)

#: Words that betray a library's message in a Status detail.
LIBRARY_WORDING = re.compile(
    r"bytearray|b'|b\"|role=|state=|SWITCH|codec|Error -\d|h11|zlib|Traceback|"
    r"internal error|Errno|ProtocolError|BrokenResource|incorrect header check|"
    r"invalid stored block|\bNEED_DATA\b|object at 0x"
)

TERMINAL = {State.FAILED, State.ENDED, State.MAX_RETRIES_EXCEEDED}


class PeakRss:
    """The peak RSS growth of this process over a ``with`` block (Linux).

    The kernel's high-water mark (VmHWM) is reset on entry by writing 5 to
    /proc/self/clear_refs, so the figure covers the block alone.
    """

    def __init__(self) -> None:
        self.start = 0
        self.growth = 0

    def __enter__(self) -> PeakRss:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:  # pragma: no cover - not Linux or not allowed: current RSS
            pass
        self.start = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = (_status_kib("VmHWM") - self.start) * 1024

    def check(self) -> None:
        assert self.growth < RSS_BUDGET, f"RSS grew by {self.growth / 2**20:.0f} MiB"


def _status_kib(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    assert match is not None, f"no {key} in /proc/self/status"
    return int(match.group(1))


def assert_readable(details: Sequence[str]) -> None:
    """No detail carries a library's wording, and each is one short line."""
    for detail in details:
        assert not LIBRARY_WORDING.search(detail), f"library wording in {detail!r}"
        assert "\n" not in detail and len(detail) < 300, detail


async def watch(
    transport: Any,
    until: Callable[[list[Record]], bool],
    *,
    timeout: float = 20.0,
    policy: RetryPolicy = FAST,
) -> list[Record]:
    """Run ``transport`` under a Supervisor until ``until(records)`` holds."""
    records: list[Record] = []
    changed = trio.Event()

    async def send(batch: Sequence[Record]) -> None:
        nonlocal changed
        records.extend(batch)
        changed.set()
        changed = trio.Event()

    shared = SharedResources()
    supervisor = Supervisor(
        source="hostile",
        transport_name="test",
        transport=transport,
        policy=policy,
        send=send,
        shared=shared,
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor.run)
            with trio.move_on_after(timeout):
                while not until(records):
                    await changed.wait()
            nursery.cancel_scope.cancel()
    finally:
        await shared.aclose()
    if not until(records):
        seen = [(s.state.value, s.detail) for s in statuses(records)][-8:]
        raise AssertionError(f"not seen within {timeout:g} s; last statuses: {seen}")
    return records


def statuses(records: Sequence[Record]) -> list[Status]:
    return [r for r in records if type(r) is Status]


def events(records: Sequence[Record]) -> list[Event]:
    return [r for r in records if type(r) is Event]


def retried_with(detail: str) -> Callable[[list[Record]], bool]:
    """``until``: a retryable status whose detail contains ``detail`` was sent."""

    def seen(records: list[Record]) -> bool:
        return any(
            s.state in (State.SERVER_UNAVAILABLE, State.DISCONNECTED) and detail in s.detail
            for s in statuses(records)
        )

    return seen


def event_data(data: Any) -> Callable[[list[Record]], bool]:
    """``until``: an event with this data arrived."""

    def seen(records: list[Record]) -> bool:
        return any(e.data == data for e in events(records))

    return seen


def both(*conditions: Callable[[list[Record]], bool]) -> Callable[[list[Record]], bool]:
    return lambda records: all(c(records) for c in conditions)


def assert_still_retrying(records: Sequence[Record]) -> None:
    """Not a single terminal state, every detail readable."""
    sent = statuses(records)
    assert not [s for s in sent if s.state in TERMINAL], sent
    assert_readable([s.detail for s in sent])


# -- the plans: one bad connection, then a good one ---------------------------------

EVENT_STREAM = ("Content-Type", "text/event-stream")
#: The well-behaved connection that follows every bad one.
GOOD_SSE: Plan = [Send(sse_head()), Send(b"id: 9\ndata: after\n\n"), Pause()]
BOMB = 256 * 1024 * 1024  # inflated all at once this would add 256 MiB

SSE_CASES: dict[str, tuple[Plan, str]] = {
    "not HTTP": ([Send(b"data: hello\n\n"), Hangup()], "the server's response is not HTTP"),
    "HTTP/2 status line": ([Send(b"HTTP/2 200\r\n\r\n"), Hangup()], "response is not HTTP"),
    "status code 1000": ([Send(b"HTTP/1.1 1000 OK\r\n\r\n"), Hangup()], "not HTTP"),
    "giant head": (
        [Send(b"HTTP/1.1 200 OK\r\nX-Big: "), Flood(b"a" * 65536)],
        "the response head is too large (more than 64 KiB)",
    ),
    "many headers": (
        [Send(b"HTTP/1.1 200 OK\r\n"), Flood(b"X-A: b\r\n" * 8192)],
        "the response head is too large",
    ),
    "malformed header": (
        [Send(b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n"), Hangup()],
        "the server sent a malformed response header",
    ),
    "NUL in a header": (
        [Send(b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n"), Hangup()],
        "malformed response header",
    ),
    "unasked 101": (
        [Send(http_head(101, {"Upgrade": "websocket", "Connection": "Upgrade"})), Hangup()],
        "the server switched protocols (HTTP 101) although mux did not ask",
    ),
    "bad Content-Length": (
        [Send(http_head(200, [EVENT_STREAM, ("Content-Length", "12abc")])), Hangup()],
        "invalid Content-Length",
    ),
    "conflicting Content-Length": (
        [Send(http_head(200, [EVENT_STREAM, ("Content-Length", "1"), ("Content-Length", "2")]))],
        "invalid Content-Length",
    ),
    "unknown Transfer-Encoding": (
        [Send(http_head(200, [EVENT_STREAM, ("Transfer-Encoding", "gzip")])), Hangup()],
        "unsupported Transfer-Encoding",
    ),
    "head cut short": (
        [Send(b"HTTP/1.1 200 OK\r\nContent-Ty"), Hangup()],
        "closed the connection in the middle of the response",
    ),
    "nothing at all": ([Hangup()], "server disconnected without sending a response"),
    "reset at once": ([Reset()], "connection reset"),
    "endless 1xx then close": (
        [Flood(b"HTTP/1.1 100 Continue\r\n\r\n", times=5000), Hangup()],
        "server disconnected without sending a response",
    ),
    "unreadable gzip": (
        [Send(sse_head(("Content-Encoding", "gzip"))), Send(b"this is not gzip"), Hangup()],
        "the server sent an unreadable gzip body",
    ),
    "unreadable deflate": (
        [Send(sse_head(("Content-Encoding", "deflate"))), Send(b"\xff" * 64), Hangup()],
        "the server sent an unreadable deflate body",
    ),
    "unsupported encoding": (
        [Send(sse_head(("Content-Encoding", "br"))), Send(b"\x0b\x02\x80"), Hangup()],
        "unsupported Content-Encoding 'br'",
    ),
    "status 999": ([Send(http_head(999)), Hangup()], "HTTP 999"),
    "reset mid-stream": (
        [Send(sse_head()), Send(b"data: before\n\n"), Reset()],
        "connection reset",
    ),
    "gzip bomb": (
        [Send(sse_head(("Content-Encoding", "gzip"))), Bomb(BOMB), Hangup()],
        "server closed the stream",
    ),
    "raw deflate bomb": (
        [
            Send(sse_head(("Content-Encoding", "deflate"))),
            Bomb(BOMB, "raw-deflate"),
            Hangup(),
        ],
        "server closed the stream",
    ),
}

#: A stream that stays up but sets fields no client should take as they are
#: (issue 21): the events must still arrive, the fields are bounded or ignored.
#: Each plan delivers "first" before the hostile field and "last" after it.
HUGE_ID = b"i" * (1024 * 1024)
RETRY_DIGITS = b"9" * 5000
SSE_FIELD_CASES: dict[str, Plan] = {
    # Every later event carries the id in effect: a megabyte each, unless bounded.
    "1 MiB id then tiny events": [
        Send(sse_head()),
        Send(b"id: 1\ndata: first\n\n"),
        Send(b"id: " + HUGE_ID + b"\n\n"),
        Flood(b"data: tiny\n\n" * 100, times=50),
        Send(b"data: last\n\n"),
        Hangup(),
    ],
    # int() of 5,000 digits raises ValueError (Python's 4,300-digit limit).
    "retry with 5000 digits": [
        Send(sse_head()),
        Send(b"data: first\n\nretry: " + RETRY_DIGITS + b"\n\ndata: last\n\n"),
        Hangup(),
    ],
    # Resumed from as "42" by a server that reads the header as a browser sends it.
    "id with a trailing space": [
        Send(sse_head()),
        Send(b"id: 42 \ndata: first\n\ndata: last\n\n"),
        Hangup(),
    ],
}


JSON = ("Content-Type", "application/json")
GOOD_PAGE = b'[{"id": 9, "v": "after"}]'
GOOD_REST: Plan = [
    Send(http_head(200, [JSON, ("Content-Length", str(len(GOOD_PAGE)))]) + GOOD_PAGE),
    Hangup(),
]

REST_CASES: dict[str, tuple[Plan, str, dict[str, Any]]] = {
    "not HTTP": ([Send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), Hangup()], "response is not HTTP", {}),
    "giant head": (
        [Send(b"HTTP/1.1 200 OK\r\nX-Big: "), Flood(b"a" * 65536)],
        "the response head is too large (more than 64 KiB)",
        {},
    ),
    "declared 1 GB page": (
        [Send(http_head(200, [JSON, ("Content-Length", str(1 << 30))])), Pause()],
        "the response body is larger than 64 MiB (max_page_bytes)",
        {},
    ),
    "endless chunked page": (
        [
            Send(http_head(200, [JSON, ("Transfer-Encoding", "chunked")])),
            Flood(chunk(b"1" * 65000)),
        ],
        "the response body is larger than 4 MiB (max_page_bytes)",
        {"max_page_bytes": 4 * 1024 * 1024},
    ),
    "endless close-delimited page": (
        [Send(http_head(200, [JSON])), Flood(b"[" * 65536)],
        "the response body is larger than 4 MiB (max_page_bytes)",
        {"max_page_bytes": 4 * 1024 * 1024},
    ),
    "gzip bomb page": (
        [Send(http_head(200, [JSON, ("Content-Encoding", "gzip")])), Bomb(BOMB), Hangup()],
        "the response body is larger than 16 MiB (max_page_bytes)",
        {"max_page_bytes": 16 * 1024 * 1024},
    ),
    "unreadable gzip page": (
        [
            Send(http_head(200, [JSON, ("Content-Encoding", "gzip"), ("Content-Length", "9")])),
            Send(b"not gzip!"),
            Hangup(),
        ],
        "the server sent an unreadable gzip body",
        {},
    ),
    "gzip page cut short": (
        [
            Send(
                http_head(200, [JSON, ("Content-Encoding", "gzip"), ("Content-Length", "20")])
                + compressed(b"[1, 2, 3]" * 100)[:20]
            ),
            Hangup(),
        ],
        "unreadable gzip body (cut short)",
        {},
    ),
    "chunked garbage": (
        [Send(http_head(200, [JSON, ("Transfer-Encoding", "chunked")]) + b"zz\r\n"), Hangup()],
        "the server sent a malformed chunked body",
        {},
    ),
    "body cut short": (
        [Send(http_head(200, [JSON, ("Content-Length", "100")]) + b"[1,"), Hangup()],
        "the server closed the connection in the middle of the body",
        {},
    ),
    "unasked 101": (
        [Send(http_head(101, {"Upgrade": "h2c", "Connection": "Upgrade"})), Hangup()],
        "switched protocols",
        {},
    ),
    "reset": ([Reset()], "connection reset", {}),
}
