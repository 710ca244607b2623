"""Pure rendering of the terminal view: the model and a clock in, rich renderables out.

Nothing here touches a terminal, so tests render to a recording console and
read the text back.

The view, top to bottom: the title; a summary line (sources per state, the
rows shown, the filters, a replay's pace); the table, one line per source;
the selected source's full state on a detail line; the alerts going on, in
full; the newest log lines (while the view owns the terminal); the keys;
the caption. Fitted to the terminal's height (:class:`TuiView` with
``fit``), the table shows the rows there is room for -- those needing a
look first when not all fit -- and the rest scroll.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from mux_core.records import Severity, State, Status
from mux_core.views import escape_controls, format_age, format_rate, format_value

from ._browse import Browse
from ._model import STALE, WAITING, FieldStats, SourceRow, TuiModel

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
    "alert_text",
    "detail_text",
    "render_plot_table",
    "render_table",
    "row_state_text",
    "sparkline",
    "state_text",
    "summary_text",
]

CAPTION = "mux only connects as a client: it never opens a listening port"
#: The caption inside ``mux demo``, which does start a (separate) demo server.
DEMO_CAPTION = (
    "mux only connects as a client: it never opens a listening port "
    "(the demo trainer it watches is a separate process, mux serve-demo)"
)

_BLOCKS = "▁▂▃▄▅▆▇█"
#: A NaN or an infinity in a sparkline.
NONFINITE_MARK = "!"

_GREEN = "bold green"
_AMBER = "bold dark_orange"
_RED = "bold red"
_GREY = "grey50"

#: The state column's width: the longest state's name ("max_retries_exceeded")
#: and the start of its detail fit; a longer detail is cut with an ellipsis
#: (the full text is on the detail line), the state's name never.
STATE_WIDTH = 28
#: The narrowest state column (an 80-column terminal): the longest name fits.
MIN_STATE_WIDTH = len(State.MAX_RETRIES_EXCEEDED.value)
#: The widest source column: a longer name is cut with an ellipsis.
NAME_WIDTH = 32
#: The narrowest source column, on a terminal too narrow for the names.
MIN_NAME_WIDTH = 8
#: Room for a value next to a sparkline: "-1.234e-05" is the widest.
VALUE_WIDTH = 10
_RATE_WIDTH = len("123,456/s")  # from 1,000/s on, whole numbers
_LAST_WIDTH = len("59m 59s ago")
_STEP_WIDTH = len("1234567")
#: Lines of the selected source's detail at most, when fitted to a terminal.
DETAIL_LINES = 2
#: Log lines shown below the table at most.
LOG_LINES = 3
#: Rows kept before the panes below the table take room, when fitted.
MIN_ROWS = 5

_STYLES: dict[str, str] = {
    State.CONNECTED.value: _GREEN,
    State.CONNECTING.value: _AMBER,
    State.SERVER_UNAVAILABLE.value: _AMBER,
    State.DISCONNECTED.value: _AMBER,
    STALE: _AMBER,
    State.MAX_RETRIES_EXCEEDED.value: _RED,
    State.FAILED.value: _RED,
    State.STOPPED.value: _GREY,
    State.ENDED.value: _GREY,
    WAITING: _GREY,
}


def sparkline(values: Iterable[float]) -> str:
    """One block character per value, scaled between the finite values' min and max.

    A flat series is drawn at mid height, so "constant" does not read as
    "zero"; a NaN or an infinity is drawn as ``!``, never skipped.
    """
    points = list(values)
    finite = [v for v in points if math.isfinite(v)]
    if not finite:
        return NONFINITE_MARK * len(points)
    low, high = min(finite), max(finite)
    top = len(_BLOCKS) - 1
    scale = top / (high - low) if high > low else 0.0
    return "".join(
        NONFINITE_MARK
        if not math.isfinite(v)
        else _BLOCKS[round((v - low) * scale)]
        if scale
        else _BLOCKS[3]
        for v in points
    )


def _quiet(seconds: float) -> str:
    """How long a stale source has been silent: "18 s", "3m 05s"."""
    age = format_age(seconds)
    return age.removesuffix(" ago") if seconds >= 10 else f"{seconds:.0f} s"


def state_text(status: Status | None, now: float) -> Text:
    """The state, then what happens next or why it stopped, on one line:
    ``server_unavailable · retry in 2.4 s · attempt 3 · connection refused``.

    The state's name comes first, so a cell cut to its width keeps it."""
    from rich.text import Text

    if status is None:
        return Text(WAITING, style=_GREY)
    state = status.state
    text = Text(state.value, style=_STYLES.get(state.value, ""))
    if state in (State.SERVER_UNAVAILABLE, State.DISCONNECTED):
        if status.retry_in is not None:
            remaining = max(status.retry_in - (now - status.at), 0.0)
            text.append(f" · retry in {remaining:.1f} s", style=_AMBER)
            text.append(f" · attempt {status.attempt}")
        else:
            text.append(f" · attempt {status.attempt}")
        if status.detail:
            text.append(f" · {escape_controls(status.detail)}", style=_GREY)
    elif state is State.CONNECTING and status.attempt > 1:
        text.append(f" · attempt {status.attempt}")
    elif state in (State.MAX_RETRIES_EXCEEDED, State.FAILED) and status.detail:
        text.append(f" · {escape_controls(status.detail)}", style="red")
    return text


