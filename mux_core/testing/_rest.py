"""A fake REST (JSON polling) server, for testing polling clients against real faults.

Normal behaviour: ``GET path`` answers 200 ``application/json`` with
``{"items": [...]}``. Each item is ``{"id": ..., "event": ..., **data}`` when
the published data was a dict (JSON object text), else
``{"id": ..., "event": ..., "data": "<text>"}``. With the ``cursor_param``
query parameter (``?after=41``) the page holds the items after that id (all
kept items when the id is unknown), at most ``page_size`` of them, oldest
first; without it the page holds the newest ``page_size`` items.

Every page has an ``ETag`` naming exactly its items; a request whose
``If-None-Match`` matches the page it would get is answered 304. Connections
are kept alive between requests, as a production server would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio

from ._http import (
    Drop,
    Raw,
    RequestInfo,
    Stall,
    StoredEvent,
    _FakeHttpServer,
    _HttpConnection,
    _serving,
)

__all__ = ["FakeRestServer", "serve_rest"]


class FakeRestServer(_FakeHttpServer):
    """A JSON polling server on 127.0.0.1 with scriptable faults; see :func:`serve_rest`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        port: int,
        path: str,
        max_history: int,
        cursor_param: str,
        page_size: int,
    ) -> None:
        super().__init__(nursery, port=port, path=path, max_history=max_history)
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        #: The query parameter naming the last id the client has.
        self.cursor_param = cursor_param
        #: The most items one response carries.
        self.page_size = page_size

    def _encode(self, stored: StoredEvent) -> bytes:
        head = {"id": stored.id, "event": stored.event}
        try:
            value = orjson.loads(stored.data)
        except orjson.JSONDecodeError:
            value = _with_nonfinite(stored.data)
            if isinstance(value, dict):
                # NaN / Infinity literals (Python's json.dumps): kept as such, as a
                # Python server's json.dumps would write the page.
                return json.dumps({**head, **value}, separators=(",", ":")).encode()
        item = {**head, **value} if isinstance(value, dict) else {**head, "data": stored.data}
        return orjson.dumps(item)

    def _page(self, info: RequestInfo) -> tuple[int, int]:
        """The absolute positions [start, end) of the items this request gets."""
        total = self._total
        cursor = info.query.get(self.cursor_param)
        if cursor is None:
            return max(self._base, total - self.page_size), total
        start = self._after(cursor)
        return start, min(total, start + self.page_size)

    async def _answer(
        self, conn: _HttpConnection, info: RequestInfo, action: Stall | Drop | Raw | None
    ) -> bool:
        if isinstance(action, Stall):
            await conn.wait_closed()
            return False
        if isinstance(action, Raw):
            await conn.send_raw_head("application/json")
            await conn.stream.send_all(action.data)
            if not action.close:
                await conn.wait_closed()
            return False
        start, end = self._page(info)
        etag = f'"{start}-{end}"'
        if action is None and etag in _etags(info.headers.get("if-none-match", "")):
            await conn.send_response(304, {"etag": etag}, b"")
            return True
        items = self._encoded[start - self._base : end - self._base]
        body = b'{"items":[' + b",".join(items) + b"]}"
        headers = {
            "content-type": "application/json",
            "content-length": str(len(body)),
            "etag": etag,
            "cache-control": "no-cache",
        }
        if isinstance(action, Drop):
            await conn.send_response(200, headers)
            await conn.stream.send_all(body[: action.after])
            return False
        await conn.send_response(200, headers, body)
        return True


def _with_nonfinite(text: str) -> Any:
    """JSON text with NaN / Infinity literals as its value; None for anything else."""
    if "NaN" not in text and "Infinity" not in text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _etags(header: str) -> set[str]:
    """The entity tags of an If-None-Match header, weak ones compared weakly."""
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


@asynccontextmanager
async def serve_rest(
    *,
    port: int = 0,
    path: str = "/metrics",
    cursor_param: str = "after",
    max_history: int = 100_000,
    page_size: int = 1000,
) -> AsyncIterator[FakeRestServer]:
    """Run a :class:`FakeRestServer` on 127.0.0.1 for the duration of the block.

    ``port=0`` picks a free port (read ``server.port`` / ``server.url``).
    On exit the server and every connection it holds are closed.
    """
    async with _serving(
        lambda nursery: FakeRestServer(
            nursery,
            port=port,
            path=path,
            max_history=max_history,
            cursor_param=cursor_param,
            page_size=page_size,
        )
    ) as server:
        yield server
