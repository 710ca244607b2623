"""``mux run --workers N`` as a user runs it: real processes, real servers, real kills.

The servers run in this test's trio loop; ``mux run --workers N`` is a
subprocess whose workers are its children. What the tests read is what a
user reads: the file sink's JSON Lines, the exit code, the state file.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from mux_core.testing import Respond, serve_sse
from tests.helpers.e2e import (
    FAST_RETRY,
    TRANSPORTS,
    JsonRecord,
    Server,
    file_ids,
    file_sink_toml,
    file_states,
    ids,
    publish_range,
    read_jsonl_strict,
    serve,
    source_toml,
    start_mux,
    stderr_of,
    terminate,
    wait_exit,
    wait_for_file,
    write_config,
)
from tests.helpers.redis import (
    SHARED_URL,
    delete_prefix,
    redis_cli,
    require_shared_redis,
    unique_prefix,
)

#: Generous: three Python processes start, on a loaded machine.
TIMEOUT = 60.0


@asynccontextmanager
async def servers(transports: list[str]) -> AsyncIterator[list[Server]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(serve(t)) for t in transports]


def _transport(server: Server) -> str:
    return {"FakeSseServer": "sse", "FakeWsServer": "ws", "FakeRestServer": "rest"}[
        type(server).__name__
    ]


def config_for(names: list[str], found: list[Server], out: Path, extra: str = "") -> str:
    return (
        FAST_RETRY
        + "".join(
            source_toml(name, _transport(server), server.url)
            for name, server in zip(names, found, strict=True)
        )
        + file_sink_toml(out)
        + extra
    )


def worker_pids(pid: int) -> list[int]:
    """The worker processes of the ``mux run`` with ``pid`` (its children)."""
    children: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as file:
                children += [int(child) for child in file.read().split()]
        except OSError:
            continue
    return children


def command_line(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return file.read().replace(b"\0", b" ").decode()


async def wait_for_workers(pid: int, count: int, *, not_: int | None = None) -> list[int]:
    """The pids of ``count`` workers of ``pid`` (none of them ``not_``), once they run."""
    with trio.fail_after(TIMEOUT):
        while True:  # another process's children can only be polled
            found = worker_pids(pid)
            if len(found) >= count and not_ not in found:
                return found
            await trio.sleep(0.02)


def has_all(names: list[str], last: int) -> Any:
    def check(records: list[JsonRecord]) -> bool:
        return all(len(file_ids(records, name)) >= last for name in names)

    return check


def per_source(records: list[JsonRecord], name: str) -> list[tuple[Any, ...]]:
    """What a source's records say, without the times."""
    return [
        (r["type"], r.get("event"), r.get("id"), json.dumps(r.get("data")), r.get("seq"))
        if r["type"] == "event"
        else (r["type"], r.get("state"))
        for r in records
        if r["source"] == name and r["type"] in ("event", "status")
    ]


async def test_three_workers_write_what_one_process_writes(tmp_path: Path) -> None:
    transports = [t for t in TRANSPORTS for _ in range(3)]
    names = [f"{t}-{i}" for i, t in enumerate(transports)]
    async with servers(transports) as found, trio.open_nursery() as nursery:
        single_out, workers_out = tmp_path / "single.jsonl", tmp_path / "workers.jsonl"
        single = write_config(tmp_path / "single.toml", config_for(names, found, single_out))
        pooled = write_config(tmp_path / "workers.toml", config_for(names, found, workers_out))
        one = await start_mux(nursery, single)
        three = await start_mux(nursery, pooled, "--workers", "3")
        assert len(await wait_for_workers(three.pid, 3)) == 3
        connected = {"connected"}

        def all_connected(records: list[JsonRecord]) -> bool:
            return all(connected <= set(file_states(records, name)) for name in names)

        await wait_for_file(single_out, all_connected, process=one, timeout=TIMEOUT)
        await wait_for_file(workers_out, all_connected, process=three, timeout=TIMEOUT)
        for server in found:
            await publish_range(server, 1, 30)
        await wait_for_file(single_out, has_all(names, 30), process=one, timeout=TIMEOUT)
        await wait_for_file(workers_out, has_all(names, 30), process=three, timeout=TIMEOUT)
        assert await terminate(one, single) == 0, stderr_of(single)
        assert await terminate(three, pooled) == 0, stderr_of(pooled)
    alone, pooled_records = read_jsonl_strict(single_out), read_jsonl_strict(workers_out)
    for name in names:
        assert file_ids(pooled_records, name) == ids(1, 30), name
        assert per_source(pooled_records, name) == per_source(alone, name), name
        # The last record of every source is its stop, as in one process.
        assert [r for r in pooled_records if r["source"] == name][-1]["state"] == "stopped"
    # Every worker ran some of the nine sources: the parent spread them evenly.
    quality = [r for r in pooled_records if r["type"] == "quality"]
    assert {r["source"] for r in quality} == set(names)
    # What the user's sinks dropped (by their names), as one process says it.
    assert {tuple(r["dropped"]) for r in quality} == {
        tuple(r["dropped"]) for r in alone if r["type"] == "quality"
    }


