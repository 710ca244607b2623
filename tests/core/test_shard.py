"""Sharded collectors: every source runs in exactly one of N shards, the same one every time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from mux_core._config import parse_config, render_config
from mux_core._config.shard import (
    Shard,
    parse_shard,
    select_shard,
    shard_of,
)
from mux_core._plugins import PluginManager
from mux_core.errors import ConfigError

NAMES = [f"trainer-{n:05d}" for n in range(10_000)] + ["ünïcode-run", "", "a b", "x" * 300]


@pytest.mark.parametrize("count", [1, 2, 3, 7, 64])
def test_every_source_is_in_exactly_one_shard(count: int) -> None:
    shards = [Shard(index, count) for index in range(count)]
    for name in NAMES:
        assert sum(shard.includes(name) for shard in shards) == 1
    selected = [name for shard in shards for name in shard.select(NAMES)]
    assert sorted(selected) == sorted(NAMES)
    if count > 1:  # and the split is even enough to be useful
        sizes = [len(shard.select(NAMES)) for shard in shards]
        assert min(sizes) > 0.8 * len(NAMES) / count


def test_assignment_is_crc32_of_the_utf8_name_and_stable_across_processes() -> None:
    # The documented function, spelled out; and pinned values, so a change of
    # hash (which would move every source on upgrade) fails here.
    for name in NAMES[:100] + NAMES[-4:]:
        assert shard_of(name, 5) == zlib.crc32(name.encode("utf-8")) % 5
    pinned = {name: shard_of(name, 4) for name in ("train-sse", "train-ws", "train-rest")}
    assert pinned == {"train-sse": 1, "train-ws": 2, "train-rest": 3}
    # Another interpreter (with another string-hash salt) agrees.
    code = (
        "from mux_core._config.shard import shard_of; "
        "print([shard_of(f'trainer-{n}', 3) for n in range(50)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    ).stdout
    assert out.strip() == str([shard_of(f"trainer-{n}", 3) for n in range(50)])


@pytest.mark.parametrize(
    ("text", "expected"), [("0/2", Shard(0, 2)), (" 1 / 2 ", Shard(1, 2)), ("0/1", Shard(0, 1))]
)
def test_parse_shard(text: str, expected: Shard) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["2/2", "1/0", "-1/2", "1", "a/b", "1/2/3", ""])
def test_parse_shard_refuses_what_is_not_i_of_n(text: str) -> None:
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)


def _config(plugins: PluginManager, shard_line: str) -> str:
    sources = "".join(
        f'[[sources]]\nname = "s{n}"\ntransport = "scripted"\nscript = []\n' for n in range(20)
    )
    return f'{shard_line}\n{sources}[[sinks]]\ntype = "collect"\n'


def test_the_config_shard_key_selects_sources_and_is_shown(plugins: PluginManager) -> None:
    config = parse_config(_config(plugins, 'shard = "1/3"'), path="c.toml", plugins=plugins)
    assert config.shard == Shard(1, 3)
    assert len(config.sources) == 20  # loading keeps every source; running selects
    selected = select_shard(config, config.shard)
    assert [s.name for s in selected.sources] == [
        f"s{n}" for n in range(20) if shard_of(f"s{n}", 3) == 1
    ]
    assert 'shard = "1/3"' in render_config(config)
    others = [select_shard(config, Shard(i, 3)).sources for i in range(3)]
    assert sorted(s.name for part in others for s in part) == sorted(f"s{n}" for n in range(20))


def test_a_bad_shard_key_is_a_config_error_with_its_line(plugins: PluginManager) -> None:
    text = "# collectors\n" + _config(plugins, 'shard = "2/2"')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, path="c.toml", plugins=plugins)
    assert str(caught.value).startswith("c.toml:2: shard: ")


def test_mux_run_shard_flag_runs_only_that_shard(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    names = [f"src-{n}" for n in range(12)]
    config.write_text(
        textwrap.dedent(
            "".join(
                f"""
                [[sources]]
                name = "{name}"
                transport = "sse"
                url = "http://127.0.0.1:9/events"
                retry = {{ max_attempts = 1 }}
                """
                for name in names
            )
        )
        + f'\n[[sinks]]\ntype = "file"\npath = "{tmp_path / "out.jsonl"}"\n'
    )
    seen: list[str] = []
    for index in range(3):
        out = tmp_path / "out.jsonl"
        out.unlink(missing_ok=True)
        result = subprocess.run(
            [sys.executable, "-m", "mux_core", "run", str(config), "--shard", f"{index}/3"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 3, result.stderr  # every source: max_retries_exceeded
        text = out.read_text() if out.exists() else ""
        ran = sorted({line.split('"source":"')[1].split('"')[0] for line in text.splitlines()})
        assert ran == sorted(n for n in names if shard_of(n, 3) == index)
        seen += ran
    assert sorted(seen) == sorted(names)
    bad = subprocess.run(
        [sys.executable, "-m", "mux_core", "run", str(config), "--shard", "3/3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "shard" in bad.stderr
