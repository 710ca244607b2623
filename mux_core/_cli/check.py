"""``mux check CONFIG``: validate a config file without any network I/O (``--probe``: with)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .._plugins import Command
from .._run.exit_codes import ExitCode
from . import BUILTIN

if TYPE_CHECKING:
    from .._config.records import Config

__all__ = ["COMMAND"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="a TOML config file")
    parser.add_argument(
        "--probe",
        action="store_true",
        help="also try each source once and report whether it is reachable (the verdicts come "
        "first, then the resolved config)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="do not print the resolved config (with --probe: only the verdicts)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="with --probe: print only the verdicts, as a JSON list (source, transport, "
        "verdict, state, reachable, detail)",
    )


def _check(args: argparse.Namespace) -> int:
    if args.json and not args.probe:
        print("mux: error: --json goes with --probe", file=sys.stderr)
        return ExitCode.USAGE
    from .._config import load_config, render_config

    path = Path(args.config)
    config = load_config(path, args.plugins)
    for warning in _unverified(config):
        print(f"mux: warning: {warning}", file=sys.stderr)
    code: int = ExitCode.OK
    if args.probe:
        from .._config.render import MaskSecrets
        from .probe import probe_config

        # The verdicts first: they are what a probe is run for. What a
        # transport logs meanwhile may quote an option: masked like a run's log.
        with MaskSecrets(lambda: config.secrets).installed():
            code = probe_config(config, args.plugins, as_json=args.json)
    if not (args.quiet or args.json):
        print(("\n" if args.probe else "") + render_config(config))
    print(
        f"# OK: {path}: {len(config.sources)} source(s), {len(config.sinks)} sink(s)"
        + (f", {len(config.processors)} processor(s)" if config.processors else ""),
        file=sys.stderr,
    )
    return code


def _unverified(config: Config) -> list[str]:
    """A line for each table that turns TLS verification off (``verify = false``):
    mux accepts it, and says so here and when the run starts it."""
    from ..http import unverified_warning

    tables = [
        *(("source", c.name, c.options) for c in config.sources),
        *(("sink", c.name, c.options) for c in config.sinks),
        *(("discovery", c.name, c.options) for c in config.discovery),
    ]
    return [
        unverified_warning(f"{kind} {name!r}")
        for kind, name, options in tables
        if getattr(options, "verify", True) is False
    ]


COMMAND = Command(
    "check", _add_arguments, _check, "validate a config file without any network I/O", BUILTIN
)
