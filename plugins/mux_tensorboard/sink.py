"""The ``tensorboard`` sink: TensorBoard event files, a run per source and run segment.

``logdir/<source>/`` is a source's run; after a ``restart`` alert (a
``restart`` processor saw the trainer start over) its records go to a
sub-run, ``logdir/<source>/segment-2/``, ``segment-3/``, ... -- TensorBoard
lists each as a run of its own, so a restarted trainer's curve does not fold
back over the first one. A run restarted by mux itself (a new process, the
same trainer) continues the newest segment directory it finds.

What is written, per event: every numeric field of the payload (or the
``fields`` named; nested objects as ``outer/inner`` tags) as scalars of one
TensorBoard event, at the payload's step (``step_field``; the event's
``seq`` when the payload has none) and the time mux received it. Per alert:
a text summary (tag ``alerts``) at the source's newest step. Statuses and
quality records are not written.

The trio side only reads the payloads and queues plain tuples. Building the
protocol buffers and writing the files runs in a worker thread, every
``flush_interval`` seconds, when a few thousand records are queued, when the
run checkpoints (``sync``, for ``--state``) and when the sink closes. A
failed write (a full disk) raises with the directory named; the sink's
``on_error`` decides (default: drop the sink, the run goes on).
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import re
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any, ClassVar, TypeAlias

import attrs

from mux_core import Sink
from mux_core.options import positive
from mux_core.records import Alert, Batch, Event
from mux_core.sink import SinkContext

# trio and tensorboardX are imported where a run uses them: loading the plugin
# (every mux command does) and checking its options pay for neither.

__all__ = ["TensorBoardOptions", "TensorBoardSink", "segment_directory"]

#: Queued records that make ``write`` flush at once (backpressure).
_FLUSH_RECORDS = 8192
#: How deep an object is walked for numbers when ``fields`` is empty.
_MAX_DEPTH = 4
_SEGMENT_DIR = re.compile(r"segment-(\d+)")
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~])")
_instances = itertools.count(1)


def _non_empty(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{attribute.name} must not be empty")


def _paths(_instance: Any, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    for path in value:
        if not path or "" in path.split("."):
            raise ValueError(
                f"{attribute.name}: {path!r} is not a field path (a payload key, "
                "or keys joined by dots for a nested one: 'optim.lr')"
            )


@attrs.frozen(kw_only=True)
class TensorBoardOptions:
    """The keys of a ``[[sinks]] type = "tensorboard"`` table."""

    #: The directory TensorBoard is pointed at (``tensorboard --logdir``); a run
    #: directory per source is made in it. ``~`` is expanded; created if missing.
    logdir: str = attrs.field(validator=_non_empty)
    #: The payload field holding the training step, the x of every scalar (a dotted
    #: path for a nested one); events without it are placed at their ``seq``.
    step_field: str = "step"
    #: The numeric payload fields written as scalars (dotted paths for nested ones,
    #: tagged ``outer/inner``); empty = every numeric field but the step.
    fields: list[str] = attrs.field(factory=list, validator=_paths)
    #: Only events of these types are written (empty = every type).
    events: list[str] = attrs.field(factory=list)
    #: Seconds between writes of the event files (also when the run checkpoints
    #: for ``--state`` and when it stops).
    flush_interval: float = attrs.field(default=5.0, validator=positive("seconds"))

    @classmethod
    def check(cls, options: TensorBoardOptions) -> None:
        """Refuse a logdir that visibly cannot be written, creating nothing."""
        reason = _problem(_resolve(options.logdir))
        if reason is not None:
            raise ValueError(
                f"logdir {options.logdir!r}: {reason}; choose a directory mux may write"
            )


def _resolve(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _problem(path: str) -> str | None:
    """Why ``path`` cannot be a writable directory, as far as it is visible."""
    while not os.path.exists(path):
        above = os.path.dirname(path)
        if above == path:
            return None
        path = above
    if not os.path.isdir(path):
        return f"{path} is not a directory"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path}: {os.strerror(errno.EACCES)}"
    return None


def run_name(source: str) -> str:
    """A source's run directory name: its name, with path separators and a
    leading dot written as ``_`` (a name is any printable text)."""
    name = source.replace("/", "_").replace("\\", "_")
    return "_" + name[1:] if name.startswith(".") else name


def segment_directory(logdir: str, source: str, segment: int) -> str:
    """Where run segment ``segment`` (from 1) of ``source`` is written."""
    base = os.path.join(_resolve(logdir), run_name(source))
    return base if segment == 1 else os.path.join(base, f"segment-{segment}")


def _newest_segment(directory: str) -> int:
    """The highest run segment already written under a source's run directory (1 if none)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return 1
    found = [int(m.group(1)) for n in names if (m := _SEGMENT_DIR.fullmatch(n))]
    return max([1, *found])