async def test_spliced_and_decoded_sinks_get_the_same_records(tmp_path: Path) -> None:
    """The parent hands a worker's events on as bytes: a ``file`` sink writes them
    as they came, ``redis-stream`` groups them by source without decoding them,
    and a ``drop_oldest`` sink (which drops record by record) gets them decoded.
    All three hold the same records, each source's in order."""
    require_shared_redis()
    prefix = unique_prefix()
    names = [f"train-{i}" for i in range(4)]
    spliced, decoded = tmp_path / "spliced.jsonl", tmp_path / "decoded.jsonl"
    extra = (
        f'\n[[sinks]]\nname = "decoded"\ntype = "file"\npath = "{decoded}"\n'
        'flush_interval = 0.05\nfsync = false\noverflow = "drop_oldest"\nbuffer = 100000\n'
        f'\n[[sinks]]\ntype = "redis-stream"\nurl = "{SHARED_URL}"\n'
        f'stream = "{prefix}{{source}}"\nmaxlen = 0\n'
    )
    try:
        async with servers(["sse"] * 4) as found, trio.open_nursery() as nursery:
            config = write_config(tmp_path / "m.toml", config_for(names, found, spliced, extra))
            mux = await start_mux(nursery, config, "--workers", "2")
            await wait_for_workers(mux.pid, 2)
            for server in found:
                await publish_range(server, 1, 500)
            for out in (spliced, decoded):
                await wait_for_file(out, has_all(names, 500), process=mux, timeout=TIMEOUT)
            assert await terminate(mux, config) == 0, stderr_of(config)
        first, second = read_jsonl_strict(spliced), read_jsonl_strict(decoded)
        for name in names:
            mine = [r for r in first if r["source"] == name]
            assert file_ids(mine, name) == ids(1, 500), name
            assert mine == [r for r in second if r["source"] == name], name
            entries = redis_cli(6379, "XRANGE", f"{prefix}{name}", "-", "+").splitlines()
            assert [json.loads(e) for e in entries if e.startswith("{")] == mine, name
    finally:
        delete_prefix(6379, prefix)


