"""``mux replay FILE.jsonl [FILE ...]``: feed recorded runs through sinks, as if they were live.

What ``file`` sinks wrote -- each file a *recording*, its rotated files
included, oldest first (``FILE.N`` ... ``FILE.1``, then ``FILE``; see
:mod:`mux_core._run.recordings`) -- is decoded line by line, passed through
the config's ``[[processors]]`` (one chain per source of each recording, as
a live run has) and handed to the sinks of the config (``--config``), or to
a terminal view of the first event's numeric fields.

**Recorded time.** The processors run in the recording's time, whatever the
pace: a backtest (:mod:`mux_core._run.backtest`, in a thread whose trio
clock is the recorded time) feeds each recorded batch at its recorded
moment and ticks their timers at their deadlines, so ``stall`` and
``throughput`` fire where they would have in the live run. Their alerts are
stamped with that moment; a recorded alert equal to one raised again is
handed on once, and ``alert_log`` (``mux replay --alerts-only``) keeps
every alert with its origin.

**Pace.** ``--speed N`` replays at N times the recorded pace (from
``received_at`` / ``at``); without it, at the pace the sinks ask for
(``Sink.default_replay_speed``: the views the recorded pace, the others as
fast as they take records; the slowest wins). The pace follows a
:class:`~mux_core.sink.ReplayControl` every sink holds
(``SinkContext.replay``): a view's keys pause, resume, go faster or slower.
A silence of more than a minute in a recording plays as :data:`SILENCE_PLAYED`
seconds (at the current speed), so runs appended to one file hours apart
follow each other.

**Several recordings** are overlaid: each source's name becomes
``"<source>@<label>"`` (``train@a``; :attr:`~mux_core.sink.SourceInfo.recording`),
and the records are interleaved by the time since each recording's first
record, so at the recorded pace the runs play side by side -- one after the
other, the second run would wait for the whole first one, and by absolute
time runs recorded on different days would too. The views align them by step.

**Following** (``--follow``): once the files are read, what is appended to
them is fed as it comes (``tail -f``, across the ``file`` sink's
rotations) until a stop is requested.

A replay never drops a record: every sink's channel blocks (the file is not
going anywhere), so the panel draws the whole run at full resolution. A line
that is not a record is reported with its file and line number and skipped.
With a ``qt`` sink the window stays open once the files are done, until it
is closed (or Ctrl-C).

Exit codes as for ``mux run``: 0 done (or stopped by a signal or a closed
window), 1 a sink with ``on_error = "stop"`` failed, 2 a usage or config
error (no such file, a sink that would write into a file being replayed),
4 ``--fail-on`` saw an alert of that severity or higher.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from .._config import ProcessorConfig, SinkConfig
from .._plugins import PluginManager
from ..errors import ConfigError, PluginError
from ..records import (
    Event,
    Record,
    RecordDecodeError,
    Severity,
    decode_jsonl,
    open_recording,
)
from ..sink import Overflow, ReplayControl, SinkContext, SourceInfo, sink_member
from .backtest import AlertLog, Backtest, VirtualClock, VirtualTimeThread
from .channel import SinkChannel
from .fail_on import FailingAlert, FailOn
from .host import ExitCode, RunHost
from .progress import ReplayProgress
from .recordings import (
    CHUNK,
    Recording,
    RecordingReader,
    record_time,
    relabelled,
    replay_files,
    scan_sources,
)
from .sink_set import SinkRunner, StartBackground, new_sink_runner

__all__ = ["Replay", "ReplayResult", "default_view", "replay_files"]

_log = logging.getLogger("mux.replay")


#: Records per batch handed to the sinks when replaying as fast as possible.
_BATCH = 1024
#: Bad lines reported one by one; the rest are counted.
_REPORT_BAD = 20
#: Numeric fields the default terminal view plots, at most.
_DEFAULT_FIELDS = 3
#: Following: seconds between two looks at a file that has nothing new.
FOLLOW_POLL = 0.25
#: A silence longer than this (recorded seconds) is cut short ...
SILENCE = 60.0
#: ... to this many recorded seconds.
SILENCE_PLAYED = 5.0


@attrs.frozen
class ReplayResult:
    """How a replay ended (the parts ``mux replay`` reports)."""

    exit_code: int
    records: int
    bad_lines: int
    reason: str


@attrs.frozen
class _ReplayConfig:
    # What ``mux_main_loop`` implementations look at (``engine.config.sinks``).
    name: str
    sinks: tuple[SinkConfig, ...]
    sources: tuple[SourceInfo, ...]
    processors: tuple[ProcessorConfig, ...] = ()


def default_view(path: Path, plugins: PluginManager) -> SinkConfig:
    """A terminal view plotting the numeric fields of the recording's first event (up to 3)."""
    provided = plugins.sinks().get("tui")
    if provided is None:
        raise PluginError("no terminal view (sink 'tui') is installed; pass --config CONFIG")
    cls = provided.cls
    options = cls.Options(plot=_numeric_fields(path))
    return SinkConfig("tui", "tui", options, Overflow.BLOCK, 10_000, "stop", None)


