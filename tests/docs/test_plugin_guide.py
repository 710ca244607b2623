"""What the plugin author guide (docs/plugins/) claims, checked.

* the guide's ``gauge`` transport and its tests are, line for line, the
  package examples/mux-gauge, and the line counts the guide states are true
  (also for examples/mux-ndjson-tcp);
* ``PluginManager()`` loads nothing by itself, and a module registered by
  hand is not registered again by ``load_entry_points`` or
  ``MUX_PLUGIN_MODULES`` (it used to be a ValueError traceback);
* every mistake of a config file is reported at once, an out-of-range value
  with an unknown key of the same table;
* ``mux check`` shows the ``#:`` descriptions of the options.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

import mux_core.testing
import mux_sse
from mux_core import ConfigError, PluginManager, parse_config
from mux_core._config import render_config
from tests.helpers import ROOT

GUIDE = ROOT / "docs" / "plugins"


def _block_with(page: str, marker: str) -> str:
    text = (GUIDE / page).read_text(encoding="utf-8")
    blocks = re.findall(r"^```(?:python|toml)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, f"docs/plugins/{page}: {len(found)} blocks containing {marker!r}"
    return str(found[0])


@pytest.mark.parametrize(
    ("page", "marker", "path"),
    [
        (
            "writing-a-transport.md",
            '"""mux_gauge:',
            "examples/mux-gauge/mux_gauge/__init__.py",
        ),
        ("packaging-and-testing.md", "def test_503_is", "examples/mux-gauge/tests/test_gauge.py"),
        ("packaging-and-testing.md", 'name = "mux-gauge"', "examples/mux-gauge/pyproject.toml"),
    ],
)
def test_the_guide_shows_the_example_package_line_for_line(
    page: str, marker: str, path: str
) -> None:
    assert _block_with(page, marker) == (ROOT / path).read_text(encoding="utf-8"), (
        f"docs/plugins/{page} and {path} differ: copy the file into the guide"
    )


def _lines(path: str) -> int:
    return len((ROOT / path).read_text(encoding="utf-8").splitlines())


def _function_lines(path: str, name: str) -> int:
    text = (ROOT / path).read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(text) if line.startswith(f"async def {name}("))
    end = next((i for i in range(start + 1, len(text)) if text[i] and text[i][0] != " "), None)
    body = text[start : len(text) if end is None else end]
    while body and not body[-1].strip():
        body.pop()
    return len(body)


def test_the_line_counts_the_guide_states_are_true() -> None:
    transport = (GUIDE / "writing-a-transport.md").read_text(encoding="utf-8")
    packaging = (GUIDE / "packaging-and-testing.md").read_text(encoding="utf-8")
    gauge = _lines("examples/mux-gauge/mux_gauge/__init__.py")
    gauge_tests = _lines("examples/mux-gauge/tests/test_gauge.py")
    ndjson = _lines("examples/mux-ndjson-tcp/mux_ndjson_tcp/__init__.py")
    faults = _function_lines(
        "examples/mux-ndjson-tcp/tests/test_faults.py",
        "test_refused_restart_resume_garbage_silence",
    )
    faults_file = _lines("examples/mux-ndjson-tcp/tests/test_faults.py")
    assert f"whole module, {gauge} lines" in transport
    assert f"{gauge_tests} lines" in packaging
    assert f"{ndjson} lines" in transport and ndjson < 60
    assert f"one {faults}-line test" in transport and faults <= 20
    assert f"{faults_file} with its imports" in transport
    readme = (ROOT / "examples/mux-ndjson-tcp/README.md").read_text(encoding="utf-8")
    assert f"is {ndjson} lines" in readme and f"one {faults}-line test" in readme


def test_a_plugin_manager_loads_nothing_by_itself() -> None:
    plugins = PluginManager()
    assert plugins.infos() == [] and plugins.transports() == {}


def test_a_module_registered_by_hand_is_not_registered_again_by_its_entry_point() -> None:
    plugins = PluginManager()
    plugins.register(mux_sse, name="my-sse")  # the entry point's name is "sse"
    plugins.register(mux_core.testing, name="testing")
    plugins.load_entry_points(only=set())  # built-ins: mux_sse among them
    assert plugins.transports()["sse"].plugin == "my-sse"
    assert "ws" in plugins.transports() and "scripted" in plugins.transports()
    names = [info.name for info in plugins.infos()]
    assert "my-sse" in names and "sse" not in names


def test_plugin_modules_naming_an_installed_plugin_are_harmless() -> None:
    env = {**os.environ, "MUX_PLUGIN_MODULES": "mux_sse,mux_core.testing"}
    result = subprocess.run(
        [sys.executable, "-m", "mux_core", "plugins"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "transport sse" in rows["sse"] and "mux_sse" not in rows
    assert "transport scripted" in rows["mux_core.testing"]


def _fail(text: str) -> ConfigError:
    plugins = PluginManager()
    plugins.register(mux_core.testing, name="testing")
    with pytest.raises(ConfigError) as raised:
        parse_config(
            textwrap.dedent(text) + '[[sinks]]\ntype = "collect"\n', path="c.toml", plugins=plugins
        )
    return raised.value


def test_an_out_of_range_value_is_reported_with_an_unknown_key_of_its_table() -> None:
    error = _fail("""
        [retry]
        initial_delay = -1.0
        jiter = 0.3

        [[sources]]
        name = "a"
        transport = "scripted"
        retry = { jitter = 2.0 }
        scrip = []
    """)
    lines = str(error).splitlines()
    assert lines == [
        "c.toml:3: retry.initial_delay: must be >= 0, got -1.0",
        "c.toml:4: retry.jiter: unknown key 'jiter'; did you mean 'jitter'?",
        "c.toml:9: sources[0].retry.jitter: must be in [0, 1), got 2.0",
        "c.toml:10: sources[0].scrip: unknown key 'scrip'; did you mean 'script'?",
    ]


def test_two_out_of_range_values_are_both_reported() -> None:
    error = _fail("""
        [retry]
        initial_delay = -1.0
        jitter = 3.0

        [[sources]]
        name = "a"
        transport = "scripted"
    """)
    assert [line.split(": ")[1] for line in str(error).splitlines()] == [
        "retry.initial_delay",
        "retry.jitter",
    ]


def test_mux_check_shows_the_option_descriptions() -> None:
    plugins = PluginManager()
    plugins.register(mux_core.testing, name="testing")
    text = 'retry = { initial_delay = 2.0 }\n[[sources]]\nname = "a"\ntransport = "scripted"\n'
    text += '[[sinks]]\ntype = "collect"\n'
    config = parse_config(text.replace("retry", "[retry]\nx", 0), path="c.toml", plugins=plugins)
    rendered = render_config(config)
    assert "# The step used once the script is exhausted.\nthen = " in rendered
    assert "# Seconds before the first retry.\ninitial_delay = " in rendered
