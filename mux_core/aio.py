"""asyncio client libraries inside a transport: an asyncio loop in a thread of its own.

mux runs on trio. A client library written for asyncio (nats-py, aiokafka,
redis.asyncio, ...) runs here on a plain asyncio event loop in a worker
thread, one loop per ``async with`` block -- per session, so nothing of a
connection outlives its attempt::

    async with asyncio_loop() as loop:
        inbox: AsyncioChannel[Msg] = loop.channel(max_items=1024)
        nc = await loop.run(nats.connect(url, allow_reconnect=False, error_cb=...))
        loop.at_exit(nc.close)
        await loop.run(nc.subscribe(subject, cb=inbox.put))
        await session.connected()
        async for batch in inbox:               # everything that arrived meanwhile
            await session.emit([(m.subject, None, m.data) for m in batch])

- :meth:`AsyncioLoop.run` runs one coroutine on the loop and returns its
  result, or raises its exception -- the same object, type, cause and all.
  Cancelling the trio side cancels the asyncio task and waits for it.
- :meth:`AsyncioLoop.channel` hands items from asyncio code (a library's
  message callback) to trio, bounded: ``put`` waits while ``max_items`` are
  held, so a slow sink slows the library, as with any transport.
- :meth:`AsyncioLoop.fail` is for the library's error and close callbacks:
  the first error given ends the session -- a pending ``run`` and the
  channel's receiver raise it (the channel after handing out what it holds).
- When the block exits, the ``at_exit`` callbacks run on the loop (close the
  connection), the loop's remaining tasks are cancelled and awaited, and the
  thread ends -- all within ``close_timeout`` seconds.
- Exceptions nobody retrieved inside the loop (a library's background task)
  go to the ``mux.aio`` logger at debug level, never to stderr.

:func:`session_error` turns what such a library raised into the
:class:`~mux_core.errors.SessionError` that says how the session ended:
"connection refused", not the library's wording.

Why a thread and not trio-asyncio: the library keeps an unmodified asyncio
loop (trio-asyncio patches asyncio's loop functions for the whole process),
its busy moments stay off mux's event loop, which meets it once per batch,
and a trio cancellation reaches it as a plain ``task.cancel()``; the CPU
cost per message is about the same (docs/plugins/asyncio-clients.md has the
measurements). Prefer a trio or anyio client when there is one.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import Disconnected, Failed, ServerUnavailable, SessionError, describe_connection_error

if TYPE_CHECKING:
    import asyncio
    import threading

    import trio

# asyncio, threading and trio are imported where a run uses them, not here:
# every mux command imports every plugin, and a plugin imports this module.

__all__ = ["AsyncioChannel", "AsyncioLoop", "asyncio_loop", "session_error"]

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

_log = logging.getLogger("mux.aio")

#: Longest detail taken from an exception's text when nothing better is known.
_DETAIL_CHARS = 200


@asynccontextmanager
async def asyncio_loop(*, close_timeout: float = 5.0) -> AsyncIterator[AsyncioLoop]:
    """An asyncio event loop in a thread of its own, for the length of the block.

    On exit -- normal, an exception, or trio cancelling the session -- the
    ``at_exit`` callbacks run on the loop, its remaining tasks are cancelled
    and awaited, and the thread ends; ``close_timeout`` seconds bound all of
    it. A loop that does not stop in time (asyncio code stuck in a blocking
    call) is left to its daemon thread, with a warning on the ``mux.aio``
    logger.
    """
    import threading

    import trio

    loop = AsyncioLoop(_new_event_loop(), trio.lowlevel.current_trio_token(), close_timeout)
    thread = threading.Thread(target=loop._thread_main, name="mux-asyncio", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        await loop._close(thread)


class AsyncioLoop:
    """One asyncio event loop in its own thread; made by :func:`asyncio_loop`.

    :meth:`run` and :meth:`channel`'s receiving side are called from trio;
    :meth:`fail` from either side; ``put`` of a channel, :meth:`start`'s
    coroutine and every library callback run on the asyncio loop.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken, close_timeout: float
    ) -> None:
        import threading

        #: The asyncio event loop itself (for ``call_soon_threadsafe`` and the like).
        self.loop = loop
        self._token = token
        self._close_timeout = close_timeout
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self._closing = False
        # trio events to set when the loop fails: the waits of run() and receive().
        self._waiters: set[trio.Event] = set()
        self._at_exit: list[Callable[[], Awaitable[object]]] = []
        self._stop: asyncio.Event | None = None
        self._stopped: trio.Event | None = None
        loop.set_exception_handler(_log_unretrieved)

    # -- trio side ---------------------------------------------------------

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the asyncio loop; its result, or its exception re-raised.

        When trio cancels the caller, the asyncio task is cancelled and
        awaited (up to ``close_timeout``) before ``Cancelled`` goes on. When
        the loop fails (:meth:`fail`) first, the task is cancelled the same
        way and the failure is raised.
        """
        import trio

        finished = trio.Event()  # the task is done
        woken = trio.Event()  # the task is done, or the loop failed
        started: list[asyncio.Task[T]] = []  # appended on the asyncio loop, read once done

        def start() -> None:
            task = self.loop.create_task(coro)
            started.append(task)
            task.add_done_callback(lambda _: self._wake(finished, woken))

        def cancel() -> None:  # queued after start(): the task exists
            started[0].cancel()

        if self._failure is not None:
            coro.close()
            await trio.lowlevel.checkpoint()
            raise self._failure
        self._call_soon(start, coro)
        try:
            await self._wait(woken)
        except trio.Cancelled:
            self._call_soon(cancel)
            with trio.CancelScope(shield=True), trio.move_on_after(self._close_timeout):
                await finished.wait()
            raise
        if not finished.is_set():  # the loop failed while the task ran
            self._call_soon(cancel)
            with trio.CancelScope(shield=True), trio.move_on_after(self._close_timeout):
                await finished.wait()
            assert self._failure is not None
            raise self._failure
        task = started[0]
        if task.cancelled() and self._failure is not None:
            raise self._failure
        return task.result()

    def channel(self, *, max_items: int) -> AsyncioChannel[Any]:
        """A bounded hand-over from asyncio code to trio; see :class:`AsyncioChannel`.

        Annotate the variable to type its items:
        ``inbox: AsyncioChannel[Msg] = loop.channel(max_items=1024)``.
        """
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        return AsyncioChannel(self, max_items)

    def start(self, coro: Coroutine[Any, Any, object]) -> None:
        """Run ``coro`` on the loop in the background; an exception from it fails the loop.

        For pulling from a library that offers an async iterator rather
        than a callback (``async for message in pubsub.listen(): await
        inbox.put(message)``). The task is cancelled when the block exits.
        """

        def start() -> None:
            task = self.loop.create_task(coro)
            task.add_done_callback(self._task_ended)

        self._call_soon(start, coro)

    def at_exit(self, callback: Callable[[], Awaitable[object]]) -> None:
        """Await ``callback()`` on the loop when the block exits (``loop.at_exit(nc.close)``).

        The callbacks run last registered first, before the loop's other
        tasks are cancelled, within ``close_timeout``; what they raise is
        logged at debug level.
        """
        self._at_exit.append(callback)

    # -- either side -------------------------------------------------------

    def fail(self, error: BaseException) -> None:
        """End the session with ``error``: the first call wins, later ones are ignored.

        Safe from any thread; meant for a library's error and close
        callbacks. A pending :meth:`run` raises ``error`` at once (its task
        is cancelled), and a channel's receiver raises it once it has handed
        out what it holds. Ignored once the block is exiting.
        """
        with self._lock:
            if self._failure is not None or self._closing:
                return
            self._failure = error
            waiters = list(self._waiters)
        for event in waiters:
            self._wake(event)

    @property
    def failure(self) -> BaseException | None:
        """The error given to :meth:`fail` first, or None."""
        return self._failure

    # -- machinery ---------------------------------------------------------

    async def _wait(self, event: trio.Event) -> None:
        """Wait until ``event`` is set or the loop fails (then ``event`` may be unset)."""
        with self._lock:
            if self._failure is not None:
                failed = True
            else:
                failed = False
                self._waiters.add(event)
        if failed:
            import trio

            await trio.lowlevel.checkpoint()
            return
        try:
            await event.wait()
        finally:
            with self._lock:
                self._waiters.discard(event)

    def _wake(self, *events: trio.Event) -> None:
        """Set trio events from any thread (a no-op once trio has stopped)."""
        import trio

        def wake() -> None:
            for event in events:
                event.set()

        try:
            self._token.run_sync_soon(wake)
        except trio.RunFinishedError:
            pass

    def _call_soon(
        self, callback: Callable[[], None], coro: Coroutine[Any, Any, Any] | None = None
    ) -> None:
        import contextvars

        try:  # in a context of its own: the asyncio side sees none of the trio task's
            self.loop.call_soon_threadsafe(callback, context=contextvars.Context())
        except RuntimeError:  # the loop is closed: its thread ended
            if coro is not None:
                coro.close()
            raise RuntimeError("the asyncio loop has stopped (its block has exited)") from None

    def _task_ended(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            self.fail(error)

    def _thread_main(self) -> None:
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self.loop.close()
            if self._stopped is not None:
                self._wake(self._stopped)

    async def _serve(self) -> None:
        """The loop's main task: wait for the exit, then close everything in time."""
        import asyncio

        stop = self._stop = asyncio.Event()
        await stop.wait()
        deadline = self.loop.time() + self._close_timeout
        for callback in reversed(self._at_exit):
            try:
                await asyncio.wait_for(callback(), max(0.0, deadline - self.loop.time()))
            except Exception as exc:
                _log.debug("an at_exit callback of an asyncio loop failed: %r", exc)
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=max(0.0, deadline - self.loop.time()))
        await self.loop.shutdown_asyncgens()
        # The default executor's threads (getaddrinfo runs there) end with the loop.
        shutdown = self.loop.create_task(self.loop.shutdown_default_executor())
        await asyncio.wait([shutdown], timeout=max(0.0, deadline - self.loop.time()))

    async def _close(self, thread: threading.Thread) -> None:
        import trio

        with self._lock:
            self._closing = True
        stopped = self._stopped = trio.Event()

        def stop() -> None:
            if self._stop is None:  # _serve has not started yet: let it stop at once
                self.loop.call_soon(stop)
            else:
                self._stop.set()

        try:
            self.loop.call_soon_threadsafe(stop)
        except RuntimeError:  # already closed: the thread has ended
            stopped.set()
        if not thread.is_alive():
            stopped.set()
        with trio.CancelScope(shield=True), trio.move_on_after(self._close_timeout + 1.0):
            await stopped.wait()
        if stopped.is_set():
            thread.join(1.0)  # it is returning: signalled as its last step
        else:
            _log.warning(
                "an asyncio loop did not stop within %g s; its thread is left running",
                self._close_timeout,
            )


