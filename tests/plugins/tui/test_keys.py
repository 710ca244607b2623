"""The terminal view's keys: ``r`` restarts the sources that gave up.

The key's logic with plain calls, the sink with a fake key source, the
terminal plumbing on a real pseudo-terminal, and a real ``mux run`` whose
stdin and stdout are a pty: a source gives up, its server comes up, ``r``
is typed, it connects again, and Ctrl-C leaves the terminal as it was.
"""

from __future__ import annotations

import fcntl
import io
import os
import signal
import socket
import struct
import sys
import termios
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import trio
import trio.lowlevel
from rich.console import Console

from mux_core.records import State, Status
from mux_core.sink import SinkContext, SourceInfo
from mux_core.testing import serve_sse
from mux_tui import TuiOptions, TuiSink
from mux_tui._browse import Browse
from mux_tui._keys import RESTART_HINT, RestartKey, ViewKeys, split_keys
from mux_tui._model import TuiModel
from mux_tui._terminal import TerminalMode, TtyKeys, keyboard_fd
from tests.helpers.e2e import (
    FAST_RETRY,
    MUX,
    file_ids,
    file_sink_toml,
    file_states,
    source_toml,
    stderr_of,
    wait_exit,
    wait_for_file,
    write_config,
)

Background = Callable[[], Awaitable[Any]]


def _status(source: str, state: State, at: float = 100.0) -> Status:
    return Status(source, "sse", state, 1, None, "", at)


def _model(*names: str) -> TuiModel:
    model = TuiModel(plot=(), width=10)
    for name in names:
        model.add_source(name, "sse")
    return model


# -- the key's logic ---------------------------------------------------------


def test_r_restarts_every_source_whose_last_state_is_restartable() -> None:
    model = _model("gave-up", "failed", "ended", "live", "stopped", "waiting")
    model.ingest(
        [
            _status("gave-up", State.MAX_RETRIES_EXCEEDED),
            _status("failed", State.FAILED),
            _status("ended", State.ENDED),
            _status("live", State.CONNECTED),
            _status("stopped", State.STOPPED),
        ]
    )
    restarted: list[str] = []
    now = [0.0]
    key = RestartKey(model, restarted.append, clock=lambda: now[0])
    keys = ViewKeys(Browse(), restart=key)
    assert key.caption_lines() == [RESTART_HINT]

    # arrows, F5, F3 (ESC O R), Alt+r: escape sequences, never a press of r
    for ignored in ("x", "q", "\n", "\x1b[A", "\x1b[15~", "\x1bOR", "\x1br", "\x1b[1;5R"):
        keys.press(ignored)
    assert restarted == []

    keys.press("r")
    assert restarted == ["gave-up", "failed", "ended"]
    # asked for: no hint, and no second restart until a new status arrives
    assert key.caption_lines() == ["restarting gave-up, failed, ended"]
    keys.press("r")
    assert restarted == ["gave-up", "failed", "ended"]
    assert key.caption_lines() == [
        "restarting gave-up, failed, ended",
        "r: no source to restart",
    ]
    now[0] += RestartKey.NOTE_SECONDS
    assert key.caption_lines() == ["restarting gave-up, failed, ended"]  # the note was short

    # the caption names a source until its state moves on, not for a while
    model.ingest([_status("failed", State.CONNECTING, 101.0)])
    assert key.caption_lines() == ["restarting gave-up, ended"]
    model.ingest([_status("ended", State.CONNECTED, 101.0), _status("gave-up", State.CONNECTED)])
    assert key.caption_lines() == []

    # it connected, then gave up again: restartable again
    model.ingest([_status("gave-up", State.FAILED, 102.0)])
    assert key.caption_lines() == [RESTART_HINT]
    keys.press("\x1b[15~r")  # F5 then r in one read: the r counts
    assert restarted[3:] == ["gave-up"]
    keys.press("rr")  # typed twice before the view read: one restart
    assert restarted[3:] == ["gave-up"]


def test_keys_are_split_into_characters_and_whole_escape_sequences() -> None:
    assert split_keys("ab") == ["a", "b"]
    assert split_keys("\x1b[A\x1b[6~r") == ["\x1b[A", "\x1b[6~", "r"]
    assert split_keys("\x1bOR/") == ["\x1bOR", "/"]
    assert split_keys("\x1b") == ["\x1b"]  # Esc alone
    assert split_keys("\x1b\x1b[B") == ["\x1b", "\x1b[B"]
    assert split_keys("\x1b[") == ["\x1b["]  # cut short: one key, never a "["


