"""The ``mux`` command: run | check | replay | test | plugins | new-plugin, and plugins' commands.

Every subcommand is a :class:`~mux_core._plugins.Command`: the built-in ones
are one module each here (``run``, ``check``, ``replay``, ``tests``, ``plugins``,
``new_plugin``), plugins add theirs through ``mux_register_commands``
(``mux serve-demo`` and ``mux demo`` come from the built-in ``mux_demo``
plugin that way). :func:`main` loads the plugins once, builds the parser from
both kinds of command the same way and calls the chosen one's handler with
``args.plugins``, the loaded :class:`~mux_core._plugins.PluginManager`.

Errors a user can fix are one line on stderr and :attr:`ExitCode.USAGE`; the
other exit codes are the user guide's (docs/user-guide.md, Exit codes):
every exit is an :class:`~mux_core._run.host.ExitCode`.

Start-up matters (``mux --help``, ``mux check``): this package and the
command modules import only argparse and the plugin manager; each handler
imports the machinery it runs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .._plugins import Command, PluginManager
from .._run.exit_codes import ExitCode
from ..errors import ConfigError, PluginError
from ..views import escape_controls

__all__ = [
    "BUILTIN",
    "OneLineFormatter",
    "build_parser",
    "builtin_commands",
    "load_plugins",
    "main",
    "setup_logging",
]

#: The ``plugin`` of the built-in commands' :class:`Command`.
BUILTIN = "mux"


def _version() -> str:
    try:
        return importlib.metadata.version("mux")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class _Parser(argparse.ArgumentParser):
    """argparse's parser, ending a usage error with :attr:`ExitCode.USAGE` (subcommands too)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def builtin_commands() -> list[Command]:
    """mux's own commands, in the order ``mux --help`` lists them."""
    from . import check, new_plugin, plugins, replay, run, tests

    return [
        run.COMMAND,
        check.COMMAND,
        replay.COMMAND,
        tests.COMMAND,
        plugins.COMMAND,
        new_plugin.COMMAND,
    ]


def build_parser(loaded: PluginManager | None = None) -> argparse.ArgumentParser:
    """The ``mux`` parser: the built-in commands, then those of the ``loaded`` plugins.

    Raises PluginError when a plugin's command takes a name already taken.
    """
    parser = _Parser(
        prog="mux",
        description="Watch live data streams (SSE, WebSocket, REST) as a pure client.",
    )
    parser.add_argument("--version", action="version", version=f"mux {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands = builtin_commands()
    if loaded is not None:
        taken = {command.name for command in commands}
        commands += loaded.commands(taken=taken).values()
    for command in commands:
        sub = subparsers.add_parser(command.name, help=command.help or None)
        command.add_arguments(sub)
        sub.set_defaults(mux_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mux`` console script; returns the exit code."""
    try:
        plugins = load_plugins()
        args = build_parser(plugins).parse_args(argv)
        command: Command = args.mux_command
        # Every command gets the plugins this process loaded, once.
        args.plugins = plugins
        if command.plugin != BUILTIN:
            # A plugin's command logs as mux run does; the built-in ones set
            # up logging themselves, those that log.
            setup_logging(quiet=getattr(args, "quiet", False))
        return int(command.handler(args))
    except (ConfigError, PluginError) as exc:
        print(f"mux: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`mux check CONFIG | head`): not an error of
        # mux's. Point stdout at /dev/null so the flush at exit stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.BROKEN_PIPE


def load_plugins() -> PluginManager:
    """Entry points plus modules named in ``MUX_PLUGIN_MODULES`` (comma-separated)."""
    plugins = PluginManager()
    plugins.load_entry_points()
    for module_name in filter(None, os.environ.get("MUX_PLUGIN_MODULES", "").split(",")):
        plugins.register_module(module_name.strip())
    return plugins


class OneLineFormatter(logging.Formatter):
    """Each record on one line, its control characters escaped (``\\n``, ``\\x1b``):
    a source name or a server's text cannot forge a line of mux's own or
    drive the terminal. A traceback follows on lines of its own, as ever."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))


def setup_logging(*, quiet: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, handlers=[handler])
    # httpx logs every request at INFO: one line per REST poll is noise here.
    logging.getLogger("httpx").setLevel(logging.WARNING)
