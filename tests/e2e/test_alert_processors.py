"""Alert processors end to end: the demo trainer, a real ``mux run``, a JSON Lines file.

The demo training run is served in this process (real servers on 127.0.0.1,
free ports); ``mux run`` is a subprocess writing the file sink's file. A
restart is the trainer process going away and a new one starting on the
same ports with its steps and ids from 1 again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from mux_demo.server import DemoEndpoints, DemoOptions, serve_demo
from tests.helpers.e2e import (
    FAST_RETRY,
    file_sink_toml,
    read_jsonl_strict,
    source_toml,
    start_mux,
    stderr_of,
    terminate,
    wait_exit,
    wait_for_file,
    write_config,
)


def _config(tmp_path: Path, endpoints: DemoEndpoints, processors: str) -> Path:
    urls = {"sse": endpoints.sse_url, "ws": endpoints.ws_url, "rest": endpoints.rest_url}
    toml = FAST_RETRY + "".join(source_toml(f"train-{t}", t, urls[t]) for t in urls)
    toml += file_sink_toml(tmp_path / "events.jsonl") + processors
    return write_config(tmp_path / "monitor.toml", toml)


def _steps(records: list[dict[str, Any]], source: str) -> list[int]:
    return [
        r["data"]["step"]
        for r in records
        if r["type"] == "event" and r["source"] == source and r["event"] == "metric"
    ]


def _alerts(records: list[dict[str, Any]], rule: str, source: str) -> list[dict[str, Any]]:
    return [
        r for r in records if r["type"] == "alert" and r["rule"] == rule and r["source"] == source
    ]


_SOURCES = ("train-sse", "train-ws", "train-rest")


async def test_a_restarted_demo_trainer_makes_one_restart_alert_per_source(
    tmp_path: Path,
) -> None:
    options = DemoOptions(sse_port=0, ws_port=0, rest_port=0, rate=50.0, seed=1)
    async with trio.open_nursery() as nursery:
        trainer = trio.CancelScope()

        async def first_run(*, task_status: trio.TaskStatus[DemoEndpoints]) -> None:
            with trainer:
                await serve_demo(options, task_status=task_status)

        endpoints: DemoEndpoints = await nursery.start(first_run)
        config = _config(
            tmp_path,
            endpoints,
            '\n[[processors]]\ntype = "restart"\n\n[[processors]]\ntype = "nonfinite"\n',
        )
        out = tmp_path / "events.jsonl"
        process = await start_mux(nursery, config)

        def far_enough(records: list[dict[str, Any]]) -> bool:
            return all(max(_steps(records, s), default=0) >= 60 for s in _SOURCES)

        await wait_for_file(out, far_enough, timeout=20)
        trainer.cancel()  # the trainer dies ...
        again = DemoOptions(
            sse_port=endpoints.sse_port,
            ws_port=endpoints.ws_port,
            rest_port=endpoints.rest_port,
            rate=50.0,
            seed=2,
        )
        second = trio.CancelScope()

        async def second_run(*, task_status: trio.TaskStatus[DemoEndpoints]) -> None:
            with second:
                await serve_demo(again, task_status=task_status)

        await nursery.start(second_run)  # ... and a new one starts on the same ports

        def new_segment(records: list[dict[str, Any]]) -> bool:
            return all(
                _alerts(records, "restart", s) and _steps(records, s)[-1] >= 40 for s in _SOURCES
            )

        await wait_for_file(out, new_segment, timeout=20)
        assert await terminate(process, config) == 0, stderr_of(config)
        second.cancel()
    records = read_jsonl_strict(out)
    for source in _SOURCES:
        (alert,) = _alerts(records, "restart", source)
        assert alert["severity"] == "warning" and alert["transport"] == source[6:]
        assert "the stream started over: step" in alert["message"]
        mine = [r for r in records if r["source"] == source]
        after = mine[mine.index(alert) + 1]
        # The alert comes right before the first event of the new run segment.
        assert after["type"] == "event" and after["seq"] == alert["seq"]
        steps = _steps(records, source)
        back = next(i for i in range(1, len(steps)) if steps[i] < steps[i - 1])
        assert steps[back] < 30 <= steps[back - 1], source
        # The event and status records keep exactly their keys (docs/architecture.md, Records).
        assert set(after) == {
            "type",
            "source",
            "transport",
            "event",
            "id",
            "data",
            "received_at",
            "seq",
        }
    assert not [r for r in records if r["type"] == "alert" and r["rule"] != "restart"]


async def test_fail_on_critical_exits_4_after_the_demo_loss_goes_nan(tmp_path: Path) -> None:
    options = DemoOptions(sse_port=0, ws_port=0, rest_port=0, rate=50.0, seed=1, nan_at=20)
    async with trio.open_nursery() as nursery:
        endpoints: DemoEndpoints = await nursery.start(serve_demo, options)
        config = _config(tmp_path, endpoints, '\n[[processors]]\ntype = "nonfinite"\n')
        process = await start_mux(nursery, config, "--fail-on", "critical", "--for", "2")
        code = await wait_exit(process, config)
        nursery.cancel_scope.cancel()
    assert code == 4, stderr_of(config)
    records = read_jsonl_strict(tmp_path / "events.jsonl")
    for source in _SOURCES:
        (alert,) = _alerts(records, "nonfinite", source)
        assert alert["severity"] == "critical"
        assert alert["message"] == "loss is NaN at step 20", source
        # the NaN payloads were delivered as numbers, not text
        nan_event = next(
            r
            for r in records
            if r["type"] == "event" and r["source"] == source and r["seq"] == alert["seq"]
        )
        assert isinstance(nan_event["data"], dict) and nan_event["data"]["step"] == 20


async def test_fail_on_warning_is_not_tripped_by_a_clean_run(tmp_path: Path) -> None:
    options = DemoOptions(sse_port=0, ws_port=0, rest_port=0, rate=50.0, seed=1)
    async with trio.open_nursery() as nursery:
        endpoints: DemoEndpoints = await nursery.start(serve_demo, options)
        config = _config(
            tmp_path,
            endpoints,
            '\n[[processors]]\ntype = "nonfinite"\n\n[[processors]]\ntype = "restart"\n',
        )
        process = await start_mux(nursery, config, "--fail-on", "warning", "--for", "1.5")
        code = await wait_exit(process, config)
        nursery.cancel_scope.cancel()
    assert code == 0, stderr_of(config)
    records = read_jsonl_strict(tmp_path / "events.jsonl")
    assert [r for r in records if r["type"] == "event"]
    assert not [r for r in records if r["type"] == "alert"]
