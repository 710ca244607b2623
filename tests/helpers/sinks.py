"""What tests of a sink share: a context built by hand, and one alert with its JSON line."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mux_core import Alert, Severity, SinkContext

#: A background starter for a sink that must not start any.
StartBackground = Callable[[Callable[[], Awaitable[Any]]], None]


def no_background(fn: Callable[[], Awaitable[Any]]) -> None:
    raise AssertionError("this sink was not expected to start a background task")


def sink_context(name: str = "t", start_background: StartBackground = no_background) -> SinkContext:
    """The context of a sink built outside a run (no sources, stop requests ignored)."""
    return SinkContext(
        name=name,
        config_name="t",
        sources=(),
        request_stop=lambda _reason: None,
        start_background=start_background,
    )


#: One critical alert, and the JSON line the file sink writes for it.
NAN_ALERT = Alert(
    "train-sse",
    "sse",
    "nonfinite",
    Severity.CRITICAL,
    "loss is NaN at step 4100",
    4101,
    1764250002.0,
)
ALERT_LINE = (
    b'{"type":"alert","source":"train-sse","transport":"sse","rule":"nonfinite",'
    b'"severity":"critical","message":"loss is NaN at step 4100","seq":4101,'
    b'"at":1764250002.0}\n'
)
