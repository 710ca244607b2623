"""The ``files`` discoverer: endpoint files that come and go.

::

    [[discovery]]
    type = "files"
    paths = ["runs/*/mux-endpoints.toml"]   # globs; ** matches any depth
    interval = 2.0                          # seconds between two looks

Every ``interval`` it lists the files the globs match and reads those whose
size or modification time moved (the others cost a ``stat``). Each file is
a :func:`~mux_core.read_source_document`: ``[[sources]]`` tables or one
source's keys, in TOML or JSON. A file that does not parse is reported once
with its path and line; its previous good content is kept (a trainer caught
half-way through writing it must not lose its source), and a file that
never parsed adds nothing. The other files are unaffected.

Whoever writes endpoint files is not trusted (docs/security.md): only a
regular file is read -- a symlink is followed and its target must be one;
a directory, a FIFO, a device (``/dev/zero``) or a socket is refused
without being read -- and never more than ``max_file_bytes`` + 1 bytes of
it: a larger file is refused.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Sequence
from typing import ClassVar

import attrs

from mux_core import ConfigError, Discoverer, DiscoveryContext, SourceDocument, read_source_document
from mux_core.options import positive

# trio is imported by the methods that use it: loading the plugin (every mux
# command does) does not pay for it.

__all__ = ["MAX_FILE_BYTES", "FilesDiscovery", "FilesOptions"]

#: ``max_file_bytes`` by default: an endpoint file lists a few sources.
MAX_FILE_BYTES = 1024 * 1024


def _globs(_instance: object, attribute: attrs.Attribute[list[str]], value: Sequence[str]) -> None:
    if not value:
        raise ValueError(f"{attribute.name}: give at least one glob, e.g. ['runs/*/mux.toml']")


@attrs.frozen(kw_only=True)
class FilesOptions:
    #: Globs of endpoint files (TOML or JSON); ``**`` matches any number of directories.
    #: Relative paths are relative to the directory mux runs in.
    paths: list[str] = attrs.field(validator=_globs)
    #: Seconds between two looks at the files.
    interval: float = attrs.field(default=2.0, validator=positive("seconds"))
    #: The largest endpoint file read, in bytes; a larger one is refused (never read whole).
    max_file_bytes: int = attrs.field(default=MAX_FILE_BYTES, validator=positive())


@attrs.define
class _Seen:
    stamp: tuple[int, ...]
    document: SourceDocument | None


class _Refused(Exception):
    """A file that is not read (why, for the log)."""


class FilesDiscovery(Discoverer):
    """Reports the source tables of every file the globs match."""

    Options: ClassVar[type[FilesOptions]] = FilesOptions

    def __init__(self, options: FilesOptions, context: DiscoveryContext) -> None:
        self.options = options
        self.context = context
        self._seen: dict[str, _Seen] = {}
        self._problems: dict[str, str] = {}

    async def run(self) -> None:
        import trio

        last: list[SourceDocument] | None = None
        while True:
            documents = await trio.to_thread.run_sync(self.scan)
            if documents != last:
                await self.context.update(documents)
                last = documents
            await trio.sleep(self.options.interval)

    def scan(self) -> list[SourceDocument]:
        """Look at the files once (blocking: the discoverer calls it in a thread)."""
        paths = sorted(
            {path for pattern in self.options.paths for path in glob.glob(pattern, recursive=True)}
        )
        for gone in set(self._seen) - set(paths):
            del self._seen[gone]
            self._forget(gone)
        documents = []
        for path in paths:
            seen = self._look(path)
            if seen is not None and seen.document is not None:
                documents.append(seen.document)
        return documents

    def _look(self, path: str) -> _Seen | None:
        try:
            info = os.stat(path)  # the target of a symlink
        except OSError:
            return self._seen.get(path)
        stamp = (info.st_dev, info.st_ino, info.st_mode, info.st_mtime_ns, info.st_size)
        seen = self._seen.get(path)
        if seen is not None and seen.stamp == stamp:
            return seen
        try:
            data = _read_bounded(path, self.options.max_file_bytes)
        except FileNotFoundError:
            return seen  # gone since the glob: the next look drops it
        except _Refused as exc:
            kept = " (its last good content is kept)" if seen and seen.document else ""
            self._problem(path, f"{path}: {exc}{kept}")
            # Not looked at again until it changes.
            seen = self._seen[path] = _Seen(stamp, seen.document if seen else None)
            return seen
        try:
            document = read_source_document(data, path)
        except ConfigError as exc:
            kept = " (its last good content is kept)" if seen and seen.document else ""
            self._problem(path, f"{exc}{kept}")
            # Not read again until it changes; what it had before stays.
            seen = self._seen[path] = _Seen(stamp, seen.document if seen else None)
            return seen
        self._forget(path)
        seen = self._seen[path] = _Seen(stamp, document)
        return seen

    def _problem(self, path: str, problem: str) -> None:
        if self._problems.get(path) == problem:
            return
        self._forget(path)
        self._problems[path] = problem
        self.context.report(problem)

    def _forget(self, path: str) -> None:
        problem = self._problems.pop(path, None)
        if problem is not None:
            self.context.forget(problem)


def _read_bounded(path: str, limit: int) -> bytes:
    """The bytes of the regular file at ``path`` (a symlink followed), at most ``limit``.

    Raises :class:`_Refused` saying why for anything else -- not a regular
    file (checked before opening, and again on the open file, so a file
    swapped meanwhile is caught), unreadable, larger than ``limit`` -- and
    ``FileNotFoundError`` when it went away. Opening never blocks (a FIFO
    swapped in) and never reads more than ``limit`` + 1 bytes.
    """
    try:
        kind = _kind(os.stat(path).st_mode)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _Refused(f"cannot read: {exc.strerror or exc}") from None
    if kind is not None:
        raise _Refused(_not_regular(path, kind))
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _Refused(f"cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        kind = _kind(info.st_mode)
        if kind is not None:
            raise _Refused(_not_regular(path, kind))
        if info.st_size > limit:
            raise _Refused(_too_large(limit))
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # it grew since fstat
            raise _Refused(_too_large(limit))
        return b"".join(chunks)
    except OSError as exc:
        raise _Refused(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _kind(mode: int) -> str | None:
    """What a file that is not regular is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a file of an unknown kind"


def _not_regular(path: str, kind: str) -> str:
    what = kind
    if os.path.islink(path):
        what = f"a symlink to {os.path.realpath(path)!r}, which is {kind}"
    return f"refused: {what}, not a regular file; an endpoint file must be a plain file"


def _too_large(limit: int) -> str:
    return (
        f"refused: larger than {limit} bytes (max_file_bytes); an endpoint file lists "
        "a few sources -- raise max_file_bytes if this one really is that large"
    )
