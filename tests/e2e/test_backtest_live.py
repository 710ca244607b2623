"""A backtest raises exactly the alerts a live run with the same rules raised.

A real ``mux run`` subprocess reads a fake SSE server of this process whose
trainer sends a NaN episode, a divergence, a restart and a silence longer
than the ``stall`` rule allows; the ``restart``, ``nonfinite``, ``diverge``
and ``stall`` processors write their alerts into the file sink's recording.
Backtesting that recording with the same config gives the same alerts --
same rule, severity, seq and message -- every one of them matched with its
recorded copy (origin ``recorded``), none new, none left only recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from mux_core._config import load_config
from mux_core._plugins import PluginManager
from mux_core._run.backtest import RECORDED, AlertLog
from mux_core._run.replay import Replay
from mux_core.testing import FakeSseServer, serve_sse
from tests.helpers.e2e import (
    FAST_RETRY,
    MUX,
    file_sink_toml,
    read_jsonl_strict,
    source_toml,
    start_mux,
    stderr_of,
    terminate,
    wait_for_file,
    write_config,
)

RULES = """
[[processors]]
type = "restart"

[[processors]]
type = "nonfinite"

[[processors]]
type = "diverge"
warmup = 3
patience = 2

[[processors]]
type = "stall"
field = "step"
seconds = 1
"""


async def _publish(server: FakeSseServer, losses: list[tuple[int, str]]) -> None:
    for step, loss in losses:
        await server.publish(f'{{"step": {step}, "loss": {loss}}}')


def _alerts(records: list[dict[str, Any]]) -> list[tuple[str, str, int | None, str]]:
    return [
        (r["rule"], r["severity"], r["seq"], r["message"]) for r in records if r["type"] == "alert"
    ]


def _rules(records: list[dict[str, Any]]) -> set[str]:
    return {rule for rule, *_ in _alerts(records)}


async def test_a_backtest_raises_the_alerts_the_live_run_wrote(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    async with serve_sse() as server, trio.open_nursery() as nursery:
        toml = FAST_RETRY + source_toml("train", "sse", server.url) + file_sink_toml(out) + RULES
        config = write_config(tmp_path / "monitor.toml", toml)
        process = await start_mux(nursery, config)

        def connected(records: list[dict[str, Any]]) -> bool:
            return any(r.get("state") == "connected" for r in records)

        await wait_for_file(out, connected, process=process)
        good = [(step, str(1.0 / step)) for step in range(1, 11)]
        nan = [(11, "NaN"), (12, "NaN"), (13, "0.09")]
        diverging = [(14, "5.0"), (15, "5.0"), (16, "5.0"), (17, "0.08"), (18, "0.08")]
        restarted = [(1, "0.9"), (2, "0.8")]
        await _publish(server, good + nan + diverging + restarted)
        # the trainer goes quiet: the stall rule (1 s) fires in the live run
        records = await wait_for_file(out, lambda r: "stall" in _rules(r), process=process)
        assert {"restart", "nonfinite", "diverge"} <= _rules(records), records
        await _publish(server, [(3, "0.7"), (4, "0.6")])
        await wait_for_file(
            out, lambda r: any(a[:2] == ("stall", "info") for a in _alerts(r)), process=process
        )
        assert await terminate(process, config) == 0, stderr_of(config)
    recorded = _alerts(read_jsonl_strict(out))
    assert sorted(rule for rule, *_ in recorded if rule != "stall") == [
        "diverge",
        "diverge",
        "nonfinite",
        "nonfinite",
        "restart",
    ]

    manager = PluginManager()
    manager.load_entry_points()  # the config's sse source and file sink, as mux run loaded them
    rules = load_config(config, manager, replay=True).processors
    log = AlertLog()
    result = await Replay([out], [], manager, name="events", processors=rules, alert_log=log).run()
    assert result.exit_code == 0
    backtested = [
        (e.alert.rule, e.alert.severity.value, e.alert.seq, e.alert.message) for e in log.entries
    ]
    assert backtested == recorded
    assert {entry.origin for entry in log.entries} == {RECORDED}

    # the same through the command line: nothing new, nothing only recorded
    done = await trio.run_process(
        [*MUX, "replay", str(out), "--config", str(config), "--alerts-only"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = done.stdout.decode().split("\n\n")[1].splitlines()
    assert summary[0].split() == ["rule", "raised", "new", "recorded", "recorded", "only"]
    for line in summary[1:]:
        _, raised, new, again, only = line.split()
        assert (new, only) == ("0", "0") and raised == again, line
