"""Redis Streams: the redis-stream sink and transport against a bare coredis loop.

Rows (records per second, wall clock, on the machine's Redis at 127.0.0.1:6379):

* sink: the real engine, an SSE source whose server already holds N events
  (so the source is never the limit), into the ``redis-stream`` sink; timed
  from the start until the last record is in Redis. Beside it: a bare
  coredis loop appending the same N lines with pipelined ``XADD`` (1000 per
  pipeline), and with one ``EVAL`` of the sink's script per 1000.
* transport: the real engine, a ``redis-stream`` source in a consumer group
  over a stream of N records, into the ``file`` sink; timed until every
  entry is acknowledged (acknowledged = the file sink wrote it). Beside it:
  a bare coredis loop doing ``XREADGROUP COUNT 10000`` + ``XACK``.

Targets (issue 14): sink >= 80% of the bare pipelined loop and >= 150k
records/s; transport >= 80% of bare and >= 250k records/s.

    .venv/bin/python benchmarks/bench_redis.py [--records N]
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import coredis
import trio

from mux_core.config import parse_config
from mux_core.engine import Engine
from mux_core.events import Event, encode_jsonl
from mux_core.plugins import PluginManager
from mux_core.testing import serve_sse
from mux_redis._client import command
from mux_redis.sink import _APPEND

URL = "redis://127.0.0.1:6379/0"


def _plugins() -> PluginManager:
    plugins = PluginManager()
    plugins.load_entry_points(only=set())
    return plugins


def _lines(count: int) -> list[bytes]:
    records = [
        Event("train", "sse", "metric", str(n), {"step": n, "loss": 1.0 / n}, 1.0, n)
        for n in range(1, count + 1)
    ]
    return encode_jsonl(records).split(b"\n")[:-1]


async def _xlen(client: coredis.Redis[bytes], key: str) -> int:
    return int(await client.xlen(key))


async def bench_sink(count: int, prefix: str) -> float:
    async with serve_sse(max_history=count + 10) as server:
        for n in range(1, count + 1):
            server.publish_nowait({"step": n, "loss": 1.0 / n}, event="metric")
        config = parse_config(
            textwrap.dedent(
                f"""
                [[sources]]
                name = "train"
                transport = "sse"
                url = "{server.url}"
                [[sinks]]
                type = "redis-stream"
                url = "{URL}"
                stream = "{prefix}sink:{{source}}"
                maxlen = 0
                """
            ),
            path="bench.toml",
            plugins=_plugins(),
        )
        run = Engine(config, _plugins())
        async with coredis.Redis.from_url(URL) as client:
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run.run)
                while True:  # polls Redis: the sink has no event to wait on
                    if await _xlen(client, f"{prefix}sink:train") >= count + 2:
                        break
                    await trio.sleep(0.005)
                elapsed = time.perf_counter() - start
                run.request_stop("done")
    return count / elapsed


async def bench_bare_xadd(count: int, prefix: str, lines: list[bytes]) -> float:
    key = f"{prefix}bare-xadd"
    async with coredis.Redis.from_url(URL) as client:
        start = time.perf_counter()
        for first in range(0, count, 1000):
            async with client.pipeline(transaction=False) as pipeline:
                for line in lines[first : first + 1000]:
                    pipeline.xadd(key, {"record": line})
        return count / (time.perf_counter() - start)


async def bench_bare_eval(count: int, prefix: str, lines: list[bytes]) -> float:
    key = f"{prefix}bare-eval"
    async with coredis.Redis.from_url(URL) as client:
        start = time.perf_counter()
        for first in range(0, count, 1000):
            await command(client, b"EVAL", _APPEND, 1, key, 0, *lines[first : first + 1000])
        return count / (time.perf_counter() - start)


async def _fill(key: str, lines: list[bytes]) -> None:
    async with coredis.Redis.from_url(URL) as client:
        for first in range(0, len(lines), 5000):
            await command(client, b"EVAL", _APPEND, 1, key, 0, *lines[first : first + 5000])


async def bench_transport(count: int, prefix: str, lines: list[bytes]) -> float:
    key = f"{prefix}in:train"
    await _fill(key, lines)
    with tempfile.TemporaryDirectory() as directory:
        config = parse_config(
            textwrap.dedent(
                f"""
                [[sources]]
                name = "relay"
                transport = "redis-stream"
                url = "{URL}"
                streams = ["{key}"]
                group = "bench"
                consumer = "c"
                [[sinks]]
                type = "file"
                path = "{Path(directory) / "out.jsonl"}"
                """
            ),
            path="bench.toml",
            plugins=_plugins(),
        )
        run = Engine(config, _plugins())
        async with coredis.Redis.from_url(URL) as client:
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run.run)
                while True:
                    groups = await command(client, b"XINFO", b"GROUPS", key)
                    if groups:
                        info = groups[0]
                        if isinstance(info, list):
                            info = dict(zip(info[::2], info[1::2], strict=False))
                        if info[b"pending"] == 0 and info.get(b"entries-read") == count:
                            break
                    await trio.sleep(0.005)
                elapsed = time.perf_counter() - start
                run.request_stop("done")
    return count / elapsed


async def bench_bare_read(count: int, prefix: str, lines: list[bytes]) -> float:
    key = f"{prefix}bare-in"
    await _fill(key, lines)
    async with coredis.Redis.from_url(URL) as client:
        await client.xgroup_create(key, "bench", "0")
        start = time.perf_counter()
        got = 0
        while got < count:
            reply = await client.xreadgroup("bench", "c", {key: ">"}, count=10_000)
            assert reply
            entries = reply[key.encode()]
            got += len(entries)
            await client.xack(key, "bench", [entry.identifier for entry in entries])
        return count / (time.perf_counter() - start)


async def main(count: int) -> None:
    prefix = f"muxbench:{uuid.uuid4().hex[:8]}:"
    lines = _lines(count)
    try:
        rows = [("sink: mux run sse -> redis-stream", await bench_sink(count, prefix))]
        rate = await bench_bare_xadd(count, prefix, lines)
        rows.append(("  bare coredis pipelined XADD (1000/pipeline)", rate))
        rate = await bench_bare_eval(count, prefix, lines)
        rows.append(("  bare coredis EVAL of the sink's script (1000/call)", rate))
        rate = await bench_transport(count, prefix, lines)
        rows.append(("transport: redis-stream group -> file", rate))
        rate = await bench_bare_read(count, prefix, lines)
        rows.append(("  bare coredis XREADGROUP 10000 + XACK", rate))
    finally:
        async with coredis.Redis.from_url(URL) as client:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(keys)
    print(f"{count} records of ~120 bytes, Redis at 127.0.0.1:6379")
    for name, rate in rows:
        print(f"{name:55s} {rate:>12,.0f} records/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    trio.run(main, parser.parse_args().records)
