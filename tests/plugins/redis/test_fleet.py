"""redis-stream at fleet scale: bucket streams, bounded reads, joins once, claims that find
their streams, and a small fleet of collectors killed -9 and restarted with --state.

Real Redis servers (the machine's under a key prefix, or one a test starts so it can
count the commands it ran: ``INFO commandstats``, ``MONITOR``) and real processes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from coredis.typing import Key

from mux_core._config import parse_config
from mux_core._plugins import PluginManager
from mux_core._run.engine import Engine
from mux_core.records import Event, decode_jsonl, encode_jsonl
from mux_core.testing import CollectingSink, Collectors, serve_sse
from mux_redis._client import bucket_of, make_client, parse_url, queue
from mux_redis.sink import _APPEND, RedisStreamSinkOptions
from mux_redis.transport import RedisStreamOptions, expand_buckets
from tests.helpers.e2e import MUX, read_jsonl, start_mux, wait_exit, write_config
from tests.helpers.redis import (
    SHARED_URL,
    OwnRedis,
    env_without_mux,
    kill_clients,
    redis_cli,
    wait_for,
)


@pytest.fixture
def plugins(collectors: Collectors) -> PluginManager:
    manager = PluginManager()
    manager.register(collectors, name="collectors")
    for module in ("mux_redis", "mux_sse", "mux_file"):
        manager.register_module(module)
    return manager


@asynccontextmanager
async def own_redis(directory: Path) -> AsyncIterator[OwnRedis]:
    redis = OwnRedis(directory, extra=["--save", "", "--appendonly", "no"])
    await redis.start()
    try:
        yield redis
    finally:
        await redis.kill()


def engine(plugins: PluginManager, toml: str) -> Engine:
    config = parse_config(textwrap.dedent(toml), path="t.toml", plugins=plugins)
    return Engine(config, plugins)


def line(source: str, seq: int) -> bytes:
    return encode_jsonl([Event(source, "sse", "m", str(seq), {"n": seq}, 1.0, seq)]).rstrip(b"\n")


async def fill(url: str, streams: dict[str, list[bytes]]) -> None:
    """Append lines to streams as the sink does (its script), pipelined."""
    client = make_client(parse_url(url), ca_file=None, verify=True, timeout=10)
    async with client, client.pipeline(transaction=False) as pipeline:
        for key, lines in streams.items():
            queue(pipeline, b"EVAL", _APPEND, 1, Key(key), 0, *lines)


def command_calls(port: int) -> Counter[str]:
    """How often each command ran (scripts' commands included): INFO commandstats."""
    calls: Counter[str] = Counter()
    for text in redis_cli(port, "INFO", "commandstats").splitlines():
        if text.startswith("cmdstat_"):
            name, _, fields = text.partition(":")
            calls[name.removeprefix("cmdstat_")] = int(fields.split(",")[0].split("=")[1])
    return calls


@asynccontextmanager
async def monitored(port: int) -> AsyncIterator[bytearray]:
    """Every command Redis runs meanwhile, one line each, as ``MONITOR`` reports them."""
    out = bytearray()
    stream = await trio.open_tcp_stream("127.0.0.1", port)

    async def pump() -> None:
        async for chunk in stream:
            out.extend(chunk)

    async with stream, trio.open_nursery() as nursery:
        await stream.send_all(b"MONITOR\r\n")
        nursery.start_soon(pump)
        try:
            yield out
        finally:
            await trio.sleep(0.2)  # the last commands' lines
            nursery.cancel_scope.cancel()


def relayed(sink: CollectingSink, own: str) -> list[Any]:
    return [r for r in sink.records if r.source != own and type(r) is Event]


# -- the layout: buckets ---------------------------------------------------------------


async def test_bucket_streams_keep_each_source_in_one_stream_in_order_and_a_group_relays_all(
    plugins: PluginManager, collectors: Collectors, prefix: str, tmp_path: Path
) -> None:
    sources = [f"train-{n:02}" for n in range(12)]
    out = tmp_path / "collected.jsonl"
    async with serve_sse() as server:
        for n in range(1, 301):
            server.publish_nowait({"n": n}, event="metric")
        collector = engine(
            plugins,
            "".join(
                f'[[sources]]\nname = "{s}"\ntransport = "sse"\nurl = "{server.url}"\n'
                for s in sources
            )
            + f"""
            [[sinks]]
            type = "file"
            path = "{out}"
            [[sinks]]
            type = "redis-stream"
            url = "{SHARED_URL}"
            stream = "{prefix}b{{bucket}}"
            buckets = 4
            maxlen = 0
            """,
        )

        def stored() -> int:
            keys = redis_cli(6379, "--scan", "--pattern", f"{prefix}*").split()
            return sum(int(redis_cli(6379, "XLEN", key)) for key in keys)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collector.run)
            # 300 events and connecting + connected per source
            await wait_for(lambda: stored() >= 302 * len(sources), what="every record in Redis")
            collector.request_stop("collected")
    expected = [decode_jsonl(text) for text in out.read_bytes().splitlines()]
    keys = sorted(redis_cli(6379, "--scan", "--pattern", f"{prefix}*").split())
    assert keys == [f"{prefix}b{n}" for n in range(4)]  # 12 sources, 4 streams
    for key in keys:
        entries = redis_cli(6379, "XRANGE", key, "-", "+").splitlines()
        records = [decode_jsonl(text) for text in entries if text.startswith("{")]
        for source in {r.source for r in records}:
            # One source, one bucket: crc32 of its name mod buckets; its order kept there.
            assert key == f"{prefix}b{bucket_of(source, 4)}"
            assert [r for r in records if r.source == source] == [
                r for r in expected if r.source == source
            ]
    # Two consumers of one group read the 4 streams by name (no SCAN): every record once.
    consumers = [
        engine(
            plugins,
            f"""
            [[sources]]
            name = "relay"
            transport = "redis-stream"
            url = "{SHARED_URL}"
            streams = ["{prefix}b{{bucket}}"]
            buckets = 4
            group = "g"
            consumer = "{name}"
            count = 100
            block = 0.1
            [[sinks]]
            type = "collect"
            name = "{name}"
            """,
        )
        for name in ("c1", "c2")
    ]
    async with trio.open_nursery() as nursery:
        for consumer in consumers:
            nursery.start_soon(consumer.run)
        sinks = [await collectors.sink("c1"), await collectors.sink("c2")]
        events = [r for r in expected if type(r) is Event]
        await wait_for(
            lambda: sum(len(relayed(sink, "relay")) for sink in sinks) >= len(events),
            what="every event through the group",
        )
        for consumer in consumers:
            consumer.request_stop("read")
    got = [r for sink in sinks for r in relayed(sink, "relay")]
    assert sorted(got, key=lambda r: (r.source, r.seq)) == sorted(
        events, key=lambda r: (r.source, r.seq)
    )
    # Stopped cleanly: everything relayed was acknowledged, the last round too.
    assert [redis_cli(6379, "XPENDING", key, "g").split()[0] for key in keys] == ["0"] * 4
    for sink in sinks:  # within one consumer, each source's records in order
        mine = relayed(sink, "relay")
        for source in sources:
            seqs = [r.seq for r in mine if r.source == source]
            assert seqs == sorted(seqs)


