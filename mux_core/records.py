"""The records that flow through mux's one channel, and their JSON Lines form.

Four frozen record types travel from the sources to every sink:

* :class:`Event` -- one message a server sent (an SSE event, a WebSocket
  message, one item of a REST poll);
* :class:`Status` -- one change in a source's connection state;
* :class:`Alert` -- something a processor noticed (a stalled run, a NaN loss);
* :class:`Quality` -- how well a source has been doing lately (uptime,
  reconnects, time blind, gaps, lag), every ``quality_interval`` seconds.

They travel in *batches* (lists): everything a transport parsed from one read
is handed over at once, because a channel hand-off costs the same for one
record as for a list of sixty-four (docs/architecture.md, Records and the
JSON Lines format).

The records are ``msgspec.Struct`` classes: frozen, slotted, compared and
hashed by value, built in about 0.1 µs (the attrs constructor took 2 µs) and
encoded to JSON Lines by msgspec in one call per batch, with each record's
``"type"`` key written from its class (the struct *tag*). An Event's payload
may be kept as the JSON bytes that arrived (a ``msgspec.Raw``, see
:mod:`mux_core.payload`): :func:`encode_jsonl` splices them into the line,
and ``event.data`` decodes them on first access. See
docs/plugins/writing-a-sink.md, "Batches and records".
"""

from __future__ import annotations

import enum
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO, TypeAlias, TypeVar, cast

import msgspec
from msgspec.structs import astuple

from .payload import _enc_hook, decode_payload, keep_raw, keep_value

__all__ = [
    "RECORD_OVERHEAD",
    "Alert",
    "Batch",
    "EncodedBatch",
    "Event",
    "Quality",
    "Record",
    "RecordDecodeError",
    "Severity",
    "SizedBatch",
    "State",
    "Status",
    "batch_bytes",
    "decode_jsonl",
    "decode_jsonl_lines",
    "encode_data",
    "encode_jsonl",
    "open_recording",
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
    received_at, seq)``, or with :meth:`from_bytes` for a payload as received.
    ``event.data`` is always the decoded value.
    """

    #: The source's unique name from the config.
    source: str
    #: The transport type that received it ("sse", "ws", "rest", ...).
    transport: str
    #: The event type: SSE ``event:`` field, a WS/REST ``event_field``; default "message".
    event: str
    #: The last event id in effect (SSE) or the ``id_field`` value as a string; None if none.
    id: str | None
    # The payload: a msgspec.Raw (JSON bytes as received, not decoded yet) or
    # the decoded value. Written as "data" in the JSON Lines record.
    _payload: Any
    #: Wall-clock time (``time.time()``) when mux received it.
    received_at: float
    #: A per-source counter assigned by the core, starting at 1.
    seq: int

    @classmethod
    def from_bytes(
        cls,
        source: str,
        transport: str,
        event: str,
        id: str | None,
        payload: bytes,
        received_at: float,
        seq: int,
    ) -> Event:
        """An Event whose payload is kept as received (see :func:`~mux_core.payload.keep_raw`)."""
        return cls(source, transport, event, id, keep_raw(payload), received_at, seq)

    @property
    def data(self) -> Any:
        """The payload: decoded JSON when it is JSON, else the text.

        Raw JSON is decoded on first access and the value replaces it in the
        record (a cache, not a change: the record compares, hashes and is
        written the same before and after; only the bytes a file gets may be
        re-encoded from the value, e.g. ``1.10`` as ``1.1``). JSON with
        ``NaN`` / ``Infinity`` literals is decoded on every access instead
        (floats: ``nan``, ``inf``, ``-inf``) and keeps its bytes, so a file
        gets the literals as received.
        """
        payload = self._payload
        if type(payload) is msgspec.Raw:
            try:
                payload = _decode_json(payload)
            except _NOT_JSON:
                # NaN / Infinity literals: decoded on each access, never cached,
                # so the record keeps the bytes received and the file holds them.
                return decode_payload(payload)
            _set_payload(self, payload)
        return payload

    @property
    def raw(self) -> bytes | None:
        """The payload's JSON bytes as received, while not yet decoded; else None."""
        payload = self._payload
        return bytes(payload) if type(payload) is msgspec.Raw else None

    def __eq__(self, other: object) -> bool:
        if type(other) is not Event:
            return NotImplemented
        return (
            self.seq == other.seq
            and self.source == other.source
            and self.transport == other.transport
            and self.event == other.event
            and self.id == other.id
            and self.received_at == other.received_at
            and _same_payload(self._payload, other._payload)
        )

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        payload = self._payload
        if type(payload) is msgspec.Raw:
            payload = decode_payload(payload)
        fields = (self.source, self.transport, self.event, self.id, payload)
        return hash((*fields, self.received_at, self.seq))


