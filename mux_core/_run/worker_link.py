"""What a ``mux run --workers N`` worker and its parent say to each other.

A worker's records go up its stdout pipe as the JSON Lines the ``file`` sink
writes (``encode_jsonl``): the parent decodes each line once and its sinks
encode nothing twice that they need not. Between the records, a line that
starts with ``!`` is a control frame (a record line always starts with
``{``)::

    !{"positions": {NAME: [TRANSPORT, LAST_ID, CURSOR, SEQ], ...}}
        every source that moved, as of the records before this line
    !{"reserve": [ID, NAME, TRANSPORT, UPTO]}
        --state: save a block of seq values past UPTO, then answer
    !{"done": EXIT_CODE}
        the worker's run ended on its own terms (every source stopped)

The parent's commands go down the worker's stdin, one JSON object a line:
``{"start": {...}}`` first (the config path, the shard, each source's
resume state), then ``{"reserved": [ID, UPTO]}``, ``{"restart": NAME or
null}``, ``{"reload": true}`` and ``{"stop": REASON}``. The end of stdin
(the parent is gone) stops the worker too. See docs/architecture.md,
Workers.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..transport import ResumeState

__all__ = [
    "CONTROL",
    "Start",
    "frame",
    "from_saved",
    "saved",
]

#: The first byte of a control frame on a worker's stdout.
CONTROL = b"!"

#: A resume state on the wire: [transport, last_id, cursor, seq].
Saved = list[Any]


class Start(msgspec.Struct, forbid_unknown_fields=True):
    """The first line a worker reads: what to run."""

    config: str
    index: int
    count: int
    #: Whether the parent keeps ``--state`` (the worker then asks it for seq reservations).
    state: bool
    #: Where each source starts: its saved or held position (by name).
    resume: dict[str, Saved]
    watch: bool = False
    quiet: bool = False


def frame(message: dict[str, Any]) -> bytes:
    """A control frame: ``!`` + JSON + newline."""
    return CONTROL + msgspec.json.encode(message) + b"\n"


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
