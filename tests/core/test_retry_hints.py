"""A server's zero retry hints cannot make mux hammer it (issue 10, class 5).

``retry: 0`` and ``Retry-After: 0`` are honoured only down to the policy's
``min_delay`` floor, and consecutive failures still back off. Checked on a
MockClock: the number of attempts in a minute of (virtual) time is bounded.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from mux_core._run.supervisor import Supervisor
from mux_core.errors import Disconnected, ServerUnavailable
from mux_core.records import Record, State, Status
from mux_core.retry import RetryPolicy
from mux_core.transport import Session, SharedResources

#: Enough to see a storm: without a floor a zero hint attempts without end.
_STORM = 5000


class _ZeroHints:
    """Fails every attempt the way ``mode`` says, always asking for no wait."""

    Options = None

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sessions = 0

    async def run_session(self, session: Session) -> None:
        self.sessions += 1
        if self.sessions > _STORM:
            raise AssertionError("a connection storm: no backoff")
        if self.mode == "retry-after":
            raise ServerUnavailable("HTTP 503 Service Unavailable", retry_after=0.0)
        session.set_retry_hint(0.0)
        if self.mode == "sse-retry-event":  # connects, delivers one event, drops
            await session.connected()
            await session.emit([("message", str(self.sessions), {"n": self.sessions})])
            raise Disconnected("server closed the stream")
        raise ServerUnavailable("connection refused")  # sse-retry: refused after the hint


async def _attempts_in(seconds: float, transport: _ZeroHints, policy: RetryPolicy) -> list[Status]:
    statuses: list[Status] = []

    async def send(batch: Sequence[Record]) -> None:
        statuses.extend(r for r in batch if type(r) is Status)

    shared = SharedResources()
    supervisor = Supervisor(
        source="s",
        transport_name="hostile",
        transport=transport,  # type: ignore[arg-type]
        policy=policy,
        send=send,
        shared=shared,
        rng=random.Random(1),
    )
    with trio.move_on_after(seconds):
        await supervisor.run()
    await shared.aclose()
    return statuses


@pytest.mark.parametrize("mode", ["retry-after", "sse-retry", "sse-retry-event"])
async def test_zero_hints_are_floored_and_failures_back_off(
    autojump_clock: trio.testing.MockClock, mode: str
) -> None:
    policy = RetryPolicy()  # defaults: min_delay 0.5, max_delay 30
    statuses = await _attempts_in(60.0, _ZeroHints(mode), policy)
    attempts = sum(1 for s in statuses if s.state is State.CONNECTING)
    waits = [s.retry_in for s in statuses if s.retry_in is not None]
    assert waits and min(waits) >= policy.min_delay
    if mode == "sse-retry-event":
        # Each session delivered an event (healthy): the floor alone spaces them.
        assert 60 <= attempts <= 121
    else:
        # Consecutive failures grow: 0.5, 1, 2, ... 30 -> about 8 attempts a minute.
        assert 5 <= attempts <= 12
        assert waits[-1] > 10 * waits[0]
    assert all(s.state is not State.FAILED for s in statuses)


async def test_a_retry_after_longer_than_the_backoff_is_honoured(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Later(_ZeroHints):
        async def run_session(self, session: Session) -> None:
            self.sessions += 1
            raise ServerUnavailable("HTTP 429 Too Many Requests", retry_after=12.0)

    statuses = await _attempts_in(30.0, Later("x"), RetryPolicy(jitter=0.0))
    assert [s.retry_in for s in statuses if s.retry_in is not None][:2] == [12.0, 12.0]


@given(
    st.floats(0.0, 10.0),
    st.floats(0.0, 5.0),
    st.integers(1, 50),
    st.floats(0.0, 0.99),
    st.integers(0, 2**32),
)
def test_a_server_hint_never_goes_below_the_floor(
    hint: float, min_delay: float, failures: int, jitter: float, seed: int
) -> None:
    policy = RetryPolicy(min_delay=min_delay, jitter=jitter)
    delay = policy.delay(failures, initial=hint, rng=random.Random(seed))
    assert policy.floor() <= delay <= policy.max_delay
    assert policy.floor() <= policy.server_delay(hint) <= policy.max_delay


def test_the_users_own_initial_delay_is_not_floored() -> None:
    policy = RetryPolicy(initial_delay=0.0, jitter=0.0)
    assert policy.delay(3) == 0.0
