"""Guards that keep the docs honest (datasette style).

* every hook in mux_core.hookspecs has a ``## name(`` heading in docs/hooks.md,
  and an example implementing it (``@hookimpl`` ``def name(``) under that heading;
* every hook is called in some test: a class under tests/ implements it with
  ``@hookimpl`` and an instance of that class is registered with a plugin manager;
* docs/config-reference.md is what scripts/gen_config_reference.py generates;
* every option of every built-in plugin -- transports, sinks, processors and
  discoverers -- (and of [retry]) has a ``#:`` description;
* repository paths the docs name exist;
* the plugin guide's example transport and sink pass the guide's own tests.

``mkdocs build --strict`` is not run here (slow); ``make docs`` runs it.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
import trio

from mux_core import hookspecs
from mux_core._plugins import PluginManager, Provided
from mux_core.retry import RetryPolicy
from tests.helpers import ROOT

DOCS = ROOT / "docs"
TESTS = ROOT / "tests"


def _load_generator() -> ModuleType:
    path = ROOT / "scripts" / "gen_config_reference.py"
    spec = importlib.util.spec_from_file_location("gen_config_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _load_generator()


def _hookspecs() -> list[str]:
    return sorted(
        name
        for name, obj in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("mux_") and hasattr(obj, "mux_spec")
    )


HOOKS = _hookspecs()


def _builtin_plugins() -> list[Provided]:
    plugins = PluginManager()
    plugins.load_entry_points(only=set())
    return [
        *plugins.transports().values(),
        *plugins.sinks().values(),
        *plugins.processors().values(),
        *plugins.discoverers().values(),
    ]


def _is_hookimpl(decorator: ast.expr) -> bool:
    """``@hookimpl``, ``@hookimpl(...)``, ``@mux_core.hookimpl`` or ``@mux_core.hookimpl(...)``."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
    return name == "hookimpl"


def _registered_class(call: ast.Call) -> str | None:
    """``X`` of a ``something.register(X(...), ...)`` call, else None."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr == "register" and call.args):
        return None
    plugin = call.args[0]
    if isinstance(plugin, ast.Call) and isinstance(plugin.func, ast.Name):
        return plugin.func.id
    return None


def _hooks_called_in(source: str) -> list[str]:
    """The hooks a test module implements and hands to a plugin manager.

    A hook counts when a class in the module implements it as a method marked
    ``@hookimpl`` -- without the marker pluggy never calls it -- and the module
    registers an instance of that class (``plugins.register(Class(), name=...)``):
    the manager then calls it when the test asks for transports, sinks,
    commands or a main loop, or runs an engine. A hook's name in a string, a
    comment or a docstring does not count.
    """
    nodes = list(ast.walk(ast.parse(source)))
    registered = {
        name
        for node in nodes
        if isinstance(node, ast.Call) and (name := _registered_class(node)) is not None
    }
    return sorted(
        member.name
        for node in nodes
        if isinstance(node, ast.ClassDef) and node.name in registered
        for member in node.body
        if isinstance(member, ast.FunctionDef) and any(map(_is_hookimpl, member.decorator_list))
    )


def _hooks_called_by_tests() -> dict[str, list[str]]:
    """``{hook: [test module, ...]}`` over every module under tests/ but this one."""
    called: dict[str, list[str]] = {}
    for path in sorted(TESTS.rglob("*.py")):
        if path.resolve() != Path(__file__).resolve():
            for hook in _hooks_called_in(path.read_text(encoding="utf-8")):
                called.setdefault(hook, []).append(str(path.relative_to(TESTS)))
    return called


def _hooks_section(hook: str) -> str:
    """The text of docs/hooks.md under ``## hook(``, up to the next ``## `` heading."""
    text = (DOCS / "hooks.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {hook}\(.*?(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    return match.group(0) if match else ""


def test_there_are_hooks_to_check() -> None:
    assert "mux_register_transports" in HOOKS and "mux_main_loop" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook: str) -> None:
    text = (DOCS / "hooks.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (\w+)\(", text, flags=re.MULTILINE)
    assert hook in headings, f"docs/hooks.md needs a heading '## {hook}(...)'"
    examples = re.findall(r"^```python\n(.*?)^```", _hooks_section(hook), re.MULTILINE | re.DOTALL)
    implementing = [block for block in examples if "@hookimpl" in block and f"def {hook}(" in block]
    assert implementing, f"docs/hooks.md: add an example implementing {hook} under its heading"


