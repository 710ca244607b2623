"""Properties of the retry schedule: jitter band, growth to the cap, giving up."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mux_core.retry import RetryPolicy

policies = st.builds(
    RetryPolicy,
    initial_delay=st.floats(0.0, 10.0),
    max_delay=st.floats(0.0, 120.0),
    multiplier=st.floats(1.0, 5.0),
    jitter=st.floats(0.0, 0.99),
    max_attempts=st.integers(0, 20),
)


@given(policies, st.integers(1, 200), st.integers(0, 2**32))
def test_every_delay_is_inside_the_jitter_band_and_the_cap(
    policy: RetryPolicy, failures: int, seed: int
) -> None:
    base = policy.base_delay(failures)
    delay = policy.delay(failures, rng=random.Random(seed))
    assert delay <= policy.max_delay
    assert base * (1 - policy.jitter) - 1e-9 <= delay <= base * (1 + policy.jitter) + 1e-9


@given(policies, st.integers(1, 100))
def test_base_delay_grows_monotonically_up_to_the_cap(policy: RetryPolicy, failures: int) -> None:
    assert policy.base_delay(failures) <= policy.base_delay(failures + 1) <= policy.max_delay


def test_base_delay_is_exponential_then_capped() -> None:
    policy = RetryPolicy(initial_delay=0.5, multiplier=2.0, max_delay=3.0, jitter=0.0)
    assert [policy.base_delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_a_very_long_outage_does_not_overflow() -> None:
    policy = RetryPolicy(initial_delay=1.0, multiplier=10.0, max_delay=30.0)
    assert policy.base_delay(10_000) == 30.0


def test_a_server_retry_hint_replaces_the_initial_delay() -> None:
    policy = RetryPolicy(initial_delay=0.5, multiplier=2.0, max_delay=30.0, jitter=0.0)
    assert policy.delay(1, initial=3.0) == 3.0
    assert policy.delay(2, initial=3.0) == 6.0
    assert policy.delay(1, initial=100.0) == 30.0


@given(st.floats(-5.0, 1000.0), st.floats(0.0, 60.0), st.floats(0.0, 5.0))
def test_retry_after_is_honoured_within_min_and_max_delay(
    retry_after: float, max_delay: float, min_delay: float
) -> None:
    policy = RetryPolicy(max_delay=max_delay, min_delay=min_delay)
    floor = min(min_delay, max_delay)
    assert floor <= policy.server_delay(retry_after) <= max_delay
    if floor <= retry_after <= max_delay:
        assert policy.server_delay(retry_after) == retry_after


@given(st.integers(0, 50), st.integers(0, 100))
def test_gives_up_exactly_at_max_attempts(max_attempts: int, failures: int) -> None:
    policy = RetryPolicy(max_attempts=max_attempts)
    expected = max_attempts > 0 and failures >= max_attempts
    assert policy.gives_up(failures) is expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("initial_delay", -1.0),
        ("max_delay", -0.1),
        ("multiplier", 0.5),
        ("jitter", 1.0),
        ("max_attempts", -1),
        ("connect_timeout", 0.0),
    ],
)
def test_bad_values_are_rejected(field: str, value: float) -> None:
    options: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match="must be"):
        RetryPolicy(**options)
