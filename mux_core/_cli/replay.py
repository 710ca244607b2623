"""``mux replay FILE.jsonl [FILE ...]``: recorded runs (what file sinks wrote) through sinks."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .._plugins import Command
from .._run.exit_codes import ExitCode
from ..errors import ConfigError
from . import BUILTIN, setup_logging
from .alerts import add_fail_arguments, check_fail_fast, report_failing_alert

if TYPE_CHECKING:
    from .._config import ProcessorConfig, SinkConfig

__all__ = ["COMMAND"]


def _speed(text: str) -> float:
    """``--speed``: a number > 0, or ``max`` (as fast as the sinks take records)."""
    if text.strip().lower() in ("max", "inf"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(
            f"expected a number > 0 (times the recorded pace) or max, got {text!r}"
        )
    return value


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Feed recorded JSON Lines files (rotated files FILE.N..FILE.1 first) through the "
        "processors and sinks of a config, or a terminal view. The processors run in the "
        "recording's time (a stall two hours into the run fires there, however fast the "
        "replay goes). Several files are overlaid: each source is named SOURCE@FILE-STEM, "
        "and the runs play side by side."
    )
    parser.epilog = (
        'exit codes: 0 done; 1 a sink failed (on_error = "stop"); 2 usage or config error; '
        "4 --fail-on saw an alert of that severity or higher (the first one is named on stderr)"
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE.jsonl", help="a file a file sink wrote (one or more)"
    )
    parser.add_argument(
        "--speed",
        type=_speed,
        metavar="N",
        help="replay at N times the recorded pace, or max: as fast as the sinks take it "
        "(default: the recorded pace into a view, as fast as possible into other sinks)",
    )
    parser.add_argument(
        "--config",
        metavar="CONFIG",
        help="use this config's sinks and processors; it needs no [[sources]] "
        "(default: a terminal view of the numeric fields)",
    )
    parser.add_argument(
        "--follow",
        action="store_true",
        help="once the files are read, keep feeding what is appended to them (tail -f, "
        "across rotations) until Ctrl-C; as fast as possible unless --speed is given",
    )
    parser.add_argument(
        "--alerts-only",
        action="store_true",
        help="feed no sink: run the config's [[processors]] over the recording in recorded "
        "time and print the alerts that would have fired (new, recorded, or recorded only), "
        "then a count per rule",
    )
    add_fail_arguments(parser, what="the replay goes on to the end")
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="log warnings and errors only (and no progress line on a terminal)",
    )


def _replay(args: argparse.Namespace) -> int:
    import trio

    from .._run.backtest import AlertLog
    from .._run.progress import ReplayProgress
    from .._run.recordings import find_recordings
    from .._run.replay import Replay, default_view
    from ..records import Severity

    # --alerts-only: the table is the output; the log keeps to warnings.
    setup_logging(quiet=args.quiet or args.alerts_only)
    check_fail_fast(args)
    if args.alerts_only and args.follow:
        raise ConfigError(
            "--alerts-only prints the alerts once the recording is read to its end; "
            "leave out --follow"
        )
    plugins = args.plugins
    recordings = find_recordings(args.files, missing_ok=False)
    processors: tuple[ProcessorConfig, ...] = ()
    sinks: list[SinkConfig] = []
    if args.config is not None:
        from .._config import load_config

        config = load_config(Path(args.config), plugins, replay=True)
        sinks, processors = list(config.sinks), config.processors
        if not sinks and not args.alerts_only:
            raise ConfigError(
                f"{args.config} has no [[sinks]] to replay into: add one "
                '(e.g. [[sinks]] type = "log"), or pass --alerts-only to list the alerts '
                "its processors raise"
            )
    elif not args.alerts_only:
        sinks = [default_view(recordings[0].path, plugins)]
    log = None
    if args.alerts_only:
        sinks, log = [], AlertLog()
    shown = not args.quiet and ReplayProgress.wanted(sys.stderr)
    progress = ReplayProgress(sys.stderr) if shown and _terminal_free(sinks) else None
    replay = Replay(
        recordings,
        sinks,
        plugins,
        name=", ".join(recording.path.name for recording in recordings),
        speed=math.inf if args.alerts_only else args.speed,
        install_signal_handlers=True,
        processors=processors,
        fail_on=None if args.fail_on is None else Severity(args.fail_on),
        fail_fast=args.fail_fast,
        follow=args.follow,
        alert_log=log,
        progress=progress,
    )
    # A Replay runs like an Engine (config.sinks, run, request_stop, result):
    # the Qt plugin's main loop hosts it the same way.
    if not plugins.main_loop(replay):
        trio.run(replay.run)
    result = replay.result
    if result is None:
        print("mux: error: the replay did not finish", file=sys.stderr)
        return ExitCode.SINK_FAILED
    if log is not None:
        from .alert_table import alert_table

        sys.stdout.write(alert_table(log))
        sys.stdout.flush()
    report_failing_alert(result.exit_code, replay.fail_on)
    return result.exit_code


def _terminal_free(sinks: list[SinkConfig]) -> bool:
    """Whether no sink draws on the terminal (the progress line would scribble over it)."""
    return not any(sink.type == "tui" for sink in sinks)


COMMAND = Command(
    "replay",
    _add_arguments,
    _replay,
    "feed recorded runs (what file sinks wrote) through sinks, side by side",
    BUILTIN,
)
