"""A ``--workers`` worker's part of the config file, as its parent read it.

The parent hands each worker the file as it read it, cut to the worker's
sources (``mux_core._run.worker_config``), instead of each worker reading
and parsing the whole file again. What the worker builds from it must be
exactly what it would build from the file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mux_core._config import Parsed, load_config
from mux_core._plugins import PluginManager
from mux_core._run.worker_config import read_share, shares
from mux_core._run.worker_link import Share
from mux_core.errors import ConfigError

CONFIG = """\
quality_interval = 30

[retry]
connect_timeout = 7.5

[[sources]]
name = "a"
transport = "sse"
url = "${BASE}/a"
headers = { Authorization = "Bearer ${TOKEN}" }

[[sources]]
name = "b"
transport = "rest"
url = "http://h:1/b"
interval = 2.0

[[sources]]
name = "${NAME_C}"
transport = "ws"
url = "ws://h:1/c"
retry = { max_attempts = 3 }

[[sources]]
name = "d"
transport = "sse"
url = "http://user:pw@h:1/d"

[[processors]]
type = "stall"
sources = ["a", "d"]
seconds = 5

[[sinks]]
type = "file"
path = "out.jsonl"
"""

ENVIRON = {"BASE": "http://h:1", "TOKEN": "s3cret", "NAME_C": "c"}


@pytest.fixture
def plugins() -> PluginManager:
    pm = PluginManager()
    pm.load_entry_points(only=set())
    return pm


@pytest.mark.parametrize("count", [1, 2, 3])
def test_each_worker_builds_from_its_part_what_it_builds_from_the_file(
    tmp_path: Path, plugins: PluginManager, count: int
) -> None:
    path = tmp_path / "mon.toml"
    path.write_text(CONFIG)
    kept: list[Parsed] = []
    whole = load_config(path, plugins, environ=ENVIRON, on_parsed=kept.append)
    names = [source.name for source in whole.sources]
    assert names == ["a", "b", "c", "d"]
    assigned = {name: index % count for index, name in enumerate(names)}
    parts = shares(kept[0], names, assigned.__getitem__, count)
    assert parts is not None and len(parts) == count
    for index, part in enumerate(parts):
        share = Share(index, count, frozenset(n for n, at in assigned.items() if at == index))
        from_file = load_config(path, plugins, environ=ENVIRON, only=share.includes)
        given = load_config(
            path, plugins, environ=ENVIRON, only=share.includes, parsed=read_share(part)
        )
        # Everything: the sources (options, retry, lines, secrets), processors, sinks.
        assert given == from_file
        assert [s.name for s in given.sources] == [n for n in names if assigned[n] == index]


def test_the_parts_leave_out_the_other_workers_tables(
    tmp_path: Path, plugins: PluginManager
) -> None:
    path = tmp_path / "mon.toml"
    path.write_text(CONFIG)
    kept: list[Parsed] = []
    whole = load_config(path, plugins, environ=ENVIRON, on_parsed=kept.append)
    names = [source.name for source in whole.sources]
    parts = shares(kept[0], names, {"a": 0, "b": 1, "c": 1, "d": 0}.__getitem__, 2)
    assert parts is not None
    first = read_share(parts[0])
    # The others' tables are their (raw) names, at the same index, and the
    # values naming a variable (a secret to mask in this worker too).
    assert first.data["sources"][1] == {"name": "b"}
    assert first.data["sources"][2] == {"name": "${NAME_C}"}
    second = read_share(parts[1])
    assert second.data["sources"][0] == {
        "name": "a",
        "url": "${BASE}/a",
        "headers": {"Authorization": "Bearer ${TOKEN}"},
    }
    assert first.data["sources"][3]["url"] == "http://user:pw@h:1/d"
    assert ("sources", 1, "url") not in first.lines
    assert first.lines[("sources", 3, "url")] == 27
    # A duplicate among the others' names is still found.
    first.data["sources"][1]["name"] = "a"
    with pytest.raises(ConfigError, match="duplicate source name 'a'"):
        load_config(path, plugins, environ=ENVIRON, only={"a", "d"}.__contains__, parsed=first)


def test_no_parts_when_the_tables_are_not_the_sources_one_for_one(
    tmp_path: Path, plugins: PluginManager
) -> None:
    path = tmp_path / "mon.toml"
    path.write_text(CONFIG)
    kept: list[Parsed] = []
    load_config(path, plugins, environ=ENVIRON, on_parsed=kept.append)
    assert shares(kept[0], ["a", "b"], lambda name: 0, 2) is None
