"""The ws transport's ``compression = "deflate"``: permessage-deflate (RFC 7692),
offered only when asked, every message inflated at most to ``max_message_bytes``.

Against the fake WebSocket server with ``deflate=True`` (wsproto compresses
what it sends), and raw servers that send hand-made compressed frames and
deflate bombs, in one frame and across fragments.
"""

from __future__ import annotations

import zlib

import pytest

from mux_core.testing import Pause, Send, compression_bomb, serve_ws
from tests.helpers.hostile import event_data, events, watch
from tests.plugins.ws.test_hostile import (
    AFTER,
    Step,
    Upgrade,
    close_codes,
    frame,
    retried_then_good,
    serve_raw_ws,
    ws,
)

DEFLATE = [("Sec-WebSocket-Extensions", "permessage-deflate")]


def deflated(message: bytes) -> bytes:
    """``message`` as a permessage-deflate payload: raw deflate, sync-flushed, its
    last four bytes (00 00 ff ff) left off, as RFC 7692 says."""
    encoder = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = encoder.compress(message) + encoder.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def _offered(head: bytes) -> bool:
    return any(
        line.lower().startswith(b"sec-websocket-extensions:") and b"permessage-deflate" in line
        for line in head.split(b"\r\n")
    )


async def test_a_deflate_server_sends_compressed_messages_that_arrive_whole() -> None:
    """The fake server compresses every message once the client offered deflate:
    big, repetitive JSON messages arrive exactly as published."""
    messages = [{"step": i, "loss": 1.0 / i, "log": "warming up " * 200} for i in range(1, 51)]
    async with serve_ws(deflate=True) as server:
        for message in messages:
            await server.publish(message)
        records = await watch(
            ws(server.url, compression="deflate"), event_data({**messages[-1], "id": "50"})
        )
    assert [e.data for e in events(records)] == [
        {**m, "id": str(i)} for i, m in enumerate(messages, 1)
    ]
    _, headers = server.requests[0]
    assert "permessage-deflate" in headers["sec-websocket-extensions"]


async def test_without_the_option_nothing_is_offered_and_messages_come_plain() -> None:
    async with serve_ws(deflate=True) as server:
        await server.publish({"after": 1})
        records = await watch(ws(server.url), event_data({"after": 1, "id": "1"}))
    assert len(events(records)) == 1
    _, headers = server.requests[0]
    assert "sec-websocket-extensions" not in headers


async def test_a_hand_made_compressed_frame_is_inflated() -> None:
    """RSV1 set, raw deflate without its tail: the message the server meant."""
    plan: list[Step] = [
        Upgrade(extra=DEFLATE),
        Send(frame(0x1, deflated(b'{"after": 1}'), first=0xC1)),
        Pause(),
    ]
    async with serve_raw_ws(plan) as server:
        records = await watch(ws(server.url(), compression="deflate"), event_data(AFTER))
    assert [e.data for e in events(records)] == [AFTER]
    assert _offered(server.requests[0])


@pytest.mark.parametrize("fragments", [False, True], ids=["one frame", "fragments"])
async def test_a_deflate_bomb_inflates_to_max_message_bytes_only(fragments: bool) -> None:
    """256 MiB of zeros in ~256 KiB of deflate, with a 1 MiB limit: the message
    fails at 1 MiB inflated (mux closes with 1009), memory stays flat, and the
    next connection's events arrive."""
    bomb = compression_bomb(256 * 1024 * 1024, "raw-deflate")
    if fragments:
        half = len(bomb) // 2
        frames = frame(0x2, bomb[:half], fin=False, first=0x42)
        frames += frame(0x0, bomb[half : half + 1024], fin=False)
        frames += frame(0x0, bomb[half + 1024 :])
    else:
        frames = frame(0x2, bomb, first=0xC2)
    plan: list[Step] = [Upgrade(extra=DEFLATE), Send(frames), Pause()]
    records, server, rss = await retried_then_good(
        plan,
        "a message exceeded max_message_bytes (1048576)",
        compression="deflate",
        max_message_bytes=1 << 20,
    )
    assert rss.growth < 32 * 1024 * 1024, rss.growth
    assert close_codes(server.received[0]) == [1009]
    assert [e.data for e in events(records)] == [AFTER]
    assert _offered(server.requests[0])
