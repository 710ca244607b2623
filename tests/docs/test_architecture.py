"""docs/architecture.md stays the map of the code it claims to be.

* no file of the repository (Python, Markdown, TOML) points at an
  architecture document outside it: the map is docs/architecture.md;
* the module tree of "The map" names every module of ``mux_core`` (walked as
  a package) and nothing that does not exist;
* every file path the page names exists;
* the JSON Lines lines of "Records" are what ``encode_jsonl`` writes, key for
  key, and Event and Status have exactly the keys the page lists;
* every connection state and every hook is on the page;
* a pointer from the code or the docs to a section, "(docs/architecture.md,
  Records)" or "(docs/user-guide.md, Exit codes)", names a section that exists.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import re
from pathlib import Path

import pytest

import mux_core
from mux_core import hookspecs
from mux_core.records import State, decode_jsonl, encode_jsonl
from tests.helpers import ROOT

PAGE = ROOT / "docs" / "architecture.md"
# Spelled in two pieces so that this file does not mention it either.
OUTSIDE_DOC = "DESIGN" + ".md"
SKIPPED_DIRS = {"site", "build", "dist", "node_modules", "__pycache__"}


def _text() -> str:
    return PAGE.read_text(encoding="utf-8")


def _section(title: str) -> str:
    text = _text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : len(text) if end == -1 else end]


def _repository_files(suffixes: tuple[str, ...]) -> list[Path]:
    found: list[Path] = []
    for directory, dirs, files in os.walk(ROOT):
        dirs[:] = [
            d
            for d in dirs
            if not d.startswith(".") and d not in SKIPPED_DIRS and not d.endswith(".egg-info")
        ]
        found.extend(Path(directory, name) for name in files if name.endswith(suffixes))
    return found


def test_nothing_points_at_an_architecture_document_outside_the_repository() -> None:
    files = _repository_files((".py", ".md", ".toml"))
    assert PAGE in files and Path(__file__).resolve() in files  # the walk sees the repo
    mentions = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE_DOC.lower() in line.lower()
    ]
    assert not mentions, (
        f"these lines mention {OUTSIDE_DOC}; point at docs/architecture.md (or the user guide) "
        "instead:\n" + "\n".join(mentions)
    )


#: "(docs/architecture.md, Records)", also across a line break, in a comment or
#: a docstring, with the path in backticks or not: the page and the section.
POINTER = re.compile(r"\(`{0,2}(docs/[\w/-]+\.md)`{0,2}, ([A-Z][^;)]*)[;)]")


def _headings(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    return [h.replace("`", "").lower() for h in re.findall(r"^#{2,4} (.+)$", text, re.M)]


def test_pointers_to_a_section_name_a_section_that_exists() -> None:
    pointers = []
    for path in _repository_files((".py", ".md")):
        text = path.read_text(encoding="utf-8")
        flat = re.sub(r"\s*\n\s*(?:#:?\s*)?", " ", text)  # one line, comments joined
        for page, section in POINTER.findall(flat):
            pointers.append((path.relative_to(ROOT), page, " ".join(section.split())))
    assert any(page == "docs/architecture.md" for _, page, _ in pointers)
    broken = [
        f"{where}: ({page}, {section})"
        for where, page, section in pointers
        if not (ROOT / page).exists()
        or not any(h.startswith(section.lower()) for h in _headings(ROOT / page))
    ]
    assert not broken, "these point at a section that does not exist:\n" + "\n".join(broken)


def _modules_of_the_package() -> set[str]:
    """Every module of mux_core as a path, ``mux_core/_run/engine.py``."""
    paths = {"mux_core/__init__.py"}
    for info in pkgutil.walk_packages(mux_core.__path__, "mux_core."):
        parts = info.name.split(".")
        if info.ispkg:
            paths.add("/".join(parts) + "/__init__.py")
        else:
            paths.add("/".join(parts) + ".py")
    return paths


def _modules_on_the_map() -> set[str]:
    """The paths of the tree in "The map": two spaces of indent per level."""
    (tree,) = re.findall(r"^```text\n(mux_core/\n.*?)^```", _section("The map"), re.M | re.S)
    paths = set()
    stack: list[str] = []
    for line in tree.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, f"odd indent on the map: {line!r}"
        name = line.split()[0]
        del stack[indent // 2 :]
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
        else:
            assert len(line.split(maxsplit=1)) == 2, f"no job given for {name} on the map"
            paths.add("/".join([*stack, name]))
    return paths


def test_the_map_names_every_module_of_the_package_and_no_other() -> None:
    in_package = _modules_of_the_package()
    on_map = _modules_on_the_map()
    assert "mux_core/_run/engine.py" in in_package and "mux_core/testing/_tcp.py" in in_package
    assert not in_package - on_map, (
        "docs/architecture.md, The map: add these modules, one line each saying its job: "
        + ", ".join(sorted(in_package - on_map))
    )
    assert not on_map - in_package, (
        "docs/architecture.md, The map: these modules do not exist (any more): "
        + ", ".join(sorted(on_map - in_package))
    )


def test_every_file_the_page_names_exists() -> None:
    named = set(re.findall(r"`([\w./-]+\.(?:py|md|toml|json))`", _text()))
    assert "_run/engine.py" in named
    missing = [
        path
        for path in sorted(named)
        if "/" in path
        and not (ROOT / path).exists()
        and not (ROOT / "mux_core" / path).exists()
        and not (ROOT / "docs" / path).exists()
    ]
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def _json_lines() -> list[str]:
    blocks = re.findall(
        r"^```json\n(.*?)^```", _section("Records and the JSON Lines format"), re.M | re.S
    )
    assert len(blocks) == 1
    return str(blocks[0]).splitlines()


def test_the_records_page_shows_lines_as_the_encoder_writes_them() -> None:
    lines = _json_lines()
    kinds = [json.loads(line)["type"] for line in lines]
    assert kinds == ["event", "status", "alert", "quality"]
    for line in lines:
        written = encode_jsonl([decode_jsonl(line)]).decode()
        assert list(json.loads(written)) == list(json.loads(line)), line
        assert json.loads(written) == json.loads(line)


def test_event_and_status_keep_exactly_their_keys() -> None:
    event, status = (list(json.loads(line)) for line in _json_lines()[:2])
    assert event == ["type", "source", "transport", "event", "id", "data", "received_at", "seq"]
    assert status == ["type", "source", "transport", "state", "attempt", "retry_in", "detail", "at"]


def test_every_state_is_in_the_states_table() -> None:
    rows = re.findall(r"^\| `(\w+)` \|", _section("States and attempts"), re.M)
    assert rows == [state.value for state in State]
    for state in State:
        terminal = "yes" if state.terminal else "no"
        assert re.search(rf"^\| `{state.value}` \| [^|]+ \| {terminal} \|", _text(), re.M)


def test_every_hook_is_in_the_hooks_table() -> None:
    specs = sorted(
        name
        for name, obj in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(obj, "mux_spec")
    )
    rows = sorted(re.findall(r"^\| `(mux_\w+)\(", _section("Hooks"), re.M))
    assert specs and rows == specs


@pytest.mark.parametrize(
    "module",
    ["records", "transport", "sink", "processor", "discovery", "hookspecs", "errors", "retry"],
)
def test_the_fence_lists_each_public_submodule(module: str) -> None:
    importlib.import_module(f"mux_core.{module}")
    assert f"`{module}`" in _section("The public API fence")
