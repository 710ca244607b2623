r"""The path of a record from a source's task into every sink's channel.

::

    Session.emit --> quality tracker --> processor chain --> fan-out --> SinkChannel (each sink)

:meth:`FanOut.sender` makes the function a source's records go through, in
the source's own task: its :class:`~mux_core._run.quality.QualityTracker`
sees them as they came, its :class:`~mux_core._run.chain.ProcessorChain`
(as it is at each batch: a reload may change it) passes on what it keeps,
and the batch is offered to every live sink's channel. No task sits in
between, and nothing waits unless a ``block`` sink is full; order per source
holds end to end.

Scheduling is decided here, for every transport: a small batch that woke a
sink lets that sink run before the source's task goes on
(:func:`let_woken_sinks_run`). See docs/architecture.md, Scheduling.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import msgspec
import trio

from .._config.render import mask
from ..records import RECORD_OVERHEAD, Record, Status, batch_bytes
from .fail_on import FailOn
from .quality_feed import QualityFeed
from .sink_set import SinkRunner, SinkSet

if TYPE_CHECKING:
    from .source_set import SourceRunner

__all__ = ["FanOut", "SourceSend", "let_woken_sinks_run"]

#: A source's records on their way to the sinks: a batch in, whether it woke a sink out.
SourceSend = Callable[[Sequence[Record]], Awaitable[bool]]

#: A batch with fewer payload bytes than this means records trickle in and
#: latency matters more than CPU: when it woke a sink, that sink runs before
#: the source's task goes back to its socket. Big batches (high rates) never
#: pay for it, and of many sources read in one round of trio's loop only the
#: first, which woke the sink, does.
SMALL_BATCH_BYTES = 1024


class FanOut:
    """Hands every batch of every source to every live sink.

    ``fail_on`` (``mux run --fail-on``) sees every batch before the sinks do.
    """

    def __init__(self, sinks: SinkSet, quality: QualityFeed, fail_on: FailOn | None) -> None:
        self._sinks = sinks
        self._quality = quality
        self._fail_on = fail_on
        #: The sources that handed over a batch since the last :meth:`take_moved`:
        #: their resume state may have moved (what a ``--state`` checkpoint saves).
        self.moved: dict[str, SourceRunner] = {}

    def take_moved(self) -> dict[str, SourceRunner]:
        """The sources that handed over a batch since the last call (then none)."""
        moved, self.moved = self.moved, {}
        return moved

    def sender(self, runner: SourceRunner) -> SourceSend:
        """What a source's records go through: its quality tracker, its processors,
        then the sinks. The source's last Quality goes right before its terminal
        Status, which stays the source's last record (docs/architecture.md,
        Guarantees the code relies on). A status detail is masked with the
        source's secrets first: a transport's error may quote an option."""
        # A bound method of a small slotted object rather than a closure: six
        # cells and a function a source were ~0.35 KB more (100,000 sources).
        return _SourceSender(self, runner).send

    async def send(self, batch: Sequence[Record]) -> bool:
        """Hand one batch, past the processors already, to every live sink.

        Without waiting when every sink has room (the common case: no
        checkpoint, no cancel scope on a record's path); otherwise
        :meth:`_send_waiting` takes over from the first sink that is full.
        Returns whether the batch woke a sink that was waiting for records
        (what ``Session.emit`` tells its transport); a small batch that did
        lets that sink run before the caller goes on.
        """
        if self._fail_on is not None:
            self._fail_on.see(batch)
        sinks = self._sinks.live
        woke = False
        for index, runner in enumerate(sinks):
            channel = runner.channel
            waiting = channel.reader_waiting
            if not channel.offer(batch):
                await self._send_waiting(batch, sinks[index:])
                return woke
            woke = woke or waiting
        if woke and batch_bytes(batch) < SMALL_BATCH_BYTES + RECORD_OVERHEAD * len(batch):
            await let_woken_sinks_run()
        return woke

    async def _send_waiting(self, batch: Sequence[Record], sinks: Sequence[SinkRunner]) -> None:
        """The rest of a hand-over, waiting for room where a ``block`` sink is full.

        Shielded: once received, a batch reaches every sink even when the
        source is being stopped while a ``block`` sink makes it wait (a
        second Ctrl-C is the way out of a sink that never drains).
        """
        with trio.CancelScope(shield=True):
            for runner in sinks:
                try:
                    await runner.channel.put(batch)
                except trio.ClosedResourceError:  # the sink failed, was dropped or removed
                    self._sinks.drop(runner)

    async def delivered(self) -> bool:
        """Wait until every live sink holds durably every record put so far
        (``Session.delivered``); False if a sink failed or left meanwhile."""
        return await self._sinks.settle()


def _masked(record: Record, secrets: frozenset[str]) -> Record:
    if type(record) is Status and record.detail:
        return msgspec.structs.replace(record, detail=mask(record.detail, secrets))
    return record


async def let_woken_sinks_run() -> None:
    """Yield twice, so every sink task woken by the last batch runs before this one.

    trio runs each batch of ready tasks in random order: one yield puts this
    task in the same batch as the sinks it woke (half the time ahead of them),
    the second in the batch after. Without this the sinks run only after the
    transport has re-armed its socket (a failed recv, an epoll update) and trio
    has gone round its loop once more. Measured at 1,000 events/s through SSE
    (benchmarks/RESULTS.md): latency added p50 ~70 -> ~55 us, p99 ~130 -> ~80 us.
    Only when a sink was woken: with 200 sources at 50 events/s each, yielding
    after every small batch cost ~10 us of CPU per event (+17%); gated, the CPU
    is that of no yield at all. Shielded: a stop is seen at the transport's next
    checkpoint, not in the middle of a hand-over.
    """
    await trio.lowlevel.cancel_shielded_checkpoint()
    await trio.lowlevel.cancel_shielded_checkpoint()


class _SourceSender:
    """One source's way into the fan-out (see :meth:`FanOut.sender`)."""

    __slots__ = ("_fan_out", "_name", "_quality", "_runner", "_secrets", "_send")

    def __init__(self, fan_out: FanOut, runner: SourceRunner) -> None:
        self._fan_out = fan_out
        self._runner = runner
        self._name = runner.name
        self._quality = fan_out._quality.tracker(runner.name)
        self._send = fan_out.send
        self._secrets = runner.config.secrets

    async def send(self, batch: Sequence[Record]) -> bool:
        try:
            secrets = self._secrets
            if secrets and batch and type(batch[0]) is Status:
                batch = [_masked(record, secrets) for record in batch]
            quality = self._quality
            if quality is not None:
                quality.observe(batch)
            chain = self._runner.chain
            if chain is not None:
                batch = chain.run(batch)
                if not batch:
                    return False
            if quality is not None and quality.ended_at is not None and not quality.reported_end:
                batch = self._fan_out._quality.with_last(quality, batch)
            return await self._send(batch)
        finally:
            # Noted once the hand-over is over: Session.emit moves the
            # resume state right after this returns, with no await in
            # between, so a checkpoint that takes this source's state
            # after taking the note sees the move (state.Checkpoints).
            self._fan_out.moved[self._name] = self._runner
