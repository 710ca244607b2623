"""``mux new-plugin NAME``: write a complete, installable plugin skeleton.

The skeleton is a working plugin, not a page of TODOs: a transport (newline-
delimited JSON over TCP, resumed after the last id: replace the protocol with
your server's) and a sink (events and final state per source, in a JSON
file) -- or, with ``--transport-only``, ``--sink-only`` or
``--processor-only``, one of them or a processor (an alert when a payload
number goes above a limit) -- with their Options, the entry point, a build
system with the package named (so a second top-level folder never breaks
the build), tests on :mod:`mux_core.testing` -- fault tests of the
transport against ``serve_tcp``, a run of the sink and of the processor
through the real engine -- and a README. ``pip install -e DIR && cd DIR &&
pytest && mypy`` passes as generated, and so does ruff.

The files are templates in ``skeleton/`` beside this module; ``__NAME__``,
``__PKG__``, ``__CLASS__`` and the rest are filled in by :func:`skeleton_files`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.resources
import re
import sys
from collections.abc import Collection
from pathlib import Path

import attrs

from .._plugins import _OWN_DISTRIBUTION, ENTRY_POINT_GROUP, Command
from .._run.exit_codes import ExitCode
from . import BUILTIN

__all__ = [
    "COMMAND",
    "KINDS",
    "builtin_plugin_names",
    "check_name",
    "check_not_builtin",
    "new_plugin",
    "package_name",
    "skeleton_files",
]

_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")

#: What a skeleton may hold, in the order they are described.
KINDS = ("transport", "sink", "processor")
#: What ``mux new-plugin`` writes without ``--*-only``.
DEFAULT_KINDS = ("transport", "sink")


@attrs.frozen(kw_only=True)
class _Part:
    """What one kind of component adds to a skeleton."""

    #: The names its module exports.
    names: tuple[str, ...]
    #: Its hook, and the body of the hook's function.
    hook: str
    register: str
    #: The distributions its module imports besides mux and attrs.
    dependencies: tuple[str, ...]
    #: Its bullet in the README, and its table in the README's config example.
    readme: str
    toml: str


_PARTS = {
    "transport": _Part(
        names=("__CLASS__Options", "__CLASS__Transport"),
        hook="mux_register_transports",
        register='''"""Provide ``transport = "__NAME__"``."""
    register("__NAME__", __CLASS__Transport)''',
        dependencies=("orjson>=3.9", "trio>=0.25"),
        readme="""\
* the transport **`__NAME__`** (`__PKG__/transport.py`) -- newline-delimited
  JSON objects over TCP; a new connection first sends
  `{"resume_after": LAST_ID}`. Replace the protocol with your server's.""",
        toml="""[[sources]]
name = "feed"
transport = "__NAME__"
port = 7000""",
    ),
    "sink": _Part(
        names=("__CLASS__Sink", "__CLASS__SinkOptions"),
        hook="mux_register_sinks",
        register='''"""Provide ``[[sinks]] type = "__NAME__"``."""
    register("__NAME__", __CLASS__Sink)''',
        dependencies=("trio>=0.25",),
        readme="""\
* the sink **`__NAME__`** (`__PKG__/sink.py`) -- events counted per source
  and each source's last state, written to a JSON file when the run ends.""",
        toml='''[[sinks]]
type = "__NAME__"
path = "summary.json"''',
    ),
    "processor": _Part(
        names=("__CLASS__Processor", "__CLASS__ProcessorOptions"),
        hook="mux_register_processors",
        register='''"""Provide ``[[processors]] type = "__NAME__"``."""
    register("__NAME__", __CLASS__Processor)''',
        dependencies=(),
        readme="""\
* the processor **`__NAME__`** (`__PKG__/processor.py`) -- a warning alert
  when a number in the payload goes above a limit, an info alert when it
  is back: one per episode.""",
        toml="""[[processors]]
type = "__NAME__"
field = "loss"
above = 10.0""",
    ),
}
_GUIDES = {
    "transport": "writing a transport",
    "sink": "writing a sink",
    "processor": "writing a processor",
}


