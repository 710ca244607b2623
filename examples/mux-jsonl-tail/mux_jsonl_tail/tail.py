"""The ``jsonl-tail`` transport: follow a growing JSON Lines file, like ``tail -F``.

A training script that writes its own metrics log (one JSON object per line)
becomes a mux source without a server. The file is polled: every
``poll_interval`` seconds a read from the last position returns what was
appended. Polling is portable (no inotify / kqueue) and cheap at the default
0.2 s.

Every disk call runs in a worker thread (``trio.to_thread.run_sync``), one at
a time: trio has no non-blocking I/O for regular files, and logs often live on
network file systems where a read can stall. Each call is small -- at most
``_CHUNK`` bytes are read and split into lines per call -- and the thread also
decodes the JSON, so the event loop only hands the batch over.

Resume: the session's ``resume.cursor`` is a :class:`TailCursor` -- device,
inode, the byte offset after the last line emitted and that line's number --
set only after a batch was handed over, so the next session continues at the
next line: nothing is emitted twice, nothing is skipped.

The file changing under us:

* missing when a session starts -> ``ServerUnavailable`` (the supervisor
  retries until the script creates it);
* rotated (the path now names another inode) -> the old file is read to its
  end (a last line without a newline counts as a line), then the new file is
  followed from its start;
* truncated (size < our offset) -> read again from offset 0. A file truncated
  and refilled past our offset between two polls cannot be told from growth
  (``tail`` has the same blind spot);
* removed without a replacement -> the open file keeps being followed until a
  new file appears at the path.

A partial last line waits for its newline. Lines that are not JSON are
emitted with their text as data; blank lines are skipped but counted. A file
replaced while no session was running cannot be finished (its new name is
unknown): the new file is read from its start, with a notice.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any, ClassVar

import attrs
import orjson

from mux_core import Disconnected, Failed, RawEvent, ServerUnavailable, Session
from mux_core.options import positive

# trio is imported by the methods that use it: every mux command imports every
# installed plugin, so what a plugin imports at the top, each command waits for.

__all__ = ["TailCursor", "TailOptions", "TailTransport"]

#: Bytes read per worker-thread call (one batch at most this many bytes of lines).
_CHUNK = 256 * 1024


def _non_empty(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value.strip():
        raise ValueError(f"{attribute.name} must not be empty")


@attrs.frozen(kw_only=True)
class TailOptions:
    """The keys of a ``transport = "jsonl-tail"`` source."""

    #: The JSON Lines file to follow; ``~`` is expanded, relative paths are from
    #: the working directory. It may not exist yet.
    path: str = attrs.field(validator=_non_empty)
    #: Seconds between checks for new data when the file has nothing new.
    poll_interval: float = attrs.field(default=0.2, validator=positive("seconds"))
    #: Read the lines already in the file first; false: start after the last
    #: complete line present when the source first opens the file.
    from_start: bool = True
    #: The key of each object holding the event's id (stringified); None: the
    #: id is the line number in the file (1 = first line).
    id_field: str | None = None
    #: The key of each object holding the event's type; None (or missing): "message".
    event_field: str | None = None


@attrs.frozen
class TailCursor:
    """Where a source stopped: the line after ``line`` starts at ``offset`` of that inode."""

    dev: int
    inode: int
    #: Byte offset just after the last line emitted.
    offset: int
    #: Number of the last line emitted (blank lines count).
    line: int


@attrs.frozen
class _Poll:
    """What one worker-thread call found."""

    events: list[RawEvent]
    notices: list[str]
    cursor: TailCursor
    #: True when nothing was read: time to wait ``poll_interval``.
    idle: bool


class _Reader:
    """The blocking half. Only the worker thread calls it, one call at a time.

    ``_offset`` is the start of ``_partial`` (bytes after the last newline);
    the next read starts at ``_offset + len(_partial)``.
    """

    def __init__(self, path: str, options: TailOptions) -> None:
        self.path = path
        self.options = options
        self._fd = -1
        self._dev = self._inode = 0
        self._offset = 0
        self._line = 0
        self._partial = b""

    # -- opening -----------------------------------------------------------

    def open(self, cursor: TailCursor | None) -> str:
        """Open the file and position it; return a detail for ``connected``."""
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(self._fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), self.path)
        self._dev, self._inode = st.st_dev, st.st_ino
        if cursor is not None and (cursor.dev, cursor.inode) == (st.st_dev, st.st_ino):
            if st.st_size < cursor.offset:
                return "file was truncated; reading from its start"
            self._offset, self._line = cursor.offset, cursor.line
            return f"resuming after line {cursor.line}"
        if cursor is not None:
            return "file was replaced; reading the new file from its start"
        if not self.options.from_start:
            self._offset, self._line = self._end_of_last_line()
            return f"following after line {self._line}"
        return ""

    def _end_of_last_line(self) -> tuple[int, int]:
        """The offset after the last newline and the number of lines before it."""
        offset = lines = position = 0
        while chunk := os.pread(self._fd, 1 << 20, position):
            count = chunk.count(b"\n")
            if count:
                lines += count
                offset = position + chunk.rindex(b"\n") + 1
            position += len(chunk)
        return offset, lines

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    # -- following ---------------------------------------------------------

    def poll(self) -> _Poll:
        events: list[RawEvent] = []
        notices: list[str] = []
        data = os.pread(self._fd, _CHUNK, self._offset + len(self._partial))
        if data:
            self._take(data, events)
        else:
            self._at_end(events, notices)
        return _Poll(events, notices, self.cursor(), idle=not data and not notices)

    def cursor(self) -> TailCursor:
        return TailCursor(self._dev, self._inode, self._offset, self._line)

    def _at_end(self, events: list[RawEvent], notices: list[str]) -> None:
        """Nothing new: was the file truncated, or rotated away from the path?"""
        st = os.fstat(self._fd)
        if st.st_size < self._offset + len(self._partial):
            self._offset, self._line, self._partial = 0, 0, b""
            notices.append("file was truncated; reading from its start")
            return
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            return  # removed: keep following the open file until a new one appears
        if (current.st_dev, current.st_ino) == (self._dev, self._inode):
            return
        # Rotated. Read what was appended between our last read and the
        # rename: the caller polls again, and only an empty read switches.
        data = os.pread(self._fd, _CHUNK, self._offset + len(self._partial))
        if data:
            self._take(data, events)
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return  # gone again between stat and open; next poll
        if self._partial:
            self._take(b"\n", events)  # the old file is finished: its last line is whole
        os.close(self._fd)
        st = os.fstat(fd)
        self._fd, self._dev, self._inode = fd, st.st_dev, st.st_ino
        self._offset, self._line, self._partial = 0, 0, b""
        notices.append("file was rotated; following the new file")

    def _take(self, data: bytes, events: list[RawEvent]) -> None:
        """Split complete lines off ``_partial + data`` and decode them."""
        buffer = self._partial + data if self._partial else data
        end = buffer.rfind(b"\n")
        if end < 0:
            self._partial = buffer
            return
        line_no = self._line
        id_field, event_field = self.options.id_field, self.options.event_field
        for raw in buffer[:end].split(b"\n"):
            line_no += 1
            if raw.strip():
                events.append(_decode(raw, line_no, id_field, event_field))
        self._line = line_no
        self._offset += end + 1
        self._partial = buffer[end + 1 :]


def _decode(raw: bytes, line_no: int, id_field: str | None, event_field: str | None) -> RawEvent:
    """One line -> (event type, id, data); data is the text when it is not JSON."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    data: Any
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = raw.decode("utf-8", errors="replace")
    event = "message"
    id_: str | None = str(line_no) if id_field is None else None
    if isinstance(data, dict):
        if id_field is not None and data.get(id_field) is not None:
            id_ = str(data[id_field])
        if event_field is not None and data.get(event_field) not in (None, ""):
            event = str(data[event_field])
    return event, id_, data


