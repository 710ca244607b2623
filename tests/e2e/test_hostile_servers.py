"""`mux run` against every hostile HTTP server at once (issue 10, "done when").

One real `mux run` process watches an sse and a rest source whose servers
play every bad plan of tests/core/test_http_hostile.py in turn, compression bombs
and hostile fields (a 1 MiB id before thousands of events, a 5,000-digit
retry) included, then behave. The process must print no traceback, keep both
sources retrying (never terminal), write only readable details, deliver the
events after the bad parts, stay under ~300 MB of RSS, and exit 0 on SIGTERM.
"""

from __future__ import annotations

import re
from pathlib import Path

import trio

from mux_core.testing import serve_hostile
from tests.helpers.e2e import (
    file_sink_toml,
    read_jsonl,
    start_mux,
    stderr_of,
    terminate,
    wait_for_file,
    write_config,
)
from tests.helpers.hostile import (
    GOOD_REST,
    GOOD_SSE,
    LIBRARY_WORDING,
    REST_CASES,
    SSE_CASES,
    SSE_FIELD_CASES,
)

#: The bound the issue sets for any hostile case.
RSS_LIMIT = 300 * 1024 * 1024


def _peak_rss(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) * 1024


async def test_mux_run_survives_every_hostile_server(tmp_path: Path) -> None:
    sse_plans = [plan for plan, _ in SSE_CASES.values()] + [*SSE_FIELD_CASES.values(), GOOD_SSE]
    rest_plans = [plan for plan, _, _ in REST_CASES.values()] + [GOOD_REST]
    async with (
        serve_hostile(*sse_plans) as sse,
        serve_hostile(*rest_plans) as rest,
        trio.open_nursery() as nursery,
    ):
        out = tmp_path / "events.jsonl"
        config = write_config(
            tmp_path / "mon.toml",
            "[retry]\ninitial_delay = 0.01\nmin_delay = 0.01\nmax_delay = 0.05\n"
            "jitter = 0.0\nconnect_timeout = 5.0\n"
            f'\n[[sources]]\nname = "sse"\ntransport = "sse"\nurl = "{sse.url("/events")}"\n'
            "read_timeout = 5.0\n"
            f'\n[[sources]]\nname = "rest"\ntransport = "rest"\nurl = "{rest.url("/m")}"\n'
            "interval = 0.01\nmax_page_bytes = 16777216\n" + file_sink_toml(out),
        )
        process = await start_mux(nursery, config)

        def after_everything(records: list[dict[str, object]]) -> bool:
            data = [r.get("data") for r in records if r["type"] == "event"]
            return "after" in data and {"id": 9, "v": "after"} in data

        await wait_for_file(out, after_everything, process=process, timeout=60)
        assert sse.connections >= len(sse_plans) and rest.connections >= len(rest_plans)
        peak = _peak_rss(process.pid)
        print(f"mux run: peak RSS {peak / 2**20:.0f} MiB")  # shown with pytest -s
        code = await terminate(process, config)

    stderr = stderr_of(config)
    assert "Traceback" not in stderr, stderr
    assert code == 0, stderr
    assert peak < RSS_LIMIT, f"mux run peaked at {peak / 2**20:.0f} MiB"
    statuses = [r for r in read_jsonl(out) if r["type"] == "status"]
    assert {s["state"] for s in statuses} <= {
        "connecting",
        "connected",
        "disconnected",
        "server_unavailable",
        "stopped",
    }
    for status in statuses:
        detail = str(status["detail"])
        assert not LIBRARY_WORDING.search(detail), detail
