"""Which streams a consumer names in its next read: a read costs what is new, not what is known.

Redis checks every stream a read names (a key lookup and an id comparison,
about a microsecond each), and a blocking read over many streams is woken
by an append to any one of them and then sent again over all of them. A read
of 15,000 per-source streams costs the same whether ten or all of them hold
something new, and old streams (trainers that finished long ago) cost as
much as live ones. :class:`ReadPlan` keeps that bounded, without I/O (the
transport does the reading):

* **hot** streams -- new ones, and those that gave entries within
  :data:`HOT_FOR` seconds -- are named in every round;
* **cold** streams are checked a slice at a time (:data:`COLD_SLICE` every
  :data:`COLD_PERIOD` seconds), in rotation: a cold stream that gets
  entries is found within ``cold / COLD_SLICE * COLD_PERIOD`` seconds and
  is hot from then on;
* one command names at most :data:`PER_COMMAND` streams; a round of several
  commands goes out pipelined and does not block (one command may);
* rounds are paced: a round that named N streams is followed by the next
  no sooner than ``N / CHECK_RATE`` seconds later, so a consumer asks Redis
  for at most about :data:`CHECK_RATE` stream checks a second however many
  streams it knows (a few percent of a core), and a busy round reads what
  piled up meanwhile in one go; and never sooner than :data:`MIN_ROUND`
  after the one before, so entries appended one at a time (a collector's
  sources trickling, each append waking a blocked read) are read a few
  dozen at a time: a thousand wake-ups a second cost a consumer more than
  the entries themselves.

With a bounded layout (``stream = "mux:{bucket}"``, a few dozen streams)
every stream stays hot, a round is one blocking command and none of this
costs anything; the plan matters for thousands of per-source streams.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Iterable

import attrs

__all__ = [
    "CHECK_RATE",
    "COLD_PERIOD",
    "COLD_SLICE",
    "HOT_FOR",
    "MIN_ROUND",
    "PER_COMMAND",
    "ReadPlan",
    "Round",
]

#: Streams named by one XREAD / XREADGROUP command, at most.
PER_COMMAND = 1000
#: Stream checks a second a consumer asks of Redis, at most (rounds are paced to it).
CHECK_RATE = 20_000.0
#: Seconds a stream stays hot after it was found or last gave entries.
HOT_FOR = 30.0
#: Seconds between the starts of two rounds, at least (a wait only when entries keep coming).
MIN_ROUND = 0.05
#: Cold streams checked per slice, and the seconds between two slices.
COLD_SLICE = 1000
COLD_PERIOD = 0.5


@attrs.frozen
class Round:
    """One round of reads: the keys of each command, and how long it may block."""

    #: The streams each command names (one command: it may block; several: pipelined).
    commands: list[list[bytes]]
    #: Seconds a single command may wait for new entries (None: do not block).
    block: float | None
    #: When the round may be sent (trio clock): pacing, or the next cold slice.
    start_at: float


def _whole(keys: list[bytes]) -> list[list[bytes]]:
    return [keys]


@attrs.define
class ReadPlan:
    """The streams a consumer knows, hot or cold, and the rounds that read them."""

    #: Splits keys into those one command may name together (a cluster: one hash slot each).
    together: Callable[[list[bytes]], list[list[bytes]]] = _whole
    per_command: int = PER_COMMAND
    check_rate: float = CHECK_RATE
    min_round: float = MIN_ROUND
    hot_for: float = HOT_FOR
    cold_slice: int = COLD_SLICE
    cold_period: float = COLD_PERIOD
    #: Hot streams: when each last gave entries (or was found).
    hot: dict[bytes, float] = attrs.field(factory=dict)
    #: Cold streams in rotation: (key, generation); stale generations are skipped.
    _cold: collections.deque[tuple[bytes, int]] = attrs.field(factory=collections.deque)
    _cold_gen: dict[bytes, int] = attrs.field(factory=dict)
    _next_gen: int = 0
    _next_cold: float = -math.inf
    _next_cool: float = -math.inf
    _not_before: float = -math.inf

    @property
    def keys(self) -> list[bytes]:
        """Every stream known, hot ones first."""
        return [*self.hot, *self._cold_gen]

    def __len__(self) -> int:
        return len(self.hot) + len(self._cold_gen)

    def __contains__(self, key: bytes) -> bool:
        return key in self.hot or key in self._cold_gen

    @property
    def cold(self) -> int:
        """How many streams are cold."""
        return len(self._cold_gen)

    def add(self, keys: Iterable[bytes], now: float) -> None:
        """Streams found: hot, so their first entries are read at once."""
        self.saw(keys, now)

    def saw(self, keys: Iterable[bytes], now: float) -> None:
        """These streams gave entries at ``now``: hot (again)."""
        hot = self.hot
        for key in keys:
            hot[key] = now
            self._cold_gen.pop(key, None)  # its place in the rotation is skipped

    def next_round(self, now: float, block: float) -> Round:
        """The next round at ``now``; ``block`` is the longest a read may wait."""
        self._cool(now)
        keys = list(self.hot)
        cold_due = bool(self._cold_gen) and now >= self._next_cold
        if cold_due:
            keys.extend(self._cold_slice())
            self._next_cold = now + self.cold_period
        start_at = max(now, self._not_before)
        if not keys:  # only cold streams, none due: wait for the next slice
            return Round([], None, max(start_at, self._next_cold))
        commands = [
            group[start : start + self.per_command]
            for group in self.together(keys)
            for start in range(0, len(group), self.per_command)
        ]
        self._not_before = start_at + max(self.min_round, len(keys) / self.check_rate)
        if len(commands) > 1:
            return Round(commands, None, start_at)
        if self._cold_gen:  # wake for the next cold slice
            block = min(block, max(0.001, self._next_cold - start_at))
        return Round(commands, block, start_at)

    def _cool(self, now: float) -> None:
        """Hot streams quiet for longer than ``hot_for`` join the rotation (once a second)."""
        if now < self._next_cool:
            return
        self._next_cool = now + 1.0
        limit = now - self.hot_for
        quiet = [key for key, seen in self.hot.items() if seen < limit]
        for key in quiet:
            del self.hot[key]
            self._next_gen += 1
            self._cold_gen[key] = self._next_gen
            self._cold.append((key, self._next_gen))

    def _cold_slice(self) -> list[bytes]:
        """The next cold streams in rotation, each put back at the end."""
        taken: list[bytes] = []
        seen: set[bytes] = set()
        cold, gens = self._cold, self._cold_gen
        while cold and len(taken) < self.cold_slice:
            key, gen = cold.popleft()
            if gens.get(key) != gen:
                continue  # hot again since, or re-queued under a newer generation
            if key in seen:  # fewer cold streams than a slice: once round is enough
                cold.appendleft((key, gen))
                break
            seen.add(key)
            taken.append(key)
            cold.append((key, gen))
        return taken
