"""The terminal view: rendered to a recording console and read back as text."""

from __future__ import annotations

import io
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.lowlevel
from rich.console import Console

import mux_tui
from mux_core.records import Alert, Event, Quality, Severity, State, Status
from mux_core.sink import SinkContext, SourceInfo
from mux_tui import TuiOptions, TuiSink, sparkline
from mux_tui._model import TuiModel
from mux_tui._render import CAPTION, TuiView, state_text

Background = Callable[[], Awaitable[Any]]


def _context(backgrounds: list[Background] | None = None) -> SinkContext:
    started = backgrounds if backgrounds is not None else []
    return SinkContext(
        name="tui",
        config_name="train",
        sources=(SourceInfo("train-sse", "sse"), SourceInfo("train-ws", "ws")),
        request_stop=lambda reason: None,
        start_background=started.append,
    )


def _console(**kwargs: Any) -> Console:
    return Console(record=True, width=120, file=io.StringIO(), **kwargs)


def _text(sink: TuiSink, now: float, width: int = 120) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(sink.render(now))
    return console.export_text()


def _cell_lines(sink: TuiSink, source: str, now: float) -> str:
    """The whole state text of one source's row (the cell shows its start)."""
    row = sink.model.rows[source]
    return state_text(row.status, now).plain


def _status(
    state: State,
    *,
    attempt: int = 1,
    retry_in: float | None = None,
    detail: str = "",
    at: float = 100.0,
    source: str = "train-sse",
) -> Status:
    return Status(source, "sse", state, attempt, retry_in, detail, at)


def _event(seq: int, at: float, data: Any, source: str = "train-sse") -> Event:
    return Event(source, "sse", "metric", str(seq), data, at, seq)


def _sink(**options: Any) -> TuiSink:
    return TuiSink(TuiOptions(**options), _context(), console=_console())


def test_sources_are_listed_before_any_record() -> None:
    text = _text(_sink(plot=["loss"]), now=100.0)
    assert "train-sse" in text and "train-ws" in text
    assert "sse" in text and "ws" in text
    assert text.count("  waiting") == 2  # each row's state...
    assert "2 sources: 2 waiting" in text  # ...and the summary line
    assert CAPTION in text
    assert "loss" in text


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (_status(State.CONNECTED), "connected"),
        (_status(State.CONNECTING, attempt=2), "connecting · attempt 2"),
        (
            _status(State.SERVER_UNAVAILABLE, attempt=3, retry_in=2.4, detail="connection refused"),
            "server_unavailable · retry in 2.4 s · attempt 3 · connection refused",
        ),
        (
            _status(State.DISCONNECTED, attempt=1, retry_in=0.5, detail="stream closed"),
            "disconnected · retry in 0.5 s · attempt 1 · stream closed",
        ),
        (_status(State.FAILED, detail="HTTP 404"), "failed · HTTP 404"),
        (
            _status(State.MAX_RETRIES_EXCEEDED, attempt=3, detail="HTTP 503"),
            "max_retries_exceeded · HTTP 503",
        ),
        (_status(State.STOPPED), "stopped"),
        (_status(State.ENDED), "ended"),
    ],
)
async def test_state_text_per_status(status: Status, expected: str) -> None:
    sink = _sink()
    await sink.write([status])
    assert expected in _cell_lines(sink, "train-sse", now=100.0)
    text = _text(sink, now=100.0)
    row = next(line for line in text.splitlines() if "train-sse" in line)
    assert status.state.value in row  # the state's name on the row, always
    if expected != status.state.value:  # the whole of it on a detail line
        assert f"▸ train-sse: {expected}" in text
    else:
        assert "▸ train-sse" not in text  # nothing more to say


@pytest.mark.parametrize(
    ("state", "colour"),
    [
        (State.CONNECTED, "green"),
        (State.CONNECTING, "orange"),
        (State.SERVER_UNAVAILABLE, "orange"),
        (State.DISCONNECTED, "orange"),
        (State.FAILED, "red"),
        (State.MAX_RETRIES_EXCEEDED, "red"),
        (State.STOPPED, "grey"),
        (State.ENDED, "grey"),
    ],
)
def test_state_colours(state: State, colour: str) -> None:
    assert colour in str(state_text(_status(state), 100.0).style)


