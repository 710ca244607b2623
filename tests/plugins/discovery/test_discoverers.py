"""Discovery: sources from endpoint files and from an HTTP list, added, changed and removed live.

``files``: a real ``mux run`` process watching a directory while a test
writes, rewrites, breaks and deletes endpoint files, against real SSE
servers (the sources left alone keep their one connection). ``http``: an
in-process engine polling a small real HTTP server that goes down and comes
back.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from functools import partial
from pathlib import Path

import pytest
import trio

from mux_core import ConfigError, State, read_source_document
from mux_core.testing import serve_sse
from mux_discovery.http import http_sd_tables
from tests.helpers.e2e import (
    FAST_RETRY,
    MUX,
    JsonRecord,
    file_ids,
    file_sink_toml,
    file_states,
    ids,
    publish_range,
    read_jsonl_strict,
    running_engine,
    source_toml,
    states,
    stderr_of,
    terminate,
    wait_for_file,
    write_config,
)
from tests.plugins.discovery.lister import SCRIPTED_ALLOWED, ListServer


async def _start_mux(nursery: trio.Nursery, config: Path, *extra: str) -> trio.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}
    with open(config.with_suffix(".stderr"), "wb") as stderr:  # noqa: ASYNC230 -- tiny, once
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [*MUX, "run", str(config), "--for", "60", *extra],
                check=False,
                stdin=None,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
            )
        )
    return process


async def _wait_for_log(config: Path, text: str, *, timeout: float = 15.0) -> str:
    with trio.move_on_after(timeout):
        while text not in (err := stderr_of(config)):  # noqa: ASYNC110 -- another process writes it
            await trio.sleep(0.02)
        return err
    raise AssertionError(f"{text!r} not logged within {timeout} s; stderr:\n{stderr_of(config)}")


def _endpoint(name: str, url: str, extra: str = "") -> str:
    """What a trainer writes next to its checkpoints (TOML, one source at the top level)."""
    return f'name = "{name}"\ntransport = "sse"\nurl = "{url}"\n{extra}'


def _write(path: Path, text: str) -> None:
    """Written as a trainer should: a temporary file renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _last_status(records: list[JsonRecord], source: str) -> JsonRecord:
    return [r for r in records if r["type"] == "status" and r["source"] == source][-1]


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_files_appear_change_break_and_disappear(tmp_path: Path, workers: str) -> None:
    """With ``--workers 2`` the parent runs the discoverer (each problem is told
    once, not once a worker) and hands each discovered source to one worker."""
    out = tmp_path / "events.jsonl"
    runs = tmp_path / "runs"
    runs.mkdir()
    async with serve_sse() as fixed, serve_sse() as one, serve_sse() as two:
        config = write_config(
            tmp_path / "m.toml",
            FAST_RETRY
            + source_toml("fixed", "sse", fixed.url)
            + file_sink_toml(out)
            + f'\n[[discovery]]\ntype = "files"\npaths = ["{runs}/*/mux.toml", "{runs}/*.json"]'
            + "\ninterval = 0.05\n",
        )
        for server in (fixed, one, two):
            await publish_range(server, 1, 10)
        async with trio.open_nursery() as nursery:
            process = await _start_mux(nursery, config, "--workers", workers)
            await wait_for_file(out, lambda r: len(file_ids(r, "fixed")) == 10, process=process)

            # Appear: a TOML file in a run directory, a JSON file beside it.
            (runs / "run-1").mkdir()
            _write(runs / "run-1" / "mux.toml", _endpoint("run-1", one.url))
            sources = {"sources": [{"name": "run-2", "transport": "sse", "url": two.url}]}
            _write(runs / "run-2.json", json.dumps(sources))
            await wait_for_file(
                out,
                lambda r: len(file_ids(r, "run-1")) == 10 and len(file_ids(r, "run-2")) == 10,
                process=process,
            )

            # Malformed: reported with its path and line; the rest keep running.
            (runs / "run-3").mkdir()
            broken = runs / "run-3" / "mux.toml"
            _write(broken, 'name = "run-3"\ntransport = "sse"\nurl = \n')
            await _wait_for_log(config, f"{broken}:3: invalid TOML")
            # A name a [[sources]] table has: an error, reported once.
            (runs / "run-4").mkdir()
            _write(runs / "run-4" / "mux.toml", _endpoint("fixed", two.url))
            await _wait_for_log(config, "source name 'fixed' is already taken")

            # Change: run-1 gets a lag field -> restarts from where it was.
            _write(runs / "run-1" / "mux.toml", _endpoint("run-1", one.url, 'lag_field = "t"\n'))
            await one.wait_for_connections(2)
            await publish_range(one, 11, 20)
            # Disappear: run-2's file goes -> run-2 stops.
            (runs / "run-2.json").unlink()
            await wait_for_file(
                out,
                lambda r: (
                    len(file_ids(r, "run-1")) == 20 and file_states(r, "run-2")[-1:] == ["stopped"]
                ),
                process=process,
            )
            await publish_range(fixed, 11, 20)
            await wait_for_file(out, lambda r: len(file_ids(r, "fixed")) == 20, process=process)
            assert await terminate(process, config) == 0, stderr_of(config)
    err = stderr_of(config)
    records = read_jsonl_strict(out)
    assert file_ids(records, "fixed") == ids(1, 20)
    assert len(fixed.requests) == 1  # never touched by discovery
    assert file_ids(records, "run-1") == ids(1, 20)  # resumed after the change: none twice
    assert one.requests[1].headers["last-event-id"] == "10"
    assert file_ids(records, "run-2") == ids(1, 10)
    assert _last_status(records, "run-2")["detail"] == "no longer discovered"
    assert len(two.requests) == 1  # the colliding "fixed" never connected to it
    assert "run-3" not in {r["source"] for r in records}
    assert err.count("source name 'fixed' is already taken") == 1
    assert err.count(f"{broken}:3: invalid TOML") == 1


