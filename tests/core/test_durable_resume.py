"""Durable resume (``--state DIR`` / ``state_dir``): a restarted ``mux run`` goes on.

Real fake servers, real ``mux run`` processes, one JSON Lines file appended
to by both runs: every event must be in it exactly once, in order, with
``seq`` counting on across the restart -- after a clean stop (SIGTERM) and
after ``kill -9`` (the events written after the last checkpoint come again
from the server, and the file sink recognises them by id, type and payload).
After a crash, ``seq`` goes on past every value the crashed run may have
handed out (it jumps), so ``(source, seq)`` never names two events.
"""

from __future__ import annotations

import json
import signal
from functools import partial
from pathlib import Path
from typing import Any

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
    seqs = [int(str(s)) for _, s in events]
    if how == "sigterm":
        assert seqs == list(range(1, 501))  # a clean stop: seq counts on exactly
    else:
        assert seqs[:400] == list(range(1, 401))
        assert seqs == sorted(set(seqs))  # after a crash it may jump, never repeat
    saved = json.loads((state / "mux-state.json").read_text())
    assert saved["sources"]["train"]["seq"] == seqs[-1]
    assert saved["sources"]["train"]["reserved"] == seqs[-1]  # shrunk at the clean stop
    assert saved["sources"]["train"]["transport"] == transport


async def test_the_state_file_is_written_atomically_and_read_back(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "s"))
    store.load()
    assert store.covered_seq("a") is None
    fresh = store.resume_for("a", "sse")
    assert (fresh.seq, fresh.last_id, fresh.seq_reserved) == (0, None, 0)
    live = {"a": ("sse", ResumeState(last_id="41", seq=41)), "b": ("rest", ResumeState(seq=3))}
    await store.save(store.snapshot(live))
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["mux-state.json"]
    again = StateStore(str(tmp_path / "s"))
    again.load()
    resumed = again.resume_for("a", "sse")
    assert (resumed.last_id, resumed.seq) == ("41", 41)
    assert again.covered_seq("a") == 41
    # A source whose transport changed starts afresh (its ids mean something
    # else), but its seq goes on: (source, seq) never names two events.
    changed = again.resume_for("a", "ws")
    assert (changed.last_id, changed.seq) == (None, 41)
    # A source left out of a later run keeps its saved place.
    await again.save(again.snapshot({"b": ("rest", ResumeState(seq=9))}))
    third = StateStore(str(tmp_path / "s"))
    third.load()
    assert third.resume_for("a", "sse").last_id == "41"
    assert third.resume_for("b", "rest").seq == 9


async def test_a_reservation_is_on_disk_before_it_returns_and_survives_a_checkpoint(
    tmp_path: Path,
) -> None:
    store = StateStore(str(tmp_path))
    store.load()
    resume = store.resume_for("a", "sse")
    await store.reserve("a", "sse", resume, 5)
    assert resume.seq_reserved is not None and resume.seq_reserved > 5
    on_disk = json.loads((tmp_path / "mux-state.json").read_text())["sources"]["a"]
    assert on_disk["reserved"] == resume.seq_reserved and on_disk["seq"] == 0
    # A checkpoint covering fewer events keeps the reservation ...
    resume.seq = 5
    await store.save(store.snapshot({"a": ("sse", resume)}))
    crashed = StateStore(str(tmp_path))
    crashed.load()
    # ... so a run restarted after a crash numbers on past it.
    after = crashed.resume_for("a", "sse")
    assert after.seq == resume.seq_reserved
    assert crashed.covered_seq("a") == 5
    # A final save (clean stop: nothing past seq was handed out) shrinks it.
    await store.save(store.snapshot({"a": ("sse", resume)}, final=True), final=True)
    clean = StateStore(str(tmp_path))
    clean.load()
    assert clean.resume_for("a", "sse").seq == 5


def test_an_unreadable_state_file_is_reported_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "mux-state.json").write_bytes(b"\x00garbage{")
    store = StateStore(str(tmp_path))
    store.load()
    assert store.covered_seq("a") is None
    assert store.resume_for("a", "sse").seq == 0
    assert "not a mux state file" in caplog.text


