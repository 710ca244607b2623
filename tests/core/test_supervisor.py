"""Supervisor state sequences for scripted session outcomes, on a MockClock."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing

from mux_core._run.supervisor import Supervisor
from mux_core.records import (
    Event,
    Record,
    State,
    Status,
)
from mux_core.retry import RetryPolicy
from mux_core.testing import ScriptedOptions, ScriptedTransport
from mux_core.transport import SharedResources


class _Run:
    def __init__(self, script: list[str], then: str = "hang", **policy: float) -> None:
        self.records: list[Record] = []
        self.times: list[float] = []
        self.transport = ScriptedTransport(ScriptedOptions(script=script, then=then))
        options: dict[str, Any] = {"jitter": 0.0, **policy}
        self.policy = RetryPolicy(**options)

    async def send(self, batch: Sequence[Record]) -> None:
        for record in batch:
            self.records.append(record)
            self.times.append(trio.current_time())

    async def run(self, *, until: float = 1000.0) -> State | None:
        shared = SharedResources()
        supervisor = Supervisor(
            source="s",
            transport_name="scripted",
            # The test kit's ScriptedTransport does not inherit Transport (optional for a
            # transport), while Supervisor's parameter is annotated with the base class.
            transport=self.transport,
            policy=self.policy,
            send=self.send,
            shared=shared,
            rng=random.Random(0),
        )
        result = None
        with trio.move_on_after(until):
            result = await supervisor.run()
        await shared.aclose()
        return result

    @property
    def states(self) -> list[tuple[str, int]]:
        return [(r.state.value, r.attempt) for r in self.records if isinstance(r, Status)]

    @property
    def retry_ins(self) -> list[float | None]:
        return [r.retry_in for r in self.records if isinstance(r, Status)]


async def test_max_attempts_three_means_three_connecting_records(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run = _Run([], then="unavailable", max_attempts=3, initial_delay=1.0)
    assert await run.run() is State.MAX_RETRIES_EXCEEDED
    assert run.states == [
        ("connecting", 1),
        ("server_unavailable", 1),
        ("connecting", 2),
        ("server_unavailable", 2),
        ("connecting", 3),
        ("max_retries_exceeded", 3),
    ]
    assert run.retry_ins == [None, 1.0, None, 2.0, None, None]
    assert "3 attempts in a row failed" in run.records[-1].detail  # type: ignore[union-attr]


async def test_the_waits_follow_the_backoff_schedule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run = _Run([], then="unavailable", max_attempts=5, initial_delay=0.5, max_delay=3.0)
    await run.run()
    connecting_times = [
        t
        for r, t in zip(run.records, run.times, strict=True)
        if isinstance(r, Status) and r.state is State.CONNECTING
    ]
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(connecting_times)]
    assert gaps == [0.5, 1.0, 2.0, 3.0]


async def test_connect_then_events_then_resume_after_the_last_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run = _Run(["events:3", "unavailable", "events:2"], then="end")
    assert await run.run() is State.ENDED
    events = [r for r in run.records if isinstance(r, Event)]
    assert [e.id for e in events] == ["1", "2", "3", "4", "5"]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert run.transport.seen_last_ids == [None, "3", "3", "5"]
    assert run.states == [
        ("connecting", 1),
        ("connected", 1),
        ("disconnected", 1),
        ("connecting", 1),
        ("server_unavailable", 1),
        ("connecting", 2),
        ("connected", 2),
        ("disconnected", 2),
        ("connecting", 1),
        ("ended", 1),
    ]


async def test_a_server_that_accepts_and_drops_at_once_is_backed_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # connected but no event and not up reset_after: each drop counts as a failure
    run = _Run([], then="disconnect", max_attempts=3, initial_delay=1.0, reset_after=5.0)
    assert await run.run() is State.MAX_RETRIES_EXCEEDED
    assert [s for s, _ in run.states].count("connecting") == 3
    assert run.retry_ins[2] == 1.0 and run.retry_ins[5] == 2.0


async def test_staying_up_reset_after_seconds_resets_the_counter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # "hang" then cancelled would never end; use a transport that stays up 6 s.
    class StaysUp(ScriptedTransport):
        async def run_session(self, session):  # type: ignore[no-untyped-def]
            self.sessions += 1
            if self.sessions in (1, 2):
                raise __import__("mux_core.errors").errors.ServerUnavailable("refused")
            if self.sessions == 3:
                await session.connected()
                await trio.sleep(6.0)
                raise __import__("mux_core.errors").errors.Disconnected("dropped")
            raise __import__("mux_core.errors").errors.Ended("done")

    run = _Run([], max_attempts=10, initial_delay=1.0, reset_after=5.0)
    run.transport = StaysUp(ScriptedOptions())
    await run.run()
    assert run.states[-3:] == [("disconnected", 3), ("connecting", 1), ("ended", 1)]
    assert run.retry_ins[-3] == 1.0


@pytest.mark.parametrize(
    ("step", "state"), [("fail", State.FAILED), ("end", State.ENDED), ("crash", State.FAILED)]
)
async def test_terminal_outcomes_are_not_retried(
    autojump_clock: trio.testing.MockClock, step: str, state: State
) -> None:
    run = _Run([step], then="unavailable")
    assert await run.run() is state
    assert run.states == [("connecting", 1), (state.value, 1)]
    assert run.transport.sessions == 1


async def test_connect_timeout_counts_as_server_unavailable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run = _Run(["timeout"], then="end", connect_timeout=2.0, initial_delay=0.25)
    assert await run.run() is State.ENDED
    assert run.states[:2] == [("connecting", 1), ("server_unavailable", 1)]
    status = run.records[1]
    assert isinstance(status, Status) and "no connection within 2 s" in status.detail
    assert run.times[1] - run.times[0] == pytest.approx(2.0)


async def test_retry_after_is_honoured_within_max_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run = _Run(["unavailable:7", "unavailable:500"], then="end", max_delay=30.0)
    await run.run()
    assert run.retry_ins[1] == 7.0
    assert run.retry_ins[3] == 30.0


async def test_sse_retry_hint_replaces_initial_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Hinting(ScriptedTransport):
        async def run_session(self, session):  # type: ignore[no-untyped-def]
            session.set_retry_hint(4.0)
            await super().run_session(session)

    run = _Run([], initial_delay=0.5)
    run.transport = Hinting(ScriptedOptions(script=["unavailable"], then="end"))
    await run.run()
    assert run.retry_ins[1] == 4.0


async def test_hanging_source_is_cancellable_and_sends_nothing_more(
    autojump_clock: trio.testing.MockClock,
) -> None:
    run = _Run(["hang"])
    assert await run.run(until=50.0) is None
    assert run.states == [("connecting", 1), ("connected", 1)]


async def test_a_session_that_connects_as_its_connect_deadline_passes_is_a_disconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """On a busy machine a connect may complete after the deadline fired but before
    the session saw the cancellation (its socket was ready, the task not yet run):
    the session is connected, then cut. That is a drop to retry, never a crash."""

    class LateOnce(ScriptedTransport):
        async def run_session(self, session):  # type: ignore[no-untyped-def]
            if self.sessions == 0:
                self.sessions += 1
                with trio.CancelScope(shield=True):  # the deadline passes meanwhile
                    await trio.sleep(session.connect_timeout + 1.0)
                await session.connected()
                await trio.sleep_forever()
            await super().run_session(session)

    run = _Run([], connect_timeout=2.0, initial_delay=0.5)
    run.transport = LateOnce(ScriptedOptions(script=["hang"]))
    assert await run.run(until=50.0) is None
    assert run.states == [
        ("connecting", 1),
        ("connected", 1),
        ("disconnected", 1),
        ("connecting", 2),
        ("connected", 2),
    ]
    cut = run.records[2]
    assert isinstance(cut, Status) and "connect deadline" in cut.detail
