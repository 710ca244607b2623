"""Stale sources: StaleWatch's rule, the ``stale_after`` key, SourceInfo.stale_after.

Times are given explicitly (seconds on the watch's clock), as a view's
ViewClock or the trio clock would give them: no sleeps.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import msgspec
import pytest
import trio
import trio.testing

from mux_core._config import parse_config, render_config
from mux_core._plugins import PluginManager
from mux_core._run.engine import Engine
from mux_core._run.quality import QualityTracker, format_quality_table
from mux_core.errors import ConfigError
from mux_core.hookspecs import hookimpl
from mux_core.records import (
    Batch,
    Event,
    Quality,
    Record,
    State,
    Status,
    decode_jsonl,
    encode_jsonl,
)
from mux_core.sink import SinkContext
from mux_core.testing import CollectingSinkOptions, Collectors
from mux_core.transport import Session
from mux_core.views import StaleWatch


def _fed(watch: StaleWatch, start: float, every: float, count: int) -> float:
    """Feed ``count`` events ``every`` seconds from ``start``; the last one's time."""
    at = start
    for n in range(count):
        at = start + n * every
        watch.saw(at)
    return at


# -- the rule ----------------------------------------------------------------


def test_nothing_is_stale_before_a_first_event() -> None:
    watch = StaleWatch()
    assert watch.is_stale(1e9) is False
    assert watch.quiet_for(1e9) is None
    assert watch.threshold() == 5.0


def test_a_fast_source_is_stale_after_the_floor() -> None:
    watch = StaleWatch()
    last = _fed(watch, 100.0, 0.1, 50)  # 10 events/s: 10 x 0.1 s is under the floor
    assert watch.threshold() == 5.0
    assert not watch.is_stale(last + 4.9)
    assert watch.is_stale(last + 5.1)
    assert watch.quiet_for(last + 5.1) == pytest.approx(5.1)


def test_the_threshold_is_learned_from_the_sources_own_rhythm() -> None:
    watch = StaleWatch()
    last = _fed(watch, 0.0, 2.0, 10)  # one event every 2 s
    assert watch.threshold() == pytest.approx(20.0)
    assert not watch.is_stale(last + 19.0)
    assert watch.is_stale(last + 21.0)


def test_the_median_ignores_one_long_silence() -> None:
    watch = StaleWatch()
    last = _fed(watch, 0.0, 1.0, 20)
    watch.saw(last + 300.0)  # an outage, then events again
    last = _fed(watch, last + 300.0, 1.0, 5)
    assert watch.threshold() == pytest.approx(10.0)


def test_only_the_newest_intervals_count() -> None:
    watch = StaleWatch()
    last = _fed(watch, 0.0, 3.0, 40)  # slow at first
    assert watch.threshold() == pytest.approx(30.0)
    _fed(watch, last + 0.1, 0.1, StaleWatch.GAPS + 1)  # then fast: the slow gaps are gone
    assert watch.threshold() == 5.0


def test_events_of_one_batch_make_no_interval() -> None:
    per_event = StaleWatch()
    per_batch = StaleWatch()
    for n in range(10):
        at = n * 2.0
        for _ in range(64):  # a batch: one received_at for every event
            per_event.saw(at)
        per_batch.saw(at)
    assert per_event.threshold() == per_batch.threshold() == pytest.approx(20.0)


def test_the_configured_threshold_overrides_the_learned_one() -> None:
    watch = StaleWatch(stale_after=2.0)
    last = _fed(watch, 0.0, 10.0, 10)  # learned would be 100 s
    assert watch.threshold() == 2.0
    assert watch.is_stale(last + 2.5)
    long = StaleWatch(stale_after=600.0)
    last = _fed(long, 0.0, 0.1, 10)
    assert not long.is_stale(last + 599.0)
    assert long.is_stale(last + 601.0)


def test_the_floor_can_be_chosen() -> None:
    watch = StaleWatch(floor=1.0)
    last = _fed(watch, 0.0, 0.01, 20)
    assert watch.threshold() == 1.0
    assert watch.is_stale(last + 1.5)


def test_it_recovers_by_itself_when_events_come_back() -> None:
    watch = StaleWatch()
    last = _fed(watch, 0.0, 0.1, 30)
    hung = last + 18.0  # SIGSTOP for 18 s
    assert watch.is_stale(hung)
    watch.saw(hung)
    assert not watch.is_stale(hung + 0.1)
    last = _fed(watch, hung + 0.1, 0.1, 40)
    assert watch.threshold() == 5.0
    assert not watch.is_stale(last + 1.0)


def test_a_time_that_goes_back_starts_measuring_again() -> None:
    watch = StaleWatch()
    _fed(watch, 1000.0, 1.0, 10)
    watch.saw(10.0)  # a replay starting over: its clock is the recording's
    assert watch.quiet_for(12.0) == pytest.approx(2.0)
    assert not watch.is_stale(12.0)
    assert watch.threshold() == pytest.approx(10.0)  # no interval of -990 s


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_a_threshold_must_be_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="stale_after"):
        StaleWatch(stale_after=bad)


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_a_floor_must_be_finite_and_not_negative(bad: float) -> None:
    with pytest.raises(ValueError, match="floor"):
        StaleWatch(floor=bad)


