"""``mux test``: one test's input through its processors in virtual time, and the verdict.

:func:`run_case` feeds a :class:`~mux_core._config.suite.Case`'s batches to a
:class:`~mux_core._run.backtest.Backtest` in a trio run on a
:class:`~mux_core._run.backtest.VirtualClock` -- the test's seconds are the
processors' -- then lets time run on to the test's end, so a ``stall`` due
then fires. What came out is compared with what the test expects:

- ``alerts``: the alerts raised, in order, each matched on the keys its
  entry gives (``step`` is the step of the event that raised it, ``at`` the
  seconds since the test's start, ``message_contains`` a substring);
- ``alert_counts``: how many of each rule;
- ``passed``: how many events passed the chain, or the fields of each.

A mismatch carries the lines of a diff, expected (``-``) against actual
(``+``), each shown with the keys the test gave: what ``mux test`` prints
under the test's ``FILE:LINE``.
"""

from __future__ import annotations

import difflib
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import attrs

from .._config.suite import Case, ExpectedAlert
from .._plugins import PluginManager
from ..errors import PluginError
from ..records import Event, Record
from .backtest import AlertLog, Backtest, Item, LoggedAlert, VirtualClock, run_in_virtual_time

__all__ = ["Mismatch", "Outcome", "run_case"]

#: The keys an unexpected alert is shown with.
_SHOWN = ("rule", "severity", "step", "message")
#: How close two times must be to be equal (seconds).
_TIME_TOLERANCE = 1e-6


@attrs.frozen
class Mismatch:
    """One expectation that did not hold: what, where in the file, and the diff."""

    what: str
    line: int | None
    diff: tuple[str, ...]


@attrs.frozen
class Outcome:
    """How one test went."""

    case: Case
    mismatches: tuple[Mismatch, ...] = ()
    #: The test could not run (a processor could not be created): why.
    error: str | None = None
    seconds: float = 0.0
    #: Every alert raised, for the report of a failure.
    alerts: tuple[LoggedAlert, ...] = ()

    @property
    def passed(self) -> bool:
        return self.error is None and not self.mismatches


def run_case(case: Case, plugins: PluginManager) -> Outcome:
    """Run one test (blocking; no trio run may be going on in this thread)."""
    started = time.perf_counter()
    clock = VirtualClock()
    log = AlertLog()
    backtest = Backtest(case.processors, plugins, clock, log=log, step_field=case.step_field)

    def feed() -> list[Item]:
        out: list[Item] = []
        for at, records in case.batches:
            out.extend(backtest.feed([(at, 0, record) for record in records]))
        out.extend(backtest.advance(case.end))
        return out

    try:
        out = run_in_virtual_time(clock, feed)
    except PluginError as exc:
        return Outcome(case, error=str(exc), seconds=time.perf_counter() - started)
    passed = [record for _, _, record in out if type(record) is Event]
    mismatches = [
        *_alerts(case, log.raised()),
        *_counts(case, log.raised()),
        *_passed(case, passed),
    ]
    return Outcome(
        case,
        tuple(mismatches),
        seconds=time.perf_counter() - started,
        alerts=tuple(log.raised()),
    )


# -- comparing --------------------------------------------------------------------


def _alert_fields(entry: LoggedAlert) -> dict[str, Any]:
    alert = entry.alert
    return {
        "rule": alert.rule,
        "severity": alert.severity.value,
        "step": entry.step,
        "seq": alert.seq,
        "at": entry.offset,
        "message": alert.message,
    }


