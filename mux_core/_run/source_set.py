"""The running sources: each a task of one long-lived nursery.

:class:`SourceSet` is the one owner of the sources of a run. A reload, a
discoverer or a restart asks it to start, stop, replace or restart a source
by name; nothing else touches a source's task. Stopping cancels the
source's supervisor (:meth:`Supervisor.stop`): it returns, and a source that was still
live sends ``stopped`` (with why) as its last record. Replacing waits for
that before the new one starts, so a source's records stay in order and
its resume state (last id, cursor, ``seq``) passes to the new one intact.

A source's processors can change while its connection stays: the records
go through :attr:`SourceRunner.chain` as it is at each batch, and a chain
with timers gets its own timer task (cancelled with the chain it ticks).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, TypeAlias

import attrs
import trio

from .._config import SourceConfig
from ..records import State, Status
from ..transport import ResumeState, SharedResources, Transport
from .chain import ProcessorChain
from .supervisor import Supervisor

if TYPE_CHECKING:  # the fan-out hands records on from sources it does not own
    from .fan_out import FanOut

__all__ = ["Reserve", "SourceRunner", "SourceSet"]


#: States a source can be restarted from (``restart_source``).
#: Saves a reservation of seq values: (source, transport, resume state, up to).
Reserve: TypeAlias = Callable[[str, str, ResumeState, int], Awaitable[None]]

RESTARTABLE = frozenset({State.MAX_RETRIES_EXCEEDED, State.FAILED, State.ENDED})


@attrs.define(eq=False)
class SourceRunner:
    """One source: its config, transport, processors, supervisor and task."""

    config: SourceConfig
    transport: Transport
    #: The source's processors (None when no ``[[processors]]`` table applies).
    chain: ProcessorChain | None = None
    #: Resume state to start from (saved by ``--state``, or a replaced runner's), or None.
    resume: ResumeState | None = None
    supervisor: Supervisor | None = None
    #: Asked to stop (:meth:`cancel`); its supervisor stops as soon as it exists.
    cancelled: bool = False
    #: The detail of the ``stopped`` record when this source is stopped.
    stop_reason: str | None = None
    timer_scope: trio.CancelScope | None = None
    #: The source's task has ended.
    finished: bool = False
    #: Made by the first :meth:`wait_finished` that has to wait: most sources
    #: are never waited for (an Event is ~0.3 KB; 100,000 idle sources).
    _finished_event: trio.Event | None = attrs.field(default=None, init=False)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def state(self) -> State | None:
        return None if self.supervisor is None else self.supervisor.state

    def set_finished(self) -> None:
        self.finished = True
        if self._finished_event is not None:
            self._finished_event.set()

    async def wait_finished(self) -> None:
        """Return once the source's task has ended (a checkpoint, as ``Event.wait``)."""
        if self.finished:
            await trio.lowlevel.checkpoint()
            return
        if self._finished_event is None:
            self._finished_event = trio.Event()
        await self._finished_event.wait()

    def cancel(self) -> None:
        """Stop the source's task: its supervisor returns at its next checkpoint.

        The supervisor's own scope is what a stop cancels (no scope of the
        runner's own: one cancel scope less a source; see :class:`Supervisor`).
        """
        self.cancelled = True
        if self.supervisor is not None:
            self.supervisor.stop()

    @property
    def live_resume(self) -> ResumeState | None:
        """The resume state as it is now (the supervisor's, once it runs)."""
        return self.resume if self.supervisor is None else self.supervisor.resume


