"""The prometheus sink's ``metrics``: payload fields as gauges, per source and run segment.

Real servers (the demo trainer, the fake SSE server), a real engine with the
``restart`` and ``nonfinite`` processors, the ``.prom`` file parsed back with
prometheus_client's own parser.
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from mux_core._config import parse_config
from mux_core._plugins import PluginManager
from mux_core.errors import ConfigError
from mux_core.records import Alert, Event, Severity, State, Status
from mux_core.sink import SinkContext, SourceInfo
from mux_core.testing import CollectingSink, serve_sse
from mux_demo.server import DemoEndpoints, DemoOptions, learning_rate, serve_demo
from mux_prometheus import PrometheusOptions, PrometheusSink
from tests.helpers.e2e import FAST_RETRY, running_engine, source_toml

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(path: Path) -> Samples:
    out: Samples = {}
    if not path.exists():
        return out
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _payload(samples: Samples, name: str) -> dict[tuple[str, str], float]:
    """``mux_payload_<name>`` samples: (source, segment) -> value."""
    out = {}
    for (metric, labels), value in samples.items():
        if metric == f"mux_payload_{name}":
            found = dict(labels)
            out[(found["source"], found["segment"])] = value
    return out


async def _wait_for_file(
    path: Path, predicate: Callable[[Samples], bool], timeout: float = 10.0
) -> Samples:
    """The sink rewrites the file every 50 ms: read it until ``predicate`` holds."""
    with trio.move_on_after(timeout):
        while True:
            samples = _samples(path)
            if predicate(samples):
                return samples
            await trio.sleep(0.02)
    raise AssertionError(f"{path} never met the condition; last: {sorted(_samples(path))}")


def _sinks(path: Path, metrics: str) -> str:
    return (
        f'\n[[sinks]]\ntype = "prometheus"\npath = "{path}"\ninterval = 0.05\nmetrics = {metrics}\n'
    )


_PROCESSORS = """
[[processors]]
type = "restart"

