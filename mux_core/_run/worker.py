"""One worker process of ``mux run --workers N``: its sources, sent up a pipe.

Started by :class:`~mux_core._run.workers.WorkerPool` -- forked, or as
``python -m mux_core._cli.worker`` -- and then :func:`serve`. A worker runs
an ordinary :class:`Engine` over the sources the parent assigned it
(transports, supervisors, processors, quality; the discovered ones the
parent's discoverers found, handed over as :class:`GivenSources`) whose
only sink is the :class:`Uplink`: every batch as frames on the pipe to the
parent, which owns the real sinks and the state file. The protocol is
:mod:`mux_core._run.worker_link`'s.

Why the records it has sent are safe: a ``positions`` frame is written only
after the uplink has written every record that had entered its channel when
the positions were copied, so the parent never holds a position ahead of
the records it got (docs/architecture.md, Workers).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import msgspec
import trio

from .._config import Config, SinkConfig, SourceConfig, load_config
from .._config.shard import Shard, select_shard
from .._plugins import PluginManager
from ..errors import ConfigError, PluginError
from ..records import Record
from ..sink import Overflow
from ..transport import ResumeState
from .channel import SinkChannel
from .engine import Engine
from .sink_set import SinkRunner
from .source_set import SourceRunner
from .worker_config import read_share
from .worker_link import (
    HEARTBEAT,
    Saved,
    Share,
    Start,
    frame,
    from_saved,
    saved,
    uplink_frames,
)

__all__ = ["Uplink", "WorkerEngine", "serve"]

_log = logging.getLogger("mux.worker")

#: Seconds between two ``positions`` frames.
POSITIONS_INTERVAL = 0.5
#: Every this many frames, one looks at every source, moved or not.
FULL_EVERY = 20
#: The uplink's channel: records and bytes held in the worker before its sources wait.
UPLINK_BUFFER = 10_000
UPLINK_BUFFER_BYTES = 4 * 1024 * 1024
#: The longest command line the parent may send (a start message with many positions).
MAX_COMMAND = 256 * 1024 * 1024


class Pipe:
    """The worker's end of the pipe to the parent: one writer at a time, and
    a parent that is gone (the pipe broken) stops the run quietly -- what
    was not sent cannot be, and the commands pipe says the same."""

    def __init__(self, stream: trio.lowlevel.FdStream, gone: Callable[[], None]) -> None:
        self._stream = stream
        self._gone = gone
        self.lock = trio.Lock()

    async def send(self, data: bytes) -> bool:
        """Write ``data`` whole; False (and the run stopping) if the parent is gone."""
        async with self.lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._gone()
                return False
        return True


class Uplink:
    """The worker's one sink: frames to the parent, in order, one write per batch
    (events in ``E`` frames the parent splices, the rest in ``R`` frames)."""

    def __init__(self, pipe: Pipe) -> None:
        self._pipe = pipe

    async def open(self) -> None:
        return None

    async def write(self, batch: Sequence[Record]) -> None:
        await self._pipe.send(uplink_frames(batch))

    async def aclose(self) -> None:
        return None


class GivenSources:
    """A worker's discovered sources: the ones the parent, which runs the
    discoverers, assigned it (``discovered`` command). Takes the place of the
    engine's own discoverers (:class:`~mux_core._run.changes.DiscoveredSources`)."""

    def __init__(self, changed: Callable[[], Awaitable[None]]) -> None:
        self.found: list[SourceConfig] = []
        self._changed = changed
        self._nursery: trio.Nursery | None = None

    def apply(self, nursery: trio.Nursery | None, config: Config) -> None:
        self._nursery = nursery
        if nursery is not None and self.found:  # handed over before the run was up
            nursery.start_soon(self._changed)

    def sources(self, taken: set[str]) -> list[SourceConfig]:
        return [source for source in self.found if source.name not in taken]

    def hand(self, found: list[SourceConfig]) -> None:
        """The parent's new list for this worker: start, stop, restart what differs."""
        self.found = found
        if self._nursery is not None:
            self._nursery.start_soon(self._changed)


