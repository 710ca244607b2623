"""An ``Options.check`` reports every problem it finds at once, each at its key's line.

``raise_problems`` (or an ``ExceptionGroup`` of ``ValueError``, nested groups
too) gives ``mux check`` several problems of one table; a single
``ValueError`` still works as before. The exit code of a config error stays 2.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mux_core.testing
from mux_core import ConfigError, PluginManager, parse_config
from mux_core.options import raise_problems

PLUGIN = """
from __future__ import annotations

import attrs

from mux_core import Session, hookimpl
from mux_core.hookspecs import Register
from mux_core.options import raise_problems


@attrs.frozen(kw_only=True)
class FeedOptions:
    #: The feed's URL.
    url: str
    #: Extra request headers.
    headers: dict[str, str] = attrs.field(factory=dict)
    #: The topic to follow.
    topic: str = ""
    #: Seconds per batch.
    window: float = 1.0
    #: How check() reports: "problems" (raise_problems), "nested" (groups in a
    #: group), "one" (a single ValueError, as before), "bug" (a TypeError among them).
    report: str = "problems"

    @classmethod
    def check(cls, options: FeedOptions) -> None:
        found = [
            None
            if options.url.startswith(("http://", "https://"))
            else f"url: {options.url!r} must start with http:// or https://",
            *(
                f"headers.{name}: the value must be printable ASCII"
                for name, value in options.headers.items()
                if not value.isprintable()
            ),
            "" if options.topic else "topic: must not be empty; name the topic to follow",
            "a window over 60 s needs a topic of its own" if options.window > 60 else None,
        ]
        problems = [problem for problem in found if problem]
        if options.report == "one":
            raise ValueError(problems[0])
        if options.report == "bug":
            raise ExceptionGroup("feed", [ValueError(problems[0]), TypeError("a bug")])
        if options.report == "nested":
            raise ExceptionGroup(
                "feed",
                [
                    ValueError(problems[0]),
                    ExceptionGroup("more", [ValueError(p) for p in problems[1:]]),
                ],
            )
        raise_problems(found)


class FeedTransport:
    Options = FeedOptions

    def __init__(self, options: FeedOptions) -> None:
        self.options = options

    async def run_session(self, session: Session) -> None:
        await session.connected()


@hookimpl
def mux_register_transports(register: Register) -> None:
    register("feed", FeedTransport)
"""

#: Three independent mistakes in one table, each on its own line (4, 5, 6).
CONFIG = """\
[[sources]]
name = "news"
transport = "feed"
url = "ftp://feeds.example/news"
headers = { X-Token = "abc\\u0007" }
topic = ""
window = 5.0
{extra}

[[sinks]]
type = "{sink}"
"""


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "feed_mux_plugin.py").write_text(PLUGIN)
    return site


def test_mux_check_prints_every_problem_of_a_table_at_its_line(tmp_path: Path) -> None:
    site = _site(tmp_path)
    config = tmp_path / "feed.toml"
    config.write_text(CONFIG.replace("{extra}", "").replace("{sink}", "log"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        "MUX_PLUGIN_MODULES": "feed_mux_plugin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "mux_core", "check", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2  # a config error, as ever
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"mux: error: {config}:4: sources[0].url: 'ftp://feeds.example/news' must start with "
        "http:// or https://",
        f"{config}:5: sources[0].headers.X-Token: the value must be printable ASCII",
        f"{config}:6: sources[0].topic: must not be empty; name the topic to follow",
    ]


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PluginManager:
    monkeypatch.syspath_prepend(str(_site(tmp_path)))
    manager = PluginManager()
    manager.register(importlib.import_module("feed_mux_plugin"), name="feed")
    manager.register(mux_core.testing, name="testing")
    return manager


def _errors(extra: str, plugins: PluginManager) -> list[str]:
    text = CONFIG.replace("{extra}", extra).replace("{sink}", "collect")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, path="feed.toml", plugins=plugins)
    return str(caught.value).splitlines()


def test_a_problem_of_the_whole_table_points_at_its_header(plugins: PluginManager) -> None:
    text = CONFIG.replace("window = 5.0\n{extra}", 'window = 90.0\nreport = "nested"')
    text = text.replace("{sink}", "collect")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, path="feed.toml", plugins=plugins)
    assert str(caught.value).splitlines() == [
        "feed.toml:1: sources[0]: a window over 60 s needs a topic of its own",
        "feed.toml:4: sources[0].url: 'ftp://feeds.example/news' must start with http:// or https://",
        "feed.toml:5: sources[0].headers.X-Token: the value must be printable ASCII",
        "feed.toml:6: sources[0].topic: must not be empty; name the topic to follow",
    ]


def test_a_single_value_error_still_reports_one(plugins: PluginManager) -> None:
    assert _errors('report = "one"', plugins) == [
        "feed.toml:4: sources[0].url: 'ftp://feeds.example/news' must start with http:// or https://"
    ]


def test_raise_problems_raises_nothing_one_or_a_group() -> None:
    raise_problems([None, "", None])
    with pytest.raises(ValueError, match=r"^url: bad$"):
        raise_problems([None, "url: bad"])
    with pytest.raises(ExceptionGroup) as caught:
        raise_problems(["url: bad", None, "topic: empty"])
    assert [str(e) for e in caught.value.exceptions] == ["url: bad", "topic: empty"]
    assert all(type(e) is ValueError for e in caught.value.exceptions)


def test_a_group_holding_something_else_is_a_bug_of_the_plugin(plugins: PluginManager) -> None:
    """Only ValueErrors are problems with the options: a TypeError in the group is
    the plugin's bug, raised as it is, never turned into a config message."""
    text = CONFIG.replace("{extra}", 'report = "bug"').replace("{sink}", "collect")
    with pytest.raises(ExceptionGroup) as caught:
        parse_config(text, path="feed.toml", plugins=plugins)
    assert [type(e) for e in caught.value.exceptions] == [ValueError, TypeError]


def test_a_built_in_transport_reports_all_its_problems(tmp_path: Path) -> None:
    """sse's check() finds the URL, a header name and the CA file wrong at once."""
    missing = tmp_path / "no-such-ca.pem"
    config = tmp_path / "sse.toml"
    config.write_text(
        "[[sources]]\n"
        'name = "train"\n'
        'transport = "sse"\n'
        'url = "ftp://trainer/events"\n'
        'headers = { "X Token" = "t0k3n-secret" }\n'
        f'ca_file = "{missing}"\n'
        "\n[[sinks]]\n"
        'type = "log"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "mux_core", "check", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.removeprefix("mux: error: ").splitlines()
    assert [line.split(": ")[0:2] for line in lines] == [
        [f"{config}:4", "sources[0].url"],
        [f"{config}:5", "sources[0].headers"],
        [f"{config}:6", "sources[0].ca_file"],
    ]
    assert "must start with http:// or https://" in lines[0]
    assert "'X Token' is not a valid HTTP header name" in lines[1]
    assert "t0k3n-secret" not in result.stderr
