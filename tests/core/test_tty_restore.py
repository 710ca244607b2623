"""A second Ctrl-C ends mux with os._exit: the terminal is put back first.

The terminal view turns echo off to read keys and restores it when it
closes; an immediate exit runs no closing code, so the engine keeps the
settings it found when the run started (mux_core._run.tty) and puts them back
just before ``os._exit``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

from mux_core._run.tty import no_restore, terminal_restorer


def test_the_restorer_puts_the_settings_back_after_a_sink_changed_them() -> None:
    master, slave = os.openpty()
    try:
        before = termios.tcgetattr(slave)
        restore = terminal_restorer(slave)
        changed = termios.tcgetattr(slave)
        changed[3] &= ~(termios.ECHO | termios.ICANON)  # what cbreak does
        termios.tcsetattr(slave, termios.TCSANOW, changed)
        assert termios.tcgetattr(slave) != before
        restore()
        restore()  # twice is fine
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_off_a_terminal_there_is_nothing_to_restore(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as file:
        assert terminal_restorer(file.fileno()) is no_restore
    no_restore()  # and it does nothing, quietly


def test_a_second_signal_exits_at_once_with_the_terminal_as_it_was(tmp_path: Path) -> None:
    """A real engine on a pty: a "sink" turns echo off, the run is told to stop
    twice while stopping takes long, and the pty's settings are back after
    the os._exit."""
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            """
            import logging, os, sys, termios, trio
            logging.basicConfig(level=logging.INFO, stream=sys.stdout)
            from mux_core._config import parse_config
            from mux_core._run.engine import Engine
            from mux_core._plugins import PluginManager

            plugins = PluginManager()
            plugins.load_entry_points()
            config = parse_config(
                '[[sources]]\\nname = "s"\\ntransport = "sse"\\nurl = "http://127.0.0.1:1/e"\\n'
                '[[sinks]]\\ntype = "log"\\n',
                path="m.toml",
                plugins=plugins,
            )
            engine = Engine(config, plugins, install_signal_handlers=True)
            attrs = termios.tcgetattr(0)
            attrs[3] &= ~termios.ECHO  # what a terminal view does while it runs
            termios.tcsetattr(0, termios.TCSANOW, attrs)

            async def main():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(engine.run)
                    print("READY", flush=True)
                    with trio.CancelScope(shield=True):  # a shutdown that takes long
                        await trio.sleep(60)

            trio.run(main)
            """
        )
    )
    master, slave = os.openpty()
    try:
        before = termios.tcgetattr(slave)
        proc = subprocess.Popen(
            [sys.executable, str(script)],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline().strip()
        assert line == b"READY", proc.stderr.read().decode()[-2000:]
        assert termios.tcgetattr(slave) != before  # echo is off now
        for line in proc.stdout:  # the run is up: its signal handling too
            if b"s: connecting" in line:
                break
        proc.send_signal(signal.SIGINT)  # stop...
        for line in proc.stdout:  # wait until the engine saw it
            if b"stopping: SIGINT" in line:
                break
        proc.send_signal(signal.SIGINT)  # ...and now: os._exit(130)
        assert proc.wait(timeout=30) == 130
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)