[[processors]]
type = "nonfinite"
fields = ["loss"]
"""


async def test_the_demo_trainer_with_a_nan_and_a_restart(tmp_path: Path) -> None:
    """``serve-demo --nan-at 20 --restart-at 30`` for 50 steps, read over SSE and
    WS: the file holds the newest loss / lr / step of each source in its second
    run segment -- the loss NaN as Prometheus writes it -- and the alerts."""
    path = tmp_path / "mux.prom"
    steps = 50
    sse, ws, rest = _free_ports(3)
    demo = DemoOptions(
        sse_port=sse, ws_port=ws, rest_port=rest, rate=100.0, steps=steps, seed=3, nan_at=20,
        restart_at=30,
    )  # fmt: skip
    endpoint = DemoEndpoints("127.0.0.1", sse, ws, rest)
    toml = (
        FAST_RETRY
        + source_toml("train-sse", "sse", endpoint.sse_url)
        + source_toml("train-ws", "ws", endpoint.ws_url)
        + _PROCESSORS
        + _sinks(path, '["loss", "lr", "step", "tokens_per_s"]')
    )
    # mux first, retrying until the trainer listens: the demo closes its
    # servers once it has trained, so mux must be there while it trains.
    async with running_engine(toml) as (_engine, collect):
        async with trio.open_nursery() as servers:
            await servers.start(serve_demo, demo)
        await collect.wait_for(_every_step(steps), timeout=20)
        # The last step reached the prometheus sink too (its own channel).
        samples = await _wait_for_file(
            path,
            lambda s: all(
                _payload(s, "step").get((name, "2")) == 21.0 for name in ("train-sse", "train-ws")
            ),
        )

    # Steps 1..29, then the trainer started over: 1..21. The loss is NaN from step 20.
    for source in ("train-sse", "train-ws"):
        assert _payload(samples, "step")[(source, "2")] == 21.0
        assert math.isnan(_payload(samples, "loss")[(source, "2")])
        assert _payload(samples, "lr")[(source, "2")] == float(f"{learning_rate(21, steps):.4g}")
        assert _payload(samples, "tokens_per_s")[(source, "2")] > 0
        # The first segment's values are left out: its lines end at the restart.
        assert (source, "1") not in _payload(samples, "loss")
        restart = {"source": source, "rule": "restart", "severity": "warning"}
        transport = "sse" if source == "train-sse" else "ws"
        alerts = frozenset({**restart, "transport": transport}.items())
        assert samples[("mux_alerts_total", alerts)] == 1.0
    written = (path).read_text()
    assert 'mux_payload_loss{segment="2",source="train-sse",transport="sse"} NaN' in written


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _every_step(steps: int) -> Callable[[CollectingSink], bool]:
    def seen(sink: CollectingSink) -> bool:
        for source in ("train-sse", "train-ws"):
            metrics = [e for e in sink.events if e.source == source and e.event == "metric"]
            if len(metrics) < steps:
                return False
        return True

    return seen


async def test_a_restart_starts_a_new_segment_and_nested_fields_are_read(
    tmp_path: Path,
) -> None:
    """Scripted over the fake SSE server: segment 1's values, then a restart (the
    step goes back): segment 2 with NaN and +Inf as Prometheus writes them, a
    nested field, a key holding a dot, a field that is not a number left out."""
    path = tmp_path / "mux.prom"
    async with serve_sse() as server:
        toml = (
            FAST_RETRY
            + source_toml("train", "sse", server.url)
            + _PROCESSORS
            + _sinks(path, '["loss", "lr", "step", "optim.beta", "eval.acc", "note"]')
            + 'metric_names = { "optim.beta" = "adam_beta1" }\n'
        )
        async with running_engine(toml):
            for step in (1, 2, 3):
                data: dict[str, Any] = {"step": step, "loss": 1.0 / step, "lr": 0.1}
                data |= {"optim": {"beta": 0.9}, "eval.acc": 0.5 + step / 10, "note": "warm"}
                await server.publish(data)
            first = await _wait_for_file(
                path, lambda s: _payload(s, "step").get(("train", "1")) == 3.0
            )
            assert _payload(first, "loss") == {("train", "1"): 1.0 / 3}
            assert _payload(first, "adam_beta1") == {("train", "1"): 0.9}
            assert _payload(first, "eval_acc") == {("train", "1"): 0.8}
            assert _payload(first, "note") == {}  # not a number: no sample

            # A Python trainer's json.dumps: bare NaN / Infinity literals.
            await server.publish(json.dumps({"step": 1, "loss": 2.0, "lr": 0.2}))
            await server.publish(json.dumps({"step": 2, "loss": math.nan, "lr": math.inf}))
            second = await _wait_for_file(
                path, lambda s: _payload(s, "step").get(("train", "2")) == 2.0
            )
    assert math.isnan(_payload(second, "loss")[("train", "2")])
    assert _payload(second, "lr") == {("train", "2"): math.inf}
    # Only the current segment: optim.beta came in segment 1 only, so it is gone.
    assert _payload(second, "adam_beta1") == {}
    assert ("train", "1") not in _payload(second, "step")
    text = path.read_text()
    assert 'mux_payload_lr{segment="2",source="train",transport="sse"} +Inf' in text
    assert "# HELP mux_payload_adam_beta1 The payload field optim.beta" in text


def _context() -> SinkContext:
    return SinkContext(
        name="prometheus",
        config_name="monitor",
        sources=(SourceInfo("train", "sse"),),
        request_stop=lambda reason: None,
        start_background=lambda fn: None,
        dropped=lambda: 0,
    )


def _event(seq: int, data: dict[str, Any], source: str = "train") -> Event:
    return Event(source, "sse", "metric", str(seq), data, 1.0 + seq, seq)


async def test_a_field_goes_with_its_source_when_the_source_is_forgotten(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "mux.prom"
    options = PrometheusOptions(path=str(path), metrics=["loss"], forget_after=60.0)
    sink = PrometheusSink(options, _context())
    await sink.write([_event(1, {"loss": 0.5}), _event(1, {"loss": 0.7}, source="other")])
    await sink.write_file()
    assert _payload(_samples(path), "loss") == {("train", "1"): 0.5, ("other", "1"): 0.7}
    await sink.write([Status("other", "sse", State.STOPPED, 1, None, "removed", 2.0)])
    await sink.write([_event(2, {"step": 2})])  # no loss in it: the newest loss stays
    await trio.sleep(30)
    await sink.write_file()
    assert _payload(_samples(path), "loss") == {("train", "1"): 0.5, ("other", "1"): 0.7}
    await trio.sleep(31)
    await sink.write_file()
    assert _payload(_samples(path), "loss") == {("train", "1"): 0.5}
    alert = Alert("train", "sse", "restart", Severity.WARNING, "started over", 3, 3.0)
    await sink.write([alert, _event(3, {"loss": 2.5})])
    await sink.write_file()
    assert _payload(_samples(path), "loss") == {("train", "2"): 2.5}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('metrics = ["loss", "loss"]', "'loss' is named twice"),
        ('metrics = ["optim..lr"]', "is not a field path"),
        ('metrics = [""]', "is not a field path"),
        ('metrics = ["a-b", "a_b"]', "'a-b' and 'a_b' would both be mux_payload_a_b"),
        ('metrics = ["lr"]\nmetric_names = { loss = "x" }', "'loss' is not one of metrics"),
        ('metrics = ["lr"]\nmetric_names = { lr = "9lr" }', "not a Prometheus metric name"),
        ('labels = { segment = "x" }', "a label mux sets itself"),
    ],
)
def test_bad_metrics_are_config_errors_with_the_line(
    tmp_path: Path, table: str, message: str
) -> None:
    plugins = PluginManager()
    plugins.load_entry_points()
    text = (
        '[[sources]]\nname = "a"\ntransport = "sse"\nurl = "http://127.0.0.1:9/"\n\n'
        f'[[sinks]]\ntype = "prometheus"\npath = "{tmp_path}/mux.prom"\n{table}\n'
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, path="m.toml", plugins=plugins)
    assert str(caught.value).startswith("m.toml:")
    assert message in str(caught.value)