class WorkerEngine(Engine):
    """An engine whose sinks are one :class:`Uplink`, whose resume states come
    from the parent, and whose seq reservations the parent saves."""

    def __init__(self, config: Config, start: Start, pipe: trio.lowlevel.FdStream, **kw: Any):
        self._start = start
        #: The pipe to the parent (records, positions, reservations, heartbeats).
        self.pipe = Pipe(pipe, lambda: self.request_stop("the parent mux process is gone"))
        self._asked: dict[int, trio.Event] = {}
        self._granted: dict[int, int] = {}
        self._next_ask = 0
        #: What the last positions frame said, per source: (seq, last_id, cursor).
        self._sent: dict[str, tuple[int, str | None, Any]] = {}
        #: The sources this worker runs (the parent's assignment; changes on a reload).
        self.share = Share(start.index, start.count)
        super().__init__(config, reserve=self._reserve if start.state else None, **kw)
        #: Sources may still come (the parent watches the file or discovers): stay.
        self.keep_alive = start.keep_alive
        self.given = GivenSources(self._changes.rediscovered)
        self._changes.discovery = self.given

    def _keep_alive(self) -> bool:
        return self.keep_alive or super()._keep_alive()

    def make_sink(self, cfg: SinkConfig, sources: Sequence[SourceRunner] = ()) -> SinkRunner:
        channel = SinkChannel(cfg.buffer, Overflow.BLOCK, max_bytes=cfg.buffer_bytes)
        return SinkRunner(cfg, Uplink(self.pipe), channel)

    def make_source(self, cfg: SourceConfig) -> SourceRunner:
        runner = super().make_source(cfg)
        held = self._start.resume.pop(cfg.name, None)
        state = self._start.state
        if held is not None and runner.resume is None:
            transport, resume = from_saved(held, state=state)
            if transport != cfg.transport:
                # Positions mean nothing to another transport; seq still goes on
                # (as StateStore.resume_for does in one process).
                resume = ResumeState(seq=resume.seq, seq_reserved=resume.seq_reserved)
            runner.resume = resume
        if runner.resume is None and state:
            runner.resume = ResumeState(seq_reserved=0)
        return runner

    def resume_from(self, resume: dict[str, Saved]) -> None:
        """Where sources about to be built resume (the parent's held or saved positions)."""
        self._start.resume.update(resume)

    async def _reserve(self, source: str, transport: str, resume: ResumeState, upto: int) -> None:
        """Ask the parent to save a seq reservation; wait for its answer."""
        ask = self._next_ask = self._next_ask + 1
        done = self._asked[ask] = trio.Event()
        if not await self.pipe.send(frame({"reserve": [ask, source, transport, upto]})):
            return  # the parent is gone: the run is stopping, nothing more is saved
        await done.wait()
        resume.seq_reserved = max(resume.seq_reserved or 0, self._granted.pop(ask))

    def granted(self, ask: int, limit: int) -> None:
        self._granted[ask] = limit
        event = self._asked.pop(ask, None)
        if event is not None:
            event.set()

    async def send_positions(self, *, full: bool = True) -> bool:
        """The sources that moved since the last frame, once the records it covers are up.

        Not ``full``: only the sources that handed over a batch since the last
        look (the fan-out notes them), so an idle worker of 50,000 sources
        does no work per source twice a second; a full look every
        :data:`FULL_EVERY` frames catches a position a transport moved outside
        a batch (a cursor, an SSE id without data).
        """
        if full:
            self._fan_out.take_moved()
            states = self._resume_states()
        else:
            states = {}
            for name, runner in self._fan_out.take_moved().items():
                resume = runner.live_resume
                if resume is not None:
                    states[name] = (runner.config.transport, resume)
        moved = {}
        for name, (transport, resume) in states.items():
            now = (resume.seq, resume.last_id, resume.cursor)
            if self._sent.get(name) != now:
                moved[name] = (now, saved(transport, resume))
        if not moved:
            return False
        if not await self._sinks.settle():
            return False
        if not await self.pipe.send(frame({"positions": {n: w for n, (_, w) in moved.items()}})):
            return False
        for name, (now, _) in moved.items():
            self._sent[name] = now
        return True

    async def send_positions_periodically(self) -> None:
        """Positions every :data:`POSITIONS_INTERVAL`; with nothing else to say, an
        ``alive`` frame every :data:`~mux_core._run.worker_link.HEARTBEAT` s, so
        the parent can tell a stuck worker from a quiet one."""
        count = 0
        quiet_since = trio.current_time()
        while True:
            await trio.sleep(POSITIONS_INTERVAL)
            count += 1
            if await self.send_positions(full=count % FULL_EVERY == 0):
                quiet_since = trio.current_time()
            elif trio.current_time() - quiet_since >= HEARTBEAT:
                await self.pipe.send(frame({"alive": None}))
                quiet_since = trio.current_time()


async def _commands(engine: WorkerEngine, commands: trio.lowlevel.FdStream, rest: bytes) -> None:
    """The parent's commands (``rest``: what came after the start message), until
    its end of the pipe closes (then stop).

    A command line with ``"data": N`` is followed by N bytes that belong to it.
    """
    buffer = bytearray(rest)
    pending: dict[str, Any] | None = None
    while True:
        while True:
            if pending is not None:
                size = int(pending["data"])
                if len(buffer) < size:
                    break
                data = bytes(buffer[:size])
                del buffer[:size]
                _obey(engine, pending, data)
                pending = None
            end = buffer.find(b"\n")
            if end < 0:
                break
            command = msgspec.json.decode(buffer[:end])
            del buffer[: end + 1]
            if command.get("data"):
                pending = command
            else:
                _obey(engine, command)
        try:
            chunk = await commands.receive_some(1 << 20)
        except trio.BrokenResourceError:
            chunk = b""
        if not chunk:
            engine.request_stop("the parent mux process is gone")
            return
        buffer += chunk


