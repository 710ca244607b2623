"""The ``above`` processor: an alert while a data field is above a limit.

A third party's processor, written against the public API only: it declares
the one field it reads (:class:`mux_core.FieldReader`, so payloads kept as
bytes are not decoded for it), keeps its state per source (mux makes one
instance per source) and fires once per episode: an alert when the field
goes above ``limit``, an ``info`` alert when it is back.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import attrs

from mux_core import Batch, Event, FieldReader, ProcessorContext, Record

__all__ = ["AboveOptions", "AboveProcessor"]


def _finite(_instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number, got {value!r}")


@attrs.frozen(kw_only=True)
class AboveOptions:
    """The keys of a ``[[processors]] type = "above"`` table."""

    #: The data field to watch.
    field: str
    #: Alert while the field is above this.
    limit: float = attrs.field(validator=_finite)
    #: Severity of the alert: "info", "warning" or "critical".
    severity: Literal["info", "warning", "critical"] = "warning"


class AboveProcessor:
    """An alert when a data field goes above a limit, an info alert when it is back."""

    Options: ClassVar[type[AboveOptions]] = AboveOptions

    def __init__(self, options: AboveOptions, context: ProcessorContext) -> None:
        self.options = options
        self.context = context
        self.fields = FieldReader([options.field])
        self.above = False

    def process(self, batch: Batch) -> Batch:
        out: list[Record] | None = None
        options = self.options
        for record in batch:
            if type(record) is not Event:
                continue
            values = self.fields.read(record)
            value = values[0] if values else None
            if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
                continue
            if (value > options.limit) == self.above:
                continue
            self.above = not self.above
            if self.above:
                message = f"{options.field} {value:g} is above {options.limit:g}"
                alert = self.context.alert("above", options.severity, message, record.seq)
            else:
                message = f"{options.field} back to {value:g}"
                alert = self.context.alert("above", "info", message, record.seq)
            out = out if out is not None else list(batch)
            out.append(alert)
        return batch if out is None else out
