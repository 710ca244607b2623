"""``mux new-plugin NAME``: write a complete, installable plugin skeleton.

The skeleton is a working plugin, not a page of TODOs: a transport (newline-
delimited JSON over TCP, resumed after the last id: replace the protocol with
your server's), a sink (events and final state per source, in a JSON file),
their Options, the entry point, a build system with the package named (so a
second top-level folder never breaks the build), tests on
:mod:`mux_core.testing` -- fault tests of the transport against
``serve_tcp`` and a run of the sink through the real engine -- and a README.
``pip install -e DIR && cd DIR && pytest && mypy`` passes as generated.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import sys
from pathlib import Path

from .._plugins import _OWN_DISTRIBUTION, ENTRY_POINT_GROUP, Command
from .._run.exit_codes import ExitCode
from . import BUILTIN

__all__ = [
    "COMMAND",
    "builtin_plugin_names",
    "check_name",
    "check_not_builtin",
    "new_plugin",
    "package_name",
    "skeleton_files",
]

_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


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


def skeleton_files(name: str) -> dict[str, str]:
    """``{relative path: text}`` of the skeleton for plugin ``name``."""
    name = check_name(name)
    package = package_name(name)
    words = {
        "__NAME__": name,
        "__DIST__": f"mux-{name}",
        "__PKG__": package,
        "__CLASS__": "".join(part.capitalize() for part in name.split("-")),
    }
    files: dict[str, str] = {}
    for path, template in _TEMPLATES.items():
        for placeholder, value in words.items():
            path = path.replace(placeholder, value)
            template = template.replace(placeholder, value)
        files[path] = template
    return files


def new_plugin(name: str, directory: Path | None = None) -> list[Path]:
    """Write the skeleton into ``directory`` (default ``./mux-NAME``); the paths written.

    Refuses (FileExistsError) to write into a directory that exists and is
    not empty: nothing of yours is ever overwritten; and (ValueError) a name
    a built-in plugin has (:func:`check_not_builtin`).
    """
    name = check_name(name)
    check_not_builtin(name)
    files = skeleton_files(name)
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
        "tests: pyproject.toml with the entry point, a transport and a sink with Options, "
        "tests on mux_core.testing, a README."
    )
    parser.add_argument(
        "name",
        metavar="NAME",
        help="e.g. acme (or mux-acme): distribution mux-acme, package mux_acme; not the name "
        "of a built-in plugin",
    )
    parser.add_argument("--dir", metavar="DIR", help="where to write it (default ./mux-NAME)")


def _new_plugin(args: argparse.Namespace) -> int:
    try:
        name = check_name(args.name)
        written = new_plugin(name, None if args.dir is None else Path(args.dir))
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
    "write a complete, installable plugin skeleton (transport, sink, tests)",
    BUILTIN,
)

_PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.24"]
build-backend = "hatchling.build"

[project]
name = "__DIST__"
version = "0.1.0"
description = "A mux plugin: the __NAME__ transport and sink."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["mux>=0.1", "attrs>=23.2", "orjson>=3.9", "trio>=0.25"]

[project.optional-dependencies]
test = ["pytest>=8", "pytest-trio>=0.8", "mypy>=1.10"]

# The line that makes this a mux plugin: mux imports the module named here
# and calls its @hookimpl functions.
[project.entry-points.mux]
__NAME__ = "__PKG__"

# Name the package: hatchling would otherwise guess, and fails on a flat
# layout with more than one top-level folder.
[tool.hatch.build.targets.wheel]
packages = ["__PKG__"]

[tool.pytest.ini_options]
trio_mode = true
testpaths = ["tests"]
addopts = "-ra --strict-markers"

[tool.mypy]
strict = true

[tool.ruff]
line-length = 100

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP", "RUF", "ASYNC"]
"""

_README = """\
# __DIST__

A plugin for mux (a client-only stream multiplexer), generated by
`mux new-plugin __NAME__`:

* the transport **`__NAME__`** (`__PKG__/transport.py`) -- newline-delimited
  JSON objects over TCP; a new connection first sends
  `{"resume_after": LAST_ID}`. Replace the protocol with your server's.
* the sink **`__NAME__`** (`__PKG__/sink.py`) -- events counted per source
  and each source's last state, written to a JSON file when the run ends.

```toml
[[sources]]
name = "feed"
transport = "__NAME__"
port = 7000

[[sinks]]
type = "__NAME__"
path = "summary.json"
```

## Develop

```console
$ pip install -e '.[test]'
$ mux plugins                 # lists __NAME__
$ pytest                      # tests on mux_core.testing's fake servers
$ mypy                        # strict, against the installed mux (py.typed)
$ mux plugins --config-reference __NAME__ > docs/config.md
```

The plugin author guide: writing a transport, writing a sink, packaging and
testing (docs/plugins/ in mux).
"""

