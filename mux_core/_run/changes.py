"""Changing what runs while it runs: reloads, discovered sets, restarts.

:class:`RunChanges` is the one place that changes the running set. Each
change -- a reload (SIGHUP, ``--watch``, ``Engine.request_reload``), a
discoverer's new set, a restart -- takes one lock, computes a plan and asks
the :class:`~mux_core._run.source_set.SourceSet` and
:class:`~mux_core._run.sink_set.SinkSet` to start, stop, replace or restart
exactly what the plan names. It holds the config in effect
(:attr:`RunChanges.config`, which ``Engine.config`` reads) and runs the
discoverers; it builds sources, sinks and chains with the engine's builders.

A change never tears the run down: :func:`plan_sources` and
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

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .._config import (
    Config,
    ProcessorConfig,
    SourceConfig,
)
from ..errors import ConfigError, PluginError
from ..records import State
from ..transport import ResumeState
from .discovery import DiscoveryRunner
from .sink_set import SinkSet
from .source_set import RESTARTABLE, SourceSet

if TYPE_CHECKING:  # the engine builds this; this calls the engine's builders
    from .engine import Engine
import hashlib
import os
import time
from collections.abc import Iterable, Mapping

import attrs

from .._config import SinkConfig

__all__ = [
    "FileWatch",
    "RunChanges",
    "SinkPlan",
    "SourcePlan",
    "chain_key",
    "plan_sinks",
    "plan_sources",
]

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


_log = logging.getLogger("mux.engine")


class DiscoveredSources(Protocol):
    """Where a run's discovered sources come from (:class:`DiscoveryRunner`'s interface)."""

    def apply(self, nursery: trio.Nursery | None, config: Config) -> None: ...

    def sources(self, taken: set[str]) -> list[SourceConfig]: ...


class RunChanges:
    """Applies reloads, discovered sets and restarts, one at a time."""

    def __init__(
        self,
        run: Engine,
        config: Config,
        sources: SourceSet,
        sinks: SinkSet,
        *,
        changed: Callable[[], None],
    ) -> None:
        self._run = run
        #: The config in effect: the one the run started with, then each applied one.
        self.config = config
        self._sources = sources
        self._sinks = sinks
        #: Where discovered sources come from: the run's own discoverers (a
        #: ``--workers`` worker's are the parent's, which it is handed).
        self.discovery: DiscoveredSources = DiscoveryRunner(run.plugins, self.rediscovered)
        self._changed = changed
        self._lock = trio.Lock()
        #: Where discoverers run (the engine's control nursery, once the run is up).
        self.nursery: trio.Nursery | None = None
        #: Resume states of sources stopped by a change, should they come back.
        self.retired: dict[str, tuple[str, ResumeState]] = {}

    @property
    def busy(self) -> bool:
        """A change is under way (the run must not end half-way through one)."""
        return self._lock.locked()

    def start_discovery(self) -> None:
        """Run the ``[[discovery]]`` discoverers of the config in effect (in :attr:`nursery`)."""
        self.discovery.apply(self.nursery, self.config)

    async def reload(self) -> bool:
        """Load the config file again and apply it; False if it was rejected (logged)."""
        load = self._run.load_config
        if load is None:
            _log.warning("reload: this run has no config file to reload")
            return False
        try:
            config = load()
        except (ConfigError, PluginError) as exc:
            _log.error("reload rejected, the running config stays:\n%s", exc)
            return False
        await self.apply_config(config)
        return True

    async def apply_config(self, config: Config) -> None:
        """Make the run match ``config``: only what differs is touched; one summary line."""
        async with self._lock:
            old = self.config
            if config.state_dir != old.state_dir:
                _log.warning("reload: state_dir changes take effect when mux is restarted")
            self.config = config
            sinks = await self._apply_sinks(plan_sinks(self._sinks.configs, config.sinks))
            self.discovery.apply(self.nursery, config)
            sources = await self._apply_sources(old.processors, reason="removed by a reload")
            _log.info("reload: %s, %s", sources.summary(), sinks.summary())
        self._changed()

    async def rediscovered(self) -> None:
        """A discoverer's set changed: start, stop and restart what differs."""
        async with self._lock:
            processors = self.config.processors
            plan = await self._apply_sources(processors, reason="no longer discovered")
            if plan:
                _log.info("discovery: %s", plan.summary())
        self._changed()

    async def restart(self, name: str | None) -> None:
        """Restart ``name`` (or, for None, every source that gave up)."""
        async with self._lock:
            if name is None:
                names = [r.name for r in self._sources if r.state is State.MAX_RETRIES_EXCEEDED]
                if not names:
                    _log.info("restart: no source gave up")
            else:
                names = [name]
            for each in names:
                runner = self._sources.get(each)
                if runner is None:
                    _log.warning("restart: no source named %r", each)
                    continue
                # Nothing is built for a live source: building one gives it a
                # new quality tracker, which would read the live session as down.
                live = not runner.finished or runner.state not in RESTARTABLE
                fresh = None if live else self._build(self._run.make_source, runner.config)
                if fresh is not None and self._sources.restart(each, fresh):
                    _log.info("restart: source %r starts again", each)
                else:
                    _log.info("restart: source %r is live; nothing to restart", each)

    async def watch_file(self, interval: float) -> None:
        """``--watch``: reload whenever the config file's content changed."""
        watch = FileWatch(self.config.path)
        while True:
            await trio.sleep(interval)
            if await trio.to_thread.run_sync(watch.changed):
                _log.info("reload: %s changed", self.config.path)
                await self.reload()

    def _wanted_sources(self) -> list[SourceConfig]:
        """The config's sources, then the discovered ones (colliding names left out)."""
        wanted = list(self.config.sources)
        wanted += self.discovery.sources({source.name for source in wanted})
        return wanted

    async def _apply_sources(
        self, old_processors: Sequence[ProcessorConfig], *, reason: str
    ) -> SourcePlan:
        plan = plan_sources(
            self._sources.configs,
            self._wanted_sources(),
            old_processors=old_processors,
            new_processors=self.config.processors,
        )
        for name in plan.removed:
            stopped = await self._sources.stop(name, reason)
            self.retired[name] = (stopped.config.transport, stopped.live_resume or ResumeState())
        for cfg in plan.changed:
            fresh = self._build(self._run.make_source, cfg)
            if fresh is not None:
                running = self._sources.get(cfg.name)
                keep = running is not None and running.config.transport == cfg.transport
                await self._sources.replace(fresh, "config changed; restarting", keep_resume=keep)
        for cfg in plan.added:
            fresh = self._build(self._run.make_source, cfg)
            if fresh is not None:
                self._sources.start(fresh)
        for name in plan.rechained:
            runner = self._sources.get(name)
            if runner is not None:
                self._sources.set_chain(name, self._build(self._run.make_chain, runner.config))
        return plan

    async def _apply_sinks(self, plan: SinkPlan) -> SinkPlan:
        for name in plan.removed:
            await self._sinks.stop(name)
        for cfg in plan.changed:
            fresh = self._build(self._run.make_sink, cfg)
            if fresh is not None:
                await self._sinks.replace(fresh)
        for cfg in plan.added:
            fresh = self._build(self._run.make_sink, cfg)
            if fresh is not None:
                await self._sinks.start(fresh)
        return plan

    @staticmethod
    def _build(make: Callable[[Any], Any], cfg: Any) -> Any:
        """``make(cfg)``, or None after logging why it could not be made."""
        try:
            return make(cfg)
        except PluginError as exc:
            _log.error("%s; left out", exc)
            return None
