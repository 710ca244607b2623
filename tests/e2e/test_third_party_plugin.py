"""A third party's plugin, installed like any other: examples/mux-jsonl-tail.

The package is a separate distribution (``pip install -e
examples/mux-jsonl-tail``, done by the Makefile). These tests drive it only
through the ``mux`` command, as its users would: discovery through the entry
point, its ``jsonl-tail`` transport feeding its ``csv`` sink and the built-in
``file`` sink.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

pytest.importorskip(
    "mux_jsonl_tail",
    reason="mux-jsonl-tail is not installed (run: pip install -e examples/mux-jsonl-tail)",
)

MUX = [sys.executable, "-m", "mux_core"]


def _env() -> dict[str, str]:
    """The user's environment: every installed plugin autoloads, no test kit."""
    env = {**os.environ}
    env.pop("MUX_LOAD_PLUGINS", None)
    env.pop("MUX_PLUGIN_MODULES", None)
    return env


def _lines(*objects: Any) -> str:
    return "".join(json.dumps(o) + "\n" for o in objects)


def _config(tmp_path: Path, *, extra: str = "") -> Path:
    config = tmp_path / "tail.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [retry]
            initial_delay = 0.05
            max_delay = 0.2

            [[sources]]
            name = "train"
            transport = "jsonl-tail"
            path = "{tmp_path / "train.jsonl"}"
            poll_interval = 0.02

            [[sources]]
            name = "later"
            transport = "jsonl-tail"
            path = "{tmp_path / "missing.jsonl"}"

            [[sinks]]
            type = "csv"
            path = "{tmp_path / "out" / "metrics.csv"}"
            fields = ["step", "loss"]
            statuses = true

            [[sinks]]
            type = "file"
            path = "{tmp_path / "out" / "events.jsonl"}"
            """
        )
        + textwrap.dedent(extra)
    )
    return config


def _csv_rows(tmp_path: Path) -> list[list[str]]:
    with (tmp_path / "out" / "metrics.csv").open(newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


def _jsonl(tmp_path: Path) -> list[dict[str, Any]]:
    data = (tmp_path / "out" / "events.jsonl").read_bytes()
    return [orjson.loads(line) for line in data.splitlines()]


def test_mux_plugins_lists_the_third_party_plugin() -> None:
    result = subprocess.run(
        [*MUX, "plugins", "--json"], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert result.returncode == 0, result.stderr
    infos = {info["name"]: info for info in json.loads(result.stdout)}
    assert infos["jsonl-tail"] == {
        "name": "jsonl-tail",
        "distribution": "mux-jsonl-tail",
        "version": "0.1.0",
        "transports": ["jsonl-tail"],
        "sinks": ["csv"],
        "processors": ["above"],
        "discoverers": [],
        "commands": ["jsonl-stats"],
        "error": None,
    }


def test_the_plugins_command_is_a_mux_subcommand(tmp_path: Path) -> None:
    """mux_register_commands: ``mux jsonl-stats`` comes from the plugin, help and all."""
    recorded = tmp_path / "events.jsonl"
    recorded.write_text(
        _lines(
            {"type": "status", "source": "a", "state": "connected"},
            {"type": "event", "source": "a", "id": "1"},
            {"type": "event", "source": "a", "id": "2"},
            {"type": "alert", "source": "b"},
            {"type": "status", "source": "b", "state": "stopped"},
        )
    )
    helped = subprocess.run([*MUX, "--help"], capture_output=True, text=True, env=_env())
    assert "jsonl-stats" in helped.stdout
    assert "count a recorded run's records" in helped.stdout
    result = subprocess.run(
        [*MUX, "jsonl-stats", str(recorded)], capture_output=True, text=True, env=_env()
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [
        "a                       2        1      0  connected",
        "b                       0        1      1  stopped",
    ]
    missing = subprocess.run(
        [*MUX, "jsonl-stats", str(tmp_path / "nope.jsonl")], capture_output=True, text=True
    )
    assert missing.returncode == 2
    assert "nope.jsonl: No such file or directory" in missing.stderr


def test_mux_run_tails_a_file_into_csv_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(
        _lines({"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}) + '{"step": 3, "lo'
    )
    config = _config(tmp_path)
    result = subprocess.run(
        [*MUX, "run", str(config), "--for", "1"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr

    rows = _csv_rows(tmp_path)
    assert rows[0] == ["received_at", "source", "event", "id", "step", "loss", "detail"]
    events = [row[1:6] for row in rows[1:] if row[2] == "message"]
    # The partial third line never completed, so it is not a row.
    assert events == [["train", "message", "1", "1", "0.5"], ["train", "message", "2", "2", "0.25"]]
    waiting = [row for row in rows if row[1] == "later" and row[2] == "status:server_unavailable"]
    assert waiting, rows
    assert waiting[0][-1] == f"waiting for {tmp_path / 'missing.jsonl'} to appear"
    assert rows[-1][2] == "status:stopped"

    records = _jsonl(tmp_path)
    assert [r["data"] for r in records if r["type"] == "event"] == [
        {"step": 1, "loss": 0.5},
        {"step": 2, "loss": 0.25},
    ]
    train_states = [r["state"] for r in records if r["type"] == "status" and r["source"] == "train"]
    assert train_states == ["connecting", "connected", "stopped"]


def _log_records(process: subprocess.Popen[str]) -> Any:
    """The JSON records the log sink writes to stderr, as the run produces them."""
    assert process.stderr is not None
    for line in process.stderr:
        marker = line.find("mux.sink.log: {")
        if marker >= 0:
            yield orjson.loads(line[marker + len("mux.sink.log: ") :])


def test_mux_run_follows_lines_appended_while_running(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    log.write_text(_lines({"step": 1, "loss": 0.5}) + '{"step": 2, ')
    config = _config(tmp_path, extra='[[sinks]]\ntype = "log"\nformat = "json"\nevents = true\n')
    # --for bounds the run if something goes wrong; the test stops it with SIGTERM.
    process = subprocess.Popen(
        [*MUX, "run", str(config), "--for", "30"],
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        seen: list[dict[str, Any]] = []
        records = _log_records(process)
        for record in records:
            seen.append(record)
            if record["type"] == "event" and record["id"] == "1":
                break  # the first line is in: the partial second one is waiting
        with log.open("a") as file:
            file.write('"loss": 0.25}\n' + _lines({"step": 3, "loss": 0.125}))
        for record in records:
            seen.append(record)
            if record["type"] == "event" and record["id"] == "3":
                break
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert [r["id"] for r in seen if r["type"] == "event"] == ["1", "2", "3"]
    assert process.returncode == 0

    rows = _csv_rows(tmp_path)
    assert [row[3:6] for row in rows[1:] if row[2] == "message"] == [
        ["1", "1", "0.5"],
        ["2", "2", "0.25"],
        ["3", "3", "0.125"],
    ]
    assert [r["seq"] for r in _jsonl(tmp_path) if r["type"] == "event"] == [1, 2, 3]


def test_mux_run_applies_the_third_party_processor(tmp_path: Path) -> None:
    """mux_register_processors through an installed plugin: its alert reaches the file."""
    (tmp_path / "train.jsonl").write_text(
        _lines({"step": 1, "loss": 0.5}, {"step": 2, "loss": 9.0}, {"step": 3, "loss": 0.4})
    )
    config = _config(
        tmp_path,
        extra="""
        [[processors]]
        type = "above"
        sources = ["train"]
        field = "loss"
        limit = 2.0
        severity = "critical"
        """,
    )
    result = subprocess.run(
        [*MUX, "run", str(config), "--for", "1", "--fail-on", "critical"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert result.returncode == 4, result.stderr
    alerts = [r for r in _jsonl(tmp_path) if r["type"] == "alert"]
    assert [(a["source"], a["rule"], a["severity"], a["message"], a["seq"]) for a in alerts] == [
        ("train", "above", "critical", "loss 9 is above 2", 2),
        ("train", "above", "info", "loss back to 0.4", 3),
    ]
