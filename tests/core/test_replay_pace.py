"""The pace of ``mux replay``: :class:`mux_core.ReplayControl` and the replay that follows it."""

from __future__ import annotations

import math
import threading

import pytest

from mux_core import ReplayControl


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
