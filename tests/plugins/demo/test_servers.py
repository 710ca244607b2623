"""The demo training run: the simulation's shape, and real clients on its three servers."""

from __future__ import annotations

import math
import random
import signal
import socket
import subprocess
import sys
from typing import Any

import httpx
import orjson
import pytest
import trio
from trio_websocket import open_websocket_url

from mux_demo.server import (
    DemoEndpoints,
    DemoOptions,
    eval_record,
    learning_rate,
    run_serve_demo,
    serve_demo,
    training_record,
)

TOTAL = 2_000


def _run(seed: int = 7, total: int = TOTAL) -> list[dict[str, float | int]]:
    rng = random.Random(seed)
    return [training_record(step, rng, total_steps=total) for step in range(1, total + 1)]


def test_training_record_fields_are_finite_and_positive() -> None:
    for record in _run():
        assert set(record) == {"step", "loss", "lr", "tokens_per_s", "gpu_mem_gb"}
        for key in ("loss", "lr", "tokens_per_s", "gpu_mem_gb"):
            value = float(record[key])
            assert math.isfinite(value) and value > 0, (key, record)


def test_loss_trends_down() -> None:
    losses = [float(r["loss"]) for r in _run()]
    first, last = losses[:100], losses[-100:]
    assert sum(first) / 100 > 2 * (sum(last) / 100)
    means = [sum(losses[i : i + 200]) / 200 for i in range(0, TOTAL, 200)]
    assert means == sorted(means, reverse=True)


def test_lr_warms_up_then_decays_on_a_cosine() -> None:
    warmup = TOTAL // 20
    lrs = [learning_rate(step, TOTAL) for step in range(1, TOTAL + 1)]
    rising, falling = lrs[:warmup], lrs[warmup - 1 :]
    assert rising == sorted(rising) and rising[0] < rising[-1] / 10
    assert falling == sorted(falling, reverse=True)
    peak = max(lrs)
    assert lrs.index(peak) == warmup - 1
    assert lrs[-1] < peak / 5
    # cosine: half-way through the decay the lr is half-way between peak and floor
    middle = learning_rate(warmup + (TOTAL - warmup) // 2, TOTAL)
    assert middle == pytest.approx((peak + lrs[-1]) / 2, rel=0.01)
    assert [float(r["lr"]) for r in _run()] == pytest.approx(lrs, rel=1e-3)


def test_the_payload_is_rounded_without_float_noise() -> None:
    """The lr once went out as 6.5999999999999995e-06: every number a trainer
    would print is short."""
    rng = random.Random(5)
    records = [training_record(s, rng, total_steps=TOTAL) for s in range(1, TOTAL + 1)]
    records += [eval_record(s, rng) for s in range(50, TOTAL + 1, 50)]
    for record in records:
        for key, value in record.items():
            if isinstance(value, float):
                mantissa = repr(value).split("e")[0].lstrip("-").replace(".", "").strip("0")
                assert len(mantissa) <= 8, (key, value, record)
    assert any("e-" in repr(r["lr"]) for r in records if "lr" in r)  # the small ones were tested


def test_same_seed_same_run() -> None:
    assert _run(seed=3, total=50) == _run(seed=3, total=50)
    assert _run(seed=3, total=50) != _run(seed=4, total=50)
    record = eval_record(100, random.Random(1))
    assert set(record) == {"step", "eval_loss"} and float(record["eval_loss"]) > 0


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="rate"):
        DemoOptions(rate=0)
    with pytest.raises(ValueError, match="sse_port"):
        DemoOptions(sse_port=70_000)
    with pytest.raises(ValueError, match="host"):
        DemoOptions(host="0.0.0.0")


def _fast(**kwargs: Any) -> DemoOptions:
    options: dict[str, Any] = {
        "sse_port": 0,
        "ws_port": 0,
        "rest_port": 0,
        "rate": 2_000.0,
        "seed": 1,
        **kwargs,
    }
    return DemoOptions(**options)


