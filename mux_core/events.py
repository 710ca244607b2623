"""The records that flow through mux's one channel, and their JSON Lines form.

Two frozen, slotted attrs classes travel from the sources to every sink:

* :class:`Event` -- one message a server sent (an SSE event, a WebSocket
  message, one item of a REST poll);
* :class:`Status` -- one change in a source's connection state.

They travel in *batches* (lists): everything a transport parsed from one read
is handed over at once, because a channel hand-off costs the same for one
record as for a list of sixty-four (see DESIGN.md).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

import attrs
import orjson

__all__ = [
    "Batch",
    "Event",
    "Record",
    "State",
    "Status",
    "encode_jsonl",
    "record_to_dict",
]


class State(enum.StrEnum):
    """The connection state of one source, as the supervisor reports it."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    SERVER_UNAVAILABLE = "server_unavailable"
    MAX_RETRIES_EXCEEDED = "max_retries_exceeded"
    FAILED = "failed"
    ENDED = "ended"
    STOPPED = "stopped"

    @property
    def terminal(self) -> bool:
        """True for states after which the source never reports again."""
        return self in _TERMINAL_STATES


_TERMINAL_STATES = frozenset({State.MAX_RETRIES_EXCEEDED, State.FAILED, State.ENDED, State.STOPPED})


# No ``__weakref__`` slot: nothing keeps weak references to events, and
# without it ``Session.emit`` can build Events through a plain twin class and
# switch ``__class__`` (CPython refuses that switch when the layouts differ by
# a weakref slot), at half the cost of this frozen class's ``__init__``.
@attrs.frozen(slots=True, weakref_slot=False)
class Event:
    """One message received from a source."""

    #: The source's unique name from the config.
    source: str
    #: The transport type that received it ("sse", "ws", "rest", ...).
    transport: str
    #: The event type: SSE ``event:`` field, a WS/REST ``event_field``; default "message".
    event: str
    #: The last event id in effect (SSE) or the ``id_field`` value as a string; None if none.
    id: str | None
    #: The payload: decoded JSON when it parses (decode = "auto"), else the text.
    data: Any
    #: Wall-clock time (``time.time()``) when mux received it.
    received_at: float
    #: A per-source counter assigned by the core, starting at 1.
    seq: int


@attrs.frozen(slots=True)
class Status:
    """A change of a source's connection state."""

    source: str
    transport: str
    state: State
    #: The number of the current attempt in a row of consecutive failures (1 = first).
    attempt: int
    #: Seconds until the next attempt, when one is scheduled; else None.
    retry_in: float | None
    #: A short human-readable reason ("connection refused", "HTTP 503", ...).
    detail: str
    #: Wall-clock time of the transition.
    at: float


Record: TypeAlias = Event | Status
#: What channels and sinks carry: the records of one read, in order.
Batch: TypeAlias = Sequence[Record]


def record_to_dict(record: Record) -> dict[str, Any]:
    """Return the JSON Lines object of a record: exactly the keys of DESIGN.md."""
    if type(record) is Event:
        return {
            "type": "event",
            "source": record.source,
            "transport": record.transport,
            "event": record.event,
            "id": record.id,
            "data": record.data,
            "received_at": record.received_at,
            "seq": record.seq,
        }
    assert isinstance(record, Status)
    return {
        "type": "status",
        "source": record.source,
        "transport": record.transport,
        "state": record.state.value,
        "attempt": record.attempt,
        "retry_in": record.retry_in,
        "detail": record.detail,
        "at": record.at,
    }


_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _fallback(obj: Any) -> Any:
    # Payload values orjson cannot encode natively (should be rare: data comes
    # from JSON or text) are written as their repr rather than failing the sink.
    return repr(obj)


def encode_jsonl(records: Iterable[Record]) -> bytes:
    """Encode records as JSON Lines: one object per line, each ending in LF.

    The one encoder every JSON-writing sink uses, so the file format cannot
    drift between sinks.
    """
    dumps = orjson.dumps
    return b"".join([dumps(record_to_dict(r), default=_fallback, option=_OPTIONS) for r in records])
