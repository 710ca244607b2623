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
import types
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

import attrs

from .records import Batch
from .retry import RetryPolicy

__all__ = ["DEFAULT_BUFFER_BYTES", "Overflow", "Sink", "SinkContext", "SourceInfo", "sink_member"]


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


#: A sink channel's default bound in bytes (``buffer_bytes``): big events and a
#: slow disk must not grow memory without bound (bounded in bytes).
DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024