def _matches(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    for key, wanted in expected.items():
        if key == "message_contains":
            if wanted not in str(actual.get("message", "")):
                return False
        elif key == "at":
            got = actual.get("at")
            if not isinstance(got, int | float) or abs(got - wanted) > _TIME_TOLERANCE:
                return False
        elif not _same(wanted, actual.get(key)):
            return False
    return True


def _same(wanted: Any, got: Any) -> bool:
    if isinstance(wanted, float) and math.isnan(wanted):
        return isinstance(got, float) and math.isnan(got)
    if type(wanted) is bool or type(got) is bool:
        return type(wanted) is type(got) and wanted == got
    return bool(wanted == got)


def _value(value: Any) -> str:
    """A value as TOML writes it (``nan``, ``"text"``, ``true``); a missing one as ``(none)``."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:g}" if value == int(value) and abs(value) < 1e15 else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return _table(value, list(value))
    return str(value)


def _table(fields: dict[str, Any], keys: Sequence[str]) -> str:
    return "{" + ", ".join(f"{key} = {_value(fields.get(key))}" for key in keys) + "}"


def _shown_as(expected: ExpectedAlert | None, actual: dict[str, Any], keys: Sequence[str]) -> str:
    """``actual`` with the keys ``expected`` gives (the message for message_contains), or
    ``keys`` (all of them when empty) for one nothing was expected of."""
    if expected is None:
        return _table(actual, [k for k in keys if k in actual] if keys else list(actual))
    keys = ["message" if key == "message_contains" else key for key in expected.fields]
    return _table(actual, list(dict.fromkeys(keys)))


def _diff(expected: list[str], actual: list[str]) -> tuple[str, ...]:
    """``- expected`` / ``+ actual`` lines, those equal on both sides as ``  line``."""
    lines: list[str] = []
    matcher = difflib.SequenceMatcher(a=expected, b=actual, autojunk=False)
    for tag, a1, a2, b1, b2 in matcher.get_opcodes():
        if tag == "equal":
            lines.extend(f"  {line}" for line in expected[a1:a2])
            continue
        lines.extend(f"- {line}" for line in expected[a1:a2])
        lines.extend(f"+ {line}" for line in actual[b1:b2])
    return tuple(lines)


def _compared(
    entries: Sequence[ExpectedAlert], actual: Sequence[dict[str, Any]], keys: Sequence[str] = ()
) -> tuple[str, ...] | None:
    """None when the lists match entry by entry, else the diff."""
    if len(entries) == len(actual) and all(
        _matches(entry.fields, fields) for entry, fields in zip(entries, actual, strict=True)
    ):
        return None
    expected_lines = [_table(entry.fields, list(entry.fields)) for entry in entries]
    actual_lines = []
    for index, fields in enumerate(actual):
        entry = entries[index] if index < len(entries) else None
        if entry is not None and _matches(entry.fields, fields):
            actual_lines.append(expected_lines[index])  # equal: shown as the test wrote it
        else:
            actual_lines.append(_shown_as(entry, fields, keys))
    return _diff(expected_lines, actual_lines)


def _alerts(case: Case, raised: list[LoggedAlert]) -> list[Mismatch]:
    if case.alerts is None:
        return []
    diff = _compared(case.alerts, [_alert_fields(entry) for entry in raised], _SHOWN)
    if diff is None:
        return []
    return [Mismatch(f"alerts differ ({len(case.alerts)} expected, {len(raised)} raised)",
                     case.alerts_line, diff)]  # fmt: skip


def _counts(case: Case, raised: list[LoggedAlert]) -> list[Mismatch]:
    if case.alert_counts is None:
        return []
    got: dict[str, int] = {}
    for entry in raised:
        got[entry.alert.rule] = got.get(entry.alert.rule, 0) + 1
    expected = [f"{rule} = {count}" for rule, count in case.alert_counts.items()]
    actual = [f"{rule} = {got.get(rule, 0)}" for rule in case.alert_counts]
    if expected == actual:
        return []
    return [Mismatch("alert counts differ", case.alert_counts_line, _diff(expected, actual))]


def _passed(case: Case, events: list[Event]) -> list[Mismatch]:
    if case.passed is None:
        return []
    if isinstance(case.passed, int):
        if case.passed == len(events):
            return []
        counted = (f"- passed = {case.passed}", f"+ passed = {len(events)}")
        return [Mismatch("the events passed differ", case.passed_line, counted)]
    fields = [_data(event) for event in events]
    diff = _compared(case.passed, fields)
    if diff is None:
        return []
    what = f"the events passed differ ({len(case.passed)} expected, {len(events)} passed)"
    return [Mismatch(what, case.passed_line, diff)]


def _data(record: Record) -> dict[str, Any]:
    data = record.data if type(record) is Event else None
    return dict(data) if isinstance(data, dict) else {"data": data}
