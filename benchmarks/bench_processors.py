"""What processors cost per event: the chain ``filter`` + ``stall`` + ``nonfinite`` (issue 11).

Events are built as transports hand them over (payload kept as the JSON bytes
received, the demo trainer's metric record), in batches of 64, and passed
through a real :class:`mux_core._run.chain.ProcessorChain` inside ``trio.run`` (stall
reads the trio clock once per batch). Each figure is the best of several
rounds of ``N`` events; the target is <= 1 µs per event for the chain.

Run: ``.venv/bin/python benchmarks/bench_processors.py [--quick]``. Prints a
table; asserts nothing. ``run(quick)`` returns the rows for a combined table.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h

from mux_core import Event, ProcessorContext, Record, State, Status
from mux_core._run.chain import ProcessorChain
from mux_proc import (
    FilterOptions,
    FilterProcessor,
    NonfiniteOptions,
    NonfiniteProcessor,
    StallOptions,
    StallProcessor,
    ThroughputOptions,
    ThroughputProcessor,
)

BATCH = 64
TARGET_US = 1.0
_CTX = ProcessorContext("train", "sse", "bench")


def _event(seq: int) -> Event:
    raw = (
        b'{"step": %d, "loss": 2.3456, "lr": 0.0003, "tokens_per_s": 48012.5, '
        b'"gpu_mem_gb": 39.125}' % seq
    )
    from_bytes = getattr(Event, "from_bytes", None)
    if from_bytes is not None:
        made: Event = from_bytes("train", "sse", "metric", str(seq), raw, 0.0, seq)
        return made
    from mux_core.payload import Payload  # type: ignore[attr-defined,unused-ignore]

    return Event("train", "sse", "metric", str(seq), Payload(raw), 0.0, seq)


def _batches(events: int) -> list[list[Record]]:
    made = [_event(i) for i in range(1, events + 1)]
    return [list(made[i : i + BATCH]) for i in range(0, len(made), BATCH)]


Factory = Callable[[], list[tuple[str, Any]]]

CHAINS: list[tuple[str, Factory, bool]] = [
    (
        "filter (event type)",
        lambda: [("filter", FilterProcessor(FilterOptions(events=["metric"]), _CTX))],
        False,
    ),
    ("stall (any event)", lambda: [("stall", StallProcessor(StallOptions(), _CTX))], False),
    (
        "nonfinite (loss)",
        lambda: [("nonfinite", NonfiniteProcessor(NonfiniteOptions(), _CTX))],
        False,
    ),
    (
        "filter + stall + nonfinite",
        lambda: [
            ("filter", FilterProcessor(FilterOptions(events=["metric"]), _CTX)),
            ("stall", StallProcessor(StallOptions(), _CTX)),
            ("nonfinite", NonfiniteProcessor(NonfiniteOptions(), _CTX)),
        ],
        True,
    ),
    (
        "filter where 'loss > 10'",
        lambda: [("filter", FilterProcessor(FilterOptions(where="loss > 10"), _CTX))],
        False,
    ),
    (
        "throughput (tokens_per_s)",
        lambda: [("throughput", ThroughputProcessor(ThroughputOptions(), _CTX))],
        False,
    ),
]


def _measure(factory: Factory, batches: list[list[Record]], rounds: int) -> float:
    """Best µs per event over ``rounds`` passes of ``batches`` through a fresh chain."""

    async def main() -> float:
        best = float("inf")
        for _ in range(rounds):
            chain = ProcessorChain("train", "sse", factory())
            chain.run([Status("train", "sse", State.CONNECTED, 1, None, "", 0.0)])
            run = chain.run
            count = sum(len(batch) for batch in batches)
            start = time.perf_counter()
            for batch in batches:
                run(batch)
            elapsed = time.perf_counter() - start
            best = min(best, elapsed / count * 1e6)
        return best

    return trio.run(main)


def _baseline(batches: list[list[Record]], rounds: int) -> float:
    """The loop without processors (a chain of none), for context."""
    return _measure(lambda: [], batches, rounds)


def run(quick: bool = False) -> list[h.Row]:
    events = 200_000 if quick else 1_000_000
    rounds = 3 if quick else 5
    batches = _batches(events)
    bare = _baseline(batches, rounds)
    rows = []
    for label, factory, targeted in CHAINS:
        cost = _measure(factory, batches, rounds)
        met = cost <= TARGET_US if targeted else None
        rows.append(
            h.Row(
                f"processors: {label}",
                f"{cost:.3f} µs/event",
                f"{bare:.3f} µs/event",
                f"{cost / bare:.1f}x" if bare else "-",
                f"<= {TARGET_US:g} µs/event" if targeted else "(context)",
                met,
            )
        )
    return rows


if __name__ == "__main__":
    print(h.table(run("--quick" in sys.argv[1:])))
    print(f"\n{h.machine()}; batches of {BATCH} events, payload ~110 bytes kept as received")
