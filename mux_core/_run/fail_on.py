"""``--fail-on SEVERITY`` and ``--fail-fast``: the alerts that decide exit code 4.

:class:`FailOn` looks at every batch on its way to the sinks (``mux run``'s
fan-out, ``mux replay``'s feed), counts the alerts at or above the
threshold and keeps the first of them -- the one ``mux`` names when it
exits 4 -- with the step of the event that raised it when that event is in
the same batch. With ``fail_fast`` the first one calls ``on_first``: the
run stops cleanly there (everything received so far is written).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from ..records import Alert, Event, Record, Severity
from ..views import escape_controls

__all__ = ["FailOn", "FailingAlert"]

_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


@attrs.frozen
class FailingAlert:
    """The first alert at or above ``--fail-on``, and the step it was raised at."""

    alert: Alert
    #: The ``step`` of the event that raised it (its payload's), if known.
    step: int | float | None = None

    def describe(self) -> str:
        """One line: source, rule, severity, message, step (controls escaped)."""
        alert = self.alert
        where = f" at step {self.step}" if self.step is not None else ""
        seq = f" [seq {alert.seq}]" if alert.seq is not None else ""
        return escape_controls(
            f"{alert.source}: {alert.rule} ({alert.severity.value}){where}: {alert.message}{seq}"
        )


class FailOn:
    """Counts the alerts at or above ``threshold``; the first one is :attr:`first`."""

    def __init__(
        self,
        threshold: Severity,
        *,
        fail_fast: bool = False,
        on_first: Callable[[FailingAlert], None] = lambda _found: None,
    ) -> None:
        self.threshold = threshold
        self.fail_fast = fail_fast
        self._rank = _SEVERITY_RANK[threshold]
        self._on_first = on_first
        #: Alerts at or above the threshold seen so far.
        self.count = 0
        #: The first of them.
        self.first: FailingAlert | None = None

    def see(self, batch: Sequence[Record]) -> int | None:
        """Look at a batch on its way to the sinks (after the processors).

        Returns, when this batch holds the first alert at or above the
        threshold and ``fail_fast`` is on, how many of its records go up to
        and including that alert (a replay feeds no further); else None.
        """
        rank = self._rank
        cut = None
        for position, record in enumerate(batch):
            if type(record) is Alert and _SEVERITY_RANK[record.severity] >= rank:
                self.count += 1
                if self.first is None:
                    self.first = FailingAlert(record, _step_of(record, batch))
                    if self.fail_fast:
                        cut = position + 1
                        self._on_first(self.first)
        return cut


def _step_of(alert: Alert, batch: Sequence[Record]) -> int | float | None:
    """The ``step`` of the event of ``alert.seq`` in ``batch``, if it is there and has one."""
    if alert.seq is None:
        return None
    for record in batch:
        if type(record) is Event and record.seq == alert.seq and record.source == alert.source:
            data = record.data
            step = data.get("step") if isinstance(data, dict) else None
            if isinstance(step, int | float) and not isinstance(step, bool):
                return step
            return None
    return None
