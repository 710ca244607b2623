r"""``mux run --workers N``: the sources in N worker processes, the sinks here.

::

    worker 0: sources of shard 0/N -> uplink --pipe--\
    worker 1: sources of shard 1/N -> uplink --pipe---> WorkerPool -> fan-out -> sinks
    ...                                            --/     (state file, views, --fail-on)

Each worker (:mod:`mux_core._run.worker`) is an ordinary engine over one
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
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import trio

from .._config import Config
from .._config.shard import shard_of
from .._plugins import PluginManager
from ..records import Event, Quality, Record, Severity, State, Status, decode_jsonl
from ..sink import SourceInfo
from ..transport import ResumeState
from .engine import RunResult, build_sink
from .exit_codes import ExitCode
from .fail_on import FailingAlert, FailOn
from .fan_out import FanOut
from .host import RunHost
from .quality_feed import QualityFeed
from .state import Checkpoints, StateStore
from .worker_link import CONTROL, Start, from_saved, saved

__all__ = ["WorkerPool", "usable_cores"]

_log = logging.getLogger("mux.workers")

#: Bytes read from a worker's pipe at a time.
READ_SIZE = 256 * 1024
#: The most bytes of one line a worker may send (its records are bounded far below).
MAX_LINE = 64 * 1024 * 1024
#: Seconds before a dead worker is started again (doubling up to the cap).
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 10.0
#: ``--workers auto``: at most this many.
MAX_AUTO = 32


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
        self.process: trio.Process | None = None
        self.done: int | None = None
        self.starts = 0
        self.lock = trio.Lock()

    async def tell(self, message: dict[str, Any]) -> None:
        """A command down the worker's stdin (lost if it is gone: it stops on its own)."""
        process = self.process
        if process is None or process.stdin is None:
            return
        async with self.lock:
            try:
                await process.stdin.send_all(msgspec.json.encode(message) + b"\n")
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
        watch: bool = False,
        quiet: bool = False,
    ) -> None:
        super().__init__(install_signal_handlers=install_signal_handlers)
        directory = state_dir if state_dir is not None else config.state_dir
        self.state_store = StateStore(directory) if directory is not None else None
        self.plugins = plugins
        self.config = config
        self.duration = duration
        self.result: RunResult | None = None
        self._path = os.path.abspath(config_path)
        self._watch = watch
        self._quiet = quiet
        self._workers = [_Worker(index) for index in range(workers)]
        self.fail_on = (
            None
            if fail_on is None
            else FailOn(fail_on, fail_fast=fail_fast, on_first=self._fail_fast)
        )
        self._fan_out = FanOut(self._sinks, QualityFeed(self._sinks, interval=0), self.fail_on)
        self._held: dict[str, _Held] = {}
        self._states: dict[str, State] = {}
        self._quality: dict[str, Quality] = {}
        self._all_done = trio.Event()

    @property
    def failing_alerts(self) -> int:
        return 0 if self.fail_on is None else self.fail_on.count

    def _fail_fast(self, found: FailingAlert) -> None:
        self._stop(f"--fail-fast: {found.describe()}")

    # -- control (safe from any thread) ---------------------------------------

    def restart_source(self, name: str) -> None:
        """Start source ``name`` again if it gave up (its worker does)."""
        worker = self._workers[shard_of(name, len(self._workers))]
        self._call_soon(self._command, worker, {"restart": name})

    def request_reload(self) -> None:
        """Every worker loads the config file again and applies what changed to its sources."""
        self._call_soon(self._command_all, {"reload": True})

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
            _log.info("reload: SIGHUP (every worker reloads the config's sources)")
            self._command_all({"reload": True})
            return True
        if signum == signal.SIGUSR1:
            self._command_all({"restart": None})
            return True
        return False

    # -- the run ---------------------------------------------------------------

    _nursery: trio.Nursery | None = None

    async def run(self) -> RunResult:
        """Start the workers, feed the sinks from their pipes, return when done."""
        self._token = trio.lowlevel.current_trio_token()
        if self.state_store is not None:
            self.state_store.load()
        infos = tuple(SourceInfo(s.name, s.transport, s.stale_after) for s in self.config.sources)
        resumed = self._resumed()
        sinks = [build_sink(self, cfg, infos, resumed=resumed) for cfg in self.config.sinks]
        async with trio.open_nursery() as system:
            self._nursery = system
            if self.install_signal_handlers:
                system.start_soon(self._watch_signals)
            if self.duration is not None:
                system.start_soon(self._stop_after, self.duration)
            async with trio.open_nursery() as sink_nursery:
                self._sinks.attach(sink_nursery)
                for sink in sinks:
                    await self._sinks.start(sink)
                if self.state_store is not None:
                    checkpoints = Checkpoints(self.state_store, self._sinks, self._resume_states)
                    system.start_soon(checkpoints.run_periodically)
                async with trio.open_nursery() as workers:
                    for worker in self._workers:
                        workers.start_soon(self._keep_running, worker)
                self._sinks.close_all()
            system.cancel_scope.cancel()
        self._nursery = None
        clean = all(worker.done is not None for worker in self._workers)
        if self.state_store is not None and not self._sink_failed:
            snapshot = self.state_store.snapshot(self._resume_states(), final=clean)
            await self.state_store.save(snapshot, final=clean)
        self.result = self._result()
        return self.result

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
        resume = {}
        for source in self.config.sources:
            if shard_of(source.name, count) != worker.index or source.name in self._held:
                continue
            if self.state_store is not None:
                state = self.state_store.resume_for(source.name, source.transport)
                resume[source.name] = saved(source.transport, state)
        for name, held in self._held.items():
            if shard_of(name, count) == worker.index:
                resume[name] = saved(held.transport, held.resume())
        start = Start(
            config=self._path,
            index=worker.index,
            count=count,
            state=self.state_store is not None,
            resume=resume,
            watch=self._watch,
            quiet=self._quiet,
        )
        argv = [sys.executable, "-m", "mux_core._run.worker"]
        process = await trio.lowlevel.open_process(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        worker.process = process
        worker.starts += 1
        if worker.starts > 1:
            _log.info("worker %d started again (pid %d)", worker.index, process.pid)
        await worker.tell({"start": start})
        if self._stop_reason is not None:
            await worker.tell({"stop": self._stop_reason})
        try:
            assert process.stdout is not None
            await self._pump(worker, process.stdout)
        finally:
            with trio.CancelScope(shield=True):
                code = await process.wait()
            worker.process = None
        if worker.done is None:
            await self._died(worker, code)

    async def _died(self, worker: _Worker, code: int) -> None:
        """Say so, and tell the sinks that its live sources are disconnected."""
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        _log.warning(
            "worker %d stopped unexpectedly (%s); its sources go on from what the sinks hold",
            worker.index,
            how,
        )
        count = len(self._workers)
        statuses: list[Record] = []
        for name, state in self._states.items():
            if shard_of(name, count) != worker.index or state.terminal:
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
        """Hand everything the worker sends to the sinks, in order."""
        rest = b""
        while True:
            received = await pipe.receive_some(READ_SIZE)
            if not received:
                return
            chunk = received if type(received) is bytes else bytes(received)
            data = rest + chunk if rest else chunk
            end = data.rfind(b"\n")
            if end < 0:
                if len(data) > MAX_LINE:
                    _log.error(
                        "worker %d sent a line over %d bytes; stopping it", worker.index, MAX_LINE
                    )
                    return
                rest = data
                continue
            rest = data[end + 1 :]
            await self._take(worker, data[:end].split(b"\n"))

    async def _take(self, worker: _Worker, lines: list[bytes]) -> None:
        batch: list[Record] = []
        control = CONTROL[0]
        for line in lines:
            if line and line[0] == control:
                if batch:
                    await self._send(batch)
                    batch = []
                await self._obey(worker, msgspec.json.decode(line[1:]))
            elif line:
                batch.append(decode_jsonl(line))
        if batch:
            await self._send(batch)

    async def _send(self, batch: list[Record]) -> None:
        await self._fan_out.send(batch)
        # Only now, once every sink's channel has them: what a checkpoint may cover.
        held = self._held
        for record in batch:
            kind = type(record)
            if kind is Event:
                assert isinstance(record, Event)
                place = held.get(record.source)
                if place is None:
                    place = held[record.source] = _Held(record.transport)
                place.seq = record.seq
                if record.id is not None:
                    place.last_id = record.id
            elif kind is Status:
                assert isinstance(record, Status)
                self._states[record.source] = record.state
                if record.source not in held:
                    held[record.source] = _Held(record.transport)
            elif kind is Quality:
                assert isinstance(record, Quality)
                self._quality[record.source] = record

    async def _obey(self, worker: _Worker, message: Mapping[str, Any]) -> None:
        if "positions" in message:
            for name, value in message["positions"].items():
                transport, resume = from_saved(value, state=False)
                place = self._held.get(name)
                if place is None or place.transport != transport:
                    place = self._held[name] = _Held(transport)
                place.cursor = resume.cursor
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

    async def _reserve(
        self, worker: _Worker, ask: int, name: str, transport: str, upto: int
    ) -> None:
        assert self.state_store is not None
        resume = ResumeState(seq=upto, seq_reserved=upto)
        await self.state_store.reserve(name, transport, resume, upto)
        await worker.tell({"reserved": [ask, resume.seq_reserved]})

    def _result(self) -> RunResult:
        states = dict(self._states)
        for source in self.config.sources:
            states.setdefault(source.name, State.STOPPED)
        if self._sink_failed:
            code = ExitCode.SINK_FAILED
        elif any(s in (State.FAILED, State.MAX_RETRIES_EXCEEDED) for s in states.values()):
            code = ExitCode.SOURCE_FAILED
        elif self.failing_alerts:
            code = ExitCode.ALERT
        else:
            code = ExitCode.OK
        reason = self._stop_reason or "every source reached a terminal state"
        return RunResult(code, states, reason, self._sinks.dropped(), dict(self._quality))