async def test_a_killed_worker_is_started_again_and_no_event_is_lost_or_written_twice(
    tmp_path: Path,
) -> None:
    names = [f"train-{i}" for i in range(4)]
    out, state = tmp_path / "events.jsonl", tmp_path / "state"
    async with servers(["sse"] * 4) as found, trio.open_nursery() as nursery:
        config = write_config(tmp_path / "m.toml", config_for(names, found, out))
        mux = await start_mux(nursery, config, "--workers", "2", "--state", str(state))
        first_workers = await wait_for_workers(mux.pid, 2)
        # The first workers are forks of mux run (no start-up of their own) ...
        assert {command_line(pid) for pid in first_workers} == {command_line(mux.pid)}
        for server in found:
            await publish_range(server, 1, 40)
        await wait_for_file(out, has_all(names, 40), process=mux, timeout=TIMEOUT)
        os.kill(first_workers[0], signal.SIGKILL)

        def noticed(records: list[JsonRecord]) -> bool:
            return any(r["type"] == "status" and "worker" in r.get("detail", "") for r in records)

        await wait_for_file(out, noticed, process=mux, timeout=TIMEOUT)
        for server in found:
            await publish_range(server, 41, 80)
        await wait_for_file(out, has_all(names, 80), process=mux, timeout=TIMEOUT)
        now = await wait_for_workers(mux.pid, 2, not_=first_workers[0])
        # ... one started again is a process of its own (mux run has an event loop now).
        (again,) = set(now) - set(first_workers)
        assert "mux_core._cli.worker" in command_line(again)
        assert await terminate(mux, config) == 0, stderr_of(config)
    records = read_jsonl_strict(out)
    for name in names:
        assert file_ids(records, name) == ids(1, 80), name
        seqs = [r["seq"] for r in records if r["type"] == "event" and r["source"] == name]
        assert seqs == sorted(set(seqs)), name
    killed = [r for r in records if r["type"] == "status" and "stopped unexpectedly" in r["detail"]]
    assert killed and {r["state"] for r in killed} == {"disconnected"}
    assert "worker 0 stopped unexpectedly (killed by SIGKILL)" in stderr_of(config) or (
        "worker 1 stopped unexpectedly (killed by SIGKILL)" in stderr_of(config)
    )
    saved = json.loads((state / "mux-state.json").read_text())["sources"]
    for name in names:
        assert saved[name]["last_id"] == "80", name


async def test_a_stopped_worker_is_noticed_killed_and_started_again(tmp_path: Path) -> None:
    """SIGSTOP: a worker that says nothing and uses no CPU while the parent waits
    on it is stuck, not quiet -- its sources are marked disconnected, it is
    killed and started again, and nothing is lost or written twice."""
    names = [f"train-{i}" for i in range(4)]
    out, state = tmp_path / "events.jsonl", tmp_path / "state"
    async with servers(["sse"] * 4) as found, trio.open_nursery() as nursery:
        config = write_config(tmp_path / "m.toml", config_for(names, found, out))
        mux = await start_mux(
            nursery,
            config,
            "--workers",
            "2",
            "--state",
            str(state),
            # Above a healthy worker's longest quiet (HEARTBEAT, checked every 0.5 s: 1.5 s).
            env={"MUX_WORKER_SILENCE": "3"},
        )
        first_workers = await wait_for_workers(mux.pid, 2)
        for server in found:
            await publish_range(server, 1, 20)
        await wait_for_file(out, has_all(names, 20), process=mux, timeout=TIMEOUT)
        os.kill(first_workers[0], signal.SIGSTOP)

        def noticed(records: list[JsonRecord]) -> bool:
            return any(r["type"] == "status" and "said nothing" in r["detail"] for r in records)

        await wait_for_file(out, noticed, process=mux, timeout=TIMEOUT)
        await wait_for_workers(mux.pid, 2, not_=first_workers[0])
        for server in found:
            await publish_range(server, 21, 40)
        await wait_for_file(out, has_all(names, 40), process=mux, timeout=TIMEOUT)
        assert await terminate(mux, config) == 0, stderr_of(config)
    records = read_jsonl_strict(out)
    for name in names:
        assert file_ids(records, name) == ids(1, 40), name
    stuck = [r for r in records if r["type"] == "status" and "said nothing" in r["detail"]]
    assert {r["state"] for r in stuck} == {"disconnected"}
    # Only the stopped one: the other, idle between bursts, said it was alive.
    assert len({r["source"] for r in stuck}) == 2
    assert stderr_of(config).count("stopped unexpectedly (it said nothing for") == 1


