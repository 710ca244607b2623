"""The running sinks: each in its own task of one long-lived nursery.

:class:`SinkSet` is the one owner of the sinks of a run. The sources put
batches into :attr:`SinkSet.live` (a tuple, read once per batch); a sink
that fails (with ``on_error = "drop"``), is removed by a reload or is being
replaced leaves it first, so no source ever waits on a sink that is gone.
Stopping a sink closes its channel: the sink still gets everything already
in it, then ``aclose()``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from .._config import SinkConfig
from ..errors import PluginError
from ..sink import Overflow, SinkContext, sink_member
from .channel import SinkChannel
from .recordings import Recording, feed_history

__all__ = ["SinkRunner", "SinkSet", "new_sink_runner"]

_log = logging.getLogger("mux.engine")


@attrs.define(eq=False)
class SinkRunner:
    """One sink, its channel and its task."""

    config: SinkConfig
    sink: Any
    channel: SinkChannel
    nursery: trio.Nursery | None = None
    failed: BaseException | None = None
    finished: trio.Event = attrs.field(factory=trio.Event)
    #: Recordings the sink gets before any live record (its ``history`` key).
    history: tuple[Recording, ...] = ()


#: ``start_background`` for a sink's context: starts a task in the sink's nursery.
StartBackground = Callable[[Callable[[], Awaitable[Any]]], None]


def new_sink_runner(
    cls: type[Any],
    cfg: SinkConfig,
    channel: SinkChannel,
    context: Callable[[StartBackground], SinkContext],
) -> SinkRunner:
    """Build a sink of class ``cls`` with its channel, ready for :meth:`SinkSet.start`.

    ``context(start_background)`` makes the sink's :class:`SinkContext` (what
    the run tells its sinks differs between ``mux run`` and ``mux replay``);
    a sink that cannot be created is a :class:`PluginError` naming it.
    """
    runner = SinkRunner(cfg, None, channel)

    def start_background(fn: Callable[[], Awaitable[Any]]) -> None:
        if runner.nursery is None:
            raise RuntimeError("start_background() is available from open() on")
        runner.nursery.start_soon(fn)

    try:
        runner.sink = cls(cfg.options, context(start_background))
    except Exception as exc:
        raise PluginError(f"sink {cfg.name!r} ({cfg.type}) could not be created: {exc}") from exc
    return runner


class SinkSet:
    """Starts, stops and replaces sinks; knows which take records now.

    ``on_failure(runner, exc, started)`` is called when a sink fails (``started``:
    it had opened, so it failed while writing); the set has already taken it
    out of :attr:`live`. ``stopping()`` tells whether the run was asked to stop.
    """

    def __init__(
        self,
        on_failure: Callable[[SinkRunner, BaseException, bool], None],
        *,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self._on_failure = on_failure
        #: Whether a stop was requested (a signal, --for): a sink's history is cut short.
        self._stopping = stopping
        self._nursery: trio.Nursery | None = None
        self._runners: dict[str, SinkRunner] = {}
        #: The sinks still taking records, in start order.
        self.live: tuple[SinkRunner, ...] = ()
        #: Every sink this run had (replaced and removed ones too), for drop counts.
        self.history: list[SinkRunner] = []

    def __iter__(self) -> Any:
        return iter(list(self._runners.values()))

    @property
    def configs(self) -> dict[str, SinkConfig]:
        return {name: runner.config for name, runner in self._runners.items()}

    def dropped(self) -> dict[str, int]:
        """Records dropped per sink name over the run (a replaced sink's too)."""
        dropped: dict[str, int] = {}
        for runner in self.history:
            name = runner.config.name
            dropped[name] = dropped.get(name, 0) + runner.channel.dropped
        return dropped

    async def settle(self, *, blocking_only: bool = False) -> bool:
        """Wait until the sinks hold durably what had entered their channels.

        Each sink is waited for until it has written what was in its channel
        when this was called, then its ``sync()`` is awaited (the file sink
        flushes, and fsyncs with ``fsync = true``). ``blocking_only``: only
        the ``block`` sinks (a checkpoint: the others may drop records
        anyway). False when a sink failed or left meanwhile; its own task
        reports why. Both ``Session.delivered()`` and the ``--state``
        checkpoints stand on this (``docs/architecture.md``, Durability).
        """
        marks = [
            (runner, runner.channel.entered)
            for runner in self.live
            if not blocking_only or runner.channel.overflow is Overflow.BLOCK
        ]
        reached = True
        for runner, mark in marks:
            reached = await runner.channel.wait_finished(mark) and reached
        for runner, _ in marks:
            if runner.failed is not None:
                reached = False
                continue
            try:
                await sink_member(runner.sink, "sync")()
            except Exception:
                reached = False  # the sink's own task reports its failure
        return reached

    def attach(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    async def start(self, runner: SinkRunner) -> None:
        """Open the sink in its own task; once open it takes records."""
        assert self._nursery is not None
        self._runners[runner.config.name] = runner
        self.history.append(runner)
        await self._nursery.start(self._run, runner)
        if runner.failed is None:
            self.live = (*self.live, runner)

    async def stop(self, name: str) -> None:
        """Close the sink's channel and wait until it has written what it had and closed."""
        runner = self._runners.pop(name)
        self._leave(runner)
        runner.channel.close()
        await runner.finished.wait()

    async def replace(self, runner: SinkRunner) -> None:
        await self.stop(runner.config.name)
        await self.start(runner)

    def close_all(self) -> None:
        """End every channel: each sink drains what it has, then closes."""
        for runner in self._runners.values():
            runner.channel.close()

    def drop(self, runner: SinkRunner) -> None:
        """A sink the fan-out found closed: stop offering it records."""
        self._leave(runner)

    def _leave(self, runner: SinkRunner) -> None:
        self.live = tuple(r for r in self.live if r is not runner)

    async def _run(
        self, runner: SinkRunner, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        sink = runner.sink
        started = False
        try:
            async with trio.open_nursery() as background:
                runner.nursery = background
                await sink_member(sink, "open")()
                task_status.started()
                started = True
                if runner.history:
                    await self._feed_history(runner)
                while True:
                    try:
                        batch = await runner.channel.get()
                    except trio.EndOfChannel:
                        break
                    await sink.write(batch)
                await _aclose(sink)
                background.cancel_scope.cancel()
        except Exception as raised:
            exc = _unwrap(raised)
            runner.failed = exc
            self._leave(runner)
            runner.channel.close()
            with trio.CancelScope(shield=True):
                try:
                    await _aclose(sink)
                except Exception:
                    _log.debug(
                        "closing failed sink %r also failed", runner.config.name, exc_info=True
                    )
            self._on_failure(runner, exc, started)
            if not started:
                task_status.started()
        finally:
            runner.finished.set()

    async def _feed_history(self, runner: SinkRunner) -> None:
        """The sink's ``history`` first; live records wait in its channel meanwhile
        (under its overflow policy)."""
        name = runner.config.name
        files = ", ".join(str(recording.path) for recording in runner.history)
        _log.info("sink %r: reading its history (%s)", name, files)
        count = await feed_history(runner.history, runner.sink.write, stopped=self._stopping)
        _log.info("sink %r: %d records of history from %s, then live", name, count, files)


def _unwrap(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (nurseries wrap)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _aclose(sink: Any) -> None:
    await sink_member(sink, "aclose")()