def test_no_hint_when_nothing_gave_up() -> None:
    model = _model("a", "b")
    model.ingest([_status("a", State.CONNECTED)])
    key = RestartKey(model, lambda name: pytest.fail(f"restarted {name}"))
    assert key.caption_lines() == []


# -- the sink with a fake key source -----------------------------------------


class FakeKeys:
    """Keys a test types: ``type(b"r")``; ``end()`` is stdin closing."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[bytes](10)
        self.waiting = 0

    async def read(self) -> bytes:
        self.waiting += 1
        try:
            return await self.receive.receive()
        except trio.EndOfChannel:
            return b""

    async def type(self, keys: bytes) -> None:
        await self.send.send(keys)

    async def end(self) -> None:
        await self.send.aclose()


def _context(
    backgrounds: list[Background], restarted: list[str] | None = None, name: str = "train"
) -> SinkContext:
    context = SinkContext(
        name="tui",
        config_name=name,
        sources=(SourceInfo("gave-up", "sse"), SourceInfo("alive", "sse")),
        request_stop=lambda reason: None,
        start_background=backgrounds.append,
    )
    if restarted is not None:
        context.restart_source = restarted.append
    return context


def _shown(sink: TuiSink) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(sink.render(100.0))
    return console.export_text()


async def _until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        while not condition():
            await trio.lowlevel.checkpoint()


async def test_the_sink_restarts_on_r_and_shows_a_hint_then_a_confirmation() -> None:
    backgrounds: list[Background] = []
    restarted: list[str] = []
    keys = FakeKeys()
    console = Console(record=True, width=120, file=io.StringIO())
    sink = TuiSink(TuiOptions(), _context(backgrounds, restarted), console=console, keys=keys)
    await sink.open()
    assert len(backgrounds) == 2  # the redraws and the keys
    await sink.write([_status("alive", State.CONNECTED)])
    assert RESTART_HINT not in _shown(sink)  # nothing gave up: no hint
    await sink.write([_status("gave-up", State.MAX_RETRIES_EXCEEDED)])
    assert RESTART_HINT in _shown(sink)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(backgrounds[1])
        await keys.type(b"q")
        await keys.type(b"r")
        await _until(lambda: bool(restarted))
        assert restarted == ["gave-up"]
        shown = _shown(sink)
        assert "restarting gave-up" in shown and RESTART_HINT not in shown
        await keys.end()  # stdin closed: no more keys, so no hint either
        await _until(lambda: not sink._reading_keys)
        await sink.write([_status("gave-up", State.FAILED, 101.0)])
        assert RESTART_HINT not in _shown(sink)
        nursery.cancel_scope.cancel()
    await sink.aclose()
    final = console.export_text()
    assert RESTART_HINT not in final and "restarting" not in final  # the final table offers no key


async def test_keys_are_not_read_when_the_view_is_not_on_a_terminal() -> None:
    backgrounds: list[Background] = []
    restarted: list[str] = []
    sink = TuiSink(
        TuiOptions(),
        _context(backgrounds, restarted),
        console=Console(record=True, width=120, file=io.StringIO()),
    )
    await sink.open()
    assert len(backgrounds) == 1  # the redraws only
    await sink.write([_status("gave-up", State.MAX_RETRIES_EXCEEDED)])
    assert RESTART_HINT not in _shown(sink)
    await sink.aclose()


# -- the terminal ------------------------------------------------------------


@contextmanager
def _pty() -> Iterator[tuple[int, int]]:
    main, other = os.openpty()
    try:
        yield main, other
    finally:
        os.close(main)
        os.close(other)


def test_cbreak_mode_keeps_ctrl_c_and_is_undone_exactly() -> None:
    with _pty() as (_main, other), os.fdopen(other, "r", closefd=False) as stream:
        before = termios.tcgetattr(other)
        mode = TerminalMode.enter(stream, keys=True)
        assert mode is not None
        lflag = termios.tcgetattr(other)[3]
        assert not lflag & (termios.ICANON | termios.ECHO | termios.ECHOCTL)
        assert lflag & termios.ISIG  # Ctrl-C still stops the run
        assert termios.tcgetattr(other)[6][termios.VMIN] == 1
        mode.restore()
        assert termios.tcgetattr(other) == before
        termios.tcsetattr(other, termios.TCSANOW, before)
        mode.restore()  # a second restore (the key task's finally) changes nothing
        assert termios.tcgetattr(other) == before


def test_keys_are_read_only_from_the_terminal_the_view_is_on() -> None:
    with _pty() as (_m1, one), _pty() as (_m2, two):
        read_pipe, write_pipe = os.pipe()
        try:
            with (
                os.fdopen(one, "r", closefd=False) as stdin,
                os.fdopen(one, "w", closefd=False) as screen,
                os.fdopen(two, "w", closefd=False) as elsewhere,
                os.fdopen(read_pipe, "r", closefd=False) as piped,
                os.fdopen(write_pipe, "w", closefd=False) as pipe_out,
            ):
                assert keyboard_fd(stdin, screen) == one
                assert keyboard_fd(stdin, elsewhere) is None  # another terminal
                assert keyboard_fd(piped, screen) is None  # echo r | mux run ...
                assert keyboard_fd(stdin, pipe_out) is None  # mux run ... | less
                assert keyboard_fd(stdin, io.StringIO()) is None
                assert keyboard_fd(None, screen) is None
        finally:
            os.close(read_pipe)
            os.close(write_pipe)


async def test_tty_keys_wait_in_trio_and_cancel_at_once() -> None:
    with _pty() as (main, other), os.fdopen(other, "r", closefd=False) as stream:
        mode = TerminalMode.enter(stream, keys=True)
        assert mode is not None
        try:
            keys = TtyKeys(other)
            with trio.move_on_after(0.05) as waited:  # nothing typed: trio keeps running
                await keys.read()
            assert waited.cancelled_caught
            os.write(main, b"r")
            with trio.fail_after(5):
                assert await keys.read() == b"r"
        finally:
            mode.restore()


@contextmanager
def _view_on_a_pty(monkeypatch: Any) -> Iterator[tuple[int, int, Console]]:
    """A pty whose terminal end is both ``sys.stdin`` and a console's file."""
    with (
        _pty() as (main, other),
        os.fdopen(other, "r", closefd=False) as stdin,
        os.fdopen(other, "w", closefd=False) as screen,
    ):
        monkeypatch.setattr(sys, "stdin", stdin)
        yield main, other, Console(file=screen, width=120)


