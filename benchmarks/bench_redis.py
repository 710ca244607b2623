"""Redis Streams: the redis-stream sink and transport against bare coredis loops.

Rows (records per second, wall clock, on the machine's Redis at 127.0.0.1:6379;
each the best of ``--repeat`` runs, since the machine is shared):

* sink: the real engine, an SSE source whose server already holds N events
  (so the source is never the limit), into the ``redis-stream`` sink; timed
  from the start until the last record is in Redis. Beside it, bare coredis
  loops appending the same N lines: pipelined ``XADD`` through coredis's
  typed API (1000 per pipeline), the same as raw requests (what the plugin
  sends, without the typed wrappers), and one ``EVAL`` of the sink's script
  per 1000 lines (what the sink does).
* transport: the real engine, a ``redis-stream`` source over a stream of N
  records into the ``file`` sink -- in a consumer group, timed until every
  entry is acknowledged (= the file sink wrote it); plain, timed until the
  file holds them all. Beside them, bare loops doing ``XREADGROUP COUNT
  10000`` + ``XACK`` (typed API, and raw requests) and raw ``XREAD COUNT
  10000`` -- reading only: no JSON decoded, nothing written.

Targets (issue 14): sink >= 80% of the bare pipelined loop and >= 150k
records/s; transport >= 80% of bare and >= 250k records/s.

    .venv/bin/python benchmarks/bench_redis.py [--records N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import coredis
import trio
from coredis.typing import Key

from mux_core._config import parse_config
from mux_core._plugins import PluginManager
from mux_core._run.engine import Engine
from mux_core.records import Event, encode_jsonl
from mux_core.sink import SinkContext
from mux_core.testing import SessionResult, run_one_session, serve_sse
from mux_redis._client import command, queue
from mux_redis.sink import _APPEND, RedisStreamSink, RedisStreamSinkOptions
from mux_redis.transport import RedisStreamOptions, RedisStreamTransport

URL = "redis://127.0.0.1:6379/0"


def _plugins() -> PluginManager:
    plugins = PluginManager()
    plugins.load_entry_points(only=set())
    return plugins


def _records(count: int) -> list[Event]:
    return [
        Event("train", "sse", "metric", str(n), {"step": n, "loss": 1.0 / n}, 1.0, n)
        for n in range(1, count + 1)
    ]


def _lines(count: int) -> list[bytes]:
    return encode_jsonl(_records(count)).split(b"\n")[:-1]


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


async def bench_sink_alone(count: int, prefix: str, lines: list[bytes]) -> float:
    records = _records(count)
    options = RedisStreamSinkOptions(url=URL, stream=f"{prefix}alone:{{source}}", maxlen=0)
    async with trio.open_nursery() as nursery:
        context = SinkContext(
            name="bench",
            config_name="bench",
            sources=(),
            request_stop=lambda reason: None,
            start_background=nursery.start_soon,
        )
        sink = RedisStreamSink(options, context)
        await sink.open()
        start = time.perf_counter()
        for first in range(0, count, 1000):
            await sink.write(records[first : first + 1000])
        elapsed = time.perf_counter() - start
        await sink.aclose()
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


async def bench_bare_raw_xadd(count: int, prefix: str, lines: list[bytes]) -> float:
    key = Key(f"{prefix}bare-raw-xadd")
    async with coredis.Redis.from_url(URL) as client:
        start = time.perf_counter()
        for first in range(0, count, 1000):
            async with client.pipeline(transaction=False) as pipeline:
                for line in lines[first : first + 1000]:
                    queue(pipeline, b"XADD", key, b"*", b"record", line)
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
    group = f"bench-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as directory:
        config = parse_config(
            textwrap.dedent(
                f"""
                [[sources]]
                name = "relay"
                transport = "redis-stream"
                url = "{URL}"
                streams = ["{key}"]
                group = "{group}"
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


async def bench_transport_plain(count: int, prefix: str, lines: list[bytes]) -> float:
    key = f"{prefix}in-plain:train"
    await _fill(key, lines)
    expected = sum(len(line) + 1 for line in lines)
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "out.jsonl"
        config = parse_config(
            textwrap.dedent(
                f"""
                [[sources]]
                name = "relay"
                transport = "redis-stream"
                url = "{URL}"
                streams = ["{key}"]
                [[sinks]]
                type = "file"
                path = "{out}"
                flush_interval = 0.01
                """
            ),
            path="bench.toml",
            plugins=_plugins(),
        )
        run = Engine(config, _plugins())
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run.run)
            while not out.exists() or out.stat().st_size < expected:  # noqa: ASYNC110
                await trio.sleep(0.005)  # another task writes it: only polling sees it
            elapsed = time.perf_counter() - start
            run.request_stop("done")
    return count / elapsed


