"""Changing what runs while it runs: reloads, discovered sets, restarts.

:class:`RunChanges` is the one place that changes the running set. Each
change -- a reload (SIGHUP, ``--watch``, ``Engine.request_reload``), a
discoverer's new set, a restart -- takes one lock, computes a plan
(:mod:`mux_core._run.plan`) and asks the :class:`~mux_core._run.source_set.SourceSet`
and :class:`~mux_core._run.sink_set.SinkSet` to start, stop, replace or restart
exactly what the plan names. It holds the config in effect
(:attr:`RunChanges.config`, which ``Engine.config`` reads) and runs the
discoverers; it builds sources, sinks and chains with the engine's builders.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

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
from .plan import (
    FileWatch,
    SinkPlan,
    SourcePlan,
    plan_sinks,
    plan_sources,
)
from .sink_set import SinkSet
from .source_set import SourceSet

if TYPE_CHECKING:  # the engine builds this; this calls the engine's builders
    from .engine import Engine

__all__ = ["RunChanges"]

_log = logging.getLogger("mux.engine")


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
        self._discovery = DiscoveryRunner(run.plugins, self.rediscovered)
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
        self._discovery.apply(self.nursery, self.config)

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
            self._discovery.apply(self.nursery, config)
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
                fresh = (
                    None if runner is None else self._build(self._run.make_source, runner.config)
                )
                if fresh is not None and self._sources.restart(each, fresh):
                    _log.info("restart: source %r starts again", each)
                elif runner is None:
                    _log.warning("restart: no source named %r", each)
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
        wanted += self._discovery.sources({source.name for source in wanted})
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