async def test_the_sink_reads_its_terminal_and_restores_it(monkeypatch: Any) -> None:
    """The default wiring: stdin and the console on one pty, a run that can restart."""
    with _view_on_a_pty(monkeypatch) as (main, other, console):
        before = termios.tcgetattr(other)
        backgrounds: list[Background] = []
        restarted: list[str] = []
        assert console.is_terminal
        sink = TuiSink(TuiOptions(), _context(backgrounds, restarted), console=console)
        await sink.open()
        assert not termios.tcgetattr(other)[3] & termios.ICANON
        await sink.write([_status("gave-up", State.MAX_RETRIES_EXCEEDED)])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, main)
            for background in backgrounds:
                nursery.start_soon(background)
            os.write(main, b"r")
            await _until(lambda: bool(restarted))
            assert restarted == ["gave-up"]
            await sink.aclose()
            nursery.cancel_scope.cancel()
        assert termios.tcgetattr(other) == before


async def test_a_cancelled_view_restores_its_terminal(monkeypatch: Any) -> None:
    with _view_on_a_pty(monkeypatch) as (main, other, console):
        before = termios.tcgetattr(other)
        backgrounds: list[Background] = []
        sink = TuiSink(TuiOptions(), _context(backgrounds, []), console=console)
        await sink.open()
        assert termios.tcgetattr(other) != before
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, main)
            for background in backgrounds:
                nursery.start_soon(background)
            await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()  # no aclose: the run was cancelled
        assert termios.tcgetattr(other) == before


async def test_a_replay_reads_keys_but_offers_no_restart(monkeypatch: Any) -> None:
    """``mux replay`` cannot restart: its view scrolls and filters, and has no ``r``."""
    with _view_on_a_pty(monkeypatch) as (main, other, console):
        before = termios.tcgetattr(other)
        backgrounds: list[Background] = []
        sink = TuiSink(TuiOptions(), _context(backgrounds), console=console)
        await sink.open()
        assert not termios.tcgetattr(other)[3] & termios.ICANON  # keys are read
        await sink.write([_status("gave-up", State.MAX_RETRIES_EXCEEDED)])
        shown = _shown(sink)
        assert RESTART_HINT not in shown and "r: restart" not in shown
        assert "/: filter by name" in shown
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, main)
            for background in backgrounds:
                nursery.start_soon(background)
            os.write(main, b"/alive\r")
            await _until(lambda: sink.browse.name_filter == "alive" and not sink.browse.editing)
            await sink.aclose()
            nursery.cancel_scope.cancel()
        assert termios.tcgetattr(other) == before


