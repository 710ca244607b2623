"""WebSocket throughput: messages/s through mux vs a bare trio-websocket loop.

Run: ``.venv/bin/python benchmarks/bench_ws_throughput.py [--quick]``. Prints a
table; asserts nothing.

The server (``_servers.py ws``, its own process) answers the handshake and then
writes pre-built text frames of small JSON messages as fast as the kernel takes
them. Both clients read N messages from the same server process:

* mux: the real engine, the ``ws`` transport (decode "auto"), a null sink;
* bare: ``open_websocket_url`` with the library's defaults, then
  ``get_message()`` + ``orjson.loads`` in a loop.

Rates are medians of interleaved runs after a warm-up of each.
"""

from __future__ import annotations

import sys

import _harness as h
import orjson
from trio_websocket import open_websocket_url

TARGET_RATIO = 0.9


async def bare(port: int, n: int) -> h.Sample:
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
    bare_s, mux_s = h.alternate("ws", [(h.in_trio(bare), 20_000, n), (mux, 20_000, n)], repeats)
    m, b = h.median_rate(mux_s), h.median_rate(bare_s)
    mc, bc = h.median_rate(mux_s, cpu=True), h.median_rate(bare_s, cpu=True)
    target = f">= {TARGET_RATIO:.0%} of bare"
    return [
        h.versus("WS vs bare trio-websocket", m, b, target, m >= TARGET_RATIO * b),
        h.versus("WS per client CPU-second", mc, bc),
    ]


if __name__ == "__main__":
    print(h.table(run(h.quick_flag(sys.argv[1:]))))
