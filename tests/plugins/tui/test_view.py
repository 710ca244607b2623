"""The terminal view as a person reads it: a hung source, many sources, keys, the log, a replay.

Rendered to recording consoles and read back as text; the live view's
redraws run as the sink's own background task, on trio's MockClock where
time matters.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio
import trio.testing
from rich.console import Console

from mux_core.records import Alert, Event, Severity, State, Status
from mux_core.sink import ReplayControl, SinkContext, SourceInfo
from mux_tui import TuiOptions, TuiSink
from mux_tui._clock import ReplayClock

Background = Callable[[], Awaitable[Any]]


def _context(
    sources: tuple[SourceInfo, ...],
    backgrounds: list[Background] | None = None,
    replay: ReplayControl | None = None,
) -> SinkContext:
    started = backgrounds if backgrounds is not None else []
    return SinkContext(
        name="tui",
        config_name="train",
        sources=sources,
        request_stop=lambda reason: None,
        start_background=started.append,
        replay=replay,
    )


def _event(source: str, seq: int, at: float, data: Any) -> Event:
    return Event(source, "sse", "metric", str(seq), data, at, seq)


def _status(source: str, state: State, at: float, detail: str = "") -> Status:
    return Status(source, "sse", state, 1, None, detail, at)


def _terminal(width: int = 200, height: int = 40, **kwargs: Any) -> Console:
    """A console that says it is a terminal of ``width`` x ``height``."""
    return Console(file=io.StringIO(), width=width, height=height, force_terminal=True, **kwargs)


def _frame(sink: TuiSink, now: float | None = None, width: int = 200, height: int = 40) -> str:
    """What the live view draws now, as text, on a ``width`` x ``height`` terminal."""
    console = Console(record=True, width=width, height=height, file=io.StringIO())
    console.print(sink.render(now))
    return console.export_text()


def _row(frame: str, name: str) -> str:
    return next(line for line in frame.splitlines() if f"  {name} " in line)


# -- a hung trainer ----------------------------------------------------------


async def test_a_hung_source_shows_stale_within_a_second_and_recovers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """10 events/s, then 18 s of silence on an open connection (SIGSTOP), then
    events again: connected, ``stale`` from 5 s of silence (the floor: the
    source's own rhythm says 1 s), ``stale 18 s``, then connected again --
    drawn by the view's own redraw task, in colour on a colour terminal."""
    backgrounds: list[Background] = []
    sources = (SourceInfo("trainer", "sse"), SourceInfo("other", "sse"))
    screen = io.StringIO()
    console = Console(file=screen, width=160, height=30, force_terminal=True, color_system="256")
    sink = TuiSink(
        TuiOptions(plot=["loss"], refresh_per_second=4),
        _context(sources, backgrounds),
        console=console,
        clock=trio.current_time,
    )
    await sink.open()
    seq = 0

    async def train(seconds: float) -> None:
        nonlocal seq
        for _ in range(round(seconds * 10)):
            seq += 1
            now = trio.current_time()
            await sink.write([_event("trainer", seq, now, {"step": seq, "loss": 1 / seq})])
            await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(backgrounds[0])
        await sink.write([_status("trainer", State.CONNECTED, trio.current_time())])
        await train(3.0)
        hang = trio.current_time()  # the trainer stops; its connection stays open
        await trio.sleep(4.5)
        assert "connected" in _row(_frame(sink), "trainer")
        await trio.sleep(1.5)  # 6 s: past the 5 s floor, and within a second of it
        frame = _frame(sink)
        assert "stale 6 s" in _row(frame, "trainer")
        assert "1 stale" in frame.splitlines()[0]  # counted as a state of its own
        assert "▸ trainer: stale 6 s (no event for longer than 5 s)" in frame
        await trio.sleep(hang + 18.0 - trio.current_time())
        assert "stale 18 s" in _row(_frame(sink), "trainer")
        assert "\x1b[1;38;5;208mstale 18 s" in screen.getvalue()  # drawn live, amber
        await train(0.5)  # it goes on
        frame = _frame(sink)
        assert "connected" in _row(frame, "trainer") and "stale" not in frame
        nursery.cancel_scope.cancel()
    await sink.aclose()


async def test_stale_after_from_the_config_overrides_the_learned_threshold() -> None:
    sources = (SourceInfo("slow", "sse", stale_after=2.0), SourceInfo("learned", "sse"))
    sink = TuiSink(TuiOptions(), _context(sources), console=_terminal())
    for name in ("slow", "learned"):
        await sink.write([_status(name, State.CONNECTED, 100.0)])
        await sink.write([_event(name, i + 1, 100.0 + i, {}) for i in range(5)])  # 1/s
    frame = _frame(sink, now=106.5)  # 2.5 s quiet
    assert "stale 2 s" in _row(frame, "slow")
    assert "connected" in _row(frame, "learned")  # 10 x 1 s learned: not yet
    frame = _frame(sink, now=115.0)
    assert "stale 11 s" in _row(frame, "learned")


async def test_a_source_that_just_reconnected_is_not_stale_for_its_outage() -> None:
    sink = TuiSink(TuiOptions(), _context((SourceInfo("s", "sse"),)), console=_terminal())
    await sink.write([_status("s", State.CONNECTED, 100.0)])
    await sink.write([_event("s", i + 1, 100.0 + i / 10, {}) for i in range(10)])
    await sink.write([_status("s", State.SERVER_UNAVAILABLE, 101.0, "refused")])
    assert "server_unavailable" in _row(_frame(sink, now=130.0), "s")
    await sink.write([_status("s", State.CONNECTED, 130.0)])
    assert "connected" in _row(_frame(sink, now=131.0), "s")  # quiet for 1 s since
    assert "stale 6 s" in _row(_frame(sink, now=136.0), "s")


# -- many sources ------------------------------------------------------------


def _many(count: int = 60) -> tuple[SourceInfo, ...]:
    return tuple(SourceInfo(f"src-{i:02d}", "sse") for i in range(count))


async def _many_sink(keys: bool = False) -> TuiSink:
    """60 sources on a 200 x 40 terminal, all connected but the last, which failed."""
    from tests.plugins.tui.test_keys import FakeKeys

    sink = TuiSink(
        TuiOptions(plot=["loss"]),
        _context(_many()),
        console=_terminal(),
        keys=FakeKeys() if keys else None,
    )
    await sink.open()
    records: list[Any] = []
    for i in range(60):
        name = f"src-{i:02d}"
        records.append(_status(name, State.CONNECTED, 100.0))
        records += [_event(name, k + 1, 100.0 + k / 10, {"step": k, "loss": 1.0}) for k in range(3)]
    records.append(
        _status("src-59", State.FAILED, 100.5, "HTTP 404 from http://127.0.0.1:1/events " * 3)
    )
    await sink.write(records)
    return sink


async def test_sixty_sources_in_forty_rows_put_the_failed_one_first() -> None:
    sink = await _many_sink()
    frame = _frame(sink, now=101.0)
    lines = frame.splitlines()
    assert len(lines) <= 40  # never more than the terminal: nothing torn, no "..."
    assert lines[0].startswith("mux · train · 60 sources: 1 failed · 59 connected")
    first = next(i for i, line in enumerate(lines) if "src-" in line)
    assert "src-59" in lines[first] and "failed · HTTP 404" in lines[first]
    assert "src-00" in lines[first + 1]  # then config order
    shown = sum(1 for line in lines if line.startswith("   src-"))
    assert shown >= 25
    assert f"rows 1-{shown} of 60" in lines[0]
    assert f"▸ src-59: failed · {'HTTP 404 from http://127.0.0.1:1/events ' * 2}" in frame
    await sink.aclose()


async def test_all_rows_fit_in_config_order() -> None:
    sink = TuiSink(TuiOptions(), _context(_many(5)), console=_terminal())
    await sink.open()
    await sink.write([_status("src-04", State.FAILED, 100.0, "HTTP 404")])
    lines = _frame(sink, now=101.0).splitlines()
    rows = [line for line in lines if line.startswith(("   src-", "⚠  src-"))]
    assert [row.split()[0] for row in rows] == [f"src-{i:02d}" for i in range(5)]
    assert "rows" not in lines[0]
    await sink.aclose()


async def test_the_final_table_shows_every_row() -> None:
    sink = await _many_sink()
    sink.console = Console(record=True, width=200, height=40, file=io.StringIO())
    await sink.aclose()
    text = sink.console.export_text()
    assert all(f"src-{i:02d}" in text for i in range(60))


async def test_keys_scroll_and_filter() -> None:
    sink = await _many_sink(keys=True)
    sink._reading_keys = True  # as once the key task runs
    frame = _frame(sink, now=101.0)
    assert "/: filter by name" in frame and "s: filter by state" in frame  # the help line
    page = sum(1 for line in frame.splitlines() if line.startswith("   src-"))

    sink.press("\x1b[6~")  # PgDn: the selection moves a page, the window follows
    frame = _frame(sink, now=101.0)
    top = min(page, 60 - page)  # the last page ends at the last row
    assert f"rows {top + 1}-{top + page} of 60" in frame.splitlines()[0]
    assert "src-59" not in _rows(frame)
    selected = sink.browse.selected
    assert selected is not None and f"▸ {selected}: connected" in frame  # its detail line
    sink.press("\x1b[B\x1b[B")  # two rows down
    assert sink.browse.selected == f"src-{int(selected[4:]) + 2:02d}"
    sink.press("\x1b[F")  # End
    frame = _frame(sink, now=101.0)
    assert "of 60" in frame and "src-58" in _rows(frame)
    sink.press("\x1b[H")  # Home: the failed source again, with its detail
    frame = _frame(sink, now=101.0)
    assert "▸ src-59: failed" in frame and "rows 1-" in frame

    sink.press("/src-4")  # a name: matched anywhere in the name
    frame = _frame(sink, now=101.0)
    assert "filter: name 'src-4'▏" in frame.splitlines()[0]
    assert "Enter: keep it" in frame  # the help line while typing
    assert _rows(frame) == [f"src-{i}" for i in range(40, 50)]
    sink.press("\x7f\x7f*5?\r")  # Backspace twice, then a glob; Enter keeps it
    frame = _frame(sink, now=101.0)
    assert "filter: name 'src*5?'" in frame.splitlines()[0]
    assert _rows(frame) == [f"src-{i}" for i in range(50, 60)]  # all fit: config order
    assert "rows 1-10 of 10" in frame.splitlines()[0]
    sink.press("/\x1b")  # Esc: the filter is cleared
    frame = _frame(sink, now=101.0)
    assert sink.browse.name_filter == "" and "filter" not in frame.splitlines()[0]

    sink.press("s")  # the state filter: those needing a look
    frame = _frame(sink, now=101.0)
    assert _rows(frame) == ["src-59"] and "filter: state attention" in frame
    sink.press("s")  # then each state shown: failed first
    assert sink.browse.state_filter == "failed"
    sink.press("ss")
    assert sink.browse.state_filter is None  # failed, connected, then all again
    await sink.aclose()


def _rows(frame: str) -> list[str]:
    return [
        line.split()[1] if line.startswith("⚠") else line.split()[0]
        for line in frame.splitlines()
        if line.startswith(("   src-", "⚠  src-"))
    ]


# -- the log while the view owns the terminal -------------------------------


@contextmanager
def _pty_log() -> Iterator[tuple[int, Console]]:
    """A pty; a console drawing on it; the root logger writing to it."""
    main, other = os.openpty()
    screen = os.fdopen(other, "w", closefd=False)
    handler = logging.StreamHandler(screen)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield main, Console(file=screen, width=120, height=30)
    finally:
        root.removeHandler(handler)
        screen.close()
        os.close(main)
        os.close(other)


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        pass
    return data


async def test_log_lines_go_below_the_table_and_once_to_the_terminal_at_the_end() -> None:
    log = logging.getLogger("mux.test_view")
    with _pty_log() as (main, console):
        sink = TuiSink(TuiOptions(), _context(_many(3)), console=console)
        await sink.open()
        await sink.write([_status("src-00", State.CONNECTED, 100.0)])
        _read_all(main)
        log.warning("source 'src-01': server_unavailable: connection refused")
        assert b"connection refused" not in _read_all(main)  # not written into the table
        frame = _frame(sink, now=100.0, width=120, height=30)
        lines = frame.splitlines()
        header = next(i for i, line in enumerate(lines) if "transport" in line)
        logged = next(i for i, line in enumerate(lines) if "connection refused" in line)
        assert logged > header + 3  # below the three rows
        assert "WARNING mux.test_view: source 'src-01'" in lines[logged]
        await sink.aclose()
        out = _read_all(main).decode()
        assert out.count("connection refused") == 1  # printed once...
        after = out[out.rindex("\x1b[2K") :]  # ...once the live region is erased
        assert after.index("connection refused") < after.index("transport")  # then the table
        log.warning("after the view")  # the log is the terminal's again
        assert "after the view" in _read_all(main).decode()


async def test_a_log_going_elsewhere_is_not_touched(tmp_path: Any) -> None:
    root = logging.getLogger()
    handler = logging.FileHandler(tmp_path / "mux.log")
    root.addHandler(handler)
    try:
        with _pty_log() as (_main, console):
            sink = TuiSink(TuiOptions(), _context(_many(1)), console=console)
            await sink.open()
            logging.getLogger("mux.test_view").warning("to the file")
            await sink.aclose()
    finally:
        root.removeHandler(handler)
        handler.close()
    assert "to the file" in (tmp_path / "mux.log").read_text()
    assert not handler.filters


# -- a replay ----------------------------------------------------------------


async def test_a_replay_plays_at_the_recorded_pace_and_its_keys_pace_it() -> None:
    from tests.plugins.tui.test_keys import FakeKeys

    assert TuiSink.default_replay_speed == 1.0
    replay = ReplayControl(1.0)
    sink = TuiSink(
        TuiOptions(),
        _context(_many(2), replay=replay),
        console=_terminal(),
        keys=FakeKeys(),
    )
    await sink.open()
    sink._reading_keys = True
    frame = _frame(sink)
    assert "replay at 1x" in frame.splitlines()[0]
    assert "space: pause/resume · +/-: faster/slower" in frame
    assert "r: restart" not in frame  # a replay cannot restart
    sink.press(" ")
    assert replay.paused and "replay paused (space: resume)" in _frame(sink)
    sink.press(" ++")
    assert not replay.paused and replay.speed == 4.0
    assert "replay at 4x" in _frame(sink)
    sink.press("---")
    assert replay.speed == 0.5
    replay.speed = float("inf")
    assert "replay as fast as it goes" in _frame(sink)
    await sink.aclose()


def test_the_replay_clock_stands_still_while_paused_and_runs_at_the_pace() -> None:
    wall = [1000.0]
    replay = ReplayControl(1.0)
    clock = ReplayClock(lambda: wall[0], replay)
    assert clock() == 1000.0  # before a record: the wall clock
    clock.saw([_event("s", 1, 50.0, {}), Alert("s", "sse", "r", Severity.INFO, "", 1, 51.0)])
    assert clock() == 51.0  # the recording's time
    wall[0] += 2.0
    assert clock() == 53.0  # at the recorded pace
    replay.pause()
    wall[0] += 60.0
    assert clock() == 53.0  # paused: no source ages on screen
    replay.resume()
    replay.slower()  # 0.5x
    wall[0] += 4.0
    assert clock() == 55.0
    replay.speed = float("inf")
    wall[0] += 100.0
    assert clock() == 55.0  # as fast as it goes: the newest record's time


async def test_two_recordings_days_apart_each_read_on_their_own_time() -> None:
    """``mux replay a.jsonl b.jsonl``: run b was recorded three days after run
    a; side by side, neither reads "3 days ago" nor stale."""
    sources = (
        SourceInfo("train@a", "sse", recording="a"),
        SourceInfo("train@b", "sse", recording="b"),
    )
    context = _context(sources, replay=ReplayControl(float("inf")))
    context.recordings = ("a", "b")
    sink = TuiSink(TuiOptions(), context, console=_terminal())
    days = 3 * 86400.0
    for name, start in (("train@a", 1000.0), ("train@b", 1000.0 + days)):
        await sink.write([_status(name, State.CONNECTED, start)])
    for i in range(20):  # interleaved by the time since each run's first record
        for name, start in (("train@a", 1000.0), ("train@b", 1000.0 + days)):
            await sink.write([_event(name, i + 1, start + 0.5 + i / 10, {"step": i})])
    frame = _frame(sink)
    for name in ("train@a", "train@b"):
        row = _row(frame, name)
        assert "connected" in row and "0.0 s ago" in row and "10.0/s" in row, row
    assert "2 connected" in frame.splitlines()[0]
    # one recording alone keeps its times as they are
    single = TuiSink(TuiOptions(), _context(sources[:1]), console=_terminal())
    assert single.timeline is None
