"""One source's life: its attempts, how each ended, and the waits between them.

The :class:`Supervisor` is the only place that waits between attempts and
counts failures -- transports just run one session and say how it ended
(see :mod:`mux_core.errors`). Every transition becomes a :class:`Status`
record on the run's channel, and the per-source :class:`ResumeState` is
handed to each new session so a reconnect resumes where the last one stopped.

One attempt is :func:`attempt_session` (the connect deadline, a crash as
``failed``), and :func:`outcome_state` is the one classification of how it
ended: ``mux check --probe`` (one attempt per source) and the test kit's
``run_one_session`` use both, so a probe's verdict is what a run would report.
The supervisor runs the same attempt inline (in the scope that a stop
cancels too: one scope and one coroutine less per source) with the same
pieces (:func:`_crashed`, :func:`_cut_off`, :func:`outcome_state`).

State sequence of one attempt::

    connecting --> connected --> (disconnected | ended | failed)
         \\--> (server_unavailable | failed | ended)
    after a retryable outcome: wait retry_in, then connecting again, or
    max_retries_exceeded once max_attempts attempts in a row have failed.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import trio

from ..errors import (
    Disconnected,
    Ended,
    Failed,
    ServerUnavailable,
    SessionError,
)
from ..records import Record, State, Status
from ..retry import RetryPolicy
from ..transport import (
    ResumeState,
    Session,
    SharedResources,
    Transport,
)
from . import Send

__all__ = ["Supervisor", "attempt_session", "outcome_state"]


def outcome_state(outcome: SessionError) -> State:
    """The state a run reports for how an attempt ended -- the one classification.

    ``mux run`` (the supervisor) and ``mux check --probe`` both use it, so a
    probe's verdict is what a run would do: ``ended`` and ``failed`` are
    terminal, ``disconnected`` and ``server_unavailable`` are retried.
    """
    if isinstance(outcome, Ended):
        return State.ENDED
    if isinstance(outcome, Failed):
        return State.FAILED
    if isinstance(outcome, Disconnected):
        return State.DISCONNECTED
    return State.SERVER_UNAVAILABLE


async def attempt_session(
    transport: Transport,
    session: Session,
    connect_timeout: float,
    *,
    transport_name: str,
    source: str,
    stop_when_connected: bool = False,
    reraise_bugs: bool = False,
) -> SessionError | None:
    """Run one session under the connect timeout; return how it ended.

    A session that returns counts as ``Disconnected``, a transport that
    crashes as ``Failed``, no ``connected()`` within ``connect_timeout`` as
    ``ServerUnavailable``. With ``stop_when_connected`` (a probe) the session
    is cut short at ``connected()`` and None is returned. With ``reraise_bugs``
    (``mux_core.testing.run_one_session``) a crash propagates instead.
    """
    scope = trio.CancelScope(deadline=trio.current_time() + connect_timeout)
    reached = False

    def connected() -> None:
        nonlocal reached
        reached = True
        if stop_when_connected:
            scope.cancel()
        else:
            scope.deadline = math.inf

    session._on_connected = connected
    try:
        with scope:
            await transport.run_session(session)
            return Disconnected(_STREAM_ENDED)
    except SessionError as exc:
        return exc
    except Exception as exc:
        if reraise_bugs:  # the test kit: a transport's bug fails its test
            raise
        return _crashed(exc, transport_name, source)
    if reached and stop_when_connected:
        return None
    # Reached only when the connect deadline cancelled the session.
    return _cut_off(reached, connect_timeout)


_STREAM_ENDED = "the stream ended"


def _crashed(exc: Exception, transport_name: str, source: str) -> Failed:
    """A transport that raised something other than a SessionError: its bug, logged."""
    _log.exception("transport %r of source %r crashed", transport_name, source)
    return Failed(f"internal error in transport {transport_name!r}: {exc!r}")


def _cut_off(reached: bool, connect_timeout: float) -> SessionError:
    """How an attempt the connect deadline cancelled ended (``reached``: connected())."""
    if reached:
        # The deadline fired before connected() could lift it (a busy loop ran the
        # task after its socket was ready): connected, then cut -- a drop to retry.
        return Disconnected(
            f"cut off: connected just after the {connect_timeout:g} s connect deadline"
        )
    return ServerUnavailable(f"no connection within {connect_timeout:g} s")


_log = logging.getLogger("mux.supervisor")


class Supervisor:
    """Keeps one source connected: attempts, waits, counts, reports.

    ``run()`` returns after a terminal state was sent (ended, failed,
    max_retries_exceeded). Stopped (:meth:`stop`), it returns without sending
    anything: the engine sends ``stopped`` for sources still live. Cancelled
    from outside, it raises ``Cancelled`` as any task does.

    One cancel scope at a time serves both the stop and the connect deadline
    of an attempt (the deadline lifted at ``connected()``): a connected idle
    source holds this scope and its transport's own, not a third (100,000
    idle sources: ~0.6 KB each). The attempt runs here rather than in
    :func:`attempt_session` (one coroutine and closure less a source), with
    the same classification (:func:`_crashed`, :func:`_cut_off`).
    """

    # Slots: one of these per source, and 10,000 idle sources should stay small.
    __slots__ = (
        "_delivered",
        "_reserve",
        "_rng",
        "_scope",
        "_send",
        "_shared",
        "_stopping",
        "attempt",
        "policy",
        "resume",
        "source",
        "state",
        "transport",
        "transport_name",
    )

    def __init__(
        self,
        *,
        source: str,
        transport_name: str,
        transport: Transport,
        policy: RetryPolicy,
        send: Send,
        shared: SharedResources,
        resume: ResumeState | None = None,
        rng: random.Random | None = None,
        delivered: Callable[[], Awaitable[bool]] | None = None,
        reserve: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.source = source
        self.transport_name = transport_name
        self.transport = transport
        self.policy = policy
        self.resume = resume if resume is not None else ResumeState()
        self._send = send
        self._shared = shared
        self._rng = rng
        self._delivered = delivered
        self._reserve = reserve
        #: The last state sent (None before the first attempt).
        self.state: State | None = None
        #: The attempt number of the last Status sent.
        self.attempt = 0
        #: The scope of what runs now (an attempt, or the wait after one).
        self._scope: trio.CancelScope | None = None
        self._stopping = False

    def stop(self) -> None:
        """End :meth:`run` at its next checkpoint (or at once if it has not begun)."""
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()

    def _enter_phase(self) -> trio.CancelScope:
        scope = self._scope = trio.CancelScope()
        if self._stopping:
            scope.cancel()
        return scope

    def _lift_deadline(self) -> None:
        # Session.connected(): the connect deadline no longer applies.
        if self._scope is not None:
            self._scope.deadline = math.inf

    async def run(self) -> State | None:
        """Attempt, wait and retry until a terminal state; return that state.

        Stopped, return the last state sent (None if none was).
        """
        failures = 0
        connect_timeout = self.policy.connect_timeout
        while True:
            attempt = failures + 1
            session = Session(
                source=self.source,
                transport=self.transport_name,
                resume=self.resume,
                connect_timeout=connect_timeout,
                shared=self._shared,
                send=self._send_from_session,
                send_events=self._send,
                delivered=self._delivered,
                reserve=self._reserve,
                attempt=attempt,
                on_connected=self._lift_deadline,
            )
            outcome: SessionError | None = None
            with self._enter_phase() as scope:
                await self._status(State.CONNECTING, attempt, None, "")
                scope.deadline = trio.current_time() + connect_timeout
                try:
                    await self.transport.run_session(session)
                    outcome = Disconnected(_STREAM_ENDED)
                except SessionError as exc:
                    outcome = exc
                except Exception as exc:
                    outcome = _crashed(exc, self.transport_name, self.source)
            if outcome is None:  # the scope was cancelled: a stop, or the connect deadline
                if self._stopping:
                    return self.state
                outcome = _cut_off(session.is_connected, connect_timeout)
            state = outcome_state(outcome)
            with self._enter_phase():
                if state.terminal:
                    return await self._status(state, attempt, None, outcome.detail)
                assert isinstance(outcome, ServerUnavailable | Disconnected)

                if self._was_healthy(session):
                    # The connection worked: this drop starts a fresh count.
                    failures = 0
                    delay = self._next_delay(1, outcome.retry_after)
                else:
                    failures += 1
                    if self.policy.gives_up(failures):
                        detail = f"{failures} attempts in a row failed; last: {outcome.detail}"
                        return await self._status(State.MAX_RETRIES_EXCEEDED, attempt, None, detail)
                    delay = self._next_delay(failures, outcome.retry_after)
                await self._status(state, attempt, delay, outcome.detail)
                await trio.sleep(delay)
            if self._stopping:
                return self.state

    def _was_healthy(self, session: Session) -> bool:
        """A session that delivered an event or stayed up reset_after resets the count."""
        if session.events:
            return True
        if session.connected_at is None:
            return False
        return trio.current_time() - session.connected_at >= self.policy.reset_after

    def _next_delay(self, failures: int, retry_after: float | None) -> float:
        """The backoff for ``failures``; a Retry-After may lengthen it, never shorten it.

        So ``Retry-After: 0`` from a server that fails every attempt still
        backs off (see :class:`RetryPolicy` for the floor of server hints).
        """
        backoff = self.policy.delay(failures, initial=self.resume.retry_hint, rng=self._rng)
        if retry_after is not None:
            return max(self.policy.server_delay(retry_after), backoff)
        return backoff

    async def _send_from_session(self, batch: Sequence[Record]) -> bool:
        # A session's Status records (connected, notices) come this way, one
        # per batch; its events go straight to the engine (send_events).
        if batch and type(batch[0]) is Status:
            self.state = batch[0].state  # see _status for why before the hand-over
        return bool(await self._send(batch))

    async def _status(
        self, state: State, attempt: int, retry_in: float | None, detail: str
    ) -> State:
        if retry_in is not None:
            retry_in = round(retry_in, 3)
        status = Status(
            self.source, self.transport_name, state, attempt, retry_in, detail, time.time()
        )
        # The engine trusts `state` to know whether this source still needs its
        # `stopped` record, and a UI reads it: set before the hand-over, which
        # has no checkpoint until the record is in every sink's channel (so no
        # stop can fall between) but may then let the woken sinks run first.
        self.state = state
        self.attempt = attempt
        await self._send([status])
        return state