async def test_retry_countdown_runs_down_and_stops_at_zero() -> None:
    sink = _sink()
    await sink.write([_status(State.SERVER_UNAVAILABLE, attempt=2, retry_in=2.4, at=100.0)])
    assert "retry in 2.4 s · attempt 2" in _text(sink, now=100.0)
    assert "retry in 1.4 s · attempt 2" in _text(sink, now=101.0)
    assert "retry in 0.0 s · attempt 2" in _text(sink, now=105.0)


async def test_event_rate_and_last_event_age() -> None:
    sink = _sink()
    # 21 events at 10/s, seq 1..21, received from t=100.0 to t=102.0
    await sink.write([_event(i + 1, 100.0 + i / 10, {"step": i}) for i in range(21)])
    text = _text(sink, now=102.0)
    assert "10.0/s" in text
    assert "0.0 s ago" in text
    later = _text(sink, now=104.0)
    assert "2.0 s ago" in later
    assert "5.0/s" in later  # 20 events over 4 s: the rate decays when quiet
    assert "0.0/s" in _text(sink, now=120.0)


async def test_rate_counts_events_the_view_skipped() -> None:
    # Under the "latest" policy the sink sees few events; seq carries the truth.
    sink = _sink()
    await sink.write([_event(1, 100.0, {}), _event(31, 101.0, {}), _event(61, 102.0, {})])
    assert "30.0/s" in _text(sink, now=102.0)


async def test_sparkline_of_loss_values() -> None:
    sink = _sink(plot=["loss", "lr"], width=8)
    losses = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    await sink.write(
        [_event(i + 1, 100.0 + i, {"loss": v, "lr": 0.001}) for i, v in enumerate(losses)]
    )
    text = _text(sink, now=108.0)
    assert "█▇▆▅▄▃▂▁ 0.3" in text  # strictly falling, top to bottom, then the newest
    assert sparkline(losses)[0] == "█" and sparkline(losses)[-1] == "▁"
    assert "0.3" in text  # the newest value next to the sparkline
    assert "▄▄▄▄▄▄▄▄ 0.001" in text  # a flat lr is drawn at mid height


async def test_sparkline_keeps_width_points_and_ignores_non_numbers() -> None:
    sink = _sink(plot=["loss"], width=4)
    values: list[Any] = [5.0, 4.0, "nan?", True, None, 3.0, 2.0, 1.0, 0.0]
    await sink.write([_event(i + 1, 100.0 + i, {"loss": v}) for i, v in enumerate(values)])
    await sink.write([_event(99, 111.0, "not a dict")])
    stats = sink.model.rows["train-sse"].fields["loss"]
    assert list(stats.series) == [3.0, 2.0, 1.0, 0.0]
    assert (stats.low, stats.high) == (0.0, 5.0)  # the run's, not only the points drawn
    assert "█▆▃▁ 0 ↓0 ↑5" in _text(sink, now=112.0)


async def test_nan_is_shown_as_nan_never_as_the_last_finite_value() -> None:
    sink = _sink(plot=["loss", "lr"], width=6)
    finite = [_event(i + 1, 100.0 + i, {"loss": 9.407 - i, "lr": 0.1}) for i in range(3)]
    await sink.write(finite)
    await sink.write([_event(4, 103.0, {"loss": float("nan"), "lr": float("inf")})])
    text = _text(sink, now=103.0, width=200)
    row = next(line for line in text.splitlines() if "train-sse" in line)
    assert "█▅▁! NaN ↓7.407 ↑9.407" in row  # a NaN point, then NaN as the value
    assert " 7.407 " not in row.split("NaN")[0]  # the last finite value is not the value
    assert "▄▄▄! Inf" in row
    assert sparkline([1.0, float("nan"), 3.0, float("-inf")]) == "▁!█!"
    assert sparkline([float("nan")]) == "!"
    await sink.write([_event(5, 104.0, {"loss": 6.0, "lr": 0.1})])
    text = _text(sink, now=104.0, width=200)
    row = next(line for line in text.splitlines() if "train-sse" in line)
    assert "! 6 ↓6 ↑9.407" not in row and "!▁ 6 ↓6 ↑9.407" in row  # NaN stays a point


async def test_unconfigured_source_gets_a_row() -> None:
    sink = _sink()
    await sink.write([_status(State.CONNECTED, source="extra")])
    assert "extra" in _text(sink, now=100.0)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="width"):
        TuiOptions(width=0)
    with pytest.raises(ValueError, match="refresh_per_second"):
        TuiOptions(refresh_per_second=0)
    with pytest.raises(ValueError, match="plot"):
        TuiOptions(plot=[""])
    assert TuiSink.default_overflow == "drop_oldest"
    assert TuiSink.default_on_error == "drop"


