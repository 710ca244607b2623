"""``mux replay``: a recorded run fed through sinks, rotated files first, bad lines skipped."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing

import mux_core.testing
from mux_core._config import SinkConfig, parse_config
from mux_core._plugins import PluginManager
from mux_core._run.replay import Replay, replay_files
from mux_core.errors import ConfigError
from mux_core.records import (
    Event,
    State,
    Status,
    encode_jsonl,
)
from mux_core.sink import Overflow
from mux_core.testing import CollectingSink, CollectingSinkOptions

T0 = 1_764_250_000.0


def events(first: int, count: int, *, source: str = "train", at: float = T0) -> list[Event]:
    return [
        Event(source, "sse", "metric", str(i), {"step": i, "loss": 1.0 / i}, at + i * 0.1, i)
        for i in range(first, first + count)
    ]


def write(path: Path, records: list[Any], *, garbage: dict[int, bytes] | None = None) -> None:
    lines = encode_jsonl(records).splitlines(keepends=True)
    for index, line in sorted((garbage or {}).items()):
        lines.insert(index, line)
    path.write_bytes(b"".join(lines))


def plugins() -> PluginManager:
    manager = PluginManager()
    manager.register(mux_core.testing, name="testing")
    return manager


def collect(name: str = "collect", **options: Any) -> SinkConfig:
    return SinkConfig(
        name, "collect", CollectingSinkOptions(**options), Overflow.LATEST, 16, "stop", None
    )


def test_rotated_files_come_oldest_first(tmp_path: Path) -> None:
    base = tmp_path / "events.jsonl"
    for name in ("events.jsonl", "events.jsonl.1", "events.jsonl.2", "events.jsonl.4"):
        (tmp_path / name).write_bytes(b"")
    # .4 is not part of the chain: .3 is missing
    assert replay_files(base) == [tmp_path / "events.jsonl.2", tmp_path / "events.jsonl.1", base]
    with pytest.raises(ConfigError, match="no such file to replay"):
        replay_files(tmp_path / "nope.jsonl")


async def test_every_record_reaches_every_sink_in_order_even_a_latest_one(
    tmp_path: Path,
) -> None:
    base = tmp_path / "events.jsonl"
    status = Status("train", "sse", State.CONNECTED, 1, None, "", T0)
    write(tmp_path / "events.jsonl.2", [status, *events(1, 3000)])
    write(tmp_path / "events.jsonl.1", events(3001, 3000))
    write(base, events(6001, 3000))
    # a tiny buffer and the "latest" policy: a live run would drop; a replay waits
    replay = Replay(replay_files(base), [collect()], plugins(), name="events.jsonl")
    result = await replay.run()
    sink = CollectingSink.instances["collect"]
    assert sink.records[0] == status
    seqs = [r.seq for r in sink.records[1:] if type(r) is Event]
    assert seqs == list(range(1, 9001))
    assert sink.closed
    assert (result.exit_code, result.records, result.bad_lines) == (0, 9001, 0)
    assert result.reason == "the recording is done"


async def test_bad_lines_are_reported_with_their_line_number_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = tmp_path / "events.jsonl"
    write(
        base,
        events(1, 6),
        garbage={2: b"{not json\n", 4: b'{"type": "event", "source": "x"}\n', 5: b"[1, 2]\n"},
    )
    result = await Replay([base], [collect()], plugins(), name="events").run()
    records = CollectingSink.instances["collect"].records
    assert [r.seq for r in records if type(r) is Event] == [1, 2, 3, 4, 5, 6]
    assert result.bad_lines == 3 and result.exit_code == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert [w.split(": skipped")[0] for w in warnings] == [f"{base}:3", f"{base}:5", f"{base}:6"]


async def test_speed_replays_at_n_times_the_recorded_pace(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    base = tmp_path / "events.jsonl"
    # four events 10 s apart (received_at), a status 5 s after the first
    records: list[Any] = [*events(1, 1, at=T0 - 0.1)]
    records.append(Status("train", "sse", State.DISCONNECTED, 1, 1.0, "", T0 + 5.0))
    for i, gap in ((2, 10.0), (3, 20.0), (4, 30.0)):
        records.append(Event("train", "sse", "metric", str(i), {}, T0 + gap, i))
    write(base, records)

    arrived: list[float] = []

    class Clocked(CollectingSink):
        async def write(self, batch: Any) -> None:
            arrived.extend(trio.current_time() for _ in batch)
            await super().write(batch)

    manager = plugins()

    class Plugin:
        @mux_core.hookimpl
        def mux_register_sinks(self, register: Any) -> None:
            register("clocked", Clocked)

    manager.register(Plugin(), name="clocked")
    sink = SinkConfig("c", "clocked", CollectingSinkOptions(), Overflow.BLOCK, 16, "stop", None)
    start = trio.current_time()
    await Replay([base], [sink], manager, name="events", speed=4.0).run()
    offsets = [round(at - start, 2) for at in arrived]
    assert offsets == [0.0, 1.25, 2.5, 5.0, 7.5]


async def test_a_file_sink_writing_into_the_replayed_file_is_refused(tmp_path: Path) -> None:
    import mux_file

    base = tmp_path / "events.jsonl"
    write(base, events(1, 3))
    manager = plugins()
    manager.register(mux_file, name="file")
    config = parse_config(
        '[[sources]]\nname = "a"\ntransport = "scripted"\nscript = []\n'
        f'[[sinks]]\ntype = "file"\npath = "{base}"\n',
        path="monitor.toml",
        plugins=manager,
    )
    with pytest.raises(ConfigError, match="the file being replayed"):
        Replay([base], config.sinks, manager, name="events")
    assert base.read_bytes() == encode_jsonl(events(1, 3))


async def test_a_failing_sink_stops_the_replay_with_exit_code_1(tmp_path: Path) -> None:
    base = tmp_path / "events.jsonl"
    write(base, events(1, 5000))
    result = await Replay([base], [collect(fail_after=10)], plugins(), name="events").run()
    assert result.exit_code == 1
    assert result.reason == "sink 'collect' failed"
    assert result.records < 5000  # it stopped reading


def _mux(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="120")
    return subprocess.run(
        [sys.executable, "-m", "mux_core", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
        check=False,
    )


def test_cli_replays_into_a_terminal_view_of_the_numeric_fields(tmp_path: Path) -> None:
    base = tmp_path / "events.jsonl"
    write(tmp_path / "events.jsonl.1", events(1, 50))
    write(base, events(51, 50), garbage={7: b"oops\n"})
    result = _mux("replay", "events.jsonl", "--speed", "max", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "loss" in result.stdout
    assert "0.01" in result.stdout  # the last loss, 1/100
    assert "events.jsonl:8: skipped" in result.stderr
    assert "replay done: 100 records from events.jsonl.1, events.jsonl (1 bad lines skipped)" in (
        result.stderr
    )


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    missing = _mux("replay", "nope.jsonl", cwd=tmp_path)
    assert missing.returncode == 2
    assert "mux: error: nope.jsonl: no such file to replay" in missing.stderr
    write(tmp_path / "events.jsonl", events(1, 2))
    slow = _mux("replay", "events.jsonl", "--speed", "0", cwd=tmp_path)
    assert slow.returncode == 2 and "--speed" in slow.stderr
    config = tmp_path / "bad.toml"
    config.write_text("[[sinks]]\ntype = 3\n")
    bad = _mux("replay", "events.jsonl", "--config", str(config), cwd=tmp_path)
    assert bad.returncode == 2 and "bad.toml" in bad.stderr


def test_replay_help_lists_options_and_exit_codes(tmp_path: Path) -> None:
    result = _mux("replay", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for text in ("--speed", "--config", "--follow", "--fail-fast", "exit codes", "rotated"):
        assert text in result.stdout


def test_the_jsonl_lines_stay_what_the_file_sink_writes(tmp_path: Path) -> None:
    # the decoder replay uses reads exactly the keys of docs/architecture.md (Records)
    line = (
        b'{"type":"event","source":"train-sse","transport":"sse","event":"metric","id":"42",'
        b'"data":{"step":42,"loss":0.31},"received_at":1764250000.123,"seq":17}\n'
    )
    base = tmp_path / "events.jsonl"
    base.write_bytes(line)

    async def main() -> list[Any]:
        await Replay([base], [collect()], plugins(), name="e").run()
        return CollectingSink.instances["collect"].records

    (record,) = trio.run(main)
    assert type(record) is Event
    assert (record.source, record.id, record.seq, record.received_at) == (
        "train-sse",
        "42",
        17,
        1764250000.123,
    )
    assert record.data == {"step": 42, "loss": 0.31}
    assert orjson.loads(encode_jsonl([record])) == orjson.loads(line)


def test_replay_into_the_qt_panel_keeps_every_point_and_waits_for_the_window(
    tmp_path: Path,
) -> None:
    pytest.importorskip("PySide6")
    pytest.importorskip("pyqtgraph")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    import mux_qt
    from mux_qt.options import QtOptions
    from mux_qt.panel import QtPanel, ensure_application

    ensure_application()  # before the test's QTimers: they need Qt's event dispatcher
    count = 20_000
    base = tmp_path / "events.jsonl"
    write(base, events(1, count))
    manager = plugins()
    manager.register(mux_qt, name="qt")
    options = QtOptions(plot=["loss"], x="step")
    sink = SinkConfig("qt", "qt", options, Overflow.DROP_OLDEST, 1000, "stop", None)
    replay = Replay([base], [sink], manager, name="events.jsonl", speed=math.inf)
    seen: dict[str, Any] = {}

    def close_once_drawn() -> None:
        for widget in QApplication.topLevelWidgets():
            if not (isinstance(widget, QtPanel) and widget.isVisible()):
                continue
            curve = widget.model.curve("loss", "train")
            if curve is not None and len(curve.segments[-1]) == count:
                widget.refresh()
                seen["title"] = widget.windowTitle()
                seen["points"] = len(curve.segments[-1].column(2))
                seen["finished_before_close"] = replay.result is not None
                seen["age"] = widget.cell_text("train", "Last event")
                widget.close()

    watcher = QTimer()
    watcher.timeout.connect(close_once_drawn)
    watcher.start(20)
    deadline = QTimer()
    deadline.setSingleShot(True)
    deadline.timeout.connect(lambda: replay.request_stop("test deadline"))
    deadline.start(20_000)
    try:
        assert manager.main_loop(replay) is True
    finally:
        watcher.stop()
        deadline.stop()
    assert replay.result is not None
    assert replay.result.reason == "window closed" and replay.result.exit_code == 0
    assert seen["points"] == count  # every event: a 1,000-record buffer, and nothing dropped
    assert seen["finished_before_close"] is False  # the window stayed open after the file
    assert seen["title"] == "mux — events.jsonl"
    assert seen["age"].endswith("s ago") and "h ago" not in seen["age"]  # the recording's time