def test_endpoint_documents_in_toml_and_json() -> None:
    doc = read_source_document(b'[[sources]]\nname = "a"\ntransport = "sse"\n', "x.toml")
    assert doc.tables == ({"name": "a", "transport": "sse"},)
    assert doc.lines[("sources", 0, "transport")] == 3
    doc = read_source_document(b'[{"name": "b"}, {"name": "c"}]', "x.json")
    assert [t["name"] for t in doc.tables] == ["b", "c"]
    with pytest.raises(ConfigError) as raised:
        read_source_document(b'{\n  "name": "b",\n}', "y.json")
    assert str(raised.value).startswith("y.json:3: invalid JSON")


def test_http_sd_target_groups_become_source_tables() -> None:
    tables = http_sd_tables(
        [
            {"targets": ["h:1", "h:2"], "labels": {"name": "t", "transport": "ws", "path": "/ws"}},
            {"targets": ["h:3"], "labels": {"transport": "sse", "__meta_x": "y"}},
            {"name": "plain", "transport": "rest", "url": "http://h:4/m"},
        ]
    )
    assert tables == (
        {"transport": "ws", "name": "t-h:1", "url": "ws://h:1/ws"},
        {"transport": "ws", "name": "t-h:2", "url": "ws://h:2/ws"},
        {"transport": "sse", "name": "h:3", "url": "http://h:3/"},
        {"name": "plain", "transport": "rest", "url": "http://h:4/m"},
    )


def _scripted(name: str) -> dict[str, object]:
    return {"name": name, "transport": "scripted", "script": ["events:3"], "then": "hang"}


async def test_http_discovery_keeps_the_last_list_while_the_server_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    lister = ListServer()
    lister.body = json.dumps([_scripted("a")]).encode()
    async with trio.open_nursery() as servers:
        await lister.start(servers)
        toml = FAST_RETRY + (
            f'\n[[discovery]]\ntype = "http"\nurl = "http://127.0.0.1:{lister.port}/sd"\n'
            "interval = 0.05\n" + SCRIPTED_ALLOWED
        )
        async with running_engine(toml) as (_engine, sink):
            await sink.wait_for(lambda s: len([e for e in s.events if e.source == "a"]) == 3)
            lister.stop()  # down: polls are refused
            with trio.fail_after(10):
                while "connection refused; the last good list is kept" not in caplog.text:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            assert State.STOPPED not in states(sink, "a")  # the last good list stays
            polls = lister.polls
            lister.body = json.dumps([_scripted("b")]).encode()
            await lister.start(servers)  # back, on the same port, with another list
            await sink.wait_for(lambda s: len([e for e in s.events if e.source == "b"]) == 3)
            await sink.wait_for(lambda s: State.STOPPED in states(s, "a"))
            assert lister.polls > polls
            assert caplog.text.count("connection refused; the last good list is kept") == 1
        servers.cancel_scope.cancel()
    stopped = [s for s in sink.statuses if s.source == "a" and s.state is State.STOPPED]
    assert [s.detail for s in stopped] == ["no longer discovered"]
    assert [e.id for e in sink.events if e.source == "a"] == ["1", "2", "3"]
