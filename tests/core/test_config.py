"""The config loader: valid files resolve fully; every wrong file names its line.

The TOML snippets start on line 1 (``_doc`` strips the first newline only),
so the line numbers asserted below can be counted in the source.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import attrs
import pytest

from mux_core._config import (
    Config,
    load_config,
    parse_config,
    render_config,
)
from mux_core._config.positions import key_lines, line_of
from mux_core._plugins import PluginFailure, PluginManager
from mux_core.errors import ConfigError
from mux_core.hookspecs import hookimpl
from mux_core.retry import RetryPolicy
from mux_core.sink import Overflow
from tests.helpers import ROOT

EXAMPLE = ROOT / "examples" / "monitor.toml"


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"must be > 0 seconds, got {value!r}")


@attrs.frozen(kw_only=True)
class FakeOptions:
    #: Where to connect.
    url: str
    #: Seconds between polls.
    interval: float = 1.0
    #: How many.
    count: int = 3
    #: Chatty.
    verbose: bool = False
    #: Speed.
    mode: Literal["fast", "slow"] = "fast"
    #: Extra request headers.
    headers: dict[str, str] = attrs.field(factory=dict)
    #: Labels.
    tags: list[str] = attrs.field(factory=list)
    #: Optional proxy.
    proxy: str | None = None
    #: Read timeout.
    timeout: float = attrs.field(default=5.0, validator=_positive)

    @classmethod
    def check(cls, options: FakeOptions) -> None:
        if not options.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {options.url!r}")


class FakeTransport:
    Options = FakeOptions

    def __init__(self, options: FakeOptions) -> None:
        self.options = options


@attrs.frozen(kw_only=True)
class FakeSinkOptions:
    #: Output file.
    path: str = "out.jsonl"


class FakeSink:
    Options = FakeSinkOptions


class UiSink:
    Options = FakeSinkOptions
    default_overflow = "latest"
    default_on_error = "drop"


class FakePlugin:
    @hookimpl
    def mux_register_transports(self, register: Any) -> None:
        register("fake", FakeTransport)
        register("poll", FakeTransport)

    @hookimpl
    def mux_register_sinks(self, register: Any) -> None:
        register("fake", FakeSink)
        register("ui", UiSink)


@pytest.fixture
def plugins() -> PluginManager:
    pm = PluginManager()
    pm.register(FakePlugin(), name="fake")
    return pm


def _doc(text: str) -> str:
    return text[1:] if text.startswith("\n") else text


_A_SINK = '\n[[sinks]]\ntype = "fake"\n'


def load(text: str, plugins: PluginManager, environ: dict[str, str] | None = None) -> Config:
    """``text`` plus a sink at its end (lines above unchanged) unless it names its sinks."""
    text = _doc(text) if "sinks" in text else _doc(text) + _A_SINK
    return parse_config(text, path="mon.toml", plugins=plugins, environ=environ or {})


def fail(text: str, plugins: PluginManager, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text, plugins, environ)
    return info.value


# -- valid configs ---------------------------------------------------------------

GOOD = """
[retry]
initial_delay = 1
max_attempts = 5

[[sources]]
name = "a"
transport = "fake"
url = "http://127.0.0.1:1/events"
headers = { Authorization = "Bearer ${TOKEN}" }
retry = { max_attempts = 2 }
tags = ["x", "y"]

[[sources]]
name = "b"
transport = "poll"
url = "http://${USER_NAME:-bob}:hunter22@127.0.0.1:2/m"
interval = 2
mode = "slow"

[[sinks]]
type = "fake"
path = "runs/out.jsonl"

