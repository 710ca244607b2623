"""Hot reload, through a real ``mux run`` process and SIGHUP (or ``--watch``), against real servers.

Each test asserts what kept running: a source left alone keeps its one
connection (its fake server saw exactly one request) and its ``seq`` goes on
without a gap; a removed source ends with ``stopped``; a changed one
restarts from its resume state (no event twice, none lost).
"""

from __future__ import annotations

import os
import signal
import subprocess
from functools import partial
from pathlib import Path

import trio

from mux_core import State, parse_config
from mux_core.testing import serve_sse
from tests.helpers.e2e import (
    FAST_RETRY,
    MUX,
    JsonRecord,
    event_ids,
    file_ids,
    file_sink_toml,
    file_states,
    ids,
    publish_range,
    read_jsonl_strict,
    running_engine,
    serve,
    source_toml,
    states,
    stderr_of,
    terminate,
    wait_for_file,
    write_config,
)


def _seqs(records: list[JsonRecord], source: str) -> list[int]:
    return [r["seq"] for r in records if r["type"] == "event" and r["source"] == source]


def _last(records: list[JsonRecord], source: str) -> JsonRecord:
    return [r for r in records if r["source"] == source][-1]


async def start_mux(nursery: trio.Nursery, config: Path, *args: str) -> trio.Process:
    """``mux run CONFIG`` logging at INFO (reload summaries) to CONFIG.stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}
    with open(config.with_suffix(".stderr"), "wb") as stderr:  # noqa: ASYNC230 -- tiny, once
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [*MUX, "run", str(config), *args],
                check=False,
                stdin=None,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
            )
        )
    return process


async def _wait_for_log(config: Path, text: str, *, timeout: float = 15.0) -> str:
    """Poll the stderr another process writes until it holds ``text``."""
    with trio.move_on_after(timeout):
        while text not in (err := stderr_of(config)):  # noqa: ASYNC110 -- another process writes it
            await trio.sleep(0.02)
        return err
    raise AssertionError(f"{text!r} not logged within {timeout} s; stderr:\n{stderr_of(config)}")


async def test_reload_adds_and_removes_sources_and_leaves_the_rest_alone(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    async with serve("sse") as keep, serve("sse") as gone, serve("rest") as new:
        config = write_config(
            tmp_path / "m.toml",
            FAST_RETRY
            + source_toml("keep", "sse", keep.url)
            + source_toml("gone", "sse", gone.url)
            + file_sink_toml(out),
        )
        async with trio.open_nursery() as nursery:
            # Not -q: the reload summary is logged at INFO.
            process = await start_mux(nursery, config, "--for", "60")
            await publish_range(keep, 1, 50)
            await publish_range(gone, 1, 50)
            await wait_for_file(
                out,
                lambda r: len(file_ids(r, "keep")) == 50 and len(file_ids(r, "gone")) == 50,
                process=process,
            )
            write_config(
                config,
                FAST_RETRY
                + source_toml("keep", "sse", keep.url)
                + source_toml("new", "rest", new.url)
                + file_sink_toml(out),
            )
            process.send_signal(signal.SIGHUP)
            await _wait_for_log(config, "reload: +1 sources, -1, ~0 changed, sinks unchanged")
            await publish_range(keep, 51, 100)
            await publish_range(new, 1, 20)
            await wait_for_file(
                out,
                lambda r: len(file_ids(r, "keep")) == 100 and len(file_ids(r, "new")) == 20,
                process=process,
            )
            assert await terminate(process, config) == 0, stderr_of(config)
    records = read_jsonl_strict(out)
    assert file_ids(records, "keep") == ids(1, 100)
    assert _seqs(records, "keep") == list(range(1, 101))
    assert file_states(records, "keep") == ["connecting", "connected", "stopped"]
    assert len(keep.requests) == 1  # the same connection all along
    assert file_ids(records, "gone") == ids(1, 50)
    removed = _last(records, "gone")
    assert (removed["state"], removed["detail"]) == ("stopped", "removed by a reload")
    assert file_ids(records, "new") == ids(1, 20)
    assert _seqs(records, "new") == list(range(1, 21))


async def test_a_changed_source_restarts_from_its_resume_state(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    async with serve_sse() as server:
        before = FAST_RETRY + source_toml("s", "sse", server.url) + file_sink_toml(out)
        config = write_config(tmp_path / "m.toml", before)
        async with trio.open_nursery() as nursery:
            process = await start_mux(nursery, config, "--for", "60")
            await publish_range(server, 1, 30)
            await wait_for_file(out, lambda r: len(file_ids(r, "s")) == 30, process=process)
            changed = source_toml("s", "sse", server.url, 'headers = { X-Run = "two" }\n')
            write_config(config, FAST_RETRY + changed + file_sink_toml(out))
            process.send_signal(signal.SIGHUP)
            await _wait_for_log(config, "reload: +0 sources, -0, ~1 changed, sinks unchanged")
            await server.wait_for_connections(2)
            await publish_range(server, 31, 60)
            await wait_for_file(out, lambda r: len(file_ids(r, "s")) == 60, process=process)
            assert await terminate(process, config) == 0, stderr_of(config)
    records = read_jsonl_strict(out)
    assert file_ids(records, "s") == ids(1, 60)  # none twice, none lost
    assert _seqs(records, "s") == list(range(1, 61))  # seq goes on
    assert file_states(records, "s") == [
        "connecting",
        "connected",
        "stopped",
        "connecting",
        "connected",
        "stopped",
    ]
    restart = next(r for r in records if r["type"] == "status" and r["state"] == "stopped")
    assert restart["detail"] == "config changed; restarting"
    second = server.requests[1]
    assert second.headers["last-event-id"] == "30"  # resumed where it stopped
    assert second.headers["x-run"] == "two"  # with the new table


async def test_an_invalid_config_is_rejected_and_the_old_one_keeps_running(
    tmp_path: Path,
) -> None:
    out = tmp_path / "events.jsonl"
    async with serve("sse") as server:
        good = FAST_RETRY + source_toml("s", "sse", server.url) + file_sink_toml(out)
        config = write_config(tmp_path / "m.toml", good)
        async with trio.open_nursery() as nursery:
            process = await start_mux(nursery, config, "--for", "60")
            await publish_range(server, 1, 10)
            await wait_for_file(out, lambda r: len(file_ids(r, "s")) == 10, process=process)
            bad = good.replace('transport = "sse"', 'transport = "sse"\nintervall = 1.0')
            write_config(config, bad)
            line = bad.splitlines().index("intervall = 1.0") + 1
            process.send_signal(signal.SIGHUP)
            err = await _wait_for_log(config, "reload rejected")
            assert f"{config}:{line}: sources[0].intervall: unknown key" in err
            await publish_range(server, 11, 20)
            await wait_for_file(out, lambda r: len(file_ids(r, "s")) == 20, process=process)
            assert await terminate(process, config) == 0, stderr_of(config)
    records = read_jsonl_strict(out)
    assert file_ids(records, "s") == ids(1, 20)
    assert file_states(records, "s") == ["connecting", "connected", "stopped"]
    assert len(server.requests) == 1


async def test_watch_reloads_when_the_file_changes_and_adds_a_sink(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    second = tmp_path / "second.jsonl"
    async with serve("ws") as server:
        toml = FAST_RETRY + source_toml("s", "ws", server.url) + file_sink_toml(out)
        config = write_config(tmp_path / "m.toml", toml)
        async with trio.open_nursery() as nursery:
            process = await start_mux(nursery, config, "--watch", "--for", "60")
            await publish_range(server, 1, 10)
            await wait_for_file(out, lambda r: len(file_ids(r, "s")) == 10, process=process)
            extra = file_sink_toml(second).replace('type = "file"', 'type = "file"\nname = "two"')
            write_config(config, toml + extra)
            await _wait_for_log(config, "reload: sources unchanged, sinks +1, -0, ~0 changed")
            await publish_range(server, 11, 20)
            await wait_for_file(second, lambda r: len(file_ids(r, "s")) == 10, process=process)
            await wait_for_file(out, lambda r: len(file_ids(r, "s")) == 20, process=process)
            assert await terminate(process, config) == 0, stderr_of(config)
    assert file_ids(read_jsonl_strict(out), "s") == ids(1, 20)
    assert file_ids(read_jsonl_strict(second), "s") == ids(11, 20)  # from its start on
    assert len(server.requests) == 1  # the source kept its connection


async def test_sigusr1_restarts_a_source_that_gave_up(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    async with serve_sse() as flaky, serve_sse() as steady:
        config = write_config(
            tmp_path / "m.toml",
            FAST_RETRY
            + source_toml("flaky", "sse", flaky.url, "retry = { max_attempts = 2 }\n")
            + source_toml("steady", "sse", steady.url)
            + file_sink_toml(out),
        )
        await publish_range(flaky, 1, 5)
        async with trio.open_nursery() as nursery:
            process = await start_mux(nursery, config, "--for", "60")
            await wait_for_file(out, lambda r: len(file_ids(r, "flaky")) == 5, process=process)
            await flaky.stop()
            await wait_for_file(
                out, lambda r: "max_retries_exceeded" in file_states(r, "flaky"), process=process
            )
            await flaky.start()
            await publish_range(flaky, 6, 10)
            process.send_signal(signal.SIGUSR1)
            await wait_for_file(out, lambda r: len(file_ids(r, "flaky")) == 10, process=process)
            assert await terminate(process, config) == 0, stderr_of(config)
    records = read_jsonl_strict(out)
    assert file_ids(records, "flaky") == ids(1, 10)
    assert _seqs(records, "flaky") == list(range(1, 11))
    assert flaky.requests[-1].headers["last-event-id"] == "5"
    assert file_states(records, "flaky")[-3:] == ["connecting", "connected", "stopped"]
    assert len(steady.requests) == 1
    assert "restart: source 'flaky' starts again" in stderr_of(config)


async def test_a_processors_change_swaps_the_chain_and_keeps_the_connection() -> None:
    """In process: apply_config with a new [[processors]] table; same connection, new chain."""
    async with serve("sse") as server:
        toml = FAST_RETRY + source_toml("s", "sse", server.url)
        async with running_engine(toml) as (engine, sink):
            for n in range(1, 11):
                await server.publish({"n": n, "loss": 0.5 if n % 2 else 50.0})
            await sink.wait_for(lambda s: len(s.events) == 10)
            keep_low = '\n[[processors]]\ntype = "filter"\nwhere = "loss < 10"\n'
            text = toml + keep_low + '\n[[sinks]]\ntype = "collect"\nname = "collect"\n'
            await engine.apply_config(parse_config(text, path="e2e.toml", plugins=engine.plugins))
            for n in range(11, 21):
                await server.publish({"n": n, "loss": 0.5 if n % 2 else 50.0})
            await sink.wait_for(lambda s: any(e.id == "19" for e in s.events))
            assert engine.source_states() == {"s": State.CONNECTED}
    assert event_ids(sink, "s") == [*ids(1, 10), "11", "13", "15", "17", "19"]
    assert len(server.requests) == 1  # the same connection all along
    assert states(sink, "s") == [State.CONNECTING, State.CONNECTED, State.STOPPED]


async def test_restart_source_starts_a_failed_source_again_from_its_resume_state() -> None:
    """Engine.restart_source(name): what a UI's button calls (safe from any thread)."""
    toml = (
        FAST_RETRY
        + '\n[[sources]]\nname = "s"\ntransport = "scripted"\n'
        + 'script = ["events:2"]\nthen = "fail"\n'
        + '\n[[sources]]\nname = "live"\ntransport = "scripted"\nthen = "hang"\n'
    )
    async with running_engine(toml) as (engine, sink):
        await sink.wait_for(lambda s: State.FAILED in states(s, "s"))
        engine.restart_source("live")  # live: nothing to restart
        engine.restart_source("s")
        await sink.wait_for(lambda s: states(s, "s").count(State.FAILED) == 2)
        assert engine.source_states() == {"s": State.FAILED, "live": State.CONNECTED}
    assert event_ids(sink, "s") == ["1", "2", "3", "4"]  # ids go on from the resume state
    assert [e.seq for e in sink.events if e.source == "s"] == [1, 2, 3, 4]
    assert states(sink, "live") == [State.CONNECTING, State.CONNECTED, State.STOPPED]
