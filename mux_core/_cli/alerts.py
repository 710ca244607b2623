"""``--fail-on`` and ``--fail-fast``, as ``mux run`` and ``mux replay`` take them alike."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .._run.exit_codes import ExitCode
from ..errors import ConfigError

if TYPE_CHECKING:
    from .._run.fail_on import FailOn

__all__ = ["add_fail_arguments", "check_fail_fast", "report_failing_alert"]


def add_fail_arguments(parser: argparse.ArgumentParser, *, what: str) -> None:
    """The two options; ``what`` is what goes on after an alert ("the run goes on")."""
    parser.add_argument(
        "--fail-on",
        choices=("info", "warning", "critical"),
        metavar="SEVERITY",
        help="exit with code 4 when an alert of this severity or higher (info, warning, "
        f"critical) reached the sinks, naming the first such alert; {what} (see --fail-fast)",
    )
    parser.add_argument(
        "--fail-fast",
        action="store_true",
        help="with --fail-on: stop cleanly at the first such alert (exit 4 at once; "
        "everything received so far is written)",
    )


def check_fail_fast(args: argparse.Namespace) -> None:
    """--fail-fast needs a threshold: a usage error without --fail-on."""
    if args.fail_fast and args.fail_on is None:
        raise ConfigError(
            "--fail-fast stops at the first alert at or above --fail-on; "
            "add --fail-on SEVERITY (info, warning or critical)"
        )


def report_failing_alert(exit_code: int, fail_on: FailOn | None) -> None:
    """On exit code 4, one line on stderr naming the alert that decided it."""
    if exit_code != ExitCode.ALERT or fail_on is None or fail_on.first is None:
        return
    more = fail_on.count - 1
    also = f" (and {more} more)" if more > 0 else ""
    print(
        f"mux: exit 4: --fail-on {fail_on.threshold.value}{also}: {fail_on.first.describe()}",
        file=sys.stderr,
    )
