"""The prometheus sink: the textfile node_exporter reads, parsed back with
prometheus_client's own parser and checked against the quality figures."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from mux_core._config import parse_config
from mux_core._plugins import PluginManager
from mux_core.errors import ConfigError
from mux_core.records import (
    Alert,
    Event,
    Quality,
    Severity,
    State,
    Status,
)
from mux_core.sink import SinkContext, SourceInfo
from mux_prometheus import INSTALL_HINT, PrometheusOptions, PrometheusSink
from tests.helpers import ROOT
from tests.helpers.quality import outage_engine


def _samples(path: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the file: (name, labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_the_file_holds_the_same_figures_as_the_quality_records(
    plugins: PluginManager, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    path = tmp_path / "mux.prom"
    plugins.register(__import__("mux_prometheus"), name="prometheus")
    engine = outage_engine(
        plugins,
        "quality_interval = 25.0",
        sinks=f'[[sinks]]\ntype = "prometheus"\npath = "{path}"\ninterval = 10.0',
    )
    result = await engine.run()
    final = result.quality["train"]
    samples = _samples(path)
    train = {"source": "train", "transport": "outages"}
    assert _value(samples, "mux_source_up", **train) == 0.0  # stopped
    assert _value(samples, "mux_source_state", state="stopped", **train) == 1.0
    assert _value(samples, "mux_source_state", state="connected", **train) == 0.0
    assert _value(samples, "mux_source_reconnects_total", **train) == final.reconnects_total == 2
    assert _value(samples, "mux_source_uptime_ratio", **train) == final.uptime == 0.75
    assert _value(samples, "mux_source_window_seconds", **train) == 60.0
    assert _value(samples, "mux_events_total", **train) == final.events_total == 6
    assert _value(samples, "mux_source_gaps_total", **train) == final.gaps_total == 2
    assert _value(samples, "mux_source_blind_seconds_total", **train) == 15.0
    assert _value(samples, "mux_source_blind_max_seconds", **train) == 10.0
    assert _value(samples, "mux_source_outages", **train) == 2.0
    assert _value(samples, "mux_source_quality_timestamp_seconds", **train) == final.at
    assert _value(samples, "mux_sink_dropped_total", sink="collect") == 0.0
    assert _value(samples, "mux_sink_dropped_total", sink="prometheus") == 0.0
    assert _value(samples, "mux_sources") == 1.0
    assert ("mux_info", frozenset({("version", _version()), ("config", "q")})) in samples
    # Written atomically: no temporary file is left beside it.
    assert _names(tmp_path) == ["mux.prom"]


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _version() -> str:
    import mux_core

    return str(mux_core.__version__)


def _context(name: str = "prometheus") -> SinkContext:
    started: list[Any] = []
    return SinkContext(
        name=name,
        config_name="monitor",
        sources=(SourceInfo("train-sse", "sse"), SourceInfo("train-ws", "ws")),
        request_stop=lambda reason: None,
        start_background=started.append,
        dropped=lambda: 3,
    )


def _quality(source: str = "train-sse", **changes: Any) -> Quality:
    fields: dict[str, Any] = {
        "window": 3600.0,
        "uptime": 0.5,
        "reconnects": 1,
        "blind_max": 4.0,
        "events": 100,
        "gaps": 1,
        "lag_p99": 0.4,
        "at": 1764250000.0,
        "state": State.CONNECTED,
        "lag_p50": 0.1,
        "staleness": 2.5,
        "events_total": 1000,
        "dropped": {"log": 7},
    }
    fields.update(changes)
    return Quality(source, "sse", **fields)


async def test_states_alerts_lag_and_extra_labels(tmp_path: Path) -> None:
    path = tmp_path / "mux.prom"
    options = PrometheusOptions(path=str(path), labels={"run": "exp42"})
    sink = PrometheusSink(options, _context())
    await sink.write_file()  # before any record: both sources known, neither up yet
    run = {"run": "exp42"}
    sse = {"source": "train-sse", "transport": "sse", **run}
    ws = {"source": "train-ws", "transport": "ws", **run}
    samples = _samples(path)
    assert _value(samples, "mux_source_up", **sse) == 0.0
    assert _value(samples, "mux_events_total", **ws) == 0.0
    assert ("mux_source_uptime_ratio", frozenset(sse.items())) not in samples

    connected = Status("train-ws", "ws", State.CONNECTED, 1, None, "", 1.0)
    alert = Alert("train-sse", "sse", "nonfinite", Severity.CRITICAL, "loss is NaN", 5, 2.0)
    await sink.write([connected, _quality(), alert, alert])
    await sink.write_file()
    samples = _samples(path)
    assert _value(samples, "mux_source_up", **ws) == 1.0
    assert _value(samples, "mux_source_up", **sse) == 1.0  # the quality record's state
    assert _value(samples, "mux_source_lag_seconds", quantile="0.5", **sse) == 0.1
    assert _value(samples, "mux_source_lag_seconds", quantile="0.99", **sse) == 0.4
    assert _value(samples, "mux_source_last_event_timestamp_seconds", **sse) == 1764249997.5
    assert _value(samples, "mux_source_events_per_second", **sse) == 0.0
    alerts = {"source": "train-sse", "transport": "sse", "rule": "nonfinite", **run}
    assert _value(samples, "mux_alerts_total", severity="critical", **alerts) == 2.0
    assert _value(samples, "mux_sink_dropped_total", sink="log", **run) == 7.0
    assert _value(samples, "mux_sink_dropped_total", sink="prometheus", **run) == 3.0
    assert _value(samples, "mux_start_time_seconds", **run) == sink.started_at
    # Every sample carries the constant labels.
    assert all(dict(labels).get("run") == "exp42" for _, labels in samples)


async def test_a_failed_write_is_logged_and_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mux")
    directory = tmp_path / "textfiles"
    directory.mkdir()
    sink = PrometheusSink(PrometheusOptions(path=str(directory / "mux.prom")), _context())
    await sink.write_file()
    assert sink.writes == 1
    (directory / "mux.prom").unlink()
    directory.rmdir()
    await sink.write_file()
    await sink.write_file()  # the same failure is not logged twice
    assert sink.writes == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot write" in warnings[0].getMessage()
    directory.mkdir()
    await sink.write_file()
    assert sink.writes == 2 and (directory / "mux.prom").exists()
    assert "writing" in caplog.records[-1].getMessage()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('path = "{dir}/mux.txt"', "must end in .prom"),
        ('path = "{dir}/missing/mux.prom"', "does not exist"),
        ('path = "{dir}/mux.prom"\ninterval = 0', "interval must be > 0"),
        ('path = "{dir}/mux.prom"\nlabels = {{ source = "x" }}', "a label mux sets itself"),
        ('path = "{dir}/mux.prom"\nlabels = {{ "bad-name" = "x" }}', "not a Prometheus label"),
    ],
)
def test_bad_options_are_config_errors_with_the_line(
    tmp_path: Path, table: str, message: str
) -> None:
    plugins = PluginManager()
    plugins.load_entry_points()
    text = (
        '[[sources]]\nname = "a"\ntransport = "sse"\nurl = "http://127.0.0.1:9/"\n\n'
        '[[sinks]]\ntype = "prometheus"\n' + table.format(dir=tmp_path) + "\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, path="m.toml", plugins=plugins)
    assert str(caught.value).startswith("m.toml:")
    assert message in str(caught.value)


def test_without_prometheus_client_the_plugin_is_unavailable_with_the_hint(
    tmp_path: Path,
) -> None:
    config = tmp_path / "m.toml"
    config.write_text(
        '[[sources]]\nname = "a"\ntransport = "sse"\nurl = "http://127.0.0.1:9/e"\n'
        f'[[sinks]]\ntype = "prometheus"\npath = "{tmp_path}/mux.prom"\n'
    )
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from mux_core._cli import main\n"
        "main(['plugins', '--json'])\n"
        "sys.exit(main(['check', sys.argv[1]]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    listed = next(p for p in json.loads(result.stdout) if p["name"] == "prometheus")
    assert listed["sinks"] == [] and INSTALL_HINT in listed["error"]
    assert f"{config}:6: sinks[0].type: " in result.stderr and INSTALL_HINT in result.stderr
    assert "Traceback" not in result.stderr


async def test_the_docs_and_the_grafana_dashboard_name_exactly_the_metrics_written(
    tmp_path: Path,
) -> None:
    options = PrometheusOptions(path=str(tmp_path / "mux.prom"), metrics=["loss", "lr"])
    sink = PrometheusSink(options, _context())
    alert = Alert("train-sse", "sse", "stall", Severity.WARNING, "no event for 60 s", None, 2.0)
    event = Event("train-sse", "sse", "metric", "1", {"loss": 2.5, "lr": 3e-4}, 1.0, 1)
    await sink.write([_quality(), alert, event])
    await sink.write_file()
    written = {name for name, _ in _samples(tmp_path / "mux.prom")}
    assert {"mux_payload_loss", "mux_payload_lr"} <= written

    # The table names the payload metrics by their prefix: mux_payload_<field>.
    documented = _documented_metrics()
    prefixes = {name for name in documented if name.endswith("_")}
    assert prefixes == {"mux_payload_"}
    assert documented - prefixes == {
        name for name in written if not any(name.startswith(p) for p in prefixes)
    }
    dashboard = _dashboard_metrics()
    assert dashboard and dashboard <= written
    assert {"mux_payload_loss", "mux_payload_lr", "mux_alerts_total"} <= dashboard


def _documented_metrics() -> set[str]:
    """The metrics of the table in docs/prometheus.md."""
    docs = (ROOT / "docs" / "prometheus.md").read_text()
    return set(re.findall(r"^\| `(mux_[a-z_]+)", docs, flags=re.MULTILINE))


def _dashboard_metrics() -> set[str]:
    """The metrics the Grafana dashboard's queries and annotations use."""
    dashboard = json.loads((ROOT / "docs" / "grafana" / "mux-quality.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    return {name for expr in exprs for name in re.findall(r"\bmux_[a-z_]+", expr)}


async def test_the_last_write_is_the_one_at_close(tmp_path: Path) -> None:
    """Writes take turns; once closed, a background write that comes late writes nothing."""
    path = tmp_path / "mux.prom"
    sink = PrometheusSink(PrometheusOptions(path=str(path)), _context())
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(sink.write_file)
        await trio.testing.wait_all_tasks_blocked()  # one writing, two waiting their turn
        await sink.write([_quality(state=State.STOPPED)])
        await sink.aclose()
    assert sink.writes == 4  # three earlier writes in turn, then the final one
    await sink.write_file()
    assert sink.writes == 4
    stopped = {"source": "train-sse", "transport": "sse", "state": "stopped"}
    assert _value(_samples(path), "mux_source_state", **stopped) == 1.0


async def test_stopped_sources_are_left_out_after_forget_after_and_beyond_a_cap(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Discovery churn: 8 generations of 1,000 sources, each stopped when the
    next arrives; the file keeps the live ones plus at most MAX_STOPPED
    stopped ones, and none stopped longer ago than forget_after."""
    path = tmp_path / "mux.prom"
    sink = PrometheusSink(PrometheusOptions(path=str(path), forget_after=60.0), _context())
    alert = Alert("g0-1", "sse", "stall", Severity.WARNING, "no event for 120 s", None, 1.0)
    await sink.write([alert])
    for generation in range(8):
        connected = [
            Status(f"g{generation}-{i}", "sse", State.CONNECTED, 1, None, "", 1.0)
            for i in range(1_000)
        ]
        stopped = [
            Status(f"g{generation - 1}-{i}", "sse", State.STOPPED, 1, None, "removed", 1.0)
            for i in range(1_000)
            if generation
        ]
        await sink.write([*stopped, *connected])
        await sink.write_file()
        await trio.sleep(10)
    up = {
        dict(labels)["source"]
        for (name, labels) in _samples(path)
        if name == "mux_source_up" and dict(labels)["source"].startswith("g")
    }
    assert len(up) == 2_000  # g7 live, g6 the newest stopped (the cap)
    assert {"g7-0", "g6-0"} <= up and "g5-0" not in up
    assert not [key for key in _samples(path) if key[0] == "mux_alerts_total"]
    await trio.sleep(61)
    await sink.write_file()
    sources = {dict(labels).get("source") for (name, labels) in _samples(path)}
    assert "g6-0" not in sources and "g7-0" in sources
