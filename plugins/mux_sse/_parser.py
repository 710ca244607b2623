"""An incremental parser for ``text/event-stream``, to the WHATWG HTML rules.

Bytes go in as they arrive (any split: mid-line, mid-CRLF, mid-UTF-8
character, mid-BOM), complete events come out. The parser works on bytes and
decodes only what it hands out: UTF-8 never uses a byte below 0x80 inside a
multi-byte character, so splitting on ``\\n``/``\\r`` and ``:`` before
decoding is exact, and a character split across reads is simply decoded once
its line is complete. Invalid UTF-8 becomes U+FFFD, as the spec's decoder does.

Speed comes from working on whole reads with C-level bytes methods: line ends
are normalised with ``replace``, the read is cut into events with
``split(b"\\n\\n")``, and an event that is one ``data:`` line (the common
case), or an ``id:`` line and ``data:`` lines (a mux ``web`` sink's records,
many to an event), is emitted without looking at its lines one by one. An
event cut by the end of a read is held whole (up to :data:`HOLD_BYTES`)
until its end arrives, so it too takes that way.

The transport asks for events ready to hand to ``Session.emit`` --
``json_data=True, empty_id=None`` -- so each event's data is handed out as
the bytes of its ``data:`` lines, which the core keeps undecoded until a sink
looks (:mod:`mux_core.payload`): at half a million events per second, a JSON
decode per event was a third of mux's time, for a file sink that only
writes the same JSON back.

Memory is bounded by ``max_event_bytes``: an event, or a line that never
ends, larger than that is dropped whole; :attr:`SseParser.skipped` counts
them and parsing resumes at the next blank line.

Two fields are bounded further, because what they hold outlives one event.
An ``id:`` longer than ``max_id_bytes`` is ignored, as the spec ignores an
id holding NUL (the last good id stays in effect; :attr:`SseParser.long_ids`
counts them): every later event carries the id in effect, so one 1 MiB id
followed by tiny events would make every record a megabyte. A ``retry:``
of more than :data:`MAX_RETRY_DIGITS` digits (leading zeros aside) is
ignored as the spec ignores one that is not all digits: it would be weeks
at the least, and Python refuses to read an integer of 4,300 digits.
"""

from __future__ import annotations

import operator
from typing import Any, TypeAlias

from mux_core.payload import is_json

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "DEFAULT_MAX_ID_BYTES",
    "HOLD_BYTES",
    "MAX_RETRY_DIGITS",
    "SseEvent",
    "SseParser",
]

#: Events larger than this (bytes of their lines) are skipped by default.
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024
#: An event cut by the end of a read is held whole (read when it ends) up to
#: this many bytes; a larger one is read line by line as it comes. Held
#: bytes are joined again with every read until the event ends: bounding
#: them keeps a huge event of many lines from costing time quadratic in its size.
HOLD_BYTES = 256 * 1024
#: Ids longer than this (bytes) are ignored by default.
DEFAULT_MAX_ID_BYTES = 1024
#: A ``retry:`` value with more digits than this (leading zeros aside: 999,999,999
#: ms is 11.6 days) is ignored, as one that is not all digits is.
MAX_RETRY_DIGITS = 9

#: One dispatched event: (event type, last event id in effect or "", data).
#: With ``empty_id=None`` / ``json_data=True`` the id may be None / the data any JSON value.
SseEvent: TypeAlias = tuple[str, Any, Any]

_BOM = b"\xef\xbb\xbf"
_is_retry = operator.methodcaller("startswith", b"retry")