# Event is frozen; its payload slot is written once more only by ``data``,
# to cache the decoded value in place of the raw JSON (the field's own slot
# descriptor, as attrs' frozen classes use object.__setattr__ in __init__).
_set_payload = Event.__dict__["_payload"].__set__


def _same_payload(a: Any, b: Any) -> bool:
    raw_a, raw_b = type(a) is msgspec.Raw, type(b) is msgspec.Raw
    if raw_a and raw_b and a == b:
        return True
    if raw_a:
        a = decode_payload(a)
    if raw_b:
        b = decode_payload(b)
    return bool(a == b)


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


class Quality(msgspec.Struct, frozen=True, gc=False, tag_field="type", tag="quality"):
    """How well a source has been doing: measured by the core, the same for
    every transport (see :mod:`mux_core._run.quality`).

    The windowed figures cover the last ``window`` seconds; the ``*_total``
    figures the whole run. Times are seconds; None where nothing was measured.
    """

    source: str
    transport: str
    #: Seconds the windowed figures cover (the last ``quality_window``, or the
    #: whole run while it is younger).
    window: float
    #: Fraction of the window the source was connected, 0.0 .. 1.0.
    uptime: float
    #: Connections after a drop, in the window.
    reconnects: int
    #: The longest time blind (connection lost until connected again) of the
    #: outages in the window, an outage still going on included; None if none.
    blind_max: float | None
    #: Events received in the window.
    events: int
    #: Numeric ids missing in the window (ids that skipped ahead); None while
    #: the source's events carried no numeric id: a gap cannot be seen then.
    gaps: int | None
    #: 99th percentile of the lag (``received_at`` minus the ``lag_field``
    #: timestamp), in the window; None without ``lag_field``.
    lag_p99: float | None
    #: Wall-clock time of the measurement.
    at: float
    #: The source's connection state at ``at``; None before its first status.
    state: State | None = None
    #: Outages (drops of a connection) in the window, one still going on included.
    outages: int = 0
    #: The median time blind of those outages; None if none.
    blind_p50: float | None = None
    #: Events per second over the window.
    events_per_s: float = 0.0
    #: Seconds since the last event; None before the first.
    staleness: float | None = None
    #: The median lag in the window; None without ``lag_field``.
    lag_p50: float | None = None
    #: Reconnects since the run started.
    reconnects_total: int = 0
    #: Seconds blind since the run started (outages after a first connection).
    blind_total: float = 0.0
    #: Events since the run started.
    events_total: int = 0
    #: Missing ids since the run started; None while no numeric id was seen.
    gaps_total: int | None = 0
    #: Records each sink's channel dropped so far (all sources: a sink has one channel).
    dropped: dict[str, int] = msgspec.field(default_factory=dict)
    #: Whether the source was stale at ``at``: connected, and quiet for longer
    #: than it usually is or than its ``stale_after`` (:class:`mux_core.views.StaleWatch`);
    #: None when it was not connected (and in records written before mux knew it).
    #: A source's last record (its terminal state) says whether it was stale then.
    stale: bool | None = None


Record: TypeAlias = Event | Status | Alert | Quality
#: What channels and sinks carry: the records of one read, in order.
Batch: TypeAlias = Sequence[Record]


