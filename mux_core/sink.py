"""What a sink sees: the :class:`Sink` protocol, its context, and its channel.

Each sink reads its own bounded :class:`SinkChannel`, so a slow sink never
slows another one. What happens when a sink falls behind is its overflow
policy:

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

    class PrintSink:
        Options = PrintOptions
        default_overflow = "drop_oldest"     # optional, else "block"
        default_on_error = "drop"            # optional, else "stop"

        def __init__(self, options: PrintOptions, context: SinkContext) -> None: ...
        async def open(self) -> None: ...           # optional
        async def write(self, batch: Batch) -> None: ...
        async def aclose(self) -> None: ...         # optional; flush here
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import attrs

from .records import Batch
from .retry import RetryPolicy

__all__ = ["DEFAULT_BUFFER_BYTES", "Overflow", "Sink", "SinkContext", "SourceInfo"]


class Overflow(enum.StrEnum):
    """A sink's overflow policy (see the module docstring)."""

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    DROP_NEWEST = "drop_newest"
    LATEST = "latest"


@runtime_checkable
class Sink(Protocol):
    """A sink plugin class. Registered with ``register("name", cls)``.

    ``Options`` is an attrs class whose fields are the config keys of a
    ``[[sinks]]`` table (besides ``type``, ``name``, ``overflow``, ``buffer``
    and ``on_error``). It may define a classmethod ``check(options)`` raising
    ``ValueError`` for problems ``mux check`` can find without running
    (an unwritable path).
    """

    Options: ClassVar[type[Any]]

    def __init__(self, options: Any, context: SinkContext) -> None: ...

    async def write(self, batch: Batch) -> None:
        """Take one batch of records, in order. Raising follows ``on_error``."""
        ...


@attrs.frozen
class SourceInfo:
    """A configured source, as sinks may list it before any record arrives."""

    name: str
    transport: str


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
