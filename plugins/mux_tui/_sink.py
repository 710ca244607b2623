"""The ``tui`` sink: a live table of the sources in the terminal, for SSH sessions.

The view is a rich ``Live`` refreshed by a trio background task
(``auto_refresh=False``: no rich thread touches the console behind trio's
back). The table is a pure function of the sink's state (:meth:`TuiSink.render`),
so tests draw it on a recording console.

It draws on **stdout**: the table is the output the user asked for, while
mux's log goes to stderr, so ``mux run cfg.toml 2>mux.log`` keeps the view
clean. When stdout is not a terminal, rich prints nothing while running and
the final table once at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import trio
from rich.console import Console
from rich.live import Live

from mux_core.events import Batch
from mux_core.sinks import SinkContext

from ._model import TuiModel, ViewClock
from ._render import TuiView

__all__ = ["TuiOptions", "TuiSink"]


def _positive(name: str) -> Callable[[Any, Any, Any], None]:
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")

    return check


def _plot_keys(_instance: Any, _attribute: Any, value: list[str]) -> None:
    for key in value:
        if not isinstance(key, str) or not key:
            raise ValueError(f"plot entries must be non-empty field names, got {key!r}")


@attrs.frozen(kw_only=True)
class TuiOptions:
    """The keys of a ``[[sinks]] type = "tui"`` table."""

    #: Keys of the events' data objects to draw as sparklines, e.g. ["loss", "lr"].
    plot: list[str] = attrs.field(factory=list, validator=_plot_keys)
    #: Points per sparkline (the newest ``width`` values are drawn).
    width: int = attrs.field(default=40, validator=_positive("width"))
    #: Redraws per second.
    refresh_per_second: float = attrs.field(default=4.0, validator=_positive("refresh_per_second"))


class TuiSink:
    """Shows every source's state, rate, last-event age and sparklines, live."""

    Options: ClassVar[type[TuiOptions]] = TuiOptions
    #: Every event reaches the sparklines (a deque append each); if the view
    #: ever falls a whole buffer behind, the oldest are dropped and counted.
    default_overflow: ClassVar[str] = "drop_oldest"
    default_buffer: ClassVar[int] = 100_000
    default_on_error: ClassVar[str] = "drop"

    def __init__(
        self,
        options: TuiOptions,
        context: SinkContext,
        *,
        console: Console | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.context = context
        #: Where the view is drawn; tests pass ``Console(record=True, ...)``.
        self.console = console if console is not None else Console()
        #: Wall-clock time, comparable with ``Event.received_at`` / ``Status.at``
        #: (the recording's time during a replay: see :class:`ViewClock`).
        self.clock = ViewClock(clock)
        self.model = TuiModel(plot=tuple(options.plot), width=options.width)
        for source in context.sources:
            self.model.add_source(source.name, source.transport)
        self._live: Live | None = None

    def render(self, now: float | None = None) -> TuiView:
        """The view of the current state, as of ``now`` (default: the clock).

        A rich renderable; it fits itself to the console's width when drawn.
        """
        when = self.clock() if now is None else now
        title = f"mux · {self.context.config_name}" if self.context.config_name else "mux"
        return TuiView(self.model, when, title=title)

    async def open(self) -> None:
        self._live = Live(self.render(), console=self.console, auto_refresh=False, transient=False)
        self._live.start()
        self.context.start_background(self._refresh_forever)

    async def write(self, batch: Batch) -> None:
        self.model.ingest(batch)
        self.clock.saw(batch)

    async def aclose(self) -> None:
        live, self._live = self._live, None
        if live is None:
            return
        # Not transient: stopping leaves the final table on a terminal, and
        # prints it once when the console is a file or a pipe.
        live.update(self.render(), refresh=False)
        live.stop()

    async def _refresh_forever(self) -> None:
        period = 1.0 / self.options.refresh_per_second
        while self._live is not None:
            self._live.update(self.render(), refresh=True)
            await trio.sleep(period)