def record_to_dict(record: Record) -> dict[str, Any]:
    """Return the JSON Lines object of a record: exactly its documented keys
    (docs/architecture.md, Records and the JSON Lines format)."""
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


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_decode_json = msgspec.json.decode
#: What encoding a payload the encoder cannot write raises.
_UNENCODABLE = (TypeError, ValueError, RecursionError, msgspec.EncodeError)
#: What decoding bytes that are not strict JSON raises.
_NOT_JSON = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


def encode_jsonl(records: Iterable[Record]) -> bytes:
    """Encode records as JSON Lines: one object per line, each ending in LF.

    The one encoder every JSON-writing sink uses, so the file format cannot
    drift between sinks. A batch is encoded in one call; a record whose
    payload cannot be encoded (a decoded value nested deeper than the
    encoder goes, a dict with tuple keys, ...) is written with its data as
    text instead, so one odd payload never fails a sink.

    NaN, Infinity and -Infinity in a payload are written as those bare
    literals (what Python's ``json.dumps`` writes and ``json.loads`` reads
    back as floats) at no cost to other payloads: a payload holding one is
    kept as its JSON bytes, as received or made by
    :func:`~mux_core.payload.keep_value` (docs/architecture.md, Records).
    """
    if type(records) is EncodedBatch:
        return records.jsonl
    if not isinstance(records, list):
        records = list(records)
    try:
        return _encoder.encode_lines(records)
    except _UNENCODABLE:
        return b"".join([_encode_one(record) for record in records])


def _encode_one(record: Record) -> bytes:
    try:
        return _encoder.encode(record) + b"\n"
    except _UNENCODABLE:
        assert type(record) is Event
        text = _as_text(record)
        return _encoder.encode(msgspec.structs.replace(record, _payload=text)) + b"\n"


def encode_data(event: Event) -> bytes:
    """An event's payload as the JSON :func:`encode_jsonl` writes for its ``data``.

    For a sink that shows or sends the payload on its own (a log line, a chat
    message): the bytes as received while the payload is still raw JSON, else
    the value encoded; a value that cannot be encoded becomes its text (a JSON
    string, with a warning), as in the file, so one odd payload never fails a
    sink.
    """
    payload = event._payload
    if type(payload) is msgspec.Raw:
        return bytes(payload)
    try:
        return _encoder.encode(payload)
    except _UNENCODABLE:
        return _encoder.encode(_as_text(event))


def _as_text(event: Event) -> str:
    _log.warning(
        "event %s/%s: payload written as text (it cannot be encoded as JSON)",
        event.source,
        event.seq,
    )
    return _safe_repr(event.data)


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deep to show>"


class RecordDecodeError(ValueError):
    """A JSON Lines line that is not a mux record (docs/architecture.md, Records)."""


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


_line_decoder = msgspec.json.Decoder(_EventLine | Status | Alert | Quality)


class _EventHead(msgspec.Struct, tag_field="type", tag="event", gc=False):
    # An event line read by the standard library (NaN / Infinity literals):
    # everything but its data, which is cut out of the line as it was written.
    source: str
    transport: str
    event: str
    id: str | None
    received_at: float
    seq: int


_Lenient: TypeAlias = _EventHead | Status | Alert | Quality


def decode_jsonl(line: bytes | str) -> Record:
    """The record of one JSON Lines line as :func:`encode_jsonl` writes it.

    Raises :class:`RecordDecodeError` with a readable reason for anything
    else. An event's data stays as its raw JSON bytes until accessed. The
    literals ``NaN``, ``Infinity`` and ``-Infinity`` are read as floats (a
    slower path, only for lines that hold them).
    """
    try:
        decoded = _line_decoder.decode(line)
    except _NOT_JSON as exc:
        lenient = _decode_lenient(line)
        if lenient is None:
            raise RecordDecodeError(_readable(exc)) from None
        return lenient
    if type(decoded) is _EventLine:
        return Event(
            decoded.source,
            decoded.transport,
            decoded.event,
            decoded.id,
            decoded.data,
            decoded.received_at,
            decoded.seq,
        )
    assert isinstance(decoded, Status | Alert | Quality)
    return decoded


