"""The redis-stream sink and transport against real Redis servers (never a mock).

The machine's Redis at 127.0.0.1:6379 serves most tests (each under its own
key prefix, deleted afterwards); tests that stop, restart or reconfigure a
server start their own ``redis-server`` on a free port. Without Redis these
tests fail with what to do (tests/helpers/redis.py), they are never skipped.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from coredis.typing import Key

from mux_core._config import parse_config
from mux_core._plugins import PluginManager
from mux_core._run.engine import Engine
from mux_core.records import (
    Event,
    State,
    Status,
    decode_jsonl,
)
from mux_core.testing import CollectingSink, Collectors, serve_sse
from mux_redis._client import client_name, command, make_client, parse_url
from mux_redis.sink import _APPEND, RedisStreamSinkOptions
from mux_redis.transport import RedisStreamOptions
from tests.helpers.e2e import (
    FAST_RETRY,
    MUX,
    closed_port,
    file_sink_toml,
    read_jsonl,
    start_mux,
    terminate,
    wait_exit,
    wait_for_file,
    write_config,
)
from tests.helpers.redis import (
    SHARED_URL,
    OwnRedis,
    env_without_mux,
    kill_clients,
    own_cluster,
    redis_cli,
    wait_for,
)


@pytest.fixture
def redis_plugins(collectors: Collectors) -> PluginManager:
    plugins = PluginManager()
    plugins.register(collectors, name="collectors")
    plugins.register_module("mux_redis")
    plugins.register_module("mux_sse")
    plugins.register_module("mux_file")
    return plugins


async def stream_values(url: str, key: str, *, ca_file: str | None = None) -> list[bytes]:
    """Every entry's ``record`` field of stream ``key``, oldest first."""
    async with make_client(parse_url(url), ca_file=ca_file, verify=True, timeout=5) as client:
        entries = await command(client, b"XRANGE", Key(key), b"-", b"+")
    assert all(entry[1][0] == b"record" and len(entry[1]) == 2 for entry in entries)
    return [entry[1][1] for entry in entries]


def engine(plugins: PluginManager, toml: str) -> Engine:
    config = parse_config(textwrap.dedent(toml), path="t.toml", plugins=plugins)
    return Engine(config, plugins)


@pytest.fixture
async def sse_server() -> AsyncIterator[Any]:
    async with serve_sse() as server:
        yield server


def publish(server: Any, count: int, start: int = 1) -> None:
    for n in range(start, start + count):
        data: Any = {"step": n, "loss": 1.0 / n, "tag": "é✓"} if n % 3 else f"plain text {n}"
        server.publish_nowait(data, event="metric" if n % 2 else None)


def file_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def event_keys(lines: list[bytes]) -> list[tuple[str, int]]:
    out = []
    for line in lines:
        record = decode_jsonl(line)
        if type(record) is Event:
            out.append((record.source, record.seq))
    return out


# -- the sink ---------------------------------------------------------------


async def test_the_sink_writes_exactly_what_the_file_sink_writes(
    redis_plugins: PluginManager, prefix: str, sse_server: Any, tmp_path: Path
) -> None:
    publish(sse_server, 3000)
    out = tmp_path / "events.jsonl"
    run = engine(
        redis_plugins,
        f"""
        [[sources]]
        name = "train-a"
        transport = "sse"
        url = "{sse_server.url}"
        [[sources]]
        name = "train-b"
        transport = "sse"
        url = "{sse_server.url}"
        [[sinks]]
        type = "file"
        path = "{out}"
        [[sinks]]
        type = "redis-stream"
        url = "{SHARED_URL}"
        stream = "{prefix}{{source}}"
        maxlen = 0
        """,
    )

    async def both_complete() -> bool:
        values = [await stream_values(SHARED_URL, f"{prefix}train-{s}") for s in "ab"]
        return all(sum(b'"type":"event"' in v for v in vs) == 3000 for vs in values)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run.run)
        await wait_for(both_complete, what="3000 events per source in Redis")
        run.request_stop("test done")
    assert run.result is not None and run.result.exit_code == 0
    lines = file_lines(out)
    for source in ("train-a", "train-b"):
        mine = [line for line in lines if f'"source":"{source}"'.encode() in line]
        assert await stream_values(SHARED_URL, f"{prefix}{source}") == mine
    assert len(lines) > 6000