_INIT = '''\
"""__PKG__: the mux plugin __NAME__ (a transport and a sink)."""

from __future__ import annotations

from mux_core import hookimpl
from mux_core.hookspecs import Register

from .sink import __CLASS__Sink, __CLASS__SinkOptions
from .transport import __CLASS__Options, __CLASS__Transport

__all__ = [
    "__CLASS__Options",
    "__CLASS__Sink",
    "__CLASS__SinkOptions",
    "__CLASS__Transport",
    "mux_register_sinks",
    "mux_register_transports",
]


@hookimpl
def mux_register_transports(register: Register) -> None:
    """Provide ``transport = "__NAME__"``."""
    register("__NAME__", __CLASS__Transport)


@hookimpl
def mux_register_sinks(register: Register) -> None:
    """Provide ``[[sinks]] type = "__NAME__"``."""
    register("__NAME__", __CLASS__Sink)
'''

_TRANSPORT = '''\
"""The __NAME__ transport: newline-delimited JSON objects over TCP.

A starting point: replace the hello line and the parsing with your server's
protocol. The contract (docs/plugins/writing-a-transport.md): one connection
per ``run_session`` -- connect, ``session.connected()``, one ``emit`` per
read -- ended by raising a SessionError; the core does all waiting and
counting between sessions.
"""

from __future__ import annotations

import attrs
import orjson
import trio
from mux_core import Disconnected, RawEvent, ServerUnavailable, Session, describe_connection_error


@attrs.frozen(kw_only=True)
class __CLASS__Options:
    #: The server's host name or address.
    host: str = "127.0.0.1"
    #: The server's TCP port.
    port: int
    #: Seconds without a byte from the server before the connection is dropped and retried.
    read_timeout: float = 30.0


class __CLASS__Transport:
    """Newline-delimited JSON objects over TCP, resumed after the last ``id``."""

    Options = __CLASS__Options

    def __init__(self, options: __CLASS__Options) -> None:
        self.options = options

    async def run_session(self, session: Session) -> None:
        options = self.options
        # Ids are kept as strings ("41"); a server that wants a number gets int(last_id).
        hello = orjson.dumps({"resume_after": session.resume.last_id}) + b"\\n"
        try:
            stream = await trio.open_tcp_stream(options.host, options.port)
        except OSError as exc:  # refused, unreachable, DNS: not there (yet), retried
            raise ServerUnavailable(describe_connection_error(exc) or "cannot connect") from exc
        try:
            async with stream:
                await stream.send_all(hello)
                await session.connected()
                pending = b""
                while True:
                    with trio.fail_after(options.read_timeout):
                        data = await stream.receive_some(65536)
                    if not data:  # a half line left in `pending` comes again after the resume
                        raise Disconnected("the server closed the connection")
                    *lines, pending = (pending + data).split(b"\\n")
                    await session.emit(await self._parse(session, lines))
        except trio.BrokenResourceError as exc:
            raise Disconnected(describe_connection_error(exc) or "connection lost") from exc
        except trio.TooSlowError:
            raise Disconnected(f"no data for {options.read_timeout:g} s") from None

    async def _parse(self, session: Session, lines: list[bytes]) -> list[RawEvent]:
        """One event per line; a malformed line is reported and skipped, the stream goes on."""
        items: list[RawEvent] = []
        for line in lines:
            try:
                message = orjson.loads(line)
                id_, event = message.get("id"), message.get("event", "message")
            except (orjson.JSONDecodeError, AttributeError):
                await session.notice(f"skipped a line that is not a JSON object: {line[:40]!r}")
                continue
            # The raw bytes are kept and decoded on first access (JSON, else text).
            items.append((str(event), None if id_ is None else str(id_), line))
        return items
'''

