"""``mux_core.testing.backtest``: processors over records in virtual time, for plugin tests."""

from __future__ import annotations

from pathlib import Path

import pytest

import mux_core.testing
import mux_proc
from mux_core import Alert, ConfigError, Event, PluginManager, State, Status, encode_jsonl
from mux_core.testing import backtest

T0 = 1_764_250_000.0


def _run(steps: list[tuple[int, float]]) -> list[Event | Status]:
    records: list[Event | Status] = [Status("train", "sse", State.CONNECTED, 1, None, "", T0)]
    for seq, (step, at) in enumerate(steps, start=1):
        records.append(Event("train", "sse", "metric", str(seq), {"step": step}, T0 + at, seq))
    return records


def test_the_testing_kit_exports_backtest() -> None:
    assert "backtest" in mux_core.testing.__all__
    assert mux_core.testing.backtest is backtest


def test_dict_tables_a_recording_file_and_time_running_on_after_it(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(encode_jsonl(_run([(1, 1.0), (2, 2.0), (3, 3.0)])))
    plugins = PluginManager()
    plugins.register(mux_proc, name="mux_proc")
    rules = [{"type": "stall", "field": "step", "seconds": 60}]
    quiet = backtest(rules, path, plugins=plugins)
    assert [type(r) for r in quiet] == [Status, Event, Event, Event]  # the file ends: no time
    out = backtest(rules, path, plugins=plugins, until=T0 + 3600)
    (alert,) = [r for r in out if type(r) is Alert]
    assert (alert.rule, alert.at) == ("stall", T0 + 63)
    assert alert.message == "stalled: step has not increased for 60 s (last 3)"
    assert out[-1] is alert


def test_bad_tables_name_the_key() -> None:
    plugins = PluginManager()
    plugins.register(mux_proc, name="mux_proc")
    with pytest.raises(ConfigError, match=r"processors\[0\]\.secnds: unknown key 'secnds'"):
        backtest([{"type": "stall", "secnds": 5}], [], plugins=plugins)
    with pytest.raises(ConfigError, match="unknown processor type 'stal'"):
        backtest('[[processors]]\ntype = "stal"\n', [], plugins=plugins)


async def test_from_a_trio_test_it_runs_in_a_thread_of_its_own() -> None:
    out = backtest(
        '[[processors]]\ntype = "stall"\nfield = "step"\nseconds = 10\n',
        _run([(1, 1.0), (2, 100.0)]),
    )
    assert [(r.severity.value, r.at - T0) for r in out if type(r) is Alert] == [
        ("warning", 11.0),
        ("info", 100.0),
    ]
