"""Gaps are unknown ("n/a"), not 0, for a source whose events carry no ids.

A gap is a numeric id that never arrived: without ids none can be seen, and
"0 gaps" would claim nothing was lost. Until an event of the source carried
a numeric id its quality record has ``gaps`` and ``gaps_total`` None, every
view shows "n/a" and the prometheus sink writes no gaps sample for it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from mux_core._run.quality import QualityTracker, format_quality_table
from mux_core.records import Event, Quality

PLUGIN = """
from __future__ import annotations

import attrs

from mux_core import Ended, Session, Transport, hookimpl
from mux_core.hookspecs import Register


@attrs.frozen(kw_only=True)
class QuietOptions:
    #: Events to send, without ids, before the stream ends.
    events: int = 5


class QuietTransport(Transport):
    Options = QuietOptions

    async def run_session(self, session: Session) -> None:
        await session.connected()
        await session.emit([("tick", None, b"{}") for _ in range(self.options.events)])
        raise Ended("that was all")


@hookimpl
def mux_register_transports(register: Register) -> None:
    register("quiet", QuietTransport)
"""


def _events(ids: list[str | None]) -> list[Event]:
    return [Event("s", "ws", "message", id_, {}, 0.0, n) for n, id_ in enumerate(ids, 1)]


def _tracker() -> QualityTracker:
    return QualityTracker("s", "ws", clock=lambda: 0.0, wall=lambda: 1_764_250_000.0)


def test_gaps_are_none_until_an_event_carries_a_numeric_id() -> None:
    tracker = _tracker()
    assert (tracker.snapshot().gaps, tracker.snapshot().gaps_total) == (None, None)
    tracker.observe(_events([None, None, None]))
    first = tracker.snapshot()
    assert (first.events_total, first.gaps, first.gaps_total) == (3, None, None)
    tracker.observe(_events(["1", "3"]))  # ids from now on: 2 is missing
    second = tracker.snapshot()
    assert (second.gaps, second.gaps_total) == (1, 1)
    tracker.observe(_events([None]))  # once known, known
    assert tracker.snapshot().gaps_total == 1


def test_gaps_stay_unknown_for_ids_that_are_never_numbers() -> None:
    tracker = _tracker()
    tracker.observe(_events([f"uuid-{n}" for n in range(150)]))
    assert tracker.snapshot().gaps_total is None


def test_the_table_says_n_a() -> None:
    quiet = Quality("quiet", "ws", 60.0, 1.0, 0, None, 5, None, None, 0.0, gaps_total=None)
    counted = Quality("counted", "sse", 60.0, 1.0, 0, None, 5, 0, None, 0.0)
    rows = [line.split() for line in format_quality_table([quiet, counted]).splitlines()]
    gaps = rows[0].index("gaps") - 1  # "blind p50/max" is two words of the header
    assert [row[gaps] for row in rows[1:]] == ["n/a", "0"]


def test_a_run_shows_n_a_in_the_log_and_the_table_and_exports_no_gaps(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "quiet_mux_plugin.py").write_text(PLUGIN)
    config = tmp_path / "q.toml"
    config.write_text(
        f"""
        [[sources]]
        name = "quiet"
        transport = "quiet"

        [[sources]]
        name = "counted"
        transport = "scripted"
        script = ["events:3"]
        then = "end"
        retry = {{ initial_delay = 0.0 }}

        [[sinks]]
        type = "log"

        [[sinks]]
        type = "prometheus"
        path = "{tmp_path / "mux.prom"}"

        [[sinks]]
        type = "file"
        path = "{tmp_path / "out.jsonl"}"
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        "MUX_PLUGIN_MODULES": "quiet_mux_plugin,mux_core.testing",
    }
    result = subprocess.run(
        [sys.executable, "-m", "mux_core", "run", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    log = result.stderr
    # The log sink's quality lines, one per source.
    assert re.search(r"quiet: quality over .*, 5 events \([\d.]+/s\), gaps n/a", log), log
    assert re.search(r"counted: quality over .*, 3 events \([\d.]+/s\), 0 gaps", log), log
    # mux run's last words: the table.
    rows = {line.split()[0]: line.split() for line in log.splitlines() if line.split()}
    header = rows["source"]
    gaps = header.index("gaps") - 1  # "blind p50/max" is two words of the header
    assert (rows["quiet"][gaps], rows["counted"][gaps]) == ("n/a", "0")
    # The records: null, not 0.
    written = [_json(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    quality = {r["source"]: r for r in written if r["type"] == "quality"}
    assert (quality["quiet"]["gaps"], quality["quiet"]["gaps_total"]) == (None, None)
    assert (quality["counted"]["gaps"], quality["counted"]["gaps_total"]) == (0, 0)
    # Prometheus: no gaps sample for the source without ids, the others as ever.
    prom = (tmp_path / "mux.prom").read_text()
    assert 'mux_source_gaps_total{source="counted",transport="scripted"} 0.0' in prom
    assert 'mux_source_gaps{source="counted",transport="scripted"} 0.0' in prom
    assert not re.search(r'mux_source_gaps(_total)?\{source="quiet"', prom)
    assert 'mux_events_total{source="quiet",transport="quiet"} 5.0' in prom


def _json(line: str) -> dict[str, Any]:
    value = json.loads(line)
    assert isinstance(value, dict)
    return value
