"""``python -m mux_core._cli.worker``: one worker process of ``mux run --workers N``.

Started by the parent ``mux run`` (never by a user), which talks to it over
its stdin and stdout (``mux_core._run.worker_link``). Here: the process's
file descriptors, signals, logging and plugins; the work is
:func:`mux_core._run.worker.serve`'s.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import trio

from .._plugins import PluginManager
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


def _prepare(start: Start) -> PluginManager:
    setup_logging(quiet=start.quiet)
    # The parent says why the run stops, once: not each worker again.
    logging.getLogger("mux.engine").addFilter(
        lambda record: not str(record.msg).startswith("stopping: ")
    )
    return load_plugins()


def main() -> None:
    # Ctrl-C reaches the whole process group: the parent decides, and tells us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Our stdout is the pipe to the parent; anything else printing to stdout
    # (a plugin's print) must not land in the middle of the records.
    up_fd = os.dup(1)
    os.dup2(2, 1)
    _widen(up_fd)
    commands_fd = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.exit(trio.run(serve, up_fd, commands_fd, _prepare))


if __name__ == "__main__":
    main()