def _obey(engine: WorkerEngine, command: dict[str, Any], data: bytes = b"") -> None:
    if "discovered" in command:
        # The parent's own pickle of the SourceConfigs it built (never a server's bytes).
        found, resume = pickle.loads(data)
        engine.resume_from(resume)
        engine.given.hand(found)
    elif "reserved" in command:
        ask, limit = command["reserved"]
        engine.granted(int(ask), int(limit))
    elif "restart" in command:
        name = command["restart"]
        if name is None:
            engine._spawn(engine._changes.restart, None)
        else:
            engine.restart_source(str(name))
    elif "reload" in command:
        assignment = command["reload"]
        engine.share = _share(engine.share, assignment["sources"])
        engine.keep_alive = bool(assignment.get("keep_alive", engine.keep_alive))
        engine.request_reload()
    elif "stop" in command:
        engine.request_stop(str(command["stop"]))


def _share(shard: Shard, sources: list[str]) -> Share:
    return Share(shard.index, shard.count, frozenset(sources))


async def _read_start(commands: trio.lowlevel.FdStream) -> tuple[Start, bytes, bytes]:
    """The start message, the config part after it (``start.parsed`` bytes), what came next."""
    buffer = bytearray()
    while b"\n" not in buffer:
        chunk = await commands.receive_some(1 << 20)
        if not chunk or len(buffer) > MAX_COMMAND:
            raise SystemExit(2)
        buffer += chunk
    end = buffer.index(b"\n")
    start = msgspec.json.decode(buffer[:end], type=dict[str, Start])["start"]
    need = end + 1 + start.parsed
    while len(buffer) < need:
        chunk = await commands.receive_some(max(1 << 20, need - len(buffer)))
        if not chunk:
            raise SystemExit(2)
        buffer += chunk
    return start, bytes(buffer[end + 1 : need]), bytes(buffer[need:])


#: The uplink's config: the worker's one sink.
_UPLINK = SinkConfig(
    name="uplink",
    type="uplink",
    options=None,
    overflow=Overflow.BLOCK,
    buffer=UPLINK_BUFFER,
    on_error="stop",
    line=None,
    buffer_bytes=UPLINK_BUFFER_BYTES,
)


def _own_part(config: Config, share: Share) -> Config:
    """What a worker runs of the run's ``config``: its share of the sources, the uplink."""
    return attrs.evolve(select_shard(config, share), sinks=(_UPLINK,), state_dir=None, discovery=())


async def serve(
    up_fd: int,
    commands_fd: int,
    prepare: Callable[[Start], PluginManager],
    inherited: Config | None = None,
) -> int:
    """Be worker ``start.index``: read the start message, run, report, return the exit code.

    ``prepare(start)`` sets up logging and returns the loaded plugins (the
    CLI's business: ``mux_core._cli.worker``). ``inherited``: the parent's
    config, in a forked worker (:mod:`~mux_core._run.worker_fork`): its
    sources are this worker's first ones, nothing is read again.
    """
    from .._config.render import MaskSecrets

    commands = trio.lowlevel.FdStream(commands_fd)
    start, part, rest = await _read_start(commands)
    plugins = prepare(start)
    share = _share(Shard(start.index, start.count), start.sources)
    pipe = trio.lowlevel.FdStream(up_fd)
    # The first load: the file as the parent read it, if it sent it (a reload reads the file).
    parsed = [read_share(part)] if part else []

    def load_for(share: Share) -> Config:
        # Only this worker's sources are built (the parent validated the file).
        given = parsed.pop() if parsed else None
        config = load_config(start.config, plugins, only=share.includes, parsed=given)
        # The parent keeps the state file (state_dir): never two writers. It
        # also watches the config file and assigns the sources (engine.share).
        # The parent runs the discoverers too, and hands each worker its sources.
        return attrs.evolve(
            select_shard(config, share), sinks=(_UPLINK,), state_dir=None, discovery=()
        )

    def reload() -> Config:
        return load_for(engine.share)

    try:
        first = _own_part(inherited, share) if inherited is not None else load_for(share)
    except (ConfigError, PluginError) as exc:  # the file changed since the parent read it
        _log.error("worker %d: the config cannot be loaded:\n%s", start.index, exc)
        return 2
    engine: WorkerEngine = WorkerEngine(first, start, pipe, plugins=plugins, load_config=reload)
    engine.share = share
    with MaskSecrets(lambda: engine.config.secrets).installed():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_commands, engine, commands, rest)
            nursery.start_soon(engine.send_positions_periodically)
            result = await engine.run()
            await engine.send_positions()
            await engine.pipe.send(frame({"done": result.exit_code}))
            nursery.cancel_scope.cancel()
    return result.exit_code
