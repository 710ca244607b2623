"""The ``above`` processor against scripted batches."""

from __future__ import annotations

import pytest
from mux_jsonl_tail import AboveOptions, AboveProcessor

from mux_core import Alert, Event, ProcessorContext, Severity, State, Status


def _event(seq: int, data: object) -> Event:
    return Event("train", "jsonl-tail", "message", str(seq), data, 0.0, seq)


def test_fires_once_per_episode_and_clears() -> None:
    above = AboveProcessor(
        AboveOptions(field="loss", limit=2.0, severity="critical"),
        ProcessorContext("train", "jsonl-tail", "above"),
    )
    status = Status("train", "jsonl-tail", State.CONNECTED, 1, None, "", 0.0)
    batch = [status] + [
        _event(seq, data)
        for seq, data in enumerate(
            [{"loss": 1.0}, {"loss": 3.0}, {"loss": 4.0}, "text", {"x": 1}, {"loss": 1.5}], 1
        )
    ]
    out = above.process(batch)
    alerts = [r for r in out if type(r) is Alert]
    assert [(a.severity, a.message, a.seq) for a in alerts] == [
        (Severity.CRITICAL, "loss 3 is above 2", 2),
        (Severity.INFO, "loss back to 1.5", 6),
    ]
    assert out[: len(batch)] == batch  # everything else passes untouched
    quiet = [_event(7, {"loss": 0.5})]
    assert above.process(quiet) is quiet


def test_the_limit_must_be_finite() -> None:
    with pytest.raises(ValueError, match="limit must be a finite number"):
        AboveOptions(field="loss", limit=float("inf"))