def test_bucket_keys_are_written_out_and_must_agree_with_buckets(tmp_path: Path) -> None:
    assert expand_buckets(["mux:{bucket}", "other"], 3) == ["mux:0", "mux:1", "mux:2", "other"]
    # Braces that are not {bucket} are a cluster hash tag: kept; a format spec is honoured.
    assert expand_buckets(["m:{lab}:{bucket:02}"], 2) == ["m:{lab}:00", "m:{lab}:01"]
    sink, source = RedisStreamSinkOptions, RedisStreamOptions
    checks: list[tuple[Callable[[], None], str]] = [
        (lambda: sink.check(sink(stream="m:{bucket}")), "set buckets"),
        (lambda: sink.check(sink(buckets=4)), "needs {bucket}"),
        (lambda: source.check(source(streams=["m:{bucket}"])), "set buckets"),
        (lambda: source.check(source(buckets=2)), "needs {bucket}"),
    ]
    for check, words in checks:
        with pytest.raises(ValueError, match=words):
            check()
    config = write_config(
        tmp_path / "c.toml",
        '[[sources]]\nname = "s"\ntransport = "sse"\nurl = "http://127.0.0.1:1/"\n\n'
        '[[sinks]]\ntype = "redis-stream"\nstream = "mux:{bucket}"\n',
    )
    checked = subprocess.run(
        [*MUX, "check", str(config)], capture_output=True, text=True, env=env_without_mux()
    )
    assert checked.returncode == 2
    assert f"{config}:6:" in checked.stderr and "set buckets = N" in checked.stderr
    assert "Traceback" not in checked.stderr


