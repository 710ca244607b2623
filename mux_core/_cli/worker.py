"""One worker process of ``mux run --workers N``: forked, or ``python -m mux_core._cli.worker``.

Forked by the parent ``mux run`` before its event loop starts (:func:`forked`,
the first start of each worker where that is safe), or started as
``python -m mux_core._cli.worker`` (:func:`main`: a worker started again,
or where forking is not safe) -- never by a user. The parent talks to it
over two pipes (``mux_core._run.worker_link``). Here: the process's file
descriptors, signals, logging and plugins; the work is
:func:`mux_core._run.worker.serve`'s.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

import trio

from .._config import Config
from .._plugins import PluginManager
from .._run.host import fewer_full_collections
from .._run.worker import serve
from .._run.worker_link import Start
from . import load_plugins, setup_logging

#: The pipe to the parent: 1 MiB (Linux's default limit for a user) rather than
#: 64 KiB lets a worker write bigger batches before it waits for the parent.
PIPE_SIZE = 1024 * 1024


def _widen(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except OSError:
        pass  # not Linux, or above the system's limit: the default size works too


def _quiet_stops() -> None:
    # The parent says why the run stops, once: not each worker again.
    logging.getLogger("mux.engine").addFilter(
        lambda record: not str(record.msg).startswith("stopping: ")
    )


def _prepare(start: Start) -> PluginManager:
    setup_logging(quiet=start.quiet)
    _quiet_stops()
    return load_plugins()


def _own_descriptors() -> None:
    """Ctrl-C is the parent's; stdin is nothing; stdout is stderr (a plugin's
    ``print`` must not land in the middle of the records)."""
    # Ctrl-C reaches the whole process group: the parent decides, and tells us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)


def forked(plugins: PluginManager, configs: Sequence[Config]) -> Callable[[int, int, int], int]:
    """The body of a worker forked from ``mux run`` (``WorkerPool.fork``): it has
    the parent's plugins and logging already, and ``configs[index]``, the run's
    config with only its own sources (made before the fork, so that no worker
    so much as counts a reference to another's: each would copy the pages)."""

    def child(index: int, up_fd: int, commands_fd: int) -> int:
        _own_descriptors()
        _widen(up_fd)
        _quiet_stops()
        config = configs[index]
        code: int = trio.run(serve, up_fd, commands_fd, lambda start: plugins, config)
        return code

    return child


def main() -> None:
    # Our stdin and stdout are the pipes from and to the parent.
    up_fd, commands_fd = os.dup(1), os.dup(0)
    _own_descriptors()
    _widen(up_fd)
    fewer_full_collections()  # (a forked worker has it from mux run)
    sys.exit(trio.run(serve, up_fd, commands_fd, _prepare))


if __name__ == "__main__":
    main()
