"""The engine's side of discovery: run the ``[[discovery]]`` discoverers, keep what they found.

Each discoverer runs in its own cancel scope in the engine's control
nursery. Every :meth:`~mux_core.discovery.DiscoveryContext.update` is
validated here, document by document, as data held to the ``[[discovery]]``
table's policy (:mod:`mux_core._config.discovered`: no ``${VAR}``, allowed
transports, hosts and options only, retry clamped, at most ``max_sources``),
stored as that discoverer's sources, and handed to the engine, which
compares the whole wanted set with what runs.

What is left out is told in one warning line per update -- how many tables
and why, with the first of each kind -- and only when that changed since
the last update, so neither 5,000 bad tables nor a poll every second floods
the log; reaching ``max_sources`` is told once, when it happens. Names: a
``[[sources]]`` table wins over a discovered source, an earlier discoverer
or document over a later one; each collision is reported once. Every line
is masked with the run's secrets.
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
    Problem,
    SourceConfig,
    parse_source_tables,
)
from .._config.render import mask
from .._plugins import PluginManager
from ..discovery import DiscoveryContext, SourceDocument
from ..errors import ConfigError
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
    #: The problems of its last update that were told (told again only when they change).
    reported: frozenset[str] = frozenset()
    #: Whether its last update reached max_sources (told once, when it is reached).
    capped: bool = False


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
            mask=self._mask,
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
            except Exception as exc:
                _log.error(
                    "discovery %r stopped on an error (a bug in its plugin): %s; "
                    "the sources it found keep running",
                    entry.config.name,
                    self._mask(f"{type(exc).__name__}: {exc}"),
                    exc_info=exc,
                )

    async def _update(self, name: str, documents: Sequence[SourceDocument]) -> None:
        entry = self._running.get(name)
        if entry is None:
            return
        policy = entry.config.policy
        secrets = self._secrets()
        found: list[SourceConfig] = []
        seen: dict[str, str] = {}
        problems: list[Problem] = []
        total = unread = 0
        for document in documents:
            total += len(document.tables)
            if len(found) >= policy.max_sources:
                unread += len(document.tables)
                continue
            discovered = parse_source_tables(
                list(document.tables),
                origin=document.origin,
                retry=self._retry,
                plugins=self._plugins,
                lines=document.lines,
                policy=policy,
                limit=policy.max_sources - len(found),
                secrets=secrets,
            )
            problems += discovered.problems
            unread += discovered.unread
            for source in discovered.sources:
                if source.name in seen:
                    message = (
                        f"source name {source.name!r} is already used by {seen[source.name]}; "
                        "this one is left out"
                    )
                    problems.append(
                        Problem("duplicate", ConfigError(message, file=document.origin))
                    )
                    continue
                seen[source.name] = document.origin
                found.append(source)
        self._tell(entry, problems, total, unread)
        entry.sources = found
        await self._changed()

    def _tell(self, entry: _Running, problems: list[Problem], total: int, unread: int) -> None:
        """One warning for what this update left out, when that changed; one when capped."""
        name = entry.config.name
        capped = unread > 0
        if capped and not entry.capped:
            _log.warning(
                "discovery %r: more sources than max_sources = %d: the first %d are kept, "
                "the other %d discovered tables are ignored; raise max_sources in the "
                "[[discovery]] table to keep more",
                name,
                entry.config.policy.max_sources,
                entry.config.policy.max_sources,
                unread,
            )
        entry.capped = capped
        reported = frozenset(str(problem.error) for problem in problems)
        if reported and reported != entry.reported:
            _log.warning("discovery %r: %s", name, self._mask(_summary(problems, total)))
        entry.reported = reported

    def _secrets(self) -> frozenset[str]:
        return frozenset() if self._in_effect is None else self._in_effect.secrets

    def _mask(self, text: str) -> str:
        return mask(text, self._secrets())


#: How the summary line calls each kind of problem.
_KINDS = {
    "name": "with a name that is unprintable or too long",
    "option": "setting an option outside allow_options",
    "transport": "with a transport outside allow_transports",
    "host": "naming a host outside allow_hosts",
    "credentials": "with credentials in a URL",
    "insecure": "asking for verify = false",
    "invalid": "invalid",
    "duplicate": "named like a source of another document",
}


def _summary(problems: list[Problem], total: int) -> str:
    """``3 of 12 discovered tables left out: 2 naming a host outside allow_hosts
    (the first: ORIGIN:LINE: sources[4].url: ...); 1 invalid (...)``."""
    by_kind: dict[str, list[Problem]] = {}
    for problem in problems:
        by_kind.setdefault(problem.kind, []).append(problem)
    parts = [
        f"{len(found)} {_KINDS.get(kind, kind)} (the first: {found[0].error})"
        for kind, found in by_kind.items()
    ]
    return f"{len(problems)} of {total} discovered tables left out: " + "; ".join(parts)


def _same(old: DiscoveryConfig, new: DiscoveryConfig) -> bool:
    return bool(attrs.evolve(old, line=None) == attrs.evolve(new, line=None))