async def _drain(fd: int, screen: _Screen | None = None) -> None:
    """Read what is drawn on a pty's other end, so the writer never blocks."""
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the last writer closed its end
            return
        if not data:
            return
        if screen is not None:
            screen.add(data)


# -- a real mux run on a pseudo-terminal -------------------------------------


def _controlling_terminal() -> None:
    """In the child, after setsid: the pty (its stdin) becomes its controlling
    terminal, so a ``\\x03`` typed on the pty is a real Ctrl-C (SIGINT by ISIG)."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class _Screen:
    """What a process draws on a pty, read from the pty's other end by :meth:`drain`."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._drawn = trio.Event()

    async def drain(self, fd: int) -> None:
        await _drain(fd, self)

    def add(self, data: bytes) -> None:
        self.data += data
        self._drawn.set()
        self._drawn = trio.Event()

    async def wait_for(self, text: str, *, timeout: float = 15.0) -> None:
        wanted = text.encode()
        with trio.move_on_after(timeout):
            while wanted not in self.data:
                await self._drawn.wait()
        assert wanted in self.data, f"{text!r} never drawn; last: {bytes(self.data[-2000:])!r}"


def _stderr_file(config: Path) -> BinaryIO:
    return open(config.with_suffix(".stderr"), "wb")


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
async def test_r_typed_in_a_real_mux_run_restarts_the_source_that_gave_up(
    tmp_path: Path, stop: str
) -> None:
    """``mux run`` with stdin and stdout on a pty: ``gave-up`` exhausts its one
    attempt against a closed port while ``alive`` keeps the run going; a
    server comes up on that port, ``r`` is typed, ``gave-up`` connects again;
    Ctrl-C typed on the pty (or a SIGTERM) stops the run and the terminal is
    as it was."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "out.jsonl"
    main, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    before = termios.tcgetattr(terminal)
    screen = _Screen()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUX_", "FORCE_"))}
    env.update(TERM="xterm-256color", NO_COLOR="1")
    try:
        async with serve_sse() as alive, trio.open_nursery() as nursery:
            config = write_config(
                tmp_path / "keys.toml",
                FAST_RETRY
                + source_toml(
                    "gave-up",
                    "sse",
                    f"http://127.0.0.1:{port}/events",
                    "retry = { max_attempts = 1 }\n",
                )
                + source_toml("alive", "sse", alive.url)
                + '\n[[sinks]]\ntype = "tui"\nrefresh_per_second = 20\n'
                + file_sink_toml(out),
            )
            nursery.start_soon(screen.drain, main)
            with _stderr_file(config) as stderr:
                process: trio.Process = await nursery.start(
                    partial(
                        trio.run_process,
                        [*MUX, "run", str(config)],
                        check=False,
                        stdin=terminal,
                        stdout=terminal,
                        stderr=stderr,
                        env=env,
                        start_new_session=True,
                        preexec_fn=_controlling_terminal,
                    )
                )
            try:
                records = await wait_for_file(
                    out,
                    lambda r: (
                        "max_retries_exceeded" in file_states(r, "gave-up")
                        and "connected" in file_states(r, "alive")
                    ),
                    process=process,
                )
                gave_up_at = len(file_states(records, "gave-up"))
                await screen.wait_for(RESTART_HINT)  # keys are read from now on

                async with serve_sse(port=port) as server:
                    await server.publish({"step": 1}, id="1")
                    os.write(main, b"r")
                    await wait_for_file(
                        out,
                        lambda r: (
                            "connected" in file_states(r, "gave-up")[gave_up_at:]
                            and file_ids(r, "gave-up") == ["1"]
                        ),
                        process=process,
                    )
                    await screen.wait_for("restarting gave-up")
                    if stop == "SIGINT":
                        os.write(main, b"\x03")  # Ctrl-C, through the terminal's ISIG
                    else:
                        process.send_signal(signal.SIGTERM)
                    code = await wait_exit(process, config)
            finally:
                if process.returncode is None:
                    process.kill()
            assert code == 0, stderr_of(config)
            assert termios.tcgetattr(terminal) == before
            assert "restart: source 'gave-up' starts again" in stderr_of(config)
            assert f"stopping: {stop}" in stderr_of(config)
            nursery.cancel_scope.cancel()
    finally:
        os.close(main)
        os.close(terminal)
