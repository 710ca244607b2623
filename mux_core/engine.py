r"""The nursery that joins sources to sinks.

::

    supervisor(source) -> processors --\                  /--> SinkChannel --> sink
    supervisor(source) -> processors ----> fan-out -------> SinkChannel --> sink
    supervisor(source) -> processors --/   (batches)      \--> SinkChannel --> sink

Every source runs under a :class:`~mux_core.supervisor.Supervisor`; each
batch it emits passes through the source's
:class:`~mux_core.processors.ProcessorChain` (when ``[[processors]]`` apply
to it) and is put, in the source's own task, into every sink's
:class:`~mux_core.sinks.SinkChannel`, whose overflow policy decides what a
slow sink costs (a ``block`` sink holds the source back; the others never
do). No task sits in between: a record reaches its sink after one task
switch, which is most of the latency mux adds. Order per source is
preserved end to end.

Shutdown -- on :meth:`Engine.request_stop` (signals, ``--for``, a closed
window, a failed sink) or when every source is terminal -- goes one way
only: live sources are cancelled and each sends ``stopped``; once every
source task has finished, the sink channels are closed; each sink receives
everything left, then is closed (the file sink flushes and fsyncs). Nothing
received is lost.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import trio

from .config import Config, SinkConfig, SourceConfig
from .errors import PluginError
from .events import Alert, Quality, Record, Severity, State, Status
from .plugins import PluginManager
from .processors import ProcessorChain, ProcessorContext
from .quality import QualityTracker
from .session import ResumeState, SharedResources, Transport
from .sinks import Overflow, SinkChannel, SinkContext, SourceInfo
from .state import CHECKPOINT_INTERVAL, StateStore
from .supervisor import Supervisor

__all__ = ["Engine", "RunResult"]

_log = logging.getLogger("mux.engine")

#: Exit codes of DESIGN.md (2 = usage / config error is the CLI's).
EXIT_OK = 0
EXIT_SINK_FAILED = 1
EXIT_SOURCE_FAILED = 3
EXIT_ALERT = 4

_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}

_DROP_REPORT_INTERVAL = 5.0


@attrs.frozen
class RunResult:
    """How a run ended."""

    #: 0 clean stop, 1 a sink with on_error = "stop" failed, 3 a source failed,
    #: 4 an alert at or above the engine's ``fail_on`` severity was raised.
    exit_code: int
    #: The last state of every source.
    final_states: Mapping[str, State]
    #: Why the run stopped ("all sources are terminal", "SIGINT", "--for 10 s elapsed", ...).
    reason: str
    #: Records each sink's channel dropped under its overflow policy.
    dropped: Mapping[str, int]
    #: Every source's connection quality when the run stopped (``mux run``'s table).
    quality: Mapping[str, Quality] = attrs.field(factory=dict)


@attrs.define(eq=False)
class _SinkRunner:
    config: SinkConfig
    sink: Any
    channel: SinkChannel
    nursery: trio.Nursery | None = None
    failed: BaseException | None = None


@attrs.define(eq=False)
class _SourceRunner:
    config: SourceConfig
    transport: Transport
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    supervisor: Supervisor | None = None
    #: The source's processors (None when no ``[[processors]]`` table applies).
    chain: ProcessorChain | None = None
    #: Resume state saved by an earlier run (``--state``), or None.
    resume: ResumeState | None = None
    #: Measures the source's connection quality from every batch it emits.
    quality: QualityTracker | None = None

    @property
    def state(self) -> State | None:
        return None if self.supervisor is None else self.supervisor.state


class Engine:
    """Runs a loaded :class:`~mux_core.config.Config` until it is done.

    ``await engine.run()`` (or ``trio.run(engine.run)``, or a plugin's main
    loop via ``mux_main_loop``) returns a :class:`RunResult`, also kept in
    :attr:`result`. With ``fail_on``, an :class:`~mux_core.Alert` of that
    severity or higher makes the exit code 4 (the run goes on).
    """

    def __init__(
        self,
        config: Config,
        plugins: PluginManager,
        *,
        duration: float | None = None,
        install_signal_handlers: bool = False,
        fail_on: Severity | None = None,
        state_dir: str | None = None,
    ) -> None:
        self.config = config
        directory = state_dir if state_dir is not None else config.state_dir
        #: Where resume states are kept across runs (``--state`` / ``state_dir``), or None.
        self.state_store = StateStore(directory) if directory is not None else None
        self.fail_on = fail_on
        #: Alerts at or above ``fail_on`` seen so far.
        self.failing_alerts = 0
        self.plugins = plugins
        self.duration = duration
        self.install_signal_handlers = install_signal_handlers
        self.result: RunResult | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop_reason: str | None = None
        self._sources: list[_SourceRunner] = []
        self._sinks: list[_SinkRunner] = []
        #: The sinks still taking records (a dropped or failed sink leaves).
        self._live_sinks: tuple[_SinkRunner, ...] = ()
        self._sink_failed = False
        self._final_quality: dict[str, Quality] = {}

    # -- control ---------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop the run cleanly. Safe from any thread and from a host loop's callback."""
        token = self._token
        if token is None:
            if self._stop_reason is None:
                self._stop_reason = reason
            return
        try:
            token.run_sync_soon(self._stop, reason)
        except trio.RunFinishedError:
            pass

    def _stop(self, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
            _log.info("stopping: %s", reason)
        for runner in self._sources:
            runner.scope.cancel()

    # -- the run ---------------------------------------------------------

    async def run(self) -> RunResult:
        """Connect every source, feed every sink, return when done."""
        self._token = trio.lowlevel.current_trio_token()
        shared = SharedResources()
        try:
            if self.state_store is not None:
                self.state_store.load()
            self._sources = [self._make_source(cfg) for cfg in self.config.sources]
            self._sinks = [self._make_sink(cfg) for cfg in self.config.sinks]
            # What is alive now (modules, plugins, config) lives as long as the
            # run: frozen, the cyclic GC stops walking it in every full
            # collection that a stream of short-lived events triggers
            # (+15-20% events/s through one SSE source; benchmarks/RESULTS.md).
            gc.freeze()
            async with trio.open_nursery() as system:
                if self.install_signal_handlers:
                    system.start_soon(self._watch_signals)
                system.start_soon(self._report_drops)
                if self.duration is not None:
                    system.start_soon(self._stop_after, self.duration)
                async with trio.open_nursery() as nursery:
                    for runner in self._sinks:
                        await nursery.start(self._run_sink, runner)
                    self._live_sinks = tuple(self._sinks)
                    if self.state_store is not None:
                        system.start_soon(self._checkpoint_periodically)
                    quality = trio.CancelScope()
                    nursery.start_soon(self._report_quality, quality)
                    async with trio.open_nursery() as sources:
                        for source in self._sources:
                            sources.start_soon(self._run_source, source, shared)
                        if self._stop_reason is not None:
                            self._stop(self._stop_reason)
                    quality.cancel()
                    self._keep_final_quality()
                    for runner in self._sinks:
                        runner.channel.close()
                system.cancel_scope.cancel()
            if self.state_store is not None and not self._sink_failed:
                # Every sink has written and closed (the file sink fsynced):
                # everything each source received is where it should be.
                snapshot = self.state_store.snapshot(self._resume_states())
                await trio.to_thread.run_sync(self.state_store.save, snapshot)
        finally:
            gc.unfreeze()
            await shared.aclose()
        self.result = self._result()
        return self.result

    def _make_sink(self, cfg: SinkConfig) -> _SinkRunner:
        cls = self.plugins.sinks()[cfg.type].cls
        channel = SinkChannel(cfg.buffer, Overflow(cfg.overflow), max_bytes=cfg.buffer_bytes)
        runner = _SinkRunner(cfg, None, channel)

        def start_background(fn: Callable[[], Awaitable[Any]]) -> None:
            if runner.nursery is None:
                raise RuntimeError("start_background() is available from open() on")
            runner.nursery.start_soon(fn)

        context = SinkContext(
            name=cfg.name,
            config_name=self.config.name,
            sources=tuple(SourceInfo(s.name, s.transport) for s in self.config.sources),
            request_stop=self.request_stop,
            start_background=start_background,
            dropped=lambda: channel.dropped,
            retry=self.config.retry,
            resumed={r.config.name: r.resume.seq for r in self._sources if r.resume is not None},
        )
        try:
            runner.sink = cls(cfg.options, context)
        except Exception as exc:
            raise PluginError(
                f"sink {cfg.name!r} ({cfg.type}) could not be created: {exc}"
            ) from exc
        return runner

    def _make_source(self, cfg: SourceConfig) -> _SourceRunner:
        cls = self.plugins.transports()[cfg.transport].cls
        try:
            transport: Transport = cls(cfg.options)
        except Exception as exc:
            raise PluginError(
                f"source {cfg.name!r} ({cfg.transport}) could not be created: {exc}"
            ) from exc
        resume = None
        if self.state_store is not None:
            resume = self.state_store.resume_for(cfg.name, cfg.transport)
        tracker = QualityTracker(
            cfg.name,
            cfg.transport,
            window=self.config.quality_window,
            lag_field=cfg.lag_field,
        )
        return _SourceRunner(
            cfg, transport, chain=self._make_chain(cfg), resume=resume, quality=tracker
        )

    def _make_chain(self, cfg: SourceConfig) -> ProcessorChain | None:
        """One instance of each ``[[processors]]`` table that applies to the source."""
        processors = []
        for proc in self.config.processors:
            if not proc.applies_to(cfg.name):
                continue
            cls = self.plugins.processors()[proc.type].cls
            context = ProcessorContext(cfg.name, cfg.transport, proc.type)
            try:
                processors.append((proc.type, cls(proc.options, context)))
            except Exception as exc:
                raise PluginError(
                    f"processor {proc.type!r} (line {proc.line}) could not be created "
                    f"for source {cfg.name!r}: {exc}"
                ) from exc
        return ProcessorChain(cfg.name, cfg.transport, processors) if processors else None

    def _sender(
        self, chain: ProcessorChain | None, quality: QualityTracker | None = None
    ) -> Callable[[Sequence[Record]], Awaitable[bool]]:
        """What a source's records go through: its quality tracker (which sees
        them as they came), its processors, then the fan-out. The source's
        last Quality goes right before its terminal Status, which stays the
        source's last record (DESIGN.md)."""
        if chain is None and self.fail_on is None and quality is None:
            return self._fan_out

        async def send(batch: Sequence[Record]) -> bool:
            if quality is not None:
                quality.observe(batch)
            if chain is not None:
                batch = chain.run(batch)
                if not batch:
                    return False
            if self.fail_on is not None:
                self._watch_alerts(batch)
            if quality is not None and quality.ended_at is not None and not quality.reported_end:
                batch = self._with_last_quality(quality, batch)
            return await self._fan_out(batch)

        return send

    async def _deliver(self, batch: Sequence[Record]) -> bool:
        """The fan-out of what a processor's timer produced (already through the chain)."""
        if self.fail_on is not None:
            self._watch_alerts(batch)
        return await self._fan_out(batch)

    def _watch_alerts(self, batch: Sequence[Record]) -> None:
        assert self.fail_on is not None
        threshold = _SEVERITY_RANK[self.fail_on]
        for record in batch:
            if type(record) is Alert and _SEVERITY_RANK[record.severity] >= threshold:
                self.failing_alerts += 1

    async def _run_source(self, runner: _SourceRunner, shared: SharedResources) -> None:
        cfg = runner.config
        chain = runner.chain
        send = self._sender(chain, runner.quality)
        supervisor = runner.supervisor = Supervisor(
            source=cfg.name,
            transport_name=cfg.transport,
            transport=runner.transport,
            policy=cfg.retry,
            send=send,
            shared=shared,
            delivered=self._delivered,
            resume=runner.resume,
        )
        if chain is not None and chain.timed:
            # Time-based processors (a stall) get one timer task beside the source.
            async with trio.open_nursery() as timers:
                timers.start_soon(chain.run_timers, self._deliver)
                await self._supervise(runner, supervisor, send)
                timers.cancel_scope.cancel()
        else:
            await self._supervise(runner, supervisor, send)

    async def _supervise(
        self,
        runner: _SourceRunner,
        supervisor: Supervisor,
        send: Callable[[Sequence[Record]], Awaitable[bool]],
    ) -> None:
        cfg = runner.config
        with runner.scope:
            await supervisor.run()
        if supervisor.state is None or not supervisor.state.terminal:
            # Still live when the run was asked to stop: say so, last.
            reason = self._stop_reason or "stop requested"
            status = Status(
                cfg.name,
                cfg.transport,
                State.STOPPED,
                max(supervisor.attempt, 1),
                None,
                reason,
                time.time(),
            )
            await send([status])
            supervisor.state = State.STOPPED

    # -- durable resume (--state) ----------------------------------------

    def _resume_states(self) -> dict[str, tuple[str, ResumeState]]:
        return {
            r.config.name: (r.config.transport, r.supervisor.resume)
            for r in self._sources
            if r.supervisor is not None
        }

    async def _checkpoint_periodically(self) -> None:
        while True:
            await trio.sleep(CHECKPOINT_INTERVAL)
            if not await self._checkpoint():
                return

    async def _checkpoint(self) -> bool:
        """Save every source's resume state once what it covers is durable.

        The states are copied first; then every ``block`` sink is waited for
        until it has written what had entered its channel by then, and
        synced (``sink.sync()``: the file sink flushes, and fsyncs when
        ``fsync = true``); only then is the copy saved. False when a sink
        failed meanwhile: no more checkpoints (the final save is skipped too).
        """
        store = self.state_store
        assert store is not None
        snapshot = store.snapshot(self._resume_states())
        marks = [
            (runner, runner.channel.entered)
            for runner in self._live_sinks
            if runner.channel.overflow is Overflow.BLOCK
        ]
        for runner, mark in marks:
            if not await runner.channel.wait_finished(mark):
                return False
        for runner, _ in marks:
            sync = getattr(runner.sink, "sync", None)
            if sync is not None:
                try:
                    await sync()
                except Exception:
                    return False  # the sink's own task reports its failure
        await trio.to_thread.run_sync(store.save, snapshot)
        return True

    # -- connection quality ----------------------------------------------

    def _dropped(self) -> dict[str, int]:
        return {r.config.name: r.channel.dropped for r in self._sinks}

    def _quality_records(self) -> list[Quality]:
        """A Quality record per source still running (an ended one sent its last)."""
        dropped = self._dropped()
        return [
            runner.quality.snapshot(dropped)
            for runner in self._sources
            if runner.quality is not None and runner.quality.ended_at is None
        ]

    def _with_last_quality(self, tracker: QualityTracker, batch: Sequence[Record]) -> list[Record]:
        """The batch with the terminal Status, after the source's last Quality."""
        tracker.reported_end = True
        last = self._final_quality[tracker.source] = tracker.snapshot(self._dropped())
        if self.config.quality_interval <= 0:
            return list(batch)
        return [last, *batch]

    async def _report_quality(self, scope: trio.CancelScope) -> None:
        """Every ``quality_interval`` seconds, each source's Quality through the fan-out."""
        interval = self.config.quality_interval
        if interval <= 0:
            return
        with scope:
            while True:
                await trio.sleep(interval)
                records = self._quality_records()
                if records:
                    await self._fan_out(records)

    def _keep_final_quality(self) -> None:
        """Every source's last Quality for the result (taken at its terminal state)."""
        dropped = self._dropped()
        final = {}
        for runner in self._sources:
            name = runner.config.name
            if name in self._final_quality:
                final[name] = self._final_quality[name]
            elif runner.quality is not None:  # the source's task never got that far
                final[name] = runner.quality.snapshot(dropped)
        self._final_quality = final

    async def _delivered(self) -> bool:
        """Wait until every live sink has written every record put so far
        (``Session.delivered``); False if a sink failed or left meanwhile."""
        marks = [(runner.channel, runner.channel.entered) for runner in self._live_sinks]
        reached = True
        for channel, mark in marks:
            reached = await channel.wait_finished(mark) and reached
        return reached

    async def _fan_out(self, batch: Sequence[Record]) -> bool:
        """Hand one batch to every live sink, in the emitting source's task.

        Without waiting when every sink has room (the common case: no
        checkpoint, no cancel scope on a record's path); otherwise
        :meth:`_fan_out_waiting` takes over from the first sink that is full.
        Returns whether the batch woke a sink that was waiting for records
        (what ``Session.emit`` tells its transport).
        """
        sinks = self._live_sinks
        woke = False
        for index, runner in enumerate(sinks):
            channel = runner.channel
            waiting = channel.reader_waiting
            if not channel.offer(batch):
                await self._fan_out_waiting(batch, sinks[index:])
                return woke
            woke = woke or waiting
        return woke

    async def _fan_out_waiting(self, batch: Sequence[Record], sinks: Sequence[_SinkRunner]) -> None:
        """The rest of a fan-out, waiting for room where a ``block`` sink is full.

        Shielded: once received, a batch reaches every sink even when the
        source is being stopped while a ``block`` sink makes it wait (a
        second Ctrl-C is the way out of a sink that never drains).
        """
        with trio.CancelScope(shield=True):
            for runner in sinks:
                try:
                    await runner.channel.put(batch)
                except trio.ClosedResourceError:  # the sink failed or was dropped
                    self._live_sinks = tuple(r for r in self._live_sinks if r is not runner)

    async def _run_sink(
        self, runner: _SinkRunner, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        sink = runner.sink
        started = False
        try:
            async with trio.open_nursery() as background:
                runner.nursery = background
                opener = getattr(sink, "open", None)
                if opener is not None:
                    await opener()
                task_status.started()
                started = True
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
            runner.channel.close()
            with trio.CancelScope(shield=True):
                try:
                    await _aclose(sink)
                except Exception:
                    _log.debug(
                        "closing failed sink %r also failed", runner.config.name, exc_info=True
                    )
            where = "opening" if not started else "writing"
            message = (
                f"sink {runner.config.name!r} ({runner.config.type}) failed while {where}: {exc}"
            )
            if runner.config.on_error == "stop":
                _log.error('%s; stopping the run (on_error = "stop")', message)
                self._sink_failed = True
                self._stop(f"sink {runner.config.name!r} failed")
            else:
                _log.error('%s; dropping this sink, the run goes on (on_error = "drop")', message)
            if not started:
                task_status.started()

    async def _stop_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self._stop(f"--for {seconds:g} s elapsed")

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if self._stop_reason is None:
                    self._stop(name)
                    continue
                # A second signal while shutting down: the user wants out now.
                print(f"mux: {name} again, exiting without waiting", file=sys.stderr, flush=True)
                os._exit(130)

    async def _report_drops(self) -> None:
        reported = {runner.config.name: 0 for runner in self._sinks}
        while True:
            await trio.sleep(_DROP_REPORT_INTERVAL)
            self._log_drops(reported)

    def _log_drops(self, reported: dict[str, int]) -> None:
        for runner in self._sinks:
            name = runner.config.name
            dropped = runner.channel.dropped
            if dropped > reported.get(name, 0):
                _log.log(
                    _drop_log_level(runner.channel.overflow),
                    "sink %r fell behind: %d records dropped so far (overflow = %r)",
                    name,
                    dropped,
                    runner.channel.overflow.value,
                )
                reported[name] = dropped

    def _result(self) -> RunResult:
        states = {r.config.name: r.state or State.STOPPED for r in self._sources}
        dropped = {r.config.name: r.channel.dropped for r in self._sinks}
        for runner in self._sinks:
            if runner.channel.dropped:
                _log.log(
                    max(_drop_log_level(runner.channel.overflow), logging.INFO),
                    "sink %r dropped %d records in this run (overflow = %r)",
                    runner.config.name,
                    runner.channel.dropped,
                    runner.channel.overflow.value,
                )
        if self._sink_failed:
            code = EXIT_SINK_FAILED
        elif any(s in (State.FAILED, State.MAX_RETRIES_EXCEEDED) for s in states.values()):
            code = EXIT_SOURCE_FAILED
        elif self.failing_alerts:
            code = EXIT_ALERT
        else:
            code = EXIT_OK
        reason = self._stop_reason or "every source reached a terminal state"
        return RunResult(code, states, reason, dropped, self._final_quality)


def _drop_log_level(overflow: Overflow) -> int:
    """``latest`` drops by design (a UI shows "now"); the others drop only when behind."""
    return logging.DEBUG if overflow is Overflow.LATEST else logging.WARNING


def _unwrap(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (nurseries wrap)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _aclose(sink: Any) -> None:
    closer = getattr(sink, "aclose", None)
    if closer is not None:
        await closer()
