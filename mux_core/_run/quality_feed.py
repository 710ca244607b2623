"""The engine's side of connection quality: one tracker per source, its records sent.

Each source's :class:`~mux_core._run.quality.QualityTracker` sees the source's
batches in its own task (the engine's sender calls :meth:`QualityFeed.tracker`
once per source); every ``quality_interval`` seconds :meth:`QualityFeed.report`
sends a Quality record per live source through the fan-out; a source's last
Quality goes right before its terminal Status (:meth:`with_last`), which stays
the source's last record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import trio

from .._config import SourceConfig
from ..records import Quality, Record
from .quality import QualityTracker
from .sink_set import SinkSet
from .source_set import SourceRunner

__all__ = ["QualityFeed"]


class QualityFeed:
    """The quality trackers of a run's sources and the records they make."""

    def __init__(self, sinks: SinkSet, *, interval: float) -> None:
        self._sinks = sinks
        #: The run's sources, whose trackers report (set once the set exists).
        self.sources: Iterable[SourceRunner] = ()
        #: Seconds between two reports (``quality_interval``, fixed for the run); 0 = off.
        self.interval = interval
        #: Each source's tracker, by name (a restarted source gets a new one).
        self._trackers: dict[str, QualityTracker] = {}
        #: Each source's last Quality, taken at its terminal state.
        self.final: dict[str, Quality] = {}

    def track(self, cfg: SourceConfig, *, window: float) -> None:
        """A new tracker for a source about to start (``window``: ``quality_window``)."""
        self._trackers[cfg.name] = QualityTracker(
            cfg.name,
            cfg.transport,
            window=window,
            lag_field=cfg.lag_field,
            stale_after=cfg.stale_after,
        )

    def tracker(self, name: str) -> QualityTracker | None:
        return self._trackers.get(name)

    def with_last(self, tracker: QualityTracker, batch: Sequence[Record]) -> list[Record]:
        """The batch with the terminal Status, after the source's last Quality."""
        tracker.reported_end = True
        last = self.final[tracker.source] = tracker.snapshot(self._sinks.dropped())
        if self.interval <= 0:
            return list(batch)
        return [last, *batch]

    async def report(self, scope: trio.CancelScope, send: Callable[[list[Quality]], Any]) -> None:
        """Every ``quality_interval`` seconds, each source's Quality through ``send``."""
        interval = self.interval
        if interval <= 0:
            return
        with scope:
            while True:
                await trio.sleep(interval)
                records = self._records()
                if records:
                    await send(records)

    def keep_final(self) -> None:
        """Every source's last Quality for the result (taken at its terminal state)."""
        dropped = self._sinks.dropped()
        final = {}
        for runner in self.sources:
            name = runner.name
            tracker = self._trackers.get(name)
            if name in self.final:
                final[name] = self.final[name]
            elif tracker is not None:  # the source's task never got that far
                final[name] = tracker.snapshot(dropped)
        self.final = final

    def _records(self) -> list[Quality]:
        """A Quality record per source still running (an ended one sent its last)."""
        dropped = self._sinks.dropped()
        trackers = [self._trackers.get(runner.name) for runner in self.sources]
        return [t.snapshot(dropped) for t in trackers if t is not None and t.ended_at is None]
