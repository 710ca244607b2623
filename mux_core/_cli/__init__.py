"""The ``mux`` command: run | check | replay | plugins | new-plugin, and plugins' commands.

Plugins add subcommands through ``mux_register_commands`` (``mux serve-demo``
and ``mux demo`` come from the built-in ``mux_demo`` plugin that way).

Errors a user can fix are one line on stderr and exit code 2 (usage or
config); the other exit codes are the user guide's (docs/user-guide.md, Exit
codes): 0 clean stop, 3 a source ended in ``failed`` / ``max_retries_exceeded``,
4 ``--fail-on`` saw an alert.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from .._plugins import PluginManager
from .._run.shard import Shard, parse_shard, select_shard
from ..errors import ConfigError, PluginError

if TYPE_CHECKING:
    from .._config import Config

__all__ = ["main"]

EXIT_USAGE = 2


def _version() -> str:
    try:
        return importlib.metadata.version("mux")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds as a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _shard_arg(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser(loaded: PluginManager | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mux",
        description="Watch live data streams (SSE, WebSocket, REST) as a pure client.",
    )
    parser.add_argument("--version", action="version", version=f"mux {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="monitor the sources of a config file",
        description="Monitor the sources of a config file until interrupted, --for elapses "
        "or every source is terminal.",
        epilog='exit codes: 0 clean stop; 1 a sink failed (on_error = "stop"); 2 usage or '
        "config error; 3 a source ended in failed / max_retries_exceeded; 4 --fail-on saw an "
        "alert of that severity or higher",
    )
    run.add_argument("config", metavar="CONFIG", help="a TOML config file")
    run.add_argument(
        "--for",
        dest="duration",
        type=_positive_seconds,
        metavar="SECONDS",
        help="stop cleanly after this many seconds",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    run.add_argument(
        "--shard",
        type=_shard_arg,
        metavar="I/N",
        help="run only the sources of shard I of N (crc32 of the source name mod N), "
        "so N collectors split one config; overrides the config's shard key",
    )
    run.add_argument(
        "--state",
        metavar="DIR",
        help="keep each source's resume state (last id, cursor, seq) in DIR, saved once what "
        "it covers is written by every block sink, so a restarted run goes on where this one "
        "stopped; overrides the config's state_dir key",
    )
    run.add_argument(
        "--watch",
        action="store_true",
        help="reload the config when the file changes (as on SIGHUP): only the sources and "
        "sinks that changed restart; an invalid config is logged and the running one stays",
    )
    run.add_argument(
        "--fail-on",
        choices=("info", "warning", "critical"),
        metavar="SEVERITY",
        help="exit with code 4 when a processor raised an alert of this severity or higher "
        "(info, warning, critical); the run goes on until it stops as usual",
    )

    check = commands.add_parser("check", help="validate a config file without any network I/O")
    check.add_argument("config", metavar="CONFIG", help="a TOML config file")
    check.add_argument(
        "--probe",
        action="store_true",
        help="also try each source once and report whether it is reachable (the verdicts come "
        "first, then the resolved config)",
    )
    check.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="do not print the resolved config (with --probe: only the verdicts)",
    )
    check.add_argument(
        "--json",
        action="store_true",
        help="with --probe: print only the verdicts, as a JSON list (source, transport, "
        "verdict, state, reachable, detail)",
    )

    replay = commands.add_parser(
        "replay",
        help="feed a recorded run (what the file sink wrote) through sinks",
        description="Feed a recorded JSON Lines file (rotated files FILE.N..FILE.1 first) "
        "through the sinks of a config, or a terminal view. Exit codes: 0 done, "
        "1 a sink failed, 2 usage or config error.",
    )
    replay.add_argument("file", metavar="FILE.jsonl", help="a file the file sink wrote")
    replay.add_argument(
        "--speed",
        type=_positive_seconds,
        metavar="N",
        help="replay at N times the recorded pace (default: as fast as the sinks take it)",
    )
    replay.add_argument(
        "--config",
        metavar="CONFIG",
        help="use this config's sinks (default: a terminal view of the numeric fields)",
    )
    replay.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")

    plugins = commands.add_parser("plugins", help="list installed plugins")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.add_argument(
        "--config-reference",
        metavar="PLUGIN",
        help="print a Markdown config reference of this plugin's transports, sinks and "
        "processors (keys, types, defaults, the #: descriptions)",
    )

    new_plugin = commands.add_parser(
        "new-plugin",
        help="write a complete, installable plugin skeleton (transport, sink, tests)",
        description="Write a plugin skeleton that installs, is listed by `mux plugins` and "
        "passes its own tests: pyproject.toml with the entry point, a transport and a sink "
        "with Options, tests on mux_core.testing, a README.",
    )
    new_plugin.add_argument("name", metavar="NAME", help="e.g. acme: package mux_acme")
    new_plugin.add_argument("--dir", metavar="DIR", help="where to write it (default ./mux-NAME)")

    if loaded is not None:
        _add_plugin_commands(commands, loaded)
    return parser


def _add_plugin_commands(commands: Any, plugins: PluginManager) -> None:
    """The subcommands plugins add (``mux_register_commands``); they run their handler."""
    for command in plugins.commands(taken=set(commands.choices)).values():
        sub = commands.add_parser(command.name, help=command.help or None)
        command.add_arguments(sub)
        sub.set_defaults(plugin_handler=command.handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mux`` console script; returns the exit code."""
    try:
        plugins = load_plugins()
        parser = _parser(plugins)
    except PluginError as exc:
        print(f"mux: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    try:
        handler = getattr(args, "plugin_handler", None)
        if handler is not None:
            # A plugin's command gets the plugins this process loaded (once) and
            # mux's logging, as the built-in commands do.
            args.plugins = plugins
            setup_logging(quiet=getattr(args, "quiet", False))
            return int(handler(args))
        if args.command == "run":
            return _run(
                Path(args.config),
                duration=args.duration,
                quiet=args.quiet,
                fail_on=args.fail_on,
                shard=args.shard,
                state_dir=args.state,
                watch=args.watch,
            )
        if args.command == "check":
            if args.json and not args.probe:
                print("mux: error: --json goes with --probe", file=sys.stderr)
                return EXIT_USAGE
            return _check(Path(args.config), probe=args.probe, quiet=args.quiet, as_json=args.json)
        if args.command == "replay":
            return _replay(args)
        if args.command == "plugins":
            if args.config_reference is not None:
                return _config_reference(args.config_reference)
            return _plugins(as_json=args.json)
        if args.command == "new-plugin":
            return _new_plugin(args.name, args.dir)
    except (ConfigError, PluginError) as exc:
        print(f"mux: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`mux check CONFIG | head`): not an error of
        # mux's. Point stdout at /dev/null so the flush at exit stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    raise AssertionError(args.command)


def load_plugins() -> PluginManager:
    """Entry points plus modules named in ``MUX_PLUGIN_MODULES`` (comma-separated)."""
    plugins = PluginManager()
    plugins.load_entry_points()
    for module_name in filter(None, os.environ.get("MUX_PLUGIN_MODULES", "").split(",")):
        plugins.register_module(module_name.strip())
    return plugins


def setup_logging(*, quiet: bool = False) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO: one line per REST poll is noise here.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _run(
    path: Path,
    *,
    duration: float | None,
    quiet: bool,
    fail_on: str | None = None,
    shard: Shard | None = None,
    state_dir: str | None = None,
    watch: bool = False,
) -> int:
    from .._config import load_config
    from .._run.engine import WATCH_INTERVAL, Engine
    from ..records import Severity

    setup_logging(quiet=quiet)
    plugins = load_plugins()

    def load() -> Config:
        config = load_config(path, plugins)
        return _select_shard(config, shard or config.shard)

    config = load()
    engine = Engine(
        config,
        plugins,
        duration=duration,
        install_signal_handlers=True,
        fail_on=None if fail_on is None else Severity(fail_on),
        state_dir=state_dir,
        load_config=load,
        watch=WATCH_INTERVAL if watch else None,
    )
    if not plugins.main_loop(engine):
        trio.run(engine.run)
    result = engine.result
    if result is None:
        print("mux: error: the run did not finish", file=sys.stderr)
        return 1
    logging.getLogger("mux").info(
        "run finished (%s): %s",
        result.reason,
        ", ".join(f"{name} {state.value}" for name, state in result.final_states.items()),
    )
    if result.quality:
        from .._run.quality import format_quality_table

        # Each source's connection quality, as its last quality record had it.
        print("\n" + format_quality_table(result.quality.values()), file=sys.stderr, end="")
    return result.exit_code


def _select_shard(config: Config, shard: Shard | None) -> Config:
    if shard is None:
        return config
    selected = select_shard(config, shard)
    logging.getLogger("mux").info(
        "shard %s: %d of the %d sources: %s",
        shard,
        len(selected.sources),
        len(config.sources),
        ", ".join(source.name for source in selected.sources) or "none",
    )
    return selected


def _check(path: Path, *, probe: bool, quiet: bool = False, as_json: bool = False) -> int:
    from .._config import load_config, render_config

    plugins = load_plugins()
    config = load_config(path, plugins)
    code = 0
    if probe:
        from .probe import probe_config

        # The verdicts first: they are what a probe is run for.
        code = probe_config(config, plugins, as_json=as_json)
    if not (quiet or as_json):
        print(("\n" if probe else "") + render_config(config))
    print(
        f"# OK: {path}: {len(config.sources)} source(s), {len(config.sinks)} sink(s)"
        + (f", {len(config.processors)} processor(s)" if config.processors else ""),
        file=sys.stderr,
    )
    return code


def _replay(args: argparse.Namespace) -> int:
    from .._run.replay import Replay, default_view, replay_files

    setup_logging(quiet=args.quiet)
    plugins = load_plugins()
    files = replay_files(Path(args.file))
    if args.config is not None:
        from .._config import load_config
        from ..sink import SourceInfo

        config = load_config(Path(args.config), plugins)
        sinks = list(config.sinks)
        sources = [SourceInfo(s.name, s.transport) for s in config.sources]
    else:
        sinks, sources = [default_view(files[-1], plugins)], []
    replay = Replay(
        files,
        sinks,
        plugins,
        name=Path(args.file).name,
        sources=sources,
        speed=args.speed,
        install_signal_handlers=True,
    )
    # A Replay runs like an Engine (config.sinks, run, request_stop, result):
    # the Qt plugin's main loop hosts it the same way.
    if not plugins.main_loop(replay):
        trio.run(replay.run)
    result = replay.result
    if result is None:
        print("mux: error: the replay did not finish", file=sys.stderr)
        return 1
    return result.exit_code


def _config_reference(plugin: str) -> int:
    from .._config.reference import plugin_reference

    try:
        print(plugin_reference(load_plugins(), plugin), end="")
    except LookupError as exc:
        print(f"mux: error: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _new_plugin(name: str, directory: str | None) -> int:
    from .new_plugin import new_plugin

    try:
        written = new_plugin(name, None if directory is None else Path(directory))
    except (ValueError, FileExistsError) as exc:
        print(f"mux: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    root = written[0].parent
    print(f"wrote plugin {name!r} in {root}:")
    for path in written:
        print(f"  {path.relative_to(root)}")
    print(f"next: pip install -e '{root}[test]' && cd {root} && pytest && mypy .")
    return 0


def _plugins(*, as_json: bool) -> int:
    plugins = load_plugins()
    infos = plugins.infos()
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "name": info.name,
                        "distribution": info.distribution,
                        "version": info.version,
                        "transports": list(info.transports),
                        "sinks": list(info.sinks),
                        "processors": list(info.processors),
                        "discoverers": list(info.discoverers),
                        "commands": list(info.commands),
                        "error": info.error,
                    }
                    for info in infos
                ],
                indent=2,
            )
        )
        return 0
    rows = [("PLUGIN", "VERSION", "PROVIDES", "STATUS")]
    for info in infos:
        provides = ", ".join(
            [f"transport {t}" for t in info.transports]
            + [f"sink {s}" for s in info.sinks]
            + [f"processor {p}" for p in info.processors]
            + [f"discovery {d}" for d in info.discoverers]
            + [f"command {c}" for c in info.commands]
        )
        status = "ok" if info.error is None else f"unavailable: {info.error}"
        rows.append((info.name, info.version or "-", provides or "-", status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0
