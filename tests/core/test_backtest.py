"""Backtesting: a replay's processors run in the recording's time.

A 10-hour recorded run (written here) with a NaN episode and a 2-hour stall
replays in seconds, and the ``stall`` rule fires at the recorded moment the
trainer had been quiet for its ``seconds``; ``mux replay --alerts-only``
prints what would have fired, telling new alerts from recorded ones.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

import mux_core.testing
import mux_proc
from mux_core._config import parse_config
from mux_core._plugins import PluginManager
from mux_core._run.backtest import NEW, RECORDED, AlertLog
from mux_core._run.progress import clock_text
from mux_core._run.replay import Replay
from mux_core.payload import keep_value
from mux_core.records import Alert, Event, Record, Severity, State, Status, encode_jsonl
from mux_core.testing import CollectingSink, backtest

T0 = 1_764_250_000.0
HOURS = 10
#: The trainer goes quiet after this step, for STALL seconds.
STALL_AFTER = 4 * 3600
STALL = 2 * 3600
#: The loss is NaN for these steps.
NAN_STEPS = range(1000, 1010)

BACKTEST = """\
[[processors]]
type = "nonfinite"

[[processors]]
type = "stall"
field = "step"
seconds = 600

[[sinks]]
type = "collect"
"""


def step_times() -> dict[int, float]:
    """Each step's recorded time: one a second for 10 hours but the 2-hour stall."""
    times: dict[int, float] = {}
    at = T0
    for step in range(1, (HOURS * 3600 - STALL) + 1):
        at += STALL + 1.0 if step == STALL_AFTER + 1 else 1.0
        times[step] = at
    return times


def _at(record: Record) -> float:
    return record.received_at if isinstance(record, Event) else record.at


def long_run(path: Path, *, alerts: Sequence[Alert] = ()) -> dict[int, float]:
    """The 10-hour run (and ``alerts``, as recorded) written to ``path``; the step times."""
    times = step_times()
    records: list[Record] = [Status("train", "sse", State.CONNECTED, 1, None, "", T0)]
    for step, at in times.items():
        loss = math.nan if step in NAN_STEPS else 1.0 / step
        data = keep_value({"step": step, "loss": loss})  # NaN as the literal, as mux writes it
        records.append(Event("train", "sse", "metric", str(step), data, at, step))
    records.append(Status("train", "sse", State.STOPPED, 1, None, "", at + 1))
    records = sorted([*records, *alerts], key=_at)
    with open(path, "wb") as file:
        for start in range(0, len(records), 10_000):
            file.write(encode_jsonl(records[start : start + 10_000]))
    return times


def plugins() -> PluginManager:
    manager = PluginManager()
    manager.register(mux_core.testing, name="testing")
    manager.register(mux_proc, name="mux_proc")
    return manager


def _alerts(records: list[Any]) -> list[tuple[str, str, int | None]]:
    return [(r.rule, r.severity.value, r.seq) for r in records if type(r) is Alert]


async def test_a_ten_hour_run_backtests_in_seconds_with_the_stall_at_its_recorded_moment(
    tmp_path: Path,
) -> None:
    path = tmp_path / "run.jsonl"
    times = long_run(path)
    manager = plugins()
    config = parse_config(BACKTEST, path="backtest.toml", plugins=manager, replay=True)
    log = AlertLog()
    replay = Replay(
        [path], config.sinks, manager, name="run", processors=config.processors, alert_log=log
    )
    started = time.perf_counter()
    result = await replay.run()
    wall = time.perf_counter() - started
    print(f"backtest of {HOURS} h ({result.records} records): {wall:.2f} s wall time")
    assert result.exit_code == 0
    alerts = [r for r in CollectingSink.instances["collect"].records if type(r) is Alert]
    assert _alerts(alerts) == [
        ("nonfinite", "critical", 1000),
        ("nonfinite", "info", 1010),
        ("stall", "warning", None),
        ("stall", "info", STALL_AFTER + 1),
    ]
    # 600 recorded seconds after the last step before the silence, not 600 s from now
    assert alerts[2].at == times[STALL_AFTER] + 600
    assert alerts[2].message == "stalled: step has not increased for 600 s (last 14400)"
    assert alerts[3].message == f"step increases again after {STALL + 1:.0f} s"
    assert alerts[3].at == times[STALL_AFTER + 1]
    assert alerts[0].at == times[1000]
    # the stall alert comes in its place: after step 14400's event, before 14401's
    records = CollectingSink.instances["collect"].records
    position = records.index(alerts[2])
    before, after = records[position - 1], records[position + 1]
    assert type(before) is Event and before.seq == STALL_AFTER
    assert type(after) is Event and after.seq == STALL_AFTER + 1
    assert [(e.alert.rule, e.step, e.origin) for e in log.entries] == [
        ("nonfinite", 1000, NEW),
        ("nonfinite", 1010, NEW),
        ("stall", STALL_AFTER, NEW),
        ("stall", STALL_AFTER + 1, NEW),
    ]
    assert log.entries[2].offset == times[STALL_AFTER] + 600 - T0