class _LiveOnlyTrainer:
    """An SSE server that streams only new events, without ids (nothing to
    resume from), and remembers what it sent on each connection."""

    def __init__(self) -> None:
        self.counter = 0
        self.sent: list[list[int]] = []
        self.connected = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            head += chunk
        sent: list[int] = []
        self.sent.append(sent)
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"cache-control: no-cache\r\nconnection: close\r\n\r\n"
        )
        self.connected.set()
        try:
            while True:
                self.counter += 1
                await stream.send_all(b'data: {"n": %d}\n\n' % self.counter)
                sent.append(self.counter)
                await trio.sleep(0.002)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def test_a_source_that_cannot_resume_loses_no_new_event_to_a_seq_collision(
    tmp_path: Path,
) -> None:
    """kill -9 mid-stream, restart with the same --state: the second run's
    events all reach the file (seq values of the crashed run are never
    handed out again, so the file sink cannot mistake them for repeats)."""
    out = tmp_path / "events.jsonl"
    state = tmp_path / "state"
    trainer = _LiveOnlyTrainer()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, trainer.handle, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        url = f"http://127.0.0.1:{port}/events"
        toml = FAST_RETRY + source_toml("train", "sse", url) + _file_sink(out)
        config = write_config(tmp_path / "m.toml", toml)

        def n_of(records: list[dict[str, Any]]) -> list[int]:
            return [
                int(r["data"]["n"])
                for r in records
                if r["type"] == "event" and r["source"] == "train"
            ]

        first = await start_mux(nursery, config, "--state", str(state))
        await _wait_for_path(state / "mux-state.json")
        # Past a checkpoint, with events written after it: kill then.
        await wait_for_file(out, lambda r: len(n_of(r)) >= 600, process=first)
        first.send_signal(signal.SIGKILL)
        await wait_exit(first, config)
        second = await start_mux(nursery, config, "--state", str(state))
        await wait_for_file(out, lambda r: len(n_of(r)) >= 1500, process=second)
        assert await terminate(second, config) == 0
        nursery.cancel_scope.cancel()
    records = read_jsonl(out)
    kept = n_of(records)
    seqs = [r["seq"] for r in records if r["type"] == "event" and r["source"] == "train"]
    assert len(trainer.sent) == 2
    # Everything the second run read is in the file (it stopped cleanly; the
    # server may have sent a last event it never read), none of it dropped as
    # a "repeat".
    newest = max(kept)
    second_run = {n for n in trainer.sent[1] if n <= newest}
    assert len(second_run) > 500
    assert second_run <= set(kept)
    assert len(kept) == len(set(kept))  # and nothing twice
    assert len(seqs) == len(set(seqs))  # (source, seq) names one event


async def test_sources_that_no_longer_run_are_forgotten_after_a_grace_or_a_cap(
    tmp_path: Path,
) -> None:
    """Discovery churn (8 generations of 1,000 sources) keeps the state file
    bounded: at most MAX_DEPARTED places of departed sources, none older
    than FORGET_AFTER; a source back within the grace resumes."""
    now = [1_000_000.0]
    store = StateStore(str(tmp_path), max_departed=1_500, clock=lambda: now[0])
    store.load()
    for generation in range(8):
        live = {
            f"g{generation}-{i}": ("sse", ResumeState(last_id="7", seq=7)) for i in range(1_000)
        }
        await store.save(store.snapshot(live))
        now[0] += 60
    saved = json.loads((tmp_path / "mux-state.json").read_text())["sources"]
    assert len(saved) == 1_000 + 1_500  # the live generation and the newest departed
    assert "g7-0" in saved and "g6-0" in saved and "g0-0" not in saved
    # Back within the grace: its place is there.
    assert store.resume_for("g6-5", "sse").last_id == "7"
    # A day later every departed source is forgotten.
    now[0] += 24 * 3600 + 1
    await store.save(store.snapshot({"g7-0": ("sse", ResumeState(seq=8))}))
    saved = json.loads((tmp_path / "mux-state.json").read_text())["sources"]
    # Left: g7 (departed only now) and g6-5 (resumed above, so it ran again).
    assert len(saved) == 1_001 and "g6-5" in saved
    assert not [name for name in saved if name.startswith(("g5", "g6-0"))]
