"""``mux run --fail-on`` names the alert behind exit code 4, and ``--fail-fast`` stops at it.

A real ``mux run`` subprocess reads a fake SSE server of this process (127.0.0.1, a free
port) whose trainer sends a NaN loss; the ``nonfinite`` processor raises the alert.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from mux_core.testing import FakeSseServer, serve_sse
from tests.helpers.e2e import (
    FAST_RETRY,
    file_sink_toml,
    source_toml,
    start_mux,
    stderr_of,
    wait_exit,
    write_config,
)

NONFINITE = '\n[[processors]]\ntype = "nonfinite"\n'

#: One process, and the same run with its source in a worker (the alert is
#: raised in the worker, --fail-on is judged in the parent).
RUNS = pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["one", "workers"])


def _config(tmp_path: Path, server: FakeSseServer) -> Path:
    toml = FAST_RETRY + source_toml("train", "sse", server.url)
    toml += file_sink_toml(tmp_path / "events.jsonl") + NONFINITE
    return write_config(tmp_path / "monitor.toml", toml)


async def _publish(server: FakeSseServer, steps: range, *, nan_at: set[int]) -> None:
    for step in steps:
        loss = "NaN" if step in nan_at else str(1.0 / (step + 1))
        await server.publish(f'{{"step": {step}, "loss": {loss}}}')


def _read(path: Path) -> list[dict[str, Any]]:
    """The whole lines of the file sink's file (Python's json: NaN is written as NaN)."""
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines(keepends=True)
    return [json.loads(line) for line in lines if line.endswith(b"\n")]


async def _wait_for(path: Path, predicate: Callable[[list[dict[str, Any]]], bool]) -> None:
    """Poll the file the mux process writes until ``predicate`` holds (15 s at most)."""
    with trio.fail_after(15):
        while True:
            if predicate(_read(path)):
                return
            await trio.sleep(0.02)


def _steps(records: list[dict[str, Any]]) -> list[int]:
    return [r["data"]["step"] for r in records if r["type"] == "event"]


@RUNS
async def test_fail_fast_stops_at_the_first_critical_alert_with_everything_written(
    tmp_path: Path, workers: tuple[str, ...]
) -> None:
    async with serve_sse() as server, trio.open_nursery() as nursery:
        config = _config(tmp_path, server)
        process = await start_mux(nursery, config, "--fail-on", "critical", "--fail-fast", *workers)
        out = tmp_path / "events.jsonl"
        await _publish(server, range(1, 6), nan_at=set())
        await _wait_for(out, lambda records: _steps(records) == [1, 2, 3, 4, 5])
        # the NaN, then the trainer goes quiet: only the alert can end this run
        await _publish(server, range(6, 7), nan_at={6})
        code = await wait_exit(process, config)
    assert code == 4, stderr_of(config)
    stderr = stderr_of(config)
    line = "mux: exit 4: --fail-on critical: train: nonfinite (critical) at step 6: "
    assert f"{line}loss is NaN at step 6 [seq 6]\n" in stderr
    records = _read(out)
    assert out.read_bytes().endswith(b"\n")
    alerts = [r for r in records if r["type"] == "alert"]
    assert [(a["rule"], a["seq"]) for a in alerts] == [("nonfinite", 6)]
    assert _steps(records) == [1, 2, 3, 4, 5, 6]  # the event that raised it is written
    assert records[-1]["type"] == "status" and records[-1]["state"] == "stopped"
    assert "--fail-fast" in records[-1]["detail"]


@RUNS
async def test_fail_on_without_fail_fast_names_the_first_alert_and_counts_the_rest(
    tmp_path: Path, workers: tuple[str, ...]
) -> None:
    async with serve_sse() as server, trio.open_nursery() as nursery:
        config = _config(tmp_path, server)
        process = await start_mux(nursery, config, "--fail-on", "warning", "--for", "60", *workers)
        out = tmp_path / "events.jsonl"
        # NaN at 3, finite at 4 (an info alert), NaN again at 5: two at or above warning
        await _publish(server, range(1, 7), nan_at={3, 5})
        await _wait_for(out, lambda records: 6 in _steps(records))
        assert process.returncode is None  # the run went on past the first alert
        process.terminate()
        code = await wait_exit(process, config)
    assert code == 4, stderr_of(config)
    line = "mux: exit 4: --fail-on warning (and 1 more): train: nonfinite (critical) at step 3"
    assert line in stderr_of(config)
    alerts = [(r["severity"], r["seq"]) for r in _read(out) if r["type"] == "alert"]
    assert alerts == [("critical", 3), ("info", 4), ("critical", 5), ("info", 6)]
