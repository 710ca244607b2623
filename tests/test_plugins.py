"""The plugin manager: registration, clashes, the main-loop hook."""

from __future__ import annotations

import pytest

import mux_core.testing
from mux_core import PluginError, hookimpl
from mux_core.plugins import PluginManager
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