def decode_jsonl_lines(data: bytes) -> tuple[SizedBatch[Record], int]:
    """The records of several JSON Lines lines at once, and how many lines
    were not records (skipped).

    ``data`` is lines separated by LF (a last LF and blank lines are
    ignored), e.g. the data of an event of a mux ``web`` sink's stream. Each
    line is read as :func:`decode_jsonl` reads it, but all of them in one
    call when every line is a record as mux writes it (about 0.4 instead of
    0.6 us a ~200-byte record); otherwise line by line. The batch knows its
    size (:class:`SizedBatch`), counted from ``data``'s length.
    """
    try:
        decoded = _line_decoder.decode_lines(data)
    except _NOT_JSON:
        return _decode_lines_slowly(data)
    batch: SizedBatch[Record] = SizedBatch(len(data) + RECORD_OVERHEAD * len(decoded))
    # _EventLine's fields are Event's, in Event's order: one C call copies them.
    line_type, fields = _EventLine, astuple
    batch.extend([Event(*fields(item)) if type(item) is line_type else item for item in decoded])
    return batch, 0


def _decode_lines_slowly(data: bytes) -> tuple[SizedBatch[Record], int]:
    batch: SizedBatch[Record] = SizedBatch()
    bad = 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            batch.append(decode_jsonl(line))
        except RecordDecodeError:
            bad += 1
    batch.nbytes = len(data) + RECORD_OVERHEAD * len(batch)
    return batch, bad


def _decode_lenient(line: bytes | str) -> Record | None:
    """A line holding NaN / Infinity literals (or a number like ``1e999``,
    which msgspec refuses and the standard library reads as inf); None when
    it is not a record that way either.

    An event line as mux writes it (``"data":`` ... ``,"received_at":``) is
    read by msgspec with its data cut out, and the data kept as the bytes
    written (checked to be JSON); any other line is read by the standard
    library (slower; mux writes no literal outside a payload).
    """
    raw = line.encode() if isinstance(line, str) else bytes(line)
    start = raw.find(b'"data":')
    end = raw.rfind(b',"received_at":')
    if 0 <= start < end:
        data = raw[start + 7 : end].strip()
        try:
            head = _line_decoder.decode(raw[: start + 7] + b"null" + raw[end:])
        except _NOT_JSON:
            head = None
        if type(head) is _EventLine and _lenient_json(data):
            return Event(
                head.source,
                head.transport,
                head.event,
                head.id,
                msgspec.Raw(data),
                head.received_at,
                head.seq,
            )
    try:
        obj = json.loads(raw)
        record = msgspec.convert(obj, _Lenient)
    except (ValueError, RecursionError, msgspec.ValidationError):
        return None
    if type(record) is not _EventHead:
        assert isinstance(record, Status | Alert | Quality)
        return record
    if type(obj) is not dict or "data" not in obj:
        return None
    payload = keep_value(obj["data"])
    return Event(
        record.source,
        record.transport,
        record.event,
        record.id,
        payload,
        record.received_at,
        record.seq,
    )


def _lenient_json(data: bytes) -> bool:
    """Whether an event line's data, which msgspec refused, is JSON to Python."""
    try:
        json.loads(data)
    except (ValueError, RecursionError):
        return False
    return True


