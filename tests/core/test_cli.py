"""The mux command as a user runs it: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import orjson

from tests.helpers import ROOT

MUX = [sys.executable, "-m", "mux_core"]


def mux(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "MUX_PLUGIN_MODULES": "mux_core.testing", **(env or {})}
    return subprocess.run(
        [*MUX, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=60
    )


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_version() -> None:
    result = mux("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("mux ")


def test_run_scripted_source_into_a_file_end_to_end(tmp_path: Path) -> None:
    config = write(
        tmp_path / "m.toml",
        f"""
        [retry]
        initial_delay = 0.01
        [[sources]]
        name = "a"
        transport = "scripted"
        script = ["events:100", "unavailable", "events:50"]
        then = "end"
        batch = 8
        [[sinks]]
        type = "file"
        path = "{tmp_path / "out" / "events.jsonl"}"
        """,
    )
    result = mux("run", str(config))
    assert result.returncode == 0, result.stderr
    lines = [
        orjson.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_bytes().splitlines()
    ]
    events = [r for r in lines if r["type"] == "event"]
    assert [e["id"] for e in events] == [str(n) for n in range(1, 151)]
    assert list(events[0]) == [
        "type",
        "source",
        "transport",
        "event",
        "id",
        "data",
        "received_at",
        "seq",
    ]
    assert lines[-1]["type"] == "status" and lines[-1]["state"] == "ended"


def test_run_exits_3_when_a_source_fails(tmp_path: Path) -> None:
    config = write(
        tmp_path / "m.toml",
        """
        [[sources]]
        name = "a"
        transport = "scripted"
        script = ["fail"]
        [[sinks]]
        type = "collect"
        """,
    )
    result = mux("run", str(config))
    assert result.returncode == 3, result.stderr


def test_run_exits_3_on_max_retries_exceeded(tmp_path: Path) -> None:
    config = write(
        tmp_path / "m.toml",
        """
        [retry]
        initial_delay = 0.0
        max_attempts = 2
        [[sources]]
        name = "a"
        transport = "scripted"
        then = "unavailable"
        [[sinks]]
        type = "log"
        """,
    )
    result = mux("run", str(config))
    assert result.returncode == 3
    assert "max_retries_exceeded" in result.stderr


def test_run_for_stops_cleanly_with_exit_0(tmp_path: Path) -> None:
    config = write(
        tmp_path / "m.toml",
        """
        [[sources]]
        name = "a"
        transport = "scripted"
        then = "hang"
        [[sinks]]
        type = "log"
        """,
    )
    result = mux("run", str(config), "--for", "0.5")
    assert result.returncode == 0, result.stderr
    assert "a: stopped" in result.stderr


def test_config_error_is_one_line_with_file_and_line_exit_2(tmp_path: Path) -> None:
    config = write(
        tmp_path / "bad.toml",
        """\
        [[sources]]
        name = "a"
        transport = "scripted"
        scirpt = ["end"]
        [[sinks]]
        type = "log"
        """,
    )
    for command in ("run", "check"):
        result = mux(command, str(config))
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert f"{config}:4: " in result.stderr
        assert "did you mean 'script'" in result.stderr


def test_zero_sinks_is_a_config_error_for_run_check_and_replay(tmp_path: Path) -> None:
    """Records with nowhere to go: run and check refuse such a config, and so does
    replay --config, which takes its sinks from it (unless --alerts-only)."""
    config = write(
        tmp_path / "nosinks.toml",
        """\
        [[sources]]
        name = "a"
        transport = "scripted"
        script = ["end"]
        """,
    )
    recorded = tmp_path / "events.jsonl"
    recorded.write_text("")
    expected = f'{config}:4: sinks: no [[sinks]]: add one, e.g. [[sinks]] type = "log"'
    for args in (("run", str(config)), ("check", str(config))):
        result = mux(*args)
        assert (result.returncode, result.stderr.strip()) == (2, f"mux: error: {expected}")
    result = mux("replay", str(recorded), "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.startswith(f"mux: error: {config} has no [[sinks]] to replay into: ")
    assert "pass --alerts-only" in result.stderr  # a rules-only config backtests


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    result = mux("run", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_bad_arguments_exit_2() -> None:
    assert mux("run").returncode == 2
    assert mux("run", "x.toml", "--for", "soon").returncode == 2


def test_check_prints_the_resolved_config_with_secrets_masked(tmp_path: Path) -> None:
    config = write(
        tmp_path / "m.toml",
        """
        [[sources]]
        name = "a"
        transport = "scripted"
        [[sinks]]
        type = "collect"
        """,
    )
    result = mux("check", str(config))
    assert result.returncode == 0, result.stderr
    assert "scripted" in result.stdout


def test_check_example_config_needs_no_network() -> None:
    result = mux("check", str(ROOT / "examples" / "monitor.toml"), env={"TRAIN_TOKEN": "s3cret"})
    assert result.returncode == 0, result.stderr
    assert "train-sse" in result.stdout and "train-rest" in result.stdout
    assert "s3cret" not in result.stdout


def _fake_distribution(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    dist = site / "thirdparty_mux-1.2.3.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-mux\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text(
        "[mux]\nbroken = broken_mux_plugin\ngood = good_mux_plugin\n"
    )
    (site / "broken_mux_plugin.py").write_text(
        "raise ImportError('needs libfoo: pip install foo')\n"
    )
    (site / "good_mux_plugin.py").write_text(
        textwrap.dedent(
            """
            from mux_core import hookimpl
            from mux_core.testing import ScriptedTransport

            @hookimpl
            def mux_register_transports(register):
                register("good", ScriptedTransport)
            """
        )
    )
    return site


def test_a_broken_entry_point_does_not_stop_the_others(tmp_path: Path) -> None:
    site = _fake_distribution(tmp_path)
    result = mux("plugins", "--json", env={"PYTHONPATH": str(site), "MUX_PLUGIN_MODULES": ""})
    assert result.returncode == 0, result.stderr
    infos = {info["name"]: info for info in json.loads(result.stdout)}
    assert infos["broken"]["error"] == "ImportError: needs libfoo: pip install foo"
    assert infos["good"]["transports"] == ["good"] and infos["good"]["version"] == "1.2.3"
    assert infos["file"]["sinks"] == ["file"]
    table = mux("plugins", env={"PYTHONPATH": str(site), "MUX_PLUGIN_MODULES": ""})
    assert "unavailable: ImportError: needs libfoo" in table.stdout


def test_a_broken_plugin_module_is_reported_once_per_command(tmp_path: Path) -> None:
    """Plugins load once per process: `mux check` used to load them twice (to
    build the parser, then again to load the config) and warned twice."""
    (tmp_path / "exploding_mux_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    config = write(
        tmp_path / "m.toml",
        """
        [[sources]]
        name = "a"
        transport = "sse"
        url = "http://127.0.0.1:9/events"
        [[sinks]]
        type = "log"
        """,
    )
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    env = {"PYTHONPATH": path, "MUX_PLUGIN_MODULES": "exploding_mux_plugin"}
    warning = "plugin module 'exploding_mux_plugin' failed to load: RuntimeError: boom at import"
    for args in (("plugins",), ("check", "-q", str(config))):
        result = mux(*args, env=env)
        assert result.returncode == 0, result.stderr
        assert [line for line in result.stderr.splitlines() if "failed to load" in line] == [
            warning
        ], (args, result.stderr)


def test_mux_load_plugins_limits_third_party_autoloading(tmp_path: Path) -> None:
    site = _fake_distribution(tmp_path)
    env = {"PYTHONPATH": str(site), "MUX_PLUGIN_MODULES": ""}
    only_good = json.loads(mux("plugins", "--json", env={**env, "MUX_LOAD_PLUGINS": "good"}).stdout)
    names = {info["name"] for info in only_good}
    assert "good" in names and "broken" not in names and "file" in names
    builtins_only = json.loads(mux("plugins", "--json", env={**env, "MUX_LOAD_PLUGINS": ""}).stdout)
    names = {info["name"] for info in builtins_only}
    assert "good" not in names and "broken" not in names and "sse" in names


def test_sigint_stops_cleanly_and_a_second_sigint_exits_at_once(tmp_path: Path) -> None:
    """The first Ctrl-C stops cleanly (here: waits for a very slow sink); the
    second one does not wait."""
    import signal

    config = write(
        tmp_path / "m.toml",
        """
        [[sources]]
        name = "a"
        transport = "scripted"
        then = "hang"
        [[sinks]]
        type = "log"
        [[sinks]]
        type = "collect"
        delay = 600.0
        """,
    )
    env = {**os.environ, "MUX_PLUGIN_MODULES": "mux_core.testing"}
    process = subprocess.Popen(
        [*MUX, "run", str(config)], stderr=subprocess.PIPE, text=True, env=env
    )
    assert process.stderr is not None
    try:
        for line in process.stderr:
            if "a: connected" in line:
                break
        process.send_signal(signal.SIGINT)
        for line in process.stderr:
            if "stopping: SIGINT" in line:
                break
        assert process.poll() is None  # still delivering to the slow sink
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 130
        assert "SIGINT again, exiting without waiting" in process.stderr.read()
    finally:
        process.kill()
        process.wait()


def _options_without_help(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options_without_help(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction) and not action.help:
            yield path, "/".join(action.option_strings) or action.dest


def test_every_option_of_every_command_has_help_text() -> None:
    """Plugins' commands included (serve-demo, demo from mux_demo): `mux X --help`
    explains every option."""
    from mux_core._cli import build_parser, load_plugins

    parser = build_parser(load_plugins())
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"run", "check", "replay", "plugins", "new-plugin", "serve-demo", "demo"} <= set(
        commands.choices
    )
    assert list(_options_without_help(parser, "mux")) == []


def test_a_reader_that_goes_away_is_not_a_traceback(tmp_path: Path) -> None:
    """`mux check CONFIG | head -1`: the pipe closes early; no BrokenPipeError traceback."""
    config = tmp_path / "m.toml"
    sources = "".join(
        f'[[sources]]\nname = "s{i}"\ntransport = "sse"\nurl = "http://127.0.0.1:1/e"\n'
        for i in range(200)
    )
    config.write_text(sources + '[[sinks]]\ntype = "log"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "mux_core", "check", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away after one line
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=30)
    assert "Traceback" not in stderr
    assert "BrokenPipeError" not in stderr


#: What the start-up of every command (its plugins loaded, its parser built)
#: must not import: the run machinery, the config loader, the HTTP helpers and
#: the libraries a run uses (trio, httpx, h11, websockets, prometheus_client,
#: rich). Each is imported where it is used (lazily: start-up time is measured
#: by benchmarks/bench_startup.py, not here).
_RUN_LIBRARIES = ("trio", "httpx", "h11", "websockets", "prometheus_client", "rich")
_NOT_AT_START_UP = ("mux_core._run.engine", "mux_core._config", "mux_core.http", *_RUN_LIBRARIES)


def _modules_after(code: str, unwanted: tuple[str, ...] = _NOT_AT_START_UP) -> list[str]:
    """The modules of ``unwanted`` that ``code`` imported, in a fresh process (in ROOT)."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "MUX_LOAD_PLUGINS": "", "MUX_PLUGIN_MODULES": ""}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    return sorted(name for name in unwanted if name in loaded)


