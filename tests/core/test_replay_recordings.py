"""Recordings side by side, a sink's history, following a file, a replay's processors
and ``--fail-on`` / ``--fail-fast`` in ``mux replay``."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

import mux_core.testing
import mux_proc
from mux_core._config import SinkConfig, parse_config
from mux_core._plugins import PluginManager
from mux_core._run.engine import Engine
from mux_core._run.recordings import RecordingReader, find_recordings
from mux_core._run.replay import Replay
from mux_core.errors import ConfigError
from mux_core.records import Alert, Event, Record, Severity, State, Status, encode_jsonl
from mux_core.sink import Overflow
from mux_core.testing import CollectingSink, CollectingSinkOptions, Collectors

T0 = 1_764_250_000.0


def run_events(source: str, steps: range, *, at: float, every: float = 1.0) -> list[Record]:
    """A recorded run: connected, one metric per step, stopped."""
    records: list[Record] = [Status(source, "sse", State.CONNECTED, 1, None, "", at)]
    for seq, step in enumerate(steps, start=1):
        data = {"step": step, "loss": 1.0 / (step + 1)}
        records.append(Event(source, "sse", "metric", str(seq), data, at + seq * every, seq))
    end = at + (len(steps) + 1) * every
    records.append(Status(source, "sse", State.STOPPED, 1, None, "", end))
    return records


def _what(record: Record) -> object:
    if type(record) is Event:
        return record.data["step"]
    assert type(record) is Status
    return record.state.value


def plugins(*extra: Any) -> PluginManager:
    manager = PluginManager()
    manager.register(mux_core.testing, name="testing")
    for module in extra:
        manager.register(module, name=module.__name__)
    return manager


def collect(name: str = "collect") -> SinkConfig:
    return SinkConfig(name, "collect", CollectingSinkOptions(), Overflow.BLOCK, 64, "stop", None)


# -- several recordings --------------------------------------------------------------


async def test_two_recordings_play_side_by_side_with_their_sources_told_apart(
    tmp_path: Path,
) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(encode_jsonl(run_events("train", range(3), at=T0)))
    # recorded a day later, twice as fast: interleaved by time since each one's start
    b.write_bytes(encode_jsonl(run_events("train", range(5), at=T0 + 86_400, every=0.5)))
    before = a.read_bytes(), b.read_bytes()
    recordings = find_recordings([str(a), str(b)], missing_ok=False)
    replay = Replay(recordings, [collect()], plugins(), name="a.jsonl, b.jsonl")
    await replay.run()
    sink = CollectingSink.instances["collect"]
    assert sink.context.recordings == ("a", "b")
    assert [(s.name, s.recording) for s in sink.context.sources] == [
        ("train@a", "a"),
        ("train@b", "b"),
    ]
    assert sink.context.replay is replay.control
    shown = [(r.source, _what(r)) for r in sink.records]
    assert shown == [
        ("train@a", "connected"),
        ("train@b", "connected"),
        ("train@b", 0),
        ("train@a", 0),
        ("train@b", 1),
        ("train@b", 2),
        ("train@a", 1),
        ("train@b", 3),
        ("train@b", 4),
        ("train@a", 2),
        ("train@b", "stopped"),
        ("train@a", "stopped"),
    ]
    assert (a.read_bytes(), b.read_bytes()) == before  # the recordings stay as recorded


def test_recordings_from_globs_keep_rotations_together_and_labels_unique(
    tmp_path: Path,
) -> None:
    for name in ("x/train.jsonl", "x/train.jsonl.1", "y/train.jsonl", "y/other.jsonl.zst"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"")
    found = find_recordings(
        [str(tmp_path / "x" / "*"), str(tmp_path / "y/*.jsonl*")], missing_ok=False
    )
    assert [(r.label, [p.name for p in r.files]) for r in found] == [
        ("x/train", ["train.jsonl.1", "train.jsonl"]),
        ("other", ["other.jsonl.zst"]),
        ("y/train", ["train.jsonl"]),
    ]
    with pytest.raises(ConfigError, match=r"nope\.jsonl: no such file to replay"):
        find_recordings([str(tmp_path / "nope.jsonl")], missing_ok=False)
    assert find_recordings([str(tmp_path / "nope*.jsonl")], missing_ok=True) == []


# -- following a file ----------------------------------------------------------------


def test_a_followed_file_is_read_across_half_lines_rotations_and_truncation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "live.jsonl"
    lines = encode_jsonl(run_events("train", range(6), at=T0)).splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]) + lines[2][:10])  # the writer is mid-line
    (recording,) = find_recordings([str(path)], missing_ok=False)
    reader = RecordingReader(recording, follow=True)
    seqs: list[int | None] = []

    def read() -> None:
        seqs.extend(getattr(r, "seq", None) for r in reader.read())

    read()
    assert seqs == [None, 1]  # the half line waits for its end
    with path.open("ab") as file:
        file.write(lines[2][10:] + lines[3])
    read()
    assert seqs == [None, 1, 2, 3]
    # a rotation: the writer appends one more line to the old file, renames it, starts anew
    with path.open("ab") as file:
        file.write(lines[4])
    os.replace(path, tmp_path / "live.jsonl.1")
    path.write_bytes(lines[5])
    read()
    assert seqs == [None, 1, 2, 3, 4, 5]
    path.write_bytes(b"")  # cut short (copy and truncate) and written again: from its start
    read()
    path.write_bytes(lines[6])
    read()
    assert seqs == [None, 1, 2, 3, 4, 5, 6]
    assert not reader.done and reader.bad_lines == 0
    reader.close()


async def test_replay_follow_feeds_what_is_appended_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    records = run_events("train", range(20), at=T0)
    path.write_bytes(encode_jsonl(records[:5]))
    collectors = Collectors()
    manager = PluginManager()
    manager.register(collectors, name="collectors")
    replay = Replay([path], [collect()], manager, name="live.jsonl", follow=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(replay.run)
        sink = await collectors.sink("collect")
        await sink.wait_for(lambda s: len(s.records) == 5)
        with path.open("ab") as file:
            file.write(encode_jsonl(records[5:]))
        await sink.wait_for(lambda s: len(s.records) == len(records))
        replay.request_stop("test done")
    assert sink.records == records
    assert replay.result is not None and replay.result.exit_code == 0
    assert replay.result.reason == "test done"


# -- history in a live run -----------------------------------------------------------


async def test_a_sink_with_history_gets_the_recording_first_then_the_live_records(
    tmp_path: Path,
) -> None:
    recorded = tmp_path / "runs" / "train.jsonl"
    recorded.parent.mkdir()
    past = run_events("train", range(1000), at=T0)
    recorded.write_bytes(encode_jsonl(past))
    collectors = Collectors()
    manager = PluginManager()
    manager.register(collectors, name="collectors")
    config = parse_config(
        '[[sources]]\nname = "train"\ntransport = "scripted"\nscript = ["events:5", "end"]\n'
        f'[[sinks]]\ntype = "collect"\nname = "panel"\nhistory = "{tmp_path}/runs/*.jsonl"\n'
        '[[sinks]]\ntype = "collect"\nname = "plain"\n',
        path="monitor.toml",
        plugins=manager,
    )
    assert config.sinks[0].history == (f"{tmp_path}/runs/*.jsonl",)
    engine = Engine(config, manager)
    with trio.fail_after(20):
        result = await engine.run()
    assert result.exit_code == 0
    panel, plain = collectors.sinks["panel"], collectors.sinks["plain"]
    assert panel.context.recordings == ("train",)
    assert panel.records[: len(past)] == past  # the recording, as recorded, first
    live = panel.records[len(past) :]
    assert live == plain.records  # then exactly what the run received
    assert [r.seq for r in live if type(r) is Event] == [1, 2, 3, 4, 5]


async def test_several_history_files_are_told_apart_and_a_missing_one_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a.jsonl").write_bytes(encode_jsonl(run_events("train", range(2), at=T0)))
    (tmp_path / "b.jsonl").write_bytes(encode_jsonl(run_events("train", range(2), at=T0 + 9)))
    collectors = Collectors()
    manager = PluginManager()
    manager.register(collectors, name="collectors")
    history = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), str(tmp_path / "c.jsonl")]
    config = parse_config(
        '[[sources]]\nname = "train"\ntransport = "scripted"\nscript = ["end"]\n'
        f'[[sinks]]\ntype = "collect"\nhistory = {history!r}\n'.replace("'", '"'),
        path="monitor.toml",
        plugins=manager,
    )
    with trio.fail_after(20):
        await Engine(config, manager).run()
    sink = collectors.sinks["collect"]
    assert sink.context.recordings == ("a", "b")
    assert [r.source for r in sink.records[:8]] == ["train@a"] * 4 + ["train@b"] * 4, [
        (r.source, type(r).__name__) for r in sink.records
    ]
    assert {r.source for r in sink.records[8:]} == {"train"}
    assert f"{tmp_path / 'c.jsonl'}: no such file to replay; going on without it" in caplog.text


def test_history_must_be_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"monitor.toml:6: sinks\[0\].history: expected a"):
        parse_config(
            '[[sources]]\nname = "a"\ntransport = "scripted"\n'
            '[[sinks]]\ntype = "collect"\nhistory = 3\n',
            path="monitor.toml",
            plugins=plugins(),
        )


# -- a replay's processors, --fail-on, --fail-fast -----------------------------------


def _restarted_run(path: Path) -> list[Record]:
    """Steps 0..9, then the trainer starts over at 0: the live run's restart alert
    recorded right after the event that raised it."""
    records = run_events("train", range(10), at=T0)[:-1]
    again = run_events("train", range(5), at=T0 + 20)[1:]
    again = [
        Event(r.source, r.transport, r.event, r.id, r.data, r.received_at, r.seq + 10)
        if type(r) is Event
        else r
        for r in again
    ]
    recorded_alert = Alert(
        "train", "sse", "restart", Severity.WARNING, "step went back", 11, T0 + 21.5
    )
    records = [*records, again[0], recorded_alert, *again[1:]]
    path.write_bytes(encode_jsonl(records))
    return records


SINK_ONLY = '[[processors]]\ntype = "restart"\nsources = ["train"]\n\n[[sinks]]\ntype = "collect"\n'


async def test_a_sink_only_config_runs_its_processors_on_the_recording(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    _restarted_run(path)
    manager = plugins(mux_proc)
    config = parse_config(SINK_ONLY, path="sinks.toml", plugins=manager, replay=True)
    assert config.sources == ()
    replay = Replay(
        [path],
        config.sinks,
        manager,
        name="run.jsonl",
        processors=config.processors,
        fail_on=Severity.WARNING,
    )
    result = await replay.run()
    assert result.exit_code == 4
    sink = CollectingSink.instances["collect"]
    alerts = [r for r in sink.records if type(r) is Alert]
    # the replay's own restart alert, not a second, recorded copy of it
    assert [(a.rule, a.seq) for a in alerts] == [("restart", 11)]
    # stamped with the recorded time of the event that raised it, not today's
    assert alerts[0].at == T0 + 21
    assert replay.fail_on is not None and replay.fail_on.first is not None
    assert replay.fail_on.first.step == 0
    with pytest.raises(ConfigError, match="no sources"):
        parse_config(SINK_ONLY, path="sinks.toml", plugins=manager)  # mux run still needs them


def _mux(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mux_core", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=dict(os.environ, COLUMNS="120"),
        check=False,
    )


def test_cli_replay_with_a_sink_only_config_names_the_alert_behind_exit_4(
    tmp_path: Path,
) -> None:
    records = _restarted_run(tmp_path / "run.jsonl")
    (tmp_path / "sinks.toml").write_text(
        '[[processors]]\ntype = "restart"\n\n'
        f'[[sinks]]\ntype = "file"\npath = "{tmp_path / "out.jsonl"}"\n'
    )
    result = _mux(
        "replay", "run.jsonl", "--config", "sinks.toml", "--fail-on", "warning", cwd=tmp_path
    )
    assert result.returncode == 4, result.stderr
    line = "mux: exit 4: --fail-on warning: train: restart (warning) at step 0: "
    assert line in result.stderr
    (found,) = [x for x in result.stderr.splitlines() if x.startswith("mux: exit 4")]
    assert found.endswith("[seq 11]")
    written = (tmp_path / "out.jsonl").read_bytes().splitlines()
    assert len(written) == len(records)  # every event, the one restart alert
    (tmp_path / "fast.toml").write_text(
        (tmp_path / "sinks.toml").read_text().replace("out.jsonl", "fast.jsonl")
    )
    fast = _mux(
        "replay",
        "run.jsonl",
        "--config",
        "fast.toml",
        "--fail-on",
        "warning",
        "--fail-fast",
        cwd=tmp_path,
    )
    assert fast.returncode == 4, fast.stderr
    assert "stopping: --fail-fast: train: restart (warning) at step 0" in fast.stderr
    out = (tmp_path / "fast.jsonl").read_bytes().splitlines()
    assert b'"rule":"restart"' in out[-1]  # everything up to the alert, then nothing
    assert len(out) == 12  # connected, steps 0..9, the alert (just before step 0 again)
    usage = _mux("replay", "run.jsonl", "--fail-fast", cwd=tmp_path)
    assert usage.returncode == 2 and "add --fail-on SEVERITY" in usage.stderr


async def test_cli_follow_goes_on_with_appended_lines_until_ctrl_c(tmp_path: Path) -> None:
    live = tmp_path / "live.jsonl"
    records = run_events("train", range(6), at=T0)
    live.write_bytes(encode_jsonl(records[:3]))
    out = tmp_path / "out.jsonl"
    (tmp_path / "out.toml").write_text(
        f'[[sinks]]\ntype = "file"\npath = "{out}"\nflush_interval = 0.05\n'
    )
    command = [sys.executable, "-m", "mux_core", "replay", "--follow", str(live)]
    command += ["--config", str(tmp_path / "out.toml")]

    async def lines_written(count: int) -> None:
        with trio.fail_after(15):
            while True:
                if out.exists() and out.read_bytes().count(b"\n") >= count:
                    return
                await trio.sleep(0.02)

    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(trio.run_process, command, check=False, stderr=subprocess.DEVNULL)
        )
        await lines_written(3)
        with live.open("ab") as file:
            file.write(encode_jsonl(records[3:]))
        await lines_written(len(records))
        process.send_signal(2)  # Ctrl-C
        with trio.fail_after(15):
            code = await process.wait()
    assert code == 0
    assert out.read_bytes() == encode_jsonl(records)
