"""The view in a real terminal emulator: mux inside tmux, read back with capture-pane.

What a person sees, not what was written: a log line while the view runs
(a SIGHUP makes mux log "reload: SIGHUP") lands below the table, the table
keeps one header and one title, and when the run stops the log line is
printed once, then the final table; ``mux replay`` plays at the recorded
pace and its keys pause and speed it up.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from mux_core.records import Event, State, Status
from mux_core.testing import serve_sse
from tests.helpers.e2e import FAST_RETRY, MUX, source_toml, write_config

NO_TMUX = "tmux is not installed: these tests run mux in it (apt-get install tmux)"


class Tmux:
    """One tmux server of the test's own (its own socket), one pane."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    async def __call__(self, *args: str, env: dict[str, str] | None = None) -> str:
        with trio.fail_after(10):
            done = await trio.run_process(
                ["tmux", "-S", str(self.socket), *args], capture_stdout=True, env=env
            )
        return done.stdout.decode()

    async def screen(self) -> list[str]:
        """The pane's visible lines, as drawn."""
        return (await self("capture-pane", "-p", "-t", "view")).splitlines()

    async def everything(self) -> str:
        """The pane's scrollback and screen."""
        return await self("capture-pane", "-p", "-S", "-", "-t", "view")

    async def wait_for(self, text: str, *, timeout: float = 15.0) -> list[str]:
        with trio.move_on_after(timeout):
            while True:
                screen = await self.screen()
                if any(text in line for line in screen):
                    return screen
                await trio.sleep(0.05)  # polling the emulator's screen, with a deadline
        pytest.fail(f"{text!r} never drawn; the screen:\n" + "\n".join(await self.screen()))


async def _exited(tmux: Tmux, *, timeout: float = 30.0) -> str:
    """Wait for mux to exit (the pane stays, remain-on-exit); then everything it drew."""
    with trio.fail_after(timeout):
        while True:
            dead = await tmux("display-message", "-p", "-t", "view", "#{pane_dead}")
            if dead.strip() == "1":
                return await tmux.everything()
            await trio.sleep(0.05)  # polling tmux, with a deadline


def _header(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if "source" in line and "transport" in line]


async def test_a_log_line_goes_below_the_table_and_never_tears_it(tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.fail(NO_TMUX, pytrace=False)
    tmux = Tmux(tmp_path / "tmux.sock")
    async with serve_sse() as server:
        config = write_config(
            tmp_path / "view.toml",
            FAST_RETRY
            + source_toml("alive", "sse", server.url)
            + '\n[[sinks]]\ntype = "tui"\nplot = ["loss"]\nrefresh_per_second = 20\n',
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MUX_", "FORCE_"))}
        env["NO_COLOR"] = "1"
        command = "exec " + shlex.join([*MUX, "run", str(config)])
        size = ["-x", "200", "-y", "40"]
        await tmux("new-session", "-d", *size, "-s", "view", command, env=env)
        try:
            await tmux("set-option", "-t", "view", "remain-on-exit", "on")
            for step in range(1, 4):
                await server.publish({"step": step, "loss": 1.0 / step}, id=str(step))
            await tmux.wait_for("1 connected")
            pid = int(await tmux("display-message", "-p", "-t", "view", "#{pane_pid}"))
            os.kill(pid, signal.SIGHUP)  # mux logs "reload: SIGHUP" to its stderr: the pane
            await tmux.wait_for("reload: SIGHUP")
            await server.publish({"step": 4, "loss": 0.25}, id="4")
            screen = await tmux.wait_for("   4  ")  # redrawn since, with the new step
            assert screen[0].startswith("mux · view · 1 source: 1 connected")  # not pushed away
            assert len(_header(screen)) == 1  # one header: nothing torn, nothing drawn twice
            logged = [i for i, line in enumerate(screen) if "reload: SIGHUP" in line]
            assert len(logged) == 1 and logged[0] > _header(screen)[0] + 1  # below the rows
            assert "INFO" in screen[logged[0]]  # the log's own format

            await tmux("send-keys", "-t", "view", "C-c")
            shown = await _exited(tmux)
            assert shown.count("reload: SIGHUP") == 1  # printed once when the view closed
            final = shown.splitlines()
            assert len(_header(final)) == 1  # the final table, once
            at = next(i for i, line in enumerate(final) if "reload: SIGHUP" in line)
            assert at < _header(final)[0]  # the log line first, then the final table
        finally:
            with trio.CancelScope(shield=True):
                await trio.run_process(["tmux", "-S", str(tmux.socket), "kill-server"], check=False)


def _recording(path: Path, events: int) -> Path:
    """A recorded run: one source connected, then ``events`` events 0.1 s apart."""
    records: list[Any] = [Status("train", "sse", State.CONNECTED, 1, None, "", 1000.0)]
    records += [
        Event(
            "train",
            "sse",
            "metric",
            str(i),
            {"step": i, "loss": 1 / (i + 1)},
            1000.1 + i / 10,
            i + 1,
        )
        for i in range(events)
    ]
    path.write_bytes(b"".join(msgspec.json.encode(record) + b"\n" for record in records))
    return path


def _step(screen: list[str]) -> int:
    row = next(line for line in screen if line.startswith("   train "))
    words = row.split()
    return int(words[words.index("ago") + 1])  # the step column, after "0.1 s ago"


async def test_a_replay_plays_at_the_recorded_pace_and_space_and_plus_pace_it(
    tmp_path: Path,
) -> None:
    """``mux replay FILE`` into the view: 60 s of recording play at the recorded
    pace (not the last frame at once); space pauses, ``+`` speeds it up until
    it is done, and the final table has the last step."""
    if shutil.which("tmux") is None:
        pytest.fail(NO_TMUX, pytrace=False)
    tmux = Tmux(tmp_path / "tmux.sock")
    recording = _recording(tmp_path / "run.jsonl", 600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUX_", "FORCE_"))}
    env["NO_COLOR"] = "1"
    command = "exec " + shlex.join([*MUX, "replay", str(recording)])
    await tmux("new-session", "-d", "-x", "160", "-y", "30", "-s", "view", command, env=env)
    try:
        await tmux("set-option", "-t", "view", "remain-on-exit", "on")
        screen = await tmux.wait_for("replay at 1x")
        await tmux.wait_for("0.0 s ago")  # the first events drawn
        await tmux("send-keys", "-t", "view", "Space")
        screen = await tmux.wait_for("replay paused")
        paused_at = _step(screen)
        assert paused_at < 500  # seconds into a minute of recording, not its end
        assert "space: pause/resume · +/-: faster/slower" in "\n".join(screen)
        await tmux("send-keys", "-t", "view", "+", "+", "Space")
        screen = await tmux.wait_for("replay at 4x")
        await tmux("send-keys", "-t", "view", *["+"] * 11)  # past 1024x: as fast as it goes
        final = (await _exited(tmux)).splitlines()
        assert any("replay done: 601 records" in line for line in final)
        assert _step(final[_header(final)[-1] :]) == 599 > paused_at
    finally:
        with trio.CancelScope(shield=True):
            await trio.run_process(["tmux", "-S", str(tmux.socket), "kill-server"], check=False)
