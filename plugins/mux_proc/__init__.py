"""mux_proc: the built-in processors, registered like any third-party plugin's.

Shaping: ``filter`` (by event type and a condition on data fields), ``sample``
(every Nth / at most N per second), ``select`` (keep, drop, rename fields).
Alerts that know a training run: ``stall``, ``nonfinite``, ``diverge``,
``restart``, ``throughput``. See docs/processors.md.
"""

from __future__ import annotations

from mux_core.hookspecs import Register, hookimpl

from ._condition import Condition, parse_condition
from .alerts import (
    DivergeOptions,
    DivergeProcessor,
    NonfiniteOptions,
    NonfiniteProcessor,
    RestartOptions,
    RestartProcessor,
    StallOptions,
    StallProcessor,
    ThroughputOptions,
    ThroughputProcessor,
)
from .basic import (
    FilterOptions,
    FilterProcessor,
    SampleOptions,
    SampleProcessor,
    SelectOptions,
    SelectProcessor,
)

__all__ = [
    "Condition",
    "DivergeOptions",
    "DivergeProcessor",
    "FilterOptions",
    "FilterProcessor",
    "NonfiniteOptions",
    "NonfiniteProcessor",
    "RestartOptions",
    "RestartProcessor",
    "SampleOptions",
    "SampleProcessor",
    "SelectOptions",
    "SelectProcessor",
    "StallOptions",
    "StallProcessor",
    "ThroughputOptions",
    "ThroughputProcessor",
    "parse_condition",
]


@hookimpl
def mux_register_processors(register: Register) -> None:
    register("filter", FilterProcessor)
    register("sample", SampleProcessor)
    register("select", SelectProcessor)
    register("stall", StallProcessor)
    register("nonfinite", NonfiniteProcessor)
    register("diverge", DivergeProcessor)
    register("restart", RestartProcessor)
    register("throughput", ThroughputProcessor)
