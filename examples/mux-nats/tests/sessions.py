"""One session of a transport in the background, for tests that act once it is connected."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from mux_core import State, Status
from mux_core.testing import SessionResult, run_one_session


class Running:
    def __init__(self) -> None:
        #: Set once the session reported ``connected`` (or ended without it).
        self.connected = trio.Event()
        self.result: SessionResult | None = None
        self.ended = trio.Event()


@asynccontextmanager
async def running(
    transport: Any, until: Callable[[SessionResult], bool] | None = None, **kwargs: Any
) -> AsyncIterator[Running]:
    """Run one session while the block runs; on leaving, wait (10 s at most) for it to end."""
    session = Running()

    def check(result: SessionResult) -> bool:
        if any(type(r) is Status and r.state is State.CONNECTED for r in result.records):
            session.connected.set()
        return until is not None and until(result)

    async def run() -> None:
        session.result = await run_one_session(transport, until=check, **kwargs)
        session.connected.set()
        session.ended.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        with trio.fail_after(10):
            await session.connected.wait()
        yield session
        with trio.fail_after(10):
            await session.ended.wait()