def test_import_mux_core_loads_no_machinery() -> None:
    """`from mux_core import hookimpl` (every plugin) imports the names it asks for only;
    the others resolve on first use."""
    assert _modules_after("import mux_core") == []
    assert _modules_after("from mux_core import hookimpl, Event, Session") == []
    assert "mux_core._run.engine" in _modules_after("from mux_core import Engine")


def test_start_up_with_the_built_in_plugins_imports_only_what_it_needs() -> None:
    """mux --help, mux plugins: the built-in plugins loaded and the parser built, without
    the machinery, trio, httpx, websockets, prometheus_client or rich (a transport
    imports what it connects with when it connects)."""
    code = (
        "from mux_core._cli import build_parser, load_plugins\n"
        "plugins = load_plugins()\n"
        "build_parser(plugins).format_help()\n"
        "plugins.infos()\n"
    )
    assert _modules_after(code) == []


def test_check_imports_none_of_the_libraries_a_run_uses() -> None:
    """mux check of the example config (sse, ws and rest sources, a tui and a file sink,
    five processors) validates every URL and header without trio, httpx, h11,
    websockets, prometheus_client or rich, and without the engine."""
    code = (
        "from mux_core._cli import main\n"
        "assert main(['check', '--quiet', 'examples/monitor.toml']) == 0\n"
    )
    unwanted = ("mux_core._run.engine", *_RUN_LIBRARIES)
    assert _modules_after(code, unwanted) == []
    # What makes it so for the URLs: a plain one is passed without its library, and the
    # library still decides any other (the messages are compared in the transports' tests).
    code = (
        "from mux_core.http import url_problem\n"
        "from mux_ws._handshake import url_problem as ws_url_problem\n"
        "assert url_problem('http://127.0.0.1:8888/events?a=b') == ''\n"
        "assert ws_url_problem('wss://example.com:8889/ws') == ''\n"
    )
    assert _modules_after(code, unwanted) == []
    code = (
        "from mux_core.http import url_problem\n"
        "from mux_ws._handshake import url_problem as ws_url_problem\n"
        "assert url_problem('http://[::1]:8888/') == ''\n"
        "assert ws_url_problem('ws://user:pw@h/') == ''\n"
    )
    assert {"httpx", "websockets"} <= set(_modules_after(code, unwanted))


def test_check_of_every_other_built_in_imports_none_of_the_libraries_a_run_uses(
    tmp_path: Path,
) -> None:
    """The same for the built-ins monitor.toml leaves out: webhook, prometheus, log,
    redis-stream (both ways) and http discovery."""
    config = tmp_path / "all.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [[sources]]
            name = "r"
            transport = "redis-stream"
            url = "redis://127.0.0.1:6379/0"
            streams = ["mux:x"]

            [[sinks]]
            type = "webhook"
            url = "https://hooks.example.com/x"

            [[sinks]]
            type = "redis-stream"
            url = "rediss://127.0.0.1:6380/0"

            [[sinks]]
            type = "prometheus"
            path = "{tmp_path}/mux.prom"

            [[sinks]]
            type = "log"

            [[discovery]]
            type = "http"
            url = "http://127.0.0.1:9000/sd"
            """
        )
    )
    code = f"from mux_core._cli import main\nassert main(['check', '-q', {str(config)!r}]) == 0\n"
    assert _modules_after(code, ("mux_core._run.engine", "coredis", *_RUN_LIBRARIES)) == []
