"""What a [[discovery]] table allows, and names everywhere (mux_core._config.discovered).

The config author's [[discovery]] table is checked like any config (its
mistakes are FILE:LINE errors); what a discoverer finds is data, screened
against it table by table. The end-to-end side -- real servers, a real
run -- is in tests/plugins/discovery/test_trust.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from mux_core._cli import main
from mux_core._config import DiscoveryPolicy, parse_config, parse_source_tables
from mux_core._config.discovered import clamp_retry, screen
from mux_core._plugins import PluginManager
from mux_core.errors import ConfigError
from mux_core.retry import RetryPolicy


def builtin_plugins() -> PluginManager:
    """The built-in plugins only (what a config of this page uses)."""
    plugins = PluginManager()
    plugins.load_entry_points(only=set())
    return plugins


def _config(toml: str, plugins: PluginManager, **environ: str) -> Any:
    return parse_config(textwrap.dedent(toml), path="m.toml", plugins=plugins, environ=environ)


def _error(toml: str, plugins: PluginManager) -> str:
    with pytest.raises(ConfigError) as raised:
        _config(toml, plugins)
    return str(raised.value)


SINK = '\n[[sinks]]\ntype = "log"\n'


# -- names --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a\\u001b[31mb", "holds the unprintable character U+001B"),
        ("line\\nERROR mux.engine: FORGED", "holds the unprintable character U+000A"),
        ("rtl\\u202eevil", "holds the unprintable character U+202E"),
        ("x" * 201, "is 201 characters long; at most 200 are allowed"),
    ],
)
def test_a_source_name_must_be_printable_and_short(name: str, why: str) -> None:
    plugins = builtin_plugins()
    message = _error(
        f'[[sources]]\nname = "{name}"\ntransport = "sse"\nurl = "http://h/"\n' + SINK, plugins
    )
    assert message.startswith("m.toml:2: sources[0].name: the source name '")
    assert why in message
    assert "\n" not in message and "\x1b" not in message  # shown escaped


def test_a_name_of_200_printable_characters_is_fine() -> None:
    name = "é-" * 100
    config = _config(
        f'[[sources]]\nname = "{name}"\ntransport = "sse"\nurl = "http://h/"\n' + SINK,
        builtin_plugins(),
    )
    assert config.sources[0].name == name


def test_mux_check_rejects_a_bad_name_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "m.toml"
    config.write_text('[[sources]]\nname = "a\\tb"\ntransport = "sse"\nurl = "http://h/"\n' + SINK)
    assert main(["check", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}:2: sources[0].name: the source name 'a\\tb' holds the unprintable" in err
    assert "Traceback" not in err


def test_sink_and_discovery_names_are_held_to_the_same_rule() -> None:
    message = _error(
        '[[discovery]]\ntype = "files"\nname = "a\\u0007"\npaths = ["x/*.toml"]\n'
        '[[sinks]]\ntype = "log"\nname = "b\\u0000"\n',
        builtin_plugins(),
    )
    assert "m.toml:3: discovery[0].name: the discovery name 'a\\x07' holds" in message
    assert "m.toml:7: sinks[0].name: the sink name 'b\\x00' holds" in message


# -- the [[discovery]] table's own keys, checked when the config loads -----------


def test_a_policy_with_mistakes_names_each_at_its_line() -> None:
    message = _error(
        """\
        [[discovery]]
        type = "files"
        paths = ["runs/*.toml"]
        allow_transports = ["sse", "sce"]
        allow_hosts = ["http://gpu-1.internal"]
        allow_options = ["url", "read_timout"]
        defaults = { name = "x", transport = "redis-stream", retry = { initial_delay = -1 } }
        max_sources = 0
        """
        + SINK,
        builtin_plugins(),
    )
    lines = message.splitlines()
    assert (
        "m.toml:4: discovery[0].allow_transports[1]: unknown transport 'sce'; did you mean 'sse'?"
        in lines[0]
    )
    assert lines[1].startswith("m.toml:5: discovery[0].allow_hosts[0]: expected a host name")
    assert lines[2].startswith(
        "m.toml:6: discovery[0].allow_options[1]: no transport of allow_transports"
    )
    assert "did you mean 'read_timeout'?" in lines[2]
    joined = "\n".join(lines[3:])
    assert "discovery[0].defaults.name: each discovered source brings its own name" in joined
    assert "discovery[0].defaults.transport: expected one of allow_transports" in joined
    assert "discovery[0].defaults.retry.initial_delay:" in joined
    assert "m.toml:8: discovery[0].max_sources:" in joined


def test_mux_check_shows_the_policy_with_the_defaults_secrets_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAIN_TOKEN", "token-of-the-trainers")
    config = tmp_path / "m.toml"
    config.write_text(
        '[[discovery]]\ntype = "http"\nurl = "http://sd.internal/x?key=literal-key-1234"\n'
        'allow_hosts = ["*.gpu.internal"]\n'
        'defaults = { headers = { X-Api-Key = "written-in-the-config", '
        'Authorization = "Bearer ${TRAIN_TOKEN}" } }\n' + SINK
    )
    assert main(["check", str(config)]) == 0
    out = capsys.readouterr().out
    assert 'allow_hosts = ["*.gpu.internal"]' in out
    assert "max_sources = 1000" in out
    assert 'defaults = { headers = { X-Api-Key = "***", Authorization = "***" } }' in out
    assert 'url = "http://sd.internal/x?key=***"' in out
    for secret in ("token-of-the-trainers", "written-in-the-config", "literal-key-1234"):
        assert secret not in out


# -- what a discovered table may be -----------------------------------------------


def _url(url: str, **policy: Any) -> tuple[str, tuple[str | int, ...], str] | None:
    return screen({"name": "t", "transport": "sse", "url": url}, DiscoveryPolicy(**policy))


@pytest.mark.parametrize(
    ("url", "hosts", "kind"),
    [
        ("http://127.0.0.1:8888/events", None, None),
        ("http://localhost/events", None, None),
        ("http://[::1]:80/events", None, None),
        ("http://LOCALHOST/events", None, None),  # host names are not case-sensitive
        ("http://gpu-3.internal/events", None, "host"),
        ("http://gpu-3.internal/events", ["*.internal"], None),
        ("http://gpu-3.internal.evil.example/", ["*.internal"], "host"),
        ("http://127.0.0.1.evil.example/", None, "host"),
        ("http://evil.example\\@127.0.0.1/", None, "credentials"),
        ("http://evil.example\\.internal/", ["*.internal"], "host"),  # not a plain host
        ("http://evil%2eexample/", ["*"], "host"),
        ("http://user:pw@127.0.0.1/", None, "credentials"),
        ("http://anything.example/", ["*"], None),
    ],
)
def test_every_url_names_an_allowed_host(
    url: str, hosts: list[str] | None, kind: str | None
) -> None:
    refused = _url(url) if hosts is None else _url(url, allow_hosts=hosts)
    assert (None if refused is None else refused[0]) == kind, refused


def test_a_url_anywhere_in_the_table_is_checked() -> None:
    policy = DiscoveryPolicy(allow_options=["url", "fallbacks"])
    table = {"name": "t", "url": "http://127.0.0.1/", "fallbacks": {"a": ["ws://evil.example/"]}}
    assert screen(table, policy) == (
        "host",
        ("fallbacks",),
        "the host 'evil.example' is not in allow_hosts ['127.0.0.1', 'localhost', '::1']; "
        'add it (or a glob such as "*.example.internal") there to accept it',
    )


def test_transports_options_and_verify_need_the_tables_leave() -> None:
    plain = {"name": "t", "transport": "sse", "url": "http://127.0.0.1/"}
    policy = DiscoveryPolicy()
    assert screen(plain, policy) is None
    refused = screen({**plain, "transport": "redis-stream"}, policy)
    assert refused is not None and refused[:2] == ("transport", ("transport",))
    refused = screen({**plain, "headers": {"A": "b"}}, policy)
    assert refused is not None and refused[:2] == ("option", ("headers",))
    insecure = {**plain, "verify": False}
    refused = screen(insecure, DiscoveryPolicy(allow_options=["url", "verify"]))
    assert refused is not None and refused[0] == "insecure"
    assert (
        screen(insecure, DiscoveryPolicy(allow_options=["url", "verify"], allow_insecure=True))
        is None
    )
    # No transport in the table: the one of the defaults is held to the same list.
    refused = screen(
        {"name": "t", "url": "redis://127.0.0.1/"},
        DiscoveryPolicy(defaults={"transport": "redis-stream"}),
    )
    assert refused is not None and refused[0] == "transport"


def test_a_discovered_table_is_data_defaults_go_underneath() -> None:
    """No ${VAR} in what is found; the defaults' headers merge under a table's own."""
    found = parse_source_tables(
        [
            {"name": "a", "transport": "sse", "url": "http://127.0.0.1/${HOME}"},
            {
                "name": "b",
                "transport": "sse",
                "url": "http://127.0.0.1/",
                "headers": {"X-Run": "7"},
            },
        ],
        origin="sd",
        retry=RetryPolicy(),
        plugins=builtin_plugins(),
        policy=DiscoveryPolicy(
            allow_options=["url", "headers"],
            defaults={"headers": {"Authorization": "Bearer config", "X-Run": "0"}},
        ),
    )
    assert found.problems == []
    a, b = found.sources
    assert a.options.url == "http://127.0.0.1/${HOME}"
    assert a.options.headers == {"Authorization": "Bearer config", "X-Run": "0"}
    assert b.options.headers == {"Authorization": "Bearer config", "X-Run": "7"}


def test_only_max_sources_tables_are_validated() -> None:
    tables = [{"name": f"s{n}", "transport": "sse", "url": "http://127.0.0.1/"} for n in range(10)]
    tables[1]["url"] = "http://evil.example/"
    found = parse_source_tables(
        tables,
        origin="sd",
        retry=RetryPolicy(),
        plugins=builtin_plugins(),
        policy=DiscoveryPolicy(max_sources=3),
    )
    assert [s.name for s in found.sources] == ["s0", "s2", "s3"]
    assert found.unread == 6
    [problem] = found.problems
    assert problem.kind == "host"
    assert str(problem.error).startswith("sd: sources[1].url: the host 'evil.example'")


def test_errors_of_a_discovered_table_carry_its_index_and_line() -> None:
    found = parse_source_tables(
        [
            {"name": "ok", "transport": "sse", "url": "http://127.0.0.1/"},
            {"name": "bad", "transport": "sse", "url": "http://127.0.0.1/", "decode": "yaml"},
        ],
        origin="runs/a.toml",
        retry=RetryPolicy(),
        plugins=builtin_plugins(),
        lines={("sources", 1, "decode"): 9},
    )
    [problem] = found.problems
    assert problem.kind == "invalid"
    assert str(problem.error).startswith("runs/a.toml:9: sources[1].decode: ")


# -- retry ---------------------------------------------------------------------------


def test_a_discovered_retry_is_never_more_eager_than_the_config() -> None:
    floor = RetryPolicy(
        initial_delay=0.5, max_delay=30, min_delay=0.5, multiplier=2, max_attempts=5
    )
    eager = RetryPolicy(
        initial_delay=0,
        max_delay=0,
        min_delay=0,
        multiplier=1,
        jitter=0,
        reset_after=0,
        connect_timeout=3600,
        max_attempts=0,
    )
    clamped = clamp_retry(eager, floor)
    assert clamped == RetryPolicy(
        initial_delay=0.5,
        max_delay=30,
        min_delay=0.5,
        multiplier=2,
        jitter=0,
        reset_after=5,
        connect_timeout=10,
        max_attempts=5,
    )
    for failures in range(1, 20):
        assert clamped.base_delay(failures) >= floor.base_delay(failures)
    patient = RetryPolicy(initial_delay=2, max_delay=60, max_attempts=3, connect_timeout=5)
    assert clamp_retry(patient, floor) == patient  # slower than the config: as asked


def test_the_defaults_retry_raises_the_floor() -> None:
    found = parse_source_tables(
        [
            {
                "name": "a",
                "transport": "sse",
                "url": "http://127.0.0.1/",
                "retry": {"initial_delay": 1},
            }
        ],
        origin="sd",
        retry=RetryPolicy(initial_delay=0.5),
        plugins=builtin_plugins(),
        policy=DiscoveryPolicy(defaults={"retry": {"initial_delay": 3.0}}),
    )
    assert found.sources[0].retry.initial_delay == 3.0


def test_the_http_discoverers_headers_and_ca_file_are_checked_at_load(tmp_path: Path) -> None:
    """A header no request can carry, a CA file that is not there: config errors at
    their lines, not a failure of every poll."""
    message = _error(
        f"""\
        [[discovery]]
        type = "http"
        url = "https://sd.internal/x"
        headers = {{ X-Token = "a\\nb" }}
        ca_file = "{tmp_path / "missing.pem"}"
        """
        + SINK,
        builtin_plugins(),
    )
    assert "m.toml:4: discovery[0].headers" in message
    assert f"m.toml:5: discovery[0].ca_file: no such file '{tmp_path / 'missing.pem'}'" in message
