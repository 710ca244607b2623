"""WebSocket throughput: messages/s through mux vs bare client loops.

Run: ``.venv/bin/python benchmarks/bench_ws_throughput.py [--quick]``. Prints a
table; asserts nothing.

The server (``_servers.py ws``, its own process) answers the handshake and then
writes pre-built text frames of small JSON messages as fast as the kernel takes
them. Every client reads N messages from the same server process:

* mux: the real engine, the ``ws`` transport (decode "auto"), a null sink;
* bare websockets: the loop a careful user writes on the library mux uses --
  websockets' sans-I/O ``ClientProtocol`` over a trio socket, ``receive_data``
  per read, ``orjson.loads`` of every text frame;
* bare trio-websocket (mux's engine before issue 9, kept as context):
  ``open_websocket_url`` with the library's defaults, then ``get_message()`` +
  ``orjson.loads`` in a loop.

Rates are medians of interleaved runs after a warm-up of each. mux does not
decode payloads nobody looks at (the null sink does not), which is part of
what it is measured on: the bare loops decode each message as a user's would.
"""

from __future__ import annotations

import sys

import _harness as h
import orjson
import trio
from trio_websocket import open_websocket_url
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.uri import parse_uri

TARGET_RATIO = 0.9


async def bare_websockets(port: int, n: int) -> h.Sample:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    loads = orjson.loads
    text = Opcode.TEXT
    async with stream:
        protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"), max_size=None)
        protocol.send_request(protocol.connect())
        await stream.send_all(b"".join(protocol.data_to_send()))
        clock = h.Clock()
        count = 0
        while count < n:
            data = await stream.receive_some(65536)
            if not data:
                raise RuntimeError("the server closed the stream")
            protocol.receive_data(data)
            for event in protocol.events_received():
                if getattr(event, "opcode", None) is text:
                    loads(event.data)
                    count += 1
        return clock.sample(count)


async def bare_trio_websocket(port: int, n: int) -> h.Sample:
    clock = h.Clock()
    loads = orjson.loads
    sample = None
    async with open_websocket_url(f"ws://127.0.0.1:{port}/ws", disconnect_timeout=0.5) as ws:
        for _ in range(n):
            loads(await ws.get_message())
        sample = clock.sample(n)
    return sample


def mux(port: int, n: int) -> h.Sample:
    source = f"""
[[sources]]
name = "blast"
transport = "ws"
url = "ws://127.0.0.1:{port}/ws"
"""
    return h.count_through_mux(source, n)


def run(quick: bool) -> list[h.Row]:
    n = 100_000 if quick else 400_000
    repeats = 1 if quick else 3
    readers = [
        (h.in_trio(bare_websockets), 20_000, n),
        (h.in_trio(bare_trio_websocket), 20_000, n // 4),
        (mux, 20_000, n),
    ]
    ws_s, twm_s, mux_s = h.alternate("ws", readers, repeats)
    m, b, t = h.median_rate(mux_s), h.median_rate(ws_s), h.median_rate(twm_s)
    mc, bc = h.median_rate(mux_s, cpu=True), h.median_rate(ws_s, cpu=True)
    target = f">= {TARGET_RATIO:.0%} of bare"
    return [
        h.versus("WS vs bare websockets sans-I/O on trio", m, b, target, m >= TARGET_RATIO * b),
        h.versus("WS per client CPU-second (same)", mc, bc),
        h.versus("WS vs bare trio-websocket (old engine)", m, t),
    ]


if __name__ == "__main__":
    print(h.table(run(h.quick_flag(sys.argv[1:]))))
