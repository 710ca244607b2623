"""Workers forked from ``mux run`` before its event loop starts.

A worker started as ``python -m mux_core._cli.worker`` pays for its own
start: the imports, the plugins, the config read and built again -- about
0.5 s of CPU each, and seconds for a config of many thousands of sources.
A worker forked from the parent once it has all of that (and before trio
runs: a fork copies only the calling thread, and an event loop's
descriptors and wake-up machinery must not be shared) starts at once and
shares the parent's pages until either writes them.

:func:`fork_workers` does it for the first start of each worker, only when
the process has one thread (a lock another thread held would stay held in
the child forever) and the platform can fork; otherwise, and for every
later start (a worker that died), the pool starts ``python -m
mux_core._cli.worker`` as before. The two kinds look the same to the pool:
:class:`WorkerProcess`. See docs/architecture.md, Workers.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Protocol

import trio

__all__ = ["ForkedWorker", "WorkerProcess", "fork_workers"]

#: A forked child's body: (worker index, records fd, commands fd) -> exit code.
ChildMain = Callable[[int, int, int], int]


class WorkerProcess(Protocol):
    """What the pool uses of a worker process: a :class:`trio.Process` or a
    :class:`ForkedWorker`."""

    pid: int

    @property
    def returncode(self) -> int | None: ...

    @property
    def stdin(self) -> trio.abc.SendStream | None: ...

    @property
    def stdout(self) -> trio.abc.ReceiveStream | None: ...

    def kill(self) -> None: ...

    async def wait(self) -> int: ...


class ForkedWorker:
    """The parent's side of a forked worker: its pid and its two pipe ends.

    The pipe ends become trio streams on first use (inside the event loop).
    """

    def __init__(self, pid: int, commands_fd: int, records_fd: int) -> None:
        self.pid = pid
        self._commands_fd = commands_fd
        self._records_fd = records_fd
        self._stdin: trio.lowlevel.FdStream | None = None
        self._stdout: trio.lowlevel.FdStream | None = None
        self._returncode: int | None = None

    @property
    def returncode(self) -> int | None:
        return self._returncode

    @property
    def stdin(self) -> trio.lowlevel.FdStream:
        if self._stdin is None:
            self._stdin = trio.lowlevel.FdStream(self._commands_fd)
        return self._stdin

    @property
    def stdout(self) -> trio.lowlevel.FdStream:
        if self._stdout is None:
            self._stdout = trio.lowlevel.FdStream(self._records_fd)
        return self._stdout

    def kill(self) -> None:
        if self._returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def wait(self) -> int:
        """Wait for the worker to end; its exit code (``-signal`` if killed), as trio's."""
        if self._returncode is None:
            await _wait_for_exit(self.pid)
            _, status = os.waitpid(self.pid, os.WNOHANG)  # noqa: ASYNC222 (it has ended)
            self._returncode = os.waitstatus_to_exitcode(status)
            for stream in (self._stdin, self._stdout):
                if stream is not None:
                    await stream.aclose()
        return self._returncode

    def close_unused(self) -> None:
        """Close the pipe ends no stream took (a worker never used)."""
        for fd, stream in ((self._commands_fd, self._stdin), (self._records_fd, self._stdout)):
            if stream is None:
                try:
                    os.close(fd)
                except OSError:
                    pass


async def _wait_for_exit(pid: int) -> None:
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is not None:
        try:
            fd = pidfd_open(pid)
        except OSError:  # an old kernel: below
            pass
        else:
            try:
                await trio.lowlevel.wait_readable(fd)
            finally:
                os.close(fd)
            return
    # Without pidfds: a thread waits without reaping (WNOWAIT), so wait() reaps once.
    await trio.to_thread.run_sync(
        lambda: os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT), abandon_on_cancel=True
    )


def _threads() -> int:
    """The threads of this process, a native library's too where the OS says (Linux)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def can_fork() -> bool:
    """Whether forking now is safe: a platform that forks, one thread, no event loop."""
    if not hasattr(os, "fork") or _threads() > 1:
        return False
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return True
    return False


def fork_workers(count: int, child: ChildMain) -> list[ForkedWorker] | None:
    """Fork ``count`` workers, each running ``child(index, records_fd, commands_fd)``
    and exiting with its result; None (nothing forked) where forking is not safe.

    Each child closes every pipe end of the parent's (its own and its elder
    siblings'), so a worker sees the end of its commands when the parent is
    gone, whoever else is alive.
    """
    if not can_fork():
        return None
    # Objects that exist now are never collected again: the collector of each
    # process would otherwise write to every shared page it walks.
    gc.freeze()
    forked: list[ForkedWorker] = []
    parent_ends: list[int] = []
    for index in range(count):
        commands_read, commands_write = os.pipe()
        records_read, records_write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 70
            try:
                for fd in (*parent_ends, commands_write, records_read):
                    os.close(fd)
                code = child(index, records_write, commands_read)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        os.close(commands_read)
        os.close(records_write)
        parent_ends += [commands_write, records_read]
        forked.append(ForkedWorker(pid, commands_write, records_read))
    return forked