class SseParser:
    """Turns the bytes of one event stream into ``(type, last_id, data)`` tuples.

    One parser per connection. ``last_event_id`` seeds the id in effect (the
    id a reconnect resumed from), so events before the first ``id:`` line of
    the new connection carry it, as a browser's ``lastEventId`` does.

    ``empty_id`` is what an event carries while the last event id is empty
    ("" as the spec says, or None as mux's RawEvent wants). With
    ``json_data`` each event's data is handed out as its raw bytes, for the
    core to decode lazily (JSON when it is JSON, else text); without, as text.
    ``check_json`` also counts, in :attr:`not_json`, the events whose data is
    not JSON (a full check per event: only for ``decode = "json"``).
    """

    # Slots: one of these per source, and 10,000 idle sources should stay small.
    __slots__ = (
        "_at_start",
        "_check_json",
        "_cr_pending",
        "_data",
        "_discarding",
        "_drop_line",
        "_empty_id",
        "_head",
        "_held",
        "_id_buf",
        "_json",
        "_last_id_raw",
        "_max_id",
        "_records",
        "_size",
        "_tail",
        "_tail_len",
        "_type",
        "last_event_id",
        "long_ids",
        "max_event_bytes",
        "not_json",
        "retry",
        "skipped",
    )

    def __init__(
        self,
        *,
        last_event_id: str = "",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_id_bytes: int = DEFAULT_MAX_ID_BYTES,
        empty_id: str | None = "",
        json_data: bool = False,
        check_json: bool = False,
        records: bool = False,
    ) -> None:
        if max_event_bytes <= 0:
            raise ValueError(f"max_event_bytes must be positive, got {max_event_bytes}")
        if max_id_bytes <= 0:
            raise ValueError(f"max_id_bytes must be positive, got {max_id_bytes}")
        #: The spec's "last event ID string": updated at each blank line from
        #: the id buffer, whether or not an event is dispatched.
        self.last_event_id = last_event_id
        #: The latest valid ``retry:`` value in seconds, or None if none came.
        self.retry: float | None = None
        #: How many oversized events were dropped so far.
        self.skipped = 0
        #: How many ``id:`` fields were ignored for being longer than max_id_bytes.
        self.long_ids = 0
        self.max_event_bytes = max_event_bytes
        self._max_id = max_id_bytes
        #: Events whose data is not JSON (counted with check_json only).
        self.not_json = 0
        self._empty_id = empty_id
        self._json = json_data
        self._check_json = check_json
        self._records = records
        self._last_id_raw = last_event_id.encode("utf-8")
        self._id_buf = self._last_id_raw
        self._data: list[bytes] = []
        self._type = b""
        self._size = 0  # bytes of the current event's complete lines
        self._discarding = False  # current event is oversized: drop until a blank line
        self._drop_line = False  # drop bytes up to the next line end
        self._tail: list[bytes] = []  # the incomplete last line, in pieces
        self._tail_len = 0
        self._held = 0  # bytes of whole lines of an unfinished event at the tail's start
        self._at_start = True  # a BOM may still come
        self._head = b""  # first bytes, held until we know whether they are a BOM
        self._cr_pending = False  # the last read ended with CR: a leading LF is its partner

    def feed(self, data: bytes) -> list[SseEvent]:
        """Parse one read; return the events it completed, in order."""
        if not data:
            return []
        if self._at_start:
            data = self._strip_bom(data)
            if not data:
                return []
        if self._cr_pending:
            self._cr_pending = False
            if data[:1] == b"\n":
                data = data[1:]
        if 13 in data:  # CR (an int needle is a memchr; b"\r" in data is ~4x slower)
            self._cr_pending = data[-1:] == b"\r"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._drop_line:
            end = data.find(b"\n")
            if end < 0:
                return []
            self._drop_line = False
            data = data[end + 1 :]
            # The dropped line was not blank, so the event goes on: count nothing more.
        end = data.rfind(b"\n")
        if end < 0:
            self._keep_tail(data)
            return []
        body = data[: end + 1]
        if self._tail:
            self._tail.append(body)
            body = b"".join(self._tail)
            self._tail = []
            self._tail_len = 0
            self._held = 0
        out: list[SseEvent] = []
        if self._records:
            tail_lines, retry_in_tail = self._record_events(body, out)
        else:
            pieces = body.split(b"\n\n")
            last = len(pieces) - 1
            if last:
                if self._size or self._discarding:  # the event began in lines already read
                    self._lines(pieces[0].split(b"\n"), out)
                    self._dispatch(out)
                    self._events(pieces, 1, last, out)
                else:
                    self._events(pieces, 0, last, out)
            tail_lines = pieces[last]
            retry_in_tail = b"retry" in tail_lines
        rest = data[end + 1 :]
        if tail_lines:
            if (
                not self._size
                and not self._discarding
                and len(tail_lines) + len(rest) <= min(self.max_event_bytes, HOLD_BYTES)
                and not retry_in_tail
            ):
                # An event cut by the read: held whole (its lines are read when
                # it ends, on the fast path) -- a retry: line takes effect now.
                self._tail = [tail_lines]
                self._tail_len = self._held = len(tail_lines)
            else:
                self._lines(tail_lines[:-1].split(b"\n"), out)
        self._keep_tail(rest)
        return out

    def _record_events(self, body: bytes, out: list[SseEvent]) -> tuple[bytes, bool]:
        """``records=True``: the complete events of ``body`` (which ends with a
        line end) from its lines, and the lines of the unfinished event after
        them (with their line ends) and whether one of those is a retry: line.

        Cuts the body at LF (a memchr: ~3x as fast as looking for LF LF) and
        finds the events' ends with ``list.index``: an event of an id: line
        and data: lines (a mux web sink's records) costs one slice a line.
        """
        lines = body.split(b"\n")
        lines.pop()  # after the last line end
        append = out.append
        limit = self.max_event_bytes
        max_id = self._max_id
        as_raw = self._json and not self._check_json
        shown_id = self.last_event_id or self._empty_id
        index = lines.index
        i = 0
        while True:
            try:
                j = index(b"", i)
            except ValueError:
                break
            event = lines[i:j]
            size = sum(map(len, event)) + j - i - 1  # its lines and the LFs between them
            i = j + 1
            if not event:  # a blank line more: nothing to dispatch from a clean state
                if self._size or self._discarding:
                    # The end of an event begun in lines already read: its id
                    # (if any) is in effect for the events after it.
                    self._dispatch(out)
                    shown_id = self.last_event_id or self._empty_id
                continue
            if self._size or self._discarding or size >= limit:
                self._lines(event, out)  # the event began in lines already read, or too big
                self._dispatch(out)
                shown_id = self.last_event_id or self._empty_id
                continue
            head = event[0]
            if head[:4] == b"id: " and len(event) > 1:
                data = [line[6:] for line in event[1:] if line[:6] == b"data: "]
                if len(data) == len(event) - 1:
                    value = head[4:]
                    if value == self._last_id_raw:
                        pass
                    elif len(value) <= max_id and b"\0" not in value:
                        self._last_id_raw = self._id_buf = value
                        self.last_event_id = value.decode("utf-8", "replace")
                        shown_id = self.last_event_id or self._empty_id
                    else:
                        self._good_id(value)  # counts it when too long
                    joined = data[0] if len(data) == 1 else b"\n".join(data)
                    append(("message", shown_id, joined if as_raw else self._decode_data(joined)))
                    continue
            self._lines(event, out)
            self._dispatch(out)
            shown_id = self.last_event_id or self._empty_id
        if i >= len(lines):
            return b"", False
        tail = lines[i:]
        tail.append(b"")
        return b"\n".join(tail), any(map(_is_retry, tail))

    def _events(self, pieces: list[bytes], first: int, last: int, out: list[SseEvent]) -> None:
        """Handle pieces first..last-1: each is a whole event starting from a clean state.

        The hot loop of the parser, so it keeps everything in locals and
        leaves the rare cases (blank lines inside, oversized) to :meth:`_lines`.
        """
        append = out.append
        limit = self.max_event_bytes
        max_id = self._max_id
        as_raw = self._json and not self._check_json
        last_id = self.last_event_id
        shown_id = last_id or self._empty_id
        for i in range(first, last):
            piece = pieces[i]
            if len(piece) >= limit:
                self._lines(piece.split(b"\n"), out)
                self._dispatch(out)
                last_id = self.last_event_id
                shown_id = last_id or self._empty_id
                continue
            if piece[:5] == b"data:" and 10 not in piece:
                value = piece[6:] if piece[5:6] == b" " else piece[5:]
                if as_raw:
                    append(("message", shown_id, value))
                else:
                    append(("message", shown_id, self._decode_data(value)))
                continue
            if piece[:4] == b"id: ":
                # An id and data lines only (a mux web sink's records): the
                # data lines cut apart and joined without looking at each.
                parts = piece.split(b"\ndata: ")
                # Every line after the id a data line: every LF was one of the cuts.
                if len(parts) > 1 and len(parts) - 1 == piece.count(10):
                    value = parts[0][4:]
                    if value == self._last_id_raw:
                        pass
                    elif len(value) <= max_id and b"\0" not in value:
                        self._last_id_raw = self._id_buf = value
                        last_id = self.last_event_id = value.decode("utf-8", "replace")
                        shown_id = last_id or self._empty_id
                    else:
                        self._good_id(value)  # counts it when too long
                    del parts[0]
                    joined = parts[0] if len(parts) == 1 else b"\n".join(parts)
                    if as_raw:
                        append(("message", shown_id, joined))
                    else:
                        append(("message", shown_id, self._decode_data(joined)))
                    continue
            if piece[:1] == b"\n":  # starts with blank lines: the general path
                self._lines(piece.split(b"\n"), out)
                self._dispatch(out)
                last_id = self.last_event_id
                shown_id = last_id or self._empty_id
                continue
            data: list[bytes] = []
            kind = b""
            for line in piece.split(b"\n"):
                name, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if name == b"data":
                    data.append(value)
                elif name == b"id":
                    if value == self._last_id_raw:
                        pass
                    elif len(value) <= max_id and b"\0" not in value:  # inline: the hot path
                        self._last_id_raw = self._id_buf = value
                        last_id = self.last_event_id = value.decode("utf-8", "replace")
                        shown_id = last_id or self._empty_id
                    else:
                        self._good_id(value)  # counts it when too long
                elif name == b"event":
                    kind = value
                elif name == b"retry":
                    self._set_retry(value)
            if data:
                append(
                    (
                        kind.decode("utf-8", "replace") or "message",
                        shown_id,
                        self._decode_data(b"\n".join(data)),
                    )
                )

    def _lines(self, lines: list[bytes], out: list[SseEvent]) -> None:
        """Interpret complete lines; a blank one dispatches."""
        limit = self.max_event_bytes
        for line in lines:
            if not line:
                self._dispatch(out)
                continue
            if self._discarding:
                continue
            self._size += len(line) + 1
            if self._size > limit:
                self._start_discarding()
                continue
            name, _, value = line.partition(b":")  # a comment has name b"": ignored below
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._type = value
            elif name == b"id":
                if self._good_id(value):
                    self._id_buf = value
            elif name == b"retry":
                self._set_retry(value)

    def _decode_data(self, raw: bytes) -> Any:
        """An event's data as handed out: raw bytes (json_data), else text."""
        if self._json:
            if self._check_json and not is_json(raw):
                self.not_json += 1
            return raw
        return raw.decode("utf-8", "replace")

    def _good_id(self, value: bytes) -> bool:
        """Whether an ``id:`` value is taken: no NUL (the spec), not too long (mux)."""
        if len(value) > self._max_id:
            self.long_ids += 1
            return False
        return b"\0" not in value

    def _set_retry(self, value: bytes) -> None:
        """Take a ``retry:`` value of ASCII digits; ignore anything else (the spec)
        and absurd digit counts (see MAX_RETRY_DIGITS)."""
        if value.isdigit():
            digits = value.lstrip(b"0")
            if len(digits) <= MAX_RETRY_DIGITS:
                self.retry = int(digits or b"0") / 1000

    def _dispatch(self, out: list[SseEvent]) -> None:
        """The spec's "dispatch the event" step, at a blank line."""
        if self._discarding:
            self._discarding = False
        elif self._id_buf != self._last_id_raw:
            self._last_id_raw = self._id_buf
            self.last_event_id = self._id_buf.decode("utf-8", "replace")
        if self._data:
            out.append(
                (
                    self._type.decode("utf-8", "replace") or "message",
                    self.last_event_id or self._empty_id,
                    self._decode_data(b"\n".join(self._data)),
                )
            )
            self._data = []
        self._type = b""
        self._size = 0

    def _start_discarding(self) -> None:
        """Drop the current event: its data, type and any id it set."""
        self.skipped += 1
        self._discarding = True
        self._data = []
        self._type = b""
        self._id_buf = self._last_id_raw

    def _keep_tail(self, rest: bytes) -> None:
        """Hold an incomplete line, or drop it when its event is already too big."""
        if not rest:
            return
        if self._discarding:
            self._drop_rest_of_line()
            return
        self._tail_len += len(rest)
        if self._size + self._tail_len > self.max_event_bytes:
            if self._held:  # read the held lines first, as they came: then the rest
                self._tail.append(rest)
                self._read_held()
                return
            self._start_discarding()
            self._drop_rest_of_line()
            return
        self._tail.append(rest)

    def _read_held(self) -> None:
        """The held event grew too big: interpret its whole lines (counting their
        size, ids, ...) as if read one by one, then keep the rest as a tail."""
        joined = b"".join(self._tail)
        held, rest = joined[: self._held], joined[self._held :]
        self._tail = []
        self._tail_len = 0
        self._held = 0
        self._lines(held[:-1].split(b"\n"), [])  # no blank line among them: no event
        self._keep_tail(rest)

    def _drop_rest_of_line(self) -> None:
        self._tail = []
        self._tail_len = 0
        self._held = 0
        self._drop_line = True

    def _strip_bom(self, data: bytes) -> bytes:
        """Remove one BOM from the very start of the stream, even if split."""
        head = self._head + data
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._head = head
            return b""
        self._at_start = False
        self._head = b""
        return head[len(_BOM) :] if head.startswith(_BOM) else head
