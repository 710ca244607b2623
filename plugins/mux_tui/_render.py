"""Pure rendering of the terminal view: the model and a clock in, a rich table out.

Nothing here touches a terminal, so tests render to a recording console and
read the text back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from mux_core.records import Severity, State, Status
from mux_core.views import escape_controls, format_age, format_rate, format_value

from ._model import SourceRow, TuiModel

# rich is imported where a view is drawn: loading the plugin (every mux
# command does) does not pay for it.
if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

__all__ = [
    "CAPTION",
    "DEMO_CAPTION",
    "STATE_WIDTH",
    "VALUE_WIDTH",
    "TuiView",
    "render_plot_table",
    "render_table",
    "sparkline",
    "state_text",
]

CAPTION = "mux only connects as a client: it never opens a listening port"
#: The caption inside ``mux demo``, which does start a (separate) demo server.
DEMO_CAPTION = (
    "mux only connects as a client: it never opens a listening port "
    "(the demo trainer it watches is a separate process, mux serve-demo)"
)

_BLOCKS = "▁▂▃▄▅▆▇█"

_GREEN = "bold green"
_AMBER = "bold dark_orange"
_RED = "bold red"
_GREY = "grey50"

#: The state column's width: "retry in 12.3 s · attempt 10" fits; a longer
#: detail is cut with an ellipsis (the column never widens as states change).
STATE_WIDTH = 28
#: Room for a value next to a sparkline: "-1.234e-05" is the widest.
VALUE_WIDTH = 10
_RATE_WIDTH = len("12,345.0/s")
_LAST_WIDTH = len("59m 59s ago")

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


def state_text(status: Status | None, now: float) -> Text:
    """The coloured state cell: the state, then what happens next or why it stopped."""
    from rich.text import Text

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
            text.append(f"\n{escape_controls(status.detail)}", style=_GREY)
    elif state is State.CONNECTING and status.attempt > 1:
        text.append(f"\nattempt {status.attempt}")
    elif state in (State.MAX_RETRIES_EXCEEDED, State.FAILED) and status.detail:
        text.append(f"\n{escape_controls(status.detail)}", style="red")
    return text


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
        from rich.measure import Measurement

        full = len(self.latest) + 1 + len(self.values)
        return Measurement(min(len(self.values), 4), full).clamp(max_width=options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        width = options.max_width
        label = " " + self.latest
        # the newest points first, then the value, then older points as room allows
        keep_label = width >= len(label) + 4
        room = max(width - (len(label) if keep_label else 0), 1)
        text = Text(sparkline(self.values[-room:]), style="cyan", no_wrap=True, overflow="crop")
        if keep_label:
            text.append(label)
        yield text


def _state_cell(row: SourceRow, now: float) -> Text:
    """The state, then the alert going on (if any) and the connection quality."""
    text = state_text(row.status, now)
    alert = row.alert
    if alert is not None:
        style = "bold red" if alert.severity is Severity.CRITICAL else _AMBER
        text.append(f"\n⚠ {escape_controls(f'{alert.rule}: {alert.message}')}", style=style)
    quality = row.quality
    if quality is not None:
        reconnects = quality.reconnects
        line = f"\nup {quality.uptime * 100:.1f}% · {reconnects} reconnect"
        line += "" if reconnects == 1 else "s"
        # A line of its own: the column is STATE_WIDTH wide.
        gaps = quality.gaps  # None: events without ids, a gap cannot be seen
        line += "\ngaps n/a" if gaps is None else f"\n{gaps} gap{'' if gaps == 1 else 's'}"
        if quality.lag_p99 is not None:
            line += f" · lag p99 {format_value(quality.lag_p99)} s"
        text.append(line, style=_GREY)
    return text


def _row_cells(row: SourceRow, plot: tuple[str, ...], now: float) -> list[RenderableType]:
    from rich.text import Text

    age = None if row.last_event_at is None else now - row.last_event_at
    cells: list[RenderableType] = [
        Text(escape_controls(row.name), style="bold"),
        row.transport,
        _state_cell(row, now),
        format_rate(row.rate(now)) + "/s",
        format_age(age),
    ]
    for key in plot:
        series = row.series.get(key)
        if not series:
            cells.append(Text("—", style=_GREY))
            continue
        cells.append(_SparkCell(tuple(series), format_value(series[-1])))
    return cells


def _text_width(values: Iterable[str], minimum: int) -> int:
    return max([minimum, *(len(v) for v in values)])


def _name_width(rows: Iterable[SourceRow]) -> int:
    """The source column: names as shown (control characters escaped)."""
    return _text_width((escape_controls(r.name) for r in rows), 6)


def render_table(
    model: TuiModel,
    now: float,
    *,
    title: str = "mux",
    plot_width: int | None = None,
    plots: bool = True,
    caption: str | None = CAPTION,
) -> Table:
    """One row per source, in config order, every column a fixed width.

    The widths depend on the configured names and ``plot_width`` only, never
    on what the cells hold right now: the table does not grow as sparklines
    fill or as a state's detail gets longer (it is cut with an ellipsis).
    """
    from rich import box
    from rich.table import Table

    table = Table(
        title=title,
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        expand=False,
    )
    rows = model.rows.values()
    table.add_column("source", width=_name_width(rows), no_wrap=True)
    transports = (r.transport for r in rows)
    table.add_column("transport", width=_text_width(transports, 9), no_wrap=True)
    table.add_column("state", width=STATE_WIDTH, no_wrap=True, overflow="ellipsis")
    table.add_column("rate", justify="right", width=_RATE_WIDTH, no_wrap=True)
    table.add_column("last", justify="right", width=_LAST_WIDTH, no_wrap=True)
    plot = model.plot if plots else ()
    width = plot_width if plot_width is not None else model.width + 1 + VALUE_WIDTH
    for key in plot:
        table.add_column(key, width=width, no_wrap=True, overflow="crop")
    for row in rows:
        table.add_row(*_row_cells(row, plot, now))
    return table


def render_plot_table(model: TuiModel, *, caption: str | None = CAPTION) -> Table:
    """The sparklines on their own, one row per source and field: for narrow terminals."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(caption=caption, caption_justify="left", box=box.SIMPLE_HEAD, expand=False)
    rows = model.rows.values()
    table.add_column("source", width=_name_width(rows), no_wrap=True)
    table.add_column("field", width=_text_width(model.plot, 5), no_wrap=True)
    table.add_column("trend", width=model.width + 1 + VALUE_WIDTH, no_wrap=True, overflow="crop")
    for row in rows:
        for key in model.plot:
            series = row.series.get(key)
            trend: RenderableType = (
                _SparkCell(tuple(series), format_value(series[-1]))
                if series
                else Text("—", style=_GREY)
            )
            table.add_row(Text(escape_controls(row.name), style="bold"), key, trend)
    return table


