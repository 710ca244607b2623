"""What a sink is: the :class:`Sink` base class, its context, and its overflow policies.

Each sink reads its own bounded channel (``mux_core._run.channel``), so a
slow sink never slows another one. What happens when a sink falls behind is
its overflow policy:

``block``
    the source waits (backpressure up to the server); nothing is lost.
    The default for sinks that record (file, redis-stream).
``drop_oldest`` / ``drop_newest``
    the oldest buffered / the incoming events are dropped and counted.
    ``drop_oldest`` is the default of the views (qt, tui: with a buffer of
    100,000, since they draw every event) and of log, prometheus, webhook.
``latest``
    only the newest event per source is kept, plus every other record:
    what a sink that shows only "now" needs.

No policy ever drops a record that is not an Event (Status, Alert,
Quality): they are few, and a source's terminal state must reach every sink
as its last record.

A sink class looks like::

    class PrintSink(mux_core.Sink):
        Options = PrintOptions
        default_overflow = "drop_oldest"     # optional, else "block"

        async def write(self, batch: Batch) -> None:
            for record in batch:
                print(record)

Every other member is optional and documented on :class:`Sink` with what
the core does without it. Inheriting from :class:`Sink` is optional too: the
core looks each member up on the plugin's class and falls back to
:class:`Sink`'s.
"""

from __future__ import annotations

import enum
import math
import threading
import types
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

import attrs

from .records import Batch
from .retry import RetryPolicy

__all__ = [
    "DEFAULT_BUFFER_BYTES",
    "Overflow",
    "ReplayControl",
    "Sink",
    "SinkContext",
    "SourceInfo",
    "sink_member",
]


class Overflow(enum.StrEnum):
    """A sink's overflow policy (see the module docstring)."""

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    LATEST = "latest"


class Sink:
    """The base of a sink plugin class; register it with ``register("name", cls)``.

    Required: ``Options`` and :meth:`write`. Everything else has the default
    shown here, and the core calls a member only through these names, so a
    class that does not inherit from :class:`Sink` behaves exactly as if it
    did (the core falls back to this class's members).

    Lifecycle, in the sink's own task: ``__init__`` (no I/O: building a sink
    must not fail for a reason ``open`` could report better), ``open``, then
    ``write`` for each batch in order (with ``sync`` now and then when the run
    keeps ``--state``), and ``aclose`` once the channel is drained -- also
    after ``open`` or ``write`` raised (then shielded from cancellation).
    """

    #: An attrs class whose fields are the keys of a ``[[sinks]]`` table (besides
    #: ``type``, ``name``, ``overflow``, ``buffer``, ``buffer_bytes`` and
    #: ``on_error``). Validated before any I/O: unknown keys, wrong types and
    #: missing fields are config errors with file and line. It may define a
    #: classmethod ``check(options)`` raising ``ValueError`` for problems
    #: ``mux check`` can find without running (an unwritable path): the message
    #: is shown at the table's line (at the key's line when it starts with
    #: ``key:``).
    Options: ClassVar[type[Any]]

    #: The overflow policy when the table does not set ``overflow``: ``block`` for
    #: a sink that records (nothing lost; a slow disk slows the sources), a
    #: dropping policy for a view or a notifier (see the module docstring).
    default_overflow: ClassVar[str] = "block"
    #: The channel's size in records when the table does not set ``buffer``.
    default_buffer: ClassVar[int] = 10_000
    #: What a failure does when the table does not set ``on_error``: ``stop``
    #: the run, or ``drop`` this sink and go on.
    default_on_error: ClassVar[str] = "stop"
    #: The pace ``mux replay`` feeds this sink at when ``--speed`` is not given,
    #: in times the recorded pace: ``math.inf`` as fast as the sink takes it (a
    #: file, a database), ``1.0`` the recorded pace (a view someone watches).
    #: With several sinks the slowest wins.
    default_replay_speed: ClassVar[float] = math.inf

    def __init__(self, options: Any, context: SinkContext) -> None:
        #: The validated ``Options`` instance.
        self.options = options
        #: The run as this sink sees it.
        self.context = context

    async def open(self) -> None:
        """Acquire what the sink needs (a file, a connection, a window); default: nothing.

        Raising here is a failure while opening, handled by ``on_error``.
        ``context.start_background`` is available from here on.
        """

    async def write(self, batch: Batch) -> None:
        """Take one batch of records, in order; required.

        A sink's ``write`` is awaited before the next batch is handed over, and
        "written" (what ``Session.delivered`` waits for) means it returned.
        Raising is a failure handled by ``on_error``.
        """
        raise NotImplementedError(f"{type(self).__name__} must define write(batch)")

    async def sync(self) -> None:
        """Make everything written so far durable; default: nothing to do.

        With ``--state``, the core calls it before it saves a checkpoint: a
        saved resume position then never covers a record that is only in this
        sink's memory. A sink that buffers (the file sink) flushes here.
        """

    async def aclose(self) -> None:
        """Flush and release what ``open`` acquired; default: nothing.

        Called once, after the last ``write`` (the channel is drained), and
        also after a failure.
        """


