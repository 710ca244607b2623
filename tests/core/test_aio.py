"""mux_core.aio: asyncio code on a loop in its own thread, driven from trio.

Plain asyncio coroutines stand in for a client library here; the nats-py
transport of the guide runs against a real nats-server in
tests/docs/test_asyncio_clients.py.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading

import pytest
import trio

from mux_core import Disconnected, Failed, ServerUnavailable
from mux_core.aio import AsyncioChannel, asyncio_loop, session_error
from mux_core.testing import refusing_port
from tests.helpers import ROOT


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mux-asyncio" and t.is_alive()]


async def test_run_returns_what_the_coroutine_returned_on_the_loops_own_thread() -> None:
    async with asyncio_loop() as loop:

        async def where() -> tuple[str, bool]:
            return threading.current_thread().name, asyncio.get_running_loop() is loop.loop

        assert await loop.run(where()) == ("mux-asyncio", True)
        assert len(_loop_threads()) == 1
    assert _loop_threads() == []  # the thread ended with the block


async def test_an_asyncio_exception_is_raised_in_trio_as_itself() -> None:
    raised: list[BaseException] = []

    async def fails() -> None:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            error = KeyError("no such server")
            raised.append(error)
            raise error from exc

    async with asyncio_loop() as loop:
        with pytest.raises(KeyError) as caught:
            await loop.run(fails())
    assert caught.value is raised[0]
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


async def test_cancelling_the_trio_side_cancels_the_asyncio_task_and_waits_for_it() -> None:
    steps: list[str] = []

    async def slow_to_cancel(inbox: AsyncioChannel[str]) -> None:
        await inbox.put("started")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.1)  # a slow cleanup, as closing a connection may be
            steps.append("asyncio task cleaned up")
            raise

    async with asyncio_loop() as loop:
        inbox: AsyncioChannel[str] = loop.channel(max_items=1)
        with trio.CancelScope() as scope:

            async def cancel_once_started() -> None:
                assert await inbox.receive() == ["started"]
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_once_started)
                await loop.run(slow_to_cancel(inbox))
        steps.append("trio side cancelled")
        assert scope.cancelled_caught
    assert steps == ["asyncio task cleaned up", "trio side cancelled"]


async def test_fail_ends_a_pending_run_with_its_error_and_cancels_the_task() -> None:
    seen: list[str] = []

    async def connect_forever(inbox: AsyncioChannel[str]) -> None:
        await inbox.put("connecting")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async with asyncio_loop() as loop:
        inbox: AsyncioChannel[str] = loop.channel(max_items=1)

        def refuse() -> None:  # as a library's error callback would, on the loop
            loop.fail(ConnectionRefusedError(111, "Connection refused"))
            loop.fail(TimeoutError("later errors are ignored"))

        async with trio.open_nursery() as nursery:

            async def fail_once_connecting() -> None:
                assert await inbox.receive() == ["connecting"]
                loop.loop.call_soon_threadsafe(refuse)

            nursery.start_soon(fail_once_connecting)
            with pytest.raises(ConnectionRefusedError):
                await loop.run(connect_forever(inbox))
        assert seen == ["cancelled"]
        with pytest.raises(ConnectionRefusedError):  # a failed loop runs nothing more
            await loop.run(asyncio.sleep(0))
        assert isinstance(loop.failure, ConnectionRefusedError)


async def test_the_channel_hands_over_what_it_holds_then_the_failure() -> None:
    async with asyncio_loop() as loop:
        inbox: AsyncioChannel[int] = loop.channel(max_items=100)

        async def deliver_then_break() -> None:
            for n in range(5):
                await inbox.put(n)
            loop.fail(Disconnected("the server closed the connection"))

        loop.start(deliver_then_break())
        received: list[int] = []
        with pytest.raises(Disconnected, match="the server closed the connection"):
            async for batch in inbox:
                received.extend(batch)
    assert received == [0, 1, 2, 3, 4]


async def test_put_waits_while_the_channel_is_full() -> None:
    async with asyncio_loop() as loop:
        inbox: AsyncioChannel[int] = loop.channel(max_items=3)

        async def produce() -> None:
            for n in range(50):
                await inbox.put(n)

        loop.start(produce())
        batches: list[list[int]] = []
        while sum(map(len, batches)) < 50:
            batches.append(await inbox.receive())
    assert [n for batch in batches for n in batch] == list(range(50))
    assert max(map(len, batches)) <= 3


async def test_an_error_in_a_started_task_fails_the_loop() -> None:
    async with asyncio_loop() as loop:
        inbox: AsyncioChannel[bytes] = loop.channel(max_items=10)

        async def pump() -> None:
            await inbox.put(b"one")
            raise ConnectionResetError(104, "Connection reset by peer")

        loop.start(pump())
        assert await inbox.receive() == [b"one"]
        with pytest.raises(ConnectionResetError):
            await inbox.receive()


async def test_on_exit_the_callbacks_run_then_the_remaining_tasks_are_cancelled() -> None:
    steps: list[str] = []

    async def background() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            steps.append("background task cancelled")
            raise

    async def close_connection() -> None:
        await asyncio.sleep(0)
        steps.append(f"at_exit on {threading.current_thread().name}")

    async def broken_close() -> None:
        raise OSError("already closed")

    async with asyncio_loop() as loop:
        loop.start(background())
        loop.at_exit(close_connection)
        loop.at_exit(broken_close)  # runs first; its error does not stop the others
        await loop.run(asyncio.sleep(0))
    assert steps == ["at_exit on mux-asyncio", "background task cancelled"]
    assert _loop_threads() == []


async def test_what_nobody_retrieved_goes_to_the_debug_log_not_to_stderr(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mux.aio")

    def broken_callback() -> None:
        raise RuntimeError("a library's background callback broke")

    async with asyncio_loop() as loop:
        loop.loop.call_soon_threadsafe(broken_callback)
        await loop.run(asyncio.sleep(0))  # queued after it: it has run
    assert "a library's background callback broke" in caplog.text
    assert all(record.levelno == logging.DEBUG for record in caplog.records)
    assert capfd.readouterr().err == ""


async def test_a_loop_that_does_not_stop_in_time_is_left_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    try:
        async with asyncio_loop(close_timeout=0.05) as loop:
            inbox: AsyncioChannel[str] = loop.channel(max_items=1)

            async def blocks_its_thread() -> None:
                await inbox.put("blocking")
                release.wait()  # a synchronous call: the loop cannot cancel it

            loop.start(blocks_its_thread())
            assert await inbox.receive() == ["blocking"]
        assert "did not stop within 0.05 s" in caplog.text
        assert len(_loop_threads()) == 1
    finally:
        release.set()
        for thread in _loop_threads():
            thread.join(5)
    assert _loop_threads() == []


async def test_the_channel_refuses_a_size_below_one() -> None:
    async with asyncio_loop() as loop:
        with pytest.raises(ValueError, match="max_items must be at least 1, got 0"):
            loop.channel(max_items=0)


async def test_session_error_says_connection_refused_for_a_refused_port() -> None:
    with refusing_port() as port:
        async with asyncio_loop() as loop:
            with pytest.raises(OSError) as caught:
                await loop.run(asyncio.open_connection("127.0.0.1", port))
    assert repr(session_error(caught.value, connected=False)) == (
        "ServerUnavailable('connection refused')"
    )


class _LibraryEOF(Exception):
    pass


class _LibraryAuthError(Exception):
    pass


def test_session_error_maps_an_exception_to_the_state_and_words() -> None:
    words = {_LibraryEOF: "the server closed the connection", Exception: "anything else"}
    reset = ConnectionResetError(104, "Connection reset by peer")
    assert repr(session_error(reset, connected=True)) == "Disconnected('connection reset')"
    assert repr(session_error(TimeoutError(), connected=False)) == (
        "ServerUnavailable('connect timed out')"
    )
    assert repr(session_error(TimeoutError(), connected=True)) == "Disconnected('timed out')"
    eof = session_error(_LibraryEOF("nats: unexpected EOF"), connected=True, words=words)
    assert repr(eof) == "Disconnected('the server closed the connection')"  # the first match
    denied = session_error(
        _LibraryAuthError("nats: 'Authorization Violation'"),
        connected=False,
        permanent=(_LibraryAuthError,),
    )
    assert isinstance(denied, Failed)
    assert denied.detail == "_LibraryAuthError: nats: 'Authorization Violation'"
    unknown = session_error(ValueError("a\nlong\n" + "x" * 500), connected=False)
    assert isinstance(unknown, ServerUnavailable)
    assert unknown.detail.startswith("ValueError: a long xxx") and unknown.detail.endswith("...")
    assert len(unknown.detail) == 200
    already = Disconnected("missed pong")
    assert session_error(already, connected=False) is already


def test_importing_the_module_imports_neither_asyncio_nor_trio() -> None:
    """Every mux command imports every plugin, and a plugin imports mux_core.aio."""
    code = "import sys, mux_core.aio; print(sorted({'asyncio', 'trio'} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
