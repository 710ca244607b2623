"""The ``file`` sink: JSON Lines on disk, batched, rotated, never half a line.

The trio side only encodes: each batch becomes one ``bytes`` (the one
encoder, :func:`mux_core.records.encode_jsonl`) appended to an in-memory
buffer. The disk work -- write, rotate, fsync -- runs in a worker thread
(``trio.to_thread``), one job at a time under a lock, so the event loop never
waits on a disk and the lines keep their order.

The buffer goes to the OS when it passes ``_FLUSH_BYTES`` (in ``write``,
which gives backpressure) and every ``flush_interval`` seconds (a background
task, so a quiet stream still reaches the disk). ``aclose`` writes the rest,
fsyncs and closes.

A file only ever holds whole lines: the writer cuts at line boundaries when
it rotates, truncates back to the last whole line when a write fails (disk
full), and starts on a fresh line when it appends to a file whose last line
was cut short (a crash).

With ``compression = "zstd"`` the lines go through a zstd compressor on their
way to the OS (in the same worker thread): every write to the OS ends a zstd
block, so what is on disk always decodes, and a crash's torn frame is
repaired when the file is opened again (:mod:`mux_file._zstd`).
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal, TypeAlias

import attrs
import msgspec

from mux_core import Sink
from mux_core.options import non_negative, positive
from mux_core.records import (
    Batch,
    Event,
    RecordDecodeError,
    decode_jsonl,
    encode_data,
    encode_jsonl,
)
from mux_core.sink import SinkContext

from . import _zstd

# trio is imported by the methods that use it: loading the plugin (every mux
# command does) does not pay for it.

__all__ = ["FileOptions", "FileSink"]

#: Buffered bytes that trigger a write to the OS without waiting for the timer.
_FLUSH_BYTES = 1 << 20


def _non_empty(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise ValueError(f"{attribute.name} must not be empty")


@attrs.frozen(kw_only=True)
class FileOptions:
    """The keys of a ``[[sinks]] type = "file"`` table."""

    #: The JSON Lines file; ``~`` is expanded, relative paths are from the working
    #: directory. Missing directories are created; an existing file is appended to.
    path: str = attrs.field(validator=_non_empty)
    #: Rotate before the file would grow past this many bytes (0 = never rotate).
    rotate_bytes: int = attrs.field(default=0, validator=non_negative())
    #: Rotated files kept: ``events.jsonl.1`` (newest) ... ``events.jsonl.N``.
    keep: int = attrs.field(default=5, validator=non_negative())
    #: Seconds between writes of buffered lines to the OS (also at ~1 MiB buffered).
    flush_interval: float = attrs.field(default=1.0, validator=positive("seconds"))
    #: fsync after each timed flush, so a power loss costs at most ``flush_interval``
    #: of records; the file is always fsynced when the sink closes.
    fsync: bool = True
    #: "zstd": write the lines zstd-compressed (~8x smaller), to a path ending in
    #: ``.zst`` (``events.jsonl.zst``; needs ``mux[zstd]``); rotate_bytes then counts
    #: compressed bytes. "none": plain JSON Lines.
    compression: Literal["none", "zstd"] = attrs.field(
        default="none", validator=attrs.validators.in_(("none", "zstd"))
    )

    @classmethod
    def check(cls, options: FileOptions) -> None:
        """Refuse a path that visibly cannot be written, creating nothing."""
        if options.compression == "zstd":
            if not options.path.endswith(".zst"):
                raise ValueError(
                    f'compression = "zstd" writes zstd frames: the path must end in .zst '
                    f"(e.g. {os.path.splitext(options.path)[0]}.jsonl.zst), got {options.path!r}"
                )
            if importlib.util.find_spec("zstandard") is None:
                raise ValueError(ZSTD_HINT)
        reason = _problem(_resolve(options.path))
        if reason is not None:
            raise ValueError(_cannot_write(options.path, reason))


ZSTD_HINT = (
    "compression = \"zstd\" needs zstandard, which is not installed: pip install 'mux[zstd]'"
)


def _resolve(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _cannot_write(shown: str, reason: str) -> str:
    return f"cannot write {shown}: {reason} \u2014 choose a writable path"


def _problem(path: str) -> str | None:
    """Why ``path`` cannot be written, as far as it is visible without writing."""
    if os.path.isdir(path):
        return "Is a directory"
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else os.strerror(errno.EACCES)
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        above = os.path.dirname(parent)
        if above == parent:
            return None
        parent = above
    if not os.path.isdir(parent):
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return os.strerror(errno.EACCES)
    return None


def _open_append(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


class _RotatingFile:
    """The blocking half: appends whole lines, rotates. Only the worker thread calls it."""

    def __init__(self, path: str, *, rotate_bytes: int, keep: int) -> None:
        self.path = path
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self._fd = -1
        self._size = 0

    def open(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._fd = _open_append(self.path)
        self._size = os.fstat(self._fd).st_size
        if self._size and self._head(4) == _zstd.MAGIC:
            os.close(self._fd)
            self._fd = -1
            raise OSError(
                errno.EINVAL,
                'it holds zstd-compressed records (set compression = "zstd" for it)',
            )
        if self._size and not self._ends_with_newline():
            self._write_all(b"\n")

    def _ends_with_newline(self) -> bool:
        return self._read(1, self._size - 1) == b"\n"

    def _head(self, size: int) -> bytes:
        return self._read(size, 0)

    def _read(self, size: int, offset: int) -> bytes:
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    def write(self, data: bytes) -> None:
        """Append ``data`` (whole lines), rotating between lines when it is due."""
        limit = self.rotate_bytes
        whole = memoryview(data)
        pos, end_of_data = 0, len(data)
        while pos < end_of_data:
            if not limit or self._size + (end_of_data - pos) <= limit:
                self._write_all(whole[pos:])
                return
            room = limit - self._size
            cut = data.rfind(b"\n", pos, pos + room) if room > 0 else -1
            if cut >= 0:
                end = cut + 1
            elif self._size == 0:
                end = data.index(b"\n", pos) + 1  # one line longer than rotate_bytes
            else:
                self._rotate()
                continue
            self._write_all(whole[pos:end])
            pos = end

    def _write_all(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk)
        start = self._size
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            try:
                os.ftruncate(self._fd, start)  # never leave half a line behind
            except OSError:
                pass
            raise
        self._size = start + len(chunk)

    def _rotate(self) -> None:
        _fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        if self.keep:
            for index in range(self.keep - 1, 0, -1):
                older = f"{self.path}.{index}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{index + 1}")
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self._fd = _open_append(self.path)
        self._size = 0

    def fsync(self) -> None:
        _fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                _fsync(fd)
            finally:
                os.close(fd)

    def abandon(self) -> None:
        """Close after a failed write, keeping that write's error the one reported."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                os.close(fd)
            except OSError:
                pass


