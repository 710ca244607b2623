"""Seq reservations of thousands of sources starting at once: a few writes, not one each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from mux_core._run.state import StateStore
from mux_core.transport import ResumeState


async def test_thousands_of_first_reservations_share_a_few_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(str(tmp_path))
    store.load()
    writes = 0
    write = store._write

    def counted(merged: dict[str, object]) -> None:
        nonlocal writes
        writes += 1
        write(merged)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_write", counted)
    names = [f"s{n:04}" for n in range(2000)]
    resumes = {name: store.resume_for(name, "sse") for name in names}

    async def first_event(name: str) -> None:
        await store.reserve(name, "sse", resumes[name], 0)

    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(first_event, name)
    # Every source may number its events, and only after its reservation was on disk.
    saved = json.loads((tmp_path / "mux-state.json").read_text())["sources"]
    for name, resume in resumes.items():
        assert resume.seq_reserved is not None and resume.seq_reserved > 0
        assert saved[name]["reserved"] >= resume.seq_reserved
    # One write per source was 2,000 fsynced writes of a growing file (minutes on a busy disk).
    assert writes <= 10, writes


async def test_a_reservation_waits_for_the_write_that_holds_it(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path))
    store.load()
    first, second = ResumeState(), ResumeState()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.reserve, "a", "sse", first, 0)
        nursery.start_soon(store.reserve, "b", "sse", second, 0)
    saved = json.loads((tmp_path / "mux-state.json").read_text())["sources"]
    assert saved["a"]["reserved"] == first.seq_reserved
    assert saved["b"]["reserved"] == second.seq_reserved
    # A later, bigger reservation of one of them is written again.
    await store.reserve("a", "sse", first, first.seq_reserved or 0)
    saved = json.loads((tmp_path / "mux-state.json").read_text())["sources"]
    assert saved["a"]["reserved"] == first.seq_reserved
    assert first.seq_reserved is not None and first.seq_reserved > saved["b"]["reserved"]
