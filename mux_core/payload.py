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
* so is JSON with the bare literals ``NaN``, ``Infinity``, ``-Infinity``
  that Python's ``json.dumps`` writes -- trainers really send them (a
  diverged loss) -- checked by a full decode, as those are rare;
* ``Event.data`` decodes such a payload on first access, once (the
  literals as floats: such a payload is decoded on each access and keeps
  its bytes, so the file holds the literals);
* anything else is decoded at once: text (invalid UTF-8 becomes U+FFFD).

Non-finite numbers are data: msgspec would write a NaN float as ``null``, so
they reach a JSON encoder only inside bytes -- a payload kept as received,
or a value built in Python with a NaN in it, which :func:`keep_value` turns
into its JSON with the literals (``Session.emit`` does it for a transport's
values).

One library (msgspec) decides "is this JSON?" both for the value a sink sees
and for the bytes the file holds, so the two never disagree about a
payload's type.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = ["JsonFields", "decode_payload", "is_json", "keep_raw", "keep_value"]

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
    ``msgspec.Raw``, when they are one line of valid UTF-8 JSON, NaN and
    Infinity literals allowed (a JSON encoder splices them into its line as
    they are); else the decoded value (the text).

    Checked without building objects: msgspec skims the JSON (~0.3 µs per
    200 bytes); ``10 in raw`` is a memchr (``b"\\n" in raw`` costs 4x more).
    """
    if 10 in raw or 13 in raw:  # a line break would split the JSON Lines record
        return keep_value(decode_payload(raw))
    try:
        kept = _skim(raw)
    except _NOT_JSON:
        # JSON with NaN / Infinity literals is kept as received too: the file
        # then holds what the trainer sent (a full decode checks it, ~2 µs:
        # such payloads are rare).
        if _lenient(raw) is not _UNSET and (raw.isascii() or _is_utf8(raw)):
            return msgspec.Raw(raw)
        return keep_value(decode_payload(raw))
    if raw.isascii() or _is_utf8(raw):
        return kept
    return keep_value(decode_payload(raw))


def keep_value(value: Any) -> Any:
    """What an Event keeps of a payload value built in Python (not bytes): the
    value itself, or, when a NaN or an infinity is in it, its JSON bytes with
    the literals ``NaN``, ``Infinity``, ``-Infinity`` (a ``msgspec.Raw``).

    msgspec writes a non-finite float as ``null``; a payload kept as bytes is
    spliced as it is, so every JSON-writing sink writes the literals and
    ``Event.data`` reads them back as floats. ``Session.emit`` applies this to
    the values a transport hands over; a processor that builds a payload
    (``msgspec.structs.replace(event, _payload=keep_value(new))``) does the
    same. Costs a walk of the value (~50 ns per number); a value that
    cannot be encoded is returned as it is.
    """
    try:
        if _finite(value):
            return value
        return msgspec.Raw(_encode(_with_literals(value)))
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError):
        return value


# -- non-finite numbers ------------------------------------------------------
#
# NaN and the infinities are data (a diverged loss): JSON Lines files hold
# them as the bare literals Python's json.dumps writes. msgspec writes them as
# null, so they reach an encoder only inside bytes (msgspec.Raw), spliced
# as they are: the literal bytes below, or a payload kept as received.

_NAN = msgspec.Raw(b"NaN")
_INFINITY = msgspec.Raw(b"Infinity")
_MINUS_INFINITY = msgspec.Raw(b"-Infinity")


def _finite(value: Any) -> bool:
    """Whether a decoded value holds no NaN or infinity: plain floats in dicts,
    lists and tuples (other types go through :func:`_enc_hook`)."""
    kind = type(value)
    if kind is dict:
        items: Any = value.values()
    elif kind is list or kind is tuple:
        items = value
    elif kind is float:
        return bool(value - value == 0.0)
    else:
        return True
    for item in items:
        kind = type(item)
        if kind is float:
            if item - item != 0.0:
                return False
        elif (kind is dict or kind is list or kind is tuple) and not _finite(item):
            return False
    return True


def _with_literals(value: Any) -> Any:
    """``value`` with each non-finite float replaced by its literal (Raw bytes)."""
    kind = type(value)
    if kind is float:
        if value - value == 0.0:
            return value
        if value != value:
            return _NAN
        return _INFINITY if value > 0 else _MINUS_INFINITY
    if kind is dict:
        return {key: _with_literals(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_with_literals(item) for item in value]
    return value


def _enc_hook(obj: Any) -> Any:
    """The JSON encoders' hook for what msgspec does not write itself (shared
    with :func:`mux_core.records.encode_jsonl`)."""
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return _with_literals(tolist())
    if isinstance(obj, float):  # a float subclass
        return _with_literals(float(obj))
    # Anything else a transport put in a payload is written as its repr
    # rather than failing the sink.
    return repr(obj)


_encode = msgspec.json.Encoder(enc_hook=_enc_hook).encode


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
