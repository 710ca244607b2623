"""Alerts in the file sink: one JSON line each, the same object as every record's."""

from __future__ import annotations

from pathlib import Path

import orjson
import trio

from mux_core import State, Status
from mux_file import FileOptions, FileSink
from tests.helpers.sinks import ALERT_LINE, NAN_ALERT, sink_context


async def test_the_file_sink_writes_an_alert_as_one_json_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    status = Status("train-sse", "sse", State.CONNECTED, 1, None, "", 1764250001.5)
    async with trio.open_nursery() as nursery:
        sink = FileSink(FileOptions(path=str(path)), sink_context("file", nursery.start_soon))
        await sink.open()
        await sink.write([status, NAN_ALERT])
        await sink.aclose()
        nursery.cancel_scope.cancel()
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 2 and orjson.loads(lines[0])["type"] == "status"
    assert lines[1] == ALERT_LINE
