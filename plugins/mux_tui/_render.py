"""Pure rendering of the terminal view: the model and a clock in, a rich table out.

Nothing here touches a terminal, so tests render to a recording console and
read the text back.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from mux_core.events import State, Status

from ._model import SourceRow, TuiModel

__all__ = [
    "CAPTION",
    "TuiView",
    "format_age",
    "render_plot_table",
    "render_table",
    "sparkline",
    "state_text",
]

CAPTION = "mux is a client: it never starts a server"

_BLOCKS = "▁▂▃▄▅▆▇█"

_GREEN = "bold green"
_AMBER = "bold dark_orange"
_RED = "bold red"
_GREY = "grey50"

_STATE_MIN_WIDTH = len("max_retries_exceeded")

_STYLES: dict[State, str] = {
    State.CONNECTED: _GREEN,
    State.CONNECTING: _AMBER,
    State.SERVER_UNAVAILABLE: _AMBER,
    State.DISCONNECTED: _AMBER,
    State.MAX_RETRIES_EXCEEDED: _RED,
    State.FAILED: _RED,
    State.STOPPED: _GREY,
    State.ENDED: _GREY,
}


def sparkline(values: Iterable[float]) -> str:
    """One block character per value, scaled between the values' min and max.

    A flat series is drawn at mid height, so "constant" does not read as "zero".
    """
    points = list(values)
    if not points:
        return ""
    low, high = min(points), max(points)
    if high == low:
        return _BLOCKS[3] * len(points)
    top = len(_BLOCKS) - 1
    scale = top / (high - low)
    return "".join(_BLOCKS[round((v - low) * scale)] for v in points)


def format_age(seconds: float) -> str:
    """A short "time since" text: ``0.4 s``, ``12 s``, ``3m 05s``, ``2h 01m``."""
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def state_text(status: Status | None, now: float) -> Text:
    """The coloured state cell: the state, then what happens next or why it stopped."""
    if status is None:
        return Text("waiting", style=_GREY)
    state = status.state
    text = Text(state.value, style=_STYLES.get(state, ""))
    if state in (State.SERVER_UNAVAILABLE, State.DISCONNECTED):
        if status.retry_in is not None:
            remaining = max(status.retry_in - (now - status.at), 0.0)
            text.append(f"\nretry in {remaining:.1f} s", style=_AMBER)
            text.append(f" · attempt {status.attempt}")
        else:
            text.append(f"\nattempt {status.attempt}")
        if status.detail:
            text.append(f"\n{status.detail}", style=_GREY)
    elif state is State.CONNECTING and status.attempt > 1:
        text.append(f"\nattempt {status.attempt}")
    elif state in (State.MAX_RETRIES_EXCEEDED, State.FAILED) and status.detail:
        text.append(f"\n{status.detail}", style="red")
    return text


def _number(value: float) -> str:
    return f"{value:.4g}"


class _SparkCell:
    """A sparkline and the newest value, drawing as many of the newest points as fit.

    Several plotted fields at ``width = 40`` do not fit an 80-column SSH
    window; cropping would cut off the newest points, so the cell shrinks
    from the oldest end instead.
    """

    def __init__(self, values: tuple[float, ...], latest: str) -> None:
        self.values = values
        self.latest = latest

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        full = len(self.latest) + 1 + len(self.values)
        return Measurement(min(len(self.values), 4), full).clamp(max_width=options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        label = " " + self.latest
        # the newest points first, then the value, then older points as room allows
        keep_label = width >= len(label) + 4
        room = max(width - (len(label) if keep_label else 0), 1)
        text = Text(sparkline(self.values[-room:]), style="cyan", no_wrap=True, overflow="crop")
        if keep_label:
            text.append(label)
        yield text


def _row_cells(row: SourceRow, plot: tuple[str, ...], now: float) -> list[RenderableType]:
    rate = row.rate(now)
    last = "—" if row.last_event_at is None else format_age(now - row.last_event_at) + " ago"
    cells: list[RenderableType] = [
        Text(row.name, style="bold"),
        row.transport,
        state_text(row.status, now),
        f"{rate:.1f}/s",
        last,
    ]
    for key in plot:
        series = row.series.get(key)
        if not series:
            cells.append(Text("—", style=_GREY))
            continue
        cells.append(_SparkCell(tuple(series), _number(series[-1])))
    return cells


def render_table(
    model: TuiModel,
    now: float,
    *,
    title: str = "mux",
    plot_width: int | None = None,
    plots: bool = True,
    caption: bool = True,
) -> Table:
    """One row per source, in config order; sparkline columns ``plot_width`` wide."""
    table = Table(
        title=title,
        caption=CAPTION if caption else None,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        expand=False,
    )
    table.add_column("source", no_wrap=True)
    table.add_column("transport", no_wrap=True)
    table.add_column("state", min_width=_STATE_MIN_WIDTH)
    table.add_column("rate", justify="right", no_wrap=True)
    table.add_column("last", justify="right", no_wrap=True)
    plot = model.plot if plots else ()
    for key in plot:
        table.add_column(key, width=plot_width, no_wrap=True, overflow="crop")
    for row in model.rows.values():
        table.add_row(*_row_cells(row, plot, now))
    return table


def render_plot_table(model: TuiModel) -> Table:
    """The sparklines on their own, one row per source and field: for narrow terminals."""
    table = Table(caption=CAPTION, caption_justify="left", box=box.SIMPLE_HEAD, expand=False)
    table.add_column("source", no_wrap=True)
    table.add_column("field", no_wrap=True)
    table.add_column("trend", no_wrap=True, overflow="crop")
    for row in model.rows.values():
        for key in model.plot:
            series = row.series.get(key)
            trend: RenderableType = (
                _SparkCell(tuple(series), _number(series[-1])) if series else Text("—", style=_GREY)
            )
            table.add_row(Text(row.name, style="bold"), key, trend)
    return table


class TuiView:
    """The whole view, fitted to the console's width when it is drawn.

    rich cannot shrink ``no_wrap`` columns, so the sparkline columns get what
    the text columns leave (each sparkline then keeps its newest points).
    When that is too little -- two plots in an 80-column SSH window -- the
    sparklines move to a table of their own below the states.
    """

    #: Per extra column: one cell padding each side and a separator.
    _COLUMN_OVERHEAD = 3
    #: Narrower inline columns than this move the sparklines to their own table.
    _MIN_INLINE_WIDTH = 14

    def __init__(self, model: TuiModel, now: float, *, title: str) -> None:
        self.model = model
        self.now = now
        self.title = title

    def _natural_state_width(self) -> int:
        lines = (
            line
            for row in self.model.rows.values()
            for line in state_text(row.status, self.now).plain.splitlines()
        )
        return max((len(line) for line in lines), default=0)

    def _natural_plot_width(self) -> int:
        widest = max(len(key) for key in self.model.plot)
        for row in self.model.rows.values():
            for series in row.series.values():
                if series:
                    widest = max(widest, len(series) + 1 + len(_number(series[-1])))
        return widest

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        model, now, title = self.model, self.now, self.title
        count = len(model.plot)
        if not count:
            yield render_table(model, now, title=title)
            return
        # the state column may wrap: give the sparklines what its tightest layout leaves
        states = render_table(model, now, title=title, plots=False)
        base = Measurement.get(console, options, states).maximum
        base -= max(self._natural_state_width() - _STATE_MIN_WIDTH, 0)
        room = (options.max_width - base) // count - self._COLUMN_OVERHEAD
        natural = self._natural_plot_width()
        if room >= min(natural, self._MIN_INLINE_WIDTH):
            yield render_table(model, now, title=title, plot_width=min(room, natural))
        else:
            yield render_table(model, now, title=title, plots=False, caption=False)
            yield render_plot_table(model)
