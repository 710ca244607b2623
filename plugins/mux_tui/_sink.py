"""The ``tui`` sink: a live table of the sources in the terminal, for SSH sessions.

The view is a rich ``Live`` refreshed by a trio background task
(``auto_refresh=False``: no rich thread touches the console behind trio's
back). The table is a pure function of the sink's state (:meth:`TuiSink.render`),
so tests draw it on a recording console.

It draws on **stdout**: the table is the output the user asked for, while
mux's log goes to stderr, so ``mux run cfg.toml 2>mux.log`` keeps the view
clean. When stdout is not a terminal, rich prints nothing while running and
the final table once at the end.

On a real terminal (stdin is the terminal the view is drawn on) the view
reads keys (``_keys.py``): arrows and PgUp/PgDn scroll, ``/`` and ``s``
filter, ``r`` restarts the sources that gave up, space and ``+``/``-`` pace
a replay; read in cbreak mode without blocking trio (``_terminal.py``).
While the view owns the terminal it fits the terminal's height, and mux's
log lines bound for that terminal are shown below the table instead of
tearing it (``_log.py``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from mux_core import Sink
from mux_core.options import positive
from mux_core.records import Batch
from mux_core.sink import SinkContext
from mux_core.views import ViewClock, escape_controls

from ._browse import Browse
from ._clock import ReplayClock, Timeline
from ._keys import RestartKey, ViewKeys
from ._log import HeldLog
from ._model import TuiModel
from ._render import CAPTION, DEMO_CAPTION, LOG_LINES, TuiView
from ._terminal import KeySource, TerminalMode, TtyKeys, keyboard_fd

# rich is imported when a view is made, trio where it is used: loading the
# plugin (every mux command does) pays for neither.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live

__all__ = ["TuiOptions", "TuiSink"]


#: The config name ``mux demo`` runs under (mux_demo.monitor).
DEMO_CONFIG_NAME = "mux-demo"

#: ``SinkContext.restart_source`` of a run that cannot restart (``mux replay``).
_NO_RESTART = attrs.fields(SinkContext).restart_source.default


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
    width: int = attrs.field(default=40, validator=positive())
    #: Redraws per second.
    refresh_per_second: float = attrs.field(default=4.0, validator=positive())


class TuiSink(Sink):
    """Shows every source's state, rate, last-event age and sparklines, live."""

    Options: ClassVar[type[TuiOptions]] = TuiOptions
    #: Every event reaches the sparklines (a deque append each); if the view
    #: ever falls a whole buffer behind, the oldest are dropped and counted.
    default_overflow: ClassVar[str] = "drop_oldest"
    default_buffer: ClassVar[int] = 100_000
    default_on_error: ClassVar[str] = "drop"
    #: ``mux replay`` into the view plays at the recorded pace (``--speed``
    #: and the ``+``/``-`` keys change it), so the run is seen as it went.
    default_replay_speed: ClassVar[float] = 1.0

    def __init__(
        self,
        options: TuiOptions,
        context: SinkContext,
        *,
        console: Console | None = None,
        clock: Callable[[], float] = time.time,
        keys: KeySource | None = None,
    ) -> None:
        from rich.console import Console

        self.options = options
        self.context = context
        #: Where the view is drawn; tests pass ``Console(record=True, ...)``.
        self.console = console if console is not None else Console()
        #: Wall-clock time, comparable with ``Event.received_at`` / ``Status.at``;
        #: during a replay the recording's time at the replay's pace (``_clock.py``).
        self.replay = context.replay
        self.clock: ViewClock | ReplayClock = (
            ViewClock(clock) if self.replay is None else ReplayClock(clock, self.replay)
        )
        #: Several recordings replayed side by side: each on its own time (``_clock.py``).
        self.timeline = Timeline(context.sources) if len(context.recordings) > 1 else None
        self.model = TuiModel(plot=tuple(options.plot), width=options.width)
        for source in context.sources:
            self.model.add_source(source.name, source.transport, stale_after=source.stale_after)
        #: Where keys come from; tests pass a fake. By default stdin, when it
        #: is the terminal the view is drawn on.
        self.keys = keys
        #: The filters, the scroll position and the selected row.
        self.browse = Browse()
        #: What ``r`` does (and the caption lines it adds while keys are read);
        #: None in a run that cannot restart (``mux replay``).
        self.restart_key = (
            RestartKey(self.model, context.restart_source)
            if context.restart_source is not _NO_RESTART
            else None
        )
        #: Every key, handed on.
        self.view_keys = ViewKeys(
            self.browse,
            restart=self.restart_key,
            replay=self.replay,
            labels=lambda: list(self.model.counts(self.clock())),
        )
        #: mux's log lines bound for the view's terminal, while the view owns it.
        self.held_log = HeldLog()
        self._reading_keys = False
        self._live: Live | None = None
        self._terminal: TerminalMode | None = None

    def render(self, now: float | None = None) -> TuiView:
        """The view of the current state, as of ``now`` (default: the clock).

        A rich renderable; it fits itself to the console's width when drawn.
        """
        when = self.clock() if now is None else now
        name = self.context.config_name
        title = f"mux · {name}" if name else "mux"
        caption = DEMO_CAPTION if name == DEMO_CONFIG_NAME else CAPTION
        help_line = ""
        if self._reading_keys:
            help_line = self.view_keys.help_line()
            if self.restart_key is not None:
                caption = "\n".join([caption, *self.restart_key.caption_lines()])
        live = self._live is not None and self.console.is_terminal
        return TuiView(
            self.model,
            when,
            title=title,
            caption=caption,
            browse=self.browse,
            status=self._pace(),
            help_line=help_line,
            logs=self.held_log.newest(LOG_LINES) if live else (),
            fit=live,
        )

    def _pace(self) -> str:
        """A replay's pace for the summary line; "" in a live run."""
        replay = self.replay
        if replay is None:
            return ""
        if replay.paused:
            return "replay paused (space: resume)"
        speed = replay.speed
        if speed <= 0 or math.isinf(speed):
            return "replay as fast as it goes"
        return f"replay at {speed:g}x"

    async def open(self) -> None:
        from rich.live import Live

        terminal = self.console.is_terminal
        # On a terminal the live region is erased when the view stops and the
        # final table printed once below whatever is there: a Ctrl-C that
        # moved the cursor cannot leave a half-erased copy (a second title).
        self._live = Live(
            self.render(), console=self.console, auto_refresh=False, transient=terminal
        )
        keys = self.keys
        if terminal:
            fd = keyboard_fd(sys.stdin, self.console.file) if keys is None else None
            self._terminal = TerminalMode.enter(sys.stdin, keys=fd is not None)
            if fd is not None and self._terminal is not None:
                keys = TtyKeys(fd)
            self.held_log.hold(self.console.file)
        try:
            self._live.start()
            self.context.start_background(self._refresh_forever)
            if keys is not None or self._terminal is not None:
                self.context.start_background(lambda: self._read_keys(keys))
        except BaseException:
            self._restore_terminal()
            self._release_log()
            raise
        self._reading_keys = keys is not None

    async def write(self, batch: Batch) -> None:
        if self.timeline is not None:
            batch = self.timeline.align(batch)
        self.model.ingest(batch)
        self.clock.saw(batch)

    async def aclose(self) -> None:
        live, self._live = self._live, None
        self._reading_keys = False  # the final table offers no key
        if live is None:
            self._restore_terminal()
            self._release_log()
            return
        final = self.render()
        live.update(final, refresh=False)
        # A file or a pipe gets the final table once, from Live itself; a
        # terminal's live region is erased, the log lines held printed, then
        # the final table.
        live.stop()
        self._release_log()
        if live.transient:
            self.console.print(final)
        self._restore_terminal()

    def _release_log(self) -> None:
        from rich.text import Text

        for line in self.held_log.release():
            self.console.print(Text(escape_controls(line)), soft_wrap=True)

    def press(self, keys: str) -> None:
        """Keys typed in the view (see ``_keys.py``)."""
        self.view_keys.press(keys)
        if self._live is not None:
            self._live.update(self.render(), refresh=True)

    async def _read_keys(self, keys: KeySource | None) -> None:
        """Hand typed keys to :meth:`press` until the view closes; restore the
        terminal however this ends (closed, failed, cancelled)."""
        import trio

        try:
            if keys is None:
                await trio.sleep_forever()  # only the ^C echo to undo, at the end
                return
            while self._live is not None:
                typed = await keys.read()
                if not typed:
                    self._reading_keys = False
                    await trio.sleep_forever()
                self.press(typed.decode("utf-8", errors="replace"))
        finally:
            self._restore_terminal()

    def _restore_terminal(self) -> None:
        terminal, self._terminal = self._terminal, None
        if terminal is not None:
            terminal.restore()

    async def _refresh_forever(self) -> None:
        import trio

        period = 1.0 / self.options.refresh_per_second
        try:
            while self._live is not None:
                self._live.update(self.render(), refresh=True)
                await trio.sleep(period)
        finally:
            self._release_log()  # a cancelled view gives the log back too