def _readable(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    text = str(exc)
    if "Object missing required field" in text or "Expected" in text or "Invalid" in text:
        return f"not a mux record ({text})"
    return f"not valid JSON ({text})"


#: What a record costs besides its payload: the record itself, its strings.
RECORD_OVERHEAD = 160


def batch_bytes(batch: Sequence[Record]) -> int:
    """An estimate of the memory a batch holds: payload bytes plus a fixed
    overhead per record. A batch built by ``Session.emit`` carries the figure
    (``nbytes``), counted while it was built; others are measured here."""
    known = getattr(batch, "nbytes", None)
    if known is not None:
        return int(known)
    size = RECORD_OVERHEAD * len(batch)
    for record in batch:
        if type(record) is Event:
            size += _payload_bytes(record._payload)
    return size


def _payload_bytes(payload: Any) -> int:
    try:
        return len(payload) if isinstance(payload, str | bytes | msgspec.Raw) else 64
    except TypeError:
        return 64


_R = TypeVar("_R", bound=Record)


class SizedBatch(list[_R]):
    """A list of records that knows roughly how many bytes it holds (``nbytes``),
    counted while it was built: :func:`batch_bytes` then need not measure it (about
    1 us a record). ``Session.emit`` builds one; so may a relaying transport."""

    __slots__ = ("nbytes",)

    def __init__(self, nbytes: int = 0) -> None:
        super().__init__()
        self.nbytes = nbytes


#: A run of one source's records in an :class:`EncodedBatch`: (source, transport, count).
Run: TypeAlias = tuple[str, str, int]


class EncodedBatch(Sequence[Record]):
    """Records that arrived as JSON Lines and stay bytes until someone looks.

    ``mux run --workers N``'s parent gets its workers' records this way:
    ``jsonl`` is what :func:`encode_jsonl` made of them in the worker, and
    :func:`encode_jsonl` of the batch is ``jsonl`` itself -- so the ``file``
    sink writes the bytes as they came, with no decode and no re-encode (the
    splice; about 1.2 us of the parent's CPU a record). A sink that reads
    the records (iterates, indexes) decodes them then, once: the decoded
    list is kept, so the other sinks of the same batch share it.

    ``runs`` says whose records are where without decoding them: consecutive
    records of one source as (source, transport, count), in order (the
    ``redis-stream`` sink groups lines by it). It may be empty (unknown).
    ``nbytes`` is the memory estimate :func:`batch_bytes` reads.
    """

    __slots__ = ("_count", "_parts", "_records", "jsonl", "nbytes", "runs")

    def __init__(self, jsonl: bytes, count: int, runs: tuple[Run, ...] = ()) -> None:
        self.jsonl = jsonl
        self._count = count
        self.runs = runs
        self.nbytes = len(jsonl) + RECORD_OVERHEAD * count
        self._records: list[Record] | None = None
        self._parts: Sequence[Record | EncodedBatch] | None = None

    @classmethod
    def join(cls, parts: Sequence[Record | EncodedBatch]) -> EncodedBatch:
        """One batch of ``parts`` in order: encoded batches spliced as they are,
        the records between them encoded. Decoding it decodes each part once
        (what another sink already decoded of a part is not decoded again)."""
        chunks: list[bytes] = []
        runs: list[Run] = []
        known = True
        loose: list[Record] = []
        count = 0
        for part in parts:
            if type(part) is EncodedBatch:
                if loose:
                    chunks.append(encode_jsonl(loose))
                    runs.extend(_runs_of(loose))
                    loose = []
                chunks.append(part.jsonl)
                runs.extend(part.runs)
                known = known and (bool(part.runs) or not part._count)
                count += part._count
            else:
                loose.append(cast(Record, part))
                count += 1
        if loose:
            chunks.append(encode_jsonl(loose))
            runs.extend(_runs_of(loose))
        joined = cls(b"".join(chunks), count, tuple(runs) if known else ())
        joined._parts = parts
        return joined

    def records(self) -> list[Record]:
        """The records, decoded on the first call (then kept)."""
        records = self._records
        if records is None:
            parts = self._parts
            if parts is None:
                records, _ = decode_jsonl_lines(self.jsonl)
            else:
                records = []
                for part in parts:
                    if type(part) is EncodedBatch:
                        records.extend(part.records())
                    else:
                        records.append(cast(Record, part))
                self._parts = None
            self._records = records
        return records

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records())

    def __getitem__(self, index: Any) -> Any:
        return self.records()[index]

    def __repr__(self) -> str:
        return f"<EncodedBatch of {self._count} records, {len(self.jsonl)} bytes>"


def _runs_of(records: Sequence[Record]) -> list[Run]:
    runs: list[Run] = []
    for record in records:
        source, transport = record.source, record.transport
        if runs and runs[-1][0] == source and runs[-1][1] == transport:
            runs[-1] = (source, transport, runs[-1][2] + 1)
        else:
            runs.append((source, transport, 1))
    return runs


# -- reading a recording ---------------------------------------------------------

#: The first bytes of a zstd frame: how a compressed recording is told apart.
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: Compressed bytes fed to the decompressor at a time: bounds what one read
#: can inflate to (zstd's worst case is ~32,000 to 1), whatever the file holds.
_ZSTD_READ = 2048


