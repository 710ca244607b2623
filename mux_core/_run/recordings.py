"""Recorded runs read back: the files of a recording, their records, several side by side.

A *recording* is what one ``file`` sink wrote: ``FILE`` and its rotated
predecessors (``FILE.N`` ... ``FILE.1``, read oldest first). ``mux replay``
and a sink's ``history`` key read recordings through this module:

- :func:`find_recordings` turns paths and globs into recordings, each with a
  *label* (the file's stem, made unique) and its files;
- :class:`RecordingReader` reads one recording's records in file order, a
  chunk at a time (in a worker thread: disk and decoding never hold up the
  event loop), reporting each bad line with its file and line number; with
  ``follow`` it keeps reading what is appended, across a rotation;
- :func:`scan_sources` lists the sources a recording holds;
- :func:`relabelled` gives a record the name its source has when several
  recordings are fed to one sink: ``"<source>@<label>"``. One recording keeps
  its names. The files themselves are never changed.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import attrs
import msgspec
import trio

from .._config import SinkConfig
from ..errors import ConfigError
from ..records import Event, Record, RecordDecodeError, decode_jsonl, open_recording

__all__ = [
    "Recording",
    "RecordingReader",
    "feed_history",
    "find_recordings",
    "history_of",
    "record_time",
    "relabelled",
    "replay_files",
    "scan_sources",
]

_log = logging.getLogger("mux.replay")

#: Records read at a time (in a worker thread) and handed over as one batch.
CHUNK = 1024
#: Bad lines reported one by one per reader; the rest are counted.
_REPORT_BAD = 20
_ROTATED = re.compile(r"^(.*)\.(\d+)$")


@attrs.frozen
class Recording:
    """One recording: its label and its files, oldest first (the live one last)."""

    label: str
    files: tuple[Path, ...]

    @property
    def path(self) -> Path:
        """The recording's own file (the one a ``file`` sink appends to)."""
        return self.files[-1]


def replay_files(path: Path) -> list[Path]:
    """``path`` and its rotated predecessors, oldest first: ``path.N`` ... ``path.1``, ``path``.

    Raises ConfigError when ``path`` does not exist (neither does a run).
    """
    if not path.is_file():
        raise ConfigError(f"{path}: no such file to replay")
    return [*_rotated(path), path]


def _rotated(path: Path) -> list[Path]:
    rotated = []
    index = 1
    while (candidate := path.with_name(f"{path.name}.{index}")).is_file():
        rotated.append(candidate)
        index += 1
    return list(reversed(rotated))


def find_recordings(
    patterns: Sequence[str | os.PathLike[str]], *, missing_ok: bool
) -> list[Recording]:
    """The recordings named by ``patterns`` (paths or globs), in the order given.

    A glob's matches come sorted; a rotated file (``FILE.3``) whose ``FILE``
    exists belongs to that recording rather than being one of its own, and a
    file named twice is read once. A path that matches nothing is a
    ConfigError, or (``missing_ok``: a ``history`` whose file a run has yet
    to write) left out with a warning.
    """
    paths: list[Path] = []
    for pattern in patterns:
        text = os.fspath(pattern)
        if glob.has_magic(text):
            found = [Path(p) for p in sorted(glob.glob(text)) if Path(p).is_file()]
        else:
            found = [Path(text)] if Path(text).is_file() else []
        if not found:
            message = f"{text}: no such file to replay"
            if not missing_ok:
                raise ConfigError(message)
            _log.warning("%s; going on without it", message)
        paths.extend(found)
    bases: list[Path] = []
    seen: set[str] = set()
    for path in paths:
        rotated = _ROTATED.match(path.name)
        if rotated is not None and path.with_name(rotated.group(1)).is_file():
            path = path.with_name(rotated.group(1))
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            bases.append(path)
    labels = _labels(bases)
    return [
        Recording(label, (*_rotated(path), path)) for label, path in zip(labels, bases, strict=True)
    ]