_SINK = '''\
"""The __NAME__ sink: events per source and each source's last state, in a JSON file.

A starting point (docs/plugins/writing-a-sink.md): ``write`` gets every batch
in order, one call at a time; ``aclose`` runs once at the end -- flush there.
Blocking work (files, sockets of blocking libraries) goes to a thread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import attrs
import trio
from mux_core import Batch, Event, SinkContext, Status


@attrs.frozen(kw_only=True)
class __CLASS__SinkOptions:
    #: The JSON file written when the run ends.
    path: str


class __CLASS__Sink:
    """Counts events per source and keeps each source's last state."""

    Options = __CLASS__SinkOptions
    default_overflow: ClassVar[str] = "block"  # a count must not miss a record
    default_on_error: ClassVar[str] = "drop"  # nor stop the run when it cannot be written

    def __init__(self, options: __CLASS__SinkOptions, context: SinkContext) -> None:
        self.options = options
        self.summary: dict[str, dict[str, Any]] = {
            source.name: {"events": 0, "state": None} for source in context.sources
        }

    async def write(self, batch: Batch) -> None:
        for record in batch:
            if type(record) is Event:
                entry = self.summary.setdefault(record.source, {"events": 0, "state": None})
                entry["events"] += 1
            elif type(record) is Status:
                entry = self.summary.setdefault(record.source, {"events": 0, "state": None})
                entry["state"] = record.state.value
            # other record types (Alert, ...): not counted here

    async def aclose(self) -> None:
        text = json.dumps(self.summary, indent=2, sort_keys=True)
        await trio.to_thread.run_sync(Path(self.options.path).write_text, text)
'''

_TEST_TRANSPORT = '''\
"""The __NAME__ transport against a real fake server with faults (mux_core.testing)."""

from __future__ import annotations

from mux_core.testing import Stall, refusing_port, run_one_session, serve_tcp

from __PKG__ import __CLASS__Options, __CLASS__Transport


async def test_each_line_is_one_event() -> None:
    async with serve_tcp(hello="resume_after") as server:
        await server.publish({"event": "metric", "loss": 0.5})
        transport = __CLASS__Transport(__CLASS__Options(port=server.port))
        result = await run_one_session(transport, until=1)
    assert [(e.event, e.id, e.data) for e in result.events] == [
        ("metric", "1", {"event": "metric", "loss": 0.5, "id": 1})
    ]
    assert server.received == [b\'{"resume_after":null}\']


async def test_refused_restart_resume_garbage_silence() -> None:
    with refusing_port() as port:
        refused = await run_one_session(__CLASS__Transport(__CLASS__Options(port=port)))
    async with serve_tcp(hello="resume_after") as server:
        transport = __CLASS__Transport(__CLASS__Options(port=server.port, read_timeout=0.3))
        await server.publish({"n": 1})
        first = await run_one_session(transport, until=1)
        await server.restart()  # killed, back on the same port, then garbage mid-stream
        await server.publish(b"\\xff not json")
        await server.publish({"n": 3})
        second = await run_one_session(transport, resume=first.resume, until=1)
        server.script(Stall())  # accepts, then silence
        silent = await run_one_session(transport, resume=second.resume)
    assert repr(refused.error) == "ServerUnavailable(\'connection refused\')"
    assert [e.id for e in first.events + second.events] == ["1", "3"]  # no duplicate, no gap
    assert "skipped a line that is not a JSON object" in repr(second.records)
    assert repr(silent.error) == "Disconnected(\'no data for 0.3 s\')"
'''

_TEST_SINK = '''\
"""The __NAME__ sink through the real engine, fed by mux_core.testing's scripted transport."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import mux_core.testing
from mux_core import Engine, PluginManager, parse_config

import __PKG__


async def test_the_summary_counts_events_and_keeps_the_final_state(tmp_path: Path) -> None:
    # PluginManager() loads nothing by itself: register exactly what the test needs.
    plugins = PluginManager()
    plugins.register(mux_core.testing, name="testing")  # the "scripted" transport
    plugins.register(__PKG__, name="__NAME__")
    path = tmp_path / "summary.json"
    config = parse_config(
        textwrap.dedent(f"""
            [[sources]]
            name = "train"
            transport = "scripted"
            script = ["events:3"]      # connect, send 3 events, disconnect
            then = "end"               # next session: the server ends the stream
            retry = {{ initial_delay = 0.0 }}

            [[sinks]]
            type = "__NAME__"
            path = {json.dumps(str(path))}
        """),
        path="test.toml",
        plugins=plugins,
    )
    result = await Engine(config, plugins).run()
    assert result.exit_code == 0
    assert json.loads(path.read_text()) == {"train": {"events": 3, "state": "ended"}}
'''

_GITIGNORE = """\
__pycache__/
*.egg-info/
.pytest_cache/
.mypy_cache/
dist/
build/
"""

_TEMPLATES = {
    "pyproject.toml": _PYPROJECT,
    "README.md": _README,
    ".gitignore": _GITIGNORE,
    "__PKG__/__init__.py": _INIT,
    "__PKG__/py.typed": "",
    "__PKG__/transport.py": _TRANSPORT,
    "__PKG__/sink.py": _SINK,
    "tests/test_transport.py": _TEST_TRANSPORT,
    "tests/test_sink.py": _TEST_SINK,
}
