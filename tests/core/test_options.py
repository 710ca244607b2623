"""mux_core.options: the validators every plugin's Options use, and the CLI's seconds type.

Their messages are what a user reads for a bad key (``mux check``), so the
texts are pinned here, and once through the config loader.
"""

from __future__ import annotations

import argparse
import math

import attrs
import pytest

from mux_core.options import (
    Bound,
    at_least_one,
    fraction,
    non_negative,
    positive,
    positive_seconds,
)


@attrs.frozen(kw_only=True)
class PollOptions:
    interval: float = attrs.field(default=1.0, validator=positive("seconds"))
    count: int = attrs.field(default=10, validator=positive())
    keep: int = attrs.field(default=0, validator=non_negative(note="0 = keep all"))
    every: int = attrs.field(default=1, validator=at_least_one())
    jitter: float = attrs.field(default=0.2, validator=fraction())
    below: float = attrs.field(default=0.5, validator=fraction(zero=False))
    delay: float = attrs.field(default=0.5, validator=non_negative(named=False))


def _message(**options: float) -> str:
    with pytest.raises(ValueError) as caught:
        PollOptions(**options)  # type: ignore[arg-type]
    return str(caught.value)


def test_values_in_range_pass() -> None:
    options = PollOptions(
        interval=0.001, count=1, keep=0, every=1, jitter=0.0, below=0.999, delay=0.0
    )
    assert options.interval == 0.001 and options.keep == 0 and options.jitter == 0.0
    assert PollOptions(interval=math.inf).interval == math.inf  # "forever" is > 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"interval": 0.0}, "interval must be > 0 seconds, got 0.0"),
        ({"interval": -2.5}, "interval must be > 0 seconds, got -2.5"),
        ({"count": 0}, "count must be > 0, got 0"),
        ({"keep": -1}, "keep must be >= 0 (0 = keep all), got -1"),
        ({"every": 0}, "every must be >= 1, got 0"),
        ({"jitter": 1.0}, "jitter must be in [0, 1), got 1.0"),
        ({"jitter": -0.1}, "jitter must be in [0, 1), got -0.1"),
        ({"below": 0.0}, "below must be in (0, 1), got 0.0"),
        ({"below": 1.0}, "below must be in (0, 1), got 1.0"),
        ({"delay": -1.0}, "must be >= 0, got -1.0"),  # named=False: the loader names the key
    ],
)
def test_out_of_range_values_are_refused_with_the_key_and_the_bound(
    options: dict[str, float], message: str
) -> None:
    assert _message(**options) == message


@pytest.mark.parametrize("key", ["interval", "keep", "every", "jitter", "below", "delay"])
def test_nan_passes_no_check(key: str) -> None:
    assert _message(**{key: math.nan}).endswith("got nan")


def test_problem_gives_the_text_without_raising() -> None:
    bound = at_least_one(note="records", named=False)
    assert isinstance(bound, Bound)
    assert bound.problem(5) is None
    assert bound.problem(0) == "must be >= 1 (records), got 0"
    assert repr(bound) == "<must be >= 1>"


def test_the_config_loader_shows_the_message_at_the_key() -> None:
    from mux_core._config import parse_config
    from mux_core._plugins import PluginManager
    from mux_core.errors import ConfigError

    plugins = PluginManager()
    plugins.load_entry_points()
    text = (
        '[[sources]]\nname = "a"\ntransport = "rest"\nurl = "http://127.0.0.1:9/"\n'
        "interval = 0\n\n"
        '[[sinks]]\ntype = "file"\npath = "out.jsonl"\nkeep = -1\nbuffer = 0\n'
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, plugins=plugins, path="mon.toml")
    assert str(caught.value).splitlines() == [
        "mon.toml:5: sources[0].interval: interval must be > 0, got 0.0",
        "mon.toml:10: sinks[0].keep: keep must be >= 0, got -1",
        "mon.toml:11: sinks[0].buffer: must be >= 1 (records), got 0",
    ]


@pytest.mark.parametrize(("text", "seconds"), [("2.5", 2.5), ("1", 1.0), ("1e-3", 0.001)])
def test_positive_seconds_reads_a_duration(text: str, seconds: float) -> None:
    assert positive_seconds(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "expected a positive number of seconds, got '0'"),
        ("-1", "expected a positive number of seconds, got '-1'"),
        ("nan", "expected a positive number of seconds, got 'nan'"),
        ("soon", "expected seconds as a number, got 'soon'"),
    ],
)
def test_positive_seconds_refuses_what_is_no_duration(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        positive_seconds(text)
    assert str(caught.value) == message


def test_positive_seconds_is_a_usage_error_on_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser(prog="mux run")
    parser.add_argument("--for", dest="duration", type=positive_seconds)
    assert parser.parse_args(["--for", "3"]).duration == 3.0
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--for", "0"])
    assert exited.value.code == 2
    assert "expected a positive number of seconds, got '0'" in capsys.readouterr().err