def _mux(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mux_core", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if not k.startswith("MUX_")}
        | {"MUX_PLUGIN_MODULES": "mux_core.testing"},
        check=False,
    )


def test_alerts_only_prints_what_would_have_fired_new_and_recorded(tmp_path: Path) -> None:
    # The live run raised the NaN alert (recorded), and a false alarm of a rule
    # since tuned away; the stall rule is new.
    times = step_times()
    recorded = [
        Alert("train", "sse", "nonfinite", Severity.CRITICAL, "loss is NaN at step 1000", 1000,
              times[1000] + 0.01),
        Alert("train", "sse", "diverge", Severity.WARNING, "diverging: loss ...", 50,
              times[50] + 0.01),
    ]  # fmt: skip
    (tmp_path / "backtest.toml").write_text(BACKTEST)
    long_run(tmp_path / "run.jsonl", alerts=recorded)
    started = time.perf_counter()
    done = _mux("replay", "run.jsonl", "--config", "backtest.toml", "--alerts-only", cwd=tmp_path)
    print(f"mux replay --alerts-only of {HOURS} h: {time.perf_counter() - started:.2f} s")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "source", "rule", "severity", "step", "recorded", "at", "into", "run", "origin", "message"
    ]  # fmt: skip
    rows = [line.split(None, 8) for line in lines[1:6]]
    assert [(row[1], row[2], row[3]) for row in rows] == [
        ("diverge", "warning", "50"),
        ("nonfinite", "critical", "1000"),
        ("nonfinite", "info", "1010"),
        ("stall", "warning", str(STALL_AFTER)),
        ("stall", "info", str(STALL_AFTER + 1)),
    ]
    assert lines[1].endswith("diverging: loss ...")
    assert "recorded only" in lines[1] and " recorded " in lines[2] and " new " in lines[4]
    stall = lines[4]
    assert clock_text(times[STALL_AFTER] + 600) in stall
    assert " 4:10:00 " in stall  # into the run: 4 h of steps, then 600 s of silence
    assert "stalled: step has not increased for 600 s (last 14400)" in stall
    assert lines[6] == ""
    summary = [line.split() for line in lines[7:]]
    assert summary == [
        ["rule", "raised", "new", "recorded", "recorded", "only"],
        ["diverge", "0", "0", "0", "1"],
        ["nonfinite", "2", "1", "1", "0"],
        ["stall", "2", "2", "0", "0"],
    ]


