r"""The nursery that joins sources to sinks, and changes them while running.

::

    supervisor(source) -> processors --\                  /--> SinkChannel --> sink
    supervisor(source) -> processors ----> fan-out -------> SinkChannel --> sink
    supervisor(source) -> processors --/   (batches)      \--> SinkChannel --> sink

Every source runs under a :class:`~mux_core._run.supervisor.Supervisor`; each
batch it emits passes through the source's
:class:`~mux_core._run.chain.ProcessorChain` (when ``[[processors]]`` apply
to it) and is put, in the source's own task, into every sink's
:class:`~mux_core._run.channel.SinkChannel`, whose overflow policy decides what a
slow sink costs (a ``block`` sink holds the source back; the others never
do). No task sits in between: a record reaches its sink after one task
switch, which is most of the latency mux adds. Order per source is
preserved end to end.

Who owns what: :class:`~mux_core._run.source_set.SourceSet` owns the running
sources (each in its own cancel scope inside one long-lived nursery),
:class:`~mux_core._run.sink_set.SinkSet` the running sinks. The engine decides
*what* should run -- the config's ``[[sources]]`` plus what the
discoverers found -- and every change (a reload on SIGHUP or ``--watch``,
a discoverer's update, a restart) goes through one lock, one change at a
time, as a plan computed by :mod:`mux_core._run.changes`: only what differs is
started, stopped or restarted.

Shutdown -- on :meth:`Engine.request_stop` (signals, ``--for``, a closed
window, a failed sink) or when every source is terminal (unless sources
may still come: ``--watch`` or ``[[discovery]]``) -- goes one way only:
live sources are cancelled and each sends ``stopped``; once every source
task has finished, the sink channels are closed; each sink receives
everything left, then is closed (the file sink flushes and fsyncs).
Nothing received is lost.
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio

from .._config import Config, SinkConfig, SourceConfig
from .._plugins import PluginManager
from ..errors import PluginError
from ..records import Quality, Severity, State
from ..sink import Overflow, SinkContext, SourceInfo
from ..transport import ResumeState, SharedResources, Transport
from .chain import ProcessorChain, build_chain
from .changes import RunChanges
from .channel import SinkChannel
from .fail_on import FailingAlert, FailOn
from .fan_out import FanOut
from .host import ExitCode, RunHost
from .quality_feed import QualityFeed
from .recordings import history_of
from .sink_set import (
    SinkRunner,
    StartBackground,
    new_sink_runner,
)
from .source_set import Reserve, SourceRunner, SourceSet
from .state import Checkpoints, StateStore

__all__ = ["Engine", "RunResult", "build_sink"]

_log = logging.getLogger("mux.engine")


_DROP_REPORT_INTERVAL = 5.0

#: Seconds between two looks at the config file with ``--watch``.
WATCH_INTERVAL = 1.0


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


class Engine(RunHost):
    """Runs a loaded :class:`~mux_core._config.Config` until it is done.

    ``await engine.run()`` (or ``trio.run(engine.run)``, or a plugin's main
    loop via ``mux_main_loop``) returns a :class:`RunResult`, also kept in
    :attr:`result`. With ``fail_on``, an :class:`~mux_core.Alert` of that
    severity or higher makes the exit code 4 (the run goes on; with
    ``fail_fast`` it stops cleanly at the first one).

    ``load_config`` (a function returning the config file's current
    content, validated) makes the run reloadable: on SIGHUP (with
    ``install_signal_handlers``), on :meth:`request_reload`, and every
    ``watch`` seconds when the file changed.
    """

    def __init__(
        self,
        config: Config,
        plugins: PluginManager,
        *,
        duration: float | None = None,
        install_signal_handlers: bool = False,
        fail_on: Severity | None = None,
        fail_fast: bool = False,
        state_dir: str | None = None,
        load_config: Callable[[], Config] | None = None,
        watch: float | None = None,
        reserve: Reserve | None = None,
    ) -> None:
        directory = state_dir if state_dir is not None else config.state_dir
        #: Where resume states are kept across runs (``--state`` / ``state_dir``), or None.
        self.state_store = StateStore(directory) if directory is not None else None
        self.plugins = plugins
        self.duration = duration
        super().__init__(install_signal_handlers=install_signal_handlers)
        self.load_config = load_config
        self.watch = watch
        self.result: RunResult | None = None
        self._done = trio.Event()
        # The parts of the run, each given what it uses (docs/architecture.md, The run):
        # sinks (the host's), quality, the fan-out, sources, and the changes, which
        # hold the config in effect and run the discoverers.
        self._quality = QualityFeed(self._sinks, interval=config.quality_interval)
        #: ``--fail-on``: the alerts that make the exit code 4, the first of them.
        self.fail_on = (
            None
            if fail_on is None
            else FailOn(fail_on, fail_fast=fail_fast, on_first=self._fail_fast)
        )
        self._fan_out = FanOut(self._sinks, self._quality, self.fail_on)
        self._sources = SourceSet(
            self._fan_out,
            on_finished=lambda _runner: self._check_done(),
            # A worker of ``--workers`` has no state file; its parent saves its
            # reservations (``reserve``).
            reserve=self.state_store.reserve if self.state_store is not None else reserve,
        )
        self._quality.sources = self._sources
        self._changes = RunChanges(
            self, config, self._sources, self._sinks, changed=self._check_done
        )
        self._control: trio.Nursery | None = None

    @property
    def config(self) -> Config:
        """The config in effect: the one the run started with, or the last one applied."""
        return self._changes.config

    @property
    def failing_alerts(self) -> int:
        """Alerts at or above ``fail_on`` seen so far."""
        return 0 if self.fail_on is None else self.fail_on.count

    def _fail_fast(self, found: FailingAlert) -> None:
        """``--fail-fast``: the first alert at or above ``--fail-on`` stops the run cleanly."""
        self._stop(f"--fail-fast: {found.describe()}")

    # -- control (safe from any thread) ---------------------------------------

    def request_reload(self) -> None:
        """Reload the config file (as SIGHUP does). Safe from any thread."""
        self._call_soon(self._spawn, self._changes.reload)

    def restart_source(self, name: str) -> None:
        """Start source ``name`` again if it gave up (``max_retries_exceeded``), failed or
        ended, going on from its resume state. Safe from any thread: a UI's button."""
        self._call_soon(self._spawn, self._changes.restart, name)

    def source_states(self) -> dict[str, State | None]:
        """The last state of every source now running or finished (None: not started yet)."""
        return {runner.name: runner.state for runner in self._sources}

    def _spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._control is not None:
            self._control.start_soon(fn, *args)

    def _stop(self, reason: str) -> None:
        super()._stop(reason)
        assert self._stop_reason is not None
        self._sources.cancel_all(self._stop_reason)
        self._done.set()

    def _keep_alive(self) -> bool:
        """Whether sources may still come when none is live (so the run waits)."""
        return self.watch is not None or bool(self.config.discovery)

    def _check_done(self) -> None:
        if self._changes.busy or self._keep_alive():
            return
        if self._sources.all_finished():
            self._done.set()

    # -- the run ---------------------------------------------------------

    async def run(self) -> RunResult:
        """Connect every source, feed every sink, return when done."""
        self._token = trio.lowlevel.current_trio_token()
        shared = SharedResources()
        try:
            if self.state_store is not None:
                self.state_store.load()
            sources = [self.make_source(cfg) for cfg in self.config.sources]
            sinks = [self.make_sink(cfg, sources) for cfg in self.config.sinks]
            if self.install_signal_handlers:
                # The run owns the process (mux run): what is alive now (modules,
                # plugins, config) lives as long as the run, so frozen, the cyclic
                # GC stops walking it in every full collection that a stream of
                # short-lived events triggers (+15-20% events/s through one SSE
                # source; benchmarks/RESULTS.md). Never undone: gc.unfreeze()
                # would also thaw what an embedding application froze itself.
                gc.freeze()
            async with trio.open_nursery() as system:
                if self.install_signal_handlers:
                    system.start_soon(self._watch_signals)
                system.start_soon(self._report_drops)
                if self.duration is not None:
                    system.start_soon(self._stop_after, self.duration)
                async with trio.open_nursery() as sink_nursery:
                    self._sinks.attach(sink_nursery)
                    for sink in sinks:
                        await self._sinks.start(sink)
                    if self.state_store is not None:
                        checkpoints = Checkpoints(
                            self.state_store, self._sinks, self._resume_states, self._moved_states
                        )
                        system.start_soon(checkpoints.run_periodically)
                    quality = trio.CancelScope()
                    sink_nursery.start_soon(self._quality.report, quality, self._fan_out.send)
                    async with trio.open_nursery() as source_nursery:
                        self._sources.attach(source_nursery, shared)
                        for source in sources:
                            self._sources.start(source)
                        await self._control_until_done()
                        self._sources.cancel_all(self._stop_reason or "stop requested")
                    quality.cancel()
                    self._quality.keep_final()
                    self._sinks.close_all()
                system.cancel_scope.cancel()
            if self.state_store is not None and not self._sink_failed:
                # Every sink has written and closed (the file sink fsynced):
                # everything each source received is where it should be.
                snapshot = self.state_store.snapshot(self._resume_states(), final=True)
                await self.state_store.save(snapshot, final=True)
        finally:
            await shared.aclose()
        self.result = self._result()
        return self.result

    async def _control_until_done(self) -> None:
        """Host the tasks that change the running set, until the run is to end."""
        async with trio.open_nursery() as control:
            self._control = self._changes.nursery = control
            if self.watch is not None and self.load_config is not None:
                control.start_soon(self._changes.watch_file, self.watch)
            self._changes.start_discovery()
            if self._stop_reason is not None:
                self._stop(self._stop_reason)
            self._check_done()
            await self._done.wait()
            self._control = self._changes.nursery = None
            control.cancel_scope.cancel()

    # -- building sources and sinks ---------------------------------------------

    def make_sink(self, cfg: SinkConfig, sources: Sequence[SourceRunner] = ()) -> SinkRunner:
        """A sink and its channel; ``sources``: the runners about to start (else the
        running ones)."""
        running = list(sources or self._sources)
        return build_sink(
            self,
            cfg,
            tuple(SourceInfo(r.name, r.config.transport, r.config.stale_after) for r in running),
            resumed=self._resumed(running),
        )

    def _resumed(self, running: Sequence[SourceRunner]) -> dict[str, int]:
        """For a sink's context: each source whose records after a seq may
        come again (a crash after that seq was saved), with that seq."""
        store = self.state_store
        if store is None:
            return {}
        covered = {r.name: store.covered_seq(r.name) for r in running}
        return {name: seq for name, seq in covered.items() if seq is not None}

    def make_source(self, cfg: SourceConfig) -> SourceRunner:
        cls = self.plugins.transports()[cfg.transport].cls
        try:
            transport: Transport = cls(cfg.options)
        except Exception as exc:
            raise PluginError(
                f"source {cfg.name!r} ({cfg.transport}) could not be created: {exc}"
            ) from exc
        resume = None
        retired = self._changes.retired.pop(cfg.name, None)
        if retired is not None and retired[0] == cfg.transport:
            resume = retired[1]
        elif self.state_store is not None:
            resume = self.state_store.resume_for(cfg.name, cfg.transport)
        self._quality.track(cfg, window=self.config.quality_window)
        return SourceRunner(cfg, transport, chain=self.make_chain(cfg), resume=resume)

    def make_chain(self, cfg: SourceConfig) -> ProcessorChain | None:
        """One instance of each ``[[processors]]`` table that applies to the source."""
        return build_chain(self.config.processors, self.plugins, cfg.name, cfg.transport)

    # -- changing what runs (see mux_core._run.changes) ----------------------------

    async def reload(self) -> bool:
        """Load the config file again and apply what changed; False if it was rejected.

        A config that does not validate is logged with its FILE:LINE errors
        and the running one stays.
        """
        return await self._changes.reload()

    async def apply_config(self, config: Config) -> None:
        """Make the run match ``config``: only what differs is touched; one summary line."""
        await self._changes.apply_config(config)

    # -- durable resume (--state) ----------------------------------------

    def _resume_states(self) -> dict[str, tuple[str, ResumeState]]:
        states = dict(self._changes.retired)
        for runner in self._sources:
            resume = runner.live_resume
            if resume is not None:
                states[runner.name] = (runner.config.transport, resume)
        return states

    def _moved_states(self) -> dict[str, tuple[str, ResumeState]]:
        """The resume states of the sources that handed over records since the
        last call: what a checkpoint between two full ones saves."""
        states = {}
        for name, runner in self._fan_out.take_moved().items():
            resume = runner.live_resume
            if resume is not None:
                states[name] = (runner.config.transport, resume)
        return states

    # -- housekeeping ---------------------------------------------------------------

    async def _stop_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self._stop(f"--for {seconds:g} s elapsed")

    def _signals(self) -> list[signal.Signals]:
        wanted = [*super()._signals(), signal.SIGUSR1]
        if self.load_config is not None:
            wanted.append(signal.SIGHUP)
        return wanted

    def _on_signal(self, signum: int) -> bool:
        if signum == signal.SIGHUP:
            _log.info("reload: SIGHUP")
            self._spawn(self._changes.reload)
            return True
        if signum == signal.SIGUSR1:  # restart every source that gave up
            self._spawn(self._changes.restart, None)
            return True
        return False

    async def _report_drops(self) -> None:
        reported: dict[str, int] = {}
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
        states = {r.name: r.state or State.STOPPED for r in self._sources}
        dropped = self._sinks.dropped()
        for runner in self._sinks.history:
            if runner.channel.dropped:
                _log.log(
                    max(_drop_log_level(runner.channel.overflow), logging.INFO),
                    "sink %r dropped %d records in this run (overflow = %r)",
                    runner.config.name,
                    runner.channel.dropped,
                    runner.channel.overflow.value,
                )
        if self._sink_failed:
            code = ExitCode.SINK_FAILED
        elif any(s in (State.FAILED, State.MAX_RETRIES_EXCEEDED) for s in states.values()):
            code = ExitCode.SOURCE_FAILED
        elif self.failing_alerts:
            code = ExitCode.ALERT
        else:
            code = ExitCode.OK
        reason = self._stop_reason or "every source reached a terminal state"
        return RunResult(code, states, reason, dropped, self._quality.final)


