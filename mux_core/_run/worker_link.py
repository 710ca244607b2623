"""What a ``mux run --workers N`` worker and its parent say to each other.

A worker's stdout pipe carries frames: one byte of kind, four of length
(big-endian), then that many bytes. The parent never scans for a line's
end or sniffs a line's kind. ``R`` frames hold one batch of records as the
JSON Lines the ``file`` sink writes (``encode_jsonl``), decoded by the
parent in one call; ``C`` frames one JSON control message::

    {"positions": {NAME: [TRANSPORT, LAST_ID, CURSOR, SEQ], ...}}
        every source that moved, as of the records before this frame
    {"reserve": [ID, NAME, TRANSPORT, UPTO]}
        --state: save a block of seq values past UPTO, then answer
    {"done": EXIT_CODE}
        the worker's run ended on its own terms (every source stopped)

The parent's commands go down the worker's stdin, one JSON object a line:
``{"start": {...}}`` first (the config path, the sources it runs, each
source's resume state), then ``{"reserved": [ID, UPTO]}``, ``{"restart":
NAME or null}``, ``{"reload": {"sources": [...], "configured": [...]}}``
and ``{"stop": REASON}``. The end of stdin
(the parent is gone) stops the worker too. See docs/architecture.md,
Workers.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import attrs
import msgspec

from .._config.shard import Shard
from ..transport import ResumeState

__all__ = [
    "CONTROL",
    "HEAD",
    "MAX_FRAME",
    "RECORDS",
    "Share",
    "Start",
    "frame",
    "from_saved",
    "records_frame",
    "saved",
    "spread",
]

#: A frame's head: its kind (RECORDS or CONTROL) and its length.
HEAD = struct.Struct(">cI")
RECORDS = b"R"
CONTROL = b"C"
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
    """The sources one worker runs: the configured ones the parent assigned it
    (``names``), and the discovered ones :func:`spread` gives it."""

    #: The configured sources assigned to this worker.
    names: frozenset[str] = frozenset()
    #: Every configured source (a discovered one of the same name is left out anyway).
    configured: frozenset[str] = frozenset()

    def includes(self, name: str) -> bool:
        if name in self.configured:
            return name in self.names
        return spread(name, self.count) == self.index


class Start(msgspec.Struct, forbid_unknown_fields=True):
    """The first line a worker reads: what to run."""

    config: str
    index: int
    count: int
    #: The configured sources this worker runs (the parent assigns them evenly).
    sources: list[str]
    #: Every configured source.
    configured: list[str]
    #: Whether the parent keeps ``--state`` (the worker then asks it for seq reservations).
    state: bool
    #: Where each source starts: its saved or held position (by name).
    resume: dict[str, Saved]
    quiet: bool = False
    #: The parent watches the config file (``--watch``): sources may still come,
    #: so the worker stays when all of its sources are terminal (as one process does).
    keep_alive: bool = False


def frame(message: dict[str, Any]) -> bytes:
    """A control frame."""
    data = msgspec.json.encode(message)
    return HEAD.pack(CONTROL, len(data)) + data


def records_frame(data: bytes) -> bytes:
    """A frame of JSON Lines records."""
    return HEAD.pack(RECORDS, len(data)) + data


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
