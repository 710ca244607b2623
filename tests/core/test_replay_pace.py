"""The pace of ``mux replay``: :class:`mux_core.ReplayControl` and the replay that follows it."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import mux_core
import mux_core.testing
from mux_core import ReplayControl
from mux_core._config import SinkConfig
from mux_core._plugins import PluginManager
from mux_core._run.replay import SILENCE_PLAYED, Replay
from mux_core.records import Event, encode_jsonl
from mux_core.sink import Overflow
from mux_core.testing import CollectingSink, CollectingSinkOptions


def test_faster_and_slower_step_by_two_between_the_bounds_and_inf() -> None:
    control = ReplayControl(1.0)
    control.faster()
    control.faster()
    assert control.speed == 4.0
    control.slower()
    assert control.speed == 2.0
    control.speed = ReplayControl.MAX_SPEED
    control.faster()
    assert control.speed == math.inf
    control.faster()
    assert control.speed == math.inf
    control.slower()
    assert control.speed == ReplayControl.MAX_SPEED
    control.speed = ReplayControl.MIN_SPEED * 3
    control.slower()
    control.slower()
    assert control.speed == ReplayControl.MIN_SPEED


def test_zero_means_as_fast_as_possible_and_nonsense_is_refused() -> None:
    assert ReplayControl(0).speed == math.inf
    control = ReplayControl()
    assert control.speed == math.inf and not control.paused
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="replay speed"):
            control.speed = bad
    assert control.speed == math.inf


def test_pause_resume_and_watchers_from_another_thread() -> None:
    control = ReplayControl(2.0)
    seen: list[tuple[float, bool]] = []
    control.watch(lambda: seen.append((control.speed, control.paused)))

    def from_a_toolkit() -> None:
        control.pause()
        control.faster()

    worker = threading.Thread(target=from_a_toolkit)
    worker.start()
    worker.join()
    control.resume()
    assert seen == [(2.0, True), (4.0, True), (4.0, False)]
    assert repr(control) == "ReplayControl(speed=4.0, paused=False)"


# -- the replay following its control (MockClock) ---------------------------------

T0 = 1_764_250_000.0


class _Arrivals:
    """When each record reached the sink, on trio's clock; the first one as an event."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.first = trio.Event()

    def offsets(self) -> list[float]:
        return [round(at - self.times[0], 3) for at in self.times]


def _replay(tmp_path: Path, times: list[float], arrivals: _Arrivals, **kwargs: Any) -> Replay:
    path = tmp_path / "run.jsonl"
    path.write_bytes(
        encode_jsonl(
            [
                Event("train", "sse", "metric", str(i), {"step": i}, T0 + at, i + 1)
                for i, at in enumerate(times)
            ]
        )
    )

    class Timed(CollectingSink):
        default_replay_speed = 1.0

        async def write(self, batch: Any) -> None:
            arrivals.times.extend(trio.current_time() for _ in batch)
            arrivals.first.set()
            await super().write(batch)

    class Plugin:
        @mux_core.hookimpl
        def mux_register_sinks(self, register: Any) -> None:
            register("timed", Timed)

    manager = PluginManager()
    manager.register(Plugin(), name="timed")
    sink = SinkConfig("timed", "timed", CollectingSinkOptions(), Overflow.BLOCK, 16, "stop", None)
    return Replay([path], [sink], manager, name="run.jsonl", **kwargs)


async def test_pause_resume_and_faster_move_the_pace_from_where_the_replay_stood(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    arrivals = _Arrivals()
    replay = _replay(tmp_path, [float(i) for i in range(10)], arrivals)
    assert replay.speed == 1.0  # the sink's default_replay_speed: a view's recorded pace
    control = replay.control

    async def press_keys() -> None:
        await arrivals.first.wait()
        start = trio.current_time()
        await trio.sleep_until(start + 2.5)
        control.pause()
        await trio.sleep_until(start + 10.0)
        assert len(arrivals.times) == 3  # nothing while paused
        control.resume()
        await trio.sleep_until(start + 12.0)
        control.faster()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(press_keys)
        result = await replay.run()
    assert result.records == 10
    # 0 1 2 | paused 2.5 .. 10 | 3 at 10.5, 4 at 11.5 | x2 from 12 (position 4.5)
    assert arrivals.offsets() == [0.0, 1.0, 2.0, 10.5, 11.5, 12.25, 12.75, 13.25, 13.75, 14.25]


async def test_paused_before_the_first_record_feeds_nothing_until_resumed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    arrivals = _Arrivals()
    replay = _replay(tmp_path, [0.0, 0.5], arrivals, speed=math.inf)
    replay.control.pause()
    resumed_at: list[float] = []

    async def resume_later() -> None:
        await trio.sleep(30.0)
        assert not arrivals.times
        resumed_at.append(trio.current_time())
        replay.control.resume()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(resume_later)
        await replay.run()
    assert len(arrivals.times) == 2 and arrivals.times[0] >= resumed_at[0]


async def test_a_long_silence_in_the_recording_plays_as_a_few_seconds(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    arrivals = _Arrivals()
    replay = _replay(tmp_path, [0.0, 1.0, 3601.0, 3602.0], arrivals)
    await replay.run()
    assert arrivals.offsets() == [0.0, 1.0, 1.0 + SILENCE_PLAYED, 2.0 + SILENCE_PLAYED]


async def test_slower_halves_the_pace_and_the_speed_the_sinks_ask_for_is_the_slowest(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    arrivals = _Arrivals()
    replay = _replay(tmp_path, [0.0, 1.0, 2.0], arrivals)
    replay.control.slower()
    await replay.run()
    assert arrivals.offsets() == [0.0, 2.0, 4.0]
    # a file-like sink (as fast as possible) beside it does not hurry the view
    collect = SinkConfig("c", "collect", CollectingSinkOptions(), Overflow.BLOCK, 16, "stop", None)
    manager = PluginManager()
    manager.register(mux_core.testing, name="testing")
    alone = Replay([tmp_path / "run.jsonl"], [collect], manager, name="r")
    assert alone.speed == math.inf
    following = _replay(tmp_path, [0.0], _Arrivals(), follow=True)
    assert following.speed == math.inf  # catching up with a live file