def _numeric_fields(path: Path) -> list[str]:
    with open_recording(path) as file:
        for number, line in enumerate(file):
            if number > 1000:
                break
            try:
                record = decode_jsonl(line)
            except RecordDecodeError:
                continue
            if type(record) is Event and isinstance(record.data, dict):
                return [
                    key
                    for key, value in record.data.items()
                    if type(value) in (int, float) and key not in ("step", "id", "seq")
                ][:_DEFAULT_FIELDS]
    return []


class _Pacer:
    """When each record is due, under a :class:`ReplayControl` that may change at any time.

    Times are *recorded* seconds (since each recording's start, see
    :class:`_Merge`); the anchor ties one recorded second to one moment of
    trio's clock. A change of speed or a pause re-anchors at the position
    reached, so the replay goes on from there at the new pace.
    """

    def __init__(self, control: ReplayControl) -> None:
        self.control = control
        self._speed = control.speed
        self._paused = control.paused
        self._anchor: tuple[float, float] | None = None  # (recorded, trio time)
        self._changed = trio.Event()

    def changed(self) -> None:
        """The control changed (called in the run's thread)."""
        now = trio.current_time()
        position = self._position(now)
        self._speed, self._paused = self.control.speed, self.control.paused
        if position is not None:
            self._anchor = (position, now)
        self._changed.set()
        self._changed = trio.Event()

    def _position(self, now: float) -> float | None:
        if self._anchor is None:
            return None
        recorded, at = self._anchor
        if self._paused or math.isinf(self._speed):
            return recorded
        return recorded + (now - at) * self._speed

    def ready(self, recorded: float) -> bool:
        """Whether a record of recorded time ``recorded`` may go now."""
        if self._paused:
            return False
        if self._anchor is None or math.isinf(self._speed) or math.isnan(recorded):
            return True
        return self._due(recorded) <= trio.current_time()

    def _due(self, recorded: float) -> float:
        assert self._anchor is not None
        anchor, at = self._anchor
        return at + (recorded - anchor) / self._speed

    async def wait(self, recorded: float) -> None:
        """Until a record of recorded time ``recorded`` is due (never while paused)."""
        self._skip_silence(recorded)
        while not self.ready(recorded):
            changed = self._changed
            if self._paused:
                await changed.wait()
                continue
            with trio.move_on_at(self._due(recorded)):
                await changed.wait()

    def _skip_silence(self, recorded: float) -> None:
        now = trio.current_time()
        position = self._position(now)
        if position is None or not recorded - position > SILENCE:
            return
        _log.info(
            "skipping %.0f s of silence in the recording (played as %g s)",
            recorded - position - SILENCE_PLAYED,
            SILENCE_PLAYED,
        )
        self._anchor = (recorded - SILENCE_PLAYED, now)

    def sent(self, recorded: float) -> None:
        """A record of recorded time ``recorded`` went to the sinks."""
        if math.isnan(recorded):
            return
        if self._anchor is None or math.isinf(self._speed):
            self._anchor = (recorded, trio.current_time())