def open_recording(path: str | os.PathLike[str]) -> BinaryIO:
    """A recording opened to read its lines: ``for line in open_recording(path)``.

    A ``file`` sink writes JSON Lines, or with ``compression = "zstd"`` zstd
    frames (``events.jsonl.zst``, ``events.jsonl.zst.1``, ...); they are told
    apart by their first bytes, not their name, and a compressed one is
    decompressed as it is read (iteration, ``readline`` and ``read`` work;
    ``seek(0)`` starts over, and ``tell()`` counts the compressed bytes read, so
    a reader can tell that the file was cut short). Feed each line to
    :func:`decode_jsonl`.

    A compressed file's torn tail -- a crash in the middle of a write, or a
    ``file`` sink still writing it -- reads as its end, as a plain file's
    unfinished last line reads as a last line without its newline; read again
    later, what was appended since follows (``tail -f``). Damaged data in the
    middle ends the reading, with a warning naming the byte. Raises
    ``OSError`` as ``open`` does, and :class:`~mux_core.errors.MuxError` (with
    the install hint) for a compressed file when zstandard is missing.
    """
    file = open(path, "rb")  # noqa: SIM115 (handed to the caller)
    try:
        head = file.read(len(ZSTD_MAGIC))
        file.seek(0)
        if head != ZSTD_MAGIC:
            return file
        return cast(BinaryIO, _ZstdRecording(file, os.fspath(path)))
    except BaseException:
        file.close()
        raise


class _ZstdRecording(io.BufferedIOBase):
    """The decompressed lines of a file of zstd frames, one frame after the other."""

    def __init__(self, file: BinaryIO, name: str) -> None:
        try:
            import zstandard
        except ImportError:
            from .errors import MuxError

            raise MuxError(
                f"{name} is zstd-compressed; reading it needs zstandard: pip install 'mux[zstd]'"
            ) from None
        super().__init__()
        self._file = file
        self._name = name
        self._error = zstandard.ZstdError
        self._decompressor = zstandard.ZstdDecompressor()
        self._start()

    def _start(self) -> None:
        self._frame = self._decompressor.decompressobj()
        self._buffer = b""
        self._pos = 0
        self._damaged = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._file.fileno()

    def tell(self) -> int:
        """The compressed bytes read so far (a line has no compressed offset)."""
        return self._file.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Only back to the start (``seek(0)``): the frames are read again."""
        if offset != 0 or whence != io.SEEK_SET:
            raise io.UnsupportedOperation("a zstd recording can only seek back to its start")
        self._file.seek(0)
        self._start()
        return 0

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        while True:
            end = self._buffer.find(b"\n", self._pos)
            if end >= 0 or not self._fill():
                break
        stop = len(self._buffer) if end < 0 else end + 1
        if 0 <= limit < stop - self._pos:
            stop = self._pos + limit
        line = self._buffer[self._pos : stop]
        self._pos = stop
        return line

    def read(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        while (limit < 0 or len(self._buffer) - self._pos < limit) and self._fill():
            pass
        stop = len(self._buffer) if limit < 0 else min(len(self._buffer), self._pos + limit)
        data = self._buffer[self._pos : stop]
        self._pos = stop
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _fill(self) -> bool:
        """Decompress the next compressed bytes into the buffer; False when none
        are there (the end for now: a torn last frame may still grow)."""
        if self._damaged:
            return False
        data = self._file.read(_ZSTD_READ)
        if not data:
            return False
        out = [self._buffer[self._pos :]]
        while data:
            try:
                out.append(self._frame.decompress(data))
            except self._error as exc:
                _log.warning(
                    "%s: damaged zstd data near byte %d (%s); the rest is not read",
                    self._name,
                    self._file.tell(),
                    exc,
                )
                self._damaged = True
                break
            if self._frame.eof:  # a frame ended: the next starts in what is left
                data = self._frame.unused_data
                self._frame = self._decompressor.decompressobj()
            else:
                data = b""
        self._buffer = b"".join(out)
        self._pos = 0
        return True

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()