def sink_member(sink: Any, name: str) -> Any:
    """Member ``name`` of a sink (or sink class), else :class:`Sink`'s default.

    The one place the core reads an optional member, so a plugin class that does
    not inherit from :class:`Sink` gets exactly the defaults documented here:
    ``sink_member(cls, "default_overflow")``, ``await sink_member(sink, "sync")()``.
    """
    found = getattr(sink, name, None)
    if found is not None:
        return found
    default = getattr(Sink, name)
    if isinstance(sink, type) or not callable(default):
        return default
    return types.MethodType(default, sink)


@attrs.frozen
class SourceInfo:
    """A configured source, as sinks may list it before any record arrives."""

    name: str
    transport: str
    #: The source's ``stale_after`` key: seconds without an event after which a
    #: connected source is stale; None: learned from its own rhythm
    #: (:class:`mux_core.views.StaleWatch`).
    stale_after: float | None = None
    #: The recording this source's records come from (``mux replay``, a sink's
    #: ``history``): its label, the file's stem (``"a"`` for ``runs/a.jsonl``);
    #: None for a live source. When several recordings are fed to one sink,
    #: each source's name is ``"<source>@<label>"`` (``"train@a"``, also in the
    #: records the sink receives), so runs of the same source stay apart.
    recording: str | None = None


@attrs.define
class SinkContext:
    """The run as a sink sees it."""

    #: This sink's name (its ``name`` key, or its type).
    name: str
    #: The config's name (file stem), e.g. for a window title.
    config_name: str
    #: The configured sources, in config order.
    sources: tuple[SourceInfo, ...]
    #: Ask the whole run to stop cleanly (a closed window does).
    request_stop: Callable[[str], None]
    #: Start a background task that lives until the sink is closed.
    start_background: Callable[[Callable[[], Awaitable[Any]]], None]
    #: Records this sink's channel dropped so far (updated by the core).
    dropped: Callable[[], int] = lambda: 0
    #: The run's ``[retry]`` policy, for a sink that retries a remote service
    #: (redis-stream) the way sources do.
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    #: Sources resumed from a saved state (``--state``): their saved ``seq``.
    #: Records with a higher seq may already be in the sink's output from
    #: before a crash (written, not yet checkpointed): a sink that can tell
    #: (the file sink reads its file's tail) skips those it already holds.
    resumed: Mapping[str, int] = attrs.field(factory=dict)
    #: Start source ``name`` again if it gave up (``max_retries_exceeded``),
    #: ``failed`` or ``ended``, from its resume state: a UI's "Restart" button.
    #: Safe from any thread; does nothing for a live source, or in a replay.
    restart_source: Callable[[str], None] = lambda _name: None
    #: The pace of the replay feeding this sink (``mux replay``), for a view's
    #: pause / faster / slower keys; None in a live run (``history`` included).
    replay: ReplayControl | None = None
    #: The labels of the recordings fed to this sink, in order (``mux replay
    #: a.jsonl b.jsonl``: ``("a", "b")``; a sink's ``history``); empty for a
    #: live sink without history. With two or more, source names carry
    #: ``"@<label>"`` (:attr:`SourceInfo.recording`).
    recordings: tuple[str, ...] = ()