def test_registers_as_tui() -> None:
    registered: dict[str, type[Any]] = {}
    mux_tui.mux_register_sinks(lambda name, cls: registered.__setitem__(name, cls))
    assert registered == {"tui": TuiSink}


async def test_close_prints_the_final_table_once_when_not_a_terminal() -> None:
    backgrounds: list[Background] = []
    console = _console()
    sink = TuiSink(TuiOptions(), _context(backgrounds), console=console, clock=lambda: 100.0)
    await sink.open()
    assert len(backgrounds) == 1
    await sink.write([_status(State.CONNECTED)])
    assert CAPTION not in console.export_text(clear=False)
    await sink.aclose()
    text = console.export_text()
    assert text.count(CAPTION) == 1
    assert "connected" in text


async def test_background_task_redraws_a_terminal() -> None:
    backgrounds: list[Background] = []
    renders = 0
    redrawn = trio.Event()

    def clock() -> float:
        nonlocal renders
        renders += 1
        if renders >= 3:
            redrawn.set()
        return 100.0

    console = _console(force_terminal=True)
    sink = TuiSink(
        TuiOptions(refresh_per_second=1000.0), _context(backgrounds), console=console, clock=clock
    )
    await sink.open()
    await sink.write([_status(State.CONNECTED)])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(backgrounds[0])
            await redrawn.wait()
            nursery.cancel_scope.cancel()
    assert "connected" in console.export_text(clear=False)
    await sink.aclose()
    # the refresh loop ends by itself once the view is closed
    with trio.fail_after(5):
        await backgrounds[0]()


@pytest.mark.parametrize("columns", [72, 100, 160, 200])
async def test_view_fits_the_terminal_and_keeps_the_newest_points(columns: int) -> None:
    sink = _sink(plot=["loss", "lr"], width=40)
    await sink.write([_status(State.SERVER_UNAVAILABLE, attempt=3, retry_in=2.0, detail="refused")])
    losses = [float(40 - i) for i in range(40)]
    await sink.write(
        [_event(i + 1, 100.0 + i, {"loss": v, "lr": 0.5}) for i, v in enumerate(losses)]
    )
    console = Console(record=True, width=columns, file=io.StringIO())
    console.print(sink.render(140.0))
    lines = console.export_text().splitlines()
    assert all(len(line) <= columns for line in lines)
    text = "\n".join(lines)
    assert "server_unavailable" in text
    if columns >= 100:
        assert "▁ 1" in text  # the newest end of the falling loss, then its value
    if columns == 200:
        assert sparkline(losses) + " 1" in text  # all 40 points fit


async def test_narrow_terminal_moves_sparklines_below_the_states() -> None:
    sink = _sink(plot=["loss", "lr"], width=40)
    losses = [float(40 - i) for i in range(40)]
    await sink.write(
        [_event(i + 1, 100.0 + i, {"loss": v, "lr": 0.5}) for i, v in enumerate(losses)]
    )
    console = Console(record=True, width=80, file=io.StringIO())
    console.print(sink.render(140.0))
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines)
    trend = next(line for line in lines if "train-sse" in line and " loss " in line)
    assert "↓1 ↑40" in trend  # the run's extremes
    assert sparkline(losses) + " 1" in trend  # all 40 points, in a row of its own
    assert any("train-sse" in line and " lr " in line and "0.5" in line for line in lines)
    assert lines.index(trend) > next(i for i, line in enumerate(lines) if "  train-ws  " in line)
    assert CAPTION in lines[-1]


async def test_columns_keep_their_width_as_sparklines_fill_and_states_change() -> None:
    sink = _sink(plot=["loss", "lr"], width=40)
    await sink.write([_status(State.CONNECTED, at=100.0)])
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(sink.render(100.0))
    empty = [line for line in console.export_text().splitlines() if "transport" in line]
    await sink.write(
        [_event(i + 1, 100.0 + i, {"loss": 1.0 / (i + 1), "lr": 3e-4}) for i in range(60)]
    )
    await sink.write(
        [
            _status(
                State.SERVER_UNAVAILABLE,
                attempt=12,
                retry_in=17.3,
                detail="connection refused by 127.0.0.1:8888 after a very long wait",
                at=160.0,
            )
        ]
    )
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(sink.render(160.0))
    text = console.export_text()
    full = [line for line in text.splitlines() if "transport" in line]
    assert empty == full  # the header line, column for column: nothing grew
    row = next(line for line in text.splitlines() if line.startswith("   train-sse"))
    assert "server_unavailable · retry" in row and "…" in row  # cut, not widened
    assert "connection refused" not in row
    detail = next(line for line in text.splitlines() if line.startswith("▸ train-sse"))
    assert "connection refused by 127.0.0.1:8888 after a very long wait" in detail