async def test_discovered_sources_go_on_in_a_worker_started_again(tmp_path: Path) -> None:
    """The parent runs the discoverers and hands each discovered source to one
    worker; a killed worker's discovered sources resume where the sinks are."""
    names = [f"found-{i}" for i in range(4)]
    out, state, runs = tmp_path / "events.jsonl", tmp_path / "state", tmp_path / "runs"
    runs.mkdir()
    async with servers(["sse"] * 4) as found, trio.open_nursery() as nursery:
        for name, server in zip(names, found, strict=True):
            (runs / f"{name}.json").write_text(
                json.dumps({"sources": [{"name": name, "transport": "sse", "url": server.url}]})
            )
        config = write_config(
            tmp_path / "m.toml",
            FAST_RETRY
            + file_sink_toml(out)
            + f'\n[[discovery]]\ntype = "files"\npaths = ["{runs}/*.json"]\ninterval = 0.05\n',
        )
        mux = await start_mux(nursery, config, "--workers", "2", "--state", str(state))
        first_workers = await wait_for_workers(mux.pid, 2)
        for server in found:
            await publish_range(server, 1, 40)
        await wait_for_file(out, has_all(names, 40), process=mux, timeout=TIMEOUT)
        os.kill(first_workers[1], signal.SIGKILL)
        await wait_for_workers(mux.pid, 2, not_=first_workers[1])
        for server in found:
            await publish_range(server, 41, 80)
        await wait_for_file(out, has_all(names, 80), process=mux, timeout=TIMEOUT)
        assert await terminate(mux, config) == 0, stderr_of(config)
    records = read_jsonl_strict(out)
    for name in names:
        assert file_ids(records, name) == ids(1, 80), name
    # Two to each worker (the least busy), so the killed one had some: they came back.
    killed = [r for r in records if r["type"] == "status" and "stopped unexpectedly" in r["detail"]]
    assert len({r["source"] for r in killed}) == 2
    # One connection each, and one more for the two that came back.
    assert sum(len(server.requests) for server in found) == 4 + 2


