"""``mux test TESTS.toml [...]``: the tests of alert rules and processors, as pytest shows them.

Each file is read whole first (:func:`~mux_core._config.suite.load_suite`):
a problem in any of them is a list of ``FILE:LINE: key: why`` lines and
exit code 2, nothing run. Then each test runs in virtual time
(:func:`~mux_core._run.suite.run_case`) and gets one line::

    rules_test.toml::a NaN loss pages once per episode PASSED
    rules_test.toml::a stall pages after two minutes FAILED

followed, for each failure, by the test's ``FILE:LINE``, the line of the
expectation that did not hold and a diff (``-`` expected, ``+`` actual),
then a summary. Exit 0 every test passed, 1 one failed, 2 a tests file is
wrong. ``--junit-xml PATH`` writes the results for a CI's test report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .._plugins import Command
from .._run.exit_codes import ExitCode
from ..errors import ConfigError
from ..views import escape_controls
from . import BUILTIN, setup_logging

if TYPE_CHECKING:
    from .._config.suite import Case, Suite
    from .._run.suite import Outcome

__all__ = ["COMMAND", "junit_xml"]

_RULE = "=" * 24


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the tests of a tests file: given events (inline, or a slice of a recording), "
        "the processors under test (a config's, by type, or tables of their own) must raise "
        "the alerts and pass the events the test expects. Time is virtual: a two-hour "
        "silence takes no time. See docs/tuning-alerts.md."
    )
    parser.epilog = "exit codes: 0 every test passed; 1 a test failed; 2 a tests file is wrong"
    parser.add_argument("files", nargs="+", metavar="TESTS.toml", help="a tests file (one or more)")
    parser.add_argument(
        "-k", dest="keyword", metavar="TEXT", help="only the tests whose name contains TEXT"
    )
    parser.add_argument(
        "--junit-xml", metavar="PATH", help="also write the results as JUnit XML to PATH"
    )


def _name(case: Case) -> str:
    return f"{case.file}::{escape_controls(case.name)}"


def _report_failure(outcome: Outcome, out: TextIO) -> None:
    case = outcome.case
    out.write(f"{'_' * 8} {escape_controls(case.name)} {'_' * 8}\n")
    out.write(f"{case.where}: {escape_controls(case.name)}\n")
    if outcome.error is not None:
        out.write(f"  error: {escape_controls(outcome.error)}\n\n")
        return
    for mismatch in outcome.mismatches:
        where = f"{case.file}:{mismatch.line}" if mismatch.line else case.where
        out.write(f"{where}: {mismatch.what}\n")
        for line in mismatch.diff:
            out.write(f"  {escape_controls(line)}\n")
    if outcome.alerts:
        out.write("  alerts raised:\n")
        for entry in outcome.alerts:
            alert = entry.alert
            step = "-" if entry.step is None else f"{entry.step:g}"
            seq = "-" if alert.seq is None else str(alert.seq)
            out.write(
                escape_controls(
                    f"    {alert.rule} ({alert.severity.value}) step {step} seq {seq} "
                    f"at {entry.offset:g} s: {alert.message}"
                )
                + "\n"
            )
    out.write("\n")


def _summary(outcomes: list[Outcome], seconds: float) -> str:
    failed = sum(1 for outcome in outcomes if not outcome.passed)
    passed = len(outcomes) - failed
    parts = ([f"{failed} failed"] if failed else []) + [f"{passed} passed"]
    return f"{_RULE} {', '.join(parts)} in {seconds:.2f} s {_RULE}\n"


def junit_xml(outcomes: list[Outcome], seconds: float) -> bytes:
    """The results as JUnit XML (one testsuite per tests file)."""
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name="mux test", time=f"{seconds:.3f}")
    suites: dict[str, ET.Element] = {}
    for outcome in outcomes:
        case = outcome.case
        suite = suites.get(case.file)
        if suite is None:
            suite = suites[case.file] = ET.SubElement(root, "testsuite", name=case.file)
        testcase = ET.SubElement(
            suite,
            "testcase",
            classname=Path(case.file).stem,
            name=case.name,
            file=case.file,
            line=str(case.line or 0),
            time=f"{outcome.seconds:.3f}",
        )
        if outcome.error is not None:
            ET.SubElement(testcase, "error", message=outcome.error).text = outcome.error
        elif outcome.mismatches:
            text = "\n".join(
                f"{case.file}:{m.line or case.line}: {m.what}\n" + "\n".join(m.diff)
                for m in outcome.mismatches
            )
            message = "; ".join(m.what for m in outcome.mismatches)
            ET.SubElement(testcase, "failure", message=message).text = text
    for suite in suites.values():
        cases = suite.findall("testcase")
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
        suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    root.set("tests", str(len(outcomes)))
    root.set("failures", str(sum(1 for o in outcomes if o.error is None and o.mismatches)))
    root.set("errors", str(sum(1 for o in outcomes if o.error is not None)))
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _test(args: argparse.Namespace) -> int:
    from .._config.suite import load_suite
    from .._run.suite import run_case

    setup_logging(quiet=True)
    started = time.perf_counter()
    suites: list[Suite] = []
    problems: list[str] = []
    for file in args.files:
        try:
            suites.append(load_suite(file, args.plugins))
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        for problem in problems:
            print(f"mux: error: {problem}", file=sys.stderr)
        return ExitCode.USAGE
    cases = [case for suite in suites for case in suite.cases]
    if args.keyword is not None:
        cases = [case for case in cases if args.keyword in case.name]
        if not cases:
            print(f"mux: error: no test name contains {args.keyword!r}", file=sys.stderr)
            return ExitCode.USAGE
    out = sys.stdout
    outcomes = []
    for case in cases:
        outcome = run_case(case, args.plugins)
        outcomes.append(outcome)
        verdict = "PASSED" if outcome.passed else ("ERROR" if outcome.error else "FAILED")
        out.write(f"{_name(case)} {verdict}\n")
        out.flush()
    failures = [outcome for outcome in outcomes if not outcome.passed]
    if failures:
        out.write(f"\n{_RULE} FAILURES {_RULE}\n")
        for outcome in failures:
            _report_failure(outcome, out)
    seconds = time.perf_counter() - started
    out.write(_summary(outcomes, seconds))
    if args.junit_xml is not None:
        Path(args.junit_xml).write_bytes(junit_xml(outcomes, seconds))
    return ExitCode.TEST_FAILED if failures else ExitCode.OK


COMMAND = Command(
    "test",
    _add_arguments,
    _test,
    "run the tests of alert rules and processors in a tests file (virtual time)",
    BUILTIN,
)
