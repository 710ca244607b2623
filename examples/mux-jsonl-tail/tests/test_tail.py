"""The jsonl-tail transport against real files in tmp_path."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from conftest import Follower
from mux_jsonl_tail import TailCursor, TailOptions, TailTransport

from mux_core import Failed, ResumeState, ServerUnavailable, Status
from mux_core.testing import SessionResult, run_one_session

Follow = Callable[..., Follower]

#: How long a "nothing more must arrive" session runs (many polls at 0.01 s).
QUIET = 0.3


def tail(path: Path, **options: Any) -> TailTransport:
    options.setdefault("poll_interval", 0.01)
    return TailTransport(TailOptions(path=str(path), **options))


def lines(*objects: Any) -> str:
    return "".join(json.dumps(o) + "\n" for o in objects)


def statuses(result: SessionResult) -> list[Status]:
    return [r for r in result.records if type(r) is Status]


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write(text)


async def test_follows_appended_lines(tmp_path: Path, follow: Follow) -> None:
    log = tmp_path / "train.jsonl"
    log.write_text(lines({"step": 1}, {"step": 2}, {"step": 3}))
    follower = follow(tail(log))
    events = await follower.wait_events(3)
    assert follower.statuses[0].state == "connected"
    # The lines already there were one read: one batch.
    assert [len(b) for b in follower.batches[1:]] == [3]
    append(log, lines({"step": 4}, {"step": 5}))
    events = await follower.wait_events(5)
    assert [e.data for e in events] == [{"step": n} for n in range(1, 6)]
    assert [e.id for e in events] == ["1", "2", "3", "4", "5"]
    assert {e.event for e in events} == {"message"}


async def test_partial_last_line_waits_for_its_newline(tmp_path: Path, follow: Follow) -> None:
    log = tmp_path / "train.jsonl"
    log.write_text(lines({"step": 1}) + '{"step": ')
    follower = follow(tail(log))
    await follower.wait_events(1)  # the first read held the partial line too
    append(log, "2}\n")
    events = await follower.wait_events(2)
    assert [e.data for e in events] == [{"step": 1}, {"step": 2}]
    assert [e.id for e in events] == ["1", "2"]


async def test_partial_line_is_not_in_the_cursor(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    complete = lines({"step": 1})
    log.write_text(complete + '{"step": ')
    result = await run_one_session(tail(log), timeout=QUIET)
    assert result.error is None  # still following when the time was up
    assert [e.data for e in result.events] == [{"step": 1}]
    cursor = result.resume.cursor
    assert isinstance(cursor, TailCursor)
    assert (cursor.offset, cursor.line) == (len(complete), 1)


async def test_rotation_finishes_the_old_file_then_switches(tmp_path: Path, follow: Follow) -> None:
    log = tmp_path / "train.jsonl"
    log.write_text(lines({"old": 1}, {"old": 2}))
    follower = follow(tail(log))
    await follower.wait_events(2)
    append(log, '{"old": 3}')  # written just before rotation, without its newline
    log.rename(tmp_path / "train.jsonl.1")
    log.write_text(lines({"new": 1}, {"new": 2}))
    events = await follower.wait_events(5)
    assert [e.data for e in events] == [
        {"old": 1},
        {"old": 2},
        {"old": 3},
        {"new": 1},
        {"new": 2},
    ]
    assert [e.id for e in events] == ["1", "2", "3", "1", "2"]
    assert any("rotated" in s.detail for s in follower.statuses)
    cursor = follower.resume.cursor
    assert cursor.inode == os.stat(log).st_ino
    assert cursor.offset == log.stat().st_size


async def test_truncation_starts_again_from_zero(tmp_path: Path, follow: Follow) -> None:
    log = tmp_path / "train.jsonl"
    log.write_text(lines({"run": 1, "step": 1}, {"run": 1, "step": 2}))
    follower = follow(tail(log))
    await follower.wait_events(2)
    with log.open("r+") as file:  # the script restarted and truncated its log
        file.truncate(0)
        file.write(lines({"run": 2}))
    events = await follower.wait_events(3)
    assert events[2].data == {"run": 2}
    assert events[2].id == "1"
    assert any("truncated" in s.detail for s in follower.statuses)


async def test_resume_from_cursor_without_duplicates(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    log.write_text(lines(*({"step": n} for n in range(1, 4))))
    resume = ResumeState()
    first = await run_one_session(tail(log), resume=resume, timeout=QUIET)
    assert [e.data["step"] for e in first.events] == [1, 2, 3]

    append(log, lines({"step": 4}, {"step": 5}))
    # A new transport instance: the position lives in the resume state only.
    second = await run_one_session(tail(log), resume=resume, timeout=QUIET)
    assert [e.data["step"] for e in second.events] == [4, 5]
    assert [e.id for e in second.events] == ["4", "5"]
    assert [e.seq for e in second.events] == [4, 5]

    third = await run_one_session(tail(log), resume=resume, timeout=QUIET)
    assert third.events == []
    assert "resuming after line 5" in statuses(third)[0].detail


async def test_resume_after_the_file_was_replaced(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    log.write_text(lines({"a": 1}, {"a": 2}))
    resume = ResumeState()
    await run_one_session(tail(log), resume=resume, timeout=QUIET)
    replacement = tmp_path / "new.jsonl"
    replacement.write_text(lines({"b": 1}))
    replacement.rename(log)
    result = await run_one_session(tail(log), resume=resume, timeout=QUIET)
    assert [e.data for e in result.events] == [{"b": 1}]
    assert "replaced" in statuses(result)[0].detail


async def test_resume_after_truncation_while_disconnected(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    log.write_text(lines({"a": 1}, {"a": 2}))
    resume = ResumeState()
    await run_one_session(tail(log), resume=resume, timeout=QUIET)
    log.write_text(lines({"b": 1}))  # same inode, shorter
    result = await run_one_session(tail(log), resume=resume, timeout=QUIET)
    assert [e.data for e in result.events] == [{"b": 1}]


async def test_missing_file_is_server_unavailable(tmp_path: Path) -> None:
    log = tmp_path / "not-yet.jsonl"
    result = await run_one_session(tail(log), timeout=5)
    assert isinstance(result.error, ServerUnavailable)
    assert result.error.detail == f"waiting for {log} to appear"
    assert result.records == []


async def test_a_directory_is_failed(tmp_path: Path) -> None:
    result = await run_one_session(tail(tmp_path), timeout=5)
    assert isinstance(result.error, Failed)
    assert "directory" in result.error.detail.lower()


async def test_from_end_skips_existing_lines(tmp_path: Path, follow: Follow) -> None:
    log = tmp_path / "train.jsonl"
    log.write_text(lines({"old": 1}, {"old": 2}) + '{"half": ')
    follower = follow(tail(log, from_start=False))
    await follower.wait_for(lambda f: bool(f.statuses))
    assert "after line 2" in follower.statuses[0].detail
    append(log, "1}\n" + lines({"new": 1}))
    events = await follower.wait_events(2)
    assert [e.data for e in events] == [{"half": 1}, {"new": 1}]
    assert [e.id for e in events] == ["3", "4"]


async def test_text_lines_blank_lines_and_fields(tmp_path: Path) -> None:
    log = tmp_path / "train.jsonl"
    log.write_text(
        '{"kind": "metric", "step": 7, "loss": 0.5}\n'
        "\n"
        "Traceback (most recent call last):\r\n"
        '{"kind": "", "step": 8}\n'
        "[1, 2]\n"
    )
    result = await run_one_session(tail(log, id_field="step", event_field="kind"), timeout=QUIET)
    got = [(e.event, e.id, e.data) for e in result.events]
    assert got == [
        ("metric", "7", {"kind": "metric", "step": 7, "loss": 0.5}),
        ("message", None, "Traceback (most recent call last):"),
        ("message", "8", {"kind": "", "step": 8}),
        ("message", None, [1, 2]),
    ]
    # Without id_field the id is the line number; the blank line 2 counts.
    plain = await run_one_session(tail(log), timeout=QUIET)
    assert [e.id for e in plain.events] == ["1", "3", "4", "5"]


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        TailOptions(path="x.jsonl", poll_interval=0)
    with pytest.raises(ValueError, match="path"):
        TailOptions(path=" ")
    options = TailOptions(path="x.jsonl")
    assert attrs.asdict(options) == {
        "path": "x.jsonl",
        "poll_interval": 0.2,
        "from_start": True,
        "id_field": None,
        "event_field": None,
    }