async def test_the_sink_trims_approximately_to_maxlen(
    redis_plugins: PluginManager, prefix: str, sse_server: Any, tmp_path: Path
) -> None:
    publish(sse_server, 5000)
    run = engine(
        redis_plugins,
        f"""
        [[sources]]
        name = "s"
        transport = "sse"
        url = "{sse_server.url}"
        [[sinks]]
        type = "redis-stream"
        url = "{SHARED_URL}"
        stream = "{prefix}all"
        maxlen = 1000
        """,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run.run)
        await wait_for(
            lambda: '"seq":5000' in redis_cli(6379, "XREVRANGE", f"{prefix}all", "+", "-"),
            what="the last event",
        )
        run.request_stop("test done")
    length = int(redis_cli(6379, "XLEN", f"{prefix}all"))
    assert 1000 <= length < 2000  # ~: whole macro nodes are trimmed


# -- the transport ----------------------------------------------------------


async def test_the_transport_reads_back_equal_records(
    redis_plugins: PluginManager,
    collectors: Collectors,
    prefix: str,
    sse_server: Any,
    tmp_path: Path,
) -> None:
    publish(sse_server, 2000)
    out = tmp_path / "events.jsonl"
    collector = engine(
        redis_plugins,
        f"""
        [[sources]]
        name = "train"
        transport = "sse"
        url = "{sse_server.url}"
        [[sinks]]
        type = "file"
        path = "{out}"
        [[sinks]]
        type = "redis-stream"
        url = "{SHARED_URL}"
        stream = "{prefix}{{source}}"
        """,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collector.run)
        await wait_for(
            lambda: int(redis_cli(6379, "XLEN", f"{prefix}train")) >= 2002, what="2000 events"
        )
        collector.request_stop("collected")
    expected = [decode_jsonl(line) for line in file_lines(out)]
    consumer = engine(
        redis_plugins,
        f"""
        [[sources]]
        name = "relay"
        transport = "redis-stream"
        url = "{SHARED_URL}"
        streams = ["{prefix}*"]
        [[sinks]]
        type = "collect"
        """,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer.run)
        sink = await collectors.sink(timeout=30)
        await wait_for(
            lambda: len([r for r in sink.records if r.source == "train"]) >= len(expected),
            what="every record relayed",
        )
        consumer.request_stop("read")
    relayed = [r for r in sink.records if r.source == "train"]
    assert relayed == expected  # source, transport, seq, ids, times, data: all as collected
    own = [r for r in sink.records if type(r) is Status and r.source == "relay"]
    assert [s.state for s in own][:2] == [State.CONNECTING, State.CONNECTED]
    assert own[-1].state is State.STOPPED


async def test_plain_mode_resumes_from_the_last_entry_id_and_finds_new_streams(
    redis_plugins: PluginManager, collectors: Collectors, prefix: str
) -> None:
    def add(key: str, source: str, seqs: range) -> None:
        for seq in seqs:
            record = Event(source, "sse", "m", None, {"n": seq}, 1.0, seq)
            line = record_line(record)
            redis_cli(6379, "XADD", f"{prefix}{key}", "*", "record", line)

    add("a", "a", range(1, 51))
    relay = f"relay-{prefix.split(':')[1]}"  # its connections are named mux:{relay}
    consumer = engine(
        redis_plugins,
        f"""
        [[sources]]
        name = "{relay}"
        transport = "redis-stream"
        url = "{SHARED_URL}"
        streams = ["{prefix}*"]
        scan_interval = 0.1
        block = 0.1
        [[sinks]]
        type = "collect"
        """,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer.run)
        sink = await collectors.sink(timeout=30)
        await wait_for(lambda: len(sink.events) == 50, what="the first 50")
        # The connection breaks: the next session goes on after the last entry read.
        # (Only this consumer's: other tests and benchmarks share this Redis.)
        assert kill_clients(6379, f"mux:{relay}") >= 1
        add("a", "a", range(51, 101))
        add("b", "b", range(1, 31))  # a new stream matching the pattern
        await wait_for(lambda: len(sink.events) >= 130, what="the rest and the new stream")
        consumer.request_stop("read")
    assert [(e.source, e.seq) for e in sink.events] == [
        *[("a", n) for n in range(1, 101)],
        *[("b", n) for n in range(1, 31)],
    ] or sorted((e.source, e.seq) for e in sink.events) == sorted(
        [("a", n) for n in range(1, 101)] + [("b", n) for n in range(1, 31)]
    )
    assert len(sink.events) == 130  # no duplicate after the reconnect


