""" "Now" for the view during ``mux replay``: the recording's time, at the replay's pace.

A live view takes "now" from :class:`mux_core.views.ViewClock` (the wall
clock, or the recording's time when records arrive late). A paced replay
needs more: while it is paused nothing arrives, and "now" on the wall
clock would run on -- every source would age, and go stale, on screen
only; at a quarter of the recorded pace a source sending ten events a
second would look quiet between them. :class:`ReplayClock` runs from the
newest record's time at the replay's speed, and stands still while the
replay is paused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from mux_core.sink import ReplayControl

__all__ = ["ReplayClock"]


class ReplayClock:
    """The recording's time, moving at ``replay.speed`` from the newest record seen."""

    def __init__(self, wall: Callable[[], float], replay: ReplayControl) -> None:
        self.wall = wall
        self.replay = replay
        #: The recording's time at :attr:`_wall_at` (None before a record).
        self._at: float | None = None
        self._wall_at = 0.0
        #: The pace "now" moves at since :attr:`_wall_at` (0 while paused).
        self._rate = self._pace()
        replay.watch(self._rebase)

    def _pace(self) -> float:
        speed = self.replay.speed
        return 0.0 if self.replay.paused or math.isinf(speed) else speed

    def saw(self, batch: Sequence[object]) -> None:
        """Note the time of the newest stamped record of ``batch``."""
        for record in reversed(batch):
            at = getattr(record, "received_at", None)
            if at is None:
                at = getattr(record, "at", None)
            if isinstance(at, float | int):
                self._at = float(at)
                self._wall_at = self.wall()
                return

    def _rebase(self) -> None:
        """The pace changed (paused, resumed, faster, slower): go on from now at the new one."""
        if self._at is not None:
            self._at = self()
            self._wall_at = self.wall()
        self._rate = self._pace()

    def __call__(self) -> float:
        if self._at is None:
            return self.wall()
        return self._at + max(self.wall() - self._wall_at, 0.0) * self._rate