def row_state_text(row: SourceRow, now: float) -> Text:
    """The state cell: :func:`state_text`, or ``stale 18 s`` for a connected
    source silent for longer than it usually is."""
    from rich.text import Text

    quiet = row.quiet_for(now)
    if quiet is not None:
        return Text(f"{STALE} {_quiet(quiet)}", style=_AMBER)
    return state_text(row.status, now)


class _StateCell:
    """The state cell: cut with ``…`` to the column, never into the state's name.

    A column as narrow as the name (``max_retries_exceeded`` on an
    80-column terminal) shows the name alone; the detail line has the rest.
    """

    def __init__(self, text: Text, label: str) -> None:
        self.text = text
        self.label = label

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        from rich.measure import Measurement

        return Measurement(len(self.label), len(self.text)).clamp(max_width=options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        text = self.text.copy()
        if len(text) > width:
            keep = max(width - 1, len(self.label))
            text.truncate(keep)
            if keep < width:
                text.append("…")
        text.no_wrap = True
        text.overflow = "crop"
        yield text


def _quality_text(row: SourceRow) -> str:
    quality = row.quality
    if quality is None:
        return ""
    reconnects = quality.reconnects
    text = f"up {quality.uptime * 100:.1f}% · {reconnects} reconnect"
    text += "" if reconnects == 1 else "s"
    gaps = quality.gaps  # None: events without ids, a gap cannot be seen
    text += " · gaps n/a" if gaps is None else f" · {gaps} gap{'' if gaps == 1 else 's'}"
    if quality.lag_p99 is not None:
        text += f" · lag p99 {format_value(quality.lag_p99)} s"
    return text


def detail_text(row: SourceRow, now: float) -> Text:
    """The whole of a source's state, uncut: its name, its state and detail,
    how long a stale source has been silent, its connection quality."""
    from rich.text import Text

    text = Text("▸ ")
    text.append(escape_controls(row.name), style="bold")
    text.append(": ")
    quiet = row.quiet_for(now)
    if quiet is not None:
        text.append(f"{STALE} {_quiet(quiet)}", style=_AMBER)
        text.append(f" (no event for longer than {format_value(row.watch.threshold())} s) · ")
    text.append_text(state_text(row.status, now))
    quality = _quality_text(row)
    if quality:
        text.append(f" · {quality}", style=_GREY)
    return text


def _has_detail(row: SourceRow, now: float) -> bool:
    """Whether the state says more than its name (a stale source, a retry, a
    server's words). The connection quality alone does not count: ``mux run``
    prints every source's quality when it ends."""
    status = row.status
    if status is None:
        return False
    more = len(state_text(status, now)) > len(status.state.value)
    return more or row.quiet_for(now) is not None


def alert_text(row: SourceRow) -> Text:
    """The alert going on at ``row``, in full: ``⚠ source nonfinite: loss is NaN at step 7``."""
    from rich.text import Text

    alert = row.alert
    if alert is None:
        return Text("")
    style = _RED if alert.severity is Severity.CRITICAL else _AMBER
    text = Text(f"⚠ {escape_controls(row.name)} ", style=style)
    text.append(escape_controls(f"{alert.rule}: {alert.message}"))
    return text


def summary_text(model: TuiModel, now: float) -> Text:
    """Sources per state: ``60 sources: 1 failed · 2 server_unavailable · 57 connected``."""
    from rich.text import Text

    counts = model.counts(now)
    total = len(model.rows)
    text = Text(f"{total} source{'' if total == 1 else 's'}: ")
    for i, (label, count) in enumerate(counts.items()):
        if i:
            text.append(" · ")
        text.append(f"{count} {label}", style=_STYLES.get(label, ""))
    alerting = sum(1 for row in model.rows.values() if row.alert is not None)
    if alerting:
        text.append(f" · {alerting} alerting", style=_AMBER)
    return text


def _format_step(step: float | None) -> str:
    if step is None:
        return "—"
    if step.is_integer() and abs(step) < 10**_STEP_WIDTH:
        return str(int(step))
    return format_value(step)


class _SparkCell:
    """A sparkline, the newest value, and the run's lowest and highest.

    Several plotted fields at ``width = 40`` do not fit an 80-column SSH
    window; cropping would cut off the newest points, so the cell shrinks
    from the oldest end instead: the newest points and the newest value
    stay, then ``↓min ↑max``, then older points as room allows.
    """

    #: Points kept before the value and the extremes take room.
    MIN_POINTS = 4

    def __init__(self, stats: FieldStats) -> None:
        self.values = tuple(stats.series)
        self.latest = " " + format_value(stats.last)
        low, high = stats.low, stats.high
        self.extremes = (
            "" if low is None or high is None else f" ↓{format_value(low)} ↑{format_value(high)}"
        )
        self.nonfinite = not math.isfinite(stats.last)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        from rich.measure import Measurement

        full = len(self.values) + len(self.latest) + len(self.extremes)
        minimum = min(len(self.values), self.MIN_POINTS)
        return Measurement(minimum, full).clamp(max_width=options.max_width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.text import Text

        width = options.max_width
        latest, extremes = self.latest, self.extremes
        if width < len(latest) + self.MIN_POINTS:
            latest = extremes = ""
        elif width < len(latest) + len(extremes) + self.MIN_POINTS:
            extremes = ""
        room = max(width - len(latest) - len(extremes), 1)
        text = Text(sparkline(self.values[-room:]), style="cyan", no_wrap=True, overflow="crop")
        text.append(latest, style=_RED if self.nonfinite else "")
        text.append(extremes, style=_GREY)
        yield text


def _trend(row: SourceRow, key: str) -> RenderableType:
    from rich.text import Text

    stats = row.fields.get(key)
    if stats is None or not stats.series:
        return Text("—", style=_GREY)
    return _SparkCell(stats)


def _row_cells(
    row: SourceRow, plot: tuple[str, ...], now: float, selected: bool
) -> list[RenderableType]:
    from rich.text import Text

    age = None if row.last_event_at is None else now - row.last_event_at
    alert = row.alert
    mark = Text("")
    if alert is not None:
        mark = Text("⚠", style=_RED if alert.severity is Severity.CRITICAL else _AMBER)
    stale = row.quiet_for(now) is not None
    cells: list[RenderableType] = [
        mark,
        Text(escape_controls(row.name), style="bold reverse" if selected else "bold"),
        row.transport,
        _StateCell(row_state_text(row, now), row.label(now)),
        format_rate(row.rate(now)) + "/s",
        Text(format_age(age), style=_AMBER if stale else ""),
        _format_step(row.step),
    ]
    cells += [_trend(row, key) for key in plot]
    return cells


def _text_width(values: Iterable[str], minimum: int) -> int:
    return max([minimum, *(len(v) for v in values)])


def _name_width(rows: Iterable[SourceRow]) -> int:
    """The source column: names as shown (control characters escaped), up to
    :data:`NAME_WIDTH` (a longer name is cut; the detail line has all of it)."""
    return min(_text_width((escape_controls(r.name) for r in rows), 6), NAME_WIDTH)


def render_table(
    model: TuiModel,
    now: float,
    *,
    rows: Sequence[SourceRow] | None = None,
    title: str | None = "mux",
    plot_width: int | None = None,
    plots: bool = True,
    caption: str | None = CAPTION,
    selected: str | None = None,
    state_width: int = STATE_WIDTH,
    name_width: int | None = None,
) -> Table:
    """One line per source of ``rows`` (default: all, in config order), every
    column a fixed width.

    The widths depend on the configured names and ``plot_width`` only, never
    on what the cells hold right now: the table does not grow as sparklines
    fill or as a state's detail gets longer (it is cut with an ellipsis;
    :func:`detail_text` has all of it).
    """
    from rich import box
    from rich.table import Table

    table = Table(
        title=title,
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
        expand=False,
    )
    every = model.rows.values()
    table.add_column("", width=1, no_wrap=True)
    names = _name_width(every) if name_width is None else name_width
    table.add_column("source", width=names, no_wrap=True, overflow="ellipsis")
    table.add_column("transport", width=_text_width((r.transport for r in every), 9), no_wrap=True)
    table.add_column("state", width=state_width, no_wrap=True, overflow="ellipsis")
    table.add_column("rate", justify="right", width=_RATE_WIDTH, no_wrap=True)
    table.add_column("last", justify="right", width=_LAST_WIDTH, no_wrap=True)
    table.add_column("step", justify="right", width=_STEP_WIDTH, no_wrap=True)
    plot = model.plot if plots else ()
    width = plot_width if plot_width is not None else natural_plot_width(model)
    for key in plot:
        table.add_column(key, width=width, no_wrap=True, overflow="crop")
    for row in every if rows is None else rows:
        table.add_row(*_row_cells(row, plot, now, row.name == selected))
    return table


def natural_plot_width(model: TuiModel) -> int:
    """A plot column holding ``width`` points, the newest value and ``↓min ↑max``."""
    return model.width + 3 * (1 + VALUE_WIDTH) + 2


def render_plot_table(
    model: TuiModel,
    *,
    rows: Sequence[SourceRow] | None = None,
    caption: str | None = CAPTION,
    trend_width: int | None = None,
) -> Table:
    """The sparklines on their own, one row per source and field: for narrow terminals."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
        expand=False,
    )
    every = model.rows.values()
    table.add_column("source", width=_name_width(every), no_wrap=True, overflow="ellipsis")
    table.add_column("field", width=_text_width(model.plot, 5), no_wrap=True)
    width = natural_plot_width(model) if trend_width is None else trend_width
    table.add_column("trend", width=width, no_wrap=True, overflow="crop")
    for row in every if rows is None else rows:
        for key in model.plot:
            table.add_row(Text(escape_controls(row.name), style="bold"), key, _trend(row, key))
    return table


class TuiView:
    """The whole view, fitted to the console's width -- and, with ``fit``, to
    its height -- when it is drawn.

    Every column has a fixed width (see :func:`render_table`); the sparkline
    columns get ``width`` points, the value and the extremes when the
    terminal has room, else what the other columns leave (each sparkline
    then keeps its newest points). When that is too little -- two plots in
    an 80-column SSH window -- the sparklines move to a table of their own
    below the states.

    With ``fit`` (a live view on a terminal) the view never draws more
    lines than the terminal has: the rows that fit are shown, those needing
    a look first when not all do, and ``browse`` scrolls the rest. Without
    it (a final table, a file) every row is shown.
    """

    #: Per extra column: a separator and one cell of padding.
    _COLUMN_OVERHEAD = 2
    #: Narrower inline columns than this move the sparklines to their own table.
    _MIN_INLINE_WIDTH = 14

    def __init__(
        self,
        model: TuiModel,
        now: float,
        *,
        title: str,
        caption: str | None = CAPTION,
        browse: Browse | None = None,
        status: str = "",
        help_line: str = "",
        logs: Sequence[str] = (),
        fit: bool = False,
    ) -> None:
        self.model = model
        self.now = now
        self.title = title
        self.caption = caption
        self.browse = browse if browse is not None else Browse()
        #: A note for the summary line (a replay's pace).
        self.status = status
        #: The keys the view answers to ("" when it reads none).
        self.help_line = help_line
        #: The newest log lines (the view owns the terminal).
        self.logs = logs
        self.fit = fit
        #: Whether a row is marked selected (the keys can move it).
        self.interactive = bool(help_line)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        from rich.measure import Measurement
        from rich.text import Text

        model, now, browse = self.model, self.now, self.browse
        width = options.max_width
        loose = options.update(height=None)

        unbounded = options.update_width(10_000)

        def measure(table: Table) -> int:
            return Measurement.get(console, unbounded, table).maximum

        # The state column narrows (down to the longest state's name) on a
        # narrow terminal; the sparklines go inline when the columns leave
        # room, else to a table of their own below.
        base = measure(render_table(model, now, rows=(), title=None, plots=False, caption=None))
        state_width = max(MIN_STATE_WIDTH, STATE_WIDTH - max(base - width, 0))
        base -= STATE_WIDTH - state_width
        name_width = _name_width(model.rows.values())  # then long names are cut further
        if base > width:
            narrower = max(name_width - (base - width), MIN_NAME_WIDTH)
            base -= name_width - narrower
            name_width = narrower
        count = len(model.plot)
        natural = natural_plot_width(model)
        plot_width: int | None = None
        trend_width = natural
        inline = True
        if count:
            room = (width - base) // count - self._COLUMN_OVERHEAD
            inline = room >= min(natural, self._MIN_INLINE_WIDTH)
            plot_width = min(room, natural) if inline else None
            if not inline:
                others = measure(render_plot_table(model, rows=(), caption=None, trend_width=1))
                trend_width = max(min(natural, width - others + 1), 1)
        per_row = 1 if inline or not count else 1 + count

        def lines(renderable: RenderableType) -> int:
            return len(console.render_lines(renderable, loose, pad=False))

        caption = Text(self.caption, style=_GREY) if self.caption else None
        help_line = Text(self.help_line, style=_GREY) if self.help_line else None
        filtered = browse.rows(model, now, None)
        alerting = [row for row in filtered if row.alert is not None]
        alerting.sort(key=lambda row: (row.attention(now), row.index))
        if self.fit:
            empty = render_table(
                model,
                now,
                rows=(),
                title=None,
                plot_width=plot_width,
                plots=inline,
                caption=None,
                state_width=state_width,
                name_width=name_width,
            )
            fixed = 1 + lines(empty)  # the title and summary line, the header
            if not inline:
                fixed += lines(
                    render_plot_table(model, rows=(), caption=None, trend_width=trend_width)
                )
            fixed += sum(lines(text) for text in (caption, help_line) if text is not None)
            budget = options.max_height - fixed
            free = budget - min(len(filtered), MIN_ROWS) * per_row  # for what is below
            detail_room = min(DETAIL_LINES, max(free, 0)) if filtered else 0
            alerts = self._alerts(alerting, free - detail_room, lines)
            below = detail_room + sum(lines(text) for text in alerts)
            logs = list(self.logs[-LOG_LINES:])
            logs = logs[len(logs) - min(len(logs), max(free - below, 0)) :]
            used = below + len(logs)
            page = max((budget - used) // per_row, 1)
        else:
            alerts = [alert_text(row) for row in alerting]
            logs = list(self.logs)
            detail_room = 0
            page = max(len(filtered), 1)

        ordered = browse.rows(model, now, page)
        names = [row.name for row in ordered]
        top, cursor = browse.place(names, page)
        shown = ordered[top : top + page]

        yield self._summary(model, now, top, len(shown), len(filtered))
        selected = names[cursor] if cursor >= 0 and self.interactive else None
        yield render_table(
            model,
            now,
            rows=shown,
            title=None,
            plot_width=plot_width,
            plots=inline,
            caption=None,
            selected=selected,
            state_width=state_width,
            name_width=name_width,
        )
        if not inline:
            yield render_plot_table(model, rows=shown, caption=None, trend_width=trend_width)
        if detail_room and cursor >= 0:
            wrapped = list(detail_text(ordered[cursor], now).wrap(console, width))
            if len(wrapped) > detail_room:
                wrapped = wrapped[:detail_room]
                wrapped[-1].truncate(width - 1)
                wrapped[-1].append("…")
            yield from wrapped
        elif not self.fit:  # a final table: the whole of every row with more to say
            for row in ordered:
                if _has_detail(row, now):
                    yield detail_text(row, now)
        yield from alerts
        for line in logs:
            yield Text(line, style=_GREY, no_wrap=True, overflow="ellipsis")
        if help_line is not None:
            yield help_line
        if caption is not None:
            yield caption

    @staticmethod
    def _alerts(
        alerting: list[SourceRow], room: int, lines: Callable[[RenderableType], int]
    ) -> list[Text]:
        """The alerts that fit in ``room`` lines, in full, then a count of the others."""
        from rich.text import Text

        shown: list[Text] = []
        for i, row in enumerate(alerting):
            text = alert_text(row)
            need = lines(text)
            rest = len(alerting) - i
            if need + (1 if rest > 1 else 0) > room:
                if room >= 1:
                    shown.append(Text(f"⚠ {rest} more alerting (select a row)", style=_AMBER))
                break
            shown.append(text)
            room -= need
        return shown

    def _summary(self, model: TuiModel, now: float, top: int, shown: int, total: int) -> Text:
        from rich.text import Text

        text = Text(self.title, style="bold")
        text.append(" · ")
        text.append_text(summary_text(model, now))
        if shown < total or total < len(model.rows):
            text.append(f" · rows {top + 1 if shown else 0}-{top + shown} of {total}")
        filters = self.browse.describe()
        if filters:
            text.append(f" · filter: {escape_controls(filters)}", style="bold")
        if self.status:
            text.append(f" · {self.status}", style="bold")
        return text
