"""``mux run`` against the demo trainer (``mux serve-demo``), which is killed
and started again: the quality table printed when mux stops shows one
reconnect per source, as do the last quality records in the file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from functools import partial
from pathlib import Path
from typing import BinaryIO

import orjson
import trio

from mux_demo.monitor import demo_config_text
from tests.helpers.e2e import MUX, JsonRecord, stderr_of, wait_exit, wait_for_file

SOURCES = ("train-sse", "train-ws", "train-rest")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}


def _append(path: Path) -> BinaryIO:
    return open(path, "ab")


async def _start(nursery: trio.Nursery, args: list[str], stderr: Path) -> trio.Process:
    with _append(stderr) as err:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [*MUX, *args],
                check=False,
                stdin=None,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=_env(),
            )
        )
    return process


def _last_state(records: list[JsonRecord], source: str) -> str | None:
    states = [r["state"] for r in records if r["type"] == "status" and r["source"] == source]
    return states[-1] if states else None


def _connections(records: list[JsonRecord], source: str) -> int:
    return sum(
        1
        for r in records
        if r["type"] == "status" and r["source"] == source and r["state"] == "connected"
    )


async def test_a_killed_and_restarted_trainer_shows_one_reconnect_per_source(
    tmp_path: Path,
) -> None:
    sse, ws, rest = _free_ports(3)
    events = tmp_path / "events.jsonl"
    config = tmp_path / "monitor.toml"
    text = demo_config_text(
        host="127.0.0.1",
        sse_port=sse,
        ws_port=ws,
        rest_port=rest,
        view="log",
        events_path=str(events),
    )
    config.write_text("quality_interval = 1.0\n" + text.replace("interval = 1.0", "interval = 0.2"))
    demo_args = ["serve-demo", "--rate", "20"]
    demo_args += ["--sse-port", str(sse), "--ws-port", str(ws), "--rest-port", str(rest)]
    demo_err = tmp_path / "demo.stderr"

    async with trio.open_nursery() as nursery:
        trainer = await _start(nursery, demo_args, demo_err)
        monitor = await _start(nursery, ["run", str(config)], config.with_suffix(".stderr"))

        def all_connected_with_events(records: list[JsonRecord]) -> bool:
            return all(
                _last_state(records, s) == "connected"
                and any(r["type"] == "event" and r["source"] == s for r in records)
                for s in SOURCES
            )

        await wait_for_file(events, all_connected_with_events, process=monitor)
        trainer.kill()  # SIGKILL: the trainer dies without a word
        await trainer.wait()

        def all_lost(records: list[JsonRecord]) -> bool:
            return all(_last_state(records, s) != "connected" for s in SOURCES)

        await wait_for_file(events, all_lost, process=monitor)
        trainer = await _start(nursery, demo_args, demo_err)

        def all_back(records: list[JsonRecord]) -> bool:
            return all(
                _connections(records, s) >= 2 and _last_state(records, s) == "connected"
                for s in SOURCES
            )

        await wait_for_file(events, all_back, process=monitor)
        monitor.send_signal(signal.SIGTERM)
        assert await wait_exit(monitor, config) == 0, stderr_of(config)
        trainer.terminate()
        await trainer.wait()

    # The table mux printed on stderr as it stopped: one row per source.
    stderr = stderr_of(config)
    lines = stderr[stderr.index("\nsource ") + 1 :].splitlines()
    header = lines[0].split()
    assert header[:5] == ["source", "state", "window", "uptime", "reconnects"]
    rows = {line.split()[0]: line.split() for line in lines[1:4]}
    assert set(rows) == set(SOURCES)
    for source, row in rows.items():
        assert row[1] == "stopped", row
        assert row[4] == "1", f"{source}: {row}"
        assert 0.0 < float(row[3].rstrip("%")) < 100.0, row  # the outage cost uptime

    # The same figures in the file: each source's last quality record, just
    # before its `stopped`.
    records = [r for r in _read(events) if r["source"] in SOURCES]
    for source in SOURCES:
        mine = [r for r in records if r["source"] == source]
        assert mine[-1]["type"] == "status" and mine[-1]["state"] == "stopped"
        last = mine[-2]
        assert last["type"] == "quality", last
        assert last["reconnects"] == last["reconnects_total"] == 1
        assert last["outages"] == 1 and last["blind_max"] > 0.0
        assert last["state"] == "stopped"
        assert last["events_total"] == sum(1 for r in mine if r["type"] == "event")
        periodic = [r for r in mine[:-2] if r["type"] == "quality"]
        assert periodic, "no periodic quality record (quality_interval = 1)"


def _read(path: Path) -> list[JsonRecord]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]