[[sinks]]
type = "ui"
name = "panel"
buffer = 50
"""


def test_a_valid_config_resolves_options_retry_and_lines(plugins: PluginManager) -> None:
    config = load(GOOD, plugins, {"TOKEN": "tok-123456"})
    assert config.path == "mon.toml" and config.name == "mon"
    assert config.retry == RetryPolicy(initial_delay=1.0, max_attempts=5)
    a, b = config.sources
    assert (a.name, a.transport, a.line) == ("a", "fake", 5)
    assert a.options == FakeOptions(
        url="http://127.0.0.1:1/events",
        headers={"Authorization": "Bearer tok-123456"},
        tags=["x", "y"],
    )
    # The source's own retry table is merged over [retry].
    assert a.retry == RetryPolicy(initial_delay=1.0, max_attempts=2)
    assert (b.line, b.retry) == (13, config.retry)
    assert b.options.interval == 2.0 and type(b.options.interval) is float
    assert b.options.url == "http://bob:hunter22@127.0.0.1:2/m"
    fake, ui = config.sinks
    assert (fake.name, fake.type, fake.overflow, fake.buffer, fake.on_error, fake.line) == (
        "fake",
        "fake",
        Overflow.BLOCK,
        10_000,
        "stop",
        20,
    )
    assert fake.options == FakeSinkOptions(path="runs/out.jsonl")
    # Sink classes choose their own defaults for overflow and on_error.
    assert (ui.name, ui.overflow, ui.buffer, ui.on_error) == ("panel", Overflow.LATEST, 50, "drop")
    assert config.secrets == {"tok-123456", "Bearer tok-123456", "hunter22"}


def test_only_builds_the_sources_it_accepts_and_skips_the_others_tables(
    plugins: PluginManager,
) -> None:
    text = (
        _doc(
            """
[[sources]]
name = "a"
transport = "fake"
url = "http://h/a"

[[sources]]
name = "b"
transport = "nope"

[[sources]]
name = "c"
transport = "fake"
url = "http://h/c"
"""
        )
        + _A_SINK
    )
    with pytest.raises(ConfigError, match="unknown transport 'nope'"):
        parse_config(text, path="mon.toml", plugins=plugins, environ={})
    # A worker of --workers: b is another worker's (the parent validated it).
    only = parse_config(
        text, path="mon.toml", plugins=plugins, environ={}, only={"a", "c"}.__contains__
    )
    assert [(s.name, s.options.url, s.line) for s in only.sources] == [
        ("a", "http://h/a", 1),
        ("c", "http://h/c", 10),
    ]
    # The names are still checked across all tables.
    twice = text.replace('name = "c"', 'name = "b"')
    with pytest.raises(ConfigError, match="'b'"):
        parse_config(twice, path="mon.toml", plugins=plugins, environ={}, only={"a"}.__contains__)


def test_zero_sinks_is_an_error_with_a_hint(plugins: PluginManager) -> None:
    """Records with nowhere to go: the run would watch and throw them away."""
    source = '[[sources]]\nname = "a"\ntransport = "fake"\nurl = "http://h/"\n'
    for text, line in ((source, 4), (source + "\n\n", 4), ("sinks = []\n" + source, 1)):
        with pytest.raises(ConfigError) as info:
            parse_config(text, path="mon.toml", plugins=plugins, environ={})
        assert str(info.value) == (
            f'mon.toml:{line}: sinks: no [[sinks]]: add one, e.g. [[sinks]] type = "log"'
        )
    config = load(source, plugins)
    assert [s.type for s in config.sinks] == ["fake"] and config.retry == RetryPolicy()


def test_the_example_config_loads_without_any_environment() -> None:
    """With the real built-in plugins: the example must stay valid as they evolve."""
    pm = PluginManager()
    pm.load_entry_points(only=set())
    config = load_config(EXAMPLE, pm, environ={})
    assert config.name == "monitor"
    assert [(s.name, s.transport, s.line) for s in config.sources] == [
        ("train-sse", "sse", 10),
        ("train-ws", "ws", 17),
        ("train-rest", "rest", 25),
    ]
    assert config.sources[0].options.headers == {"Authorization": "Bearer "}
    # A monitor waits patiently for a restarting trainer: no max_attempts.
    assert config.sources[0].retry.max_attempts == 0
    assert config.sources[0].retry.max_delay == 10.0
    assert [p.type for p in config.processors] == [
        "restart",
        "nonfinite",
        "stall",
        "diverge",
        "throughput",
    ]
    assert config.sources[2].options.interval == 1.0
    assert [s.name for s in config.sinks] == ["tui", "file"]
    with_token = load_config(EXAMPLE, pm, environ={"TRAIN_TOKEN": "abc-secret"})
    assert with_token.sources[0].options.headers == {"Authorization": "Bearer abc-secret"}
    assert "abc-secret" not in render_config(with_token)


# -- one test per kind of error, each with its exact line ----------------------


def test_toml_syntax_error_names_its_line(plugins: PluginManager) -> None:
    err = fail(
        """