def history_of(sink: SinkConfig) -> list[Recording]:
    """The recordings of a sink's ``history`` key as they are now (globs expanded).

    A pattern that matches nothing yet is left out with a warning, and so is
    the file the sink itself writes (its ``path`` option): a sink is never
    fed its own output.
    """
    if not sink.history:
        return []
    own = getattr(sink.options, "path", None)
    own_path = os.path.realpath(own) if isinstance(own, str | os.PathLike) else None
    found = []
    for recording in find_recordings(sink.history, missing_ok=True):
        if own_path is not None and os.path.realpath(recording.path) == own_path:
            _log.warning(
                "sink %r: history %s is the file it writes; left out", sink.name, recording.path
            )
            continue
        found.append(recording)
    return found


def _stem(path: Path) -> str:
    """``a`` for ``a.jsonl``, ``a.jsonl.zst`` (a compressed recording) and ``a.log``."""
    name = path.name.removesuffix(".zst")
    return name.removesuffix(".jsonl") if name.endswith(".jsonl") else Path(name).stem


def _labels(paths: Sequence[Path]) -> list[str]:
    """Each file's stem (``a`` for ``runs/a.jsonl`` or ``runs/a.jsonl.zst``); stems that
    collide become ``parent/stem``, and those that still collide get ``-2``, ``-3``."""
    stems = [_stem(path) for path in paths]
    labels = [
        f"{path.parent.name}/{stem}" if stems.count(stem) > 1 and path.parent.name else stem
        for path, stem in zip(paths, stems, strict=True)
    ]
    unique: list[str] = []
    for label in labels:
        candidate, number = label, 1
        while candidate in unique:
            number += 1
            candidate = f"{label}-{number}"
        unique.append(candidate)
    return unique


def record_time(record: Record) -> float:
    """When a record was made, by the clock of the run that recorded it (NaN: unknown)."""
    if type(record) is Event:
        return record.received_at
    at = getattr(record, "at", None)
    return float(at) if isinstance(at, int | float) else math.nan


def relabelled(record: Record, label: str) -> Record:
    """``record`` as a sink fed several recordings sees it: its source ``"<source>@<label>"``."""
    return msgspec.structs.replace(record, source=f"{record.source}@{label}")


class _Who(msgspec.Struct):
    source: str
    transport: str


_WHO = msgspec.json.Decoder(_Who)


def scan_sources(recording: Recording) -> list[tuple[str, str]]:
    """The ``(source, transport)`` pairs of a recording, in order of first appearance.

    Blocking (it reads every line): call it in a worker thread.
    """
    found: dict[str, str] = {}
    for path in recording.files:
        try:
            with open_recording(path) as file:
                for line in file:
                    try:
                        who = _WHO.decode(line)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        continue
                    found.setdefault(who.source, who.transport)
        except OSError:
            continue
    return list(found.items())


