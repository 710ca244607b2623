"""A live session harness: follow what a transport emits while the test writes the file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
import trio

from mux_core import Event, Record, ResumeState, Session, SessionError, SharedResources, Status


class Follower:
    """Runs one session of a transport in the background and records what it sends."""

    def __init__(self, transport: Any, resume: ResumeState | None = None) -> None:
        self.transport = transport
        self.resume = resume if resume is not None else ResumeState()
        self.batches: list[Sequence[Record]] = []
        self.error: SessionError | None = None
        self.done = trio.Event()
        self._changed = trio.Event()

    @property
    def events(self) -> list[Event]:
        return [r for batch in self.batches for r in batch if type(r) is Event]

    @property
    def statuses(self) -> list[Status]:
        return [r for batch in self.batches for r in batch if type(r) is Status]

    async def _send(self, batch: Sequence[Record]) -> None:
        self.batches.append(batch)
        self._changed.set()
        self._changed = trio.Event()

    async def run(self) -> None:
        shared = SharedResources()
        session = Session(
            source="tail",
            transport="jsonl-tail",
            resume=self.resume,
            connect_timeout=5.0,
            shared=shared,
            send=self._send,
            attempt=1,
        )
        try:
            await self.transport.run_session(session)
        except SessionError as exc:
            self.error = exc
        finally:
            await shared.aclose()
            self.done.set()
            self._changed.set()

    async def wait_for(self, predicate: Callable[[Follower], bool], timeout: float = 5.0) -> None:
        """Wait (no sleeping) until ``predicate(self)`` holds; fail after ``timeout``."""
        with trio.fail_after(timeout):
            while not predicate(self):
                if self.done.is_set():
                    raise AssertionError(f"session ended early: {self.error!r}")
                await self._changed.wait()

    async def wait_events(self, count: int) -> list[Event]:
        await self.wait_for(lambda f: len(f.events) >= count)
        return self.events


@pytest.fixture
async def follow() -> AsyncIterator[Callable[..., Follower]]:
    """``follower = follow(transport)``: start a session that is cancelled at teardown."""
    async with trio.open_nursery() as nursery:

        def start(transport: Any, resume: ResumeState | None = None) -> Follower:
            follower = Follower(transport, resume)
            nursery.start_soon(follower.run)
            return follower

        yield start
        nursery.cancel_scope.cancel()
