"""SSE throughput: events/s from a blasting server, through mux, vs bare readers.

Run: ``.venv/bin/python benchmarks/bench_sse_throughput.py [--quick]``. Prints a
table; asserts nothing.

The server (``_servers.py sse``, its own process) writes the same pre-built
~1 MiB of ``data: {"step":..}`` events over loopback as fast as the kernel
takes them. Three clients read N events each, one after the other:

* mux: the real engine, the ``sse`` transport, a null sink (counts batches);
* a bare hand-written trio reader: ``receive_some`` + ``split(b"\\n\\n")`` +
  ``orjson.loads`` of each data line -- the floor any Python client pays;
* httpx ``aiter_lines`` + ``json.loads``: what one would write without mux.

Each rate is the median of several interleaved runs after one warm-up run of
each client (start of the run to the N-th event, connect included).
"""

from __future__ import annotations

import json
import sys

import _harness as h
import httpx
import orjson
import trio

TARGET = 500_000


async def bare_trio(port: int, n: int) -> h.Sample:
    clock = h.Clock()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        b"GET /blast HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += await stream.receive_some(65536)
    buffer = buffer.split(b"\r\n\r\n", 1)[1]
    count = 0
    loads = orjson.loads
    while count < n:
        buffer += await stream.receive_some(65536)
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            if event.startswith(b"data: "):
                loads(event[6:])
                count += 1
    sample = clock.sample(count)
    await stream.aclose()
    return sample


async def bare_httpx(port: int, n: int) -> h.Sample:
    clock = h.Clock()
    count = 0
    url = f"http://127.0.0.1:{port}/blast"
    async with (
        httpx.AsyncClient(timeout=None) as client,
        client.stream("GET", url) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                json.loads(line[5:])
                count += 1
                if count >= n:
                    break
    return clock.sample(count)


def mux(port: int, n: int) -> h.Sample:
    source = f"""
[[sources]]
name = "blast"
transport = "sse"
url = "http://127.0.0.1:{port}/blast"
"""
    return h.count_through_mux(source, n)


def run(quick: bool) -> list[h.Row]:
    n = 300_000 if quick else 1_500_000
    repeats = 1 if quick else 3
    trio_s, mux_s, httpx_s = h.alternate(
        "sse",
        [
            (h.in_trio(bare_trio), 50_000, n),
            (mux, 50_000, n),
            (h.in_trio(bare_httpx), 20_000, n // 3),  # httpx is slow: a third will do
        ],
        repeats,
    )
    m, b, x = (h.median_rate(s) for s in (mux_s, trio_s, httpx_s))
    mc, bc, xc = (h.median_rate(s, cpu=True) for s in (mux_s, trio_s, httpx_s))
    return [
        h.versus("SSE vs bare trio reader", m, b, f">= {TARGET:,} ev/s", m >= TARGET),
        h.versus("SSE vs httpx + json.loads", m, x),
        h.versus("SSE per client CPU-second (vs bare trio)", mc, bc),
        h.versus("SSE per client CPU-second (vs httpx)", mc, xc),
    ]


if __name__ == "__main__":
    print(h.table(run(h.quick_flag(sys.argv[1:]))))