[[sources]]
name = "a"
transport = "fake"
url = "http://h/
""",
        plugins,
    )
    assert err.line == 4 and err.file == "mon.toml"
    assert str(err).startswith("mon.toml:4: invalid TOML: ")


def test_unknown_key_suggests_the_closest(plugins: PluginManager) -> None:
    err = fail(
        """
[[sources]]
name = "a"
transport = "fake"
url = "http://h/"
intervall = 2.0
""",
        plugins,
    )
    assert str(err) == (
        "mon.toml:5: sources[0].intervall: unknown key 'intervall'; did you mean 'interval'?"
    )


def test_unknown_key_without_a_close_match_lists_the_valid_ones(plugins: PluginManager) -> None:
    err = fail('[[sources]]\nname = "a"\ntransport = "fake"\nurl = "http://h/"\nzzz = 1\n', plugins)
    assert err.line == 5
    valid = "count, headers, interval, lag_field, mode"
    assert f"unknown key 'zzz'; valid keys here: {valid}" in str(err)


def test_unknown_top_level_and_retry_keys(plugins: PluginManager) -> None:
    err = fail(
        """
[retry]
max_atempts = 3

[[source]]
name = "a"
""",
        plugins,
    )
    lines = str(err).splitlines()
    assert lines[0] == (
        "mon.toml:2: retry.max_atempts: unknown key 'max_atempts'; did you mean 'max_attempts'?"
    )
    assert lines[1] == "mon.toml:4: source: unknown key 'source'; did you mean 'sources'?"
    assert lines[2].startswith("mon.toml: sources: no sources; add a [[sources]] table")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('interval = "fast"', 'interval: expected a number, got a string "fast"'),
        ("interval = true", "interval: expected a number, got a boolean true"),
        ("count = 2.5", "count: expected an integer, got a float 2.5"),
        ('count = "3"', 'count: expected an integer, got a string "3"'),
        ("count = false", "count: expected an integer, got a boolean false"),
        ("verbose = 1", "verbose: expected true or false, got an integer 1"),
        ("proxy = 8080", "proxy: expected a string, got an integer 8080"),
        ('mode = "quick"', 'mode: expected one of "fast", "slow", got a string "quick"'),
        ('tags = "x"', 'tags: expected an array of strings, got a string "x"'),
        ('tags = ["x", 2]', "tags[1]: expected a string, got an integer 2"),
        # headers are secret: the value is not shown, even of the wrong type
        ("headers = { A = 1 }", "headers.A: expected a string, got an integer ***"),
        ('headers = "x"', 'headers: expected a table of strings, got a string "***"'),
    ],
)
def test_wrong_types_are_rejected_strictly(plugins: PluginManager, line: str, message: str) -> None:
    err = fail(f'[[sources]]\nname = "a"\ntransport = "fake"\nurl = "http://h/"\n{line}\n', plugins)
    assert str(err) == f"mon.toml:5: sources[0].{message}"


def test_missing_required_key_points_at_the_table_header(plugins: PluginManager) -> None:
    err = fail(
        """
[[sinks]]
type = "fake"

[[sources]]
name = "a"
transport = "fake"
""",
        plugins,
    )
    assert str(err) == "mon.toml:4: sources[0].url: missing required key 'url' (a string)"


def test_missing_name_and_transport(plugins: PluginManager) -> None:
    err = fail('[[sources]]\nurl = "http://h/"\n', plugins)
    assert str(err).splitlines() == [
        "mon.toml:1: sources[0].name: missing required key 'name' (a string)",
        "mon.toml:1: sources[0].transport: missing required key 'transport' (a string)",
    ]


def test_duplicate_source_name_points_at_the_second(plugins: PluginManager) -> None:
    err = fail(
        """
[[sources]]
name = "a"
transport = "fake"
url = "http://h/"

