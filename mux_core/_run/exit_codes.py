"""The exit codes of the ``mux`` command: one :class:`ExitCode` for every way it ends,
whichever command ran (``mux run``, ``mux replay``, ``mux check``, a plugin's).

A module of its own, importing nothing, so a command that only validates
(``mux check``) does not load the run machinery to name its exit code.
"""

from __future__ import annotations

import enum

__all__ = ["ExitCode"]


class ExitCode(enum.IntEnum):
    """The exit codes of the ``mux`` command (the user guide's table)."""

    #: A clean stop: a signal, ``--for`` elapsed, every source ``ended``; a check passed.
    OK = 0
    #: A sink with ``on_error = "stop"`` failed.
    SINK_FAILED = 1
    #: ``mux test``: a test failed; an alias of 1.
    TEST_FAILED = 1
    #: ``mux check --probe``: a source is not reachable (yet); an alias of 1.
    UNREACHABLE = 1
    #: A usage or config error: nothing ran.
    USAGE = 2
    #: A source ended in ``failed`` or ``max_retries_exceeded``.
    SOURCE_FAILED = 3
    #: ``--fail-on`` saw an alert of that severity or higher.
    ALERT = 4
    #: Ended by a second Ctrl-C (or SIGTERM) without waiting, or Ctrl-C before the run began.
    INTERRUPTED = 130
    #: The reader of stdout went away (``mux check CONFIG | head``).
    BROKEN_PIPE = 141
