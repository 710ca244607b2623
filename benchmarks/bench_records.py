"""The JSON Lines codec alone: ``encode_jsonl`` and ``decode_jsonl``, µs per record.

Every JSON-writing sink (file, redis-stream, webhook) encodes through
``encode_jsonl`` and ``mux replay`` reads through ``decode_jsonl``, so their
cost per record is a floor under every sink. Cases, in batches of 256 events:

* ``raw``: payloads kept as the bytes received (what a transport hands over;
  the encoder splices them), ids set -- the common case;
* ``raw, no ids``: the same with ``id`` null (a ws or rest source without
  ``id_field``);
* ``decoded``: payloads as Python values (a sink or processor looked at
  ``event.data`` first, or a transport that decodes);
* ``decoded, nulls``: decoded payloads holding a JSON null;
* ``NaN raw`` / ``NaN value``: every payload holds a NaN (the rare case: a
  diverged run), as received, and as a value a transport handed over
  (``Session.emit`` keeps it with :func:`mux_core.payload.keep_value`; the
  figure includes that).

Decoding reads the lines ``encode_jsonl`` wrote for the raw and NaN cases.
Each figure is the best of several rounds.

Run: ``.venv/bin/python benchmarks/bench_records.py [--quick]``. Prints a
table; asserts nothing.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import mux_core.payload
from mux_core.records import Event, Record, decode_jsonl, encode_jsonl

# An older mux (to compare before / after) kept such a value as it was.
keep_value: Callable[[Any], Any] = getattr(mux_core.payload, "keep_value", lambda value: value)

BATCH = 256


def _payload(step: int, loss: float) -> dict[str, object]:
    return {"step": step, "loss": loss, "lr": 0.0003, "time": 1764250000.5}


def _events(count: int, *, raw: bool, ids: bool = True, loss: float = 2.3456) -> list[Record]:
    made: list[Record] = []
    for seq in range(1, count + 1):
        payload = _payload(seq, loss)
        id_ = str(seq) if ids else None
        if raw:
            body = json.dumps(payload).encode()
            made.append(Event.from_bytes("train", "sse", "metric", id_, body, 1764250001.0, seq))
        else:
            made.append(Event("train", "sse", "metric", id_, payload, 1764250001.0, seq))
    return made


def _kept_values(count: int) -> list[Record]:
    return [
        Event("train", "sse", "metric", str(seq), keep_value(_payload(seq, math.nan)), 1.0, seq)
        for seq in range(1, count + 1)
    ]


def _with_null(count: int) -> list[Record]:
    return [
        Event("train", "sse", "metric", str(seq), {**_payload(seq, 2.5), "val": None}, 1.0, seq)
        for seq in range(1, count + 1)
    ]


def _best(fn: Callable[[], object], count: int, rounds: int) -> float:
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - start) / count * 1e6)
    return best


def _encode_all(batches: list[list[Record]]) -> Callable[[], object]:
    def run() -> object:
        for batch in batches:
            encode_jsonl(batch)
        return None

    return run


def _decode_all(lines: list[bytes]) -> Callable[[], object]:
    def run() -> object:
        for line in lines:
            decode_jsonl(line)
        return None

    return run


def main(quick: bool = False) -> None:
    count = 51_200 if quick else 256_000
    rounds = 3 if quick else 7
    cases = {
        "raw": _events(count, raw=True),
        "raw, no ids": _events(count, raw=True, ids=False),
        "decoded": _events(count, raw=False),
        "decoded, nulls": _with_null(count),
        "NaN raw": _events(count, raw=True, loss=math.nan),
        "NaN value": _kept_values(count),
    }
    print(f"JSON Lines codec: {count:,} events in batches of {BATCH}, best of {rounds}")
    print(f"{'case':>15} | {'encode µs/rec':>13} | {'decode µs/rec':>13}")
    print(f"{'-' * 15}-+-{'-' * 13}-+-{'-' * 13}")
    for label, records in cases.items():
        batches = [records[i : i + BATCH] for i in range(0, count, BATCH)]
        encode = _best(_encode_all(batches), count, rounds)
        decode = "-"
        if label in ("raw", "NaN raw"):
            lines = b"".join(encode_jsonl(batch) for batch in batches).splitlines()
            decode = f"{_best(_decode_all(lines), count, rounds):.3f}"
        print(f"{label:>15} | {encode:>13.3f} | {decode:>13}")


if __name__ == "__main__":
    main("--quick" in sys.argv[1:])
