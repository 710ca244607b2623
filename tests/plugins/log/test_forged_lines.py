"""Nothing a server sends, and no source name, can forge a log line.

A line break in a name, a status detail, an alert or a payload's text (with
``events = true``) would start what reads as a line of mux's own (``...
ERROR mux.engine: FORGED``); an ANSI sequence would drive the terminal. The
log sink escapes them, and so does the formatter of every line ``mux`` logs
(a server's text in another logger's message too). Each attempt below must
come out as exactly one line.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
import trio

from mux_core import Alert, Event, Quality, Severity, SinkContext, State, Status
from mux_core._cli import OneLineFormatter
from mux_core.testing import serve_sse
from mux_log import LogOptions, LogSink
from tests.plugins.webhook.receiver import Receiver, serving

FORGED = "\n2026-01-01 00:00:00,000 ERROR   mux.engine: FORGED"
ANSI = "\x1b[2J\x1b[31m"
#: Line breaks of every kind a reader (or str.splitlines) honours.
BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"]


def _context() -> SinkContext:
    def start_background(fn: Any) -> None:
        raise AssertionError("the log sink needs no background task")

    return SinkContext(
        name="log",
        config_name="t",
        sources=(),
        request_stop=lambda reason: None,
        start_background=start_background,
    )


@contextmanager
def _stream_of(logger: str) -> Iterator[io.StringIO]:
    """What ``logger`` writes through mux's own formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    log = logging.getLogger(logger)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        log.removeHandler(handler)
        log.setLevel(logging.NOTSET)


def _attempts(brk: str) -> list[Any]:
    """One record per place a forged line could hide."""
    name = f"train{brk}{ANSI}"
    forged = FORGED.replace("\n", brk)
    return [
        Status(name, "sse", State.CONNECTING, 1, None, "", 1.0),
        Status(name, "sse", State.SERVER_UNAVAILABLE, 2, 1.0, f"HTTP 503{forged}", 1.0),
        Status("train", "sse", State.FAILED, 3, None, f"{ANSI}HTTP 404{forged}", 1.0),
        Alert(name, "sse", f"rule{brk}", Severity.CRITICAL, f"loss{forged}", 1, 1.0),
        Event(name, "sse", f"metric{brk}", f"1{brk}", f"line one{forged}{ANSI}", 1.0, 1),
        Event("train", "sse", "metric", "2", {"text": f"a{forged}", "k\u2028": ANSI}, 1.0, 2),
        Quality(name, "sse", 60.0, 1.0, 0, 0.0, 10, 0, None, 1.0),
    ]


@pytest.mark.parametrize("brk", BREAKS, ids=[repr(b) for b in BREAKS])
@pytest.mark.parametrize("format", ["text", "json"])
async def test_each_record_is_exactly_one_line(format: Literal["text", "json"], brk: str) -> None:
    records = _attempts(brk)
    sink = LogSink(LogOptions(events=True, format=format, level="debug"), _context())
    with _stream_of("mux.sink.log") as stream:
        await sink.write(records)
    written = stream.getvalue()
    assert written.endswith("\n")
    lines = written[:-1].split("\n")
    assert written.splitlines() == lines  # no other kind of line break either
    assert len(lines) == len(records)
    assert all("\x1b" not in line and "\r" not in line for line in lines)
    assert all(" mux.sink.log: " in line for line in lines)
    assert sum("FORGED" in line for line in lines) == 5
    if format == "json":
        messages = [line.split(" mux.sink.log: ", 1)[1] for line in lines]
        assert orjson.loads(messages[4])["data"].endswith(f"FORGED{ANSI}")  # the same value


async def test_the_log_sink_escapes_even_without_mux_formatter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An embedding program's own logging setup gets escaped lines too."""
    caplog.set_level(logging.DEBUG, logger="mux")
    sink = LogSink(LogOptions(events=True), _context())
    await sink.write(_attempts("\n"))
    messages = [r.getMessage() for r in caplog.records if r.name == "mux.sink.log"]
    assert len(messages) == 7
    assert all(m.isprintable() for m in messages)
    assert messages[1] == (
        "train\\n\\x1b[2J\\x1b[31m: server_unavailable (attempt 2, retry in 1 s): HTTP 503"
        "\\n2026-01-01 00:00:00,000 ERROR   mux.engine: FORGED"
    )


def test_mux_formatter_escapes_the_message_and_keeps_a_traceback() -> None:
    with _stream_of("mux.test.forged") as stream:
        log = logging.getLogger("mux.test.forged")
        log.warning("server said: %s", f"oops{FORGED}")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("crashed%s", FORGED)
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith(": oops\\n2026-01-01 00:00:00,000 ERROR   mux.engine: FORGED")
    assert "crashed\\n" in lines[1]
    assert lines[2] == "Traceback (most recent call last):"  # a traceback keeps its lines
    assert lines[-1] == "ValueError: boom"
    assert sum("FORGED" in line for line in lines) == 2


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


async def _wait_for_text(path: Path, text: str, process: trio.Process) -> None:
    """Poll a file the other process writes until it holds ``text``."""
    with trio.move_on_after(15):
        while process.returncode is None:
            if text in _read(path):
                return
            await trio.sleep(0.02)
    raise AssertionError(f"{text!r} not in {path.name}:\n{_read(path)}")


async def test_a_real_run_logs_each_forged_line_as_one_line(tmp_path: Path) -> None:
    """``mux run``: a multi-line text payload (log sink, ``events = true``), and a
    webhook receiver's multi-line error body (logged by the webhook's own logger)."""
    receiver = Receiver()
    receiver.script.append((400, [], f"bad request{FORGED}\n{ANSI}".encode()))
    config = tmp_path / "forged.toml"
    stderr = tmp_path / "stderr"
    async with serve_sse() as sse, serving(receiver) as port:
        await sse.publish(f"first line{FORGED}")
        await sse.publish("{}")
        config.write_text(
            f"""
[[sources]]
name = "train"
transport = "sse"
url = "{sse.url}"
decode = "text"

[[sinks]]
type = "log"
events = true

[[sinks]]
type = "webhook"
url = "http://127.0.0.1:{port}/hook"
events = true
batch = 1
"""
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}
        async with trio.open_nursery() as nursery:
            with stderr.open("wb") as err:
                process: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        [sys.executable, "-m", "mux_core", "run", str(config)],
                        check=False,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        env=env,
                    )
                )
            await receiver.wait_for(2)
            await _wait_for_text(stderr, "train: message id=2 seq=2", process)
            process.terminate()
            with trio.fail_after(15):
                assert await process.wait() == 0
    log = _read(stderr)
    forged = [line for line in log.split("\n") if "FORGED" in line]
    assert len(forged) == 2, log  # the payload's line, the webhook's error line
    assert all(" mux.engine: FORGED" not in line.split(": ", 1)[0] for line in forged)
    assert not [line for line in log.split("\n") if line.startswith("2026-01-01")]
    assert "\x1b" not in log
    assert "train: message id=1 seq=1 first line\\n2026-01-01" in log
