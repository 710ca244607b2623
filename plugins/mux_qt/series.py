"""Plot columns: every point of every curve, bounded, in numpy arrays.

A curve (one field of one source) is a list of *run segments*; a segment is
three columns -- ``t`` (``received_at``), ``s`` (the step field) and ``y`` --
plus, when the plot is smoothed, an EMA column. Points are appended to plain
Python lists on the hot path (a list append is ~30 ns; a numpy append is a
copy) and moved into a preallocated array in one block when the panel draws
(:meth:`Segment.flush`). The array holds ``2 * limit`` points and drops the
oldest half only when full, so keeping the newest ``limit`` points costs an
amortised copy per point, not one per frame.

An outage inside a segment is a row whose ``y`` is NaN (``x`` repeats the
last point's, so x stays sorted for pyqtgraph's clip-to-view); drawn with
``connect="finite"`` it leaves a gap instead of a diagonal.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["Segment", "ema"]

_FloatArray = npt.NDArray[np.float64]

#: Rows of a segment's array.
T, S, Y, E = 0, 1, 2, 3
_INITIAL_CAPACITY = 1024


def ema(values: _FloatArray, weight: float, state: float = math.nan) -> tuple[_FloatArray, float]:
    """The exponential moving average of ``values`` (``weight`` of the past, 0..1).

    Starts from ``state`` (NaN: from the first value). NaN values (gaps) give
    NaN and leave the average as it was. Returns the averages and the last
    state, so a column can be smoothed block by block as it grows.
    A Python loop (~80 ns a point): it runs once per new point, when the
    panel flushes, not per frame.
    """
    out = np.empty(len(values))
    keep = 1.0 - weight
    current = state
    for index, value in enumerate(values.tolist()):
        if value != value:  # NaN: a gap
            out[index] = math.nan
            continue
        current = value if current != current else current * weight + value * keep
        out[index] = current
    return out, current


class Segment:
    """One run segment of one curve: the newest ``limit`` points, oldest first.

    ``run`` numbers the source's run segments from 1 (a restart starts the
    next). Append with :meth:`add` or straight to :attr:`pending_t`,
    :attr:`pending_s`, :attr:`pending_y` (the three stay the same length);
    :meth:`flush` moves them into the columns.
    """

    __slots__ = (
        "_buf",
        "_changed",
        "_ema_state",
        "_end",
        "_start",
        "limit",
        "pending_s",
        "pending_t",
        "pending_y",
        "run",
        "smoothing",
    )

    def __init__(self, run: int, limit: int, *, smoothing: float = 0.0) -> None:
        self.run = run
        self.limit = limit
        self.smoothing = smoothing
        self.pending_t: list[float] = []
        self.pending_s: list[float] = []
        self.pending_y: list[float] = []
        self._buf: _FloatArray = np.empty((4, min(_INITIAL_CAPACITY, 2 * limit)))
        self._start = 0
        self._end = 0
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

    def add(self, t: float, s: float, y: float) -> None:
        self.pending_t.append(t)
        self.pending_s.append(s)
        self.pending_y.append(y)

    def last(self) -> tuple[float, float] | None:
        """``(t, s)`` of the newest row, or None when empty."""
        if self.pending_t:
            return self.pending_t[-1], self.pending_s[-1]
        if self._end > self._start:
            column = self._buf[:, self._end - 1]
            return float(column[T]), float(column[S])
        return None

    def gap(self) -> None:
        """End the line here: the next point starts a new stretch (an outage)."""
        last = self.last()
        if last is None or (self.pending_y and self.pending_y[-1] != self.pending_y[-1]):
            return  # nothing to break, or already broken
        self.add(last[0], last[1], math.nan)

    def flush(self) -> None:
        """Move the pending points into the columns, dropping the oldest beyond ``limit``."""
        count = len(self.pending_y)
        if not count:
            return
        block = np.array((self.pending_t, self.pending_s, self.pending_y), dtype=np.float64)
        self.pending_t.clear()
        self.pending_s.clear()
        self.pending_y.clear()
        if count > self.limit:
            block = block[:, -self.limit :]
            count = self.limit
        size = self._end - self._start
        if self._end + count > self._buf.shape[1]:
            keep = min(size, self.limit - count)
            capacity = self._buf.shape[1]
            if keep + count > capacity:
                capacity = min(max(2 * capacity, keep + count), 2 * self.limit)
            fresh: _FloatArray = np.empty((4, capacity))
            fresh[:, :keep] = self._buf[:, self._end - keep : self._end]
            self._buf, self._start, self._end = fresh, 0, keep
        end = self._end + count
        self._buf[:3, self._end : end] = block
        if self.smoothing > 0:
            self._buf[E, self._end : end], self._ema_state = ema(
                block[Y], self.smoothing, self._ema_state
            )
        self._end = end
        if end - self._start > self.limit:
            self._start = end - self.limit

    def set_smoothing(self, weight: float) -> None:
        """Smooth with a new EMA weight (0 = off): recomputes the column once."""
        if weight == self.smoothing:
            return
        self.flush()
        self.smoothing = weight
        self._ema_state = math.nan
        if weight > 0:
            rows = slice(self._start, self._end)
            self._buf[E, rows], self._ema_state = ema(self._buf[Y, rows], weight)
        self.dirty = True

    def column(self, row: int) -> _FloatArray:
        """A view of one column (:data:`T`, :data:`S`, :data:`Y` or :data:`E`), flushed."""
        self.flush()
        return self._buf[row, self._start : self._end]

    def values(self) -> _FloatArray:
        """The y values to draw: smoothed when smoothing is on."""
        return self.column(E if self.smoothing > 0 else Y)
