"""Big runs end in a few lines: the quality summary and the "run finished" line of mux run."""

from __future__ import annotations

from pathlib import Path

import trio

from mux_core._run.quality import SUMMARY_OVER, format_quality_summary
from mux_core.records import Quality, State
from mux_core.testing import serve_sse
from tests.helpers.e2e import FAST_RETRY, MUX
from tests.helpers.redis import env_without_mux


def quality(name: str, uptime: float, *, state: State = State.STOPPED, gaps: int | None = 0,
            reconnects: int = 0) -> Quality:  # fmt: skip
    return Quality(name, "sse", 60.0, uptime, reconnects, None, 10, gaps, None, 1.0, state=state)


def test_the_summary_counts_states_and_shows_only_the_worst_sources() -> None:
    records = [quality(f"ok-{n:03}", 1.0) for n in range(200)]
    records += [
        quality("flaky", 0.5, reconnects=7),
        quality("gappy", 1.0, gaps=12),
        quality("dead", 0.0, state=State.FAILED),
        quality("no-ids", 1.0, gaps=None),
    ]
    text = format_quality_summary(records)
    lines = text.splitlines()
    assert lines[0] == "204 sources: 203 stopped, 1 failed"
    assert "uptime p50 100.0%, lowest 0.0%; reconnects 7; gaps 12 (1 n/a); events 2040" in lines[1]
    rows = lines[4:]  # after the "worst" line and the table's header
    assert len(rows) == 10
    assert [row.split()[0] for row in rows[:3]] == ["dead", "flaky", "gappy"]
    assert "--quality-table full" in lines[2]
    assert len(text) < 2000  # not 204 rows


def _config(tmp_path: Path, url: str, count: int) -> Path:
    tables = "".join(
        f'[[sources]]\nname = "s{n:03}"\ntransport = "sse"\nurl = "{url}"\n' for n in range(count)
    )
    bad = f'[[sources]]\nname = "bad"\ntransport = "sse"\nurl = "{url}/nope"\n'
    config = tmp_path / "many.toml"
    config.write_text(FAST_RETRY + tables + bad + '[[sinks]]\ntype = "file"\npath = "out.jsonl"\n')
    return config


async def _run(config: Path, *args: str) -> str:
    done = await trio.run_process(
        [*MUX, "run", str(config), "--for", "2", *args],
        cwd=config.parent,
        capture_stderr=True,
        capture_stdout=True,
        check=False,
        env=env_without_mux(),
    )
    assert done.returncode == 3, done.stderr.decode()  # a source ended failed
    return done.stderr.decode()


async def test_mux_run_summarises_many_sources_and_prints_all_on_request(tmp_path: Path) -> None:
    count = SUMMARY_OVER + 20
    async with serve_sse() as server:
        server.publish_nowait({"n": 1})
        config = _config(tmp_path, server.url, count)
        short = await _run(config)
        full = await _run(config, "--quality-table", "full")
    finished = next(line for line in short.splitlines() if "run finished" in line)
    assert f"{count + 1} sources: {count} stopped, 1 failed (bad)" in finished
    assert "s000" not in finished and len(finished) < 200
    rows = [line for line in short.splitlines() if line.startswith(("s0", "bad "))]
    assert len(rows) == 10 and rows[0].startswith("bad ")
    assert f"{count + 1} sources: {count} stopped, 1 failed" in short
    every = [line for line in full.splitlines() if line.startswith(("s0", "bad "))]
    assert len(every) == count + 1
    finished = next(line for line in full.splitlines() if "run finished" in line)
    assert "s000 stopped" in finished and "bad failed" in finished