async def test_a_reload_adds_and_removes_sources_across_workers(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    async with servers(["sse"] * 4) as found, trio.open_nursery() as nursery:
        first = ["a", "b"]
        config = write_config(tmp_path / "m.toml", config_for(first, found[:2], out))
        mux = await start_mux(nursery, config, "--workers", "2")
        await wait_for_workers(mux.pid, 2)
        for server in found[:2]:
            await publish_range(server, 1, 5)
        await wait_for_file(out, has_all(first, 5), process=mux, timeout=TIMEOUT)
        later = ["b", "c", "d"]
        write_config(config, config_for(later, found[1:], out))
        mux.send_signal(signal.SIGHUP)

        def applied(records: list[JsonRecord]) -> bool:
            return "stopped" in file_states(records, "a") and all(
                "connected" in file_states(records, name) for name in ("c", "d")
            )

        await wait_for_file(out, applied, process=mux, timeout=TIMEOUT)
        for server in found[1:]:
            await publish_range(server, 6, 10)
        await wait_for_file(out, has_all(["c", "d"], 5), process=mux, timeout=TIMEOUT)
        await wait_for_file(out, has_all(["b"], 10), process=mux, timeout=TIMEOUT)
        assert await terminate(mux, config) == 0, stderr_of(config)
    records = read_jsonl_strict(out)
    assert file_ids(records, "a") == ids(1, 5)
    assert file_ids(records, "b") == ids(1, 10)  # kept its connection: nothing twice
    assert file_states(records, "b").count("connected") == 1
    assert file_ids(records, "c") == file_ids(records, "d") == ids(1, 5)
    assert [r["data"]["n"] for r in records if r["source"] == "c" and r["type"] == "event"] == [
        6,
        7,
        8,
        9,
        10,
    ]


async def test_sigterm_ends_the_workers_and_the_run_with_every_source_stopped(
    tmp_path: Path,
) -> None:
    names = ["x", "y", "z"]
    out = tmp_path / "events.jsonl"
    async with servers(list(TRANSPORTS)) as found, trio.open_nursery() as nursery:
        config = write_config(tmp_path / "m.toml", config_for(names, found, out))
        mux = await start_mux(nursery, config, "--workers", "2")
        workers = await wait_for_workers(mux.pid, 2)
        for server in found:
            await publish_range(server, 1, 200)
        await wait_for_file(out, has_all(names, 200), process=mux, timeout=TIMEOUT)
        assert await terminate(mux, config) == 0, stderr_of(config)
    for pid in workers:  # reaped by the parent: gone
        assert not await trio.Path(f"/proc/{pid}").exists()
    records = read_jsonl_strict(out)
    for name in names:
        assert file_ids(records, name) == ids(1, 200)
        assert [r for r in records if r["source"] == name][-1]["state"] == "stopped"
    assert "run finished (SIGTERM)" not in stderr_of(config)  # -q: warnings only
    assert "Traceback" not in stderr_of(config)


async def test_workers_is_a_usage_error_with_shard_or_below_one(tmp_path: Path) -> None:
    toml = source_toml("s", "sse", "http://127.0.0.1:9/events") + file_sink_toml(tmp_path / "o")
    config = write_config(tmp_path / "m.toml", FAST_RETRY + toml)
    async with trio.open_nursery() as nursery:
        for args, says in (
            (("--workers", "0"), "--workers: must be a number >= 1 or auto"),
            (("--workers", "lots"), "--workers: must be a number >= 1 or auto"),
            (("--workers", "2", "--shard", "0/2"), "use --shard"),
        ):
            process = await start_mux(nursery, config, *args)
            assert await wait_exit(process, config) == 2, args
            assert says in stderr_of(config), (args, stderr_of(config))
            assert "Traceback" not in stderr_of(config)


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:  # it has ended
        pass
    return 0


async def test_a_slow_block_sink_holds_the_workers_back_in_bounded_memory(tmp_path: Path) -> None:
    """Two sources that could send 5,000,000 events each as fast as they can, a
    ``block`` sink in the parent that takes one batch each 0.2 s: the workers
    wait at their pipes, memory stays bounded, the records arrive in order, and
    SIGTERM still ends the run cleanly."""
    out = tmp_path / "events.jsonl"
    config = write_config(
        tmp_path / "m.toml",
        """
        [[sources]]
        name = "flood-a"
        transport = "scripted"
        script = ["events:5000000"]
        batch = 1000
        [[sources]]
        name = "flood-b"
        transport = "scripted"
        script = ["events:5000000"]
        batch = 1000
        [[sinks]]
        type = "collect"
        delay = 0.2
        buffer = 2000
        """.replace("\n        ", "\n")
        + file_sink_toml(out),
    )
    async with trio.open_nursery() as nursery:
        mux = await start_mux(
            nursery, config, "--workers", "2", env={"MUX_PLUGIN_MODULES": "mux_core.testing"}
        )
        pids = await wait_for_workers(mux.pid, 2)
        peak = {pid: 0 for pid in [mux.pid, *pids]}

        def progressed(records: list[JsonRecord]) -> bool:
            for pid in peak:
                peak[pid] = max(peak[pid], rss_kib(pid))
            return all(len(file_ids(records, name)) >= 10_000 for name in ("flood-a", "flood-b"))

        await wait_for_file(out, progressed, process=mux, timeout=TIMEOUT)
        assert await terminate(mux, config) == 0
    # 5,000,000 events held in memory would be hundreds of MiB; the pipe, the
    # uplink's channel (10,000 records, 4 MiB) and the sinks' channels bound it.
    assert max(peak.values()) < 200 * 1024, peak
    records = read_jsonl_strict(out)
    for name in ("flood-a", "flood-b"):
        events = file_ids(records, name)
        assert len(events) < 1_000_000  # held back: far from what the source could send
        assert events == ids(1, len(events))
        assert [r for r in records if r["source"] == name][-1]["state"] == "stopped"


async def test_sigusr1_restarts_a_source_that_gave_up_in_its_worker(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    async with serve_sse() as server, trio.open_nursery() as nursery:
        server.script(Respond(503))
        toml = (
            FAST_RETRY
            + "max_attempts = 1\n"
            + source_toml("train", "sse", server.url)
            + file_sink_toml(out)
        )
        config = write_config(tmp_path / "m.toml", toml)
        # --watch: sources may still come, so the run stays when this one gives up.
        mux = await start_mux(nursery, config, "--workers", "2", "--watch")

        def gave_up(records: list[JsonRecord]) -> bool:
            return "max_retries_exceeded" in file_states(records, "train")

        await wait_for_file(out, gave_up, process=mux, timeout=TIMEOUT)
        mux.send_signal(signal.SIGUSR1)
        await wait_for_file(
            out,
            lambda records: "connected" in file_states(records, "train"),
            process=mux,
            timeout=TIMEOUT,
        )
        await publish_range(server, 1, 3)
        await wait_for_file(out, has_all(["train"], 3), process=mux, timeout=TIMEOUT)
        assert await terminate(mux, config) == 0, stderr_of(config)
    states = file_states(read_jsonl_strict(out), "train")
    assert states[states.index("max_retries_exceeded") + 1 :][:2] == ["connecting", "connected"]


def open_files_limit(pid: int) -> tuple[str, str]:
    """(soft, hard) of ``Max open files`` in /proc/PID/limits."""
    with open(f"/proc/{pid}/limits") as file:
        for line in file:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return soft, hard
    raise AssertionError("no Max open files line")


def _low_open_files_limit() -> None:  # runs in the child before exec
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


async def test_mux_run_raises_its_open_files_limit_to_the_hard_one_for_its_workers(
    tmp_path: Path,
) -> None:
    """Each source holds a socket: a soft limit of 256 would refuse the 250th
    source, though the system allows more. mux raises it; workers inherit it."""
    out = tmp_path / "events.jsonl"
    async with servers(["sse", "sse"]) as found, trio.open_nursery() as nursery:
        config = write_config(tmp_path / "m.toml", config_for(["a", "b"], found, out))
        mux = await start_mux(nursery, config, "--workers", "2", preexec_fn=_low_open_files_limit)
        workers = await wait_for_workers(mux.pid, 2)
        limits = [open_files_limit(pid) for pid in [mux.pid, *workers]]
        # The workers are forked before mux's event loop (and its SIGTERM handler) runs.
        await wait_for_file(out, lambda records: bool(records), process=mux, timeout=TIMEOUT)
        assert await terminate(mux, config) == 0
    for soft, hard in limits:
        assert soft == hard and soft != "256", limits


async def test_a_killed_parent_leaves_no_worker_and_a_restart_with_state_repeats_nothing(
    tmp_path: Path,
) -> None:
    """kill -9 of ``mux run --workers 2 --state``: its workers see their pipe end
    and go; the next run resumes from the state file and the file sink skips what
    it already holds, so every id is in the file once."""
    names = ["p", "q", "r"]
    out, state = tmp_path / "events.jsonl", tmp_path / "state"
    async with servers(["sse"] * 3) as found, trio.open_nursery() as nursery:
        config = write_config(tmp_path / "m.toml", config_for(names, found, out))
        args = ("--workers", "2", "--state", str(state))
        first = await start_mux(nursery, config, *args)
        workers = await wait_for_workers(first.pid, 2)
        for server in found:
            await publish_range(server, 1, 30)
        await wait_for_file(out, has_all(names, 30), process=first, timeout=TIMEOUT)
        first.kill()
        await first.wait()
        with trio.fail_after(TIMEOUT):
            while True:  # the orphaned workers can only be polled
                alive = [pid for pid in workers if await trio.Path(f"/proc/{pid}").exists()]
                if not alive:
                    break
                await trio.sleep(0.05)
        # They went quietly: a broken pipe to the parent is the parent gone, not a crash.
        assert "Traceback" not in stderr_of(config), stderr_of(config)
        for server in found:
            await publish_range(server, 31, 50)
        second = await start_mux(nursery, config, *args)
        await wait_for_file(out, has_all(names, 50), process=second, timeout=TIMEOUT)
        assert await terminate(second, config) == 0, stderr_of(config)
    records = []
    for line in out.read_bytes().splitlines():
        try:  # a line the kill cut short is followed by a fresh line of the next run
            records.append(json.loads(line))
        except ValueError:
            continue
    for name in names:
        assert file_ids(records, name) == ids(1, 50), name
