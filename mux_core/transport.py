"""What a transport sees: the :class:`Transport` protocol and its :class:`Session`.

A transport implements ONE session -- connect, stream, return or raise -- and
nothing else. It never sleeps between attempts and never counts retries: the
supervisor does that, the same way for every transport. The session object
the supervisor hands in is the transport's whole view of the core::

    class EchoTransport:
        Options = EchoOptions              # an attrs class: validated config keys

        def __init__(self, options: EchoOptions) -> None:
            self.options = options

        async def run_session(self, session: Session) -> None:
            stream = await connect(self.options.url, last_id=session.resume.last_id)
            await session.connected()       # -> Status "connected"
            async for chunk in stream:
                await session.emit([("message", None, chunk)])   # one batch per read
            raise Disconnected("server closed the stream")

One transport instance lives as long as its source, so it may keep state
across sessions (an ETag, say); the resume state the core keeps is on
``session.resume``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, ClassVar, TypeAlias, TypeVar, cast

import attrs
import msgspec

from .payload import keep_raw, keep_value
from .records import (
    RECORD_OVERHEAD,
    Event,
    Record,
    SizedBatch,
    State,
    Status,
)

# trio is imported by the methods that run during a run, not here: every
# transport plugin imports this module when it loads (mux --help, mux check),
# and trio would be most of that cost.

__all__ = [
    "RawEvent",
    "ResumeState",
    "Session",
    "SharedResources",
    "Transport",
]

T = TypeVar("T")

#: What a transport emits: (event type, id or None, payload). A ``bytes``
#: payload is kept as received and decoded on first access (JSON when it is
#: JSON, else text; see :mod:`mux_core.payload`); anything else is the data.
RawEvent: TypeAlias = tuple[str, str | None, Any]


class Transport:
    """The base of a transport plugin class; register it with ``register("name", cls)``.

    Required: ``Options`` and :meth:`run_session`. A transport implements one
    session -- connect, stream, return or raise -- and nothing else: the core
    waits between attempts, counts them, enforces ``connect_timeout`` and
    keeps the resume state. One instance lives as long as its source, so it
    may keep state across sessions (an ETag, say). Inheriting from
    :class:`Transport` is optional: the core needs only these two members.
    """

    #: An attrs class whose fields are the keys of a ``[[sources]]`` table (besides
    #: ``name``, ``transport`` and ``retry``). Validated before any I/O. It may
    #: define a classmethod ``check(options)`` raising ``ValueError`` for problems
    #: found without I/O (a bad URL scheme): ``mux check`` and ``mux run`` report
    #: it at the table's line, and the source never starts.
    Options: ClassVar[type[Any]]

    def __init__(self, options: Any) -> None:
        #: The validated ``Options`` instance. Build no connection here.
        self.options = options

    async def run_session(self, session: Session) -> None:
        """Run one connection; required.

        Call ``await session.connected()`` once the stream is open,
        ``await session.emit(items)`` with everything parsed from one read,
        and end by raising a :class:`~mux_core.errors.SessionError` subclass
        that says what happened (returning counts as ``Disconnected``; any
        other exception as ``failed``, with the traceback logged). Never sleep
        to retry: raise, and the core retries under the shared policy.
        """
        raise NotImplementedError(f"{type(self).__name__} must define run_session(session)")


@attrs.define
class ResumeState:
    """Per-source state that outlives a session, so a reconnect resumes.

    The core sets ``last_id`` from every emitted event that has an id; a
    transport may set it (and ``cursor``) itself when it knows better -- SSE
    keeps its last event id even across events that are not dispatched.
    """

    #: The last event id seen on this source (sent as Last-Event-ID, resume_param, ...).
    last_id: str | None = None
    #: A transport-defined resume position when an id is not enough.
    cursor: Any = None
    #: A reconnection delay the server asked for (SSE ``retry:``), replacing initial_delay.
    retry_hint: float | None = None
    #: Events delivered so far on this source (the last ``seq`` assigned).
    seq: int = 0
    #: Kept by the core, never by a transport: with durable state
    #: (``--state``), the highest ``seq`` already reserved in the state file.
    #: A batch that would pass it waits until a higher one is saved, so a run
    #: restarted after a crash never hands out a ``seq`` used before
    #: (``docs/architecture.md``, Durability). None: no state file, no limit.
    seq_reserved: int | None = None


class SharedResources:
    """Objects shared by every source of one run, closed when the run ends.

    ``await shared.get("httpx", make_client)`` returns the same object to
    every caller; ``make_client()`` must return an async context manager,
    entered on first use. Used for one ``httpx.AsyncClient`` per process.
    """

    def __init__(self) -> None:
        self._stack = AsyncExitStack()
        import trio

        self._objects: dict[str, Any] = {}
        self._lock = trio.Lock()

    async def get(self, key: str, factory: Callable[[], AbstractAsyncContextManager[T]]) -> T:
        async with self._lock:
            if key not in self._objects:
                self._objects[key] = await self._stack.enter_async_context(factory())
            return cast(T, self._objects[key])

    async def aclose(self) -> None:
        import trio

        with trio.CancelScope(shield=True):
            await self._stack.aclose()
        self._objects.clear()


class Session:
    """One connection attempt of one source, as seen by its transport.

    Created by the supervisor; transports only call its methods.
    """

    # Slots: one of these per source, and 10,000 idle sources should stay small.
    __slots__ = (
        "_delivered",
        "_on_connected",
        "_reserve",
        "_send",
        "_send_events",
        "attempt",
        "connect_timeout",
        "connected_at",
        "events",
        "is_connected",
        "resume",
        "shared",
        "source",
        "transport",
    )

    def __init__(
        self,
        *,
        source: str,
        transport: str,
        resume: ResumeState,
        connect_timeout: float,
        shared: SharedResources,
        send: Callable[[Sequence[Record]], Any],
        attempt: int,
        on_connected: Callable[[], None] = lambda: None,
        send_events: Callable[[Sequence[Record]], Any] | None = None,
        delivered: Callable[[], Awaitable[bool]] | None = None,
        reserve: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        #: The source's name from the config.
        self.source = source
        #: The transport type name ("sse", ...).
        self.transport = transport
        #: State kept across sessions; read ``resume.last_id`` when connecting.
        self.resume = resume
        #: Seconds allowed to reach ``connected()``; the supervisor enforces it too.
        self.connect_timeout = connect_timeout
        #: Run-wide shared objects (one HTTP client per process, ...).
        self.shared = shared
        self.attempt = attempt
        self._send = send
        # Event batches may take a shorter way than Status records: the
        # supervisor only needs to see the statuses (one call less per batch).
        self._send_events = send if send_events is None else send_events
        self._on_connected = on_connected
        self._delivered = delivered
        self._reserve = reserve
        #: True once ``connected()`` was called.
        self.is_connected = False
        #: trio.current_time() at ``connected()``.
        self.connected_at: float | None = None
        #: Events emitted in this session.
        self.events = 0

    async def connected(self, detail: str = "") -> None:
        """Report that the stream is open and delivering; emits ``connected``."""
        import trio

        if self.is_connected:
            return
        self.is_connected = True
        self.connected_at = trio.current_time()
        self._on_connected()
        await self._hand_over_status(State.CONNECTED, detail)

    async def emit(self, items: Iterable[RawEvent]) -> bool:
        """Hand over the events parsed from one read as one batch, in order.

        ``items`` may be any iterable, consumed once before anything awaits: a
        ``zip`` of columns is cheapest (it reuses one tuple for every item).

        Scheduling is the core's: when the batch woke a sink that was waiting
        for records and the batch is small (events trickling in), the run lets
        that sink write it before ``emit`` returns, so a transport never needs
        to yield for latency's sake (``docs/architecture.md``, Scheduling).
        Returns True when the batch woke a sink.
        """
        now = time.time()
        resume = self.resume
        seq = resume.seq
        source, transport = self.source, self.transport
        batch: SizedBatch[Event] = SizedBatch()
        append = batch.append
        size = 0
        raw_type = msgspec.Raw
        for event, id_, data in items:
            seq += 1
            if type(data) is bytes:
                size += len(data)
                data = keep_raw(data)
            elif type(data) is raw_type:
                size += len(data)
            else:
                data = keep_value(data)  # a NaN in it: its JSON with the literal
            append(Event(source, transport, event, id_, data, now, seq))
        if not batch:
            return False
        batch.nbytes = size + RECORD_OVERHEAD * len(batch)
        self.events += len(batch)
        reserved = resume.seq_reserved
        if reserved is not None and seq > reserved and self._reserve is not None:
            # Durable state: no seq reaches a sink before the state file
            # says it was handed out (one save per block of seq values).
            await self._reserve(seq)
        try:
            return bool(await self._send_events(batch))
        finally:
            # Only now: a checkpoint of the resume state (--state) must never
            # cover records that have not reached the sinks' channels yet.
            resume.seq = seq
            # The newest id, found from the end: usually the last event has
            # one, which is cheaper than a test per event in the loop above.
            for record in reversed(batch):
                id_ = record.id
                if id_ is not None:
                    resume.last_id = id_
                    break

    async def relay(self, records: Sequence[Record]) -> bool:
        """Hand over records made elsewhere, as they are, as one batch.

        For a transport that carries other mux processes' records (the
        redis-stream transport): each record keeps its own source,
        transport, seq and times, so sinks see the original sources by
        their own names. Nothing is renumbered, and this source's
        ``resume.seq`` and ``resume.last_id`` are left alone (keep the
        position in ``resume.cursor``). Events count in :attr:`events`, as
        for :meth:`emit`. Returns what :meth:`emit` returns.
        """
        if not records:
            return False
        self.events += len(records)
        return bool(await self._send_events(records))

    async def delivered(self) -> bool:
        """Wait until every sink holds every record handed over so far, durably.

        When it returns True, each sink's ``write`` returned for those records
        and then its ``sync()`` (if it has one) returned: the file sink has
        flushed them to the operating system (and fsynced with ``fsync =
        true``), a redis-stream sink has them in Redis. A record a sink's
        overflow policy dropped counts as handed over. False when a sink
        failed or was dropped before that. A transport that acknowledges to
        its server (XACK, a JetStream ack) awaits this first and acks only on
        True, so an acknowledged record survives a kill -9 of mux
        (``docs/architecture.md``, Durability). Without an engine (a session
        built by hand) it returns True at once.
        """
        if self._delivered is None:
            import trio

            await trio.lowlevel.checkpoint()
            return True
        return await self._delivered()

    async def notice(self, detail: str) -> None:
        """Report something worth knowing that does not change the state
        (an oversized event skipped, ...): a Status with the current state."""
        state = State.CONNECTED if self.is_connected else State.CONNECTING
        await self._hand_over_status(state, detail)

    def set_retry_hint(self, seconds: float | None) -> None:
        """The server's reconnection time (SSE ``retry:``), used instead of initial_delay."""
        if seconds is not None and (math.isnan(seconds) or seconds < 0):
            return
        self.resume.retry_hint = seconds

    async def _hand_over_status(self, state: State, detail: str) -> None:
        await self._send([self._status(state, detail)])

    def _status(self, state: State, detail: str) -> Status:
        return Status(self.source, self.transport, state, self.attempt, None, detail, time.time())
