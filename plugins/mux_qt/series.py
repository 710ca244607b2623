"""Plot columns: every point of every curve, bounded, in numpy arrays.

A curve (one field of one source) is a list of *run segments*; a segment is
columns -- ``t`` (the receive time, spread: below), ``s`` (the step field),
``p`` (the payload's own time, when a ``time_field`` is named), ``y`` (the
value as it came, NaN and infinities included) and ``d`` (what is drawn:
``y`` where it is finite, else NaN; the EMA when the plot is smoothed).
Points are appended to plain Python lists on the hot path (a list append is
~30 ns; a numpy append is a copy) and moved into a preallocated array in one
block when the panel draws (:meth:`Segment.flush`). The array holds
``2 * limit`` points and drops the oldest half only when full, so keeping
the newest ``limit`` points costs an amortised copy per point, not one per
frame.

An outage inside a segment is a *gap row*: ``y`` NaN, every x repeating the
last point's (x stays sorted for pyqtgraph's clip-to-view); drawn with
``connect="finite"`` it leaves a gap instead of a diagonal. A value that is
not finite is a row of its own (``y`` NaN or infinite, ``d`` NaN): the line
breaks there too, and the panel marks it.

Receive times are *spread*: the events of one read share one ``received_at``
(a REST page, an SSE read at a high rate), which by time would draw as a
staircase. At :meth:`Segment.flush`, a run of points with the same stamp is
spread evenly over the time since the previous stamp, the last one at the
stamp itself (:func:`spread`), so a page of ten events polled every second
is drawn a tenth of a second apart.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["Segment", "ema", "spread"]

_FloatArray = npt.NDArray[np.float64]

#: Rows of a segment's array: receive time, step, payload time, value, drawn value.
T, S, P, Y, D = 0, 1, 2, 3, 4
#: The old name of the drawn row (the EMA, when smoothing).
E = D
_ROWS = 5
_INITIAL_CAPACITY = 1024


def ema(values: _FloatArray, weight: float, state: float = math.nan) -> tuple[_FloatArray, float]:
    """The exponential moving average of ``values`` (``weight`` of the past, 0..1).

    Starts from ``state`` (NaN: from the first value). Values that are not
    finite (gaps, NaN, infinities) give NaN and leave the average as it was.
    Returns the averages and the last state, so a column can be smoothed
    block by block as it grows. A Python loop (~80 ns a point): it runs once
    per new point, when the panel flushes, not per frame.
    """
    out = np.empty(len(values))
    keep = 1.0 - weight
    current = state
    for index, value in enumerate(values.tolist()):
        if value - value != 0.0:  # NaN or infinite: a gap
            out[index] = math.nan
            continue
        current = value if current != current else current * weight + value * keep
        out[index] = current
    return out, current


def spread(stamps: _FloatArray, before: float) -> _FloatArray:
    """``stamps`` with each run of equal stamps spread over the time since the one before.

    A run of ``k`` points stamped ``t`` after the stamp ``t0`` goes to
    ``t - (t - t0) * (k - 1 - i) / k`` for ``i`` = 0..k-1: evenly, the last
    at ``t``, the first after ``t0``, so the result stays sorted. ``before``
    is the stamp before the first point (NaN: none; that run stays put).
    """
    count = len(stamps)
    if count < 2:
        return stamps
    starts = np.flatnonzero(np.concatenate(([True], stamps[1:] != stamps[:-1])))
    if len(starts) == count:
        return stamps
    lengths = np.diff(np.append(starts, count))
    heads = stamps[starts]
    spans = heads - np.concatenate(([before], heads[:-1]))
    spans = np.where(np.isfinite(spans) & (spans > 0), spans, 0.0)
    run_of = np.repeat(np.arange(len(starts)), lengths)
    position = np.arange(count) - starts[run_of]
    length = lengths[run_of]
    out: _FloatArray = stamps - spans[run_of] * (length - 1 - position) / length
    return out


class Segment:
    """One run segment of one curve: the newest ``limit`` points, oldest first.

    ``run`` numbers the source's run segments from 1 (a restart starts the
    next). Append with :meth:`add` or straight to :attr:`pending_t`,
    :attr:`pending_s`, :attr:`pending_y` (the three stay the same length;
    :attr:`pending_p` too when ``timed``: the points carry a payload time,
    else it stays empty); :meth:`flush` moves them into the columns.
    """

    __slots__ = (
        "_buf",
        "_changed",
        "_ema_state",
        "_end",
        "_flushed",
        "_gaps",
        "_last_stamp",
        "_start",
        "limit",
        "pending_p",
        "pending_s",
        "pending_t",
        "pending_y",
        "run",
        "smoothing",
        "timed",
    )

    def __init__(
        self, run: int, limit: int, *, smoothing: float = 0.0, timed: bool = False
    ) -> None:
        self.run = run
        self.limit = limit
        self.smoothing = smoothing
        #: Whether points carry a payload time (:attr:`pending_p` is appended to).
        self.timed = timed
        self.pending_t: list[float] = []
        self.pending_s: list[float] = []
        self.pending_p: list[float] = []
        self.pending_y: list[float] = []
        self._buf: _FloatArray = np.empty((_ROWS, min(_INITIAL_CAPACITY, 2 * limit)))
        self._start = 0
        self._end = 0
        #: Rows ever flushed (the absolute index of the next flushed row).
        self._flushed = 0
        #: Absolute indices of the gap rows still pending or kept.
        self._gaps: list[int] = []
        #: The newest receive time flushed, as received (before spreading).
        self._last_stamp = math.nan
        self._ema_state = math.nan
        self._changed = False

    @property
    def dirty(self) -> bool:
        """True when points were added (or smoothing changed) since the panel last drew it."""
        return self._changed or bool(self.pending_y)

    @dirty.setter
    def dirty(self, value: bool) -> None:
        self._changed = value

    def __len__(self) -> int:
        return self._end - self._start + len(self.pending_y)

    @property
    def total(self) -> int:
        """Rows ever added (gap rows included): the absolute index of the next one."""
        return self._flushed + len(self.pending_y)

    def add(self, t: float, s: float, y: float, p: float | None = None) -> None:
        self.pending_t.append(t)
        self.pending_s.append(s)
        if p is not None:
            self.pending_p.append(p)
        self.pending_y.append(y)

    def _row(self, index: int) -> tuple[float, float, float, float] | None:
        """``(t, s, p, y)`` of the row with absolute ``index`` (as received), if kept."""
        pending = index - self._flushed
        if pending >= 0:
            if pending >= len(self.pending_y):
                return None
            p = self.pending_p[pending] if pending < len(self.pending_p) else math.nan
            return self.pending_t[pending], self.pending_s[pending], p, self.pending_y[pending]
        column = self._end + pending
        if column < self._start:
            return None
        t, s, p, y = (float(v) for v in self._buf[:4, column])
        return t, s, p, y

    def last(self) -> tuple[float, float] | None:
        """``(t, s)`` of the newest row, or None when empty."""
        row = self._row(self.total - 1)
        return None if row is None else (row[0], row[1])

    def last_value(self) -> float | None:
        """The newest value as it came (NaN included), skipping a gap row; None when empty."""
        index = self.total - 1
        if self._gaps and self._gaps[-1] == index:
            index -= 1
        row = self._row(index)
        return None if row is None else row[3]

    def last_finite(self) -> float | None:
        """The newest finite value kept, or None."""
        for y in reversed(self.pending_y):
            if y - y == 0.0:
                return y
        kept = self._buf[Y, self._start : self._end]
        finite = np.flatnonzero(np.isfinite(kept))
        return float(kept[finite[-1]]) if len(finite) else None

    def gap(self) -> None:
        """End the line here: the next point starts a new stretch (an outage)."""
        index = self.total - 1
        row = self._row(index)
        if row is None or (self._gaps and self._gaps[-1] == index):
            return  # nothing to break, or already broken
        t, s, p, _ = row
        self._gaps.append(index + 1)
        self.add(t, s, math.nan, p if self.timed else None)

    def flush(self) -> None:
        """Move the pending points into the columns, dropping the oldest beyond ``limit``."""
        count = len(self.pending_y)
        if not count:
            return
        first = self._flushed
        p = self.pending_p if len(self.pending_p) == count else [math.nan] * count
        block = np.array((self.pending_t, self.pending_s, p, self.pending_y), dtype=np.float64)
        self.pending_t.clear()
        self.pending_s.clear()
        self.pending_p.clear()
        self.pending_y.clear()
        self._flushed += count
        block[T] = self._spread(block[T], first)
        if count > self.limit:
            block = block[:, -self.limit :]
            count = self.limit
        size = self._end - self._start
        if self._end + count > self._buf.shape[1]:
            keep = min(size, self.limit - count)
            capacity = self._buf.shape[1]
            if keep + count > capacity:
                capacity = min(max(2 * capacity, keep + count), 2 * self.limit)
            fresh: _FloatArray = np.empty((_ROWS, capacity))
            fresh[:, :keep] = self._buf[:, self._end - keep : self._end]
            self._buf, self._start, self._end = fresh, 0, keep
        end = self._end + count
        self._buf[:4, self._end : end] = block
        if self.smoothing > 0:
            self._buf[D, self._end : end], self._ema_state = ema(
                block[Y], self.smoothing, self._ema_state
            )
        else:
            y = block[Y]
            self._buf[D, self._end : end] = np.where(np.isfinite(y), y, np.nan)
        self._end = end
        if end - self._start > self.limit:
            self._start = end - self.limit
        oldest = self._flushed - (self._end - self._start)
        if self._gaps and self._gaps[0] < oldest:
            self._gaps = [index for index in self._gaps if index >= oldest]

    def _spread(self, stamps: _FloatArray, first: int) -> _FloatArray:
        """The block's receive times spread (:func:`spread`); gap rows follow their point."""
        gaps = [index - first for index in self._gaps if index >= first]
        if not gaps:
            out = spread(stamps, self._last_stamp)
            self._last_stamp = float(stamps[-1])
            return out
        points = np.ones(len(stamps), dtype=bool)
        points[gaps] = False
        out = stamps.copy()
        kept = np.flatnonzero(points)
        if len(kept):
            out[kept] = spread(stamps[kept], self._last_stamp)
            self._last_stamp = float(stamps[kept[-1]])
        for index in gaps:  # at the spread time of the point before it
            out[index] = out[index - 1] if index > 0 else out[index]
        return out

    def set_smoothing(self, weight: float) -> None:
        """Smooth with a new EMA weight (0 = off): recomputes the column once."""
        if weight == self.smoothing:
            return
        self.flush()
        self.smoothing = weight
        self._ema_state = math.nan
        rows = slice(self._start, self._end)
        if weight > 0:
            self._buf[D, rows], self._ema_state = ema(self._buf[Y, rows], weight)
        else:
            y = self._buf[Y, rows]
            self._buf[D, rows] = np.where(np.isfinite(y), y, np.nan)
        self.dirty = True

    def column(self, row: int) -> _FloatArray:
        """A view of one column (:data:`T`, :data:`S`, :data:`P`, :data:`Y`, :data:`D`), flushed."""
        self.flush()
        return self._buf[row, self._start : self._end]

    def values(self) -> _FloatArray:
        """The y values to draw: finite values (smoothed when smoothing is on), else NaN."""
        return self.column(D)

    def is_gap(self) -> npt.NDArray[np.bool_]:
        """Per kept row, whether it is a gap row (flushed)."""
        self.flush()
        mask = np.zeros(self._end - self._start, dtype=bool)
        oldest = self._flushed - (self._end - self._start)
        for index in self._gaps:
            if index >= oldest:
                mask[index - oldest] = True
        return mask