def check_name(name: str) -> str:
    """The plugin name ``name`` gives (``acme``, ``acme-feed``); else ValueError.

    A leading ``mux-`` is the distribution's prefix, not part of the name:
    ``mux-nats`` gives ``nats`` (distribution ``mux-nats``, package
    ``mux_nats``), not ``mux-mux-nats``.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"plugin name {name!r}: use lower-case letters, digits and single dashes, "
            "starting with a letter (e.g. 'acme' or 'acme-feed')"
        )
    return name.removeprefix("mux-")


def package_name(name: str) -> str:
    """The top-level package of plugin ``name``: ``acme-feed`` -> ``mux_acme_feed``."""
    return "mux_" + check_name(name).replace("-", "_")


def builtin_plugin_names() -> set[str]:
    """What mux's own plugins are called: entry point names and top-level packages.

    The entry points of group ``mux`` that the ``mux`` distribution declares
    (``redis = "mux_redis"``: both names), and the packages under ``plugins/``
    beside ``mux_core`` when mux runs from a checkout.
    """
    names: set[str] = set()
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.dist is not None and entry_point.dist.name == _OWN_DISTRIBUTION:
            names.add(entry_point.name)
            names.add(entry_point.module.partition(".")[0])
    plugins = Path(__file__).resolve().parent.parent.parent / "plugins"
    if plugins.is_dir():
        names.update(
            package.name
            for package in plugins.iterdir()
            if package.name.startswith("mux_") and (package / "__init__.py").is_file()
        )
    return names


def check_not_builtin(name: str) -> None:
    """ValueError when plugin ``name`` would take a built-in plugin's name or package.

    Installed, such a plugin would shadow the built-in one: its package
    replaces the built-in package on import, or its entry point the built-in
    entry point.
    """
    name = check_name(name)
    package = package_name(name)
    taken = builtin_plugin_names()
    clashes = [f"the entry point {name!r}"] if name in taken else []
    clashes += [f"the package {package}"] if package in taken else []
    if clashes:
        raise ValueError(
            f"plugin name {name!r} is taken: a built-in plugin of mux has {' and '.join(clashes)}, "
            f"and an installed plugin of this name would shadow it; choose another name, "
            f"e.g. 'acme-{name}'"
        )


def skeleton_files(name: str, kinds: Collection[str] = DEFAULT_KINDS) -> dict[str, str]:
    """``{relative path: text}`` of the skeleton for plugin ``name`` with the
    components ``kinds`` (of :data:`KINDS`; by default a transport and a sink)."""
    name = check_name(name)
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"kinds must be some of {', '.join(KINDS)}, got {sorted(kinds)}")
    parts = [kind for kind in KINDS if kind in kinds]
    templates = {
        "pyproject.toml": _template("pyproject.toml"),
        "README.md": _template("README.md"),
        ".gitignore": _template("gitignore"),
        "__PKG__/__init__.py": _init(parts),
        "__PKG__/py.typed": "",
    }
    for kind in parts:
        templates[f"__PKG__/{kind}.py"] = _template(f"{kind}.py")
        templates[f"tests/test_{kind}.py"] = _template(f"test_{kind}.py")
    dependencies = ["mux>=0.1", "attrs>=23.2"]
    for kind in parts:
        dependencies += [d for d in _PARTS[kind].dependencies if d not in dependencies]
    described = [f"the __NAME__ {kind}" for kind in parts]
    guides = [_GUIDES[kind] for kind in parts]
    words = {
        "__DESCRIPTION__": " and ".join(described),
        "__DEPENDENCIES__": ", ".join(f'"{d}"' for d in dependencies),
        "__PARTS__": "\n".join(_PARTS[kind].readme for kind in parts),
        "__TOML__": "\n\n".join(_PARTS[kind].toml for kind in parts),
        "__GUIDES__": ", ".join(guides),
        "__NAME__": name,
        "__DIST__": f"mux-{name}",
        "__PKG__": package_name(name),
        "__CLASS__": "".join(part.capitalize() for part in name.split("-")),
    }
    files: dict[str, str] = {}
    for path, template in templates.items():
        for placeholder, value in words.items():
            path = path.replace(placeholder, value)
            template = template.replace(placeholder, value)
        files[path] = template
    return files


def _template(name: str) -> str:
    return (importlib.resources.files(__package__) / "skeleton" / f"{name}.tmpl").read_text(
        encoding="utf-8"
    )


def _init(parts: list[str]) -> str:
    """The package's ``__init__.py``: its components and their hooks."""
    what = " and ".join(f"a {kind}" for kind in parts)
    imports = [
        f"from .{kind} import {', '.join(sorted(_PARTS[kind].names))}" for kind in sorted(parts)
    ]
    exported = sorted(
        [name for kind in parts for name in _PARTS[kind].names]
        + [_PARTS[kind].hook for kind in parts]
    )
    hooks = [
        f"@hookimpl\ndef {_PARTS[kind].hook}(register: Register) -> None:\n"
        f"    {_PARTS[kind].register}\n"
        for kind in parts
    ]
    return (
        f'"""__PKG__: the mux plugin __NAME__ ({what})."""\n\n'
        "from __future__ import annotations\n\n"
        "from mux_core import hookimpl\n"
        "from mux_core.hookspecs import Register\n\n"
        + "\n".join(imports)
        + "\n\n__all__ = [\n"
        + "".join(f'    "{name}",\n' for name in exported)
        + "]\n\n\n"
        + "\n\n".join(hooks)
    )


