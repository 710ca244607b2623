"""Durable resume: each source's resume state on disk, so a restarted mux goes on.

Without it, resume state (the last event id, a cursor, the ``seq`` counter)
lives in memory only, and a monitor restarted onto the same file records
the trainer's whole history again. With ``state_dir`` (config) or
``mux run --state DIR``, the engine keeps one file, ``DIR/mux-state.json``,
written atomically (a temporary file, fsync, rename, fsync of the
directory), and loads it when the run starts.

Two promises rest on it (``docs/architecture.md``, Durability):

* **Resume positions are never ahead of the sinks.** A source's position
  is saved only once every record it covers has reached every ``block``
  sink: the sink's ``write`` returned and then its ``sync()`` did. The
  engine takes a checkpoint every :data:`CHECKPOINT_INTERVAL` seconds and a
  final one after a clean shutdown.
* **A seq is never handed out twice.** Each source also has a *reserved*
  seq: no event with a higher seq reaches a sink before a higher
  reservation is saved (:meth:`StateStore.reserve`, one save per block of
  seq values). A run restarted after a crash continues after the
  reservation, so ``(source, seq)`` names one event for the life of the
  directory, whether or not the source can resume. After a crash the
  numbers may jump; after a clean shutdown they continue exactly.

A source whose saved transport differs from its config starts afresh (with
a warning): its ids mean something else. A source that no longer runs
keeps its saved place (a config edit, a shard, a discovered source that
comes back) for :data:`FORGET_AFTER` seconds, and at most
:data:`MAX_DEPARTED` such places are kept, the most recently departed: the
file stays bounded however many sources discovery brings and takes away.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import trio

from ..transport import ResumeState
from .sink_set import SinkSet

__all__ = ["Checkpoints", "StateStore"]

_log = logging.getLogger("mux.state")

#: Seconds between two checkpoints of every source's resume state.
CHECKPOINT_INTERVAL = 1.0
#: Every this many checkpoints, one takes every source's state, moved or not
#: (:class:`Checkpoints`; the others take only the sources that moved).
FULL_EVERY = 30

#: The first block of seq values reserved per source; a source that uses up
#: its block within :data:`_RESERVE_FAST` seconds gets a block twice as big
#: (up to :data:`_RESERVE_MAX`), so a fast source saves a few times a second
#: at most, and a crash skips at most one block of numbers.
_RESERVE_MIN = 1_000
_RESERVE_MAX = 10_000_000
_RESERVE_FAST = 5.0

#: Seconds a source that no longer runs keeps its saved place (one day).
FORGET_AFTER = 24 * 3600.0
#: The most places of sources that no longer run kept in the file.
MAX_DEPARTED = 1_000

_FILE_NAME = "mux-state.json"
_VERSION = 1


class _SavedSource(msgspec.Struct, forbid_unknown_fields=False):
    transport: str
    seq: int = 0
    last_id: str | None = None
    cursor: Any = None
    #: The highest seq that may have been handed out (reserved before use).
    reserved: int = 0
    #: When (wall-clock) a checkpoint first found the source no longer running.
    left_at: float | None = None


class _SavedRun(msgspec.Struct, forbid_unknown_fields=False):
    version: int
    sources: dict[str, _SavedSource]


class _Reservation:
    __slots__ = ("at", "block")

    def __init__(self) -> None:
        self.block = _RESERVE_MIN
        self.at = -float("inf")


class StateStore:
    """The resume states of one run's sources, kept in ``directory``."""

    def __init__(
        self,
        directory: str,
        *,
        forget_after: float = FORGET_AFTER,
        max_departed: int = MAX_DEPARTED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._forget_after = forget_after
        self._max_departed = max_departed
        self._clock = clock
        self.directory = os.path.abspath(os.path.expanduser(directory))
        self.path = os.path.join(self.directory, _FILE_NAME)
        self._saved: dict[str, _SavedSource] = {}
        self._last_written: bytes | None = None
        self._lock = trio.Lock()
        self._reservations: dict[str, _Reservation] = {}
        #: Reservations waiting for the next write: (transport, reserved) per source.
        self._wanted: dict[str, tuple[str, int]] = {}

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

    def resume_for(self, source: str, transport: str) -> ResumeState:
        """The saved resume state of ``source`` (a fresh one when there is none).

        Its ``seq`` continues after the highest seq ever reserved, and its
        ``seq_reserved`` makes the first event wait for a new reservation.
        """
        saved = self._saved.get(source)
        if saved is None:
            return ResumeState(seq_reserved=0)
        if saved.left_at is not None:
            self._saved[source] = msgspec.structs.replace(saved, left_at=None)
        high = max(saved.seq, saved.reserved)
        if saved.transport != transport:
            _log.warning(
                "source %r: saved state is for transport %r, not %r; starting afresh",
                source,
                saved.transport,
                transport,
            )
            # Positions mean nothing to the new transport; seq still goes on.
            return ResumeState(seq=high, seq_reserved=high)
        return ResumeState(last_id=saved.last_id, cursor=saved.cursor, seq=high, seq_reserved=high)

    def covered_seq(self, source: str) -> int | None:
        """The seq up to which ``source``'s saved position covers its records
        (records after it may come again after a crash), or None."""
        saved = self._saved.get(source)
        return None if saved is None else saved.seq

    @staticmethod
    def snapshot(
        states: Mapping[str, tuple[str, ResumeState]], *, final: bool = False
    ) -> dict[str, _SavedSource]:
        """Copy the live states now (a later save writes exactly these).

        ``final``: taken after every source stopped and every sink closed, so
        no seq past ``resume.seq`` was handed out: the reservation shrinks to
        it, and the next run's numbers continue without a jump.
        """
        return {
            name: _SavedSource(
                transport,
                resume.seq,
                resume.last_id,
                _jsonable(resume.cursor),
                resume.seq if final else max(resume.seq, resume.seq_reserved or 0),
            )
            for name, (transport, resume) in states.items()
        }

    async def save(
        self, snapshot: dict[str, _SavedSource], *, final: bool = False, partial: bool = False
    ) -> None:
        """Write a snapshot (in a worker thread), after any save in progress.

        ``partial``: the snapshot holds only the sources that moved; the
        others keep what the file holds, and none is taken for departed.
        """
        async with self._lock:
            merged = dict(self._saved)
            for name, source in snapshot.items():
                old = merged.get(name)
                if not final and old is not None and old.transport == source.transport:
                    # A reservation saved meanwhile stays.
                    source.reserved = max(source.reserved, old.reserved)
                merged[name] = source
            if not partial:
                self._forget_departed(merged, running=snapshot.keys())
            await trio.to_thread.run_sync(self._write, merged)

    def _forget_departed(self, merged: dict[str, _SavedSource], running: Any) -> None:
        """Mark the sources that no longer run, and forget the long gone."""
        now = self._clock()
        departed = []
        for name, source in list(merged.items()):
            if name in running:
                continue
            if source.left_at is None:
                merged[name] = source = msgspec.structs.replace(source, left_at=now)
            assert source.left_at is not None
            if now - source.left_at > self._forget_after:
                del merged[name]
            else:
                departed.append((source.left_at, name))
        if len(departed) > self._max_departed:
            departed.sort()
            for _, name in departed[: len(departed) - self._max_departed]:
                del merged[name]

    async def reserve(self, source: str, transport: str, resume: ResumeState, upto: int) -> None:
        """Save a reservation of seq values past ``upto`` for ``source``.

        Returns once it is on disk; then ``resume.seq_reserved`` says how far
        the source may number its events.
        """
        reservation = self._reservations.setdefault(source, _Reservation())
        now = trio.current_time()
        if now - reservation.at < _RESERVE_FAST:
            reservation.block = min(reservation.block * 2, _RESERVE_MAX)
        reservation.at = now
        limit = upto + reservation.block
        # Group commit: every reservation asked for while a write is under way
        # goes in the next write together (thousands of sources starting at
        # once: a few writes of the file, not one each).
        wanted = self._wanted.get(source)
        if wanted is None or wanted[1] < limit:
            self._wanted[source] = (transport, limit)
        async with self._lock:
            saved = self._saved.get(source)  # what the file holds now
            if saved is None or saved.transport != transport or saved.reserved < limit:
                taken, self._wanted = self._wanted, {}
                merged = dict(self._saved)
                for name, (kind, upper) in taken.items():
                    old = merged.get(name)
                    if old is not None and old.transport == kind:
                        merged[name] = msgspec.structs.replace(
                            old, reserved=max(old.reserved, upper)
                        )
                    else:
                        # Nothing saved yet for it: the position is the start.
                        merged[name] = _SavedSource(kind, 0, None, None, upper)
                try:
                    await trio.to_thread.run_sync(self._write, merged)
                except BaseException:
                    for name, want in taken.items():  # for the next write
                        if self._wanted.get(name, (None, -1))[1] < want[1]:
                            self._wanted[name] = want
                    raise
        resume.seq_reserved = max(resume.seq_reserved or 0, limit)

    def _write(self, merged: dict[str, _SavedSource]) -> None:
        """Write ``merged`` atomically (blocking: runs in a worker thread).

        Sources of the old file that are not in it are kept, so a source
        left out of one run (a shard, a config edit) keeps its place.
        """
        data = msgspec.json.encode(_SavedRun(_VERSION, merged))
        if data == self._last_written:
            self._saved = merged
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
    """Saves ``states()`` into ``store`` every :data:`CHECKPOINT_INTERVAL` seconds.

    With ``moved`` (the states of the sources that handed over a batch since
    the last call, e.g. :meth:`FanOut.take_moved`), a checkpoint takes only
    those: one where nothing moved costs nothing (no state copied, no sink
    settled, no write), and one where some did copies only theirs and
    rewrites the file with them. Every :data:`FULL_EVERY` checkpoints takes
    every state (``states()``) all the same: a transport may move its
    position outside a batch (a cursor, an SSE id without data), and the
    sources no longer running are found then.
    """

    def __init__(
        self,
        store: StateStore,
        sinks: SinkSet,
        states: Callable[[], dict[str, tuple[str, ResumeState]]],
        moved: Callable[[], dict[str, tuple[str, ResumeState]]] | None = None,
    ) -> None:
        self._store = store
        self._sinks = sinks
        self._states = states
        self._moved = moved
        self._count = 0

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
        full = self._moved is None or self._count % FULL_EVERY == 0
        self._count += 1
        if full:
            if self._moved is not None:
                self._moved()  # every state is taken below
            states = self._states()
        else:
            assert self._moved is not None
            states = self._moved()
            if not states:
                return True  # nothing moved since the last checkpoint took it
        snapshot = self._store.snapshot(states)
        if not await self._sinks.settle(blocking_only=True):
            return False
        await self._store.save(snapshot, partial=not full)
        return True
