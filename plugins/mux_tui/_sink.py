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

import sys
import time
from collections.abc import Callable
from typing import IO, Any, ClassVar

import attrs
import trio
from rich.console import Console
from rich.live import Live

from mux_core.events import Batch
from mux_core.sinks import SinkContext

from ._model import TuiModel, ViewClock
from ._render import CAPTION, DEMO_CAPTION, TuiView

__all__ = ["TuiOptions", "TuiSink"]


#: The config name ``mux demo`` runs under (mux_core.demo_monitor).
DEMO_CONFIG_NAME = "mux-demo"


class _ControlEcho:
    """Keeps the terminal from echoing ``^C`` into the view while it runs.

    The tty echoes a Ctrl-C as two visible characters at the cursor, which
    sits at the end of the live table; turned off (ECHOCTL) while the view
    runs and restored when it closes.
    """

    def __init__(self, fd: int, saved: list[Any]) -> None:
        self.fd = fd
        self.saved = saved

    @classmethod
    def quiet(cls, stream: IO[str] | None) -> _ControlEcho | None:
        try:
            import termios

            if stream is None or not stream.isatty():
                return None
            fd = stream.fileno()
            saved = termios.tcgetattr(fd)
            changed = list(saved)
            changed[3] = changed[3] & ~termios.ECHOCTL
            termios.tcsetattr(fd, termios.TCSANOW, changed)
        except (ImportError, OSError, ValueError, AttributeError):
            return None
        return cls(fd, saved)

    def restore(self) -> None:
        try:
            import termios

            termios.tcsetattr(self.fd, termios.TCSANOW, self.saved)
        except (ImportError, OSError):
            pass


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
        self._echo: _ControlEcho | None = None

    def render(self, now: float | None = None) -> TuiView:
        """The view of the current state, as of ``now`` (default: the clock).

        A rich renderable; it fits itself to the console's width when drawn.
        """
        when = self.clock() if now is None else now
        name = self.context.config_name
        title = f"mux · {name}" if name else "mux"
        caption = DEMO_CAPTION if name == DEMO_CONFIG_NAME else CAPTION
        return TuiView(self.model, when, title=title, caption=caption)

    async def open(self) -> None:
        terminal = self.console.is_terminal
        # On a terminal the live region is erased when the view stops and the
        # final table printed once below whatever is there: a Ctrl-C that
        # moved the cursor cannot leave a half-erased copy (a second title).
        self._live = Live(
            self.render(), console=self.console, auto_refresh=False, transient=terminal
        )
        if terminal:
            self._echo = _ControlEcho.quiet(sys.stdin)
        self._live.start()
        self.context.start_background(self._refresh_forever)

    async def write(self, batch: Batch) -> None:
        self.model.ingest(batch)
        self.clock.saw(batch)

    async def aclose(self) -> None:
        live, self._live = self._live, None
        if live is None:
            return
        final = self.render()
        live.update(final, refresh=False)
        # A file or a pipe gets the final table once, from Live itself; a
        # terminal's live region is erased, and the final table printed.
        live.stop()
        if live.transient:
            self.console.print(final)
        echo, self._echo = self._echo, None
        if echo is not None:
            echo.restore()

    async def _refresh_forever(self) -> None:
        period = 1.0 / self.options.refresh_per_second
        while self._live is not None:
            self._live.update(self.render(), refresh=True)
            await trio.sleep(period)
