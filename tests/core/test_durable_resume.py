"""Durable resume (``--state DIR`` / ``state_dir``): a restarted ``mux run`` goes on.

Real fake servers, real ``mux run`` processes, one JSON Lines file appended
to by both runs: every event must be in it exactly once, in order, with
``seq`` counting on across the restart -- after a clean stop (SIGTERM) and
after ``kill -9`` (the events written after the last checkpoint come again
from the server and the file sink recognises them by ``(source, seq)``).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import trio

from mux_core._run.state import StateStore
from mux_core.transport import ResumeState
from tests.helpers.e2e import (
    FAST_RETRY,
    file_ids,
    publish_range,
    read_jsonl,
    serve,
    source_toml,
    start_mux,
    terminate,
    wait_exit,
    wait_for_file,
    write_config,
)


def _events(records: list[dict[str, object]], source: str) -> list[tuple[object, object]]:
    return [(r["id"], r["seq"]) for r in records if r["type"] == "event" and r["source"] == source]


async def _wait_for_path(path: Path) -> None:
    with trio.fail_after(10):
        while not await trio.Path(path).exists():  # noqa: ASYNC110 -- another process writes it
            await trio.sleep(0.02)


def _file_sink(path: Path) -> str:
    return f'\n[[sinks]]\ntype = "file"\npath = "{path}"\nflush_interval = 0.05\n'


@pytest.mark.parametrize("transport", ["sse", "ws", "rest"])
@pytest.mark.parametrize("how", ["sigterm", "kill"])
async def test_a_restarted_monitor_records_each_event_once(
    tmp_path: Path, transport: str, how: str
) -> None:
    out = tmp_path / "events.jsonl"
    state = tmp_path / "state"
    async with serve(transport) as server:
        toml = FAST_RETRY + source_toml("train", transport, server.url) + _file_sink(out)
        config = write_config(tmp_path / "m.toml", toml)
        await publish_range(server, 1, 300)
        async with trio.open_nursery() as nursery:
            first = await start_mux(nursery, config, "--state", str(state))
            await wait_for_file(out, lambda r: len(file_ids(r, "train")) >= 300, process=first)
            # The state file is written by a checkpoint once the file holds them
            # (a file another process writes can only be polled).
            await _wait_for_path(state / "mux-state.json")
            await publish_range(server, 301, 400)
            await wait_for_file(out, lambda r: len(file_ids(r, "train")) >= 400, process=first)
            if how == "kill":
                first.send_signal(signal.SIGKILL)
                await wait_exit(first, config)
            else:
                assert await terminate(first, config) == 0
            # While no monitor runs, the trainer goes on.
            await publish_range(server, 401, 500)
            second = await start_mux(nursery, config, "--state", str(state))
            records = await wait_for_file(
                out, lambda r: "500" in file_ids(r, "train"), process=second
            )
            assert await terminate(second, config) == 0
    records = read_jsonl(out)
    events = _events(records, "train")
    assert [i for i, _ in events] == [str(n) for n in range(1, 501)]  # none lost, none twice
    assert [s for _, s in events] == list(range(1, 501))  # seq counts on across runs
    saved = json.loads((state / "mux-state.json").read_text())
    assert saved["sources"]["train"]["seq"] == 500
    assert saved["sources"]["train"]["transport"] == transport


def test_the_state_file_is_written_atomically_and_read_back(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "s"))
    store.load()
    assert store.resume_for("a", "sse") is None
    live = {"a": ("sse", ResumeState(last_id="41", seq=41)), "b": ("rest", ResumeState(seq=3))}
    store.save(store.snapshot(live))
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["mux-state.json"]
    again = StateStore(str(tmp_path / "s"))
    again.load()
    resumed = again.resume_for("a", "sse")
    assert resumed is not None and (resumed.last_id, resumed.seq) == ("41", 41)
    # A source whose transport changed starts afresh: its ids mean something else.
    assert again.resume_for("a", "ws") is None
    # A source left out of a later run keeps its saved place.
    again.save(again.snapshot({"b": ("rest", ResumeState(seq=9))}))
    third = StateStore(str(tmp_path / "s"))
    third.load()
    assert third.resume_for("a", "sse") is not None
    b = third.resume_for("b", "rest")
    assert b is not None and b.seq == 9


def test_an_unreadable_state_file_is_reported_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "mux-state.json").write_bytes(b"\x00garbage{")
    store = StateStore(str(tmp_path))
    store.load()
    assert store.resume_for("a", "sse") is None
    assert "not a mux state file" in caplog.text
