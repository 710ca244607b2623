"""Reading a page of items without decoding them, and remembering what was delivered.

A page of 1,000 metric items decoded to Python objects (orjson) and encoded
back to the same JSON by the file sink cost ~4 µs per item; nothing in
between looked at the items. :class:`PageReader` asks msgspec for the items
as raw JSON (``msgspec.Raw`` slices of the page, validated but not built) and,
in a second C-level pass, for just the id and type fields of each item. The
items then travel as the bytes the server sent.

Pages of another shape (a single object, items that are not objects, a
missing ``items`` key, NaN literals) are left to the general path in the
transport, which decodes the page and explains what does not match.

:class:`Delivered` implements mux's duplicate rule for polling
(docs/architecture.md, Guarantees the code relies on): an item whose id was
already delivered in the current run segment *with the same data* is a
duplicate and is dropped; the same id with different data means the stream
started over -- it is delivered and a new segment begins. It remembers
recent pages, bounded by items and by bytes.
"""

from __future__ import annotations

from typing import Any

import msgspec

from mux_core.payload import decode_payload

__all__ = ["Delivered", "PageReader"]

_FAILED = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


class PageReader:
    """Items at a dotted path of a JSON page, as raw JSON, with their ids and types."""

    def __init__(self, items_path: str, id_field: str | None, event_field: str | None) -> None:
        keys = items_path.split(".") if items_path else []
        self._raw_items = msgspec.json.Decoder(_at_path(list[msgspec.Raw], keys)).decode
        fields = [(name, slot) for name, slot in ((id_field, "i"), (event_field, "k")) if name]
        self._has_fields = bool(fields)
        self._keys = keys
        self._fields_decode = None
        if fields:
            item = msgspec.defstruct(
                "_Item",
                [(slot, Any, None) for _, slot in fields],
                rename={slot: name for name, slot in fields},
            )
            self._fields_decode = msgspec.json.Decoder(_at_path(list[item], keys)).decode  # type: ignore[valid-type]
        self._id = id_field is not None
        self._kind = event_field is not None

    def read(self, page: bytes) -> tuple[list[Any], list[Any], list[Any]] | None:
        """``(items, ids, kinds)`` -- raw items, and each item's id and type (or
        None) -- or None when the page is not a list of objects at the path.

        Items are ``msgspec.Raw`` when they can be spliced into a JSON line as
        they are (no line break, valid UTF-8), else bytes for the core to
        look at one by one.
        """
        try:
            items = _unwrap(self._raw_items(page), self._keys)
            found = _unwrap(self._fields_decode(page), self._keys) if self._fields_decode else None
        except _FAILED:
            return None
        if found is None:
            if self._has_fields:
                return None
            ids: list[Any] = [None] * len(items)
            kinds: list[Any] = ids
        else:
            ids = [f.i for f in found] if self._id else [None] * len(found)
            kinds = [f.k for f in found] if self._kind else [None] * len(found)
        if 10 in page or 13 in page or not (page.isascii() or _is_utf8(page)):
            # Pretty-printed or odd pages: each item goes to the core as bytes.
            items = [bytes(item) for item in items]
        return items, ids, kinds


def _at_path(inner: Any, keys: list[str]) -> Any:
    """A msgspec type: ``inner`` nested under ``keys`` ({"data": {"items": inner}})."""
    shape = inner
    for depth, key in enumerate(reversed(keys)):
        shape = msgspec.defstruct(f"_Level{depth}", [("v", shape)], rename={"v": key})
    return shape


def _unwrap(value: Any, keys: list[str]) -> Any:
    for _ in keys:
        value = value.v
    return value


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class Delivered:
    """The items delivered in the current run segment, remembered by id.

    Two generations of one dict each: new pages go into the young one; when
    it holds half of ``max_items`` items (or of ``max_bytes`` bytes of
    pages) it becomes the old one and the previous old one is dropped whole.
    So memory stays within the bounds, the newest half is always
    remembered, and nothing is evicted item by item (deleting keys one by one
    left the dict full of dummies that slowed every lookup: 0.6 µs an item).
    A page of new ids costs two C-level ``isdisjoint`` and one ``update``;
    only ids seen again are compared, byte for byte.
    """

    def __init__(self, *, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._young: dict[str | None, Any] = {}
        self._old: dict[str | None, Any] = {}
        self._young_bytes = 0
        #: Times the stream started over (an id came again with other data).
        self.restarts = 0

    def filter(self, ids: list[str | None], items: list[Any], size: int) -> list[int] | None:
        """Indexes of the items to deliver, or None for "all of them".

        Drops exact repeats; on an id repeated with different data the
        memory starts a new segment from that item on.
        """
        if self._young.keys().isdisjoint(ids) and self._old.keys().isdisjoint(ids):
            self._remember(ids, items, size)  # the common case: every id is new
            return None
        keep: list[int] = []
        for index, id_ in enumerate(ids):
            if id_ is not None:
                seen = self._young.get(id_, _MISSING)
                if seen is _MISSING:
                    seen = self._old.get(id_, _MISSING)
                if seen is not _MISSING:
                    if _same(seen, items[index]):
                        continue
                    # The stream started over: forget the old segment.
                    self.restarts += 1
                    self.clear()
            keep.append(index)
        self._remember([ids[i] for i in keep], [items[i] for i in keep], size)
        return keep

    def clear(self) -> None:
        self._young = {}
        self._old = {}
        self._young_bytes = 0

    def _remember(self, ids: list[str | None], items: list[Any], size: int) -> None:
        if not ids:
            return
        young = self._young
        young.update(zip(ids, items, strict=True))
        young.pop(None, None)  # items without an id
        self._young_bytes += size
        if len(young) * 2 >= self.max_items or self._young_bytes * 2 >= self.max_bytes:
            self._old = young
            self._young = {}
            self._young_bytes = 0


_MISSING: Any = object()


def _same(a: Any, b: Any) -> bool:
    """Byte for byte when both are raw JSON; else by decoded value."""
    if type(a) is msgspec.Raw or type(a) is bytes:
        if type(b) is msgspec.Raw or type(b) is bytes:
            return bytes(a) == bytes(b)
        a = decode_payload(a)
    elif type(b) is msgspec.Raw or type(b) is bytes:
        b = decode_payload(b)
    return bool(a == b)
