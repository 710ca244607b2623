"""The ``mux jsonl-stats`` command: what a recorded run holds, per source.

``mux jsonl-stats runs/events.jsonl`` reads a file the file sink wrote and
prints, per source, how many events, statuses and alerts it has and its last
state. Added to ``mux`` through ``mux_register_commands``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import orjson

__all__ = ["add_arguments", "jsonl_stats"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    parser.add_argument("file", metavar="FILE.jsonl", help="a file the file sink wrote")


def jsonl_stats(args: argparse.Namespace) -> int:
    """Print the table; 0, or 2 when the file cannot be read."""
    path = Path(args.file)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        print(f"mux jsonl-stats: {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    counts: dict[str, Counter[str]] = {}
    last_state: dict[str, str] = {}
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a half-written last line
        source = str(record.get("source"))
        counts.setdefault(source, Counter())[str(record.get("type"))] += 1
        if record.get("type") == "status":
            last_state[source] = str(record.get("state"))
    print(f"{'SOURCE':<16} {'EVENTS':>8} {'STATUSES':>8} {'ALERTS':>6}  LAST STATE")
    for source in sorted(counts):
        count = counts[source]
        print(
            f"{source:<16} {count['event']:>8} {count['status']:>8} {count['alert']:>6}  "
            f"{last_state.get(source, '-')}"
        )
    return 0
