"""Which JetStream messages every sink has: a repeat is acknowledged, not emitted again.

The server sends a message again when its ack did not arrive: the ack was
lost (nats-server 2.9 forgets the acks of its last ~0.1 s when it is
killed), never sent (mux killed between delivery and ack), or went to a
connection that was already gone. :class:`Delivered` remembers the stream
sequences the sinks have -- exactly, as ranges of consecutive sequences,
the newest ``MAX_RANGES`` of them -- and is kept as the source's resume
cursor, so ``mux run --state`` carries it across a restart of mux. Each
range keeps the newest time the stream stored one of its messages: a
message stored later under a sequence in the range is new (a stream that
lost its tail in a crash, or was made again, hands out sequences again).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from .jetstream import JsMessage

__all__ = ["MAX_RANGES", "Delivered"]

#: Ranges remembered. A consumer of a whole stream needs one; one with a
#: subject filter may need a range per message (other subjects between them).
MAX_RANGES = 1024

_Range = tuple[int, int, int]  # first sequence, last sequence, newest stored time (ns)


@attrs.frozen
class Delivered:
    """What the sinks have from one stream through one durable consumer; never changed
    in place (a checkpoint may hold the cursor it made while the next is built)."""

    stream: str
    durable: str
    subject: str
    ranges: tuple[_Range, ...] = ()

    @classmethod
    def of(cls, cursor: Any, *, stream: str, durable: str, subject: str) -> Delivered:
        """The cursor's ranges, when it was made for this stream, consumer and filter."""
        empty = cls(stream, durable, subject)
        if not isinstance(cursor, dict) or cursor.get("for") != [stream, durable, subject]:
            return empty
        ranges = cursor.get("delivered")
        if not isinstance(ranges, list):
            return empty
        kept = []
        for item in ranges:
            if not (
                isinstance(item, list) and len(item) == 3 and all(type(n) is int for n in item)
            ):
                return empty  # not a cursor this transport wrote: start with nothing
            kept.append((item[0], item[1], item[2]))
        return attrs.evolve(empty, ranges=tuple(kept))

    def cursor(self) -> dict[str, Any]:
        """JSON for ``session.resume.cursor``."""
        return {
            "for": [self.stream, self.durable, self.subject],
            "delivered": [list(r) for r in self.ranges],
        }

    def __contains__(self, message: JsMessage) -> bool:
        seq, stored = message.stream_seq, message.timestamp
        return any(first <= seq <= last and stored <= newest for first, last, newest in self.ranges)

    def adding(self, messages: Iterable[JsMessage]) -> Delivered:
        """These messages too: consecutive sequences merged, the oldest ranges dropped."""
        items = sorted(
            [*self.ranges, *((m.stream_seq, m.stream_seq, m.timestamp) for m in messages)]
        )
        merged: list[_Range] = []
        for first, last, newest in items:
            if merged and first <= merged[-1][1] + 1:
                before = merged[-1]
                merged[-1] = (before[0], max(before[1], last), max(before[2], newest))
            else:
                merged.append((first, last, newest))
        return attrs.evolve(self, ranges=tuple(merged[-MAX_RANGES:]))
