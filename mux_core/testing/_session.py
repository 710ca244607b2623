"""run_one_session: one session of a transport, as a run would drive it, for tests.

The transport gets a real :class:`~mux_core.transport.Session`; what it hands
over is kept in a :class:`SessionResult` instead of going to sinks. A test
chooses when the session ends with ``until`` (an event count or a
condition) -- and the transport still finishes its work on the batch that
met it: the code after ``emit`` (awaiting ``session.delivered()``, then
acknowledging to the server) runs, as it would in ``mux run``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio
import trio.testing

from .._run.supervisor import attempt_session
from ..errors import SessionError
from ..records import Event, Record
from ..transport import ResumeState, Session, SharedResources

__all__ = ["SessionResult", "run_one_session"]


@attrs.define
class SessionResult:
    """What one session emitted and how it ended."""

    #: Each batch handed over (events, status records), in order.
    batches: list[Sequence[Record]]
    #: The SessionError the session raised; None when ``until`` or ``timeout`` ended it.
    error: SessionError | None
    #: The resume state after the session: pass it to the next run_one_session.
    resume: ResumeState
    #: True when ``until`` held.
    until_met: bool = False
    #: For each ``await session.delivered()``, how many batches had been handed
    #: over when the transport called it: ``[3]`` -- once, after the third batch.
    delivered_at: list[int] = attrs.field(factory=list)

    @property
    def records(self) -> list[Record]:
        return [r for batch in self.batches for r in batch]

    @property
    def events(self) -> list[Event]:
        return [r for r in self.records if type(r) is Event]


async def _until_idle(result: SessionResult) -> None:
    await trio.testing.wait_all_tasks_blocked()


async def run_one_session(
    transport: Any,
    *,
    resume: ResumeState | None = None,
    until: int | Callable[[SessionResult], bool] | None = None,
    settle: Callable[[SessionResult], Awaitable[object]] | None = None,
    connect_timeout: float = 5.0,
    timeout: float = math.inf,
    shared: SharedResources | None = None,
    source: str = "test",
    transport_name: str = "test",
) -> SessionResult:
    """Run ``transport.run_session`` once, collecting what it emitted.

    The session runs as in ``mux run``: it must call ``session.connected()``
    within ``connect_timeout`` seconds (else ``error`` is
    :class:`ServerUnavailable`), and returning counts as :class:`Disconnected`.
    Every batch is "written" as soon as it is handed over, so
    ``session.delivered()`` returns True (``result.delivered_at`` records
    when it was awaited). Returns when

    * the session raises a :class:`SessionError` (kept in ``error``);
    * ``until`` held and the session was ended (``until_met``): ``until=3``
      holds once three events were emitted, ``until=predicate`` once
      ``predicate(result)`` is true, checked after each batch. The batch
      that met it is kept and ``emit`` returns as usual, so the transport
      finishes its work on it -- awaits ``session.delivered()``, sends its
      acknowledgement, saves a cursor -- until it *settles*: it is then
      cancelled wherever it waits. It settles when ``settle(result)``
      returns; by default when every task of the test waits for something
      from outside (a read, a timer; ``trio.testing.wait_all_tasks_blocked``):
      the transport is back at its next read. A transport that hands over
      anything more meanwhile (the next ``emit``, a ``notice``) is ended
      inside that call, and that batch is not kept. ``error`` stays None,
      unless the session raised while finishing (a stream that ended just
      after the batch);
    * ``timeout`` seconds pass (``error`` None): for "nothing happens" only.

    Other exceptions propagate: they are transport bugs. Pass
    ``result.resume`` to the next call to test resuming.

    Pass ``settle`` when the work after ``emit`` waits for a server in
    another process, which the default does not wait for:
    ``settle=lambda result: wait_until_acked()``.
    """
    resume = resume if resume is not None else ResumeState()
    result = SessionResult([], None, resume)
    if isinstance(until, int):
        count = until

        def until_count(result: SessionResult) -> bool:
            return len(result.events) >= count

        until = until_count
    settled = settle if settle is not None else _until_idle

    own_shared = shared is None
    shared = shared if shared is not None else SharedResources()
    bug: Exception | None = None
    async with trio.open_nursery() as nursery:
        with trio.move_on_after(timeout) as scope:

            async def end_when_settled() -> None:
                await settled(result)
                scope.cancel()

            async def send(batch: Sequence[Record]) -> None:
                if result.until_met:  # handing over more after until: ended right here
                    scope.cancel()
                    await trio.lowlevel.checkpoint()
                result.batches.append(batch)
                if until is not None and until(result):
                    result.until_met = True
                    nursery.start_soon(end_when_settled)

            async def delivered() -> bool:
                result.delivered_at.append(len(result.batches))
                await trio.lowlevel.checkpoint()
                return True

            session = Session(
                source=source,
                transport=transport_name,
                resume=resume,
                connect_timeout=connect_timeout,
                shared=shared,
                send=send,
                attempt=1,
                delivered=delivered,
            )
            try:
                # The way a run attempts a session: the same connect deadline, the
                # same classification of how it ended.
                result.error = await attempt_session(
                    transport,
                    session,
                    connect_timeout,
                    transport_name=transport_name,
                    source=source,
                    reraise_bugs=True,
                )
            except Exception as exc:  # a transport's bug: raised as it is, not in a group
                bug = exc
            finally:
                if own_shared:
                    await shared.aclose()
        nursery.cancel_scope.cancel()  # a settle still waiting: the session is over
    if bug is not None:
        raise bug
    return result
