"""Every sink survives every record: a payload nested 300 deep (msgspec decodes
it, orjson refuses to encode it) through the log, webhook, TUI and Qt sinks of
one real ``mux run``, and payloads no encoder can write through the webhook.

The run's sinks all have ``on_error = "stop"``: had one failed, the run would
have ended with exit 1 before the later events.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from mux_core import Event
from mux_core.testing import serve_sse

from .receiver import Receiver, serving, webhook_sink

DEEP = "[" * 300 + "]" * 300
HAS_QT = all(importlib.util.find_spec(name) for name in ("PySide6", "pyqtgraph"))


def _config(sse_url: str, hook_port: int) -> str:
    sinks = ["log", "tui", *(["qt"] if HAS_QT else [])]
    tables = "".join(
        f'\n[[sinks]]\ntype = "{kind}"\non_error = "stop"\n' for kind in sinks
    ).replace('type = "log"\n', 'type = "log"\nevents = true\n')
    return f"""
[[sources]]
name = "train"
transport = "sse"
url = "{sse_url}"

# Rewrites each payload: the sinks get the decoded value, not the bytes received.
[[processors]]
type = "select"
fields = ["n", "loss", "deep"]

[[processors]]
type = "nonfinite"
fields = ["loss"]

[[sinks]]
type = "log"
name = "log-json"
format = "json"
events = true
on_error = "stop"

[[sinks]]
type = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
events = true
on_error = "stop"
{tables}"""


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


async def _wait_for_text(path: Path, text: str, process: trio.Process) -> str:
    """Poll a file the other process writes until it holds ``text``."""
    with trio.move_on_after(15):
        while process.returncode is None:
            found = _read(path)
            if text in found:
                return found
            await trio.sleep(0.02)
    raise AssertionError(f"{text!r} not in {path.name}:\n{_read(path)}")


async def test_a_300_deep_event_stops_no_sink_of_a_real_run(tmp_path: Path) -> None:
    receiver = Receiver()
    config = tmp_path / "deep.toml"
    stderr, stdout = tmp_path / "stderr", tmp_path / "stdout"
    async with serve_sse() as sse, serving(receiver) as port:
        for n in (1, 2, 3):
            await sse.publish({"n": n, "loss": 0.5})
        await sse.publish('{"n": 4, "loss": 0.5, "deep": ' + DEEP + "}")
        await sse.publish('{"n": 5, "loss": NaN}')  # a critical alert after the deep event
        for n in (6, 7, 8):
            await sse.publish({"n": n, "loss": 0.5})
        config.write_text(_config(sse.url, port))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}
        env["QT_QPA_PLATFORM"] = "offscreen"
        async with trio.open_nursery() as nursery:
            with stderr.open("wb") as err, stdout.open("wb") as out:
                process: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        [sys.executable, "-m", "mux_core", "run", str(config)],
                        check=False,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        env=env,
                    )
                )
            await receiver.wait_until(
                lambda r: any(rec.get("id") == "8" for rec in r.records()), timeout=20
            )
            await _wait_for_text(stderr, "train: message id=8 seq=8", process)
            await _wait_for_text(stderr, '"id":"8"', process)
            process.terminate()
            with trio.fail_after(15):
                code = await process.wait()
    log = _read(stderr)
    assert code == 0, log
    assert "failed while writing" not in log and "Recursion" not in log
    records = receiver.records()
    assert [r["id"] for r in records if r["type"] == "event"] == [str(n) for n in range(1, 9)]
    (deep,) = [r["data"]["deep"] for r in records if r.get("id") == "4"]
    depth = 0
    while deep:
        (deep,) = deep
        depth += 1
    assert depth == 299  # whole, as a JSON value
    assert any(r["type"] == "alert" and r["severity"] == "critical" for r in records)
    assert "train: message id=4 seq=4 {" in log
    assert "ERROR   mux.sink.log: train: ALERT nonfinite (critical)" in log
    assert "train" in _read(stdout)  # the TUI drew its last table


def _too_deep() -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(5000):  # deeper than any encoder goes
        value = {"a": value}
    return value


@pytest.mark.parametrize("format", ["json", "slack"])
async def test_payloads_no_encoder_can_write_are_sent_as_text(
    format: str, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = Receiver()
    odd = [
        Event("train", "sse", "metric", "1", _too_deep(), 1.0, 1),
        Event("train", "sse", "metric", "2", [_too_deep()], 1.0, 2),
        Event("train", "sse", "metric", "3", {"loss": 0.5}, 1.0, 3),
    ]
    async with (
        serving(receiver),
        webhook_sink(receiver.origin + "/hook", events=True, format=format) as sink,
    ):
        await sink.write(odd)
        await receiver.wait_for(1)
    (body,) = receiver.accepted()
    assert sink.sent == 3 and sink.dropped == 0
    if format == "json":
        assert [type(r["data"]) for r in body] == [str, str, dict]
        assert body[0]["data"] == "<dict nested too deep to show>"
    else:
        lines = body["text"].splitlines()
        assert len(lines) == 3 and lines[2] == '*train* metric {"loss":0.5}'
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("event train/1: payload written as text" in r.getMessage() for r in warned)