class SourceSet:
    """Starts, stops, replaces and restarts sources; knows their states.

    Each source's records go through ``fan_out.sender(runner)`` (its quality
    tracker, its processors, then the sinks); what a chain's timer produced
    goes through ``fan_out.send``; ``on_finished(runner)`` is called whenever
    a source's task ends.
    """

    def __init__(
        self,
        fan_out: FanOut,
        *,
        on_finished: Callable[[SourceRunner], None],
        reserve: Reserve | None = None,
    ) -> None:
        self._fan_out = fan_out
        self._reserve = reserve
        self._on_finished = on_finished
        self._runners: dict[str, SourceRunner] = {}
        #: How many of ``_runners`` have a task that has not ended: a count, not a
        #: scan, as every source that ends asks (100,000 sources stopping: O(n^2)).
        self._unfinished = 0
        self._nursery: trio.Nursery | None = None
        self._shared: SharedResources | None = None
        #: The ``stopped`` detail for sources stopped by the run's end.
        self.default_reason = "stop requested"

    def __iter__(self) -> Iterator[SourceRunner]:
        return iter(list(self._runners.values()))

    def __len__(self) -> int:
        return len(self._runners)

    def __contains__(self, name: object) -> bool:
        return name in self._runners

    def get(self, name: str) -> SourceRunner | None:
        return self._runners.get(name)

    @property
    def configs(self) -> dict[str, SourceConfig]:
        return {name: runner.config for name, runner in self._runners.items()}

    def all_finished(self) -> bool:
        return self._unfinished == 0

    def attach(self, nursery: trio.Nursery, shared: SharedResources) -> None:
        self._nursery = nursery
        self._shared = shared

    # -- changes ---------------------------------------------------------

    def start(self, runner: SourceRunner) -> None:
        assert self._nursery is not None
        old = self._runners.get(runner.name)
        if old is not None and not old.finished:
            self._unfinished -= 1  # no longer one of ours: its end is not counted
        self._runners[runner.name] = runner
        self._unfinished += 1
        self._nursery.start_soon(self._run, runner, name=f"source {runner.name}")

    async def stop(self, name: str, reason: str) -> SourceRunner:
        """Stop a source (``stopped`` with ``reason`` if it was live) and forget it."""
        runner = self._runners.pop(name)
        if not runner.finished:
            self._unfinished -= 1
        await self._halt(runner, reason)
        return runner

    async def replace(self, runner: SourceRunner, reason: str, *, keep_resume: bool) -> None:
        """Stop the source of that name, then start ``runner`` in its place.

        ``keep_resume``: the new one goes on from the old one's resume state.
        """
        old = self._runners[runner.name]
        await self._halt(old, reason)
        if keep_resume:
            runner.resume = old.live_resume
        self.start(runner)

    def restart(self, name: str, fresh: SourceRunner) -> bool:
        """Start a source that gave up again, from its resume state; False if it is live."""
        old = self._runners.get(name)
        if old is None or not old.finished or old.state not in RESTARTABLE:
            return False
        fresh.resume = old.live_resume
        self.start(fresh)
        return True

    def set_chain(self, name: str, chain: ProcessorChain | None) -> None:
        """Give a running source new processors; its connection stays."""
        runner = self._runners[name]
        if runner.timer_scope is not None:
            runner.timer_scope.cancel()
            runner.timer_scope = None
        runner.chain = chain
        if chain is not None and chain.timed and not runner.finished:
            self._start_timers(runner, chain)

    def cancel_all(self, reason: str) -> None:
        """Stop every source now (the end of the run)."""
        self.default_reason = reason
        for runner in self._runners.values():
            runner.cancel()

    async def _halt(self, runner: SourceRunner, reason: str) -> None:
        runner.stop_reason = reason
        runner.cancel()
        await runner.wait_finished()

    # -- one source's task -------------------------------------------------

    async def _run(self, runner: SourceRunner) -> None:
        assert self._shared is not None
        cfg = runner.config
        send = self._fan_out.sender(runner)
        reserve = None if self._reserve is None else self._reserve_for(runner, self._reserve)
        supervisor = runner.supervisor = Supervisor(
            source=cfg.name,
            transport_name=cfg.transport,
            transport=runner.transport,
            policy=cfg.retry,
            send=send,
            shared=self._shared,
            delivered=self._fan_out.delivered,
            reserve=reserve,
            resume=runner.resume,
        )
        if runner.cancelled:  # stopped before its task began
            supervisor.stop()
        try:
            if runner.chain is not None and runner.chain.timed:
                self._start_timers(runner, runner.chain)
            await supervisor.run()
            if supervisor.state is None or not supervisor.state.terminal:
                # Still live when asked to stop: say so, last.
                status = Status(
                    cfg.name,
                    cfg.transport,
                    State.STOPPED,
                    max(supervisor.attempt, 1),
                    None,
                    runner.stop_reason or self.default_reason,
                    time.time(),
                )
                await send([status])
                supervisor.state = State.STOPPED
        finally:
            if runner.timer_scope is not None:
                runner.timer_scope.cancel()
            runner.set_finished()
            if self._runners.get(runner.name) is runner:
                self._unfinished -= 1
            self._on_finished(runner)

    @staticmethod
    def _reserve_for(
        runner: SourceRunner, store_reserve: Reserve
    ) -> Callable[[int], Awaitable[None]]:
        # A closure made here, not in _run: its cells would sit in every
        # source's task frame, with or without durable state.
        cfg = runner.config

        async def reserve(upto: int) -> None:
            assert runner.supervisor is not None
            await store_reserve(cfg.name, cfg.transport, runner.supervisor.resume, upto)

        return reserve

    def _start_timers(self, runner: SourceRunner, chain: ProcessorChain) -> None:
        # In the set's own nursery, not one per source: a nursery costs ~1.5 KB,
        # and most sources have no timed processor (10,000 idle sources).
        assert self._nursery is not None
        self._nursery.start_soon(self._run_timers, runner, chain)

    async def _run_timers(self, runner: SourceRunner, chain: ProcessorChain) -> None:
        if runner.finished:
            return
        with trio.CancelScope() as scope:
            runner.timer_scope = scope
            await chain.run_timers(self._fan_out.send)
