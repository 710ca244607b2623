"""``mux plugins``: list the installed plugins (``--config-reference PLUGIN``: one's keys)."""

from __future__ import annotations

import argparse
import json
import sys

from .._plugins import Command, PluginInfo
from .._run.exit_codes import ExitCode
from . import BUILTIN

__all__ = ["COMMAND"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--config-reference",
        metavar="PLUGIN",
        help="print a Markdown config reference of this plugin's transports, sinks and "
        "processors (keys, types, defaults, the #: descriptions)",
    )


def _plugins(args: argparse.Namespace) -> int:
    if args.config_reference is not None:
        return _config_reference(args)
    infos = args.plugins.infos()
    if args.json:
        print(json.dumps([_as_json(info) for info in infos], indent=2))
        return ExitCode.OK
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
    return ExitCode.OK


def _as_json(info: PluginInfo) -> dict[str, object]:
    return {
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


def _config_reference(args: argparse.Namespace) -> int:
    from .._config.reference import plugin_reference

    try:
        print(plugin_reference(args.plugins, args.config_reference), end="")
    except LookupError as exc:
        print(f"mux: error: {exc.args[0]}", file=sys.stderr)
        return ExitCode.USAGE
    return ExitCode.OK


COMMAND = Command("plugins", _add_arguments, _plugins, "list installed plugins", BUILTIN)
