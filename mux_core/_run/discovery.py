"""The engine's side of discovery: run the ``[[discovery]]`` discoverers, keep what they found.

Each discoverer runs in its own cancel scope in the engine's control
nursery. Every :meth:`~mux_core.discovery.DiscoveryContext.update` is
validated here, document by document (a bad table is reported with its
document and line, once, and left out; the rest are kept), stored as that
discoverer's sources, and handed to the engine, which compares the whole
wanted set with what runs. Names: a ``[[sources]]`` table wins over a
discovered source, an earlier discoverer or document over a later one; each
collision is reported once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio

from .._config import (
    Config,
    DiscoveryConfig,
    SourceConfig,
    parse_source_tables,
)
from .._plugins import PluginManager
from ..discovery import DiscoveryContext, SourceDocument
from ..retry import RetryPolicy

__all__ = ["DiscoveryRunner"]

_log = logging.getLogger("mux.discovery")


@attrs.define(eq=False)
class _Running:
    config: DiscoveryConfig
    context: DiscoveryContext
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    #: What it found last, validated, in document order.
    sources: list[SourceConfig] = attrs.field(factory=list)
    #: The problems of its documents reported so far (each once while it lasts).
    reported: set[str] = attrs.field(factory=set)


class DiscoveryRunner:
    """The running discoverers of one engine and the sources they found.

    ``changed()`` is awaited after every update (the run's changes apply the
    new set).
    """

    def __init__(self, plugins: PluginManager, changed: Callable[[], Awaitable[None]]) -> None:
        self._plugins = plugins
        self._changed = changed
        self._running: dict[str, _Running] = {}
        self._collisions: set[str] = set()
        # The config in effect (set by apply): discovered tables get its retry
        # policy, and only its shard's sources run.
        self._retry = RetryPolicy()
        self._in_effect: Config | None = None

    def apply(self, nursery: trio.Nursery | None, config: Config) -> None:
        """Start, stop and restart discoverers to match ``config.discovery`` (by name);
        discovered tables get ``config``'s retry policy and shard from now on.

        A restarted discoverer's sources stay until its first update.
        """
        self._retry, self._in_effect = config.retry, config
        if nursery is None:
            return
        wanted = {entry.name: entry for entry in config.discovery}
        for name in list(self._running):
            if name not in wanted:
                self._running.pop(name).scope.cancel()
        for name, table in wanted.items():
            old = self._running.get(name)
            if old is not None and _same(old.config, table):
                continue
            if old is not None:
                old.scope.cancel()
            entry = self._start(nursery, table)
            if entry is not None and old is not None:
                entry.sources = old.sources

    def sources(self, taken: set[str]) -> list[SourceConfig]:
        """Every discovered source whose name is free, in discoverer order."""
        shard = None if self._in_effect is None else self._in_effect.shard
        found = []
        for entry in self._running.values():
            for source in entry.sources:
                if source.name in taken:
                    self._collision(entry.config.name, source.name)
                    continue
                if shard is not None and not shard.includes(source.name):
                    continue
                taken.add(source.name)
                found.append(source)
        return found

    def _collision(self, discoverer: str, name: str) -> None:
        message = (
            f"discovery {discoverer!r}: source name {name!r} is already taken by a "
            "[[sources]] table or an earlier discovered source; this one is left out"
        )
        if message not in self._collisions:
            self._collisions.add(message)
            _log.error("%s", message)

    def _start(self, nursery: trio.Nursery, config: DiscoveryConfig) -> _Running | None:
        cls = self._plugins.discoverers()[config.type].cls
        context = DiscoveryContext(
            name=config.name,
            retry=self._retry,
            update=functools.partial(self._update, config.name),
        )
        try:
            discoverer = cls(config.options, context)
        except Exception as exc:
            _log.error("discovery %r (%s) could not be created: %s", config.name, config.type, exc)
            return None
        entry = _Running(config, context)
        self._running[config.name] = entry
        nursery.start_soon(self._run, entry, discoverer, name=f"discovery {config.name}")
        return entry

    async def _run(self, entry: _Running, discoverer: Any) -> None:
        with entry.scope:
            try:
                await discoverer.run()
            except Exception:
                _log.exception(
                    "discovery %r crashed; the sources it found keep running", entry.config.name
                )

    async def _update(self, name: str, documents: Sequence[SourceDocument]) -> None:
        entry = self._running.get(name)
        if entry is None:
            return
        retry = self._retry
        found: list[SourceConfig] = []
        seen: dict[str, str] = {}
        problems: set[str] = set()
        for document in documents:
            sources, errors = parse_source_tables(
                [dict(table) for table in document.tables],
                origin=document.origin,
                retry=retry,
                plugins=self._plugins,
                lines=document.lines,
            )
            problems.update(str(error) for error in errors)
            for source in sources:
                if source.name in seen:
                    problems.add(
                        f"{document.origin}: source name {source.name!r} is already used "
                        f"by {seen[source.name]}; this one is left out"
                    )
                    continue
                seen[source.name] = document.origin
                found.append(source)
        for problem in sorted(problems - entry.reported):
            _log.error("discovery %r: %s", name, problem)
        entry.reported = problems
        entry.sources = found
        await self._changed()


def _same(old: DiscoveryConfig, new: DiscoveryConfig) -> bool:
    return bool(attrs.evolve(old, line=None) == attrs.evolve(new, line=None))