class RecordingReader:
    """One recording's records in file order, a chunk at a time.

    :meth:`read` blocks (disk, decoding): call it in a worker thread. It
    returns up to ``limit`` records, and an empty list at the end -- for
    good, or (``follow``) until more is appended. Following is ``tail -f``
    by name: a line is taken once it is whole; when the file is replaced
    (a ``file`` sink rotated it) what was appended to the old one is read
    first, then the new one from its start; a file cut short is read again
    from its start. ``on_bad_line(path, number, error)`` hears of every line
    that is not a record.
    """

    def __init__(
        self,
        recording: Recording,
        *,
        follow: bool = False,
        on_bad_line: Callable[[Path, int, Exception], None] | None = None,
    ) -> None:
        self.recording = recording
        self.follow = follow
        self.bad_lines = 0
        self._on_bad_line = on_bad_line or self._report
        self._pending = list(recording.files)
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._number = 0
        self._partial = b""
        #: Whole lines taken from a rotated file, read before the next file.
        self._queue: list[bytes] = []
        #: True once every file was read to its end (never, when following).
        self.done = False
        #: Bytes of the files read so far (compressed bytes of a ``.zst``), as of
        #: the last :meth:`read`: with :attr:`size`, how far the reading is.
        self.position = 0
        self._before = 0  # bytes of the files read to their end

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self, limit: int = 1024) -> list[Record]:
        records: list[Record] = []
        while len(records) < limit and not self.done:
            line = self._readline()
            if line is None:  # the end of this file, for now
                if self._file is not None and self._pending:
                    self._before += self._file.tell()
                    self.close()
                    continue
                if self._file is None and self._open_next():
                    continue
                if not self.follow:
                    self.done = True
                    if self._file is not None:
                        self._before += self._file.tell()
                    self.close()
                    break
                if self._file is None or not self._replaced():
                    break
                continue
            record = self._decode(line)
            if record is not None:
                records.append(record)
        self.position = self._before + (self._file.tell() if self._file is not None else 0)
        return records

    @property
    def size(self) -> int:
        """Bytes of the recording's files as they are now (what :attr:`position` runs to)."""
        total = 0
        for path in self.recording.files:
            try:
                total += path.stat().st_size
            except OSError:
                continue
        return total

    def _open_next(self) -> bool:
        while self._pending:
            path = self._pending.pop(0)
            try:
                self._file = open_recording(path)
            except FileNotFoundError:
                if not self._pending and self.follow:
                    self._pending.append(path)  # the live file, not (re)created yet
                    return False
                continue
            self._path, self._partial = path, b""
            self._number = 0
            return True
        return False

    def _readline(self) -> bytes | None:
        if self._queue:
            self._number += 1
            return self._queue.pop(0)
        if self._file is None:
            return None
        line = self._file.readline()
        following = self.follow and not self._pending
        if not line:
            if self._partial and not following:
                line, self._partial = self._partial, b""  # a last line without its newline
                self._number += 1
                return line
            return None
        if not line.endswith(b"\n") and following:
            self._partial += line  # the writer is half-way through it
            return None
        line, self._partial = self._partial + line, b""
        self._number += 1
        return line

    def _replaced(self) -> bool:
        """Following, at the end of the file: whether it was rotated or cut
        short (then the reader moves on and True), else False (wait for more)."""
        assert self._file is not None and self._path is not None
        try:
            now = os.stat(self._path)
        except FileNotFoundError:
            return False  # between a rotation's rename and the new file
        mine = os.fstat(self._file.fileno())
        if (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev):
            # What the writer appended before it rotated: whole lines, read first.
            rest, self._partial = self._partial + self._file.read(), b""
            self._queue.extend(rest.splitlines(keepends=True))
            self.close()
            self._pending = [self._path]
            return True
        if now.st_size < self._file.tell():
            _log.info("%s was cut short; reading it again from its start", self._path)
            self._file.seek(0)
            self._partial = b""
            self._number = 0
            return True
        return False

    def _decode(self, line: bytes) -> Record | None:
        if not line.strip():
            return None
        try:
            return decode_jsonl(line)
        except RecordDecodeError as exc:
            self.bad_lines += 1
            assert self._path is not None
            self._on_bad_line(self._path, self._number, exc)
            return None

    def _report(self, path: Path, number: int, exc: Exception) -> None:
        if self.bad_lines <= _REPORT_BAD:
            _log.warning("%s:%d: skipped: %s", path, number, exc)
        elif self.bad_lines == _REPORT_BAD + 1:
            _log.warning("more bad lines: skipping them without a word each (counted at the end)")


async def feed_history(
    recordings: Sequence[Recording],
    write: Callable[[list[Record]], Awaitable[object]],
    *,
    stopped: Callable[[], bool] = lambda: False,
) -> int:
    """A sink's ``history``: every record of ``recordings`` through ``write``, as fast
    as it takes them, one recording after the other; returns how many.

    Names follow :func:`relabelled` when there are several. Reading stops
    early when ``stopped()`` (the run is stopping: the live records matter).
    """
    relabel = len(recordings) > 1
    total = 0
    for recording in recordings:
        reader = RecordingReader(recording)
        try:
            while not reader.done and not stopped():
                batch = await trio.to_thread.run_sync(reader.read, CHUNK)
                if relabel:
                    batch = [relabelled(record, recording.label) for record in batch]
                if batch:
                    await write(batch)
                    total += len(batch)
        finally:
            reader.close()
    return total
