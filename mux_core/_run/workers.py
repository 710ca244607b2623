r"""``mux run --workers N``: the sources in N worker processes, the sinks here.

::

    worker 0: sources of shard 0/N -> uplink --pipe--\
    worker 1: sources of shard 1/N -> uplink --pipe---> WorkerPool -> fan-out -> sinks
    ...                                            --/     (state file, views, --fail-on)

Each worker (:mod:`mux_core._run.worker`, started as ``python -m
mux_core._cli.worker``) is an ordinary engine over one
shard of the sources, whose only sink writes JSON Lines to a pipe. The
parent -- this module -- reads each pipe in its own task, hands the records
to its sinks as one run's records (a source lives in one worker, and a pipe
keeps order, so each source's order holds), and keeps what the run needs to
end well: each source's last state and quality, the positions its sinks
hold, the state file. No socket is opened: pipes only.

A worker that dies (killed, crashed) is reported -- a ``disconnected``
status for each of its live sources -- and started again, its sources from
the positions the parent holds: the last id and seq that reached the sinks
(the records themselves say so), with the cursor of the last ``positions``
frame. A ``block`` sink that is full stops the reading of the pipes; the
pipes fill and the workers' sources wait (bounded bytes all the way).

See docs/architecture.md, Workers.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import msgspec
import trio

from .._config import Config, Parsed, SourceConfig
from .._plugins import PluginManager
from ..errors import ConfigError, PluginError
from ..records import (
    EncodedBatch,
    Event,
    Quality,
    Record,
    Severity,
    State,
    Status,
    decode_jsonl_lines,
)
from ..sink import SourceInfo
from ..transport import ResumeState
from .changes import FileWatch, plan_sinks
from .channel import SplicingChannel
from .discovery import DiscoveryRunner
from .engine import WATCH_INTERVAL, RunResult, build_sink
from .exit_codes import ExitCode
from .fail_on import FailingAlert, FailOn
from .fan_out import FanOut
from .host import RunHost
from .quality_feed import QualityFeed
from .state import Checkpoints, StateStore
from .worker_fork import ChildMain, ForkedWorker, WorkerProcess, fork_workers
from .worker_link import (
    EVENTS,
    MAX_FRAME,
    RECORDS,
    RUNS_HEAD,
    FrameReader,
    FrameTooLong,
    Start,
    from_saved,
    saved,
    spread,
)

__all__ = ["WorkerPool", "usable_cores"]

_log = logging.getLogger("mux.workers")

#: An E frame's runs: [source, transport, count, last seq, last id] each.
_read_runs = msgspec.json.Decoder(list[tuple[str, str, int, int, str | None]]).decode

#: Bytes read from a worker's pipe at a time.
READ_SIZE = 256 * 1024
#: Seconds before a dead worker is started again (doubling up to the cap).
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 10.0
#: Seconds a worker may say nothing, using no CPU, while the parent waits on
#: its pipe, before it counts as stuck (stopped, or blocked for good: killed
#: and started again). It says something at least every HEARTBEAT s; the
#: clock runs only once it has spoken and only while the parent is reading (a
#: full sink that stops the reading stops the worker's writes too). A worker
#: that works all along but says nothing (thousands of sources connecting on a
#: starved machine delay its heartbeat) is left alone for STUCK_BUSY times as
#: long. ``MUX_WORKER_SILENCE`` overrides it (tests).
WORKER_SILENCE = float(os.environ.get("MUX_WORKER_SILENCE", "30"))
STUCK_BUSY = 10
#: ``--workers auto``: at most this many.
MAX_AUTO = 32


def _cpu_seconds(pid: int) -> float | None:
    """The CPU time process ``pid`` has used, where the OS says (Linux); else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def usable_cores() -> int:
    """The cores this process may run on (``--workers auto``), at most :data:`MAX_AUTO`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_AUTO))


class _Held:
    """What the parent holds of one source: the place its sinks have reached."""

    __slots__ = ("cursor", "last_id", "seq", "transport")

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.last_id: str | None = None
        self.cursor: Any = None
        self.seq = 0

    def resume(self) -> ResumeState:
        return ResumeState(last_id=self.last_id, cursor=self.cursor, seq=self.seq)


class _Worker:
    """One worker process and what the parent knows of it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: WorkerProcess | None = None
        #: Forked before the run (its first start), not used yet.
        self.forked: ForkedWorker | None = None
        self.done: int | None = None
        self.starts = 0
        self.lock = trio.Lock()
        #: When the parent last got bytes from it, and whether it waits for more now.
        self.heard: float | None = None
        self.waiting = False
        #: Why the parent killed it (it was stuck), for its sources' statuses.
        self.stuck: str | None = None

    async def tell(self, message: dict[str, Any], data: bytes = b"") -> None:
        """A command down the worker's stdin (lost if it is gone: it stops on its own),
        and the ``data`` it announces."""
        process = self.process
        if process is None or process.stdin is None:
            return
        async with self.lock:
            try:
                await process.stdin.send_all(msgspec.json.encode(message) + b"\n" + data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


class WorkerPool(RunHost):
    """Runs a config's sources in ``workers`` processes and its sinks here.

    Used as :class:`~mux_core._run.engine.Engine` is (``run()``, ``result``,
    ``request_stop``, ``restart_source``, ``config``): ``mux run --workers N``
    picks it for N >= 2.
    """

    def __init__(
        self,
        config: Config,
        plugins: PluginManager,
        *,
        workers: int,
        config_path: str,
        duration: float | None = None,
        install_signal_handlers: bool = False,
        fail_on: Severity | None = None,
        fail_fast: bool = False,
        state_dir: str | None = None,
        load_config: Callable[[], Config] | None = None,
        watch: bool = False,
        quiet: bool = False,
        parsed: Parsed | None = None,
    ) -> None:
        super().__init__(install_signal_handlers=install_signal_handlers)
        #: The config file as read for ``config``: each worker's part of it goes to
        #: the worker at its first start (:meth:`_config_part`), so that none reads
        #: and parses the whole file again.
        self._parsed = parsed
        self._parts: list[bytes | None] = []
        directory = state_dir if state_dir is not None else config.state_dir
        self.state_store = StateStore(directory) if directory is not None else None
        self.plugins = plugins
        self.config = config
        self.duration = duration
        self.result: RunResult | None = None
        self._path = os.path.abspath(config_path)
        self._load_config = load_config
        self._watch = watch
        self._quiet = quiet
        self._workers = [_Worker(index) for index in range(workers)]
        self.fail_on = (
            None
            if fail_on is None
            else FailOn(fail_on, fail_fast=fail_fast, on_first=self._fail_fast)
        )
        # --fail-on looks at the R frames only (_send): E frames hold no alert.
        self._fan_out = FanOut(self._sinks, QualityFeed(self._sinks, interval=0), None)
        self._held: dict[str, _Held] = {}
        #: The sources whose held position moved since the last checkpoint.
        self._moved: set[str] = set()
        self._states: dict[str, State] = {}
        self._quality: dict[str, Quality] = {}
        #: Which worker runs each configured source (even: see :meth:`_assign`).
        self._assigned: dict[str, int] = {}
        #: Which worker each source's records came from (discovered ones too).
        self._where: dict[str, int] = {}
        self._assign(config)
        self._reloading = trio.Lock()
        #: The discoverers run here; each discovered source runs in one worker.
        self._discovery = DiscoveryRunner(plugins, self._rediscovered)
        #: Which worker runs each discovered source, and what each was handed last.
        self._found_at: dict[str, int] = {}
        self._handed: dict[int, list[SourceConfig]] = {}
        self._handing = trio.Lock()

    @property
    def failing_alerts(self) -> int:
        return 0 if self.fail_on is None else self.fail_on.count

    def _fail_fast(self, found: FailingAlert) -> None:
        self._stop(f"--fail-fast: {found.describe()}")

    def worker_configs(self) -> list[Config]:
        """The run's config for each worker, with only the sources assigned to it."""
        own: list[list[SourceConfig]] = [[] for _ in self._workers]
        for source in self.config.sources:
            own[self._assigned[source.name]].append(source)
        return [attrs.evolve(self.config, sources=tuple(mine)) for mine in own]

    def fork(self, child: ChildMain) -> bool:
        """Fork the workers now, before the event loop runs (their first start costs
        nothing then: :mod:`~mux_core._run.worker_fork`); False if that is not safe
        here (they are started as processes of their own instead)."""
        forked = fork_workers(len(self._workers), child)
        if forked is None:
            return False
        for worker, process in zip(self._workers, forked, strict=True):
            worker.forked = process
        self._parsed = None  # the forked workers have the built config: no part to send
        return True

    # -- control (safe from any thread) ---------------------------------------

    def restart_source(self, name: str) -> None:
        """Start source ``name`` again if it gave up (its worker does)."""
        worker = self._workers[self._worker_of(name)]
        self._call_soon(self._command, worker, {"restart": name})

    def request_reload(self) -> None:
        """Load the config file again (as SIGHUP does): the sinks that changed here,
        the sources in the workers."""
        self._call_soon(self._spawn_reload)

    def _spawn_reload(self) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self.reload)

    def _worker_of(self, name: str) -> int:
        index = self._assigned.get(name)
        if index is None:
            index = self._found_at.get(name)
        if index is None:
            index = self._where.get(name)
        return spread(name, len(self._workers)) if index is None else index

    def _assign(self, config: Config) -> None:
        """Give each configured source a worker: the one it has, or the least busy.

        A source keeps its worker across reloads (its connection stays); new
        ones fill the workers evenly, in config order.
        """
        count = len(self._workers)
        names = [source.name for source in config.sources]
        if not self._assigned:
            # The first time: in runs of the config's order, as even as in turn. A
            # forked worker shares the parent's pages until it writes them, and
            # using a source's config writes it (its reference counts): its own
            # sources together, it copies a run of pages, not every page.
            total = len(names)
            self._assigned = {name: index * count // total for index, name in enumerate(names)}
            return
        kept = {name: self._assigned[name] for name in names if name in self._assigned}
        load = [0] * count
        for index in kept.values():
            load[index] += 1
        for name in names:
            if name not in kept:
                index = min(range(count), key=load.__getitem__)
                kept[name] = index
                load[index] += 1
        self._assigned = kept

    def _config_part(self, index: int) -> bytes:
        """Worker ``index``'s part of the file as the parent read it, at its first start
        (then dropped: a worker started again, or reloading, reads the file)."""
        if self._parsed is not None:
            from .worker_config import shares

            names = [source.name for source in self.config.sources]
            parts = shares(self._parsed, names, self._assigned.__getitem__, len(self._workers))
            self._parts = list(parts) if parts is not None else []
            self._parsed = None
        part = self._parts[index] if index < len(self._parts) else None
        if part is None:
            return b""
        self._parts[index] = None
        return part

    def _share(self, index: int) -> list[str]:
        """The configured sources of worker ``index``."""
        return [name for name, at in self._assigned.items() if at == index]

    async def reload(self) -> bool:
        """Apply the config file as it is now; False (and the run unchanged) if invalid."""
        if self._load_config is None:
            return False
        async with self._reloading:
            try:
                config = self._load_config()
            except (ConfigError, PluginError) as exc:
                _log.error("reload rejected, the running config stays:\n%s", exc)
                return False
            plan = plan_sinks(self._sinks.configs, config.sinks)
            self.config = config
            infos = tuple(SourceInfo(s.name, s.transport, s.stale_after) for s in config.sources)
            for name in plan.removed:
                await self._sinks.stop(name)
            for cfg in (*plan.changed, *plan.added):
                try:
                    fresh = build_sink(self, cfg, infos, resumed={}, channel_type=SplicingChannel)
                except PluginError as exc:
                    _log.error("%s; left out", exc)
                    continue
                if cfg in plan.changed:
                    await self._sinks.replace(fresh)
                else:
                    await self._sinks.start(fresh)
            self._assign(config)
            self._discovery.apply(self._nursery, config)
            for worker in self._workers:
                assignment = {
                    "sources": self._share(worker.index),
                    "keep_alive": self._keep_alive(),
                }
                await worker.tell({"reload": assignment})
            _log.info("reload: %s; sources: each worker applies its own", plan.summary())
        await self._rediscovered()  # a configured name may now hide a discovered one
        return True

    def _keep_alive(self) -> bool:
        """Whether sources may still come (a worker then waits with none live)."""
        return self._watch or bool(self.config.discovery)

    async def _rediscovered(self) -> None:
        """The discovered set changed: assign each source a worker and hand each
        worker whose list changed its new list (it starts and stops what differs).

        A discovered source keeps its worker while it is discovered; a new one
        goes to the least busy worker, as a configured one does.
        """
        async with self._handing:
            found = self._discovery.sources({source.name for source in self.config.sources})
            load = [0] * len(self._workers)
            for index in self._assigned.values():
                load[index] += 1
            where: dict[str, int] = {}
            for source in found:
                kept = self._found_at.get(source.name)
                if kept is not None:
                    where[source.name] = kept
                    load[kept] += 1
            for source in found:
                if source.name not in where:
                    least = min(range(len(load)), key=load.__getitem__)
                    where[source.name] = least
                    load[least] += 1
            self._found_at = where
            for worker in self._workers:
                mine = [source for source in found if where[source.name] == worker.index]
                if mine != self._handed.get(worker.index, []):
                    self._handed[worker.index] = mine
                    await self._hand(worker, mine)

    async def _hand(self, worker: _Worker, found: list[SourceConfig]) -> None:
        """Tell ``worker`` the discovered sources it runs, each with where it resumes."""
        resume = {}
        for source in found:
            held = self._held.get(source.name)
            if held is not None:
                resume[source.name] = saved(held.transport, held.resume())
            elif self.state_store is not None:
                state = self.state_store.resume_for(source.name, source.transport)
                resume[source.name] = saved(source.transport, state)
        data = pickle.dumps((found, resume))
        await worker.tell({"discovered": None, "data": len(data)}, data)

    async def _watch_file(self) -> None:
        watch = FileWatch(self._path)
        while True:
            await trio.sleep(WATCH_INTERVAL)
            if await trio.to_thread.run_sync(watch.changed):
                _log.info("reload: %s changed", self._path)
                await self.reload()

    def _command(self, worker: _Worker, message: dict[str, Any]) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(worker.tell, message)

    def _command_all(self, message: dict[str, Any]) -> None:
        for worker in self._workers:
            self._command(worker, message)

    def _stop(self, reason: str) -> None:
        first = self._stop_reason is None
        super()._stop(reason)
        if first:
            self._command_all({"stop": self._stop_reason})

    def _signals(self) -> list[signal.Signals]:
        return [*super()._signals(), signal.SIGUSR1, signal.SIGHUP]

    def _on_signal(self, signum: int) -> bool:
        if signum == signal.SIGHUP:
            _log.info("reload: SIGHUP")
            self._spawn_reload()
            return True
        if signum == signal.SIGUSR1:
            self._command_all({"restart": None})
            return True
        return False

    # -- the run ---------------------------------------------------------------

    _nursery: trio.Nursery | None = None

    async def run(self) -> RunResult:
        """Start the workers, feed the sinks from their pipes, return when done."""
        try:
            return await self._run()
        finally:
            self._end_unused_forks()

    def _end_unused_forks(self) -> None:
        """Forked workers a run that failed early never started: gone with it."""
        for worker in self._workers:
            process, worker.forked = worker.forked, None
            if process is not None:
                process.kill()
                process.close_unused()
                os.waitpid(process.pid, 0)

    async def _run(self) -> RunResult:
        self._token = trio.lowlevel.current_trio_token()
        if self.state_store is not None:
            self.state_store.load()
        infos = tuple(SourceInfo(s.name, s.transport, s.stale_after) for s in self.config.sources)
        resumed = self._resumed()
        sinks = [
            build_sink(self, cfg, infos, resumed=resumed, channel_type=SplicingChannel)
            for cfg in self.config.sinks
        ]
        async with trio.open_nursery() as system:
            self._nursery = system
            if self.install_signal_handlers:
                system.start_soon(self._watch_signals)
            if self.duration is not None:
                system.start_soon(self._stop_after, self.duration)
            if self._watch and self._load_config is not None:
                system.start_soon(self._watch_file)
            self._discovery.apply(system, self.config)
            async with trio.open_nursery() as sink_nursery:
                self._sinks.attach(sink_nursery)
                for sink in sinks:
                    await self._sinks.start(sink)
                if self.state_store is not None:
                    checkpoints = Checkpoints(
                        self.state_store, self._sinks, self._resume_states, self._moved_states
                    )
                    system.start_soon(checkpoints.run_periodically)
                async with trio.open_nursery() as workers:
                    for worker in self._workers:
                        workers.start_soon(self._keep_running, worker)
                await self._stop_the_rest()
                self._sinks.close_all()
            system.cancel_scope.cancel()
        self._nursery = None
        clean = all(worker.done is not None for worker in self._workers)
        if self.state_store is not None and not self._sink_failed:
            snapshot = self.state_store.snapshot(self._resume_states(), final=clean)
            await self.state_store.save(snapshot, final=clean)
        self.result = self._result()
        return self.result

    async def _stop_the_rest(self) -> None:
        """A source whose worker ended without stopping it (it died while the run was
        stopping) still ends with ``stopped``, as every source of one process does."""
        reason = self._stop_reason or "its worker ended"
        statuses: list[Record] = []
        for name, state in self._states.items():
            if not state.terminal:
                held = self._held.get(name)
                transport = held.transport if held is not None else "?"
                statuses.append(
                    Status(name, transport, State.STOPPED, 1, None, reason, time.time())
                )
        if statuses:
            await self._fan_out.send(statuses)
            for status in statuses:
                assert isinstance(status, Status)
                self._states[status.source] = State.STOPPED

    async def _stop_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self._stop(f"--for {seconds:g} s elapsed")

    def _resumed(self) -> dict[str, int]:
        store = self.state_store
        if store is None:
            return {}
        covered = {s.name: store.covered_seq(s.name) for s in self.config.sources}
        return {name: seq for name, seq in covered.items() if seq is not None}

    def _resume_states(self) -> dict[str, tuple[str, ResumeState]]:
        return {name: (held.transport, held.resume()) for name, held in self._held.items()}

    def _moved_states(self) -> dict[str, tuple[str, ResumeState]]:
        """The held positions that moved since the last call (a checkpoint's)."""
        moved, self._moved = self._moved, set()
        held = self._held
        return {n: (held[n].transport, held[n].resume()) for n in moved if n in held}

    # -- one worker ------------------------------------------------------------

    async def _keep_running(self, worker: _Worker) -> None:
        """Run ``worker`` until its run ends; start it again each time it dies."""
        delay = RESTART_DELAY
        while True:
            started = trio.current_time()
            await self._run_once(worker)
            if worker.done is not None or self._stop_reason is not None:
                return
            if trio.current_time() - started > 30:
                delay = RESTART_DELAY
            await trio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY_MAX)
            if self._stop_reason is not None:
                return

    async def _run_once(self, worker: _Worker) -> None:
        count = len(self._workers)
        names = self._share(worker.index)
        resume = {}
        if self.state_store is not None:
            for source in self.config.sources:
                if self._worker_of(source.name) == worker.index and source.name not in self._held:
                    state = self.state_store.resume_for(source.name, source.transport)
                    resume[source.name] = saved(source.transport, state)
        for name, held in self._held.items():
            if self._worker_of(name) == worker.index:
                resume[name] = saved(held.transport, held.resume())
        # A forked worker has the whole config already.
        part = b"" if worker.forked is not None else self._config_part(worker.index)
        start = Start(
            config=self._path,
            index=worker.index,
            count=count,
            sources=names,
            state=self.state_store is not None,
            resume=resume,
            quiet=self._quiet,
            keep_alive=self._keep_alive(),
            parsed=len(part),
        )
        process: WorkerProcess
        if worker.forked is not None:
            process, worker.forked = worker.forked, None
        else:
            argv = [sys.executable, "-m", "mux_core._cli.worker"]
            process = await trio.lowlevel.open_process(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
        worker.process = process
        worker.starts += 1
        if worker.starts > 1:
            _log.info("worker %d started again (pid %d)", worker.index, process.pid)
        await worker.tell({"start": start}, part)
        if self._handed.get(worker.index):
            await self._hand(worker, self._handed[worker.index])
        if self._stop_reason is not None:
            await worker.tell({"stop": self._stop_reason})
        worker.heard, worker.waiting, worker.stuck = None, False, None
        try:
            assert process.stdout is not None
            async with trio.open_nursery() as watching:
                watching.start_soon(self._watch_silence, worker, process)
                await self._pump(worker, process.stdout)
                watching.cancel_scope.cancel()
        finally:
            if process.returncode is None and worker.done is None:
                # A broken pipe or a line that is not a record: this worker is done for.
                process.kill()
            with trio.CancelScope(shield=True):
                code = await process.wait()
            worker.process = None
        if worker.done is None:
            await self._died(worker, code)

    async def _watch_silence(self, worker: _Worker, process: WorkerProcess) -> None:
        """Kill ``worker`` if it says nothing for :data:`WORKER_SILENCE` s while the
        parent waits on it (stopped, or its loop stuck): it is then started again
        as a dead one is, its sources marked disconnected meanwhile."""
        used = _cpu_seconds(process.pid)
        used_at = trio.current_time()
        while True:
            await trio.sleep(min(1.0, WORKER_SILENCE / 4))
            now = trio.current_time()
            heard = worker.heard
            if heard is None or not worker.waiting:
                used, used_at = _cpu_seconds(process.pid), now
                continue
            silent = now - heard
            cpu = _cpu_seconds(process.pid)
            if cpu is None or cpu != used:
                used, used_at = cpu, now
            idle = now - used_at if cpu is not None else 0.0
            if (silent >= WORKER_SILENCE and idle >= WORKER_SILENCE) or (
                silent >= WORKER_SILENCE * STUCK_BUSY
            ):
                worker.stuck = f"it said nothing for {silent:.0f} s"
                _log.warning("worker %d %s; stopping it", worker.index, worker.stuck)
                process.kill()
                return

    async def _died(self, worker: _Worker, code: int) -> None:
        """Say so, and tell the sinks that its live sources are disconnected."""
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        if worker.stuck is not None:
            how = worker.stuck
        _log.warning(
            "worker %d stopped unexpectedly (%s); its sources go on from what the sinks hold",
            worker.index,
            how,
        )
        statuses: list[Record] = []
        for name, state in self._states.items():
            if self._where.get(name) != worker.index or state.terminal:
                continue
            held = self._held.get(name)
            transport = held.transport if held is not None else "?"
            statuses.append(
                Status(
                    name,
                    transport,
                    State.DISCONNECTED,
                    1,
                    None,
                    f"mux worker {worker.index} stopped unexpectedly ({how}); starting it again",
                    time.time(),
                )
            )
            self._states[name] = State.DISCONNECTED
        if statuses:
            await self._fan_out.send(statuses)

    async def _pump(self, worker: _Worker, pipe: trio.abc.ReceiveStream) -> None:
        """Hand everything the worker sends to the sinks, in order, frame by frame."""
        frames = FrameReader(MAX_FRAME)
        while True:
            worker.waiting = True
            received = await pipe.receive_some(READ_SIZE)
            worker.waiting = False
            if not received:
                return
            worker.heard = trio.current_time()
            try:
                for kind, payload in frames.feed(received):
                    if kind == EVENTS:
                        await self._send_events(worker, payload)
                    elif kind == RECORDS:
                        await self._send(worker, payload)
                    else:
                        await self._obey(worker, msgspec.json.decode(payload))
            except FrameTooLong as exc:
                _log.error(
                    "worker %d sent a frame of %d bytes; stopping it", worker.index, exc.size
                )
                return

    async def _send_events(self, worker: _Worker, payload: bytes) -> None:
        """An ``E`` frame: events handed on as they came (spliced, not decoded)."""
        (size,) = RUNS_HEAD.unpack_from(payload)
        end = RUNS_HEAD.size + size
        runs = _read_runs(payload[RUNS_HEAD.size : end])
        count = 0
        for run in runs:
            count += run[2]
        batch = EncodedBatch(payload[end:], count, tuple((r[0], r[1], r[2]) for r in runs))
        await self._fan_out.send(batch)
        # Only now, once every sink's channel has them: what a checkpoint may cover.
        held = self._held
        moved = self._moved
        for source, transport, _, seq, last_id in runs:
            place = held.get(source)
            if place is None:
                place = held[source] = _Held(transport)
            place.seq = seq
            if last_id is not None:
                place.last_id = last_id
            moved.add(source)

    async def _send(self, worker: _Worker, data: bytes) -> None:
        """An ``R`` frame: statuses, quality, alerts (decoded: the parent keeps them)."""
        decoded, _ = decode_jsonl_lines(data)  # a worker writes records only
        if not decoded:
            return
        batch: Sequence[Record] = decoded
        if any(type(record) is Quality for record in batch):
            # What the user's sinks dropped, not what the worker's uplink did.
            dropped = self._sinks.dropped()
            batch = [
                msgspec.structs.replace(r, dropped=dropped) if type(r) is Quality else r
                for r in batch
            ]
        if self.fail_on is not None:
            self.fail_on.see(batch)
        await self._fan_out.send(batch)
        # Only now, once every sink's channel has them: what a checkpoint may cover.
        held = self._held
        for record in [r for r in batch if type(r) is not Event]:
            if type(record) is Status:
                self._states[record.source] = record.state
                self._where[record.source] = worker.index
                if record.source not in held:
                    held[record.source] = _Held(record.transport)
            elif type(record) is Quality:
                self._quality[record.source] = record
        last = {record.source: record for record in batch}
        self._moved.update(last)
        for source, record in last.items():
            if type(record) is Event:
                place = held.get(source)
                if place is None:
                    place = held[source] = _Held(record.transport)
                place.seq = record.seq
                if record.id is not None:
                    place.last_id = record.id

    async def _obey(self, worker: _Worker, message: Mapping[str, Any]) -> None:
        if "positions" in message:
            for name, value in message["positions"].items():
                transport, resume = from_saved(value, state=False)
                place = self._held.get(name)
                if place is None or place.transport != transport:
                    place = self._held[name] = _Held(transport)
                place.cursor = resume.cursor
                self._moved.add(name)
                if resume.seq >= place.seq:
                    place.seq, place.last_id = resume.seq, resume.last_id
        elif "reserve" in message:
            ask, name, transport, upto = message["reserve"]
            assert self._nursery is not None
            self._nursery.start_soon(
                self._reserve, worker, int(ask), str(name), str(transport), int(upto)
            )
        elif "done" in message:
            worker.done = int(message["done"])
        # "alive": the read itself was the news (worker.heard).

    async def _reserve(
        self, worker: _Worker, ask: int, name: str, transport: str, upto: int
    ) -> None:
        assert self.state_store is not None
        resume = ResumeState(seq=upto, seq_reserved=upto)
        await self.state_store.reserve(name, transport, resume, upto)
        await worker.tell({"reserved": [ask, resume.seq_reserved]})

    def _result(self) -> RunResult:
        # In the config's order, then the discovered sources (as one process lists them).
        states = {source.name: State.STOPPED for source in self.config.sources}
        states.update(self._states)
        quality = {name: self._quality[name] for name in states if name in self._quality}
        if self._sink_failed:
            code = ExitCode.SINK_FAILED
        elif any(s in (State.FAILED, State.MAX_RETRIES_EXCEEDED) for s in states.values()):
            code = ExitCode.SOURCE_FAILED
        elif self.failing_alerts:
            code = ExitCode.ALERT
        else:
            code = ExitCode.OK
        reason = self._stop_reason or "every source reached a terminal state"
        return RunResult(code, states, reason, self._sinks.dropped(), quality)