[[sources]]
transport = "fake"
name = "a"
url = "http://h/"
""",
        plugins,
    )
    assert err.line == 8 and err.key == "sources[1].name"
    assert "duplicate source name 'a', already used at line 2" in str(err)


def test_duplicate_sink_names_default_to_the_type(plugins: PluginManager) -> None:
    err = fail(
        """
[[sources]]
name = "a"
transport = "fake"
url = "http://h/"

[[sinks]]
type = "fake"

[[sinks]]
type = "fake"
""",
        plugins,
    )
    assert str(err) == (
        "mon.toml:9: sinks[1].name: duplicate sink name 'fake', already used at line 6; "
        "add a distinct `name` key"
    )


def test_unknown_transport_lists_the_installed_ones(plugins: PluginManager) -> None:
    err = fail('[[sources]]\nname = "a"\n\ntransport = "pol"\n', plugins)
    assert str(err) == (
        "mon.toml:4: sources[0].transport: unknown transport 'pol'; "
        "did you mean 'poll'? installed: 'fake', 'poll'"
    )


def test_unknown_sink_type(plugins: PluginManager) -> None:
    err = fail(
        '[[sources]]\nname = "a"\ntransport = "fake"\nurl = "http://h/"\n[[sinks]]\ntype = "xyz"\n',
        plugins,
    )
    assert str(err) == (
        "mon.toml:6: sinks[0].type: unknown sink type 'xyz'; installed: 'fake', 'ui'"
    )


def test_a_sink_whose_plugin_failed_to_load_says_why(plugins: PluginManager) -> None:
    plugins.failures.append(PluginFailure("qt", "mux", "ImportError: no PySide6"))
    err = fail(
        '[[sources]]\nname = "a"\ntransport = "fake"\nurl = "http://h/"\n[[sinks]]\ntype = "qt"\n',
        plugins,
    )
    assert str(err) == (
        "mon.toml:6: sinks[0].type: sink type 'qt' is provided by plugin 'qt', "
        "which failed to load: ImportError: no PySide6"
    )


def test_a_validator_error_points_at_its_key(plugins: PluginManager) -> None:
    err = fail(
        """
[retry]
initial_delay = -1.0

[[sources]]
name = "a"
transport = "fake"
url = "http://h/"
retry = { max_attempts = 2, reset_after = -3 }
timeout = 0
""",
        plugins,
    )
    assert str(err).splitlines() == [
        "mon.toml:2: retry.initial_delay: must be >= 0, got -1.0",
        "mon.toml:8: sources[0].retry.reset_after: must be >= 0, got -3.0",
        "mon.toml:9: sources[0].timeout: must be > 0 seconds, got 0.0",
    ]


def test_bad_sink_settings(plugins: PluginManager) -> None:
    err = fail(
        """
[[sources]]
name = "a"
transport = "fake"
url = "http://h/"

[[sinks]]
type = "fake"
overflow = "newest"
buffer = 0
on_error = "ignore"
""",
        plugins,
    )
    assert str(err).splitlines() == [
        "mon.toml:8: sinks[0].overflow: unknown overflow policy 'newest'; "
        "expected one of 'block', 'drop_oldest', 'drop_newest', 'latest'",
        "mon.toml:9: sinks[0].buffer: must be >= 1 (records), got 0",
        "mon.toml:10: sinks[0].on_error: expected one of 'stop', 'drop', got a string \"ignore\"",
    ]


def test_buffer_must_be_an_integer(plugins: PluginManager) -> None:
    err = fail(
        '[[sources]]\nname = "a"\ntransport = "fake"\nurl = "http://h/"\n'
        '[[sinks]]\ntype = "fake"\nbuffer = 1.5\n',
        plugins,
    )
    assert str(err) == "mon.toml:7: sinks[0].buffer: expected an integer, got a float 1.5"


def test_unset_variable_is_an_error_at_its_line(plugins: PluginManager) -> None:
    err = fail(
        """
[[sources]]
name = "a"
transport = "fake"
url = "http://h/"
tags = [
  "ok",
  "${NOPE}",
]
""",
        plugins,
    )
    assert str(err) == (
        "mon.toml:7: sources[0].tags[1]: environment variable 'NOPE' is not set; "
        "set it or write ${NOPE:-default}"
    )


def test_check_classmethod_error_points_at_the_table(plugins: PluginManager) -> None:
    err = fail(
        """