# -- reads and joins at scale ------------------------------------------------------------


async def test_a_group_joins_each_stream_once_in_batches_and_no_read_names_over_1000(
    plugins: PluginManager, collectors: Collectors, tmp_path: Path
) -> None:
    count = 2500
    async with own_redis(tmp_path) as redis:
        await fill(redis.url, {f"f:{n}": [line(f"s{n}", 1)] for n in range(count)})
        async with monitored(redis.port) as monitor:
            consumer = engine(
                plugins,
                f"""
                [[sources]]
                name = "relay"
                transport = "redis-stream"
                url = "{redis.url}"
                streams = ["f:*"]
                group = "g"
                consumer = "c"
                scan_interval = 0.1
                block = 0.1
                [[sinks]]
                type = "collect"
                """,
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consumer.run)
                sink = await collectors.sink(timeout=30)
                await wait_for(lambda: len(relayed(sink, "relay")) == count, what="every stream")
                await wait_for(
                    lambda: command_calls(redis.port)["xack"] >= count, what="every entry acked"
                )
                # A new session (the connection broke) and many rescans join nothing again.
                assert kill_clients(redis.port, "mux:relay") >= 1
                await fill(redis.url, {f"f:{n}": [line(f"s{n}", 2)] for n in range(0, count, 7)})
                await fill(redis.url, {"f:new": [line("new", 1)]})  # a new stream: joined once
                await wait_for(
                    lambda: len(relayed(sink, "relay")) == count + len(range(0, count, 7)) + 1,
                    what="the second entries",
                )
                consumer.request_stop("read")
        calls = command_calls(redis.port)
    assert calls["xgroup|create"] == count + 1  # once per stream, across sessions and scans
    commands = monitor.decode(errors="replace").splitlines()
    joins = [text for text in commands if '"EVAL"' in text and "XGROUP" in text]
    assert len(joins) == 3 + 1  # in batches of 1000 streams; the new one later
    sizes = [
        text.count('" "') + 1 - 7  # the arguments after XREADGROUP GROUP g c COUNT n STREAMS
        for text in commands
        if '"XREADGROUP"' in text and '">"' in text
    ]
    streams_named = [size // 2 for size in sizes]
    assert streams_named and max(streams_named) == 1000  # bounded, and the bound was reached
    got = relayed(sink, "relay")
    assert len({(r.source, r.seq) for r in got}) == len(got)  # nothing twice


async def test_the_claim_pass_claims_only_where_entries_wait_too_long(
    plugins: PluginManager, collectors: Collectors, tmp_path: Path
) -> None:
    streams = 500
    async with own_redis(tmp_path) as redis:
        await fill(
            redis.url, {f"p:{n}": [line(f"s{n}", k) for k in range(1, 5)] for n in range(streams)}
        )
        for n in range(streams):
            redis_cli(redis.port, "XGROUP", "CREATE", f"p:{n}", "g", "0") if n < 5 else None
        # A consumer that read 5 streams' entries and died without acknowledging them.
        for n in range(5):
            redis_cli(redis.port, "XREADGROUP", "GROUP", "g", "dead", "STREAMS", f"p:{n}", ">")
        assert int(redis_cli(redis.port, "XPENDING", "p:0", "g").split()[0]) == 4
        consumer = engine(
            plugins,
            f"""
            [[sources]]
            name = "relay"
            transport = "redis-stream"
            url = "{redis.url}"
            streams = ["p:*"]
            group = "g"
            consumer = "live"
            claim_idle = 0.5
            block = 0.1
            [[sinks]]
            type = "collect"
            """,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer.run)
            sink = await collectors.sink(timeout=30)
            await wait_for(
                lambda: len(relayed(sink, "relay")) >= streams * 4, what="every entry, claimed too"
            )
            # Several passes more: each asks Redis which streams hold old entries.
            before = command_calls(redis.port)["eval"]
            await wait_for(lambda: command_calls(redis.port)["eval"] >= before + 3, what="passes")
            consumer.request_stop("read")
        calls = command_calls(redis.port)
        pending = [
            int(redis_cli(redis.port, "XPENDING", f"p:{n}", "g").split()[0]) for n in range(5)
        ]
    got = relayed(sink, "relay")
    assert sorted((r.source, r.seq) for r in got) == sorted(
        (f"s{n}", k) for n in range(streams) for k in range(1, 5)
    )
    assert pending == [0] * 5  # taken over and acknowledged
    # The old way asked every stream on every pass (500 XAUTOCLAIMs a pass); now
    # only the streams whose entries waited too long are claimed from.
    assert 5 <= calls["xautoclaim"] < streams
    assert calls["xpending"] >= streams  # the summaries, asked in scripts


# -- a small fleet: 3 collectors x 200 sources, two consumers, a kill -9 ----------------


#: Short waits, but a connect deadline a busy machine (600 sockets at once) can meet.
FLEET_RETRY = """\
[retry]
initial_delay = 0.05
max_delay = 0.5
connect_timeout = 15.0
"""


def _consumer_toml(url: str, name: str, out: Path) -> str:
    return (
        FLEET_RETRY
        + f"""
[[sources]]
name = "relay-{name}"
transport = "redis-stream"
url = "{url}"
streams = ["fleet:{{bucket}}"]
buckets = 8
group = "archivers"
consumer = "{name}"
block = 0.2
[[sinks]]
type = "file"
path = "{out}"
flush_interval = 0.2
"""
    )


def _collector_toml(url: str, host: int, server_url: str, sources: int) -> str:
    tables = "".join(
        f'[[sources]]\nname = "h{host}-s{n:03}"\ntransport = "sse"\nurl = "{server_url}"\n'
        for n in range(sources)
    )
    return (
        FLEET_RETRY
        + tables
        + f"""
[[sinks]]
type = "redis-stream"
url = "{url}"
stream = "fleet:{{bucket}}"
buckets = 8
maxlen = 0
"""
    )


def _delivered(paths: list[Path]) -> Counter[tuple[str, int]]:
    """(source, event id) -> how often the consumers' files hold it."""
    seen: Counter[tuple[str, int]] = Counter()
    for path in paths:
        for record in read_jsonl(path):
            if record["type"] == "event" and not record["source"].startswith("relay-"):
                seen[record["source"], int(record["id"])] += 1
    return seen


async def test_a_fleet_with_buckets_loses_nothing_when_a_collector_is_killed_and_restarted(
    tmp_path: Path,
) -> None:
    hosts, sources, total = 3, 200, 30
    names = [f"h{h}-s{n:03}" for h in range(hosts) for n in range(sources)]
    outs = [tmp_path / f"consumer-{c}.jsonl" for c in ("a", "b")]

    def complete(last: int) -> bool:
        seen = _delivered(outs)
        return all((name, k) in seen for name in names for k in range(1, last + 1))

    async with own_redis(tmp_path) as redis, trio.open_nursery() as nursery:
        servers = [await nursery.start(_serve_sse) for _ in range(hosts)]
        consumers = [
            await start_mux(
                nursery, write_config(tmp_path / f"c-{c}.toml", _consumer_toml(redis.url, c, out))
            )
            for c, out in zip("ab", outs, strict=True)
        ]
        configs = [
            write_config(
                tmp_path / f"h{h}.toml", _collector_toml(redis.url, h, servers[h].url, sources)
            )
            for h in range(hosts)
        ]
        states = [tmp_path / f"state-h{h}" for h in range(hosts)]
        collectors = [
            await start_mux(nursery, config, "--state", str(state))
            for config, state in zip(configs, states, strict=True)
        ]
        for n in range(1, 11):
            for server in servers:
                server.publish_nowait({"n": n}, event="metric")
        await wait_for(lambda: complete(10), timeout=90, what="ids 1-10 of every source")

        def checkpointed(last: str) -> bool:
            try:
                held = json.loads((states[1] / "mux-state.json").read_text())["sources"]
            except (OSError, ValueError):  # replaced atomically: read it again
                return False
            return all(held.get(f"h1-s{n:03}", {}).get("last_id") == last for n in range(sources))

        # A checkpoint of host 1's collector covers ids 1-10 (it saves every second).
        await wait_for(lambda: checkpointed("10"), timeout=60, what="host 1's state at id 10")
        # Host 1's collector dies while its server goes on publishing.
        for n in range(11, 21):
            for server in servers:
                server.publish_nowait({"n": n}, event="metric")
            await trio.sleep(0.05)
            if n == 15:
                collectors[1].send_signal(signal.SIGKILL)
        assert await wait_exit(collectors[1], configs[1]) == -signal.SIGKILL
        saved = json.loads((states[1] / "mux-state.json").read_text())["sources"]
        for n in range(21, total + 1):
            for server in servers:
                server.publish_nowait({"n": n}, event="metric")
        collectors[1] = await start_mux(nursery, configs[1], "--state", str(states[1]))
        await wait_for(lambda: complete(total), timeout=90, what="every id of every source")
        for process in [*collectors, *consumers]:
            process.send_signal(signal.SIGTERM)
        for process, config in zip(
            [*collectors, *consumers], [*configs, *configs[:2]], strict=True
        ):
            assert await wait_exit(process, config, timeout=30) == 0
        for server in servers:
            await server.stop()
        nursery.cancel_scope.cancel()
    seen = _delivered(outs)
    assert set(seen) == {(name, k) for name in names for k in range(1, total + 1)}  # none lost
    repeats = {key: n for key, n in seen.items() if n > 1}
    for (name, k), _ in repeats.items():
        # Only the killed collector's sources, and only events after its last state save.
        assert name.startswith("h1-"), (name, k)
        assert k > int(saved[name]["last_id"] or 0), (name, k, saved[name])
    # The restart resumed after id 10 (or later): without --state each source would
    # have repeated ids 1-15.
    assert len(repeats) <= sources * 5


async def _serve_sse(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with serve_sse() as server:
        task_status.started(server)
        await trio.sleep_forever()


def test_the_deployment_pages_configs_are_valid(
    plugins: PluginManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = Path(__file__).resolve().parents[3] / "docs" / "deployment.md"
    blocks = page.read_text().split("```toml\n")[1:]
    monkeypatch.setenv("REDIS_PASSWORD", "pw")
    configs = [block.split("```")[0] for block in blocks]
    assert len(configs) == 2
    bucketed = []
    for text in configs:
        config = parse_config(text, path="deployment.md", plugins=plugins)
        for options in [*(t.options for t in config.sources), *(t.options for t in config.sinks)]:
            bucketed.append(getattr(options, "buckets", None))
    assert bucketed.count(16) == 2  # the sink and the group's source agree
