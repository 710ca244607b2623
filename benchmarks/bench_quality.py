"""What connection-quality tracking adds to a source's hot path (issue 16).

The engine hands every batch a source emits to its
:class:`mux_core._run.quality.QualityTracker` (``observe``) in the source's own task,
then to the fan-out. This measures that difference: ``await send(batch)``
where ``send`` observes and awaits a null fan-out, against awaiting the null
fan-out alone, inside ``trio.run``. Events are built as transports hand them
over (numeric ids counting up, the demo trainer's metric record kept as the
JSON bytes received). Each figure is the best of several rounds; the target
is < 0.1 µs per event in batches of 64 (a source at 500k events/s hands over
batches of hundreds).

Run: ``.venv/bin/python benchmarks/bench_quality.py [--quick]``. Prints a
table; asserts nothing. ``run(quick)`` returns the rows for a combined table.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h

from mux_core import Event, Record
from mux_core._run.quality import QualityTracker

TARGET_US = 0.1


def _batches(events: int, size: int) -> list[list[Record]]:
    made: list[Record] = [
        Event.from_bytes(
            "train",
            "sse",
            "metric",
            str(seq),
            b'{"step": %d, "loss": 2.3456, "lr": 0.0003, "time": 1764250000.5}' % seq,
            1764250001.0,
            seq,
        )
        for seq in range(1, events + 1)
    ]
    return [made[i : i + size] for i in range(0, len(made), size)]


async def _null_fan_out(batch: Sequence[Record]) -> bool:
    return False


def _sender(tracker: QualityTracker | None) -> Callable[[Sequence[Record]], Awaitable[bool]]:
    if tracker is None:
        return _null_fan_out
    observe = tracker.observe

    async def send(batch: Sequence[Record]) -> bool:
        observe(batch)
        return await _null_fan_out(batch)

    return send


def _measure(batches: list[list[Record]], lag_field: str | None, track: bool, rounds: int) -> float:
    """Best µs per event to send every batch, with or without a tracker."""

    async def main() -> float:
        best = float("inf")
        count = sum(len(batch) for batch in batches)
        for _ in range(rounds):
            tracker = QualityTracker("train", "sse", lag_field=lag_field) if track else None
            send = _sender(tracker)
            start = time.perf_counter()
            for batch in batches:
                await send(batch)
            best = min(best, (time.perf_counter() - start) / count * 1e6)
        return best

    return trio.run(main)


def run(quick: bool = False) -> list[h.Row]:
    events = 128_000 if quick else 512_000
    rounds = 3 if quick else 7
    rows = []
    for size in (256, 64, 16):
        batches = _batches(events, size)
        bare = _measure(batches, None, False, rounds)
        for lag_field in (None, "time"):
            cost = _measure(batches, lag_field, True, rounds) - bare
            label = f"quality: batches of {size}" + (", lag_field" if lag_field else "")
            targeted = size == 64 and lag_field is None
            rows.append(
                h.Row(
                    label,
                    f"+{cost:.3f} µs/event",
                    f"{bare:.3f} µs/event",
                    "-",
                    f"< {TARGET_US:g} µs/event" if targeted else "(context)",
                    cost < TARGET_US if targeted else None,
                )
            )
    return rows


if __name__ == "__main__":
    print(h.table(run("--quick" in sys.argv[1:])))
    print(
        f"\n{h.machine()}; 'mux' = what tracking adds per event, 'bare' = awaiting a "
        "null fan-out per batch"
    )
