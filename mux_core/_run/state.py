"""Durable resume: each source's resume state on disk, so a restarted mux goes on.

Without it, resume state (the last event id, a cursor, the ``seq`` counter)
lives in memory only, and a monitor restarted onto the same file records
the trainer's whole history again. With ``state_dir`` (config) or
``mux run --state DIR``, the engine keeps one file, ``DIR/mux-state.json``,
written atomically (a temporary file, fsync, rename, fsync of the
directory), and loads it when the run starts.

The guarantee comes from *when* a state is saved: only once every record
it covers has reached every ``block`` sink -- the sink's ``write`` returned
and, for a sink with a ``sync()`` method (the file sink: flushed to the OS,
and fsynced when ``fsync = true``), ``sync()`` returned. The engine takes a
checkpoint every :data:`CHECKPOINT_INTERVAL` seconds and a final one after
a clean shutdown. A source whose saved transport differs from its config
starts afresh (with a warning): its ids mean something else.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import trio

from ..sink import Overflow, sink_member
from ..transport import ResumeState
from .sink_set import SinkSet

__all__ = ["Checkpoints", "StateStore"]

_log = logging.getLogger("mux.state")

#: Seconds between two checkpoints of every source's resume state.
CHECKPOINT_INTERVAL = 1.0

_FILE_NAME = "mux-state.json"
_VERSION = 1


class _SavedSource(msgspec.Struct, forbid_unknown_fields=False):
    transport: str
    seq: int = 0
    last_id: str | None = None
    cursor: Any = None


class _SavedRun(msgspec.Struct, forbid_unknown_fields=False):
    version: int
    sources: dict[str, _SavedSource]


class StateStore:
    """The resume states of one run's sources, kept in ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(os.path.expanduser(directory))
        self.path = os.path.join(self.directory, _FILE_NAME)
        self._saved: dict[str, _SavedSource] = {}
        self._last_written: bytes | None = None

    def load(self) -> None:
        """Read the saved states (none yet is fine; an unreadable file is
        reported and ignored: mux then starts from nothing, as without it)."""
        os.makedirs(self.directory, exist_ok=True)
        try:
            with open(self.path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return
        try:
            run = msgspec.json.decode(data, type=_SavedRun)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            _log.warning("ignoring %s: not a mux state file (%s)", self.path, exc)
            return
        self._saved = dict(run.sources)
        self._last_written = data

    def resume_for(self, source: str, transport: str) -> ResumeState | None:
        """The saved resume state of ``source``, or None (start afresh)."""
        saved = self._saved.get(source)
        if saved is None:
            return None
        if saved.transport != transport:
            _log.warning(
                "source %r: saved state is for transport %r, not %r; starting afresh",
                source,
                saved.transport,
                transport,
            )
            return None
        return ResumeState(last_id=saved.last_id, cursor=saved.cursor, seq=saved.seq)

    @staticmethod
    def snapshot(states: Mapping[str, tuple[str, ResumeState]]) -> dict[str, _SavedSource]:
        """Copy the live states now (a later save writes exactly these)."""
        return {
            name: _SavedSource(transport, resume.seq, resume.last_id, _jsonable(resume.cursor))
            for name, (transport, resume) in states.items()
        }

    def save(self, snapshot: dict[str, _SavedSource]) -> None:
        """Write a snapshot atomically (blocking: call it from a worker thread).

        Sources of the old file that are not in the snapshot are kept, so a
        source left out of one run (a shard, a config edit) keeps its place.
        """
        merged = {**self._saved, **snapshot}
        data = msgspec.json.encode(_SavedRun(_VERSION, merged))
        if data == self._last_written:
            return
        fd, tmp = tempfile.mkstemp(prefix=".mux-state-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_directory(self.directory)
        self._saved = merged
        self._last_written = data


def _jsonable(cursor: Any) -> Any:
    """A cursor as it can be saved; one that JSON cannot hold is not saved."""
    if cursor is None:
        return None
    try:
        msgspec.json.encode(cursor)
    except (TypeError, msgspec.EncodeError):
        return None
    if isinstance(cursor, dict) and any(isinstance(k, bytes) for k in cursor):
        return None  # bytes keys would come back as str: not the same cursor
    return cursor


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Checkpoints:
    """Saves ``states()`` into ``store`` every :data:`CHECKPOINT_INTERVAL` seconds."""

    def __init__(
        self,
        store: StateStore,
        sinks: SinkSet,
        states: Callable[[], dict[str, tuple[str, ResumeState]]],
    ) -> None:
        self._store = store
        self._sinks = sinks
        self._states = states

    async def run_periodically(self) -> None:
        while True:
            await trio.sleep(CHECKPOINT_INTERVAL)
            if not await self.checkpoint():
                return

    async def checkpoint(self) -> bool:
        """Save every source's resume state once what it covers is durable.

        The states are copied first; then every ``block`` sink is waited for
        until it has written what had entered its channel by then, and
        synced (``sink.sync()``: the file sink flushes, and fsyncs when
        ``fsync = true``); only then is the copy saved. False when a sink
        failed meanwhile: no more checkpoints (the final save is skipped too).
        """
        store = self._store
        snapshot = store.snapshot(self._states())
        marks = [
            (runner, runner.channel.entered)
            for runner in self._sinks.live
            if runner.channel.overflow is Overflow.BLOCK
        ]
        for runner, mark in marks:
            if not await runner.channel.wait_finished(mark):
                return False
        for runner, _ in marks:
            try:
                await sink_member(runner.sink, "sync")()
            except Exception:
                return False  # the sink's own task reports its failure
        await trio.to_thread.run_sync(store.save, snapshot)
        return True
