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
from collections.abc import Callable, Iterable, Sequence

import msgspec

from mux_core.records import Alert, Event, Quality, Record, Status
from mux_core.sink import ReplayControl, SourceInfo

__all__ = ["ReplayClock", "Timeline"]


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


class Timeline:
    """Several recordings replayed side by side, on one time line.

    ``mux replay a.jsonl b.jsonl`` feeds runs that may be days apart,
    interleaved by the time since each one's first record. One "now" cannot
    serve both: the older run's sources would read "3 days ago" and stale.
    Each record's time is moved by its recording's offset instead, so every
    recording starts where the first one seen did; what the view shows --
    ages, rates, staleness, retry countdowns -- is then each run's own.
    """

    def __init__(self, sources: Iterable[SourceInfo]) -> None:
        self._recording = {s.name: s.recording for s in sources if s.recording is not None}
        #: Recording label -> seconds added to its records' times.
        self._offsets: dict[str, float] = {}
        self._start: float | None = None

    def align(self, batch: Sequence[Record]) -> list[Record]:
        """``batch`` with each record's time on the common time line."""
        aligned: list[Record] = []
        for record in batch:
            label = self._recording.get(record.source)
            at = _time_of(record)
            if label is None or at is None:
                aligned.append(record)
                continue
            offset = self._offsets.get(label)
            if offset is None:
                if self._start is None:
                    self._start = at
                offset = self._offsets[label] = self._start - at
            aligned.append(_shifted(record, offset) if offset else record)
        return aligned


def _time_of(record: object) -> float | None:
    if type(record) is Event:
        return record.received_at
    if type(record) in (Status, Alert, Quality):
        return record.at  # type: ignore[attr-defined, no-any-return]
    return None


def _shifted(record: Record, offset: float) -> Record:
    if type(record) is Event:
        return msgspec.structs.replace(record, received_at=record.received_at + offset)
    return msgspec.structs.replace(record, at=record.at + offset)  # type: ignore[union-attr]
