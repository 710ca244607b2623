"""Durable resume's checkpoints: save the resume states once what they cover is written.

See :mod:`mux_core._run.state` for the file and the guarantee; this is the timing.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from ..sink import Overflow, sink_member
from ..transport import ResumeState
from .sink_set import SinkSet
from .state import CHECKPOINT_INTERVAL, StateStore

__all__ = ["Checkpoints"]


class Checkpoints:
    """Saves ``states()`` into ``store`` every :data:`CHECKPOINT_INTERVAL` seconds."""

    def __init__(
        self,
        store: StateStore,
        sinks: SinkSet,
        states: Callable[[], dict[str, tuple[str, ResumeState]]],
    ) -> None:
        self._store = store
        self._sinks = sinks
        self._states = states

    async def run_periodically(self) -> None:
        while True:
            await trio.sleep(CHECKPOINT_INTERVAL)
            if not await self.checkpoint():
                return

    async def checkpoint(self) -> bool:
        """Save every source's resume state once what it covers is durable.

        The states are copied first; then every ``block`` sink is waited for
        until it has written what had entered its channel by then, and
        synced (``sink.sync()``: the file sink flushes, and fsyncs when
        ``fsync = true``); only then is the copy saved. False when a sink
        failed meanwhile: no more checkpoints (the final save is skipped too).
        """
        store = self._store
        snapshot = store.snapshot(self._states())
        marks = [
            (runner, runner.channel.entered)
            for runner in self._sinks.live
            if runner.channel.overflow is Overflow.BLOCK
        ]
        for runner, mark in marks:
            if not await runner.channel.wait_finished(mark):
                return False
        for runner, _ in marks:
            try:
                await sink_member(runner.sink, "sync")()
            except Exception:
                return False  # the sink's own task reports its failure
        await trio.to_thread.run_sync(store.save, snapshot)
        return True