class _Merge:
    """The records of several recordings, interleaved by time since each one's start.

    Each recording keeps its own order; a record without a time goes with
    its recording's previous one. Following, a recording with nothing new
    does not hold the others back.
    """

    def __init__(self, readers: Sequence[RecordingReader], *, follow: bool) -> None:
        self._readers = list(readers)
        self._follow = follow
        self._buffers: list[deque[tuple[float, int, Record]]] = [deque() for _ in readers]
        self._starts: list[float | None] = [None] * len(readers)
        self._last = [0.0] * len(readers)

    async def next(self) -> list[tuple[float, int, Record]]:
        """The next records in order: (recorded seconds, recording index, record).

        Empty at the end; following, it waits until something is appended.
        """
        while True:
            await self._fill()
            if any(self._buffers):
                return self._take()
            if all(reader.done for reader in self._readers):
                return []
            await trio.sleep(FOLLOW_POLL)  # following: nothing new yet

    async def _fill(self) -> None:
        for index, reader in enumerate(self._readers):
            if not self._buffers[index] and not reader.done:
                records = await trio.to_thread.run_sync(reader.read, CHUNK)
                self._buffers[index].extend(self._keyed(index, records))

    def _keyed(self, index: int, records: list[Record]) -> list[tuple[float, int, Record]]:
        start, last = self._starts[index], self._last[index]
        keyed = []
        for record in records:
            at = record_time(record)
            if math.isfinite(at):
                if start is None:
                    start = at
                last = at - start
            keyed.append((last, index, record))
        self._starts[index], self._last[index] = start, last
        return keyed

    def _take(self) -> list[tuple[float, int, Record]]:
        buffers = self._buffers
        filled = [buffer for buffer in buffers if buffer]
        if len(filled) == 1 and (self._follow or len(buffers) == 1):
            taken = list(filled[0])
            filled[0].clear()
            return taken
        taken = []
        while len(taken) < CHUNK:
            first = min((b for b in buffers if b), key=lambda b: b[0][0], default=None)
            if first is None:
                break
            taken.append(first.popleft())
            index = taken[-1][1]
            if not first and not self._readers[index].done and not self._follow:
                break  # read on in that recording before going further
        return taken