def test_the_hook_check_counts_registered_implementations_only() -> None:
    source = textwrap.dedent(
        """
        class Registered:
            @mux_core.hookimpl
            def mux_register_sinks(self, register): ...

        class NeverRegistered:
            @hookimpl
            def mux_register_transports(self, register): ...

        class Unmarked:
            def mux_main_loop(self, engine): ...

        def test_plugins(plugins):
            "mux_register_commands, mux_register_discovery"
            plugins.register(Registered(), name="registered")
            plugins.register(Unmarked(), name="unmarked")
        """
    )
    assert _hooks_called_in(source) == ["mux_register_sinks"]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_called_by_a_test(hook: str) -> None:
    assert _hooks_called_by_tests().get(hook), (
        f"no test registers a @hookimpl of {hook} with a plugin manager;"
        " add one (tests/core/test_hooks.py)"
    )


def test_config_reference_is_fresh() -> None:
    committed = (DOCS / "config-reference.md").read_text(encoding="utf-8")
    assert committed == GENERATOR.generate(), (
        "docs/config-reference.md is stale: run `python scripts/gen_config_reference.py`"
    )


def _options_classes() -> list[tuple[str, type[Any]]]:
    classes: list[tuple[str, type[Any]]] = [("[retry]", RetryPolicy)]
    for provided in _builtin_plugins():
        options = getattr(provided.cls, "Options", None)
        if options is not None:
            classes.append((f"{provided.kind} {provided.name!r}", options))
    return classes


@pytest.mark.parametrize(("owner", "options"), _options_classes(), ids=lambda v: str(v))
def test_every_option_has_a_description(owner: str, options: type[Any]) -> None:
    assert attrs.has(options), f"{owner}: Options must be an attrs class"
    blank = [field.name for field in GENERATOR.options_fields(options) if not field.description]
    assert not blank, f"{owner}: add a '#:' comment above {', '.join(blank)}"


def test_every_builtin_plugin_is_in_the_reference() -> None:
    text = (DOCS / "config-reference.md").read_text(encoding="utf-8")
    for provided in _builtin_plugins():
        key = "transport" if provided.kind == "transport" else "type"
        assert f'### `{key} = "{provided.name}"`' in text


def test_repository_paths_named_in_the_docs_exist() -> None:
    pattern = re.compile(r"`((?:plugins|mux_core|tests|examples|scripts)/[\w./-]+)`")
    missing = []
    for page in DOCS.rglob("*.md"):
        for path in pattern.findall(page.read_text(encoding="utf-8")):
            if not (ROOT / path).exists():
                missing.append(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, "docs name paths that do not exist:\n" + "\n".join(missing)


def _python_blocks(page: str) -> list[str]:
    text = (DOCS / page).read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def _block_with(page: str, marker: str) -> str:
    blocks = [block for block in _python_blocks(page) if marker in block]
    assert blocks, f"docs/{page}: no python block containing {marker!r}"
    return blocks[0]


async def test_the_plugin_guide_examples_pass_their_own_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gauge transport and snapshot sink of the guide, run by the guide's tests."""
    gauge = _block_with("plugins/writing-a-transport.md", "def mux_register_transports")
    snapshot = _block_with("plugins/writing-a-sink.md", "def mux_register_sinks")
    (tmp_path / "mux_gauge.py").write_text(gauge, encoding="utf-8")
    (tmp_path / "mux_snapshot.py").write_text(snapshot, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("mux_gauge", "mux_snapshot"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    ran = []
    for block in _python_blocks("plugins/packaging-and-testing.md"):
        if "async def test_" not in block:
            continue
        namespace: dict[str, Any] = {}
        exec(compile(block, "docs/plugins/packaging-and-testing.md", "exec"), namespace)
        for name, test in namespace.items():
            if name.startswith("test_") and inspect.iscoroutinefunction(test):
                wanted = inspect.signature(test).parameters
                kwargs = {"tmp_path": tmp_path / name} if "tmp_path" in wanted else {}
                for path in kwargs.values():
                    path.mkdir()
                with trio.fail_after(10):
                    await test(**kwargs)
                ran.append(name)
    assert len(ran) >= 4, ran
