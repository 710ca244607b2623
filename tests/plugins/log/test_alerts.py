"""Alerts in the log sink: a line by severity, or the alert object in the JSON format."""

from __future__ import annotations

import logging

import orjson
import pytest

from mux_core import Alert, Event, Severity
from mux_log import LogOptions, LogSink
from tests.helpers.sinks import ALERT_LINE, NAN_ALERT, sink_context


async def test_the_log_sink_logs_alerts_by_severity(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sink = LogSink(LogOptions(level="info"), sink_context("log"))
    stall = Alert("train-ws", "ws", "stall", Severity.WARNING, "stalled", None, 1.0)
    cleared = Alert("train-ws", "ws", "stall", Severity.INFO, "events again", 7, 2.0)
    event = Event("train-sse", "sse", "metric", "1", {"loss": 1.0}, 1.0, 1)
    await sink.write([event, NAN_ALERT, stall, cleared])
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "mux.sink.log"]
    assert lines == [
        (
            logging.ERROR,
            "train-sse: ALERT nonfinite (critical): loss is NaN at step 4100 [seq 4101]",
        ),
        (logging.WARNING, "train-ws: ALERT stall (warning): stalled"),
        (logging.INFO, "train-ws: ALERT stall (info): events again [seq 7]"),
    ]


async def test_the_log_sink_json_format_writes_the_alert_object(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    sink = LogSink(LogOptions(format="json", level="warning"), sink_context("log"))
    await sink.write([NAN_ALERT, Alert("s", "t", "stall", Severity.INFO, "ok", None, 1.0)])
    (record,) = [r for r in caplog.records if r.name == "mux.sink.log"]
    assert orjson.loads(record.getMessage()) == orjson.loads(ALERT_LINE)
