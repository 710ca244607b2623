"""Loading plugins: entry points in group ``mux`` plus explicit registration.

The core calls hooks only through :class:`PluginManager`, a small typed
facade over pluggy, so every call site is type-checked.

Entry points are loaded one at a time: a plugin that fails to import is
recorded in :attr:`PluginManager.failures` (shown by ``mux plugins`` and
logged) and the others still load. ``MUX_LOAD_PLUGINS=a,b`` limits
autoloading of third-party plugins to the named entry points; the built-in
plugins (those shipped in the ``mux`` distribution) always load, so an
empty value means "built-ins only".
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import os
from collections.abc import Callable, Collection
from types import ModuleType
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .errors import PluginError

__all__ = ["Command", "PluginFailure", "PluginInfo", "PluginManager", "Provided"]

_log = logging.getLogger("mux.plugins")

ENTRY_POINT_GROUP = "mux"
_OWN_DISTRIBUTION = "mux"


@attrs.frozen
class Provided:
    """One component class (transport, sink, processor, discoverer) and its plugin."""

    kind: str  # "transport" | "sink" | "processor" | "discovery"
    name: str
    cls: type[Any]
    plugin: str


@attrs.frozen
class Command:
    """A ``mux`` subcommand a plugin added (``mux_register_commands``)."""

    name: str
    #: ``add_arguments(parser)``: fills the subcommand's argparse parser.
    add_arguments: Callable[[argparse.ArgumentParser], None]
    #: ``handler(args) -> exit code``: runs the command.
    handler: Callable[[argparse.Namespace], int]
    #: One line for ``mux --help``.
    help: str
    plugin: str


@attrs.frozen
class PluginFailure:
    """An entry point that could not be loaded, and why."""

    plugin: str
    distribution: str | None
    error: str


@attrs.frozen
class PluginInfo:
    """What ``mux plugins`` shows for one plugin."""

    name: str
    distribution: str | None
    version: str | None
    transports: tuple[str, ...]
    sinks: tuple[str, ...]
    error: str | None = None
    processors: tuple[str, ...] = ()
    discoverers: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()


class PluginManager:
    """mux's plugins: load them, ask them, and know who provides what."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager("mux")
        self._pm.add_hookspecs(hookspecs)
        self._distributions: dict[str, tuple[str | None, str | None]] = {}
        self.failures: list[PluginFailure] = []
        self._transports: dict[str, Provided] | None = None
        self._sinks: dict[str, Provided] | None = None
        self._processors: dict[str, Provided] | None = None
        self._discoverers: dict[str, Provided] | None = None

    # -- loading ---------------------------------------------------------

    def load_entry_points(self, *, only: set[str] | None = None) -> None:
        """Import every entry point of group ``mux``, one at a time.

        ``PluginManager()`` itself loads nothing; this does. A module already
        registered -- by hand in a test, under any name -- is not registered
        again, so a test may register its plugin and still load the rest.

        ``only``: third-party entry point names to load (None = read
        ``MUX_LOAD_PLUGINS``; unset = all).
        """
        if only is None:
            only = _names_from_env()
        # A distribution's name and version, read once for all its entry points:
        # each read of Distribution.name or .version parses its METADATA again.
        about: dict[importlib.metadata.Distribution, tuple[str, str]] = {}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = version = None
            if ep.dist is not None:
                if ep.dist not in about:
                    metadata = ep.dist.metadata
                    about[ep.dist] = (metadata["Name"], metadata["Version"])
                dist, version = about[ep.dist]
            builtin = dist == _OWN_DISTRIBUTION
            if not builtin and only is not None and ep.name not in only:
                continue
            if self._pm.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not crash the host
                error = _describe_import_error(exc)
                # A missing dependency (an extra not installed: mux[qt]) matters
                # only to a config that uses the plugin, which then fails with
                # FILE:LINE and this error; `mux plugins` lists it. Anything
                # else is a broken plugin: say so in every run's log.
                level = logging.DEBUG if isinstance(exc, ImportError) else logging.WARNING
                _log.log(level, "plugin %r (%s) failed to load: %s", ep.name, dist, error)
                self.failures.append(PluginFailure(ep.name, dist, error))
                continue
            if self._pm.is_registered(module):
                continue  # already registered by hand (a test), under any name
            self.register(module, name=ep.name, distribution=dist, version=version)

    def register(
        self,
        plugin: ModuleType | object,
        *,
        name: str | None = None,
        distribution: str | None = None,
        version: str | None = None,
    ) -> None:
        """Register a plugin object or module explicitly (tests, embedding)."""
        registered = self._pm.register(plugin, name=name)
        if registered is None:
            raise PluginError(f"plugin {name!r} is already registered")
        self._distributions[registered] = (distribution, version)
        self._transports = self._sinks = self._processors = self._discoverers = None

    def register_module(self, module_name: str) -> None:
        """Import a module by name and register it as a plugin.

        For plugins that are not installed as entry points -- a test's
        plugin, a script's: ``MUX_PLUGIN_MODULES=my_plugin mux run ...``.
        """
        if self._pm.has_plugin(module_name):
            return
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            error = _describe_import_error(exc)
            _log.warning("plugin module %r failed to load: %s", module_name, error)
            self.failures.append(PluginFailure(module_name, None, error))
            return
        if self._pm.is_registered(module):
            return  # installed too: its entry point already registered it
        self.register(module, name=module_name)

    # -- asking ----------------------------------------------------------

    def transports(self) -> dict[str, Provided]:
        """Every registered transport by name. Raises PluginError on a clash."""
        if self._transports is None:
            self._transports = self._collect("transport")
        return self._transports

    def sinks(self) -> dict[str, Provided]:
        """Every registered sink by name. Raises PluginError on a clash."""
        if self._sinks is None:
            self._sinks = self._collect("sink")
        return self._sinks

    def processors(self) -> dict[str, Provided]:
        """Every registered processor by name. Raises PluginError on a clash."""
        if self._processors is None:
            self._processors = self._collect("processor")
        return self._processors

    def discoverers(self) -> dict[str, Provided]:
        """Every registered discoverer by name. Raises PluginError on a clash."""
        if self._discoverers is None:
            self._discoverers = self._collect("discovery")
        return self._discoverers

    def commands(self, taken: Collection[str] = (), *, strict: bool = True) -> dict[str, Command]:
        """Every ``mux`` subcommand the plugins add, by name.

        ``taken``: the built-in command names. A plugin adding one of them, or
        two plugins adding the same name, raise PluginError naming both
        (``strict=False``: the first wins, for ``mux plugins``).
        """
        found: dict[str, Command] = {}
        for plugin_name, call in self._callers("mux_register_commands"):

            def register(
                name: str,
                add_arguments: Callable[[argparse.ArgumentParser], None],
                handler: Callable[[argparse.Namespace], int],
                *,
                help: str = "",
                _plugin: str = plugin_name,
            ) -> None:
                if not isinstance(name, str) or not name:
                    raise PluginError(f"plugin {_plugin!r} registered a command without a name")
                owner = "mux itself" if name in taken else None
                if name in found and found[name].plugin != _plugin:
                    owner = f"plugin {found[name].plugin!r}"
                if owner is not None:
                    if strict:
                        raise PluginError(
                            f"command {name!r} of plugin {_plugin!r} is already provided by "
                            f"{owner}; uninstall one or limit loading with MUX_LOAD_PLUGINS"
                        )
                    return
                found[name] = Command(name, add_arguments, handler, help, _plugin)

            call(register=register)
        return found

    def main_loop(self, engine: hookspecs.Runnable) -> bool:
        """Let a plugin that owns the main loop run the engine; False if none did."""
        result = self._pm.hook.mux_main_loop(engine=engine)
        return bool(result)

    def failure_for(self, kind: str, name: str) -> PluginFailure | None:
        """The load failure of the plugin that would have provided ``name``, if any.

        A plugin is taken to provide its own name and names it prefixes with
        a dash: plugin ``redis`` provides ``redis-stream``.
        """
        for failure in self.failures:
            if failure.plugin == name or name.startswith(f"{failure.plugin}-"):
                return failure
        return None

    def infos(self) -> list[PluginInfo]:
        """One entry per plugin, loaded or failed, sorted by name."""
        kinds = ("transport", "sink", "processor", "discovery")
        by_plugin: dict[str, tuple[list[str], ...]] = {}
        for plugin_name in self._plugin_names():
            by_plugin[plugin_name] = ([], [], [], [], [])
        for column, kind in enumerate(kinds):
            for provided in self._collect(kind, strict=False).values():
                row = by_plugin.setdefault(provided.plugin, ([], [], [], [], []))
                row[column].append(provided.name)
        for command in self.commands(strict=False).values():
            by_plugin.setdefault(command.plugin, ([], [], [], [], []))[4].append(command.name)
        infos = []
        for plugin_name, (
            transports,
            sinks,
            processors,
            discoverers,
            commands,
        ) in by_plugin.items():
            dist, version = self._distributions.get(plugin_name, (None, None))
            infos.append(
                PluginInfo(
                    plugin_name,
                    dist,
                    version,
                    tuple(sorted(transports)),
                    tuple(sorted(sinks)),
                    processors=tuple(sorted(processors)),
                    discoverers=tuple(sorted(discoverers)),
                    commands=tuple(sorted(commands)),
                )
            )
        for failure in self.failures:
            version = _version_of(failure.distribution)
            infos.append(
                PluginInfo(failure.plugin, failure.distribution, version, (), (), failure.error)
            )
        return sorted(infos, key=lambda info: info.name)

    # -- internals -------------------------------------------------------

    def _plugin_names(self) -> list[str]:
        names = []
        for plugin in self._pm.get_plugins():
            name = self._pm.get_name(plugin)
            if name is not None:
                names.append(name)
        return names

    def _collect(self, kind: str, *, strict: bool = True) -> dict[str, Provided]:
        hook_name = {
            "transport": "mux_register_transports",
            "sink": "mux_register_sinks",
            "processor": "mux_register_processors",
            "discovery": "mux_register_discovery",
        }[kind]
        found: dict[str, Provided] = {}
        for plugin_name, call in self._callers(hook_name):

            def register(name: str, cls: type[Any], _plugin: str = plugin_name) -> None:
                if not isinstance(name, str) or not name:
                    raise PluginError(f"plugin {_plugin!r} registered a {kind} without a name")
                previous = found.get(name)
                if previous is not None and previous.plugin != _plugin:
                    if strict:
                        raise PluginError(
                            f"{kind} {name!r} is registered by two plugins: "
                            f"{previous.plugin!r} and {_plugin!r}; uninstall one or limit "
                            f"loading with MUX_LOAD_PLUGINS"
                        )
                    return
                found[name] = Provided(kind, name, cls, _plugin)

            call(register=register)
        return found

    def _callers(self, hook_name: str) -> list[tuple[str, Callable[..., Any]]]:
        """``(plugin name, call)`` for each plugin implementing a register hook, in
        pluggy's calling order; ``call(register=...)`` goes through pluggy (a
        hookwrapper of that plugin runs, an implementation may take fewer
        arguments) with the other plugins left out, so each registration is
        known to come from its plugin."""
        hook = getattr(self._pm.hook, hook_name)
        # pluggy calls the implementations last-registered first.
        implementing = []
        for impl in reversed(hook.get_hookimpls()):
            if impl.plugin not in implementing:
                implementing.append(impl.plugin)
        others = self._pm.get_plugins()
        callers: list[tuple[str, Callable[..., Any]]] = []
        for plugin in implementing:
            name = self._pm.get_name(plugin) or repr(plugin)
            exclude = [other for other in others if other is not plugin]
            callers.append((name, self._pm.subset_hook_caller(hook_name, exclude)))
        return callers


def _names_from_env() -> set[str] | None:
    raw = os.environ.get("MUX_LOAD_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _describe_import_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text.splitlines()[0] if text else type(exc).__name__


def _version_of(distribution: str | None) -> str | None:
    if distribution is None:
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
