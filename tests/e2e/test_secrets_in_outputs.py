"""No secret of the config reaches any output of mux: every built-in kind of
secret (a URL's password and query, header values, a webhook URL, a Redis
password), in ``mux check``, in ``mux run``'s log and in its status records,
while every source fails against real servers that refuse or reject it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import trio

from mux_core.testing import Respond, serve_sse
from tests.helpers.e2e import (
    MUX,
    closed_port,
    read_jsonl,
    start_mux,
    stderr_of,
    terminate,
    wait_for_file,
    write_config,
)

CANARIES = {
    "url_password": "CanaryUrlPw1",
    "url_query": "CanaryQueryTok2",
    "header": "CanaryHeader3",
    "webhook": "CanaryHook4",
    "redis": "CanaryRedisPw5",
}


def _config(sse_url: str, port: int, out: Path) -> str:
    c = CANARIES
    return f"""
[retry]
initial_delay = 0.05
max_delay = 0.2
jitter = 0.0
connect_timeout = 2.0

[[sources]]
name = "sse"
transport = "sse"
url = "{sse_url.replace("http://", f"http://bob:{c['url_password']}@")}?token={c["url_query"]}"
headers = {{ Authorization = "Bearer {c["header"]}" }}

[[sources]]
name = "redis"
transport = "redis-stream"
url = "redis://:{c["redis"]}@127.0.0.1:{port}/0"
streams = ["mux:x"]

[[sinks]]
type = "file"
path = "{out}"
flush_interval = 0.05

[[sinks]]
type = "webhook"
url = "http://127.0.0.1:{port}/services/{c["webhook"]}"
statuses = true
group_interval = 0.0
"""


def _both_refused(records: list[dict[str, Any]]) -> bool:
    """The sse source was refused (401 is terminal) and the redis one retried."""
    statuses = [r for r in records if r["type"] == "status"]
    failed = any(r["source"] == "sse" and r["state"] == "failed" for r in statuses)
    return failed and any(r["source"] == "redis" and r["attempt"] > 2 for r in statuses)


def _leaks(text: str) -> list[str]:
    return [name for name, canary in CANARIES.items() if canary in text]


async def test_no_secret_reaches_mux_check_the_log_or_the_records(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    async with serve_sse() as sse:
        # Every request is refused with the answer echoing what it got.
        sse.script(
            *[Respond(401, body=("who are you? " + "".join(CANARIES.values())).encode())] * 50
        )
        with closed_port() as port:
            config = write_config(tmp_path / "m.toml", _config(sse.url, port, out))
            check = await trio.run_process(
                [*MUX, "check", str(config)], capture_stdout=True, capture_stderr=True, check=False
            )
            shown = (check.stdout + check.stderr).decode()
            assert check.returncode == 0, shown
            assert _leaks(shown) == []
            assert "***" in shown
            async with trio.open_nursery() as nursery:
                process = await start_mux(nursery, config)
                await wait_for_file(out, _both_refused, process=process)
                assert await terminate(process, config) == 3  # a source failed
    assert sse.requests, "the sse source never reached its server"
    assert _leaks(stderr_of(config)) == []
    assert _leaks(out.read_text()) == []
    details = [r["detail"] for r in read_jsonl(out) if r["type"] == "status" and r["detail"]]
    assert details and _leaks("\n".join(details)) == []
    assert sys.executable  # the run used this interpreter (MUX)