def test_alerts_only_on_a_recording_without_alerts_says_so(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(
        encode_jsonl([Event("train", "sse", "metric", "1", {"step": 1, "loss": 0.5}, T0, 1)])
    )
    done = _mux("replay", "run.jsonl", "--alerts-only", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("no alerts")
    refused = _mux("replay", "run.jsonl", "--alerts-only", "--follow", cwd=tmp_path)
    assert refused.returncode == 2
    assert "leave out --follow" in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_timers_fire_in_recorded_time_at_any_pace(tmp_path: Path) -> None:
    """A paced replay (x50) fires the stall between the records it falls between, too."""
    path = tmp_path / "run.jsonl"
    records: list[Record] = [Status("train", "sse", State.CONNECTED, 1, None, "", T0)]
    for step, at in enumerate([1.0, 2.0, 8.0, 9.0], start=1):
        records.append(Event("train", "sse", "metric", str(step), {"step": step}, T0 + at, step))
    path.write_bytes(encode_jsonl(records))
    manager = plugins()
    toml = BACKTEST.replace("seconds = 600", "seconds = 3")
    config = parse_config(toml, path="b.toml", plugins=manager, replay=True)
    replay = Replay(
        [path], config.sinks, manager, name="run", processors=config.processors, speed=50.0
    )
    with trio.fail_after(10):
        await replay.run()
    got = CollectingSink.instances["collect"].records
    shown: list[object] = []
    for r in got:
        if type(r) is Event:
            shown.append(r.seq)
        elif type(r) is Alert:
            shown.append((r.rule, r.severity.value, r.at - T0))
    assert shown == [1, 2, ("stall", "warning", 5.0), 3, ("stall", "info", 8.0), 4]


async def test_a_recorded_alert_written_before_its_event_is_matched_with_its_step(
    tmp_path: Path,
) -> None:
    """A restart alert goes before the event that raised it; read back, it comes before the
    backtest raises it again: one alert, marked recorded, at the step and moment of that
    event. The log lists a moment's alerts by the events that raised them, not by the
    processors' order (nonfinite appends its alert after the batch restart split)."""
    path = tmp_path / "run.jsonl"
    records: list[Record] = [Status("train", "sse", State.CONNECTED, 1, None, "", T0)]
    message = "the stream started over: step 1 after 6 (a new run segment)"
    steps = [(5, 1.0, 1.0), (6, 2.0, 1.0), (1, 3.0, 1.0), (7, 4.0, math.nan), (1, 4.0, 1.0)]
    for seq, (step, at, loss) in enumerate(steps, start=1):
        if seq == 3:  # the live run's alert, written before the event, a read of its own
            records.append(Alert("train", "sse", "restart", Severity.WARNING, message, 3, T0 + 2.5))
        data = keep_value({"step": step, "loss": loss})
        records.append(Event("train", "sse", "metric", str(seq), data, T0 + at, seq))
    path.write_bytes(encode_jsonl(records))
    manager = plugins()
    rules = '[[processors]]\ntype = "restart"\n[[processors]]\ntype = "nonfinite"\n'
    config = parse_config(rules, path="rules.toml", plugins=manager, replay=True)
    log = AlertLog()
    await Replay([path], [], manager, name="run", processors=config.processors, alert_log=log).run()
    assert [(e.alert.rule, e.alert.seq) for e in log.entries] == [
        ("restart", 3),
        ("restart", 5),
        ("nonfinite", 4),
        ("nonfinite", 5),
    ]
    assert [(e.alert.rule, e.step, e.origin, e.offset) for e in log.in_order()] == [
        ("restart", 1, RECORDED, 3.0),
        ("nonfinite", 7, NEW, 4.0),
        ("restart", 1, NEW, 4.0),
        ("nonfinite", 1, NEW, 4.0),  # finite again
    ]


def test_the_event_rate_rule_measures_in_recorded_time() -> None:
    """throughput with field = "": its timer counts events per recorded window, however fast."""
    records: list[Record] = [Status("train", "sse", State.CONNECTED, 1, None, "", T0)]
    at, seq = 0.0, 0
    while at < 400.0:  # ten events a second for 300 s, then one a second
        at = round(at + (0.1 if at < 300.0 else 1.0), 1)
        seq += 1
        records.append(Event("train", "sse", "metric", str(seq), {"step": seq}, T0 + at, seq))
    rules = (
        '[[processors]]\ntype = "throughput"\nfield = ""\ninterval = 10\nwarmup = 5\npatience = 2\n'
    )
    started = time.perf_counter()
    out = backtest(rules, records, plugins=plugins())
    print(f"throughput backtest of {len(records)} records: {time.perf_counter() - started:.2f} s")
    alerts = [(r.severity.value, r.at - T0) for r in out if type(r) is Alert]
    # the second slow window in a row ends 320 recorded seconds in
    assert alerts == [("warning", 320.0)]


BROKEN_PLUGIN = """
import attrs
from mux_core import hookimpl


@attrs.frozen
class Options:
    pass


class Broken:
    Options = Options

    def __init__(self, options, context):
        raise RuntimeError("cannot build")

    def process(self, batch):
        return batch


@hookimpl
def mux_register_processors(register):
    register("broken", Broken)
"""


def test_a_processor_that_cannot_be_created_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "mux_broken.py").write_text(BROKEN_PLUGIN)
    (tmp_path / "rules.toml").write_text('[[processors]]\ntype = "broken"\n')
    (tmp_path / "run.jsonl").write_bytes(
        encode_jsonl([Event("train", "sse", "metric", "1", {"step": 1}, T0, 1)])
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}
    env |= {"MUX_PLUGIN_MODULES": "mux_broken", "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "mux_core", "replay", "run.jsonl", "--config", "rules.toml",
         "--alerts-only"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (
        2,
        "mux: error: processor 'broken' (line 1) could not be created for source 'train': "
        "cannot build\n",
    )


def test_the_stall_clears_at_the_event_that_ended_it() -> None:
    """After a hang the trainer's next steps may come in one read: the "again" alert names
    the first of them (the event that ended the stall), with or without a field."""
    records: list[Record] = [Status("train", "sse", State.CONNECTED, 1, None, "", T0)]
    for seq, at in enumerate([1.0, 2.0, 100.0, 100.0, 100.0], start=1):
        records.append(Event("train", "sse", "metric", str(seq), {"step": seq}, T0 + at, seq))
    for field in ('field = "step"\n', ""):
        rules = f'[[processors]]\ntype = "stall"\nseconds = 10\n{field}'
        out = backtest(rules, records, plugins=plugins())
        alerts = [(r.severity.value, r.seq, r.at - T0) for r in out if type(r) is Alert]
        assert alerts == [("warning", None, 12.0), ("info", 3, 100.0)], field