[[sources]]
name = "a"
transport = "fake"

[[sources]]
name = "b"
transport = "fake"
url = "ftp://h/"
""",
        plugins,
    )
    assert str(err).splitlines()[1] == (
        "mon.toml:5: sources[1]: url must start with http:// or https://, got 'ftp://h/'"
    )


def _builtin_plugins() -> PluginManager:
    pm = PluginManager()
    pm.load_entry_points(only=set())
    return pm


def test_an_unset_variable_is_the_only_error_of_its_key() -> None:
    """The empty value left by an unset ${TRAIN_URL} used to fail the transport's
    url check too, reported first and at the [[sources]] line."""
    text = _doc(
        """
[[sources]]
name = "train-sse"
transport = "sse"
headers = { Authorization = "Bearer ${TOKEN}" }
url = "${TRAIN_URL}/events"

[[sinks]]
type = "log"
"""
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, path="mon.toml", plugins=_builtin_plugins(), environ={"TOKEN": "t"})
    assert str(info.value) == (
        "mon.toml:5: sources[0].url: environment variable 'TRAIN_URL' is not set; "
        "set it or write ${TRAIN_URL:-default}"
    )


@pytest.mark.parametrize(
    ("transport", "url", "why"),
    [
        ("sse", "ws://h:1/events", "must start with http:// or https://"),
        ("rest", "ftp://h:1/metrics", "must start with http:// or https://"),
        ("ws", "http://h:1/ws", "must start with ws:// or wss://"),
    ],
)
def test_a_bad_url_points_at_the_url_line(transport: str, url: str, why: str) -> None:
    text = f'[[sources]]\nname = "a"\ntransport = "{transport}"\n\nurl = "{url}"\n' + _A_SINK
    with pytest.raises(ConfigError) as info:
        parse_config(
            text.replace('"fake"', '"log"'), path="m.toml", plugins=_builtin_plugins(), environ={}
        )
    assert str(info.value) == f"m.toml:5: sources[0].url: {url!r} {why}"


def test_a_check_error_naming_a_header_points_at_the_headers_line() -> None:
    text = '[[sources]]\nname = "a"\ntransport = "sse"\nurl = "http://h/"\n'
    text += 'headers = { "X Y" = "v" }\n[[sinks]]\ntype = "log"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, path="m.toml", plugins=_builtin_plugins(), environ={})
    assert str(info.value) == "m.toml:5: sources[0].headers: 'X Y' is not a valid HTTP header name"


def test_missing_file(plugins: PluginManager, tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, plugins)
    assert str(info.value) == f"{missing}: no such file; create it or pass another path"
    assert info.value.line is None


def test_file_errors_carry_the_path_as_given(plugins: PluginManager, tmp_path: Path) -> None:
    path = tmp_path / "mon.toml"
    path.write_text('[[sources]]\nname = "a"\ntransport = "fake"\nurl = 3\n' + _A_SINK)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), plugins)
    assert str(info.value) == f"{path}:4: sources[0].url: expected a string, got an integer 3"


# -- substitution and secrets ----------------------------------------------------


def test_substitution_defaults_escapes_and_secrets(plugins: PluginManager) -> None:
    config = load(
        """
