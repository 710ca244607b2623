"""The plugin manager: registration, clashes, the main-loop hook."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mux_core.testing
from mux_core import PluginError, hookimpl
from mux_core._plugins import PluginManager
from mux_core.testing import CollectingSink, ScriptedTransport


class _AlsoScripted:
    @hookimpl
    def mux_register_transports(self, register):  # type: ignore[no-untyped-def]
        register("scripted", ScriptedTransport)


def test_two_plugins_registering_one_name_is_an_error_naming_both(plugins: PluginManager) -> None:
    plugins.register(_AlsoScripted(), name="copycat")
    with pytest.raises(PluginError) as info:
        plugins.transports()
    assert "'testing'" in str(info.value) and "'copycat'" in str(info.value)
    assert "transport 'scripted'" in str(info.value)


def test_register_hooks_provide_classes(plugins: PluginManager) -> None:
    assert plugins.transports()["scripted"].cls is ScriptedTransport
    assert plugins.sinks()["collect"].cls is CollectingSink
    assert plugins.sinks()["collect"].plugin == "testing"


def test_a_hook_may_take_fewer_arguments_than_the_spec() -> None:
    class NoArgs:
        @hookimpl
        def mux_register_sinks(self) -> None:
            pass

    pm = PluginManager()
    pm.register(NoArgs(), name="noargs")
    assert pm.sinks() == {}


def test_main_loop_hook_first_result_wins(plugins: PluginManager) -> None:
    calls: list[str] = []

    class Declines:
        @hookimpl
        def mux_main_loop(self, engine):  # type: ignore[no-untyped-def]
            calls.append("declines")
            return None

    class Owns:
        @hookimpl
        def mux_main_loop(self, engine):  # type: ignore[no-untyped-def]
            calls.append("owns")
            engine.ran = True
            return True

    plugins.register(Declines(), name="declines")
    assert plugins.main_loop(object()) is False  # type: ignore[arg-type]
    plugins.register(Owns(), name="owns")

    class FakeEngine:
        ran = False

    engine = FakeEngine()
    assert plugins.main_loop(engine) is True  # type: ignore[arg-type]
    assert engine.ran and "owns" in calls


def test_registering_the_same_plugin_twice_is_an_error(plugins: PluginManager) -> None:
    with pytest.raises(ValueError):
        plugins.register(mux_core.testing, name="testing-again")


def test_register_module_reports_an_import_failure() -> None:
    pm = PluginManager()
    pm.register_module("no_such_mux_plugin_module")
    assert pm.failures[0].plugin == "no_such_mux_plugin_module"
    assert "ModuleNotFoundError" in pm.failures[0].error


_WITHOUT_EXTRAS = """\
import importlib.abc, importlib.util, sys

class _NotInstalled(importlib.abc.MetaPathFinder):
    # What an install without mux[qt], mux[redis], mux[prometheus] looks like.
    blocked = ("PySide6", "pyqtgraph", "coredis", "prometheus_client")

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
_find_spec = importlib.util.find_spec


def _find_spec_not_installed(name, package=None):
    if name.split(".")[0] in _NotInstalled.blocked:
        return None  # what find_spec says of a module that is not installed
    return _find_spec(name, package)


importlib.util.find_spec = _find_spec_not_installed
from mux_core._cli import main
sys.exit(main(sys.argv[1:]))
"""


def _mux_without_extras(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_EXTRAS, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_a_plugin_whose_extra_is_missing_is_silent_until_a_config_uses_it(
    tmp_path: Path,
) -> None:
    """Installed without [qt] / [redis] / [prometheus], every command used to warn
    "plugin 'qt' (mux) failed to load: ImportError" although nothing used it."""
    plain = tmp_path / "plain.toml"
    plain.write_text(
        '[[sources]]\nname = "a"\ntransport = "sse"\nurl = "http://127.0.0.1:9/e"\n'
        '[[sinks]]\ntype = "log"\n'
    )
    checked = _mux_without_extras("check", "-q", str(plain))
    assert checked.returncode == 0, checked.stderr
    assert "failed to load" not in checked.stderr and "WARNING" not in checked.stderr
    ran = _mux_without_extras("run", str(plain), "--for", "0.5")
    assert ran.returncode == 0, ran.stderr
    assert "failed to load" not in ran.stderr

    listed = _mux_without_extras("plugins", "--json")
    errors = {p["name"]: p["error"] for p in json.loads(listed.stdout)}
    assert "mux[qt]" in errors["qt"] and "mux[redis]" in errors["redis"]
    assert "mux[prometheus]" in errors["prometheus"]
    assert "failed to load" not in listed.stderr

    uses_qt = tmp_path / "panel.toml"
    uses_qt.write_text(plain.read_text() + '[[sinks]]\ntype = "qt"\n')
    for command in ("check", "run"):
        used = _mux_without_extras(command, str(uses_qt))
        assert used.returncode == 2
        assert f"{uses_qt}:8: sinks[1].type: " in used.stderr and "mux[qt]" in used.stderr
        assert "Traceback" not in used.stderr


def test_each_plugin_is_listed_with_its_own_distribution_and_version() -> None:
    """The name and version of a distribution are read once for all its entry points
    (each read parses its METADATA): every plugin still gets its own."""
    expected = {
        ep.name: (ep.dist.name, ep.dist.version)
        for ep in importlib.metadata.entry_points(group="mux")
        if ep.dist is not None
    }
    plugins = PluginManager()
    plugins.load_entry_points(only=set(expected))
    listed = {info.name: (info.distribution, info.version) for info in plugins.infos()}
    assert {name: listed[name] for name in expected} == expected
    assert expected["sse"] == ("mux", importlib.metadata.version("mux"))
