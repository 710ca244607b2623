"""ServerProcess: a real server binary or script, started and broken by a test.

A fake server plays faults from inside the test; some things only a real
server process shows -- its own reconnect handshake, its persistence, what
a client sees when the process is killed with SIGKILL, frozen with SIGSTOP
(connections accepted by the kernel, nothing answered), or restarted on the
same port::

    async with ServerProcess(["redis-server", "--port", "{port}", "--save", ""]) as redis:
        url = f"redis://127.0.0.1:{redis.port}"     # a free port, chosen at construction
        ...
        await redis.kill()       # SIGKILL: gone at once, connections reset
        await redis.restart()    # back on the same port (start() waits until it accepts)
        redis.pause()            # SIGSTOP ... redis.resume()  # SIGCONT
    # stopped (SIGTERM, then SIGKILL after 5 s): nothing is left behind

The process runs in a session of its own; every signal goes to its whole
process group, so a wrapper script and the server it spawned go together.
Its stdout and stderr go to a temporary file: :meth:`ServerProcess.output`
shows the end of it, and so does the error when the server does not come up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, Self

import trio

__all__ = ["ServerProcess"]

#: Seconds between two connection attempts while a server starts.
_POLL = 0.02
#: How much of the server's output an error shows.
_TAIL_LINES = 20
#: Seconds kill() waits for the rest of a killed process group to exit.
_GROUP_EXIT = 5.0


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` has not exited (a zombie has)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if not os.path.isdir("/proc/self/task"):
        return True  # no /proc: a zombie counts as alive until it is reaped
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and _stat(entry.path)[1] == pgid and _running(entry.path):
            return True
    return False


def _stat(path: str) -> tuple[bytes, int]:
    """The state and the process group in ``path/stat`` (``b"", -1`` if it is gone)."""
    try:
        with open(os.path.join(path, "stat"), "rb") as stat:
            line = stat.read()
    except OSError:
        return b"", -1
    # "pid (comm) state ppid pgrp ...": comm may hold anything, so split after its ")".
    state, _ppid, pgrp = line[line.rindex(b")") + 2 :].split()[:3]
    return state, int(pgrp)


def _running(path: str) -> bool:
    """True while a thread of the process runs (its sockets close with the last one)."""
    try:
        tasks = os.listdir(os.path.join(path, "task"))
    except OSError:
        return False
    return any(_stat(os.path.join(path, "task", tid))[0] not in (b"", b"Z", b"X") for tid in tasks)


def _printable(line: str) -> str:
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in line)


class ServerProcess:
    """A server process on ``host:port`` that a test starts, kills, pauses and restarts.

    ``argv`` is the command; each ``"{port}"`` and ``"{host}"`` in its items
    is replaced by :attr:`port` and :attr:`host`, e.g.
    ``ServerProcess(["nats-server", "-a", "{host}", "-p", "{port}"])``.
    ``port=None`` picks a free port on ``host`` now; it stays the port across
    restarts. ``env`` is the process's whole environment, as for
    :mod:`subprocess` (None: this process's); ``cwd`` its directory.
    ``ready_timeout``: seconds :meth:`start` waits for the server to accept
    a TCP connection.

    Readiness is a TCP connect that succeeds (the server sees one client
    connect and leave). If another program already listens on the port,
    the connect succeeds too; the server then usually exits, which
    :meth:`start` reports when it sees it in time.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        ready_timeout: float = 10.0,
    ) -> None:
        if isinstance(argv, str) or not argv:
            raise ValueError(f"argv must be a non-empty list of strings, got {argv!r}")
        #: The host the server listens on (and readiness connects to).
        self.host = host
        #: The port, the same across restarts.
        self.port = port if port is not None else _free_port(host)
        #: The command, with ``{port}`` and ``{host}`` replaced.
        self.argv = [
            str(item).replace("{port}", str(self.port)).replace("{host}", host) for item in argv
        ]
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.ready_timeout = ready_timeout
        #: True between :meth:`pause` and :meth:`resume`.
        self.paused = False
        self._process: trio.Process | None = None
        self._output: IO[bytes] | None = None

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "not running"
        return f"<ServerProcess {self.argv[0]} on {self.host}:{self.port}, {state}>"

    # -- state -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the process started by :meth:`start` has not exited."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while it runs; None when not running."""
        return self._process.pid if self._process is not None and self.running else None

    @property
    def returncode(self) -> int | None:
        """How the last process exited (``-9``: SIGKILL); None while it runs or before."""
        return None if self._process is None else self._process.poll()

    def output(self, limit: int = 65536) -> str:
        """The end (``limit`` bytes) of what the process wrote to stdout and stderr."""
        if self._output is None:
            return ""
        fd = self._output.fileno()
        size = os.fstat(fd).st_size
        start = max(0, size - limit)
        return os.pread(fd, size - start, start).decode("utf-8", "replace")

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Start the process and wait until it accepts a TCP connection on host:port.

        No-op when it runs already. Raises :class:`RuntimeError` -- with the
        exit code and the last lines the server wrote -- when it exits
        first, or does not accept within ``ready_timeout`` seconds (it is
        then killed).
        """
        if self.running:
            return
        if self._output is not None:
            self._output.close()
        self._output = tempfile.TemporaryFile(prefix="mux-server-")  # noqa: SIM115 (kept open)
        self.paused = False
        try:
            self._process = await trio.lowlevel.open_process(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._output,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise RuntimeError(
                f"cannot start {self.argv[0]}: {exc.strerror or exc} (is it installed, "
                "and on PATH?)"
            ) from exc
        try:
            await self._wait_ready()
        except BaseException:
            await self.kill()
            raise

    async def _wait_ready(self) -> None:
        process = self._process
        assert process is not None
        with trio.move_on_after(self.ready_timeout):
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{self.argv[0]} exited with code {process.returncode} before it "
                        f"accepted connections on {self.host}:{self.port}{self._tail()}"
                    )
                if await self._accepts() and process.poll() is None:
                    return
                with trio.move_on_after(_POLL):
                    await process.wait()  # wakes at once when it exits
        raise RuntimeError(
            f"{self.argv[0]} did not accept connections on {self.host}:{self.port} "
            f"within {self.ready_timeout:g} s{self._tail()}"
        )

    async def _accepts(self) -> bool:
        with trio.move_on_after(1.0):
            try:
                stream = await trio.open_tcp_stream(self.host, self.port)
            except OSError:
                return False
            await stream.aclose()
            return True
        return False

    def _tail(self) -> str:
        lines = self.output().splitlines()[-_TAIL_LINES:]
        if not lines:
            return " (it wrote nothing)"
        shown = "\n".join(f"  | {_printable(line)}" for line in lines)
        return f"; the last lines it wrote:\n{shown}"

    async def kill(self) -> None:
        """SIGKILL the process and its whole group; return once they have exited.

        The process is reaped; what it started (a wrapper script's server) is
        gone too, its ports closed, so a :meth:`start` can bind them again.
        No-op when not running.
        """
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self._signal(signal.SIGKILL)
        with trio.CancelScope(shield=True):
            await process.wait()
            # Whatever it started is killed too, and gone -- ports closed -- before
            # this returns: a restart must find its port free.
            self._signal(signal.SIGKILL)
            with trio.move_on_after(_GROUP_EXIT):
                while _group_alive(process.pid):  # noqa: ASYNC110 (no event for a grandchild)
                    await trio.sleep(_POLL / 4)
        self.paused = False

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop gracefully: SIGTERM, ``timeout`` seconds to exit, then SIGKILL.

        Also when paused (it gets SIGCONT to handle the SIGTERM). No-op when
        not running.
        """
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self._signal(signal.SIGTERM)
            self._signal(signal.SIGCONT)
            with trio.CancelScope(shield=True), trio.move_on_after(timeout):
                await process.wait()
        await self.kill()

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections; nothing is read or answered."""
        self._require_running("pause")
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT: a paused server goes on where it stopped."""
        self._require_running("resume")
        self._signal(signal.SIGCONT)
        self.paused = False

    async def restart(self) -> None:
        """:meth:`kill` (if running), then :meth:`start` on the same port."""
        await self.kill()
        await self.start()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _require_running(self, what: str) -> None:
        if not self.running:
            raise RuntimeError(f"cannot {what} {self.argv[0]}: it is not running (start() it)")

    def _signal(self, sig: signal.Signals) -> None:
        assert self._process is not None
        try:
            os.killpg(self._process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # the group is gone already
