"""One connection attempt, and how ``mux run`` classifies its end: the one place.

The supervisor (every attempt of a run) and ``mux check --probe`` (one
attempt per source) both run a session through :func:`attempt_session` and
turn its outcome into a state with :func:`outcome_state`, so a probe's
verdict is always what a run would report.
"""

from __future__ import annotations

import logging
import math

import trio

from ..errors import (
    Disconnected,
    Ended,
    Failed,
    ServerUnavailable,
    SessionError,
)
from ..records import State
from ..transport import Session, Transport

__all__ = ["attempt_session", "outcome_state"]

_log = logging.getLogger("mux.supervisor")


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
            return Disconnected("the stream ended")
    except SessionError as exc:
        return exc
    except Exception as exc:
        if reraise_bugs:  # the test kit: a transport's bug fails its test
            raise
        _log.exception("transport %r of source %r crashed", transport_name, source)
        return Failed(f"internal error in transport {transport_name!r}: {exc!r}")
    if reached:
        return None
    # Reached only when the connect deadline cancelled the session.
    return ServerUnavailable(f"no connection within {connect_timeout:g} s")
