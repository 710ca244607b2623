"""``mux replay FILE.jsonl``: feed a recorded run through sinks, as if it were live.

What the ``file`` sink wrote -- rotated files included, oldest first
(``FILE.N`` ... ``FILE.1``, then ``FILE``) -- is decoded line by line and
handed to the sinks of a config (``--config``), or to a terminal view of
the first event's numeric fields. As fast as the sinks take it, or at
``--speed N`` times the recorded pace (from ``received_at`` / ``at``).

A replay never drops a record: every sink's channel blocks (the file is not
going anywhere), so the panel draws the whole run at full resolution. A line
that is not a record is reported with its file and line number and skipped.
With a ``qt`` sink the window stays open once the file is done, until it is
closed (or Ctrl-C).

Exit codes as for ``mux run``: 0 done (or stopped by a signal or a closed
window), 1 a sink with ``on_error = "stop"`` failed, 2 a usage or config
error (no such file, a sink that would write into the file being replayed).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import trio

from .._config import SinkConfig
from .._plugins import PluginManager
from ..errors import ConfigError, PluginError
from ..records import (
    Event,
    Record,
    RecordDecodeError,
    decode_jsonl,
)
from ..sink import Overflow, SinkContext, SourceInfo
from .channel import SinkChannel
from .host import ExitCode, RunHost
from .sink_set import (
    SinkRunner,
    StartBackground,
    new_sink_runner,
)

__all__ = ["Replay", "ReplayResult", "default_view", "replay_files"]

_log = logging.getLogger("mux.replay")


#: Records per batch handed to the sinks when replaying as fast as possible.
_BATCH = 1024
#: Bad lines reported one by one; the rest are counted.
_REPORT_BAD = 20
#: Numeric fields the default terminal view plots, at most.
_DEFAULT_FIELDS = 3


def replay_files(path: Path) -> list[Path]:
    """``path`` and its rotated predecessors, oldest first: ``path.N`` ... ``path.1``, ``path``.

    Raises ConfigError when ``path`` does not exist (neither does a run).
    """
    if not path.is_file():
        raise ConfigError(f"{path}: no such file to replay")
    rotated = []
    index = 1
    while (candidate := path.with_name(f"{path.name}.{index}")).is_file():
        rotated.append(candidate)
        index += 1
    return [*reversed(rotated), path]


def _record_time(record: Record) -> float:
    if type(record) is Event:
        return record.received_at
    at = getattr(record, "at", None)
    return float(at) if isinstance(at, int | float) else math.nan


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


def default_view(path: Path, plugins: PluginManager) -> SinkConfig:
    """A terminal view plotting the numeric fields of the recording's first event (up to 3)."""
    provided = plugins.sinks().get("tui")
    if provided is None:
        raise PluginError("no terminal view (sink 'tui') is installed; pass --config CONFIG")
    cls = provided.cls
    options = cls.Options(plot=_numeric_fields(path))
    return SinkConfig("tui", "tui", options, Overflow.BLOCK, 10_000, "stop", None)


def _numeric_fields(path: Path) -> list[str]:
    with path.open("rb") as file:
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


class Replay(RunHost):
    """Replays recorded files through sinks; runs like an :class:`~mux_core._run.engine.Engine`.

    ``await replay.run()`` (or a plugin's ``mux_main_loop``, which only
    needs ``config.sinks``, ``run`` and ``request_stop``) returns a
    :class:`ReplayResult`, also kept in :attr:`result`.
    """

    noun = "replay"

    def __init__(
        self,
        files: Sequence[Path],
        sinks: Sequence[SinkConfig],
        plugins: PluginManager,
        *,
        name: str,
        sources: Sequence[SourceInfo] = (),
        speed: float | None = None,
        install_signal_handlers: bool = False,
        hold_open: bool | None = None,
    ) -> None:
        self.files = list(files)
        self.config = _ReplayConfig(name, tuple(sinks), tuple(sources))
        self.plugins = plugins
        self.speed = speed
        super().__init__(install_signal_handlers=install_signal_handlers)
        #: Keep the sinks open after the last record until a stop is requested
        #: (default: when there is a window to look at, a ``qt`` sink).
        self.hold_open = any(s.type == "qt" for s in sinks) if hold_open is None else hold_open
        self.result: ReplayResult | None = None
        self.records = 0
        self.bad_lines = 0
        self._stopped = trio.Event()
        self._check_outputs()

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

    # -- the run ---------------------------------------------------------------

    async def run(self) -> ReplayResult:
        self._token = trio.lowlevel.current_trio_token()
        if self._stop_reason is not None:
            self._stopped.set()
        runners = [self._make_sink(cfg) for cfg in self.config.sinks]
        async with trio.open_nursery() as system:
            if self.install_signal_handlers:
                system.start_soon(self._watch_signals)
            async with trio.open_nursery() as nursery:
                self._sinks.attach(nursery)
                for runner in runners:
                    await self._sinks.start(runner)
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
        code = ExitCode.SINK_FAILED if self._sink_failed else ExitCode.OK
        reason = self._stop_reason or "the recording is done"
        self.result = ReplayResult(code, self.records, self.bad_lines, reason)
        return self.result

    async def _cancel_when_stopped(self, scope: trio.CancelScope) -> None:
        await self._stopped.wait()
        scope.cancel()

    def _make_sink(self, cfg: SinkConfig) -> SinkRunner:
        cls = self.plugins.sinks()[cfg.type].cls
        # Block whatever the sink's policy: a recording waits, nothing is dropped.
        channel = SinkChannel(cfg.buffer, Overflow.BLOCK, max_bytes=cfg.buffer_bytes)

        def context(start_background: StartBackground) -> SinkContext:
            return SinkContext(
                name=cfg.name,
                config_name=self.config.name,
                sources=self.config.sources,
                request_stop=self.request_stop,
                start_background=start_background,
                dropped=lambda: channel.dropped,
            )

        return new_sink_runner(cls, cfg, channel, context)

    async def _feed(self) -> None:
        batch: list[Record] = []
        speed = self.speed
        first_at: float | None = None
        started = trio.current_time()
        for record in self._records():
            if speed is not None:
                at = _record_time(record)
                if math.isfinite(at):
                    if first_at is None:
                        first_at = at
                    due = started + (at - first_at) / speed
                    if due > trio.current_time():
                        await self._send(batch)
                        batch = []
                        await trio.sleep_until(due)
            batch.append(record)
            if len(batch) >= _BATCH:
                await self._send(batch)
                batch = []
        await self._send(batch)

    async def _send(self, batch: list[Record]) -> None:
        """Hand a batch to every sink, waiting for room; cancelled when the replay stops."""
        await trio.lowlevel.checkpoint()  # a stop cancels here even with no sinks left
        if not batch:
            return
        self.records += len(batch)
        for runner in self._sinks.live:
            try:
                await runner.channel.put(batch)
            except trio.ClosedResourceError:  # the sink failed or was dropped
                pass
        if not self._sinks.live:
            self._stop("no sink left")

    def _records(self) -> Iterator[Record]:
        for path in self.files:
            with path.open("rb") as file:
                for number, line in enumerate(file, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = decode_jsonl(line)
                    except RecordDecodeError as exc:
                        self._bad_line(path, number, exc)
                        continue
                    yield record

    def _bad_line(self, path: Path, number: int, exc: Exception) -> None:
        self.bad_lines += 1
        if self.bad_lines <= _REPORT_BAD:
            _log.warning("%s:%d: skipped: %s", path, number, exc)
        elif self.bad_lines == _REPORT_BAD + 1:
            _log.warning("more bad lines: skipping them without a word each (counted at the end)")