async def bench_bare_raw_read(count: int, prefix: str, lines: list[bytes]) -> float:
    key = f"{prefix}bare-raw-in"
    await _fill(key, lines)
    stream = Key(key)
    async with coredis.Redis.from_url(URL) as client:
        await command(client, b"XGROUP", b"CREATE", stream, b"bench", b"0")
        start = time.perf_counter()
        got = 0
        while got < count:
            reply = await command(
                client,
                b"XREADGROUP",
                b"GROUP",
                b"bench",
                b"c",
                b"COUNT",
                10_000,
                b"STREAMS",
                stream,
                b">",
            )
            entries = reply[key.encode()] if isinstance(reply, dict) else reply[0][1]
            got += len(entries)
            await command(client, b"XACK", stream, b"bench", *[entry[0] for entry in entries])
        return count / (time.perf_counter() - start)


async def bench_transport_alone(count: int, prefix: str, lines: list[bytes]) -> float:
    key = f"{prefix}alone-in"
    await _fill(key, lines)
    transport = RedisStreamTransport(RedisStreamOptions(url=URL, streams=[key]))
    got = 0

    def all_read(result: SessionResult) -> bool:
        nonlocal got
        got += len(result.batches[-1])
        return got >= count + 1  # and this source's own "connected"

    start = time.perf_counter()
    result = await run_one_session(transport, until=all_read, timeout=60)
    elapsed = time.perf_counter() - start
    assert result.until_met, result.error
    return count / elapsed


async def bench_bare_raw_xread(count: int, prefix: str, lines: list[bytes]) -> float:
    key = f"{prefix}bare-raw-xread"
    await _fill(key, lines)
    stream = Key(key)
    async with coredis.Redis.from_url(URL) as client:
        start = time.perf_counter()
        got, last = 0, b"0-0"
        while got < count:
            reply = await command(client, b"XREAD", b"COUNT", 10_000, b"STREAMS", stream, last)
            entries = reply[key.encode()] if isinstance(reply, dict) else reply[0][1]
            got += len(entries)
            last = entries[-1][0]
        return count / (time.perf_counter() - start)


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


async def _clean(prefix: str) -> None:
    async with coredis.Redis.from_url(URL) as client:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(keys)


BENCHES = [
    ("sink: mux run sse -> redis-stream", bench_sink),
    ("  sink alone: RedisStreamSink.write, batches of 1000", bench_sink_alone),
    ("  bare: coredis pipelined XADD, typed API (1000/pipeline)", bench_bare_xadd),
    ("  bare: coredis pipelined XADD, raw requests (1000/pipeline)", bench_bare_raw_xadd),
    ("  bare: coredis EVAL of the sink's script (1000/call)", bench_bare_eval),
    ("transport: redis-stream group -> file", bench_transport),
    ("  bare: coredis XREADGROUP 10000 + XACK, typed API", bench_bare_read),
    ("  bare: coredis XREADGROUP 10000 + XACK, raw requests", bench_bare_raw_read),
    ("transport: redis-stream plain -> file", bench_transport_plain),
    ("  transport alone: one plain session, records kept in a list", bench_transport_alone),
    ("  bare: coredis XREAD 10000, raw requests", bench_bare_raw_xread),
]


async def main(count: int, repeat: int) -> None:
    lines = _lines(count)
    load_before = os.getloadavg()
    rows = []
    for name, bench in BENCHES:
        best = 0.0
        for _ in range(repeat):
            prefix = f"muxbench:{uuid.uuid4().hex[:8]}:"
            try:
                if bench is bench_sink:
                    rate = await bench_sink(count, prefix)
                else:
                    rate = await bench(count, prefix, lines)  # type: ignore[operator]
            finally:
                await _clean(prefix)
            best = max(best, rate)
        rows.append((name, best))
    load_after = os.getloadavg()
    print(
        f"{count} records of ~{sum(map(len, lines)) // count} bytes, Redis at 127.0.0.1:6379, "
        f"best of {repeat}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    for name, rate in rows:
        print(f"{name:62s} {rate:>10,.0f} records/s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    arguments = parser.parse_args()
    trio.run(main, arguments.records, arguments.repeat)