class SinkHost(Protocol):
    """What a sink's context is made of: a run's plugins, config and controls."""

    plugins: PluginManager

    @property
    def config(self) -> Config: ...

    def request_stop(self, reason: str = ...) -> None: ...

    def restart_source(self, name: str) -> None: ...


def build_sink(
    host: SinkHost,
    cfg: SinkConfig,
    sources: tuple[SourceInfo, ...],
    *,
    resumed: Mapping[str, int],
    channel_type: type[SinkChannel] = SinkChannel,
) -> SinkRunner:
    """A sink of ``host``'s run (an :class:`Engine`, or ``--workers``' pool) and its channel."""
    cls = host.plugins.sinks()[cfg.type].cls
    channel = channel_type(cfg.buffer, Overflow(cfg.overflow), max_bytes=cfg.buffer_bytes)
    history = history_of(cfg)

    def context(start_background: StartBackground) -> SinkContext:
        return SinkContext(
            name=cfg.name,
            config_name=host.config.name,
            sources=sources,
            request_stop=host.request_stop,
            start_background=start_background,
            dropped=lambda: channel.dropped,
            retry=host.config.retry,
            resumed=resumed,
            restart_source=host.restart_source,
            recordings=tuple(recording.label for recording in history),
        )

    runner = new_sink_runner(cls, cfg, channel, context)
    runner.history = tuple(history)
    return runner


def _drop_log_level(overflow: Overflow) -> int:
    """``latest`` drops by design (a UI shows "now"); the others drop only when behind."""
    return logging.DEBUG if overflow is Overflow.LATEST else logging.WARNING