class ReplayControl:
    """The pace of ``mux replay``: what a view's pause / faster / slower keys change.

    Every sink of a replay holds the same one (:attr:`SinkContext.replay`).
    :attr:`speed` is in times the recorded pace (from each record's
    ``received_at`` / ``at``): ``1.0`` as recorded, ``math.inf`` as fast as
    the sinks take them. :meth:`faster` and :meth:`slower` double and halve
    it between :attr:`MIN_SPEED` and :attr:`MAX_SPEED`; past the maximum
    comes ``inf``, and slower from ``inf`` comes back to the maximum. While
    :attr:`paused`, no record is fed; :meth:`resume` goes on from where the
    replay stood, at the same speed. Safe from any thread (a Qt button, a
    terminal's key task).
    """

    #: The slowest pace :meth:`slower` goes to.
    MIN_SPEED: ClassVar[float] = 1 / 64
    #: The fastest finite pace :meth:`faster` goes to (then ``inf``).
    MAX_SPEED: ClassVar[float] = 1024.0

    def __init__(self, speed: float = math.inf, *, paused: bool = False) -> None:
        self._lock = threading.Lock()
        self._speed = self._checked(speed)
        self._paused = paused
        self._watchers: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        return f"ReplayControl(speed={self._speed!r}, paused={self._paused!r})"

    @property
    def speed(self) -> float:
        """Times the recorded pace; ``math.inf``: as fast as the sinks take records."""
        return self._speed

    @speed.setter
    def speed(self, speed: float) -> None:
        """Set the pace; ``0`` or ``inf`` mean as fast as possible."""
        self._change(speed=self._checked(speed))

    @property
    def paused(self) -> bool:
        """Whether the replay is holding records back (:meth:`pause`)."""
        return self._paused

    def pause(self) -> None:
        """Hold the next record back until :meth:`resume`; what sinks hold stays."""
        self._change(paused=True)

    def resume(self) -> None:
        """Go on from where the replay stood, at :attr:`speed`."""
        self._change(paused=False)

    def faster(self) -> None:
        """Double the pace: up to :attr:`MAX_SPEED`, then as fast as possible."""
        speed = self._speed * 2
        self._change(speed=math.inf if speed > self.MAX_SPEED else speed)

    def slower(self) -> None:
        """Halve the pace, down to :attr:`MIN_SPEED` (from ``inf``: :attr:`MAX_SPEED`)."""
        speed = self.MAX_SPEED if math.isinf(self._speed) else self._speed / 2
        self._change(speed=max(speed, self.MIN_SPEED))

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every change, in the thread that made it.

        The replay wakes its pacing with it; a view may redraw its "paused"
        or "x4" mark. A callback must not block or raise.
        """
        with self._lock:
            self._watchers.append(callback)

    def _change(self, *, speed: float | None = None, paused: bool | None = None) -> None:
        with self._lock:
            if speed is not None:
                self._speed = speed
            if paused is not None:
                self._paused = paused
            watchers = list(self._watchers)
        for callback in watchers:
            callback()

    @staticmethod
    def _checked(speed: float) -> float:
        if not speed >= 0:  # NaN too
            raise ValueError(
                f"a replay speed is a number > 0 (0 or inf: as fast as possible), got {speed!r}"
            )
        return math.inf if speed == 0 else float(speed)


#: A sink channel's default bound in bytes (``buffer_bytes``): big events and a
#: slow disk must not grow memory without bound (bounded in bytes).
DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024