class TailTransport:
    """Follow one JSON Lines file; one session = one open file descriptor."""

    Options: ClassVar[type[TailOptions]] = TailOptions

    def __init__(self, options: TailOptions) -> None:
        self.options = options
        self.path = os.path.abspath(os.path.expanduser(options.path))

    async def run_session(self, session: Session) -> None:
        import trio

        reader = _Reader(self.path, self.options)
        cursor = session.resume.cursor if isinstance(session.resume.cursor, TailCursor) else None
        try:
            detail = await trio.to_thread.run_sync(reader.open, cursor)
        except FileNotFoundError:
            raise ServerUnavailable(f"waiting for {self.options.path} to appear") from None
        except OSError as exc:
            reader.close()
            raise _open_error(self.options.path, exc) from exc
        try:
            session.resume.cursor = reader.cursor()
            await session.connected(detail)
            await self._follow(session, reader)
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(reader.close)

    async def _follow(self, session: Session, reader: _Reader) -> None:
        import trio

        while True:
            try:
                poll = await trio.to_thread.run_sync(reader.poll)
            except OSError as exc:
                raise Disconnected(f"cannot read {self.options.path}: {_reason(exc)}") from exc
            for notice in poll.notices:
                await session.notice(notice)
            await session.emit(poll.events)
            session.resume.cursor = poll.cursor  # only once the lines were handed over
            if poll.idle:
                await trio.sleep(self.options.poll_interval)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _open_error(path: str, exc: OSError) -> ServerUnavailable | Failed:
    """A directory or a permission problem will not fix itself; anything else may."""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EISDIR):
        return Failed(f"cannot open {path}: {_reason(exc)}")
    return ServerUnavailable(f"cannot open {path}: {_reason(exc)}")
