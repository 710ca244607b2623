"""The csv sink writing real files in tmp_path."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from mux_jsonl_tail import CsvOptions, CsvSink

from mux_core import Event, SinkContext, State, Status

Open = Callable[..., Awaitable[CsvSink]]


def event(seq: int, data: Any, *, id_: str | None = None, kind: str = "message") -> Event:
    return Event("train", "jsonl-tail", kind, id_, data, 1700000000.25 + seq, seq)


def status(state: State, detail: str = "") -> Status:
    return Status("train", "jsonl-tail", state, 1, None, detail, 1700000000.5)


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


@pytest.fixture
async def open_sink() -> AsyncIterator[Open]:
    """``await open_sink(path=..., fields=[...])``: an opened sink, its flush task in a nursery."""
    async with trio.open_nursery() as nursery:

        def start_background(fn: Callable[[], Awaitable[Any]]) -> None:
            nursery.start_soon(fn)

        async def open_(**options: Any) -> CsvSink:
            context = SinkContext(
                name="csv",
                config_name="test",
                sources=(),
                request_stop=lambda reason: None,
                start_background=start_background,
            )
            sink = CsvSink(CsvOptions(**options), context)
            await sink.open()
            return sink

        yield open_
        nursery.cancel_scope.cancel()


async def test_header_and_rows(tmp_path: Path, open_sink: Open) -> None:
    path = tmp_path / "out" / "metrics.csv"
    sink = await open_sink(
        path=str(path), fields=["step", "loss", "opt.lr", "tags"], flush_interval=60
    )
    await sink.write(
        [
            status(State.CONNECTED),
            event(1, {"step": 1, "loss": 0.5, "opt": {"lr": 0.001}, "tags": ["a"]}, id_="1"),
            event(2, {"step": 2, "note": "no loss"}, id_="2", kind="metric"),
            event(3, "Traceback, with a comma"),
        ]
    )
    assert read_rows(path) == [
        ["received_at", "source", "event", "id", "step", "loss", "opt.lr", "tags"]
    ]
    await sink.aclose()  # flushes what the timer has not written yet
    assert read_rows(path) == [
        ["received_at", "source", "event", "id", "step", "loss", "opt.lr", "tags"],
        ["1700000001.25", "train", "message", "1", "1", "0.5", "0.001", '["a"]'],
        ["1700000002.25", "train", "metric", "2", "2", "", "", ""],
        ["1700000003.25", "train", "message", "", "", "", "", ""],
    ]


async def test_status_rows_when_asked(tmp_path: Path, open_sink: Open) -> None:
    path = tmp_path / "metrics.csv"
    sink = await open_sink(path=str(path), fields=["step"], statuses=True)
    await sink.write([status(State.SERVER_UNAVAILABLE, "waiting for x.jsonl to appear")])
    await sink.write([event(1, {"step": 1}, id_="1")])
    await sink.aclose()
    assert read_rows(path) == [
        ["received_at", "source", "event", "id", "step", "detail"],
        [
            "1700000000.5",
            "train",
            "status:server_unavailable",
            "",
            "",
            "waiting for x.jsonl to appear",
        ],
        ["1700000001.25", "train", "message", "1", "1", ""],
    ]


async def test_timer_flushes_while_running(tmp_path: Path, open_sink: Open) -> None:
    path = tmp_path / "metrics.csv"
    sink = await open_sink(path=str(path), fields=["step"], flush_interval=0.01)
    written = trio.Event()
    disk_write = sink._file.write

    def write_and_signal(text: str) -> None:  # runs in the worker thread
        disk_write(text)
        trio.from_thread.run_sync(written.set)

    sink._file.write = write_and_signal  # type: ignore[method-assign]
    await sink.write([event(1, {"step": 1})])
    with trio.fail_after(5):
        await written.wait()  # the timer, not aclose, wrote the row
    assert read_rows(path)[1][4] == "1"
    await sink.aclose()


async def test_header_written_once_when_appending(tmp_path: Path, open_sink: Open) -> None:
    path = tmp_path / "metrics.csv"
    for seq in (1, 2):
        sink = await open_sink(path=str(path), fields=["step"])
        await sink.write([event(seq, {"step": seq})])
        await sink.aclose()
    rows = read_rows(path)
    assert rows[0] == ["received_at", "source", "event", "id", "step"]
    assert [row[4] for row in rows[1:]] == ["1", "2"]


async def test_other_columns_are_refused(tmp_path: Path, open_sink: Open) -> None:
    path = tmp_path / "metrics.csv"
    path.write_bytes(b"a,b\r\n1,2\r\n")
    with pytest.raises(ValueError, match="other columns"):
        await open_sink(path=str(path), fields=["step"])
    assert path.read_bytes() == b"a,b\r\n1,2\r\n"


def test_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'id' appears twice"):
        CsvOptions(path="x.csv", fields=["id"])
    with pytest.raises(ValueError, match="'detail' appears twice"):
        CsvOptions(path="x.csv", fields=["detail"], statuses=True)
    assert CsvOptions(path="x.csv", fields=["detail"]).fields == ["detail"]
    with pytest.raises(ValueError, match="directory"):
        CsvSink.Options.check(CsvOptions(path=str(tmp_path)))
    assert CsvSink.default_overflow == "block"