def _escape(text: str) -> str:
    """Text shown as it is in TensorBoard's markdown (an alert's message carries data)."""
    return _MARKDOWN.sub(r"\\\1", text)


#: A queued record: (source, restarts seen before it, wall time, step, what).
#: ``what`` is a list of (tag, value) scalars, or the text of an alert.
_Queued: TypeAlias = tuple[str, int, float, int, "list[tuple[str, float]] | str"]


class _PayloadReader:
    """The step and the scalars of an event's payload."""

    def __init__(self, options: TensorBoardOptions) -> None:
        self.step_path = tuple(options.step_field.split(".")) if options.step_field else ()
        self.fields = [(path.replace(".", "/"), tuple(path.split("."))) for path in options.fields]

    def step(self, data: dict[str, Any]) -> int | None:
        if not self.step_path:
            return None
        value = _walk(data, self.step_path)
        if type(value) is int:
            return value
        if type(value) is float and math.isfinite(value):
            return int(value)
        return None

    def scalars(self, data: dict[str, Any]) -> list[tuple[str, float]]:
        if self.fields:
            out = []
            for tag, path in self.fields:
                value = _walk(data, path)
                if type(value) is float or type(value) is int:
                    out.append((tag, float(value)))
            return out
        out = []
        skip = self.step_path[0] if len(self.step_path) == 1 else None
        _numbers(data, "", skip, out, _MAX_DEPTH)
        return out


