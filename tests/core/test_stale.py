"""Stale sources: StaleWatch's rule, the ``stale_after`` key, SourceInfo.stale_after.

Times are given explicitly (seconds on the watch's clock), as a view's
ViewClock or the trio clock would give them: no sleeps.
"""

from __future__ import annotations

import math
import textwrap

import pytest
import trio

from mux_core._config import parse_config, render_config
from mux_core._plugins import PluginManager
from mux_core._run.engine import Engine
from mux_core.errors import ConfigError
from mux_core.testing import Collectors
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
