"""Shared checks of the hostile-server tests: memory, readable details, states."""

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