def _walk(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if type(data) is not dict:
            return None
        data = data.get(key)
    return data


def _numbers(
    data: dict[str, Any], prefix: str, skip: str | None, out: list[tuple[str, float]], depth: int
) -> None:
    for key, value in data.items():
        kind = type(value)
        if kind is float or kind is int:
            if prefix or key != skip:
                out.append((prefix + key, float(value)))
        elif kind is dict and depth > 1:
            _numbers(value, f"{prefix}{key}/", None, out, depth - 1)


@attrs.define
class _Source:
    #: Restart alerts seen in this run of mux: the segment is the newest one on
    #: disk when the source first wrote, plus these.
    restarts: int = 0
    #: The newest step seen in the current segment (where an alert is placed).
    step: int = 0


class _EventFile:
    """One TensorBoard event file, appended to. Only the worker thread calls it."""

    def __init__(self, directory: str, number: int) -> None:
        from tensorboardX.proto import event_pb2

        os.makedirs(directory, exist_ok=True)
        name = (
            f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
            f".{os.getpid()}.{number}"
        )
        self.path = os.path.join(directory, name)
        self._file = open(self.path, "ab")  # noqa: SIM115 (kept open, closed by close())
        first = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
        self.append([first.SerializeToString()])

    def append(self, records: Sequence[bytes]) -> None:
        """Write ``records`` framed as TFRecords (length, its CRC, data, its CRC)."""
        from tensorboardX.record_writer import masked_crc32c

        pack = struct.pack
        parts: list[bytes] = []
        for data in records:
            header = pack("<Q", len(data))
            parts += (header, pack("<I", masked_crc32c(header)), data)
            parts.append(pack("<I", masked_crc32c(data)))
        self._file.write(b"".join(parts))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardSink(Sink):
    """Writes every source's numeric payload fields and alerts as TensorBoard runs."""

    Options: ClassVar[type[TensorBoardOptions]] = TensorBoardOptions
    #: Every step is a point of the curve: nothing is dropped, the sources wait.
    default_overflow: ClassVar[str] = "block"
    #: A curve is not worth stopping the run for.
    default_on_error: ClassVar[str] = "drop"

    def __init__(self, options: TensorBoardOptions, context: SinkContext) -> None:
        import trio

        self.options = options
        self.context = context
        self.logdir = _resolve(options.logdir)
        self._reader = _PayloadReader(options)
        self._types = frozenset(options.events)
        self._sources: dict[str, _Source] = {}
        self._queued: list[_Queued] = []
        #: Per source: the segment on disk when it first wrote (segments start there).
        self._base: dict[str, int] = {}
        self._files: dict[tuple[str, int], _EventFile] = {}
        self._number = next(_instances)
        self._io_lock = trio.Lock()
        self._closed = False
        #: Records written to event files so far (for tests and curious users).
        self.written = 0

    async def open(self) -> None:
        self.context.start_background(self._flush_periodically)

    async def write(self, batch: Batch) -> None:
        sources = self._sources
        queued = self._queued
        reader = self._reader
        types = self._types
        for index, record in enumerate(batch):
            if type(record) is Event:
                if types and record.event not in types:
                    continue
                data = record.data
                if type(data) is not dict:
                    continue
                source = sources.get(record.source) or self._source(record.source)
                step = reader.step(data)
                if step is None:
                    step = record.seq
                source.step = step
                scalars = reader.scalars(data)
                if scalars:
                    queued.append(
                        (record.source, source.restarts, record.received_at, step, scalars)
                    )
            elif type(record) is Alert:
                source = sources.get(record.source) or self._source(record.source)
                if record.rule == "restart":
                    source.restarts += 1
                    source.step = self._next_step(batch, index, record.source)
                text = f"**{record.severity.value}** `{record.rule}`: {_escape(record.message)}"
                queued.append((record.source, source.restarts, record.at, source.step, text))
        if len(queued) >= _FLUSH_RECORDS:
            await self.flush()

    def _source(self, name: str) -> _Source:
        source = self._sources[name] = _Source()
        return source

    def _next_step(self, batch: Batch, index: int, name: str) -> int:
        """The step of the event a restart alert stands before: the new segment's first."""
        for record in itertools.islice(batch, index + 1, None):
            if type(record) is Event and record.source == name:
                data = record.data
                step = self._reader.step(data) if type(data) is dict else None
                return record.seq if step is None else step
        return 0

    async def sync(self) -> None:
        """Hand every queued record to the OS: ``--state`` calls it before saving a position."""
        await self.flush()

    async def flush(self) -> None:
        """Write what is queued to the event files (in a worker thread)."""
        async with self._io_lock:
            if self._closed:
                return
            queued, self._queued = self._queued, []
            if queued:
                await self._run_io(self._write_queued, queued)

    async def aclose(self) -> None:
        """Write the rest and close the files. Not interrupted by cancellation."""
        import trio

        with trio.CancelScope(shield=True):
            async with self._io_lock:
                if self._closed:
                    return
                self._closed = True
                queued, self._queued = self._queued, []
                try:
                    if queued:
                        await self._run_io(self._write_queued, queued)
                finally:
                    await trio.to_thread.run_sync(self._close_files)

    async def _flush_periodically(self) -> None:
        import trio

        while not self._closed:
            await trio.sleep(self.options.flush_interval)
            await self.flush()

    async def _run_io(self, fn: Any, *args: Any) -> None:
        """One disk job in the worker thread, shielded (records taken from the queue
        must reach the files); an OSError says which directory and why."""
        import trio

        try:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(fn, *args)
        except OSError as exc:
            where = exc.filename or self.logdir
            raise OSError(
                exc.errno,
                f"cannot write TensorBoard files in {where}: {exc.strerror or exc}"
                " \u2014 choose a writable logdir",
            ) from exc

    # -- the worker thread -------------------------------------------------------

    def _write_queued(self, queued: list[_Queued]) -> None:
        from tensorboardX.proto import event_pb2, summary_pb2
        from tensorboardX.summary import text as text_summary

        Event_ = event_pb2.Event
        Summary = summary_pb2.Summary
        Value = Summary.Value
        by_file: dict[tuple[str, int], list[bytes]] = {}
        for source, restarts, wall_time, step, what in queued:
            if isinstance(what, str):
                summary = text_summary("alerts", what)
            else:
                summary = Summary(value=[Value(tag=tag, simple_value=v) for tag, v in what])
            event = Event_(wall_time=wall_time, step=step, summary=summary)
            by_file.setdefault((source, restarts), []).append(event.SerializeToString())
        for (source, restarts), records in by_file.items():
            self._file(source, restarts).append(records)
            self.written += len(records)
        for file in self._files.values():
            file.flush()
        self._close_old_segments()

    def _file(self, source: str, restarts: int) -> _EventFile:
        file = self._files.get((source, restarts))
        if file is None:
            base = self._base.get(source)
            if base is None:
                base = self._base[source] = _newest_segment(
                    segment_directory(self.logdir, source, 1)
                )
            directory = segment_directory(self.logdir, source, base + restarts)
            file = self._files[(source, restarts)] = _EventFile(directory, self._number)
        return file

    def _close_old_segments(self) -> None:
        """A segment's file is closed once a newer segment of its source has one."""
        newest: dict[str, int] = {}
        for source, restarts in self._files:
            newest[source] = max(restarts, newest.get(source, 0))
        for key in [k for k in self._files if k[1] < newest[k[0]]]:
            self._files.pop(key).close()

    def _close_files(self) -> None:
        files, self._files = list(self._files.values()), {}
        for file in files:
            file.close()
