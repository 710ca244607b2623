"""What a ``mux run --workers N`` worker and its parent say to each other.

A worker's stdout pipe carries frames: one byte of kind, four of length
(big-endian), then that many bytes. The parent never scans for a line's
end or sniffs a line's kind. ``E`` frames hold events only, which the
parent hands on without decoding them (an
:class:`~mux_core.records.EncodedBatch`: the ``file`` sink writes the bytes
as they came): four bytes of length, a JSON list of runs -- ``[SOURCE,
TRANSPORT, COUNT, LAST_SEQ, LAST_ID]`` for each stretch of one source's
events, what the parent needs to know where each source is -- then the
events as the JSON Lines the ``file`` sink writes (``encode_jsonl``). ``R``
frames hold other records (statuses, quality, alerts: few), as JSON Lines
the parent decodes; ``C`` frames one JSON control message::

    {"positions": {NAME: [TRANSPORT, LAST_ID, CURSOR, SEQ], ...}}
        every source that moved, as of the records before this frame
    {"reserve": [ID, NAME, TRANSPORT, UPTO]}
        --state: save a block of seq values past UPTO, then answer
    {"done": EXIT_CODE}
        the worker's run ended on its own terms (every source stopped)
    {"alive": null}
        nothing else to say for HEARTBEAT seconds: the worker's loop runs

The parent's commands go down the worker's stdin, one JSON object a line:
``{"start": {...}}`` first (the config path, the sources it runs, each
source's resume state; then the bytes of its part of the config file as the
parent read it), then ``{"reserved": [ID, UPTO]}``, ``{"restart":
NAME or null}``, ``{"reload": {"sources": [...], "keep_alive": BOOL}}``,
``{"discovered": null, "data": N}`` -- followed by N bytes: the pickled
list of the discovered sources (``SourceConfig``) the parent, which runs
the discoverers, assigned the worker -- and ``{"stop": REASON}``. The end
of stdin (the parent is gone) stops the worker too. See
docs/architecture.md, Workers.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import Any

import attrs
import msgspec

from .._config.shard import Shard
from ..records import Alert, Event, Record, encode_jsonl
from ..transport import ResumeState

__all__ = [
    "CONTROL",
    "EVENTS",
    "HEAD",
    "HEARTBEAT",
    "MAX_FRAME",
    "RECORDS",
    "RUNS_HEAD",
    "FrameReader",
    "FrameTooLong",
    "Share",
    "Start",
    "frame",
    "from_saved",
    "records_frame",
    "saved",
    "spread",
    "uplink_frames",
]

#: A frame's head: its kind (RECORDS or CONTROL) and its length.
HEAD = struct.Struct(">cI")
RECORDS = b"R"
EVENTS = b"E"
CONTROL = b"C"
#: An ``E`` frame's runs' length, before the runs.
RUNS_HEAD = struct.Struct(">I")
#: Seconds of quiet after which a worker says it is alive.
HEARTBEAT = 1.0

#: The longest frame a parent accepts (a worker's batches are far smaller).
MAX_FRAME = 256 * 1024 * 1024

#: A resume state on the wire: [transport, last_id, cursor, seq].
Saved = list[Any]


def spread(name: str, count: int) -> int:
    """The worker (0 .. count-1) of a source the config does not name (a discovered one).

    Not ``--shard``'s crc32 modulo: names that differ in one bit of one
    character (``gpu-0`` and ``gpu-1``) have crc32s of the same parity, so two
    workers would get ``gpu-0, gpu-1`` and ``gpu-2, gpu-3`` in pairs. A hash
    that mixes every bit spreads them evenly.
    """
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % count


@attrs.frozen
class Share(Shard):
    """The configured sources one worker runs: the ones the parent assigned it.

    (Its discovered ones the parent hands it as they come: the discoverers
    run in the parent.) A worker knows no other source's name: 100,000 names
    in each of 8 workers were ~1 KiB a source.
    """

    #: The configured sources assigned to this worker.
    names: frozenset[str] = frozenset()

    def includes(self, name: str) -> bool:
        return name in self.names


class Start(msgspec.Struct, forbid_unknown_fields=True):
    """The first line a worker reads: what to run."""

    config: str
    index: int
    count: int
    #: The configured sources this worker runs (the parent assigns them evenly).
    sources: list[str]
    #: Whether the parent keeps ``--state`` (the worker then asks it for seq reservations).
    state: bool
    #: Where each source starts: its saved or held position (by name).
    resume: dict[str, Saved]
    quiet: bool = False
    #: The parent watches the config file (``--watch``) or discovers sources:
    #: sources may still come, so the worker stays when all of its sources are
    #: terminal (as one process does).
    keep_alive: bool = False
    #: The worker's part of the config file as the parent read it: this many bytes
    #: (``worker_config.shares``) follow the start line. 0: the worker reads the file.
    parsed: int = 0


class FrameTooLong(Exception):
    """A frame longer than the reader accepts (a worker gone wrong)."""

    def __init__(self, size: int) -> None:
        super().__init__(f"a frame of {size} bytes")
        self.size = size


class FrameReader:
    """Cuts a pipe's bytes into frames: ``feed(bytes)`` gives the whole ones.

    Each payload is copied once, out of the read it came in (or out of the
    reads it spanned, joined once it is whole): no buffer that grows and
    shrinks by every read.
    """

    def __init__(self, max_frame: int) -> None:
        self._max = max_frame
        self._pieces: list[bytes] = []
        self._have = 0
        #: The whole length (head included) of the frame being gathered; 0 if not known yet.
        self._need = 0

    def feed(self, data: bytes | bytearray) -> list[tuple[bytes, bytes]]:
        if type(data) is not bytes:
            data = bytes(data)
        frames: list[tuple[bytes, bytes]] = []
        if self._pieces:
            self._pieces.append(data)
            self._have += len(data)
            if self._need == 0 and self._have >= HEAD.size:
                self._start(b"".join(self._pieces)[: HEAD.size])
            if self._need == 0 or self._have < self._need:
                return frames
            data = b"".join(self._pieces)
            self._pieces, self._have = [], 0
        head, unpack, at, end = HEAD.size, HEAD.unpack_from, 0, len(data)
        while end - at >= head:
            kind, size = unpack(data, at)
            if size > self._max:
                raise FrameTooLong(size)
            stop = at + head + size
            if stop > end:
                break
            frames.append((kind, data[at + head : stop]))
            at = stop
        self._need = 0
        if at < end:
            rest = data[at:]
            self._pieces, self._have = [rest], len(rest)
            if len(rest) >= head:
                self._start(rest)
        return frames

    def _start(self, head: bytes) -> None:
        _, size = HEAD.unpack_from(head)
        if size > self._max:
            raise FrameTooLong(size)
        self._need = HEAD.size + size


def frame(message: dict[str, Any]) -> bytes:
    """A control frame."""
    data = msgspec.json.encode(message)
    return HEAD.pack(CONTROL, len(data)) + data


def records_frame(data: bytes) -> bytes:
    """A frame of JSON Lines records."""
    return HEAD.pack(RECORDS, len(data)) + data


def uplink_frames(batch: Sequence[Record]) -> bytes:
    """A worker's batch as frames for the parent: its events in ``E`` frames, the rest in ``R``.

    A batch holding an alert goes whole as one ``R`` frame: ``--fail-on``
    looks for the alert's event in the alert's batch (the step it names).
    """
    stretches: list[tuple[bool, int, int]] = []  # (events, start, end)
    start = 0
    events_now = True
    for at, record in enumerate(batch):
        kind = type(record)
        is_event = kind is Event
        if is_event is not events_now:
            if kind is Alert:
                return records_frame(encode_jsonl(batch))
            if at > start:
                stretches.append((events_now, start, at))
            start, events_now = at, is_event
    if len(batch) > start:
        stretches.append((events_now, start, len(batch)))
    if len(stretches) == 1 and stretches[0][0]:
        return _events_frame(batch)
    frames = []
    for is_events, begin, end in stretches:
        part = batch[begin:end]
        frames.append(_events_frame(part) if is_events else records_frame(encode_jsonl(part)))
    return b"".join(frames)


def _events_frame(events: Sequence[Record]) -> bytes:
    runs: list[list[Any]] = []
    source = None
    count = 0
    last: Any = None
    for event in events:
        if event.source is not source:
            if last is not None:
                runs.append([source, last.transport, count, last.seq, last.id])
            source, count = event.source, 0
        count += 1
        last = event
    runs.append([source, last.transport, count, last.seq, last.id])
    head = msgspec.json.encode(runs)
    data = encode_jsonl(events)
    size = RUNS_HEAD.size + len(head) + len(data)
    return b"".join((HEAD.pack(EVENTS, size), RUNS_HEAD.pack(len(head)), head, data))


def saved(transport: str, resume: ResumeState) -> Saved:
    """A resume state as it crosses the pipe (a cursor JSON cannot hold is left out)."""
    cursor = resume.cursor
    if cursor is not None:
        try:
            msgspec.json.encode(cursor)
        except (TypeError, msgspec.EncodeError):
            cursor = None
    return [transport, resume.last_id, cursor, resume.seq]


def from_saved(value: Saved, *, state: bool) -> tuple[str, ResumeState]:
    """The transport and resume state of a wire position; with ``state``, the
    first event past ``seq`` waits for a reservation from the parent."""
    transport, last_id, cursor, seq = value
    return str(transport), ResumeState(
        last_id=last_id, cursor=cursor, seq=int(seq), seq_reserved=int(seq) if state else None
    )
