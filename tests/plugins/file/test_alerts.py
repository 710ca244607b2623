"""Alerts in the file sink: one JSON line each, the same object as every record's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import trio

from mux_core import Alert, Severity, SinkContext, State, Status
from mux_file import FileOptions, FileSink

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


def _context(name: str, start_background: Callable[[Callable[[], Awaitable[Any]]], None]) -> Any:
    return SinkContext(
        name=name,
        config_name="t",
        sources=(),
        request_stop=lambda reason: None,
        start_background=start_background,
    )


async def test_the_file_sink_writes_an_alert_as_one_json_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    status = Status("train-sse", "sse", State.CONNECTED, 1, None, "", 1764250001.5)
    async with trio.open_nursery() as nursery:
        sink = FileSink(FileOptions(path=str(path)), _context("file", nursery.start_soon))
        await sink.open()
        await sink.write([status, NAN_ALERT])
        await sink.aclose()
        nursery.cancel_scope.cancel()
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2 and orjson.loads(lines[0])["type"] == "status"
    assert lines[1] == ALERT_LINE
