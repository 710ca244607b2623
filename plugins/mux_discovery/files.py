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
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import ClassVar

import attrs

from mux_core import ConfigError, Discoverer, DiscoveryContext, SourceDocument, read_source_document
from mux_core.options import positive

# trio is imported by the methods that use it: loading the plugin (every mux
# command does) does not pay for it.

__all__ = ["FilesDiscovery", "FilesOptions"]


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


@attrs.define
class _Seen:
    stamp: tuple[int, int]
    document: SourceDocument | None


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
            stat = os.stat(path)
        except OSError:
            return self._seen.get(path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        seen = self._seen.get(path)
        if seen is not None and seen.stamp == stamp:
            return seen
        try:
            with open(path, "rb") as file:
                data = file.read()
        except (IsADirectoryError, PermissionError, FileNotFoundError) as exc:
            self._problem(path, f"{path}: cannot read: {exc.strerror or exc}")
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
        self._forget(path)
        self._problems[path] = problem
        self.context.report(problem)

    def _forget(self, path: str) -> None:
        problem = self._problems.pop(path, None)
        if problem is not None:
            self.context.forget(problem)
