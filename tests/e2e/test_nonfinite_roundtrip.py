"""A NaN loss, end to end: trainer -> ``mux run`` -> file -> ``mux replay`` -> alert -> file.

The trainer (a fake SSE server) sends what Python's ``json.dumps`` writes for
a diverged loss: ``{"step": 2, "loss": NaN}``. ``mux run`` (a real process)
records it; the file must hold the bare literal, not ``null``. ``mux replay``
(a real process) feeds the file through a config with the ``nonfinite``
processor and a file sink: the alert is raised at step 2, and the replayed
file holds the NaN again, which Python's ``json.loads`` reads as a float.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import trio

from mux_core.testing import serve_sse
from tests.helpers.e2e import (
    FAST_RETRY,
    MUX,
    file_sink_toml,
    source_toml,
    start_mux,
    stderr_of,
    terminate,
    wait_for_file,
    write_config,
)

TRAINER = [
    '{"step": 1, "loss": 0.5}',
    '{"step": 2, "loss": NaN}',
    '{"step": 3, "loss": Infinity, "grad": -Infinity}',
    '{"step": 4, "loss": 0.25}',
]


def _records(path: Path) -> list[dict[str, Any]]:
    """The file's records, read as a user would in Python (json.loads takes the literals)."""
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _losses(records: list[dict[str, Any]]) -> list[float]:
    return [r["data"]["loss"] for r in records if r["type"] == "event"]


async def test_a_nan_loss_survives_the_file_a_replay_and_raises_the_alert(tmp_path: Path) -> None:
    recorded = tmp_path / "run.jsonl"
    async with serve_sse() as trainer:
        for payload in TRAINER:
            await trainer.publish(payload, event="metric")
        toml = FAST_RETRY + source_toml("train", "sse", trainer.url) + file_sink_toml(recorded)
        config = write_config(tmp_path / "run.toml", toml)
        async with trio.open_nursery() as nursery:
            process = await start_mux(nursery, config)
            await wait_for_file(
                recorded,
                lambda records: sum(r["type"] == "event" for r in records) >= 4,
                process=process,
            )
            assert await terminate(process, config) == 0, stderr_of(config)

    lines = recorded.read_bytes().splitlines()
    nan_line = next(line for line in lines if b'"step": 2' in line)
    assert b'"data":{"step": 2, "loss": NaN}' in nan_line  # as the trainer sent it
    assert b'"loss": Infinity, "grad": -Infinity' in recorded.read_bytes()
    assert b"null}" not in b"".join(line for line in lines if b'"type":"event"' in line)
    losses = _losses(_records(recorded))
    assert losses[0] == 0.5 and math.isnan(losses[1]) and losses[2] == math.inf

    replayed = tmp_path / "replayed.jsonl"
    replay_config = write_config(
        tmp_path / "replay.toml",
        '[[processors]]\ntype = "nonfinite"\nfields = ["loss", "grad"]\n'
        + file_sink_toml(replayed),
    )
    done = await trio.run_process(
        [*MUX, "replay", "-q", str(recorded), "--config", str(replay_config)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")

    records = _records(replayed)
    alerts = [r for r in records if r["type"] == "alert"]
    assert [(a["rule"], a["severity"]) for a in alerts][:1] == [("nonfinite", "critical")]
    assert alerts[0]["message"] == "loss is NaN at step 2"
    finite_again = [a for a in alerts if a["severity"] == "info"]
    assert finite_again and "finite again at step 4" in finite_again[0]["message"]
    losses = _losses(records)
    assert losses[0] == 0.5 and math.isnan(losses[1]) and type(losses[1]) is float
    assert losses[2] == math.inf and losses[3] == 0.25
