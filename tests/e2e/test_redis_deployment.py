"""docs/deployment.md end to end: two sharded collectors -> Redis -> two consumers in a group.

Real processes against the demo trainer (``mux serve-demo``) and the
machine's Redis: every event a collector received reaches the group, each
source is collected by exactly one shard, and every entry ends acknowledged.
"""

from __future__ import annotations

import signal
import subprocess
import textwrap
from pathlib import Path

import trio

from mux_core._config.shard import shard_of
from mux_core.records import Event, decode_jsonl
from tests.helpers.e2e import MUX
from tests.helpers.redis import (
    SHARED_URL,
    delete_prefix,
    env_without_mux,
    free_port,
    redis_cli,
    require_shared_redis,
    unique_prefix,
    wait_for,
)

SOURCES = ("train-sse", "train-ws", "train-rest")


def _events(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().splitlines():
        try:
            record = decode_jsonl(line)
        except ValueError:
            continue  # the last line of a file being written
        if type(record) is Event:
            out.append((record.source, record.seq))
    return out


async def _start(*args: str, cwd: Path, **env: str) -> trio.Process:
    return await trio.lowlevel.open_process(
        [*MUX, *args],
        cwd=cwd,
        env={**env_without_mux(), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _stop(process: trio.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        return await process.wait()


async def test_two_sharded_collectors_and_a_consumer_group_deliver_every_event(
    tmp_path: Path,
) -> None:
    require_shared_redis()
    prefix = unique_prefix()
    sse, ws, rest = free_port(), free_port(), free_port()
    (tmp_path / "collect.toml").write_text(
        textwrap.dedent(
            f"""
            [[sources]]
            name = "train-sse"
            transport = "sse"
            url = "http://127.0.0.1:{sse}/events"
            [[sources]]
            name = "train-ws"
            transport = "ws"
            url = "ws://127.0.0.1:{ws}/ws"
            [[sources]]
            name = "train-rest"
            transport = "rest"
            url = "http://127.0.0.1:{rest}/metrics"
            interval = 0.05
            [[sinks]]
            type = "redis-stream"
            url = "{SHARED_URL}"
            stream = "{prefix}{{source}}"
            [[sinks]]
            type = "file"
            path = "collected-${{SHARD}}.jsonl"
            flush_interval = 0.1
            """
        )
    )
    (tmp_path / "consume.toml").write_text(
        textwrap.dedent(
            f"""
            [[sources]]
            name = "collected"
            transport = "redis-stream"
            url = "{SHARED_URL}"
            streams = ["{prefix}*"]
            group = "archivers"
            consumer = "${{CONSUMER}}"
            claim_idle = 2.0
            block = 0.2
            scan_interval = 0.2
            [[sinks]]
            type = "file"
            path = "consumed-${{CONSUMER}}.jsonl"
            flush_interval = 0.1
            """
        )
    )
    processes: list[trio.Process] = []
    try:
        demo = await _start(
            "serve-demo",
            *("--sse-port", str(sse), "--ws-port", str(ws), "--rest-port", str(rest)),
            *("--rate", "100"),
            cwd=tmp_path,
        )
        processes.append(demo)
        collectors = []
        for index in range(2):
            collectors.append(
                await _start(
                    "run", "collect.toml", "--shard", f"{index}/2", cwd=tmp_path, SHARD=str(index)
                )
            )
        processes += collectors
        consumers = []
        for name in ("c1", "c2"):
            consumers.append(await _start("run", "consume.toml", cwd=tmp_path, CONSUMER=name))
        processes += consumers

        collected_files = [tmp_path / f"collected-{i}.jsonl" for i in range(2)]
        await wait_for(
            lambda: (
                {s for f in collected_files for s, _ in _events(f)} == set(SOURCES)
                and min(
                    sum(1 for s, _ in _events(f) if s == source)
                    for f in collected_files
                    for source in SOURCES
                    if shard_of(source, 2) == collected_files.index(f)
                )
                >= 100
            ),
            timeout=60,
            what="100 events of every source collected",
        )
        for collector in collectors:
            assert await _stop(collector) == 0
        per_shard = [set(_events(f)) for f in collected_files]
        for index, events in enumerate(per_shard):  # each source in exactly one shard
            assert {s for s, _ in events} == {s for s in SOURCES if shard_of(s, 2) == index}
        collected = per_shard[0] | per_shard[1]
        consumed_files = [tmp_path / f"consumed-{n}.jsonl" for n in ("c1", "c2")]
        await wait_for(
            lambda: collected <= {e for f in consumed_files for e in _events(f)},
            timeout=60,
            what="every collected event in the consumers' files",
        )
        await wait_for(
            lambda: all(
                int(redis_cli(6379, "XPENDING", f"{prefix}{s}", "archivers").split()[0]) == 0
                for s in SOURCES
            ),
            what="every entry acknowledged",
        )
        for consumer in consumers:
            assert await _stop(consumer) == 0
        consumed = [_events(f) for f in consumed_files]
        union = set(consumed[0]) | set(consumed[1])
        assert union == collected  # at least once, and nothing else
        # Without a crash the group delivers each entry once: no duplicate at all.
        assert len(consumed[0]) + len(consumed[1]) == len(collected)
    finally:
        for process in reversed(processes):
            if process.returncode is None:
                process.kill()
                await process.wait()
        delete_prefix(6379, prefix)