async def test_numbers_have_one_format() -> None:
    sink = _sink(plot=["lr", "loss", "step"], width=4)
    await sink.write([_event(1, 100.0, {"lr": 0.0001596, "loss": 7.98, "step": 1500})])
    await sink.write([_event(2, 100.0, {"lr": 4.86e-05}, source="train-ws")])
    text = _text(sink, now=100.0)
    assert "1.596e-04" in text and "4.860e-05" in text
    assert "0.0001596" not in text and "4.86e-05" not in text
    assert " 7.98" in text and " 1500" in text


async def test_inside_mux_demo_the_caption_does_not_claim_no_server_starts() -> None:
    from mux_tui._render import DEMO_CAPTION

    context = _context()
    context.config_name = "mux-demo"
    sink = TuiSink(TuiOptions(), context, console=_console())
    text = _text(sink, now=100.0)
    assert "never starts a server" not in text
    assert "separate process" in text and DEMO_CAPTION.split(" (")[0] in text
    assert "never starts a server" not in CAPTION


async def test_a_terminal_is_left_with_one_final_table() -> None:
    backgrounds: list[Background] = []
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    sink = TuiSink(TuiOptions(), _context(backgrounds), console=console, clock=lambda: 100.0)
    await sink.open()
    await sink.write([_status(State.CONNECTED)])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(backgrounds[0])
            while out.getvalue().count("mux · train") < 3:  # a few live redraws
                await trio.lowlevel.checkpoint()
                sink._live.update(sink.render(), refresh=True)  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()
    await sink.aclose()
    raw = out.getvalue()
    erased = raw.rfind("\x1b[2K")  # the live region is erased when the view stops...
    assert erased >= 0
    assert raw[erased:].count("mux · train") == 1  # ...then the final table, once
    assert raw[erased:].count(CAPTION) == 1


def test_the_terminal_does_not_echo_ctrl_c_while_the_view_runs() -> None:
    import termios

    from mux_tui._terminal import TerminalMode

    main, other = os.openpty()
    try:
        with os.fdopen(other, "r", closefd=False) as stream:
            assert termios.tcgetattr(other)[3] & termios.ECHOCTL
            mode = TerminalMode.enter(stream)
            assert mode is not None
            assert not termios.tcgetattr(other)[3] & termios.ECHOCTL
            assert termios.tcgetattr(other)[3] & termios.ICANON  # no keys: lines as before
            mode.restore()
            assert termios.tcgetattr(other)[3] & termios.ECHOCTL
        assert TerminalMode.enter(io.StringIO()) is None  # not a terminal: nothing to do
    finally:
        os.close(main)
        os.close(other)


def _view_text(model: TuiModel, now: float, width: int = 200, **kwargs: Any) -> str:
    console = Console(width=width, height=40, record=True, file=io.StringIO())
    console.print(TuiView(model, now, title="mux", caption=None, **kwargs))
    return console.export_text()


def _live_text(model: TuiModel, now: float) -> str:
    """The live view on a 200 x 40 terminal: the selected row has a detail line."""
    return _view_text(model, now, fit=True)


def test_alerts_show_in_full_and_quality_on_the_detail_line() -> None:
    message = (
        "loss is NaN at step 4123 (the last finite value was 9.407 at step 4122; "
        "check the learning rate)"
    )
    model = TuiModel(plot=(), width=10)
    model.ingest([Status("s", "sse", State.CONNECTED, 1, None, "", 1.0)])
    model.ingest([Alert("s", "sse", "nonfinite", Severity.CRITICAL, message, 7, 2.0)])
    quality = Quality("s", "sse", 60.0, 0.75, 2, 5.0, 100, 0, None, 3.0)
    model.ingest([quality])
    shown = _view_text(model, 4.0)
    assert f"⚠ s nonfinite: {message}" in shown  # the whole text, the step kept
    row = next(line for line in shown.splitlines() if line.startswith("⚠  s "))
    assert "connected" in row  # the row is marked; its state stays readable
    assert "▸ s:" not in shown  # the final table: "connected" says it all
    assert "▸ s: connected · up 75.0% · 2 reconnects · 0 gaps" in _live_text(model, 4.0)
    model.ingest([Quality("s", "sse", 60.0, 0.75, 2, 5.0, 100, None, 0.25, 3.5)])  # no ids
    assert "gaps n/a · lag p99 0.25 s" in _live_text(model, 4.0)
    model.ingest([Alert("s", "sse", "nonfinite", Severity.INFO, "loss finite again", 9, 5.0)])
    shown = _view_text(model, 6.0)
    assert "loss is NaN" not in shown and "⚠" not in shown  # the episode was cleared

    class Unknown:  # a record type from a newer mux
        source = "s"
        transport = "sse"

    model.ingest([Unknown()])  # type: ignore[list-item]


