"""Connection quality: figures from scripted outages on trio's MockClock.

A scripted transport (tests/helpers/quality.py) connects, sends, stays up for
exactly so many seconds and drops; the retry policy waits exactly 5 s (no
jitter). So the uptime, reconnects and time blind of each ``quality`` record
are known to the millisecond.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from mux_core import Quality, decode_jsonl, encode_jsonl, record_to_dict
from mux_core._plugins import PluginManager
from mux_core._run.quality import QualityTracker, format_quality_table
from mux_core.records import Event, State, Status
from mux_core.testing import CollectingSink
from tests.helpers.quality import outage_engine

#: The keys every quality record has (docs/architecture.md, Records), then the ones mux adds.
REQUIRED_KEYS = [
    "type",
    "source",
    "transport",
    "window",
    "uptime",
    "reconnects",
    "blind_max",
    "events",
    "gaps",
    "lag_p99",
    "at",
]
ALL_KEYS = [
    *REQUIRED_KEYS,
    "state",
    "outages",
    "blind_p50",
    "events_per_s",
    "staleness",
    "lag_p50",
    "reconnects_total",
    "blind_total",
    "events_total",
    "gaps_total",
    "dropped",
    "stale",
]


def _qualities() -> list[Quality]:
    return [r for r in CollectingSink.instances["collect"].records if type(r) is Quality]


async def test_quality_records_report_the_scripted_outages_exactly(
    plugins: PluginManager, autojump_clock: trio.testing.MockClock
) -> None:
    engine = outage_engine(plugins, "quality_interval = 25.0")
    result = await engine.run()

    at25, at50, final = _qualities()
    # t = 25: up 0-10 and 15-25; one outage of 5 s; ids 4 and 5 never came.
    assert (at25.window, at25.uptime, at25.reconnects) == (25.0, 0.8, 1)
    assert (at25.outages, at25.blind_p50, at25.blind_max, at25.blind_total) == (1, 5.0, 5.0, 5.0)
    assert (at25.events, at25.gaps, at25.state) == (5, 2, State.CONNECTED)
    assert at25.events_per_s == 0.2
    # t = 50: up 10 + 20 + 5 of 50 s; the second outage lasted 10 s (35-45).
    assert (at50.window, at50.uptime, at50.reconnects, at50.outages) == (50.0, 0.7, 2, 2)
    assert (at50.blind_p50, at50.blind_max, at50.blind_total) == (5.0, 10.0, 15.0)
    assert (at50.events, at50.gaps, at50.events_total) == (6, 2, 6)
    # t = 60, the run stops: 45 s up of 60 -- sent to the sinks and kept for `mux run`.
    assert (final.window, final.uptime, final.reconnects, final.outages) == (60.0, 0.75, 2, 2)
    assert (final.reconnects_total, final.gaps_total, final.state) == (2, 2, State.STOPPED)
    assert final.lag_p99 is None and final.lag_p50 is None  # no lag_field
    assert final.dropped == {"collect": 0}
    assert result.quality == {"train": final}


async def test_the_window_covers_the_last_quality_window_seconds(
    plugins: PluginManager, autojump_clock: trio.testing.MockClock
) -> None:
    """quality_window = 20 with a record every 12 s: the final record (t = 60)
    counts from the last record at or before t = 40, i.e. t = 36."""
    engine = outage_engine(plugins, "quality_interval = 12.0\nquality_window = 20.0")
    await engine.run()
    final = _qualities()[-1]
    assert final.window == 24.0
    assert final.uptime == round(15 / 24, 6)  # up 45-60 of 36-60
    assert (final.reconnects, final.outages, final.blind_max) == (1, 1, 10.0)
    assert (final.events, final.gaps) == (1, 0)  # only id 8 arrived after t = 36
    assert (final.reconnects_total, final.events_total, final.gaps_total) == (2, 6, 2)


async def test_quality_interval_0_sends_no_record_but_the_run_still_measures(
    plugins: PluginManager, autojump_clock: trio.testing.MockClock
) -> None:
    engine = outage_engine(plugins, "quality_interval = 0")
    result = await engine.run()
    assert _qualities() == []
    assert result.quality["train"].uptime == 0.75


async def test_lag_comes_from_the_lag_field(
    plugins: PluginManager, autojump_clock: trio.testing.MockClock
) -> None:
    """Each payload's "t" says it was made 2.5 s before it was sent."""
    engine = outage_engine(plugins, source='lag_field = "t"\nlate = 2.5')
    result = await engine.run()
    final = result.quality["train"]
    assert final.lag_p50 == pytest.approx(2.5, abs=0.05)
    assert final.lag_p99 == pytest.approx(2.5, abs=0.05)


