"""The progress line of a long replay: on a terminal only, cleared at the end.

A real ``mux replay`` writes its stderr into a pseudo-terminal (and, to
compare, into a pipe); the line's figures are checked on the class itself
with a clock of the test's.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from mux_core._run.progress import ReplayProgress, clock_text, duration_text
from mux_core.records import Event, State, Status, encode_jsonl

T0 = 1_764_250_000.0


def _recording(path: Path, events: int) -> None:
    records: list[Event | Status] = [Status("train", "sse", State.CONNECTED, 1, None, "", T0)]
    records += [
        Event("train", "sse", "metric", str(n), {"step": n, "loss": 1.0 / n}, T0 + n, n)
        for n in range(1, events + 1)
    ]
    with open(path, "wb") as file:
        for start in range(0, len(records), 10_000):
            file.write(encode_jsonl(records[start : start + 10_000]))


def _replay(cwd: Path, *extra: str, stderr: int) -> subprocess.Popen[bytes]:
    (cwd / "rules.toml").write_text('[[processors]]\ntype = "nonfinite"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}
    return subprocess.Popen(
        [sys.executable, "-m", "mux_core", "replay", "run.jsonl", "--config", "rules.toml",
         "--alerts-only", *extra],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr,
    )  # fmt: skip


def _read_all(fd: int, process: subprocess.Popen[bytes]) -> bytes:
    """What the process wrote to the terminal, until it exits (EIO: the other end closed)."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    return b"".join(chunks)


def test_on_a_terminal_a_long_replay_shows_its_progress_and_clears_it(tmp_path: Path) -> None:
    _recording(tmp_path / "run.jsonl", 60_000)
    master, slave = os.openpty()
    try:
        process = _replay(tmp_path, stderr=slave)
        os.close(slave)
        slave = -1
        shown = _read_all(master, process).decode()
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert process.returncode == 0, shown
    frames = re.findall(r"\r\x1b\[K(replay: [^\r\n]*)", shown)
    assert frames, repr(shown[-2000:])
    first = frames[0]
    assert re.fullmatch(
        r"replay: [\d,]+ records  [\d,]+/s  at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(\+\d+:\d\d:\d\d\)"
        r"  \d+%  ETA \d+:\d\d:\d\d",
        first,
    ), first
    at = re.search(r" at (\S+ \S+) ", first)
    assert at is not None and clock_text(T0) <= at.group(1) <= clock_text(T0 + 60_000)
    # the last frame is taken off the terminal: nothing of it is left on the line
    assert "\r\x1b[K" in shown[shown.rfind("replay: ") :]
    assert process.stdout is not None
    assert process.stdout.read().startswith(b"no alerts")  # the table went to stdout


def test_off_a_terminal_and_with_q_there_is_no_progress_line(tmp_path: Path) -> None:
    _recording(tmp_path / "run.jsonl", 5_000)
    piped = _replay(tmp_path, stderr=subprocess.PIPE)
    _, err = piped.communicate(timeout=60)
    assert piped.returncode == 0
    assert b"\x1b" not in err and b"replay:" not in err
    master, slave = os.openpty()
    try:
        quiet = _replay(tmp_path, "-q", stderr=slave)
        os.close(slave)
        slave = -1
        shown = _read_all(master, quiet)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert quiet.returncode == 0
    assert b"replay:" not in shown and b"\x1b" not in shown


def test_the_line_tells_records_rate_recorded_time_and_time_left() -> None:
    now = [100.0]
    stream = io.StringIO()
    progress = ReplayProgress(stream, monotonic=lambda: now[0])
    progress.begin(total_bytes=1000)
    event = Event("train", "sse", "metric", "1", {"step": 1}, T0 + 3723, 1)
    now[0] = 102.0
    progress.update(10_000, 250, (3723.0, 0, event))
    assert stream.getvalue() == (
        f"\r\x1b[Kreplay: 10,000 records  5,000/s  at {clock_text(T0 + 3723)} (+1:02:03)"
        "  25%  ETA 0:00:06"
    )
    now[0] = 102.1  # within the redraw interval: nothing drawn
    progress.update(12_000, 300, (3800.0, 0, event))
    assert stream.getvalue().count("replay:") == 1
    # a log line first takes the progress line off the terminal
    handler = logging.StreamHandler(io.StringIO())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        progress.begin(total_bytes=1000)
        logging.getLogger("mux.test").warning("something")
        assert stream.getvalue().endswith("\r\x1b[K")
    finally:
        progress.close()
        root.removeHandler(handler)
    assert duration_text(90061) == "1 days, 1:01:01"
