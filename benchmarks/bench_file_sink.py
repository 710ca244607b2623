"""Throughput of the file sink: records/s for 1M small events in batches of 256.

Run: ``.venv/bin/python benchmarks/bench_file_sink.py``. Prints a table; asserts nothing.
Measures what the sink costs the event loop and the disk together: encoding,
buffering, the worker-thread writes, rotation, and the final flush + fsync
(``aclose`` is inside the timing).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from mux_core.records import Event, Record, encode_jsonl
from mux_core.sink import SinkContext
from mux_file import FileOptions, FileSink

N = 1_000_000
BATCH = 256


def _batches() -> list[list[Record]]:
    records: list[Record] = [
        Event("train-sse", "sse", "metric", str(i), {"step": i, "loss": 0.31}, 1764250000.123, i)
        for i in range(1, N + 1)
    ]
    return [records[i : i + BATCH] for i in range(0, N, BATCH)]


async def _run(batches: list[list[Record]], path: str, options: dict[str, Any]) -> float:
    async with trio.open_nursery() as nursery:

        def start_background(fn: Callable[[], Awaitable[Any]]) -> None:
            nursery.start_soon(fn)

        context = SinkContext(
            name="file",
            config_name="bench",
            sources=(),
            request_stop=lambda reason: None,
            start_background=start_background,
        )
        sink = FileSink(FileOptions(path=path, **options), context)
        await sink.open()
        start = time.perf_counter()
        for batch in batches:
            await sink.write(batch)
        await sink.aclose()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return elapsed


def main() -> None:
    batches = _batches()
    size = sum(len(encode_jsonl(batch)) for batch in batches)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("defaults", {}),
        ("fsync off", {"fsync": False}),
        ("rotate 16 MiB", {"rotate_bytes": 16 << 20, "keep": 3}),
        ("flush 0.01 s", {"flush_interval": 0.01}),
    ]
    print(f"file sink: {N:,} events in batches of {BATCH}")
    print(f"{'case':>14} | {'seconds':>8} | {'records/s':>12} | {'MiB/s':>6}")
    print(f"{'-' * 14}-+-{'-' * 8}-+-{'-' * 12}-+-{'-' * 6}")
    for label, options in cases:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "events.jsonl")
            elapsed = trio.run(_run, batches, path, options)
        rate, mib = N / elapsed, size / 2**20 / elapsed
        print(f"{label:>14} | {elapsed:>8.3f} | {rate:>12,.0f} | {mib:>6.0f}")


if __name__ == "__main__":
    main()
