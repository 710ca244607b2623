"""Render the Qt panel offscreen against a scripted training run, as a PNG.

    .venv/bin/python scripts/render_qt_panel.py [--out docs/img/qt-panel.png]

Three sources watch three runs of a training job: the SSE one is connected,
the WebSocket one lost its server and is waiting to retry, the REST one gave
up after too many failures. Loss decays, the learning rate warms up and then
follows a cosine schedule. No network and no display are needed.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import trio

from mux_core.events import Event, Record, State, Status
from mux_core.sinks import SinkContext, SourceInfo
from mux_qt.options import QtOptions
from mux_qt.sink import QtSink

STEPS = 1500
WARMUP = 150
STEP_SECONDS = 0.05
SOURCES = (
    SourceInfo("train-sse", "sse"),
    SourceInfo("train-ws", "ws"),
    SourceInfo("train-rest", "rest"),
)


def _lr(step: int, peak: float) -> float:
    if step < WARMUP:
        return peak * (step + 1) / WARMUP
    progress = (step - WARMUP) / (STEPS - WARMUP)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


def _loss(step: int, floor: float, rng: random.Random) -> float:
    return floor + 2.2 * math.exp(-step / 260) + rng.gauss(0, 0.03)


def scripted_records(now: float) -> list[Record]:
    """Records as the three sources would have delivered them, oldest first."""
    rng = random.Random(7)
    start = now - STEPS * STEP_SECONDS
    records: list[tuple[float, Record]] = []
    runs = {  # source: (last step delivered, every n steps, loss floor, peak lr)
        "train-sse": (STEPS - 1, 1, 0.32, 3e-4),
        "train-ws": (1180, 1, 0.41, 5e-4),
        "train-rest": (780, 20, 0.25, 2e-4),
    }
    for source in SOURCES:
        last, every, floor, peak = runs[source.name]
        at = start - 1.0
        records.append(
            (at, Status(source.name, source.transport, State.CONNECTING, 1, None, "", at))
        )
        records.append(
            (at + 0.01, Status(source.name, source.transport, State.CONNECTED, 1, None, "", at))
        )
        for seq, step in enumerate(range(0, last + 1, every), start=1):
            received = start + step * STEP_SECONDS
            data = {"step": step, "loss": _loss(step, floor, rng), "lr": _lr(step, peak)}
            records.append(
                (
                    received,
                    Event(source.name, source.transport, "metric", str(step), data, received, seq),
                )
            )
    lost = start + 1180 * STEP_SECONDS + 0.2
    records += [
        (lost, Status("train-ws", "ws", State.DISCONNECTED, 1, 0.5, "server closed (1006)", lost)),
        (
            now - 1.3,
            Status(
                "train-ws", "ws", State.SERVER_UNAVAILABLE, 3, 4.0, "connection refused", now - 1.3
            ),
        ),
    ]
    gave_up = start + 780 * STEP_SECONDS + 12.0
    records.append(
        (
            gave_up,
            Status(
                "train-rest",
                "rest",
                State.MAX_RETRIES_EXCEEDED,
                5,
                None,
                "HTTP 503 Service Unavailable",
                gave_up,
            ),
        )
    )
    records.sort(key=lambda pair: pair[0])
    return [record for _, record in records]


async def render(out: Path) -> None:
    async with trio.open_nursery() as nursery:
        context = SinkContext(
            name="qt",
            config_name="monitor",
            sources=SOURCES,
            request_stop=lambda reason: None,
            start_background=lambda fn: nursery.start_soon(fn),
        )
        sink = QtSink(QtOptions(plot=["loss", "lr"], x="step", history=2000), context)
        await sink.open()
        assert sink.panel is not None
        sink.panel.resize(1000, 760)
        records = scripted_records(time.time())
        for start in range(0, len(records), 64):
            await sink.write(records[start : start + 64])
        sink.panel.refresh()
        await trio.sleep(0.3)  # let the pump lay out and paint the window
        out.parent.mkdir(parents=True, exist_ok=True)
        if not sink.panel.grab().save(str(out)):
            raise SystemExit(f"could not write {out}")
        await sink.aclose()
        nursery.cancel_scope.cancel()
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img/qt-panel.png"))
    args = parser.parse_args()
    trio.run(render, args.out)


if __name__ == "__main__":
    main()
