"""The plugin contract: every hook mux calls, with what it may do.

pluggy is synchronous, so hooks stay sync: they *register* classes whose
methods are async (the llm / tox pattern). Implement a hook with
``@mux_core.hookimpl`` in a module named by an entry point in group ``mux``.
pluggy lets an implementation take fewer arguments than the spec, so these
specs can grow without breaking plugins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pluggy

__all__ = ["CommandRegister", "Register", "Runnable", "hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("mux")
hookimpl = pluggy.HookimplMarker("mux")


class Runnable(Protocol):
    """What ``mux_main_loop`` gets: a :class:`mux_core.Engine` (``mux run``) or a
    replay (``mux replay``) -- anything run the same way.

    A protocol, so this module (the plugin contract) needs no import of the
    engine, which imports the plugin machinery.
    """

    @property
    def config(self) -> Any:
        """The config in effect (``config.sinks`` tells a plugin whether its sink is in the run)."""
        ...

    #: Set once ``run()`` has returned (a ``RunResult``).
    result: Any

    async def run(self) -> Any:
        """Run until done."""
        ...

    def request_stop(self, reason: str = ...) -> None:
        """Stop cleanly; safe from any thread."""
        ...


#: ``register(name, cls)``: the callback handed to the register hooks.
Register = Callable[[str, type[Any]], None]

#: ``register(name, add_arguments, handler, help=...)``: the callback of
#: ``mux_register_commands`` (see :class:`mux_core._plugins.Command`).
CommandRegister = Callable[..., None]


@hookspec
def mux_register_transports(register: Register) -> None:
    """Register transport classes: ``register("sse", SseTransport)``.

    Called once, when the plugins are loaded. ``name`` is the value users
    write in ``transport = "..."``; the class follows
    :class:`mux_core.Transport` (an ``Options`` attrs class and an async
    ``run_session(session)``). Two plugins registering the same name is an
    error naming both.
    """


@hookspec
def mux_register_sinks(register: Register) -> None:
    """Register sink classes: ``register("file", FileSink)``.

    Called once, when the plugins are loaded. ``name`` is the value users
    write in ``type = "..."`` of a ``[[sinks]]`` table; the class follows
    :class:`mux_core.Sink`.
    """


@hookspec
def mux_register_processors(register: Register) -> None:
    """Register processor classes: ``register("stall", StallProcessor)``.

    Called once, when the plugins are loaded. ``name`` is the value users
    write in ``type = "..."`` of a ``[[processors]]`` table; the class follows
    :class:`mux_core.Processor`: an ``Options`` attrs class, ``__init__(options,
    context)`` (one instance per source it applies to: per-source state), a
    sync ``process(batch) -> batch`` run in the source's own task, and
    optionally ``next_deadline()`` / ``tick(now)`` for rules about time.
    """


@hookspec
def mux_register_discovery(register: Register) -> None:
    """Register discoverer classes: ``register("files", FilesDiscovery)``.

    Called once, when the plugins are loaded. ``name`` is the value users
    write in ``type = "..."`` of a ``[[discovery]]`` table; the class follows
    :class:`mux_core.Discoverer`: an ``Options`` attrs class,
    ``__init__(options, context)`` and an async ``run()`` that calls
    ``await context.update(documents)`` with the *whole* current set of
    source tables each time it changes, until cancelled. A discoverer never starts or
    stops anything: the engine compares the sets and does that.
    """


@hookspec
def mux_register_commands(register: CommandRegister) -> None:
    """Add ``mux`` subcommands: ``register("serve-demo", add_arguments, handler, help="...")``.

    Called once, when ``mux`` builds its argument parser. ``add_arguments(parser)``
    fills the subcommand's :class:`argparse.ArgumentParser`; ``handler(args)``
    runs it and returns the exit code. ``args.plugins`` is the
    :class:`~mux_core.PluginManager` this process loaded (once, for every
    command), and logging is set up as for ``mux run`` (``-q``, if the command
    defines it, means warnings only). A name that is already a command (a
    built-in, or another plugin's) is an error naming both.
    """


@hookspec(firstresult=True)
def mux_main_loop(engine: Runnable) -> bool | None:
    """Run the engine on a main loop the plugin owns, or return None.

    Called by ``mux run`` after the config is loaded, before anything
    connects. A plugin that must own the main thread (Qt) returns None unless
    the run needs it (its sink is configured); otherwise it runs ``engine.run``
    as a trio guest (``trio.lowlevel.start_guest_run``) in its own event loop,
    returns True once the engine has finished, and the core reads
    ``engine.result``. When every implementation returns None, the core runs
    ``trio.run(engine.run)``.
    """