class AsyncioChannel(Generic[T]):
    """Items from asyncio code to trio, at most ``max_items`` held at once.

    The asyncio side calls ``await put(item)`` -- pass ``channel.put`` as a
    library's message callback; it waits while the channel is full. The trio
    side receives *everything* held at once, as a list: ``await
    receive()``, or ``async for batch in channel``, one batch per
    ``session.emit``. When the loop has failed, the receiver gets what is
    left, then the failure is raised.
    """

    def __init__(self, owner: AsyncioLoop, max_items: int) -> None:
        self._owner = owner
        self._max_items = max_items
        self._items: deque[T] = deque()
        self._receiver: trio.Event | None = None
        self._senders: list[asyncio.Future[None]] = []

    async def put(self, item: T) -> None:
        """Add ``item``; on the asyncio loop only. Waits while ``max_items`` are held."""
        owner = self._owner
        while True:
            with owner._lock:
                if len(self._items) < self._max_items:
                    self._items.append(item)
                    receiver, self._receiver = self._receiver, None
                    break
                room = owner.loop.create_future()
                self._senders.append(room)
            await room
        if receiver is not None:
            owner._wake(receiver)

    async def receive(self) -> list[T]:
        """Everything held, at least one item, oldest first; from trio.

        Raises the loop's failure (:meth:`AsyncioLoop.fail`) once nothing
        is left to hand out.
        """
        import trio

        owner = self._owner
        waited = False
        while True:
            with owner._lock:
                if self._items:
                    batch = list(self._items)
                    self._items.clear()
                    senders, self._senders = self._senders, []
                    break
                if owner._failure is not None:
                    failure = owner._failure
                else:
                    failure = None
                    receiver = self._receiver = trio.Event()
            if failure is not None:
                if not waited:
                    await trio.lowlevel.checkpoint()
                raise failure
            waited = True
            try:
                await owner._wait(receiver)
            finally:
                with owner._lock:
                    if self._receiver is receiver:
                        self._receiver = None
        if senders:
            owner._call_soon(lambda: _release(senders))
        if not waited:
            await trio.lowlevel.checkpoint()
        return batch

    def __aiter__(self) -> AsyncioChannel[T]:
        return self

    async def __anext__(self) -> list[T]:
        return await self.receive()


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """A plain asyncio loop of the platform's kind, made without asyncio's policy.

    trio-asyncio, once any plugin imports it, replaces the policy and
    ``asyncio.new_event_loop`` for the whole process (inside trio it refuses).
    """
    import asyncio
    import sys

    if sys.platform == "win32":
        return asyncio.ProactorEventLoop()
    return asyncio.SelectorEventLoop()