# -- the `stale_after` key ---------------------------------------------------------

_SOURCE = """\
[[sources]]
name = "a"
transport = "scripted"
{extra}

[[sinks]]
type = "collect"
"""


def _plugins() -> PluginManager:
    plugins = PluginManager()
    plugins.register(Collectors(), name="collectors")
    return plugins


def test_stale_after_is_read_and_shown_by_mux_check() -> None:
    config = parse_config(
        _SOURCE.format(extra="stale_after = 30"), path="mon.toml", plugins=_plugins()
    )
    assert config.sources[0].stale_after == 30.0
    assert "stale_after = 30.0" in render_config(config)
    plain = parse_config(_SOURCE.format(extra=""), path="mon.toml", plugins=_plugins())
    assert plain.sources[0].stale_after is None
    assert "stale_after" not in render_config(plain)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "stale_after: must be a finite number of seconds > 0, got 0"),
        ("-2.5", "stale_after: must be a finite number of seconds > 0, got -2.5"),
        ("inf", "stale_after: must be a finite number of seconds > 0, got inf"),
        ('"30s"', 'stale_after: expected a number of seconds, got a string "30s"'),
        ("true", "stale_after: expected a number of seconds, got a boolean true"),
    ],
)
def test_a_bad_stale_after_is_an_error_at_its_line(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            _SOURCE.format(extra=f"stale_after = {value}"), path="mon.toml", plugins=_plugins()
        )
    assert f"mon.toml:4: sources[0].{message}" in str(info.value)


async def test_sinks_see_each_sources_stale_after() -> None:
    collectors = Collectors()
    plugins = PluginManager()
    plugins.register(collectors, name="collectors")
    toml = textwrap.dedent(
        """
        [[sources]]
        name = "slow"
        transport = "scripted"
        stale_after = 120.0

        [[sources]]
        name = "fast"
        transport = "scripted"

        [[sinks]]
        type = "collect"
        """
    )
    engine = Engine(parse_config(toml, path="t.toml", plugins=plugins), plugins)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.run)
        sink = await collectors.sink("collect", timeout=10)
        engine.request_stop("test done")
    by_name = {info.name: info.stale_after for info in sink.context.sources}
    assert by_name == {"slow": 120.0, "fast": None}


# -- the quality tracker: the same rule, on the trio clock ---------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _tracked(clock: _Clock, **kwargs: Any) -> QualityTracker:
    return QualityTracker("s", "sse", clock=clock, wall=lambda: 1_764_250_000.0, **kwargs)


def _status(state: State) -> list[Record]:
    return [Status("s", "sse", state, 1, None, "", 0.0)]


def _tick(tracker: QualityTracker, clock: _Clock, seconds: float, every: float = 0.1) -> None:
    """Events ``every`` seconds for ``seconds`` on ``clock``."""
    end = clock.now + seconds
    while clock.now < end:
        tracker.observe([Event("s", "sse", "m", None, {}, 0.0, 1)])
        clock.now += every


def test_the_quality_record_says_whether_the_source_is_stale() -> None:
    clock = _Clock()
    tracker = _tracked(clock)
    assert tracker.snapshot().stale is None  # no connection yet
    tracker.observe(_status(State.CONNECTED))
    assert tracker.snapshot().stale is False  # connected, no event yet
    _tick(tracker, clock, 3.0)
    assert tracker.snapshot().stale is False
    clock.now += 4.0
    assert tracker.snapshot().stale is False  # quiet for 4 s: under the 5 s floor
    clock.now += 2.0
    assert tracker.snapshot().stale is True
    _tick(tracker, clock, 0.2)  # the trainer goes on
    assert tracker.snapshot().stale is False
    tracker.observe(_status(State.DISCONNECTED))
    assert tracker.snapshot().stale is None
    tracker.observe(_status(State.CONNECTED))
    _tick(tracker, clock, 1.0)
    clock.now += 10.0
    tracker.observe(_status(State.STOPPED))  # stopped while hung
    clock.now += 1.0
    assert tracker.snapshot().stale is True


def test_a_source_that_ends_while_fresh_or_down_is_not_called_stale() -> None:
    clock = _Clock()
    fresh = _tracked(clock)
    down = _tracked(clock)
    for tracker in (fresh, down):
        tracker.observe(_status(State.CONNECTED))
        _tick(tracker, clock, 1.0)
    fresh.observe(_status(State.ENDED))  # the server said it is over, right after an event
    down.observe(_status(State.DISCONNECTED))
    clock.now += 10.0
    down.observe(_status(State.MAX_RETRIES_EXCEEDED))
    assert fresh.snapshot().stale is False  # 10 s later: it ended fresh
    assert down.snapshot().stale is None  # it was not connected when it gave up