async def test_the_quality_record_has_the_documented_keys_and_reads_back(
    plugins: PluginManager, autojump_clock: trio.testing.MockClock
) -> None:
    engine = outage_engine(plugins, "quality_interval = 25.0")
    await engine.run()
    record = _qualities()[0]
    line = encode_jsonl([record])
    assert list(json.loads(line)) == ALL_KEYS
    assert list(record_to_dict(record)) == ALL_KEYS
    assert decode_jsonl(line) == record
    assert json.loads(line)["type"] == "quality"


# -- the tracker alone -----------------------------------------------------------


class _Clocks:
    def __init__(self) -> None:
        self.now = 0.0
        self.wall = 1_764_250_000.0


def _tracker(clocks: _Clocks, **kwargs: Any) -> QualityTracker:
    return QualityTracker("s", "sse", clock=lambda: clocks.now, wall=lambda: clocks.wall, **kwargs)


def _events(ids: list[str | None], received_at: float = 0.0, data: Any = None) -> list[Event]:
    return [
        Event("s", "sse", "message", id_, data if data is not None else {}, received_at, n)
        for n, id_ in enumerate(ids, 1)
    ]


def _status(state: State) -> list[Status]:
    return [Status("s", "sse", state, 1, None, "", 0.0)]


def test_gaps_count_missing_numeric_ids_not_repeats_or_restarts() -> None:
    clocks = _Clocks()
    tracker = _tracker(clocks)
    tracker.observe(_events(["1", "2", "3"]))  # in order: the per-batch fast path
    tracker.observe(_events(["7", "8"]))  # 4, 5, 6 missing between batches
    tracker.observe(_events(["8", "8", "8", "10"]))  # SSE carries an id over; 9 missing
    tracker.observe(_events([None, "11"]))  # an event without an id
    tracker.observe(_events(["1", "2"]))  # the trainer restarted: no gap
    tracker.observe(_events(["4"]))  # 3 missing in the new run
    assert tracker.gaps_total == 3 + 1 + 1
    assert tracker.events_total == 14


def test_ids_that_are_not_numbers_are_skipped() -> None:
    tracker = _tracker(_Clocks())
    tracker.observe(_events(["1", "2", "2-eval"]))  # the demo trainer's eval events
    tracker.observe(_events(["3-eval", "5"]))
    assert tracker.gaps_total == 2


def test_a_stream_of_ids_that_are_never_numbers_is_not_looked_at_again() -> None:
    tracker = _tracker(_Clocks())
    tracker.observe(_events([f"uuid-{n}" for n in range(100)]))
    tracker.observe(_events(["1", "9"]))
    assert tracker.gaps_total == 0


