"""``mux run`` as a subprocess writing a JSON Lines file, and reading that file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import trio


async def start_mux(nursery: trio.Nursery, config: Path, *args: str) -> trio.Process:
    """``python -m mux_core run -q CONFIG ARGS``; its stderr goes to CONFIG.stderr (appended)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}
    with _stderr_file(config) as stderr:
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [sys.executable, "-m", "mux_core", "run", "-q", str(config), *args],
                check=False,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
            )
        )
    return process


def _stderr_file(config: Path) -> BinaryIO:
    return open(config.with_suffix(".stderr"), "ab")


def stderr_of(config: Path) -> str:
    return config.with_suffix(".stderr").read_text(errors="replace")


async def wait_exit(process: trio.Process, *, timeout: float = 15.0) -> int:
    with trio.fail_after(timeout):
        return await process.wait()


async def terminate(process: trio.Process) -> int:
    process.send_signal(signal.SIGTERM)
    return await wait_exit(process)


def records(path: Path) -> list[dict[str, Any]]:
    """Every whole line of a file sink's output (a line cut by a kill is left out)."""
    if not path.exists():
        return []
    lines = path.read_bytes().splitlines(keepends=True)
    return [json.loads(line) for line in lines if line.endswith(b"\n")]


def event_ids(path: Path, source: str) -> list[str]:
    return [r["id"] for r in records(path) if r["type"] == "event" and r["source"] == source]


async def wait_for_events(
    path: Path, source: str, count: int, process: trio.Process, *, timeout: float = 20.0
) -> None:
    """Poll the file another process writes until it holds ``count`` events of ``source``."""
    with trio.move_on_after(timeout):
        while len(set(event_ids(path, source))) < count:
            assert process.returncode is None, f"mux exited with {process.returncode}"
            await trio.sleep(0.02)  # another process writes the file: only polling tells
        return
    have = len(set(event_ids(path, source)))
    raise AssertionError(f"{path.name} holds {have} of {count} events after {timeout:g} s")
