"""``mux replay --alerts-only``: the alerts a backtest handed on, as a table and per rule.

::

    source  rule       severity  step  recorded at          into run  origin    message
    train   nonfinite  critical  1200  2025-11-27 14:20:00  0:20:00   recorded  loss is NaN ...
    train   stall      warning   3600  2025-11-27 15:10:00  1:10:00   new       stalled: ...

    rule       raised  new  recorded  recorded only
    nonfinite  2       0    2         0
    stall      2       2    0         0

``origin``: ``new`` -- these processors raise it, the recording does not
hold it; ``recorded`` -- they raise it and the live run did too (the same
rule, severity and seq); ``recorded only`` -- in the recording, not raised
by these processors. Every text from a recording is shown with its control
characters escaped.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._run.backtest import NEW, RECORDED, RECORDED_ONLY, AlertLog
from .._run.progress import clock_text, duration_text
from ..views import escape_controls

__all__ = ["alert_table"]

_HEADER = ("source", "rule", "severity", "step", "recorded at", "into run", "origin", "message")


def _step(step: float | None) -> str:
    if step is None:
        return "-"
    return f"{step:g}" if isinstance(step, float) else str(step)


def _rows(rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell, the last one left as it is."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return [
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]
        ).rstrip()
        for row in rows
    ]


def alert_table(log: AlertLog) -> str:
    """The table of every alert, then one line per rule; ends with a newline."""
    if not log.entries:
        return "no alerts: these processors raise none on this recording, and it holds none\n"
    rows: list[tuple[str, ...]] = [_HEADER]
    for entry in log.in_order():
        alert = entry.alert
        rows.append(
            (
                escape_controls(alert.source),
                escape_controls(alert.rule),
                alert.severity.value,
                _step(entry.step),
                clock_text(alert.at),
                duration_text(entry.offset),
                entry.origin,
                escape_controls(alert.message),
            )
        )
    summary: list[tuple[str, ...]] = [("rule", "raised", "new", RECORDED, RECORDED_ONLY)]
    for rule, counts in log.by_rule().items():
        raised = counts[NEW] + counts[RECORDED]
        summary.append(
            (
                escape_controls(rule),
                str(raised),
                str(counts[NEW]),
                str(counts[RECORDED]),
                str(counts[RECORDED_ONLY]),
            )
        )
    return "\n".join([*_rows(rows), "", *_rows(summary)]) + "\n"