class _ZstdRotatingFile(_RotatingFile):
    """A :class:`_RotatingFile` whose lines are appended as zstd blocks (see
    :mod:`mux_file._zstd`). Rotation is checked before each append, against the
    compressed size: a file passes ``rotate_bytes`` by one append at most."""

    def open(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._writer = _zstd.ZstdWriter()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            cut_line = _zstd.repair(self._fd, self.path)
        except _zstd.NotZstd as exc:
            os.close(self._fd)
            self._fd = -1
            raise OSError(errno.EINVAL, str(exc)) from None
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            raise
        self._size = os.lseek(self._fd, 0, os.SEEK_END)
        if cut_line:  # a crash cut a line: the next ones start on a fresh line
            self._write_all(self._writer.encode(b"\n"))

    def write(self, data: bytes) -> None:
        if self.rotate_bytes and self._size >= self.rotate_bytes:
            self._rotate()
        encoded = self._writer.encode(data)
        try:
            self._write_all(encoded)
        except OSError:
            self._writer.failed()
            raise

    def _rotate(self) -> None:
        self._write_all(self._writer.finish())
        super()._rotate()

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self._write_all(self._writer.finish())
            except BaseException:
                self.abandon()
                raise
        super().close()


class _HeldLine(msgspec.Struct, forbid_unknown_fields=False):
    type: str = ""
    source: str = ""
    seq: int | None = None
    id: str | None = None
    event: str = ""
    data: msgspec.Raw = msgspec.Raw(b"null")


_read_held_line = msgspec.json.Decoder(_HeldLine).decode

#: The tail read when looking for what resumed sources may send again
#: (bounded: what was written after the last checkpoint is a second or so).
_TAIL_LIMIT = 256 * 1024 * 1024

#: Per source: the events (id, event type) -> payloads (as the file holds
#: them) written after its last checkpoint, which a resumed server may send again.
Held: TypeAlias = dict[str, dict[tuple[str, str], list[bytes]]]


def _held_after(path: str, covered: Mapping[str, int]) -> Held:
    """The events of each source in ``covered`` that ``path`` holds past its
    covered seq and that carry an id: the only ones a server can send again.

    Read backwards from the end, until every source's covered seq is passed
    (or :data:`_TAIL_LIMIT` bytes); a zstd file one frame at a time.
    """
    held: Held = {}
    passed: set[str] = set()
    for line in _lines_backwards(path):
        if len(passed) >= len(covered):
            break
        if b'"event"' not in line:
            continue
        record = _held_line(line)
        if record is None or record.source not in covered or not record.seq:
            continue
        if record.seq <= covered[record.source]:
            passed.add(record.source)
        elif record.id is not None and record.source not in passed:
            events = held.setdefault(record.source, {})
            events.setdefault((record.id, record.event), []).append(bytes(record.data))
    return held


def _held_line(line: bytes) -> _HeldLine | None:
    """The event of one line of the file, its data as written; None for
    anything else. A line whose payload holds NaN / Infinity literals (which
    the fast decoder refuses) is read by the core's own reader."""
    try:
        record = _read_held_line(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        try:
            event = decode_jsonl(line)
        except RecordDecodeError:
            return None
        if type(event) is not Event:
            return None
        data = msgspec.Raw(encode_data(event))
        return _HeldLine("event", event.source, event.seq, event.id, event.event, data)
    return record if record.type == "event" else None


def _same_payload(record: Event, payloads: list[bytes]) -> bytes | None:
    """The payload of ``payloads`` that is ``record``'s, or None.

    By the bytes first (a resumed server sends what it sent: the file holds
    them as received, NaN literals included), then by value (a payload the
    file holds re-encoded, ``1.10`` as ``1.1``)."""
    data = encode_data(record)
    if data in payloads:
        return data
    value = record.data
    for payload in payloads:
        try:
            if json.loads(payload) == value:
                return payload
        except ValueError:
            continue
    return None


def _lines_backwards(path: str) -> Iterator[bytes]:
    """The lines of ``path``, last first, up to about :data:`_TAIL_LIMIT` bytes of them."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return
    with open(path, "rb") as file:
        if file.read(4) == _zstd.MAGIC:
            yield from _zstd_lines_backwards(file.fileno(), size)
            return
        chunk = 1 << 20
        end = size
        carry = b""
        while end > 0 and size - end < _TAIL_LIMIT:
            start = max(0, end - chunk)
            file.seek(start)
            data = file.read(end - start) + carry
            lines = data.split(b"\n")
            carry = lines[0] if start > 0 else b""
            yield from reversed(lines[1:] if start > 0 else lines)
            end = start


def _zstd_lines_backwards(fd: int, size: int) -> Iterator[bytes]:
    """A zstd file's lines, last first: its frames decompressed newest first
    (every frame starts at a line), up to about :data:`_TAIL_LIMIT` bytes of lines."""
    import zstandard

    try:
        found = _zstd.frames(fd, size)
    except _zstd.NotZstd:
        return
    decompressor = zstandard.ZstdDecompressor()
    ends = [*found.starts[1:], found.end]
    read = 0
    for start, end in reversed(list(zip(found.starts, ends, strict=True))):
        if read >= _TAIL_LIMIT:
            return
        try:
            content = decompressor.decompressobj().decompress(os.pread(fd, end - start, start))
        except zstandard.ZstdError:
            return
        read += len(content)
        yield from reversed(content.split(b"\n"))


def _fsync(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        # Pipes, terminals and character devices (/dev/stdout) cannot sync: nothing to lose.
        if exc.errno not in (errno.EINVAL, errno.EROFS, errno.ENOTSUP):
            raise


class FileSink(Sink):
    """Append every record to a JSON Lines file."""

    Options = FileOptions
    default_overflow: ClassVar[str] = "block"
    default_on_error: ClassVar[str] = "stop"

    def __init__(self, options: FileOptions, context: SinkContext) -> None:
        import trio

        self.options = options
        self.context = context
        self.path = _resolve(options.path)
        kind = _ZstdRotatingFile if options.compression == "zstd" else _RotatingFile
        self._file = kind(self.path, rotate_bytes=options.rotate_bytes, keep=options.keep)
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        #: Per resumed source: what this file holds that its server may send
        #: again after a crash (skipped once each when it comes).
        self._skip: Held = {}
        #: Written to the OS since the last fsync.
        self._dirty = False
        self._io_lock = trio.Lock()
        self._opened = False
        self._closed = False

    async def open(self) -> None:
        import trio

        await self._run_io(self._file.open)
        self._opened = True
        if self.context.resumed:
            self._skip = await trio.to_thread.run_sync(_held_after, self.path, self.context.resumed)
        self.context.start_background(self._flush_periodically)

    async def write(self, batch: Batch) -> None:
        import trio

        if self._closed:
            raise trio.ClosedResourceError(f"file sink {self.context.name} is closed")
        if self._skip:
            batch = self._without_held(batch)
        data = encode_jsonl(batch)
        if not data:
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= _FLUSH_BYTES:
            await self.flush()

    async def sync(self) -> None:
        """Make every record written so far as durable as configured: handed
        to the OS, and fsynced when ``fsync = true``. Durable resume
        (``--state``) calls it before it saves a source's resume state."""
        await self.flush(fsync=self.options.fsync)

    def _without_held(self, batch: Batch) -> Batch:
        """Drop the events this file already holds from before a crash.

        A source resumed from a saved state may get again what arrived after
        that state was saved. A new run numbers events after every seq it
        ever handed out, so a repeat is known by what it is: the same id,
        event type and payload as an event written after the checkpoint.
        Each held event is skipped once; events without an id are never
        skipped (no server can send them again by position).
        """
        skip = self._skip
        kept = []
        for record in batch:
            if type(record) is Event and record.id is not None and record.source in skip:
                events = skip[record.source]
                payloads = events.get((record.id, record.event))
                held = None if payloads is None else _same_payload(record, payloads)
                if payloads is not None and held is not None:
                    payloads.remove(held)
                    if not payloads:
                        del events[(record.id, record.event)]
                        if not events:
                            del skip[record.source]
                    continue
            kept.append(record)
        return kept

    async def flush(self, *, fsync: bool = False) -> None:
        """Hand everything buffered to the OS (and fsync it, if asked)."""
        async with self._io_lock:
            if self._closed or not self._opened:
                return
            data = self._take_pending()
            if data:
                await self._run_io(self._file.write, data, locked=True)
                self._dirty = True
            if fsync and self._dirty:
                await self._run_io(self._file.fsync, locked=True)
                self._dirty = False

    async def aclose(self) -> None:
        """Write everything buffered, fsync, close. Not interrupted by cancellation."""
        import trio

        with trio.CancelScope(shield=True):
            async with self._io_lock:
                if self._closed:
                    return
                self._closed = True
                if not self._opened:
                    return
                data = self._take_pending()
                try:
                    if data:
                        await self._run_io(self._file.write, data, locked=True)
                except BaseException:
                    await trio.to_thread.run_sync(self._file.abandon)  # shielded above
                    raise
                await self._run_io(self._file.close, locked=True)

    async def _flush_periodically(self) -> None:
        import trio

        interval = self.options.flush_interval
        while not self._closed:
            await trio.sleep(interval)
            await self.flush(fsync=self.options.fsync)

    def _take_pending(self) -> bytes:
        pending = self._pending
        if not pending:
            return b""
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        self._pending = []
        self._pending_bytes = 0
        return data

    async def _run_io(self, fn: Any, *args: Any, locked: bool = False) -> None:
        """Run one disk job in the worker thread; OSError becomes a clear message.

        The job is shielded: once records are taken from the buffer they must
        reach the file, and ``to_thread`` may otherwise be cancelled before
        the thread starts.
        """
        import trio

        if not locked:
            async with self._io_lock:
                await self._run_io(fn, *args, locked=True)
            return
        try:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(fn, *args)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.filename not in (None, self.path):
                reason = f"{exc.filename}: {reason}"
            error = OSError(_cannot_write(self.options.path, reason))
            error.errno = exc.errno
            raise error from exc
