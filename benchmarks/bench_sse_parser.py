"""Throughput of the SSE parser alone: events/s on ~1M events, fed in 64 KiB reads
(text data as the spec hands it out; "+json": data decoded as the transport asks).

Run: ``.venv/bin/python benchmarks/bench_sse_parser.py``. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import time

from mux_sse._parser import SseParser

N = 1_000_000
READ = 64 * 1024


def _stream(kind: str) -> bytes:
    if kind == "data-only":
        return b"".join(b'data: {"step":%d,"loss":0.5}\n\n' % i for i in range(N))
    if kind == "id+event+data":
        return b"".join(
            b'id: %d\nevent: metric\ndata: {"step":%d,"loss":0.5}\n\n' % (i, i) for i in range(N)
        )
    return b"".join(b'data: {"step":%d,\r\ndata: "loss":0.5}\r\n\r\n' % i for i in range(N))


def _bench(kind: str, *, json_data: bool = False) -> None:
    blob = _stream(kind)
    reads = [blob[i : i + READ] for i in range(0, len(blob), READ)]
    parser = SseParser(json_data=json_data, empty_id=None if json_data else "")
    count = 0
    start = time.perf_counter()
    for chunk in reads:
        count += len(parser.feed(chunk))
    elapsed = time.perf_counter() - start
    mib = len(blob) / 2**20 / elapsed
    label = kind + (" +json" if json_data else "")
    print(
        f"{label:>22}: {count:>9,} events in {elapsed:.3f} s"
        f" = {count / elapsed:>12,.0f} events/s ({mib:.0f} MiB/s)"
    )


if __name__ == "__main__":
    for kind in ("data-only", "id+event+data", "two-line CRLF"):
        _bench(kind)
    # What the sse transport asks for: data decoded as JSON inside the parser's loop.
    for kind in ("data-only", "id+event+data"):
        _bench(kind, json_data=True)
