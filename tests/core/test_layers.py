"""The layers of mux_core stay layers: what each package may import.

docs/architecture.md draws the tree as layers -- contracts at the top of the
package, then the config loader (``_config``), the run machinery (``_run``)
and the command line (``_cli``) on top. This test reads every module's
imports (module level and inside functions) and fails when one reaches up a
layer, so the tree keeps showing the architecture:

- a contract module imports only other contracts (and ``_config.positions``,
  a leaf that parses TOML positions for ``read_source_document``);
- ``_config`` never imports ``_run`` or ``_cli``;
- ``_run`` never imports ``_cli``;
- nothing but ``_cli`` and ``__main__`` imports ``_cli``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mux_core

PACKAGE = Path(mux_core.__file__).parent

CONTRACTS = {
    "discovery",
    "errors",
    "hookspecs",
    "options",
    "payload",
    "processor",
    "records",
    "retry",
    "sink",
    "transport",
    "views",
}
#: Private modules a contract may use: leaves that import nothing of mux_core.
CONTRACT_LEAVES = {"mux_core._config.positions"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every mux_core module ``path`` imports, anywhere in it, as an absolute name."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("mux_core"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            if not module.startswith("mux_core"):
                continue
            found.add(module)
            # `from . import x` / `from ._run import engine` name modules too.
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists():
                    found.add(candidate)
    return found


def _modules() -> dict[str, set[str]]:
    return {_module_name(path): _imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_contract_modules_import_only_contracts() -> None:
    allowed = {f"mux_core.{name}" for name in CONTRACTS} | CONTRACT_LEAVES | {"mux_core"}
    wrong = {
        f"{module} imports {imported}"
        for module, imports in _modules().items()
        if module.split(".")[-1] in CONTRACTS and module.count(".") == 1
        for imported in imports
        if imported not in allowed
    }
    assert wrong == set()


def test_the_config_loader_does_not_reach_into_the_run_or_the_cli() -> None:
    wrong = {
        f"{module} imports {imported}"
        for module, imports in _modules().items()
        if _under(module, "mux_core._config")
        for imported in imports
        if _under(imported, "mux_core._run") or _under(imported, "mux_core._cli")
    }
    assert wrong == set()


def test_the_run_does_not_reach_into_the_cli_and_only_the_cli_imports_it() -> None:
    wrong = {
        f"{module} imports {imported}"
        for module, imports in _modules().items()
        if not (_under(module, "mux_core._cli") or module == "mux_core.__main__")
        for imported in imports
        if _under(imported, "mux_core._cli")
    }
    assert wrong == set()


def test_the_leaf_a_contract_may_use_imports_nothing_of_mux_core() -> None:
    modules = _modules()
    for leaf in CONTRACT_LEAVES:
        assert modules[leaf] == set(), leaf


def test_the_import_reader_sees_relative_imports() -> None:
    """The checks above can fail: the reader finds what a real module imports."""
    engine = _modules()["mux_core._run.engine"]
    assert "mux_core._run.fan_out" in engine
    assert "mux_core.records" in engine