async def _sse_events(
    url: str, count: int, headers: dict[str, str] | None = None
) -> list[tuple[str, str, dict[str, Any]]]:
    """Read ``count`` (id, event, data) triples off a real SSE connection."""
    events: list[tuple[str, str, dict[str, Any]]] = []
    fields: dict[str, str] = {}
    async with (
        httpx.AsyncClient() as client,
        client.stream("GET", url, headers=headers or {}) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            events.append(
                (fields["id"], fields.get("event", "message"), orjson.loads(fields["data"]))
            )
            fields = {}
            if len(events) == count:
                return events
    raise AssertionError("stream ended early")


async def test_sse_streams_increasing_ids_and_resumes_after_last_event_id() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            endpoints: DemoEndpoints = await nursery.start(serve_demo, _fast(eval_every=4))
            events = await _sse_events(endpoints.sse_url, 12)
            metrics = [(i, d) for i, kind, d in events if kind == "metric"]
            ids = [int(i) for i, _ in metrics]
            assert ids == list(range(1, len(ids) + 1)) and len(ids) >= 9
            assert all(d["step"] == int(i) for i, d in metrics)
            evals = [(i, d) for i, kind, d in events if kind == "eval"]
            assert evals[0][0] == "4-eval" and evals[0][1]["step"] == 4
            assert "eval_loss" in evals[0][1]

            resumed = await _sse_events(endpoints.sse_url, 2, {"Last-Event-ID": "5"})
            assert [i for i, _, _ in resumed] == ["6", "7"]
            nursery.cancel_scope.cancel()


async def test_rest_returns_only_items_after_the_cursor() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            endpoints: DemoEndpoints = await nursery.start(serve_demo, _fast(eval_every=0))
            await _sse_events(endpoints.sse_url, 10)  # the run has published 10 steps
            async with httpx.AsyncClient() as client:
                everything = (await client.get(endpoints.rest_url)).json()["items"]
                after = await client.get(endpoints.rest_url, params={"after": "6"})
            assert len(everything) >= 10
            newer = after.json()["items"]
            assert newer and int(newer[0]["id"]) == 7
            assert all(int(item["id"]) > 6 for item in newer)
            assert all(
                item["event"] == "metric" and item["step"] == int(item["id"]) for item in newer
            )
            nursery.cancel_scope.cancel()


async def test_ws_streams_messages_and_resumes_after_last_id() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            endpoints: DemoEndpoints = await nursery.start(serve_demo, _fast(eval_every=0))
            async with open_websocket_url(endpoints.ws_url) as ws:
                first = [orjson.loads(await ws.get_message()) for _ in range(3)]
            assert [m["id"] for m in first] == ["1", "2", "3"]
            async with open_websocket_url(endpoints.ws_url + "?last_id=3") as ws:
                messages = [orjson.loads(await ws.get_message()) for _ in range(3)]
            assert [m["id"] for m in messages] == ["4", "5", "6"]
            assert all(m["event"] == "metric" and "loss" in m for m in messages)
            nursery.cancel_scope.cancel()


async def test_a_finite_run_stops_after_its_steps() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            endpoints: DemoEndpoints = await nursery.start(serve_demo, _fast(steps=6, eval_every=3))
            events = await _sse_events(endpoints.sse_url, 8)
        # the nursery exited by itself: serve_demo returned after step 6
    assert [i for i, _, _ in events] == ["1", "2", "3", "3-eval", "4", "5", "6", "6-eval"]
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(endpoints.rest_url)


def test_port_in_use_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        code = run_serve_demo(_fast(sse_port=port))
    assert code == 2
    err = capsys.readouterr().err
    assert err == f"port {port} is in use: is another serve-demo running? pass --sse-port\n"


async def test_sigterm_stops_the_program_cleanly() -> None:
    code = (
        "import sys; from mux_demo.server import DemoOptions, run_serve_demo; "
        "sys.exit(run_serve_demo(DemoOptions(sse_port=0, ws_port=0, rest_port=0)))"
    )
    with trio.fail_after(15):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stdout is not None
        output = b""
        while b"Ctrl-C" not in output:
            chunk = await process.stdout.receive_some()
            assert chunk, output
            output += chunk
        assert b"http://127.0.0.1:" in output and b"ws://127.0.0.1:" in output
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0


async def test_fault_switches_a_nan_episode_and_a_hang() -> None:
    """--nan-at/--nan-for: NaN for those steps only; --stall-at/--stall-for: a silence first."""
    import itertools
    import json

    options = _fast(steps=12, eval_every=0, nan_at=3, nan_for=2, stall_at=8, stall_for=1.0)
    arrived: list[tuple[float, dict[str, Any]]] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            endpoints: DemoEndpoints = await nursery.start(serve_demo, options)
            async with (
                httpx.AsyncClient() as client,
                client.stream("GET", endpoints.sse_url) as response,
            ):
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        arrived.append((trio.current_time(), json.loads(line[6:])))
                    if len(arrived) == 12:
                        break
    steps = [data["step"] for _, data in arrived]
    assert steps == list(range(1, 13))
    nan = [data["step"] for _, data in arrived if math.isnan(data["loss"])]
    assert nan == [3, 4]
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(arrived)]
    assert gaps[6] >= 0.5  # step 8 came after the hang (1 s; half of it as a margin)
