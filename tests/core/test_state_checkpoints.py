"""Checkpoints that take only the sources that moved (and every state now and then)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from mux_core._run.state import FULL_EVERY, Checkpoints, StateStore
from mux_core.transport import ResumeState


class _Sinks:
    """Stands in for the run's SinkSet: every sink settles (or has failed)."""

    def __init__(self) -> None:
        self.settled = 0
        self.failed = False

    async def settle(self, *, blocking_only: bool = False) -> bool:
        await trio.lowlevel.checkpoint()
        self.settled += 1
        return not self.failed


class _Run:
    """Sources' resume states, and the ones that handed over a batch since asked."""

    def __init__(self, names: list[str]) -> None:
        self.resumes = {name: ResumeState(seq_reserved=0) for name in names}
        self.moved: set[str] = set()
        self.full_takes = 0

    def emit(self, name: str, event_id: str) -> None:
        resume = self.resumes[name]
        resume.seq += 1
        resume.last_id = event_id
        self.moved.add(name)

    def states(self) -> dict[str, tuple[str, ResumeState]]:
        self.full_takes += 1
        return {name: ("sse", resume) for name, resume in self.resumes.items()}

    def take_moved(self) -> dict[str, tuple[str, ResumeState]]:
        moved, self.moved = self.moved, set()
        return {name: ("sse", self.resumes[name]) for name in moved}


def _counting_writes(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    writes: list[int] = []
    write = store._write

    def counted(merged: dict[str, object]) -> None:
        writes.append(len(merged))
        write(merged)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_write", counted)
    return writes


def _saved(path: Path) -> dict[str, dict[str, object]]:
    return json.loads((path / "mux-state.json").read_text())["sources"]  # type: ignore[no-any-return]


async def test_a_checkpoint_where_nothing_moved_copies_settles_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(str(tmp_path))
    store.load()
    writes = _counting_writes(store, monkeypatch)
    run = _Run([f"s{n}" for n in range(100)])
    sinks = _Sinks()
    checkpoints = Checkpoints(store, sinks, run.states, run.take_moved)  # type: ignore[arg-type]
    for name in run.resumes:
        run.emit(name, "1")
    assert await checkpoint_n(checkpoints, 1)  # the first is a full one
    assert run.full_takes == 1 and len(writes) == 1 and sinks.settled == 1
    assert all(saved["last_id"] == "1" for saved in _saved(tmp_path).values())
    # Idle: no state taken, no sink settled, no write.
    assert await checkpoint_n(checkpoints, 5)
    assert run.full_takes == 1 and len(writes) == 1 and sinks.settled == 1
    # One source moves: it alone is taken; the file holds it and every other as before.
    run.emit("s7", "2")
    assert await checkpoint_n(checkpoints, 1)
    assert run.full_takes == 1 and len(writes) == 2 and sinks.settled == 2
    saved = _saved(tmp_path)
    assert saved["s7"]["last_id"] == "2" and saved["s7"]["seq"] == 2
    assert len(saved) == 100
    assert all(saved[f"s{n}"]["last_id"] == "1" for n in range(100) if n != 7)
    # A partial checkpoint does not take the sources it did not see for departed.
    assert all(source.get("left_at") is None for source in saved.values())


async def test_a_position_moved_outside_a_batch_is_saved_by_the_next_full_checkpoint(
    tmp_path: Path,
) -> None:
    store = StateStore(str(tmp_path))
    store.load()
    run = _Run(["a", "b"])
    checkpoints = Checkpoints(store, _Sinks(), run.states, run.take_moved)  # type: ignore[arg-type]
    run.emit("a", "1")
    assert await checkpoint_n(checkpoints, 1)
    # A transport that moves its cursor itself (no batch: not noted as moved).
    run.resumes["b"].cursor = {"page": 3}
    assert await checkpoint_n(checkpoints, FULL_EVERY - 1)
    assert _saved(tmp_path)["b"]["cursor"] is None
    assert await checkpoint_n(checkpoints, 1)
    assert _saved(tmp_path)["b"]["cursor"] == {"page": 3}
    # A source that no longer runs is found by the full one too.
    del run.resumes["a"]
    assert await checkpoint_n(checkpoints, FULL_EVERY)
    assert _saved(tmp_path)["a"]["left_at"] is not None


async def test_a_sink_that_failed_stops_the_checkpoints_once_something_moved(
    tmp_path: Path,
) -> None:
    store = StateStore(str(tmp_path))
    store.load()
    run = _Run(["a"])
    sinks = _Sinks()
    checkpoints = Checkpoints(store, sinks, run.states, run.take_moved)  # type: ignore[arg-type]
    run.emit("a", "1")
    assert await checkpoint_n(checkpoints, 1)
    sinks.failed = True
    run.emit("a", "2")
    assert not await checkpoints.checkpoint()
    assert _saved(tmp_path)["a"]["last_id"] == "1"  # never ahead of the sinks


async def test_without_moved_every_checkpoint_takes_every_state(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    store.load()
    run = _Run(["a"])
    checkpoints = Checkpoints(store, _Sinks(), run.states)  # type: ignore[arg-type]
    assert await checkpoint_n(checkpoints, 3)
    assert run.full_takes == 3


async def checkpoint_n(checkpoints: Checkpoints, n: int) -> bool:
    for _ in range(n):
        if not await checkpoints.checkpoint():
            return False
    return True