class Replay(RunHost):
    """Replays recorded files through sinks; runs like an :class:`~mux_core._run.engine.Engine`.

    ``recordings``: :class:`~mux_core._run.recordings.Recording` objects, or
    the files of one recording (oldest first). ``speed``: times the recorded
    pace (``math.inf``: as fast as possible); None: the sinks'
    ``default_replay_speed`` (as fast as possible when following).
    ``sources``: what the sinks' context lists (default: scanned from the
    recordings). ``await replay.run()`` (or a plugin's ``mux_main_loop``,
    which only needs ``config.sinks``, ``run`` and ``request_stop``) returns
    a :class:`ReplayResult`, also kept in :attr:`result`.
    """

    noun = "replay"

    def __init__(
        self,
        recordings: Sequence[Recording] | Sequence[Path],
        sinks: Sequence[SinkConfig],
        plugins: PluginManager,
        *,
        name: str,
        sources: Sequence[SourceInfo] | None = None,
        speed: float | None = None,
        install_signal_handlers: bool = False,
        hold_open: bool | None = None,
        processors: Sequence[ProcessorConfig] = (),
        fail_on: Severity | None = None,
        fail_fast: bool = False,
        follow: bool = False,
        alert_log: AlertLog | None = None,
        progress: ReplayProgress | None = None,
    ) -> None:
        self.recordings = _as_recordings(recordings)
        #: Every file read, in order.
        self.files = [path for recording in self.recordings for path in recording.files]
        self.config = _ReplayConfig(name, tuple(sinks), tuple(sources or ()), tuple(processors))
        self._sources_given = sources is not None
        self.plugins = plugins
        self.follow = follow
        super().__init__(install_signal_handlers=install_signal_handlers)
        #: The pace every sink can change (``SinkContext.replay``).
        self.control = ReplayControl(self._default_speed() if speed is None else speed)
        #: Keep the sinks open after the last record until a stop is requested
        #: (default: when there is a window to look at, a ``qt`` sink).
        self.hold_open = any(s.type == "qt" for s in sinks) if hold_open is None else hold_open
        #: ``--fail-on``: the alerts that make the exit code 4, the first of them.
        self.fail_on = (
            None
            if fail_on is None
            else FailOn(fail_on, fail_fast=fail_fast, on_first=self._fail_fast)
        )
        self.result: ReplayResult | None = None
        self.records = 0
        self.bad_lines = 0
        #: Every alert handed on, with its origin (new, recorded, recorded only);
        #: kept when given (``mux replay --alerts-only``).
        self.alert_log = alert_log
        #: The progress line on a terminal (``mux replay`` on a tty), or None.
        self.progress = progress
        self._stopped = trio.Event()
        #: A processor that could not be created: raised once the sinks are closed.
        self._broken: PluginError | None = None
        self._check_outputs()

    @property
    def speed(self) -> float:
        """The pace now, in times the recorded pace (``math.inf``: as fast as possible)."""
        return self.control.speed

    def _default_speed(self) -> float:
        if self.follow:
            return math.inf
        speeds = [
            float(sink_member(self.plugins.sinks()[cfg.type].cls, "default_replay_speed"))
            for cfg in self.config.sinks
            if cfg.type in self.plugins.sinks()
        ]
        return min(speeds, default=math.inf)

    def _check_outputs(self) -> None:
        replayed = {os.path.realpath(p) for p in self.files}
        for sink in self.config.sinks:
            target = getattr(sink.options, "path", None)
            if isinstance(target, str | os.PathLike) and os.path.realpath(target) in replayed:
                raise ConfigError(
                    f"sink {sink.name!r} writes to {target}, the file being replayed; "
                    "replay with a config whose file sink writes elsewhere"
                )

    # -- control -------------------------------------------------------------

    def _stop(self, reason: str) -> None:
        super()._stop(reason)
        self._stopped.set()

    def _fail_fast(self, found: FailingAlert) -> None:
        self._stop(f"--fail-fast: {found.describe()}")

    # -- the run ---------------------------------------------------------------

    async def run(self) -> ReplayResult:
        self._token = trio.lowlevel.current_trio_token()
        if self._stop_reason is not None:
            self._stopped.set()
        if not self._sources_given:
            sources = await trio.to_thread.run_sync(self._scan_sources)
            self.config = attrs.evolve(self.config, sources=tuple(sources))
        runners = [self._make_sink(cfg) for cfg in self.config.sinks]
        async with trio.open_nursery() as system:
            if self.install_signal_handlers:
                system.start_soon(self._watch_signals)
            async with trio.open_nursery() as nursery:
                self._sinks.attach(nursery)
                for runner in runners:
                    await self._sinks.start(runner)
                self._log_start()
                with trio.CancelScope() as feeding:
                    system.start_soon(self._cancel_when_stopped, feeding)
                    await self._feed()
                if self._stop_reason is None:
                    _log.info(
                        "replay done: %d records from %s%s",
                        self.records,
                        ", ".join(str(p) for p in self.files),
                        f" ({self.bad_lines} bad lines skipped)" if self.bad_lines else "",
                    )
                    if self.hold_open and not self._sink_failed:
                        _log.info("close the window (or press Ctrl-C) to exit")
                        await self._stopped.wait()
                self._sinks.close_all()
            system.cancel_scope.cancel()
        if self._broken is not None:
            raise self._broken  # `mux replay` says it in one line and exits 2
        if self._sink_failed:
            code = ExitCode.SINK_FAILED
        elif self.fail_on is not None and self.fail_on.count:
            code = ExitCode.ALERT
        else:
            code = ExitCode.OK
        reason = self._stop_reason or "the recording is done"
        self.result = ReplayResult(code, self.records, self.bad_lines, reason)
        return self.result

    def _scan_sources(self) -> list[SourceInfo]:
        relabel = len(self.recordings) > 1
        found = []
        for recording in self.recordings:
            for source, transport in scan_sources(recording):
                name = f"{source}@{recording.label}" if relabel else source
                found.append(SourceInfo(name, transport, recording=recording.label))
        return found

    def _log_start(self) -> None:
        speed = self.control.speed
        pace = "as fast as the sinks take it" if math.isinf(speed) else f"at x{speed:g}"
        if speed == 1.0:
            pace = "at the recorded pace"
        labels = ", ".join(recording.label for recording in self.recordings)
        follow = ", then following" if self.follow else ""
        _log.info("replaying %s %s%s", labels, pace, follow)

    async def _cancel_when_stopped(self, scope: trio.CancelScope) -> None:
        await self._stopped.wait()
        scope.cancel()

    def _make_sink(self, cfg: SinkConfig) -> SinkRunner:
        cls = self.plugins.sinks()[cfg.type].cls
        # Block whatever the sink's policy: a recording waits, nothing is dropped.
        channel = SinkChannel(cfg.buffer, Overflow.BLOCK, max_bytes=cfg.buffer_bytes)
        if cfg.history:
            _log.info(
                "sink %r: its history is fed in a live run only (replay a file, or "
                "mux replay --follow FILE)",
                cfg.name,
            )

        def context(start_background: StartBackground) -> SinkContext:
            return SinkContext(
                name=cfg.name,
                config_name=self.config.name,
                sources=self.config.sources,
                request_stop=self.request_stop,
                start_background=start_background,
                dropped=lambda: channel.dropped,
                replay=self.control,
                recordings=tuple(recording.label for recording in self.recordings),
            )

        return new_sink_runner(cls, cfg, channel, context)

    async def _feed(self) -> None:
        readers = [
            RecordingReader(recording, follow=self.follow, on_bad_line=self._bad_line)
            for recording in self.recordings
        ]
        merge = _Merge(readers, follow=self.follow)
        pacer = _Pacer(self.control)
        backtest, lane = self._backtest()
        if self.progress is not None:
            self.progress.begin(sum(reader.size for reader in readers))

        def wake() -> None:
            self._call_soon(pacer.changed)

        self.control.watch(wake)
        pacer.changed()  # what the control says now (a view may have paused it already)
        read = 0
        try:
            batch: list[tuple[int, Record]] = []
            while items := await merge.next():
                read += len(items)
                if self.progress is not None:
                    self.progress.update(read, sum(r.position for r in readers), items[-1])
                if backtest is not None and lane is not None:
                    try:
                        items = await lane.call(backtest.feed, items)
                    except PluginError as exc:
                        self._broken = exc
                        self._stop(str(exc))
                        return
                for recorded, index, record in items:
                    if not pacer.ready(recorded):
                        await self._send(batch)
                        batch = []
                        await pacer.wait(recorded)
                    pacer.sent(recorded)
                    batch.append((index, record))
                    if len(batch) >= _BATCH:
                        await self._send(batch)
                        batch = []
                if self.follow:  # what was appended goes now, not with the next append
                    await self._send(batch)
                    batch = []
            await self._send(batch)
        finally:
            if lane is not None:
                lane.close()
            if self.progress is not None:
                self.progress.close()
            for reader in readers:
                reader.close()

    def _backtest(self) -> tuple[Backtest | None, VirtualTimeThread | None]:
        """The processors in recorded time, in a thread of their own (none: no processors)."""
        if not self.config.processors and self.alert_log is None:
            return None, None
        clock = VirtualClock()
        labels = [recording.label for recording in self.recordings]
        backtest = Backtest(
            self.config.processors, self.plugins, clock, labels=labels, log=self.alert_log
        )
        return backtest, VirtualTimeThread(clock)

    async def _send(self, items: list[tuple[int, Record]]) -> None:
        """Hand a batch to every sink, waiting for room; cancelled when the replay stops."""
        await trio.lowlevel.checkpoint()  # a stop cancels here even with no sinks left
        if not items:
            return
        batch = self._named(items)
        self.records += len(items)
        if self.fail_on is not None:
            cut = self.fail_on.see(batch)
            if cut is not None:  # --fail-fast: nothing after the alert that stops the replay
                batch = batch[:cut]
        if not batch:
            return
        # Shielded: a batch read is a batch written, even when --fail-fast (or a
        # signal) stops the replay meanwhile.
        with trio.CancelScope(shield=True):
            for runner in self._sinks.live:
                try:
                    await runner.channel.put(batch)
                except trio.ClosedResourceError:  # the sink failed or was dropped
                    pass
        if not self._sinks.live and self.config.sinks:
            self._stop("no sink left")

    def _named(self, items: list[tuple[int, Record]]) -> list[Record]:
        """The records as the sinks see them: ``"<source>@<label>"`` with several recordings."""
        if len(self.recordings) == 1:
            return [record for _, record in items]
        labels = [recording.label for recording in self.recordings]
        return [relabelled(record, labels[index]) for index, record in items]

    def _bad_line(self, path: Path, number: int, exc: Exception) -> None:
        self.bad_lines += 1
        if self.bad_lines <= _REPORT_BAD:
            _log.warning("%s:%d: skipped: %s", path, number, exc)
        elif self.bad_lines == _REPORT_BAD + 1:
            _log.warning("more bad lines: skipping them without a word each (counted at the end)")


def _as_recordings(given: Sequence[Recording] | Sequence[Path]) -> list[Recording]:
    recordings = [item for item in given if isinstance(item, Recording)]
    if len(recordings) == len(given):
        return recordings
    files = tuple(Path(item) for item in given if not isinstance(item, Recording))
    if len(files) != len(given):
        raise TypeError("pass recordings or the files of one recording, not both")
    return [Recording(files[-1].stem if files else "", files)]
