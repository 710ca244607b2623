"""Payloads kept as the bytes that arrived, decoded only when something looks.

Most records are written somewhere (a JSON Lines file, a Redis stream) by a
sink that never looks inside their payload. Decoding every payload to Python
objects and encoding the same objects back to the same JSON cost two thirds
of ``mux run``'s time (issue 9), so a transport hands its payloads over as
``bytes`` and the core wraps them in a :class:`Payload`:

* ``Event.data`` decodes on first access, once (the value is cached): JSON
  when the bytes are JSON, else the text (invalid UTF-8 becomes U+FFFD).
  The bare literals ``NaN``, ``Infinity`` and ``-Infinity`` that Python's
  ``json.dumps`` writes are read as numbers: trainers really send them.
* a JSON-writing sink splices the original bytes into its line when they are
  valid JSON (checked without building objects: msgspec skims them at about
  0.3 µs per 200 bytes, a third of a full decode) and one line long; a
  payload that is not JSON is written as a JSON string, as before.

The decision "is this JSON?" is made by one library (msgspec) both for the
value a sink sees and for the bytes the file holds, so the two never
disagree about a payload's type.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = ["JsonFields", "Payload", "decode_payload", "is_json"]

_skim = msgspec.json.Decoder(msgspec.Raw).decode
_decode = msgspec.json.decode
_NOT_JSON = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
_UNSET: Any = object()


def decode_payload(raw: bytes) -> Any:
    """The value of a payload: its JSON when it is JSON, else its text."""
    try:
        return _decode(raw)
    except _NOT_JSON:
        pass
    lenient = _lenient(raw)
    if lenient is not _UNSET:
        return lenient
    text = raw.decode("utf-8", "replace")
    if "\ufffd" in text and not raw.isascii():
        # Invalid UTF-8 becomes U+FFFD first, as an event stream's decoder
        # does; what is left may well be JSON.
        try:
            return _decode(text.encode())
        except _NOT_JSON:
            pass
    return text


def is_json(raw: bytes) -> bool:
    """Whether the bytes are one JSON value (NaN and Infinity literals allowed),
    checked without building objects where possible."""
    try:
        _skim(raw)
    except _NOT_JSON:
        return _lenient(raw) is not _UNSET
    return True


def _lenient(raw: bytes) -> Any:
    """JSON with the non-standard literals Python writes (NaN, Infinity), or _UNSET.

    Also the fallback for numbers msgspec refuses to build (``1e999``): the
    standard library reads them as ``inf``, the value a reader of the file
    would get too.
    """
    if not (b"NaN" in raw or b"Infinity" in raw or b"e" in raw or b"E" in raw):
        return _UNSET
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return _UNSET


class Payload:
    """A payload as received (``raw``), decoded on first access of :attr:`value`.

    Equal to another payload (or to a plain value) when the decoded values
    are equal, and hashes as its value: an Event carrying a Payload compares
    and hashes exactly like one carrying the decoded data.
    """

    __slots__ = ("_value", "raw")

    def __init__(self, raw: bytes) -> None:
        #: The bytes the transport received, untouched.
        self.raw = raw
        self._value: Any = _UNSET

    @property
    def value(self) -> Any:
        """The decoded value (cached): JSON when the bytes are JSON, else text."""
        value = self._value
        if value is _UNSET:
            value = self._value = decode_payload(self.raw)
        return value

    def as_json(self) -> Any:
        """What a JSON encoder should write: the raw bytes when they can be
        spliced into a line as they are, else the decoded value."""
        raw = self.raw
        if b"\n" not in raw and b"\r" not in raw:
            try:
                spliced = _skim(raw)
            except _NOT_JSON:
                pass
            else:
                if raw.isascii() or _is_utf8(raw):
                    return spliced
        return self.value

    def __eq__(self, other: object) -> bool:
        if type(other) is Payload:
            return self.raw == other.raw or self.value == other.value
        return bool(self.value == other)

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"Payload({self.raw!r})"


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class JsonFields:
    """Reads a few top-level fields of a JSON object without decoding the rest.

    For transports that need an id or an event type out of every message
    (``id_field``, ``event_field``) but should pass the payload on as bytes::

        fields = JsonFields(["id", "type"])
        fields.read(b'{"id": 7, "type": "metric", "loss": 0.3}')   # -> (7, "metric")
        fields.read(b"not json")                                   # -> None

    ``read`` returns the values in the order of ``names`` (None for a missing
    field), or None when the bytes are not a JSON object. It validates the
    whole message on the way (~0.3 µs per 200 bytes).
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        slots = [f"f{i}" for i in range(len(self.names))]
        shape = msgspec.defstruct(
            "_Fields",
            [(slot, Any, None) for slot in slots],
            rename=dict(zip(slots, self.names, strict=True)),
        )
        self._decode = msgspec.json.Decoder(shape).decode
        self._slots = slots

    def read(self, raw: bytes) -> tuple[Any, ...] | None:
        try:
            found = self._decode(raw)
        except _NOT_JSON:
            value = _lenient(raw) if raw.lstrip()[:1] == b"{" else None
            if not isinstance(value, dict):
                return None
            return tuple(value.get(name) for name in self.names)
        return tuple(getattr(found, slot) for slot in self._slots)
