"""A fake Server-Sent Events server, for testing SSE clients against real faults.

Normal behaviour: ``GET path`` answers 200 ``text/event-stream`` (chunked),
replays the history after the request's ``Last-Event-ID`` (all of it when
the header is absent or names an id the server no longer knows, as a server
with a fresh history would), then streams every publish live. Each event is
written as ``id:``, ``event:`` (when set) and one ``data:`` line per line of
its payload.

Each stream is one task waiting on a shared "history changed" event, and
events are encoded once at publish time, so thousands of idle streams cost
little.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import h11
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

__all__ = ["FakeSseServer", "serve_sse"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_STREAM_HEADERS = {"content-type": "text/event-stream", "cache-control": "no-cache"}


class FakeSseServer(_FakeHttpServer):
    """An SSE server on 127.0.0.1 with scriptable faults; see :func:`serve_sse`."""

    def _encode(self, stored: StoredEvent) -> bytes:
        lines = [f"id: {stored.id}"]
        if stored.event is not None:
            lines.append(f"event: {stored.event}")
        lines.extend(f"data: {line}" for line in _LINE_BREAK.split(stored.data))
        return ("\n".join(lines) + "\n\n").encode()

    async def _answer(
        self, conn: _HttpConnection, info: RequestInfo, action: Stall | Drop | Raw | None
    ) -> bool:
        if isinstance(action, Raw):
            await conn.send_raw_head("text/event-stream")
            await conn.stream.send_all(action.data)
            if not action.close:
                await conn.wait_closed()
            return False
        await conn.send_response(200, dict(_STREAM_HEADERS))
        if isinstance(action, Stall):
            await conn.wait_closed()
            return False
        limit = action.after if isinstance(action, Drop) else None
        start = self._after(info.headers.get("last-event-id"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_when_closed, conn, nursery.cancel_scope)
            await self._stream(conn, start, limit)
            nursery.cancel_scope.cancel()
        return False

    async def _stream(self, conn: _HttpConnection, position: int, limit: int | None) -> None:
        """Send history from ``position`` on, then live events; return after ``limit``."""
        sent = 0
        while limit is None or sent < limit:
            changed = self._changed
            if position >= self._total:
                await changed.wait()
                continue
            position = max(position, self._base)
            chunk = self._encoded[position - self._base :]
            if limit is not None:
                chunk = chunk[: limit - sent]
            position += len(chunk)
            sent += len(chunk)
            await conn.send(h11.Data(data=b"".join(chunk)))
        # Drop: return without the closing chunk; the caller closes the socket.


async def _cancel_when_closed(conn: _HttpConnection, scope: trio.CancelScope) -> None:
    """End the stream's task as soon as the client goes away, not at the next publish."""
    try:
        await conn.wait_closed()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()


@asynccontextmanager
async def serve_sse(
    *, port: int = 0, path: str = "/events", max_history: int = 100_000
) -> AsyncIterator[FakeSseServer]:
    """Run a :class:`FakeSseServer` on 127.0.0.1 for the duration of the block.

    ``port=0`` picks a free port (read ``server.port`` / ``server.url``).
    The oldest events are trimmed once more than ``max_history`` are kept.
    On exit the server and every connection it holds are closed.
    """
    async with _serving(
        lambda nursery: FakeSseServer(nursery, port=port, path=path, max_history=max_history)
    ) as server:
        yield server