[[sources]]
name = "${NAME:-dflt}"
transport = "fake"
url = "http://h/$${NOT_A_VAR}/${EMPTY:-e}/${EMPTY}/$x"
tags = ["${TAG}", "${TAG:-other}"]
""",
        plugins,
        {"EMPTY": "", "TAG": "t1"},
    )
    (source,) = config.sources
    assert source.name == "dflt"
    assert source.options.url == "http://h/${NOT_A_VAR}/e//$x"
    assert source.options.tags == ["t1", "t1"]
    # Values taken from the environment are secret; defaults written in the file are not.
    assert config.secrets == {"t1"}


def test_a_malformed_reference_is_an_error(plugins: PluginManager) -> None:
    err = fail('[[sources]]\nname = "a"\ntransport = "fake"\nurl = "http://${h/"\n', plugins)
    assert err.line == 4 and "invalid ${...} reference" in str(err)


def test_render_masks_secrets_and_reparses(plugins: PluginManager) -> None:
    config = load(GOOD, plugins, {"TOKEN": "tok-123456", "USER_NAME": "annabel"})
    text = render_config(config)
    for secret in config.secrets:
        assert secret not in text
    assert "tok-123456" not in text and "hunter22" not in text
    assert 'headers = { Authorization = "***" }' in text
    assert 'url = "http://***:***@127.0.0.1:2/m"' in text
    assert "# proxy is not set" in text
    data = tomllib.loads(text)
    assert [s["name"] for s in data["sources"]] == ["a", "b"]
    assert data["sources"][0]["retry"]["max_attempts"] == 2
    assert data["sources"][0]["retry"]["initial_delay"] == 1.0
    assert data["sources"][1]["interval"] == 2.0 and data["sources"][1]["mode"] == "slow"
    assert data["sinks"][1] == {
        "type": "ui",
        "name": "panel",
        "overflow": "latest",
        "buffer": 50,
        "on_error": "drop",
        "path": "out.jsonl",
    }
    assert data["retry"]["max_attempts"] == 5


def test_error_messages_do_not_leak_environment_values(plugins: PluginManager) -> None:
    err = fail(
        '[[sources]]\nname = "a"\ntransport = "fake"\nurl = "http://h/"\nmode = "${MODE}"\n',
        plugins,
        {"MODE": "very-secret-mode"},
    )
    assert "very-secret-mode" not in str(err)
    assert str(err) == (
        'mon.toml:5: sources[0].mode: expected one of "fast", "slow", got a string "***"'
    )


# -- the position scanner ---------------------------------------------------------


def test_scanner_skips_strings_that_look_like_tables_and_keys() -> None:
    text = _doc(
        '''
a = """
[not.a.table]
b = 1
"""
c = \'\'\'x = 2\'\'\'  # [nope]
"quoted.key" = { inner = [1, 2], "x y" = 3 }
[t."u.v"]
w = "]"
[[arr]]
[[arr]]
d.e = 1
'''
    )
    tomllib.loads(text)
    lines = key_lines(text)
    assert lines[("a",)] == 1
    assert lines[("c",)] == 5
    assert ("not",) not in lines and ("b",) not in lines
    assert lines[("quoted.key", "inner", 1)] == 6
    assert lines[("quoted.key", "x y")] == 6
    assert lines[("t", "u.v")] == 7 and lines[("t", "u.v", "w")] == 8
    assert lines[("arr", 0)] == 9 and lines[("arr", 1)] == 10
    assert lines[("arr", 1, "d", "e")] == 11
    assert line_of(lines, ("arr", 1, "missing", 3)) == 10
    assert line_of(lines, ("nothing",)) is None


def test_inline_array_of_source_tables_maps_each_to_its_line(plugins: PluginManager) -> None:
    err = fail(
        """
sources = [
  { name = "a", transport = "fake", url = "http://h/" },
  { name = "b", transport = "fake", url = 3 },
]
""",
        plugins,
    )
    assert str(err) == "mon.toml:3: sources[1].url: expected a string, got an integer 3"


def test_tables_of_the_wrong_shape(plugins: PluginManager) -> None:
    err = fail(
        """
retry = 3
sinks = "log"

[[sources]]
name = "a"
transport = "fake"
url = "http://h/"
retry = [1]
""",
        plugins,
    )
    assert str(err).splitlines() == [
        "mon.toml:1: retry: expected a table, got an integer 3",
        'mon.toml:2: sinks: expected an array of tables ([[sinks]]), got a string "log"',
        "mon.toml:8: sources[0].retry: expected a table, got an array",
    ]


def test_windows_line_endings_keep_line_numbers(plugins: PluginManager) -> None:
    text = '[[sources]]\nname = "a"\n\ntransport = "fake"\nurl = "http://h/"\ncount = "x"\n'
    text = text.replace("\n", "\r\n")
    with pytest.raises(ConfigError) as info:
        parse_config(text, path="w.toml", plugins=plugins, environ={})
    assert info.value.line == 6 and info.value.key == "sources[0].count"