class TuiView:
    """The whole view, fitted to the console's width when it is drawn.

    Every column has a fixed width (see :func:`render_table`); the sparkline
    columns get ``width`` points plus the value when the terminal has room,
    else what the other columns leave (each sparkline then keeps its newest
    points). When that is too little -- two plots in an 80-column SSH
    window -- the sparklines move to a table of their own below the states.
    """

    #: Per extra column: one cell padding each side and a separator.
    _COLUMN_OVERHEAD = 3
    #: Narrower inline columns than this move the sparklines to their own table.
    _MIN_INLINE_WIDTH = 14

    def __init__(
        self, model: TuiModel, now: float, *, title: str, caption: str | None = CAPTION
    ) -> None:
        self.model = model
        self.now = now
        self.title = title
        self.caption = caption

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.measure import Measurement

        model, now, title, caption = self.model, self.now, self.title, self.caption
        count = len(model.plot)
        if not count:
            yield render_table(model, now, title=title, caption=caption)
            return
        states = render_table(model, now, title=title, plots=False)
        base = Measurement.get(console, options, states).maximum
        room = (options.max_width - base) // count - self._COLUMN_OVERHEAD
        natural = model.width + 1 + VALUE_WIDTH
        if room >= min(natural, self._MIN_INLINE_WIDTH):
            width = min(room, natural)
            yield render_table(model, now, title=title, plot_width=width, caption=caption)
        else:
            yield render_table(model, now, title=title, plots=False, caption=None)
            yield render_plot_table(model, caption=caption)