def test_a_reconnected_source_is_not_stale_at_once() -> None:
    clock = _Clock()
    tracker = _tracked(clock)
    tracker.observe(_status(State.CONNECTED))
    _tick(tracker, clock, 2.0)
    tracker.observe(_status(State.SERVER_UNAVAILABLE))
    clock.now += 60.0
    tracker.observe(_status(State.CONNECTED))
    clock.now += 1.0
    assert tracker.snapshot().stale is False  # the last event is 61 s old, the connection 1 s
    clock.now += 5.0
    assert tracker.snapshot().stale is True  # connected 6 s and nothing


def test_the_tracker_uses_the_sources_stale_after() -> None:
    clock = _Clock()
    tracker = _tracked(clock, stale_after=30.0)
    tracker.observe(_status(State.CONNECTED))
    _tick(tracker, clock, 1.0)
    clock.now += 29.0
    assert tracker.snapshot().stale is False
    clock.now += 2.0
    assert tracker.snapshot().stale is True


def test_records_written_before_the_flag_read_back_without_it() -> None:
    old = (
        b'{"type":"quality","source":"a","transport":"sse","window":60.0,"uptime":1.0,'
        b'"reconnects":0,"blind_max":null,"events":5,"gaps":0,"lag_p99":null,"at":1.0}'
    )
    record = decode_jsonl(old)
    assert isinstance(record, Quality) and record.stale is None
    assert json.loads(encode_jsonl([msgspec.structs.replace(record, stale=True)]))["stale"]


# -- a run: a hung trainer shows stale, and fresh again ---------------------------------


@attrs.frozen(kw_only=True)
class _HangOptions:
    #: Seconds of events (every 0.1 s), of silence, of events, then silence until stopped.
    phases: list[float] = attrs.field(factory=list)


class _HangTransport:
    """A trainer that sends 10 events/s, hangs, goes on, and hangs again (trio clock)."""

    Options: ClassVar[type[_HangOptions]] = _HangOptions

    def __init__(self, options: _HangOptions) -> None:
        self.options = options

    async def run_session(self, session: Session) -> None:
        await session.connected()
        sending = True
        n = 0
        for seconds in self.options.phases:
            end = trio.current_time() + seconds
            while sending and trio.current_time() < end:
                n += 1
                await session.emit([("metric", str(n), b'{"loss": 0.5}')])
                await trio.sleep(0.1)
            if not sending:
                await trio.sleep(seconds)
            sending = not sending
        await trio.sleep_forever()


class _HangPlugin:
    @hookimpl
    def mux_register_transports(self, register: Callable[[str, type], None]) -> None:
        register("hang", _HangTransport)


class _TimedSink:
    """Keeps each Quality record with the trio time it arrived."""

    Options = CollectingSinkOptions
    seen: ClassVar[list[tuple[float, Quality]]] = []

    def __init__(self, options: CollectingSinkOptions, context: SinkContext) -> None:
        self.options = options

    async def write(self, batch: Batch) -> None:
        now = trio.current_time()
        _TimedSink.seen.extend((now, r) for r in batch if type(r) is Quality)


class _TimedSinkPlugin:
    @hookimpl
    def mux_register_sinks(self, register: Callable[[str, type], None]) -> None:
        register("timed", _TimedSink)


async def test_a_hung_trainer_is_stale_within_seconds_and_fresh_when_it_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plugins = PluginManager()
    plugins.register(_HangPlugin(), name="hang")
    plugins.register(_TimedSinkPlugin(), name="timed")
    toml = """
        quality_interval = 0.5
        [[sources]]
        name = "train"
        transport = "hang"
        phases = [10.0, 18.0, 10.0]   # up to t = 10, hung 10-28, up 28-38, hung after
        [[sinks]]
        type = "timed"
    """
    config = parse_config(textwrap.dedent(toml), path="t.toml", plugins=plugins)
    _TimedSink.seen.clear()
    result = await Engine(config, plugins, duration=50.0).run()

    stale_at = [at for at, quality in _TimedSink.seen if quality.stale]
    live = [(at, q.stale) for at, q in _TimedSink.seen if q.state is State.CONNECTED]
    # Stale from 5 s (the floor: 10 events/s) after the last event before each hang
    # (t = 10 and 38) until the next event (t = 28), seen by the next record (every 0.5 s).
    first_hang = [at for at in stale_at if at <= 28.0]
    assert 15.0 <= min(first_hang) <= 15.5
    assert 27.5 <= max(first_hang) <= 28.0
    assert len(first_hang) == round((max(first_hang) - min(first_hang)) / 0.5) + 1
    assert not [at for at in stale_at if 28.0 < at <= 43.0]  # going on: fresh again
    second_hang = [stale for at, stale in live if at > 43.0]
    assert len(second_hang) >= 13 and all(second_hang)
    # Stopped while hung: its last record and `mux run`'s last table say so.
    final = result.quality["train"]
    assert final.state is State.STOPPED and final.stale is True
    assert _TimedSink.seen[-1][1] == final
    row = format_quality_table([final]).splitlines()[1]
    assert row.split()[:2] == ["train", "stopped"]
    assert row.split()[-2] == "STALE"
    assert "STALE" not in format_quality_table([_TimedSink.seen[2][1]])
