"""What a reload changes, and when the config file changed.

A reload never tears the run down: :func:`plan_sources` and
:func:`plan_sinks` compare the running set with the wanted one and name
what to start, stop and restart; everything else keeps running untouched
(same connection, same resume state, same ``seq``). Two tables are "the
same" when everything but their line number is equal, so moving a table
down the file restarts nothing.

:class:`FileWatch` is what ``mux run --watch`` polls: the file's mtime and
size, and a hash of its bytes when those moved or are too recent to trust
(a rewrite within the file system's timestamp granularity keeps the mtime).
An editor that saves unchanged text causes no reload. Polling costs one
``stat`` per interval and needs no dependency (inotify would need one, and
misses files on network file systems).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from .._config import ProcessorConfig, SinkConfig, SourceConfig

__all__ = ["FileWatch", "SinkPlan", "SourcePlan", "chain_key", "plan_sinks", "plan_sources"]

#: A file modified less than this many seconds ago is hashed on every poll.
_RECENT = 2.0


def _same(old: Any, new: Any) -> bool:
    """Equal but for the line of the table (moving a table changes nothing)."""
    return bool(attrs.evolve(old, line=None) == attrs.evolve(new, line=None))


def chain_key(source: str, processors: Sequence[ProcessorConfig]) -> tuple[Any, ...]:
    """What decides a source's processor chain: the tables that apply to it, in order."""
    return tuple(
        (proc.type, proc.sources, proc.options) for proc in processors if proc.applies_to(source)
    )


@attrs.frozen
class SourcePlan:
    """What to do with the running sources to get the wanted ones."""

    #: New sources to start.
    added: tuple[SourceConfig, ...] = ()
    #: Names of running sources to stop.
    removed: tuple[str, ...] = ()
    #: Sources whose table changed: stop, then start with the new table.
    changed: tuple[SourceConfig, ...] = ()
    #: Names of unchanged sources whose processors changed: new chain, same connection.
    rechained: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.rechained)

    def summary(self) -> str:
        """``+2 sources, -1, ~1 changed`` (or ``sources unchanged``)."""
        if not (self.added or self.removed or self.changed):
            text = "sources unchanged"
        else:
            text = f"+{len(self.added)} sources, -{len(self.removed)}, ~{len(self.changed)} changed"
        if self.rechained:
            text += f", processors rebuilt for {len(self.rechained)}"
        return text


def plan_sources(
    running: Mapping[str, SourceConfig],
    wanted: Iterable[SourceConfig],
    *,
    old_processors: Sequence[ProcessorConfig] = (),
    new_processors: Sequence[ProcessorConfig] = (),
) -> SourcePlan:
    """Compare the running sources with the wanted ones (by name)."""
    wanted_by_name = {source.name: source for source in wanted}
    added, changed, rechained = [], [], []
    for name, new in wanted_by_name.items():
        old = running.get(name)
        if old is None:
            added.append(new)
        elif not _same(old, new):
            changed.append(new)
        elif chain_key(name, old_processors) != chain_key(name, new_processors):
            rechained.append(name)
    removed = tuple(name for name in running if name not in wanted_by_name)
    return SourcePlan(tuple(added), removed, tuple(changed), tuple(rechained))


@attrs.frozen
class SinkPlan:
    """What to do with the running sinks to get the wanted ones."""

    added: tuple[SinkConfig, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[SinkConfig, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def summary(self) -> str:
        """``sinks +1, -0, ~1 changed`` (or ``sinks unchanged``)."""
        if not self:
            return "sinks unchanged"
        return f"sinks +{len(self.added)}, -{len(self.removed)}, ~{len(self.changed)} changed"


def plan_sinks(running: Mapping[str, SinkConfig], wanted: Iterable[SinkConfig]) -> SinkPlan:
    """Compare the running sinks with the wanted ones (by sink name)."""
    wanted_by_name = {sink.name: sink for sink in wanted}
    added = [sink for name, sink in wanted_by_name.items() if name not in running]
    changed = [
        sink
        for name, sink in wanted_by_name.items()
        if name in running and not _same(running[name], sink)
    ]
    removed = tuple(name for name in running if name not in wanted_by_name)
    return SinkPlan(tuple(added), removed, tuple(changed))


class FileWatch:
    """Tells whether a file's content changed since the last look."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._stat: tuple[int, int] | None = None
        self._digest: bytes | None = None
        self.changed()  # the content the run started with

    def changed(self) -> bool:
        """True when the content differs from the last call's (a missing file never does:
        an editor that replaces the file deletes it for a moment)."""
        try:
            stat = os.stat(self.path)
        except OSError:
            return False
        key = (stat.st_mtime_ns, stat.st_size)
        recent = time.time() - stat.st_mtime < _RECENT
        if key == self._stat and not recent:
            return False
        self._stat = key
        try:
            with open(self.path, "rb") as file:
                digest = hashlib.blake2b(file.read(), digest_size=16).digest()
        except OSError:
            return False
        if digest == self._digest:
            return False
        first = self._digest is None
        self._digest = digest
        return not first
