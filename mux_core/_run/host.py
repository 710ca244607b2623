"""What every run of mux shares: the host of a run.

One :class:`RunHost` for what ``mux run`` and ``mux replay`` do alike; the
exit codes are :mod:`mux_core._run.exit_codes`' (re-exported here).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import trio

from .exit_codes import ExitCode
from .sink_set import SinkRunner, SinkSet
from .tty import no_restore, terminal_restorer

__all__ = ["FULL_COLLECTION_EVERY", "ExitCode", "RunHost", "fewer_full_collections"]

_log = logging.getLogger("mux.engine")

#: The collector's third threshold in a process mux owns: a full collection
#: after at least this many collections of the middle generation (Python's
#: default: 10).
FULL_COLLECTION_EVERY = 100


def fewer_full_collections() -> None:
    """Let the cyclic collector walk every object less often (``mux run``, a worker).

    A full collection walks every live object: a connected idle source is
    ~50 of them, so 12,500 sources make ~1 million, and Python starts one
    each time the long-lived objects grew by a quarter -- while thousands of
    sources connect at once, every few tenths of a second. Measured, one
    process connecting 12,500 idle sse sources: 19 full collections taking
    3.6-4.0 s of its 15-18 s of CPU; with a full collection at most every
    100 middle ones (~700,000 allocations) 2 taking 0.9 s. The young
    generations, where short-lived cycles die, are collected as before.
    """
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


class RunHost:
    """What ``mux run`` (:class:`~mux_core._run.engine.Engine`) and ``mux replay``
    (:class:`~mux_core._run.replay.Replay`) share: one way to be stopped, to
    watch signals and to take a sink's failure.

    ``request_stop`` is safe from any thread and before the run starts; a
    first SIGINT / SIGTERM stops cleanly, a second one ends the process at once
    (:attr:`ExitCode.INTERRUPTED`) with the terminal put back as the run found
    it (a view may have changed it). A sink that fails follows its
    ``on_error``: ``stop`` ends the run with :attr:`ExitCode.SINK_FAILED`,
    ``drop`` leaves the others going. A subclass adds what its run stops
    (:meth:`_stop`) and the signals it handles besides (:meth:`_on_signal`).
    """

    #: What the run is called in messages ("run", "replay").
    noun = "run"

    def __init__(self, *, install_signal_handlers: bool) -> None:
        self.install_signal_handlers = install_signal_handlers
        # The terminal as the run found it, put back if a second signal ends
        # mux at once: taken now, before any sink opens.
        self._restore_terminal = terminal_restorer() if install_signal_handlers else no_restore
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop_reason: str | None = None
        self._sink_failed = False
        self._sinks = SinkSet(self._on_sink_failure, stopping=lambda: self._stop_reason is not None)

    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop cleanly. Safe from any thread and from a host loop's callback."""
        if not self._call_soon(self._stop, reason) and self._stop_reason is None:
            self._stop_reason = reason

    def _call_soon(self, fn: Callable[..., None], *args: Any) -> bool:
        """Run ``fn(*args)`` in the run's trio thread soon; False if the run is not running."""
        token = self._token
        if token is None:
            return False
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            return False
        return True

    def _stop(self, reason: str) -> None:
        """Note why the run stops (the first reason wins); a subclass stops its parts."""
        if self._stop_reason is None:
            self._stop_reason = reason
            _log.info("stopping: %s", reason)

    def _on_sink_failure(self, runner: SinkRunner, exc: BaseException, started: bool) -> None:
        where = "writing" if started else "opening"
        message = f"sink {runner.config.name!r} ({runner.config.type}) failed while {where}: {exc}"
        if runner.config.on_error == "stop":
            _log.error('%s; stopping the %s (on_error = "stop")', message, self.noun)
            self._sink_failed = True
            self._stop(f"sink {runner.config.name!r} failed")
        else:
            _log.error(
                '%s; dropping this sink, the %s goes on (on_error = "drop")', message, self.noun
            )

    def _signals(self) -> list[signal.Signals]:
        """The signals :meth:`_watch_signals` receives."""
        return [signal.SIGINT, signal.SIGTERM]

    def _on_signal(self, signum: int) -> bool:
        """Handle a signal other than a stop; True if it was one of the subclass's."""
        return False

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(*self._signals()) as signals:
            async for signum in signals:
                if self._on_signal(signum):
                    continue
                name = signal.Signals(signum).name
                if self._stop_reason is None:
                    self._stop(name)
                    continue
                # A second signal while shutting down: the user wants out now.
                print(f"mux: {name} again, exiting without waiting", file=sys.stderr, flush=True)
                self._restore_terminal()
                os._exit(ExitCode.INTERRUPTED)