@pytest.mark.parametrize(
    ("stamp", "lag"),
    [
        (1_764_249_998.5, 1.5),  # seconds since the epoch
        (1_764_249_998_500, 1.5),  # milliseconds
        (1_764_249_998_500_000_000, 1.5),  # nanoseconds
        ("2025-11-27T13:26:38.500Z", 1.5),  # ISO 8601
        ("2025-11-27T13:26:38.500", 1.5),  # ISO 8601 without an offset: UTC
        ("1764249998.5", 1.5),  # a number as text
    ],
)
def test_lag_reads_timestamps_in_the_usual_forms(stamp: Any, lag: float) -> None:
    clocks = _Clocks()
    received = 1_764_250_000.0  # 2025-11-27T13:26:40Z
    tracker = _tracker(clocks, lag_field="t")
    raw = Event.from_bytes("s", "sse", "m", "1", json.dumps({"t": stamp}).encode(), received, 1)
    tracker.observe([raw])
    decoded = Event("s", "sse", "m", "2", {"t": stamp}, received, 2)
    tracker.observe([decoded])
    quality = tracker.snapshot()
    assert quality.lag_p50 == quality.lag_p99 == pytest.approx(lag, abs=1e-3)


def test_lag_percentiles_and_unusable_stamps() -> None:
    clocks = _Clocks()
    tracker = _tracker(clocks, lag_field="t")
    received = clocks.wall
    for lag in range(1, 101):  # lags 1..100 s, one batch each
        tracker.observe([Event("s", "sse", "m", None, {"t": received - lag}, received, lag)])
    for junk in ("soon", True, None, float("nan")):
        tracker.observe([Event("s", "sse", "m", None, {"t": junk}, received, 0)])
    quality = tracker.snapshot()
    assert (quality.lag_p50, quality.lag_p99) == (50.0, 99.0)


def test_blind_time_of_an_outage_still_going_on_and_a_terminal_state() -> None:
    clocks = _Clocks()
    tracker = _tracker(clocks)
    tracker.observe(_status(State.CONNECTING))
    clocks.now = 2.0
    tracker.observe(_status(State.CONNECTED))
    clocks.now = 6.0
    tracker.observe(_status(State.DISCONNECTED))
    clocks.now = 10.0
    quality = tracker.snapshot()
    assert (quality.uptime, quality.outages, quality.blind_max) == (0.4, 1, 4.0)
    assert quality.reconnects == 0 and quality.state is State.DISCONNECTED
    clocks.now = 12.0
    tracker.observe(_status(State.MAX_RETRIES_EXCEEDED))  # blind from 6 until it gave up
    clocks.now = 20.0
    quality = tracker.snapshot()
    assert (quality.uptime, quality.outages, quality.blind_max, quality.blind_total) == (
        0.2,
        1,
        6.0,
        6.0,
    )


def test_staleness_is_the_age_of_the_newest_event() -> None:
    clocks = _Clocks()
    tracker = _tracker(clocks)
    assert tracker.snapshot().staleness is None
    tracker.observe(_events(["1"], received_at=clocks.wall - 7.25))
    assert tracker.snapshot().staleness == 7.25


def test_relayed_records_count_as_events_and_other_sources_statuses_are_ignored() -> None:
    tracker = _tracker(_Clocks())
    other = Status("elsewhere", "sse", State.CONNECTED, 1, None, "", 0.0)
    tracker.observe([other, *_events(["1", "2"])])
    assert tracker.events_total == 2
    assert tracker.state is None and not tracker.connected


def test_the_final_table_has_a_row_per_source() -> None:
    quality = Quality(
        "train-sse", "sse", 60.0, 0.75, 1, 12.5, 1200, 3, 0.25, 0.0, state=State.STOPPED
    )
    quality2 = Quality("train-ws", "ws", 5.0, 1.0, 0, None, 10, 0, None, 0.0)
    table = format_quality_table([quality, quality2]).splitlines()
    assert table[0].split() == [
        "source",
        "state",
        "window",
        "uptime",
        "reconnects",
        "blind",
        "p50/max",
        "events",
        "events/s",
        "gaps",
        "lag",
        "p50/p99",
        "stale",
    ]
    assert table[1].split()[:7] == ["train-sse", "stopped", "1m00s", "75.0%", "1", "-", "1200"]
    assert table[2].split()[:4] == ["train-ws", "-", "5.0s", "100.0%"]
