"""A source's processors in file order, and their timer: run in the source's own task.

What a processor is and how the chain runs it is described in :mod:`mux_core.processor`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from ..errors import PluginError
from ..processor import ProcessorContext, is_timed
from ..records import (
    Alert,
    Batch,
    Record,
    Severity,
    Status,
)
from . import Send

if TYPE_CHECKING:
    from .._config import ProcessorConfig
    from .._plugins import PluginManager

__all__ = ["ProcessorChain", "build_chain"]

_log = logging.getLogger("mux.processors")

#: The rule of the alert a failing processor raises.
PROCESSOR_ERROR_RULE = "processor_error"


class _Entry:
    __slots__ = ("name", "process", "processor", "tick")

    def __init__(self, name: str, processor: Any) -> None:
        self.name = name
        self.processor = processor
        self.process: Callable[[Batch], Batch] = processor.process
        self.tick: Callable[[float], Batch] | None = processor.tick if is_timed(processor) else None


class ProcessorChain:
    """The processors of one source, in file order, and their timer.

    ``run(batch)`` passes a batch through every processor and returns what
    is left (possibly empty); ``tick(now)`` runs the timed processors;
    ``run_timers(deliver)`` is the timer task (see the module docstring).
    """

    def __init__(self, source: str, transport: str, processors: Sequence[tuple[str, Any]]) -> None:
        self.source = source
        self.transport = transport
        self._entries = [_Entry(name, processor) for name, processor in processors]
        self._timed = [e for e in self._entries if e.tick is not None]
        self._timer_scope: trio.CancelScope | None = None
        #: True once a terminal Status of the source went through: nothing follows it.
        self.ended = False

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def names(self) -> list[str]:
        """The processor types still in the chain, in order."""
        return [entry.name for entry in self._entries]

    @property
    def timed(self) -> bool:
        """Whether a processor of the chain has a timer (``tick``)."""
        return bool(self._timed)

    def run(self, batch: Batch) -> Batch:
        """``batch`` through every processor; returns what is left to fan out.

        A terminal Status (ended, failed, stopped, ...) stays the last record
        of its source whatever the processors do (docs/architecture.md,
        Guarantees the code relies on): one dropped is put back, one followed
        by a processor's records is moved after them, and the timers stop.
        """
        last = batch[-1] if batch else None
        terminal = last if type(last) is Status and last.state.terminal else None
        batch = self._run_from(0, batch)
        if terminal is not None:
            self.ended = True
            if self._timer_scope is not None:
                self._timer_scope.cancel()
            if not batch or batch[-1] is not terminal:
                batch = [*(r for r in batch if r is not terminal), terminal]
        elif self._timed:
            self._rearm()
        return batch

    def _run_from(self, start: int, batch: Batch) -> Batch:
        index = start
        while index < len(self._entries):
            entry = self._entries[index]
            try:
                batch = entry.process(batch)
            except Exception as exc:
                batch = [*batch, self._remove(entry, "process", exc)]
                continue  # the entry is gone: the same index is the next one
            if not batch:
                return batch
            index += 1
        return batch

    def next_deadline(self) -> float:
        """The earliest deadline of the timed processors (trio clock; inf = none)."""
        earliest = math.inf
        for entry in self._timed:
            # A processor that does not inherit Processor may define tick alone:
            # then Processor's default (nothing due) applies.
            next_deadline = getattr(entry.processor, "next_deadline", None)
            deadline = None if next_deadline is None else next_deadline()
            if deadline is not None and deadline < earliest:
                earliest = deadline
        return earliest

    def tick(self, now: float) -> list[Record]:
        """Call ``tick(now)`` on each timed processor; what they return goes through
        the processors after them."""
        out: list[Record] = []
        for entry in list(self._timed):
            if entry not in self._entries or entry.tick is None:
                continue
            try:
                produced = entry.tick(now)
            except Exception as exc:
                out.append(self._remove(entry, "tick", exc))
                continue
            if produced:
                position = self._entries.index(entry) + 1
                out.extend(self._run_from(position, produced))
        return out

    async def run_timers(self, deliver: Send) -> None:
        """The timer task: sleep until the earliest deadline, tick, deliver; until cancelled."""
        while not self.ended:
            with trio.CancelScope(deadline=self.next_deadline()) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            if self.ended:
                return
            produced = self.tick(trio.current_time())
            if produced:
                await deliver(produced)

    def _rearm(self) -> None:
        scope = self._timer_scope
        if scope is not None:
            deadline = self.next_deadline()
            if deadline < scope.deadline:
                scope.deadline = deadline

    def _remove(self, entry: _Entry, where: str, exc: Exception) -> Alert:
        _log.error(
            "processor %r failed on source %r (in %s): %r; removed from this source's chain, "
            "the source goes on",
            entry.name,
            self.source,
            where,
            exc,
            exc_info=exc,
        )
        self._entries = [e for e in self._entries if e is not entry]
        self._timed = [e for e in self._timed if e is not entry]
        message = f"processor {entry.name!r} failed ({type(exc).__name__}: {exc}); removed"
        return Alert(
            self.source,
            self.transport,
            PROCESSOR_ERROR_RULE,
            Severity.WARNING,
            message,
            None,
            time.time(),
        )


def build_chain(
    processors: Sequence[ProcessorConfig], plugins: PluginManager, source: str, transport: str
) -> ProcessorChain | None:
    """One instance of each ``[[processors]]`` table that applies to ``source``, in
    file order (None: none applies). A processor that cannot be built is a
    PluginError naming it and the source."""
    built = []
    for proc in processors:
        if not proc.applies_to(source):
            continue
        cls = plugins.processors()[proc.type].cls
        context = ProcessorContext(source, transport, proc.type)
        try:
            built.append((proc.type, cls(proc.options, context)))
        except Exception as exc:
            raise PluginError(
                f"processor {proc.type!r} (line {proc.line}) could not be created "
                f"for source {source!r}: {exc}"
            ) from exc
    return ProcessorChain(source, transport, built) if built else None