def test_alert_text_is_whole_at_200_columns_in_a_fitted_view() -> None:
    """The live view on a terminal: the alert line is not cut to a column."""
    message = "loss is NaN at step 4123 (the last finite value was 9.407 at step 4122)"
    model = TuiModel(plot=("loss",), width=40)
    for i in range(3):
        model.add_source(f"train-{i}", "sse")
    model.ingest([Alert("train-2", "sse", "nonfinite", Severity.CRITICAL, message, 7, 2.0)])
    console = Console(width=200, height=40, record=True, file=io.StringIO())
    console.print(TuiView(model, 4.0, title="mux", fit=True))
    shown = console.export_text()
    assert f"⚠ train-2 nonfinite: {message}" in shown
    assert "1 alerting" in shown.splitlines()[0]


def test_a_restart_clears_the_old_quality_figure() -> None:
    model = TuiModel(plot=(), width=10)
    model.ingest(
        [
            Status("s", "sse", State.CONNECTED, 1, None, "", 1.0),
            Quality("s", "sse", 60.0, 0.25, 9, 5.0, 100, 0, None, 2.0),
            Status("s", "sse", State.MAX_RETRIES_EXCEEDED, 5, None, "refused", 3.0),
        ]
    )
    assert "up 25.0% · 9 reconnects" in _live_text(model, 4.0)  # the session that gave up
    model.ingest([Status("s", "sse", State.CONNECTING, 1, None, "", 5.0)])  # restarted
    shown = _live_text(model, 6.0)
    assert "▸ s: connecting" in shown and "up 25.0%" not in shown
    model.ingest([Quality("s", "sse", 1.0, 1.0, 0, None, 10, 0, None, 7.0)])
    assert "up 100.0% · 0 reconnects" in _live_text(model, 7.0)  # the new session's
    model.ingest([Status("s", "sse", State.DISCONNECTED, 1, 1.0, "", 8.0)])
    assert "up 100.0%" in _live_text(model, 8.0)  # an outage is not a restart


def test_control_characters_from_names_and_servers_are_shown_escaped() -> None:
    """A line break or an ANSI sequence in a name, a status detail or an alert
    cannot add rows or drive the terminal: the view shows them as escapes."""
    name = "evil\n\x1b[2J"
    model = TuiModel(plot=("loss",), width=10)
    model.ingest(
        [
            Status(name, "sse", State.FAILED, 1, None, "HTTP 404\n\x1b[31mFORGED", 1.0),
            Alert(name, "sse", "stall", Severity.WARNING, "no step\r\x1b]0;title\x07", 1, 2.0),
            Event(name, "sse", "metric", "1", {"loss": 0.5}, 1.0, 1),
        ]
    )
    for width in (200, 80):  # the sparklines inline, then in a table of their own
        out = io.StringIO()
        console = Console(width=width, file=out, force_terminal=True, color_system=None)
        console.print(TuiView(model, 4.0, title="mux"))
        shown = out.getvalue()
        assert "\x1b" not in shown and "\r" not in shown
        assert "evil\\n\\x1b[2J" in shown
    shown = _view_text(model, 4.0)
    assert "HTTP 404\\n\\x1b[31mFORGED" in shown
    assert "⚠ evil\\n\\x1b[2J stall: no step\\r\\x1b]0;title\\x07" in shown


def test_a_long_name_is_cut_never_the_state() -> None:
    name = "trainer-" + "x" * 80
    model = TuiModel(plot=("loss",), width=10)
    model.ingest([Status(name, "sse", State.MAX_RETRIES_EXCEEDED, 5, None, "refused", 1.0)])
    shown = _view_text(model, 2.0, width=80)
    row = next(line for line in shown.splitlines() if line.startswith("   trainer-"))
    assert "max_retries_exceeded" in row and "…" in row
    assert f"▸ {name}: max_retries_exceeded · refused" in shown.replace("\n", "")