def _release(senders: list[asyncio.Future[None]]) -> None:
    for room in senders:
        if not room.done():
            room.set_result(None)


def _log_unretrieved(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's exception handler: what nobody retrieved goes to the debug log."""
    error = context.get("exception")
    _log.debug("asyncio: %s%s", context.get("message", ""), f": {error!r}" if error else "")


def session_error(
    exc: BaseException,
    *,
    connected: bool,
    words: Mapping[type[E], str] | None = None,
    permanent: tuple[type[BaseException], ...] = (),
) -> SessionError:
    """The :class:`SessionError` for what an asyncio client library raised.

    A :class:`SessionError` is returned as it is. Otherwise the detail is
    the first entry of ``words`` whose type ``exc`` is an instance of (the
    library's own exceptions in a user's words:
    ``{nats.errors.UnexpectedEOF: "the server closed the connection"}``),
    else what :func:`~mux_core.errors.describe_connection_error` finds in
    it and its causes ("connection refused", "connection reset", "DNS
    lookup failed: ...", a TLS failure, "connect timed out"), else the
    exception's type and text. An exception of a ``permanent`` type (the
    library's authentication error, say) is :class:`Failed`; any other is
    :class:`ServerUnavailable` before the session was ``connected`` and
    :class:`Disconnected` after -- retried under mux's policy, the library's
    own reconnects being off. Use it as
    ``raise session_error(exc, connected=True) from exc``.
    """
    if isinstance(exc, SessionError):
        return exc
    detail = next((text for kind, text in (words or {}).items() if isinstance(exc, kind)), None)
    if detail is None:
        detail = describe_connection_error(exc)
        if connected and detail == "connect timed out":
            detail = "timed out"
    if detail is None:
        text = " ".join(str(exc).split())
        detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        if len(detail) > _DETAIL_CHARS:
            detail = detail[: _DETAIL_CHARS - 3] + "..."
    if isinstance(exc, permanent):
        return Failed(detail)
    if connected:
        return Disconnected(detail)
    return ServerUnavailable(detail)