def new_plugin(
    name: str, directory: Path | None = None, kinds: Collection[str] = DEFAULT_KINDS
) -> list[Path]:
    """Write the skeleton into ``directory`` (default ``./mux-NAME``); the paths written.

    ``kinds``: the components it holds (:func:`skeleton_files`). Refuses
    (FileExistsError) to write into a directory that exists and is not
    empty: nothing of yours is ever overwritten; and (ValueError) a name a
    built-in plugin has (:func:`check_not_builtin`).
    """
    name = check_name(name)
    check_not_builtin(name)
    files = skeleton_files(name, kinds)
    target = Path(f"mux-{name}") if directory is None else directory
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not empty; choose another --dir")
    written = []
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write a plugin skeleton that installs, is listed by `mux plugins` and passes its own "
        "tests: pyproject.toml with the entry point, a transport and a sink with Options (or "
        "one of them, or a processor), tests on mux_core.testing, a README."
    )
    parser.add_argument(
        "name",
        metavar="NAME",
        help="e.g. acme (or mux-acme): distribution mux-acme, package mux_acme; not the name "
        "of a built-in plugin",
    )
    parser.add_argument("--dir", metavar="DIR", help="where to write it (default ./mux-NAME)")
    only = parser.add_mutually_exclusive_group()
    for kind in KINDS:
        only.add_argument(
            f"--{kind}-only",
            dest="kinds",
            action="store_const",
            const=(kind,),
            default=DEFAULT_KINDS,
            help=f"write only a {kind} (default: a transport and a sink)",
        )


def _new_plugin(args: argparse.Namespace) -> int:
    try:
        name = check_name(args.name)
        written = new_plugin(name, None if args.dir is None else Path(args.dir), args.kinds)
    except (ValueError, FileExistsError) as exc:
        print(f"mux: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    root = written[0].parent
    print(f"wrote plugin {name!r} in {root}:")
    for path in written:
        print(f"  {path.relative_to(root)}")
    print(f"next: pip install -e '{root}[test]' && cd {root} && pytest && mypy .")
    return ExitCode.OK


COMMAND = Command(
    "new-plugin",
    _add_arguments,
    _new_plugin,
    "write a complete, installable plugin skeleton (transport, sink or processor; tests)",
    BUILTIN,
)
