"""``mux replay FILE.jsonl``: feed a recorded run (what the file sink wrote) through sinks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._plugins import Command
from .._run.exit_codes import ExitCode
from ..options import positive_seconds
from . import BUILTIN, setup_logging

__all__ = ["COMMAND"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Feed a recorded JSON Lines file (rotated files FILE.N..FILE.1 first) through the sinks "
        "of a config, or a terminal view. Exit codes: 0 done, 1 a sink failed, 2 usage or "
        "config error."
    )
    parser.add_argument("file", metavar="FILE.jsonl", help="a file the file sink wrote")
    parser.add_argument(
        "--speed",
        type=positive_seconds,
        metavar="N",
        help="replay at N times the recorded pace (default: as fast as the sinks take it)",
    )
    parser.add_argument(
        "--config",
        metavar="CONFIG",
        help="use this config's sinks (default: a terminal view of the numeric fields)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")


def _replay(args: argparse.Namespace) -> int:
    import trio

    from .._run.replay import Replay, default_view, replay_files

    setup_logging(quiet=args.quiet)
    plugins = args.plugins
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
        return ExitCode.SINK_FAILED
    return result.exit_code


COMMAND = Command(
    "replay",
    _add_arguments,
    _replay,
    "feed a recorded run (what the file sink wrote) through sinks",
    BUILTIN,
)
