"""REST throughput: events/s polling pages of 1000 items, mux vs bare httpx + orjson.

Run: ``.venv/bin/python benchmarks/bench_rest_throughput.py [--quick]``. Prints a
table; asserts nothing.

The server (``_servers.py rest``, its own process, HTTP/1.1 keep-alive) answers
``GET /page?after=K`` with the JSON list of items K+1 .. K+1000. Both clients
walk the same pages back to back:

* mux: the real engine, the ``rest`` transport with ``cursor_param = "after"``
  and an interval short enough that it polls again at once, a null sink;
* bare: one ``httpx.AsyncClient``, ``get`` + ``orjson.loads`` in a loop,
  the cursor taken from the last item.

Rates are medians of interleaved runs after a warm-up of each.
"""

from __future__ import annotations

import sys

import _harness as h
import httpx
import orjson
from _servers import PAGE_SIZE

TARGET_RATIO = 0.8


async def bare(port: int, pages: int) -> h.Sample:
    clock = h.Clock()
    after = 0
    count = 0
    async with httpx.AsyncClient() as client:
        for _ in range(pages):
            response = await client.get(
                f"http://127.0.0.1:{port}/page", params={"after": str(after)}
            )
            items = orjson.loads(response.content)
            count += len(items)
            after = items[-1]["id"]
    return clock.sample(count)


def mux(port: int, pages: int) -> h.Sample:
    source = f"""
[[sources]]
name = "poll"
transport = "rest"
url = "http://127.0.0.1:{port}/page"
cursor_param = "after"
interval = 0.000001
"""
    return h.count_through_mux(source, pages * PAGE_SIZE)


def run(quick: bool) -> list[h.Row]:
    pages = 100 if quick else 400
    repeats = 1 if quick else 3
    bare_s, mux_s = h.alternate("rest", [(h.in_trio(bare), 20, pages), (mux, 20, pages)], repeats)
    m, b = h.median_rate(mux_s), h.median_rate(bare_s)
    mc, bc = h.median_rate(mux_s, cpu=True), h.median_rate(bare_s, cpu=True)
    target = f">= {TARGET_RATIO:.0%} of bare"
    return [
        h.versus(
            f"REST vs httpx + orjson (pages of {PAGE_SIZE})", m, b, target, m >= TARGET_RATIO * b
        ),
        h.versus("REST per client CPU-second", mc, bc),
    ]


if __name__ == "__main__":
    print(h.table(run(h.quick_flag(sys.argv[1:]))))
