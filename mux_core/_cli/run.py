"""``mux run CONFIG``: monitor the sources of a config file."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .._plugins import Command
from .._run.exit_codes import ExitCode
from ..errors import PluginError
from ..options import positive_seconds
from . import BUILTIN, setup_logging
from .alerts import add_fail_arguments, check_fail_fast, report_failing_alert

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from .._config import Config, Parsed
    from .._config.shard import Shard
    from .._run.engine import RunResult
    from .._run.fail_on import FailOn
    from ..records import State

__all__ = ["COMMAND"]


def _shard_arg(text: str) -> Shard:
    from .._config.shard import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _workers_arg(text: str) -> int:
    if text == "auto":
        from .._run.workers import usable_cores

        return usable_cores()
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be a number >= 1 or auto, not {text!r}")
    return count


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Monitor the sources of a config file until interrupted, --for elapses or every "
        "source is terminal."
    )
    parser.epilog = (
        'exit codes: 0 clean stop; 1 a sink failed (on_error = "stop"); 2 usage or config '
        "error; 3 a source ended in failed / max_retries_exceeded; 4 --fail-on saw an alert "
        "of that severity or higher (the first one is named on stderr)"
    )
    parser.add_argument("config", metavar="CONFIG", help="a TOML config file")
    parser.add_argument(
        "--for",
        dest="duration",
        type=positive_seconds,
        metavar="SECONDS",
        help="stop cleanly after this many seconds",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument(
        "--shard",
        type=_shard_arg,
        metavar="I/N",
        help="run only the sources of shard I of N (crc32 of the source name mod N), "
        "so N collectors split one config; overrides the config's shard key",
    )
    parser.add_argument(
        "--state",
        metavar="DIR",
        help="keep each source's resume state (last id, cursor, seq) in DIR, saved once what "
        "it covers is written by every block sink, so a restarted run goes on where this one "
        "stopped; overrides the config's state_dir key",
    )
    parser.add_argument(
        "--watch",
        action="store_true",
        help="reload the config when the file changes (as on SIGHUP): only the sources and "
        "sinks that changed restart; an invalid config is logged and the running one stays",
    )
    parser.add_argument(
        "--quality-table",
        choices=("auto", "full", "summary"),
        default="auto",
        help="the table of each source's connection quality printed at the end, and the 'run "
        "finished' line: full (every source), summary (counts per state and the 10 worst "
        "sources), auto (the default: full up to 40 sources, else summary)",
    )
    parser.add_argument(
        "--workers",
        type=_workers_arg,
        default=1,
        metavar="N",
        help="run the sources in N worker processes (auto: one per usable core), the sinks, "
        "views and state in this one: every core of one machine (docs/deployment.md)",
    )
    add_fail_arguments(parser, what="the run goes on until it stops as usual")


def _raise_open_files_limit() -> None:
    """Let this run (and its workers, which inherit it) hold as many sockets as the
    system allows: the soft limit on open files up to the hard one.

    Each source holds a socket; a default soft limit of 1,024 would refuse the
    1,000th source's connection with "Too many open files", though the hard
    limit (what an administrator allows) is usually far higher. Raising the
    soft limit to it needs no privilege; past it is the administrator's call
    (docs/deployment.md).
    """
    try:
        import resource
    except ImportError:  # not a Unix
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass  # the limit stays as it was: a run with few sources does not care


def _run(args: argparse.Namespace) -> int:
    import trio

    from .._config import load_config
    from .._config.render import MaskSecrets, mask
    from .._run.engine import WATCH_INTERVAL, Engine
    from .._run.host import fewer_full_collections
    from ..records import Severity

    setup_logging(quiet=args.quiet)
    check_fail_fast(args)
    _raise_open_files_limit()
    fewer_full_collections()  # the forked workers inherit it
    plugins = args.plugins
    path = Path(args.config)
    shard: Shard | None = args.shard

    def load(on_parsed: Callable[[Parsed], None] | None = None) -> Config:
        config = load_config(path, plugins, on_parsed=on_parsed)
        return _select_shard(config, shard or config.shard)

    # --workers: the file as read here goes to the workers (none reads it again).
    parsed: list[Parsed] = []
    config = load(parsed.append if args.workers > 1 else None)
    if args.workers > 1:
        if shard is not None or config.shard is not None:
            print(
                "mux: error: --workers splits the sources by the shard function itself; "
                "use --shard (several collectors) or --workers (one machine's cores), not both",
                file=sys.stderr,
            )
            return ExitCode.USAGE
        # (popped: the run keeps no reference to it once the workers have theirs)
        return _run_workers(args, config, path, parsed.pop() if parsed else None)
    engine = Engine(
        config,
        plugins,
        duration=args.duration,
        install_signal_handlers=True,
        fail_on=None if args.fail_on is None else Severity(args.fail_on),
        fail_fast=args.fail_fast,
        state_dir=args.state,
        load_config=load,
        watch=WATCH_INTERVAL if args.watch else None,
    )
    # Secrets never reach the log: a plugin's line or a traceback may quote an option.
    with MaskSecrets(lambda: engine.config.secrets).installed():
        try:
            if not plugins.main_loop(engine):
                trio.run(engine.run)
        except PluginError as exc:  # a source or sink could not be created
            raise PluginError(mask(str(exc), engine.config.secrets)) from None
    return _finish(args, engine.result, engine.fail_on)


def _finish(args: argparse.Namespace, result: RunResult | None, fail_on: FailOn | None) -> int:
    """The end of a run: its last line, the quality table, the exit code."""
    if result is None:
        print("mux: error: the run did not finish", file=sys.stderr)
        return ExitCode.SINK_FAILED
    from .._run.quality import SUMMARY_OVER, format_quality_summary, format_quality_table

    full = args.quality_table == "full" or (
        args.quality_table == "auto" and len(result.final_states) <= SUMMARY_OVER
    )
    logging.getLogger("mux").info(
        "run finished (%s): %s", result.reason, _final_states(result.final_states, full=full)
    )
    if result.quality:
        # Each source's connection quality, as its last quality record had it.
        render = format_quality_table if full else format_quality_summary
        print("\n" + render(result.quality.values()), file=sys.stderr, end="")
    report_failing_alert(result.exit_code, fail_on)
    return result.exit_code


def _run_workers(
    args: argparse.Namespace, config: Config, path: Path, parsed: Parsed | None
) -> int:
    """``--workers N``: the same run, its sources in N processes."""
    import trio

    from .._config import load_config
    from .._config.render import MaskSecrets
    from .._run.workers import WorkerPool
    from ..records import Severity
    from .worker import forked

    pool = WorkerPool(
        config,
        args.plugins,
        workers=args.workers,
        config_path=str(path),
        duration=args.duration,
        install_signal_handlers=True,
        fail_on=None if args.fail_on is None else Severity(args.fail_on),
        fail_fast=args.fail_fast,
        state_dir=args.state,
        load_config=lambda: load_config(path, args.plugins),
        watch=args.watch,
        quiet=args.quiet,
        parsed=parsed,
    )
    del parsed  # the pool drops it once each worker has its part
    logging.getLogger("mux").info("%d workers for %d sources", args.workers, len(config.sources))
    # Before any event loop (Qt's included): the workers start as copies of this process.
    pool.fork(forked(args.plugins, pool.worker_configs()))
    with MaskSecrets(lambda: pool.config.secrets).installed():
        if not args.plugins.main_loop(pool):
            trio.run(pool.run)
    return _finish(args, pool.result, pool.fail_on)


def _final_states(states: Mapping[str, State], *, full: bool) -> str:
    """Every source's last state; or, for many, the count per state and a few names of each
    state other than stopped and ended."""
    if full:
        return ", ".join(f"{name} {state.value}" for name, state in states.items())
    by_state: dict[str, list[str]] = {}
    for name, state in states.items():
        by_state.setdefault(state.value, []).append(name)
    parts = []
    for value, names in sorted(by_state.items(), key=lambda item: -len(item[1])):
        named = "" if value in ("stopped", "ended") else f" ({_some(names)})"
        parts.append(f"{len(names)} {value}{named}")
    return f"{len(states)} sources: " + ", ".join(parts)


def _some(names: Sequence[str], shown: int = 5) -> str:
    """The first ``shown`` names, and how many more."""
    more = f", ... (+{len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _select_shard(config: Config, shard: Shard | None) -> Config:
    if shard is None:
        return config
    from .._config.shard import select_shard

    selected = select_shard(config, shard)
    logging.getLogger("mux").info(
        "shard %s: %d of the %d sources: %s",
        shard,
        len(selected.sources),
        len(config.sources),
        _some([source.name for source in selected.sources], shown=40) or "none",
    )
    return selected


COMMAND = Command("run", _add_arguments, _run, "monitor the sources of a config file", BUILTIN)
