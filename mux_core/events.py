"""The records that flow through mux's one channel, and their JSON Lines form.

Three frozen record types travel from the sources to every sink:

* :class:`Event` -- one message a server sent (an SSE event, a WebSocket
  message, one item of a REST poll);
* :class:`Status` -- one change in a source's connection state;
* :class:`Alert` -- something a processor noticed (a stalled run, a NaN loss).

They travel in *batches* (lists): everything a transport parsed from one read
is handed over at once, because a channel hand-off costs the same for one
record as for a list of sixty-four (see DESIGN.md).

The records are ``msgspec.Struct`` classes: frozen, slotted, compared and
hashed by value, built in about 0.1 µs (the attrs constructor took 2 µs) and
encoded to JSON Lines by msgspec in one call per batch, with each record's
``"type"`` key written from its class (the struct *tag*). An Event's payload
may be kept as the bytes that arrived (:class:`~mux_core.payload.Payload`):
``event.data`` decodes it on first access, and :func:`encode_jsonl` splices
the bytes into the line when they are JSON. See docs/hooks.md, "Records".
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

import msgspec

from .payload import Payload

__all__ = [
    "Alert",
    "Batch",
    "Event",
    "Record",
    "RecordDecodeError",
    "Severity",
    "State",
    "Status",
    "decode_jsonl",
    "encode_jsonl",
    "record_to_dict",
]

_log = logging.getLogger("mux.events")


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


class Severity(enum.StrEnum):
    """How urgent an :class:`Alert` is."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Event(
    msgspec.Struct,
    frozen=True,
    gc=False,
    tag_field="type",
    tag="event",
    rename={"_payload": "data"},
):
    """One message received from a source.

    Build it positionally: ``Event(source, transport, event, id, data,
    received_at, seq)``. ``data`` may be a :class:`~mux_core.payload.Payload`
    (bytes decoded on first access) or any decoded value; ``event.data`` is
    always the decoded value.
    """

    #: The source's unique name from the config.
    source: str
    #: The transport type that received it ("sse", "ws", "rest", ...).
    transport: str
    #: The event type: SSE ``event:`` field, a WS/REST ``event_field``; default "message".
    event: str
    #: The last event id in effect (SSE) or the ``id_field`` value as a string; None if none.
    id: str | None
    # The payload: a Payload (raw bytes, decoded lazily) or the decoded value.
    _payload: Any
    #: Wall-clock time (``time.time()``) when mux received it.
    received_at: float
    #: A per-source counter assigned by the core, starting at 1.
    seq: int

    @property
    def data(self) -> Any:
        """The payload: decoded JSON when it is JSON, else the text (decoded once, cached)."""
        payload = self._payload
        return payload.value if type(payload) is Payload else payload

    @property
    def raw(self) -> bytes | None:
        """The payload's bytes as received, when the transport kept them; else None."""
        payload = self._payload
        return payload.raw if type(payload) is Payload else None


class Status(msgspec.Struct, frozen=True, gc=False, tag_field="type", tag="status"):
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


class Alert(msgspec.Struct, frozen=True, gc=False, tag_field="type", tag="alert"):
    """Something a processor noticed about a source (a stall, a NaN, a restart)."""

    source: str
    transport: str
    #: The processor rule that raised it ("stall", "nonfinite", "restart", ...).
    rule: str
    severity: Severity
    #: One human sentence ("loss is NaN at step 4100").
    message: str
    #: The ``seq`` of the event that raised it, or None (a timer raised it).
    seq: int | None
    #: Wall-clock time it was raised.
    at: float


Record: TypeAlias = Event | Status | Alert
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
    out: dict[str, Any] = {"type": type(record).__struct_config__.tag}
    for name in record.__struct_fields__:
        value = getattr(record, name)
        out[name] = value.value if isinstance(value, enum.Enum) else value
    return out


def _enc_hook(obj: Any) -> Any:
    if type(obj) is Payload:
        return obj.as_json()
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return tolist()
    # Anything else a transport put in a payload is written as its repr
    # rather than failing the sink.
    return repr(obj)


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)


def encode_jsonl(records: Iterable[Record]) -> bytes:
    """Encode records as JSON Lines: one object per line, each ending in LF.

    The one encoder every JSON-writing sink uses, so the file format cannot
    drift between sinks. A batch is encoded in one call; a record whose
    payload cannot be encoded (a decoded value nested deeper than the
    encoder goes, a dict with tuple keys, ...) is written with its data as
    text instead, so one odd payload never fails a sink.
    """
    if not isinstance(records, list):
        records = list(records)
    try:
        return _encoder.encode_lines(records)
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError):
        return b"".join([_encode_one(record) for record in records])


def _encode_one(record: Record) -> bytes:
    try:
        return _encoder.encode(record) + b"\n"
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError):
        assert type(record) is Event
        raw = record.raw
        text = raw.decode("utf-8", "replace") if raw is not None else _safe_repr(record.data)
        _log.warning(
            "event %s/%s: payload written as text (it cannot be encoded as JSON)",
            record.source,
            record.seq,
        )
        return _encoder.encode(msgspec.structs.replace(record, _payload=text)) + b"\n"


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deep to show>"


class RecordDecodeError(ValueError):
    """A JSON Lines line that is not a record of DESIGN.md's format."""


class _EventLine(msgspec.Struct, tag_field="type", tag="event", gc=False):
    # An event line with its data kept as raw JSON: replaying or relaying a
    # recorded run need not decode payloads nobody looks at.
    source: str
    transport: str
    event: str
    id: str | None
    data: msgspec.Raw
    received_at: float
    seq: int


_line_decoder = msgspec.json.Decoder(_EventLine | Status | Alert)


def decode_jsonl(line: bytes | str) -> Record:
    """The record of one JSON Lines line as :func:`encode_jsonl` writes it.

    Raises :class:`RecordDecodeError` with a readable reason for anything
    else. An event's data stays as its raw JSON bytes until accessed.
    """
    try:
        decoded = _line_decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise RecordDecodeError(_readable(exc)) from None
    if type(decoded) is _EventLine:
        return Event(
            decoded.source,
            decoded.transport,
            decoded.event,
            decoded.id,
            Payload(bytes(decoded.data)),
            decoded.received_at,
            decoded.seq,
        )
    assert isinstance(decoded, Status | Alert)
    return decoded


def _readable(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    text = str(exc)
    if "Object missing required field" in text or "Expected" in text or "Invalid" in text:
        return f"not a mux record ({text})"
    return f"not valid JSON ({text})"