def record_line(record: Any) -> str:
    from mux_core.records import encode_jsonl

    return encode_jsonl([record]).decode().rstrip("\n")


# -- consumer groups: a consumer SIGKILLed mid-stream ---------------------


async def test_a_killed_consumers_pending_entries_are_taken_over_and_nothing_is_lost(
    redis_plugins: PluginManager, prefix: str, tmp_path: Path
) -> None:
    total = 30_000
    source_key = f"{prefix}in:train"
    # The input: what a collector wrote (one EVAL per 5000, as the sink does).
    async with make_client(parse_url(SHARED_URL), ca_file=None, verify=True, timeout=5) as client:
        for start in range(1, total + 1, 5000):
            lines = [
                record_line(Event("train", "sse", "m", str(n), {"n": n}, 1.0, n)).encode()
                for n in range(start, start + 5000)
            ]
            await command(client, b"EVAL", _APPEND, 1, source_key, 0, *lines)

    def consumer_config(name: str, path: Path) -> Path:
        path.write_text(
            textwrap.dedent(
                f"""
                [[sources]]
                name = "relay-{name}"
                transport = "redis-stream"
                url = "{SHARED_URL}"
                streams = ["{prefix}in:*"]
                group = "archivers"
                consumer = "{name}"
                claim_idle = 1.0
                count = 200
                block = 0.2
                [[sinks]]
                type = "redis-stream"
                url = "{SHARED_URL}"
                stream = "{prefix}out:{{source}}"
                maxlen = 0
                """
            )
        )
        return path

    out_key = f"{prefix}out:train"
    a = await trio.lowlevel.open_process(
        [*MUX, "run", str(consumer_config("a", tmp_path / "a.toml"))],
        env=env_without_mux(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def frozen_holding_entries() -> bool:
        """Freeze a (SIGSTOP) once it wrote 2000 and holds entries it has not acknowledged."""
        if int(redis_cli(6379, "XLEN", out_key) or 0) <= 2000:
            return False
        a.send_signal(signal.SIGSTOP)
        if _pending_of(source_key, "archivers", "a"):
            return True
        a.send_signal(signal.SIGCONT)  # between two reads, everything acknowledged: again
        return False

    try:
        await wait_for(frozen_holding_entries, what="consumer a working, entries pending")
    finally:
        a.send_signal(signal.SIGKILL)
        await a.wait()
    written_by_a = int(redis_cli(6379, "XLEN", out_key))
    pending_a = _pending_of(source_key, "archivers", "a")
    assert written_by_a < total + 10, "consumer a finished before it was killed: raise total"
    # consumer b takes over: the rest of the stream, and a's pending entries after claim_idle.
    b = engine(redis_plugins, consumer_config("b", tmp_path / "b.toml").read_text())

    async def everything_arrived() -> bool:
        values = await stream_values(SHARED_URL, out_key)
        seqs = {decode_jsonl(v).seq for v in values if b'"type":"event"' in v}  # type: ignore[union-attr]
        return len(seqs) == total

    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.run)
        await wait_for(everything_arrived, timeout=60, what="every entry in the output")
        await wait_for(
            lambda: _pending_total(source_key, "archivers") == 0, what="every entry acknowledged"
        )
        b.request_stop("done")
    values = await stream_values(SHARED_URL, out_key)
    records = [decode_jsonl(v) for v in values if b'"type":"event"' in v]
    seqs = [r.seq for r in records if type(r) is Event]
    assert len(seqs) == len(records)  # every entry an event
    assert sorted(set(seqs)) == list(range(1, total + 1))  # nothing lost across both
    duplicates = len(seqs) - total
    # Only what a had read and not acknowledged can come twice (plus nothing else).
    assert duplicates <= pending_a
    assert pending_a > 0, "a was killed with nothing pending: the take-over was not exercised"


def _pending_of(key: str, group: str, consumer: str) -> int:
    out = redis_cli(6379, "XPENDING", key, group, "-", "+", "100000", consumer)
    return len(out.split()) // 4


def _pending_total(key: str, group: str) -> int:
    return int(redis_cli(6379, "XPENDING", key, group).split()[0])


# -- Redis stopped and started while a collector runs -----------------------


async def test_redis_restarted_under_a_running_collector_loses_nothing_acknowledged(
    redis_plugins: PluginManager,
    collectors: Collectors,
    sse_server: Any,
    tmp_path: Path,
    caplog: Any,
) -> None:
    caplog.set_level(logging.INFO, logger="mux")
    data = tmp_path / "redis"
    data.mkdir()
    # Durable on acknowledge: every append is fsynced before Redis answers.
    async with OwnRedis(
        data, extra=["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
    ) as redis:
        out = tmp_path / "collected.jsonl"
        collector = engine(
            redis_plugins,
            f"""
            [retry]
            initial_delay = 0.05
            max_delay = 0.3
            [[sources]]
            name = "train"
            transport = "sse"
            url = "{sse_server.url}"
            [[sinks]]
            type = "file"
            path = "{out}"
            [[sinks]]
            type = "redis-stream"
            url = "{redis.url}"
            stream = "col:{{source}}"
            """,
        )
        consumer = engine(
            redis_plugins,
            f"""
            [retry]
            initial_delay = 0.05
            max_delay = 0.3
            [[sources]]
            name = "relay"
            transport = "redis-stream"
            url = "{redis.url}"
            streams = ["col:*"]
            block = 0.1
            scan_interval = 0.1
            [[sinks]]
            type = "collect"
            """,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collector.run)
            nursery.start_soon(consumer.run)
            sink = await collectors.sink(timeout=30)
            publish(sse_server, 500)
            await wait_for(lambda: len(sink.events) >= 500, what="the first 500 relayed")
            # Killed while the consumer waits in a read: between two reads (up to 50 ms
            # apart) an outage this short can pass unseen, the next read connecting afresh.
            await wait_for(lambda: _blocked_in_a_read(redis.port, "mux:relay"), what="a read")
            await redis.kill()  # SIGKILL: only what was fsynced survives
            publish(sse_server, 500, start=501)  # arrives while Redis is down
            # What a user sees: one line per failed attempt, then one when Redis is back.
            await wait_for(lambda: _sink_says(caplog, "unavailable"), what="the sink to notice")
            await redis.restart()  # the same port; returns once it accepts connections
            publish(sse_server, 500, start=1001)
            await wait_for(lambda: len({e.seq for e in sink.events}) >= 1500, what="all 1500")
            await wait_for(lambda: _sink_says(caplog, "Redis is back"), what="the sink's all-clear")
            collector.request_stop("done")
            consumer.request_stop("done")
        lines = file_lines(out)
        received = event_keys(lines)
        assert len(received) == 1500
        stored = event_keys(await stream_values(redis.url, "col:train"))
        assert set(stored) == set(received)  # nothing acknowledged (or received) is lost
        assert sorted({e.seq for e in sink.events}) == list(range(1, 1501))
        relay_states = [r.state for r in sink.records if type(r) is Status and r.source == "relay"]
        down = [s for s in relay_states if s in (State.DISCONNECTED, State.SERVER_UNAVAILABLE)]
        assert down, relay_states  # the consumer said Redis was gone ...
        after = relay_states[relay_states.index(down[0]) :]
        assert State.CONNECTED in after  # ... and that it was back


def _blocked_in_a_read(port: int, name: str) -> bool:
    """Whether the connection named ``name`` waits in a blocking command (CLIENT LIST)."""
    for line in redis_cli(port, "CLIENT", "LIST").splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("name") == name and "b" in fields.get("flags", ""):
            return True
    return False


def _sink_says(caplog: Any, words: str) -> bool:
    return any(
        r.getMessage().startswith("sink 'redis-stream'") and words in r.getMessage()
        for r in caplog.records
    )


# -- durable resume: mux run --state ---------------------------------------------


async def _append(url: str, key: str, records: list[Any]) -> None:
    """Append records as the sink does (one EVAL of the sink's script)."""
    lines = [record_line(record).encode() for record in records]
    async with make_client(parse_url(url), ca_file=None, verify=True, timeout=5) as client:
        await command(client, b"EVAL", _APPEND, 1, Key(key), 0, *lines)


def _trainer_events(seqs: range) -> list[Event]:
    return [Event("trainer", "sse", "m", str(n), {"n": n}, 1.0 + n, n) for n in seqs]


@pytest.mark.parametrize("how", ["sigterm", "kill"])
async def test_a_plain_consumer_restarted_with_state_resumes_after_its_last_entry(
    prefix: str, tmp_path: Path, how: str
) -> None:
    key = f"{prefix}trainer"
    out = tmp_path / "relayed.jsonl"
    state = tmp_path / "state"
    config = write_config(
        tmp_path / "consumer.toml",
        FAST_RETRY
        + f"""
[[sources]]
name = "relay"
transport = "redis-stream"
url = "{SHARED_URL}"
streams = ["{prefix}*"]
block = 0.1
scan_interval = 0.1
"""
        + file_sink_toml(out),
    )
    await _append(SHARED_URL, key, _trainer_events(range(1, 301)))
    last = redis_cli(6379, "XREVRANGE", key, "+", "-", "COUNT", "1").split()[0]

    def saved_cursor() -> object:
        try:
            saved = json.loads((state / "mux-state.json").read_text())
        except (OSError, ValueError):  # not written yet (it is replaced atomically)
            return None
        return saved["sources"].get("relay", {}).get("cursor")

    def relayed(records: list[dict[str, Any]]) -> list[int]:
        return [r["seq"] for r in records if r["type"] == "event" and r["source"] == "trainer"]

    async with trio.open_nursery() as nursery:
        first = await start_mux(nursery, config, "--state", str(state))
        await wait_for_file(out, lambda r: len(relayed(r)) >= 300, process=first)
        # A checkpoint saves the position once the file sink holds what it covers.
        await wait_for(lambda: saved_cursor() == {key: last}, what="the cursor in the state")
        if how == "kill":
            first.send_signal(signal.SIGKILL)
            await wait_exit(first, config)
        else:
            assert await terminate(first, config) == 0
        # While no consumer runs, the collectors go on.
        await _append(SHARED_URL, key, _trainer_events(range(301, 401)))
        second = await start_mux(nursery, config, "--state", str(state))
        await wait_for_file(out, lambda r: 400 in relayed(r), process=second)
        assert await terminate(second, config) == 0
    # Each entry once: the second run went on after the first one's last entry.
    assert relayed(read_jsonl(out)) == list(range(1, 401))
    newest = redis_cli(6379, "XREVRANGE", key, "+", "-", "COUNT", "1").split()[0]
    assert saved_cursor() == {key: newest}


# -- Redis Cluster --------------------------------------------------------------


async def test_a_redis_cluster_takes_sources_in_many_slots_and_gives_them_all_back(
    redis_plugins: PluginManager, collectors: Collectors, sse_server: Any, tmp_path: Path
) -> None:
    sources = [f"train-{n}" for n in range(8)]
    publish(sse_server, 400)
    out = tmp_path / "events.jsonl"
    async with own_cluster(tmp_path) as cluster:
        slots = {cluster.slot_of(f"clu:{source}") for source in sources}
        assert len(slots) == len(sources)  # one slot each: no command may span two
        collector = engine(
            redis_plugins,
            "".join(
                f'[[sources]]\nname = "{s}"\ntransport = "sse"\nurl = "{sse_server.url}"\n'
                for s in sources
            )
            + f"""
            [[sinks]]
            type = "file"
            path = "{out}"
            [[sinks]]
            type = "redis-stream"
            url = "{cluster.url}"
            stream = "clu:{{source}}"
            """,
        )

        def stored(source: str) -> int:
            port = cluster.ports[0]
            return int(redis_cli(port, "-c", "XLEN", f"clu:{source}").strip() or 0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collector.run)
            # 400 events and the connecting/connected statuses of each source
            await wait_for(lambda: all(stored(s) >= 402 for s in sources), what="every source")
            collector.request_stop("collected")
        assert collector.result is not None and collector.result.exit_code == 0
        # The streams are spread over the nodes, as a cluster does.
        holding = [int(redis_cli(port, "DBSIZE").strip()) for port in cluster.ports]
        assert sum(holding) == len(sources) and sum(1 for n in holding if n) >= 2, holding
        expected = [decode_jsonl(line) for line in file_lines(out)]
        assert len([r for r in expected if type(r) is Event]) == 400 * len(sources)

        consumers = [
            engine(
                redis_plugins,
                f"""
                [[sources]]
                name = "relay"
                transport = "redis-stream"
                url = "{cluster.url}"
                streams = ["{streams}"]
                count = 500
                {group}
                [[sinks]]
                type = "collect"
                name = "{name}"
                {copy}
                """,
            )
            for name, streams, group, copy in [
                # The plain consumer also copies what it relays back into the cluster:
                # batches of many sources, so one pipeline of EVALs to many slots.
                (
                    "plain",
                    "clu:*",
                    "",
                    f'[[sinks]]\ntype = "redis-stream"\nurl = "{cluster.url}"\n'
                    'stream = "copy:{source}"\nmaxlen = 0',
                ),
                ("grouped", "clu:*", 'group = "g"\nconsumer = "c1"', ""),
                # One stream, one slot: one blocking read, as on a single server.
                ("one-slot", "clu:train-5", "", ""),
            ]
        ]
        async with trio.open_nursery() as nursery:
            for consumer in consumers:
                nursery.start_soon(consumer.run)
            sinks = [await collectors.sink("plain"), await collectors.sink("grouped")]
            one_slot = await collectors.sink("one-slot")
            train_5 = [r for r in expected if r.source == "train-5"]

            def relayed(sink: CollectingSink) -> list[Any]:
                return [r for r in sink.records if r.source != "relay"]

            await wait_for(
                lambda: (
                    all(len(relayed(sink)) >= len(expected) for sink in sinks)
                    and len(relayed(one_slot)) >= len(train_5)
                ),
                what="every record through every consumer",
            )
            # Entries arriving while the consumers wait are read too (the empty-round waits).
            extra = Event("train-5", "sse", "m", None, {"late": True}, 2.0, 10_000)
            redis_cli(
                cluster.ports[0], "-c", "XADD", "clu:train-5", "*", "record", record_line(extra)
            )
            await wait_for(
                lambda: all(extra in relayed(sink) for sink in [*sinks, one_slot]),
                what="a late entry",
            )
            for consumer in consumers:
                consumer.request_stop("read")
        assert relayed(one_slot) == [*train_5, extra]
        for sink in sinks:
            got = [r for r in relayed(sink) if r != extra]
            assert len(got) == len(expected)
            for source in sources:  # each stream's order is kept; streams interleave
                assert [r for r in got if r.source == source] == [
                    r for r in expected if r.source == source
                ]
        pending = redis_cli(cluster.ports[0], "-c", "XPENDING", "clu:train-3", "g")
        assert pending.split()[0] == "0"  # the group acknowledged everything it relayed
        for source in sources:
            original = await stream_values(cluster.url, f"clu:{source}")
            assert await stream_values(cluster.url, f"copy:{source}") == original


# -- TLS ----------------------------------------------------------------------


async def test_rediss_with_a_private_ca(
    redis_plugins: PluginManager,
    collectors: Collectors,
    sse_server: Any,
    tmp_path: Path,
    ca: trustme.CA,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    tls = [
        "--tls-cert-file", str(cert_file),
        "--tls-key-file", str(key_file),
        "--tls-ca-cert-file", str(ca_file),
        "--tls-auth-clients", "no",
        "--save", "", "--appendonly", "no",
    ]  # fmt: skip
    async with OwnRedis(tmp_path, extra=tls, tls_port=True) as redis:
        publish(sse_server, 100)
        collector = engine(
            redis_plugins,
            f"""
            [[sources]]
            name = "train"
            transport = "sse"
            url = "{sse_server.url}"
            [[sinks]]
            type = "redis-stream"
            url = "{redis.url}"
            ca_file = "{ca_file}"
            stream = "tls:{{source}}"
            """,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collector.run)
            await wait_for(
                lambda: redis.tls_len("tls:train", ca_file) >= 102, what="100 events over TLS"
            )
            collector.request_stop("done")
        consumer = engine(
            redis_plugins,
            f"""
            [[sources]]
            name = "relay"
            transport = "redis-stream"
            url = "{redis.url}"
            ca_file = "{ca_file}"
            streams = ["tls:train"]
            [[sinks]]
            type = "collect"
            """,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer.run)
            sink = await collectors.sink(timeout=30)
            await wait_for(lambda: len(sink.events) >= 100, what="100 events relayed over TLS")
            consumer.request_stop("done")
        assert [e.seq for e in sink.events] == list(range(1, 101))
        values = await stream_values(redis.url, "tls:train", ca_file=str(ca_file))
        assert len([v for v in values if b'"type":"event"' in v]) == 100
        # Without the CA the certificate is refused.
        strict = engine(
            redis_plugins,
            f"""
            [[sources]]
            name = "relay"
            transport = "redis-stream"
            url = "{redis.url}"
            streams = ["tls:train"]
            retry = {{ max_attempts = 1 }}
            [[sinks]]
            type = "collect"
            """,
        )
        result = await strict.run()
        refused = [r for r in collectors.sinks["collect"].records if type(r) is Status]
        assert result.final_states["relay"] is State.MAX_RETRIES_EXCEEDED
        words = "TLS certificate verify failed: unknown issuer (self-signed or an untrusted CA"
        assert (
            refused[-1].detail
            == f"1 attempts in a row failed; last: {words}; trust it with ca_file)"
        )
        # verify = false connects to the untrusted server, and says so once.
        caplog.set_level(logging.WARNING, logger="mux.tls")
        trusting = engine(
            redis_plugins,
            f"""
            [[sources]]
            name = "unchecked"
            transport = "redis-stream"
            url = "{redis.url}"
            verify = false
            streams = ["tls:train"]
            [[sinks]]
            type = "collect"
            name = "unchecked"
            """,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trusting.run)
            unchecked = await collectors.sink("unchecked", timeout=30)
            await wait_for(
                lambda: len(unchecked.events) >= 100, what="100 events relayed, unverified"
            )
            trusting.request_stop("done")
        warnings = [r.getMessage() for r in caplog.records if r.name == "mux.tls"]
        assert len(warnings) == 1
        assert warnings[0].startswith("source 'unchecked': verify = false: TLS certificates")


def _check_problem(options: RedisStreamOptions | RedisStreamSinkOptions) -> str:
    with pytest.raises(ValueError) as raised:
        if isinstance(options, RedisStreamOptions):
            RedisStreamOptions.check(options)
        else:
            RedisStreamSinkOptions.check(options)
    return str(raised.value)


def test_a_rediss_ca_file_is_checked_like_every_ca_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "x.pem")
    url = "rediss://127.0.0.1:6380/0"
    for kind in (RedisStreamOptions, RedisStreamSinkOptions):
        assert _check_problem(kind(url=url, ca_file=missing)) == (
            f"ca_file: no such file {missing!r}"
        )
        assert _check_problem(kind(url=url, ca_file=__file__, verify=False)).startswith(
            "ca_file: has no effect with verify = false"
        )


# -- mux check, mux plugins -------------------------------------------------


def test_mux_check_masks_the_password_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        textwrap.dedent(
            """
            [[sources]]
            name = "in"
            transport = "redis-stream"
            url = "redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0"
            streams = ["mux:*"]
            group = "g"
            consumer = "${HOSTNAME:-mux}"
            [[sinks]]
            type = "redis-stream"
            url = "rediss://app:${REDIS_PASSWORD}@redis.example:6380/0"
            """
        )
    )
    env = {**env_without_mux(), "REDIS_PASSWORD": "s3cr3t-pw"}
    result = subprocess.run(
        [*MUX, "check", str(config)], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "s3cr3t-pw" not in result.stdout + result.stderr
    assert "***" in result.stdout and "redis-stream" in result.stdout


def test_a_group_without_a_consumer_fails_check_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[[sources]]\nname = "in"\ntransport = "redis-stream"\ngroup = "g"\n'
        '[[sinks]]\ntype = "file"\npath = "x.jsonl"\n'
    )
    result = subprocess.run(
        [*MUX, "check", str(config)], capture_output=True, text=True, env=env_without_mux()
    )
    assert result.returncode == 2
    assert f"{config}:1:" in result.stderr and "consumer is required" in result.stderr


def test_without_coredis_the_plugin_is_unavailable_with_the_install_hint(tmp_path: Path) -> None:
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['coredis'] = None\n")
    env = {**env_without_mux(), "PYTHONPATH": str(blocker)}
    listed = subprocess.run([*MUX, "plugins"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if line.startswith("redis "))
    assert "unavailable" in row and "pip install 'mux[redis]'" in row
    config = tmp_path / "c.toml"
    config.write_text(
        '[[sources]]\nname = "s"\ntransport = "sse"\nurl = "http://127.0.0.1:1/"\n\n'
        '[[sinks]]\ntype = "redis-stream"\n'
    )
    checked = subprocess.run([*MUX, "check", str(config)], capture_output=True, text=True, env=env)
    assert checked.returncode == 2
    assert f"{config}:7: sinks[0].type: " in checked.stderr
    assert "pip install 'mux[redis]'" in checked.stderr
    assert "Traceback" not in checked.stderr


def test_bad_urls_are_refused_before_any_io() -> None:
    for url, words in [
        ("http://127.0.0.1:6379", "scheme"),
        ("redis://", "no host"),
        ("redis://h:6379/x", "database number"),
        ("redis+cluster://h:6379/2", "only database 0"),
    ]:
        with pytest.raises(ValueError, match=words):
            parse_url(url)
    target = parse_url("rediss://user:p%40ss@h:7000/3")
    assert (target.host, target.port, target.db, target.tls) == ("h", 7000, 3, True)
    assert (target.username, target.password, target.cluster) == ("user", "p@ss", False)
    assert parse_url("redis://h", cluster=True).cluster


def test_connections_are_named_after_the_source_or_sink_as_redis_allows() -> None:
    # Redis refuses a CLIENT SETNAME with spaces or control characters (and with it
    # the connection): source names may have them.
    assert client_name("mux:train run 3\n") == "mux:train_run_3_"
    assert client_name("mux-sink:redis-stream") == "mux-sink:redis-stream"


async def test_a_source_never_reads_connected_before_redis_answered() -> None:
    """Plain mode on a literal stream needs no command before its first read;
    against a closed port the session must still end server_unavailable
    (refused), never connected-then-disconnected."""
    from mux_core.errors import ServerUnavailable
    from mux_core.testing import run_one_session
    from mux_redis.transport import RedisStreamTransport

    with closed_port() as port:
        transport = RedisStreamTransport(
            RedisStreamOptions(url=f"redis://127.0.0.1:{port}/0", streams=["mux:x"])
        )
        result = await run_one_session(transport, timeout=10)
    assert isinstance(result.error, ServerUnavailable)
    assert "refused" in result.error.detail
    assert [s.state for s in result.records if type(s) is Status] == []
