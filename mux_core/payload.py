"""Payloads kept as the bytes that arrived, decoded only when something looks.

Most records are written somewhere (a JSON Lines file, a Redis stream) by a
sink that never looks inside their payload. Decoding every payload to Python
objects and encoding the same objects back to the same JSON cost two thirds
of ``mux run``'s time (issue 9), so a transport hands its payloads over as
``bytes`` and the core keeps them (:func:`keep_raw`):

* bytes that are one line of valid JSON are kept as they are (a
  ``msgspec.Raw``), and a JSON-writing sink splices them into its line;
  validity is checked without building objects (msgspec skims them at about
  0.3 µs per 200 bytes, a third of a full decode);
* ``Event.data`` decodes such a payload on first access, once;
* anything else is decoded at once: text (invalid UTF-8 becomes U+FFFD), or
  JSON with the bare literals ``NaN``, ``Infinity``, ``-Infinity`` that
  Python's ``json.dumps`` writes -- trainers really send them, and they are
  read as numbers.

One library (msgspec) decides "is this JSON?" both for the value a sink sees
and for the bytes the file holds, so the two never disagree about a
payload's type.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = ["JsonFields", "decode_payload", "is_json", "keep_raw"]

_skim = msgspec.json.Decoder(msgspec.Raw).decode
_decode = msgspec.json.decode
_NOT_JSON = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
_UNSET: Any = object()


def decode_payload(raw: bytes | msgspec.Raw) -> Any:
    """The value of a payload: its JSON when it is JSON, else its text."""
    try:
        return _decode(raw)
    except _NOT_JSON:
        pass
    if type(raw) is msgspec.Raw:
        raw = bytes(raw)
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


def keep_raw(raw: bytes) -> Any:
    """What an Event keeps of payload bytes: the bytes themselves, as a
    ``msgspec.Raw``, when they are one line of valid UTF-8 JSON (a JSON
    encoder splices them into its line as they are); else the decoded value
    (the text, or JSON with NaN/Infinity literals).

    Checked without building objects: msgspec skims the JSON (~0.3 µs per
    200 bytes); ``10 in raw`` is a memchr (``b"\\n" in raw`` costs 4x more).
    """
    if 10 in raw or 13 in raw:  # a line break would split the JSON Lines record
        return decode_payload(raw)
    try:
        kept = _skim(raw)
    except _NOT_JSON:
        return decode_payload(raw)
    if raw.isascii() or _is_utf8(raw):
        return kept
    return decode_payload(raw)


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
