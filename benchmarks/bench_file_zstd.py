"""``mux run`` -> a zstd-compressed file vs a plain one: size and rate (issue 24).

Run: ``.venv/bin/python benchmarks/bench_file_zstd.py [--events N] [--repeat R]``.
Prints a table; asserts nothing (a missed target is a "NO").

One server process (``_servers.py demo-sse N``) serves N events of the demo
trainer (``mux serve-demo``'s records: noisy loss, lr, throughput, memory,
an eval every 50 steps; ~120-byte payloads, ~270-byte lines), then ends the
stream. Against it, alternately, ``mux run CONFIG`` with one ``file`` sink
at its defaults (``fsync`` on, ``flush_interval`` 1 s): plain
``events.jsonl``, or ``compression = "zstd"`` to ``events.jsonl.zst``.

Measured from the outside (the CLI, the file): ev/s from the file's
``received_at`` (first to last event; the rate the sink kept up with), CPU
per event of the whole process, the file's size on disk. Each file is read
back (the zstd one with ``mux_core.open_recording``, as ``mux replay`` does):
exactly N events, ``seq`` 1 .. N, and the zstd file's lines equal to the
plain file's but for ``received_at``. The best of ``--repeat`` runs per side.

Targets: zstd at least 5x smaller, and at least 80% of the plain rate (the
best run of each side; the median ratio of the alternating pairs is shown
too, as a check against the load of the machine drifting between runs).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import _harness as h
import attrs
import orjson
from bench_e2e import mux_command, run_child, timeout_for

from mux_core.records import open_recording

TARGET_RATIO = 5.0
TARGET_RATE = 0.8


@attrs.frozen
class Run:
    rate: float  # ev/s by received_at
    cpu_us: float  # CPU per event, whole process
    size: int  # bytes on disk
    lines: list[bytes]  # the file's lines without received_at, for the comparison
    problem: str | None


def _config(port: int, out: Path, zstd: bool) -> str:
    return (
        '[[sources]]\nname = "train"\ntransport = "sse"\n'
        f'url = "http://127.0.0.1:{port}/events/{out.name}"\n\n'
        f'[[sinks]]\ntype = "file"\npath = "{out}"\n' + ('compression = "zstd"\n' if zstd else "")
    )


def _read(path: Path, events: int) -> tuple[float, list[bytes], str | None]:
    """(ev/s by received_at, the lines without their times, the first problem)."""
    first = last = 0.0
    count = 0
    lines: list[bytes] = []
    problem = None
    with open_recording(path) as file:
        for line in file:
            record = orjson.loads(line)
            if record["type"] != "event":
                continue
            count += 1
            if record["seq"] != count and problem is None:
                problem = f"event {count} has seq {record['seq']}"
            first = first or record["received_at"]
            last = record["received_at"]
            del record["received_at"]
            lines.append(orjson.dumps(record))
    if count != events and problem is None:
        problem = f"{count:,} events, expected {events:,}"
    rate = (count - 1) / (last - first) if count > 1 and last > first else 0.0
    return rate, lines, problem


def measure(port: int, events: int, work: Path, zstd: bool, attempt: int) -> Run:
    out = work / (f"events-{attempt}.jsonl.zst" if zstd else f"events-{attempt}.jsonl")
    config = work / f"mux-{attempt}-{int(zstd)}.toml"
    config.write_text(_config(port, out, zstd))
    child = run_child(
        [*mux_command(), "run", str(config)],
        cwd=work,
        out=out,
        marker=b'"type":"event"',
        events=events,
        end_grace=None,  # the SSE stream ends: mux exits by itself
        timeout=timeout_for(events),
    )
    rate, lines, problem = _read(out, events)
    problems = [p for p in (child.stopped_because, problem) if p]
    if child.exit_code != 0:
        problems.append(f"exit code {child.exit_code}: {child.stderr_tail}")
    size = out.stat().st_size
    out.unlink()
    return Run(rate, child.cpu / events * 1e6, size, lines, "; ".join(problems) or None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    events = args.events
    work = Path(tempfile.mkdtemp(prefix="mux-zstd-"))
    plain: list[Run] = []
    packed: list[Run] = []
    try:
        with h.server_process("demo-sse", str(events)) as port:
            for attempt in range(args.repeat):
                plain.append(measure(port, events, work, False, attempt))
                packed.append(measure(port, events, work, True, attempt))
                print(
                    f"  run {attempt + 1}: plain {plain[-1].rate:,.0f} ev/s, "
                    f"zstd {packed[-1].rate:,.0f} ev/s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    problems = [r.problem for r in plain + packed if r.problem]
    if problems:
        print("FAILED:", *problems, sep="\n  ")
        raise SystemExit(1)
    same = all(p.lines == z.lines for p, z in zip(plain, packed, strict=True))
    best_plain = max(plain, key=lambda r: r.rate)
    best_zstd = max(packed, key=lambda r: r.rate)
    ratio = best_plain.size / best_zstd.size
    share = best_zstd.rate / best_plain.rate
    # Runs alternate, so each pair saw about the same load on the machine.
    pairs = sorted(z.rate / p.rate for p, z in zip(plain, packed, strict=True))
    median_pair = pairs[len(pairs) // 2]
    rows = [
        h.Row(
            "file sink zstd: size on disk (plain / zstd)",
            f"{best_zstd.size / 2**20:.1f} MiB",
            f"{best_plain.size / 2**20:.1f} MiB",
            f"{ratio:.2f}",
            f">= {TARGET_RATIO:g}x smaller",
            ratio >= TARGET_RATIO,
        ),
        h.Row(
            "file sink zstd: ev/s by received_at (zstd / plain)",
            h.rate(best_zstd.rate),
            h.rate(best_plain.rate),
            f"{share:.2f}",
            f">= {TARGET_RATE:.0%} of plain",
            share >= TARGET_RATE,
        ),
        h.Row(
            "file sink zstd: ev/s, median of alternating pairs",
            "-",
            "-",
            f"{median_pair:.2f}",
            "(context: load drift)",
            None,
        ),
        h.Row(
            "file sink zstd: CPU per event, whole process",
            f"{min(r.cpu_us for r in packed):.2f} µs",
            f"{min(r.cpu_us for r in plain):.2f} µs",
            f"{min(r.cpu_us for r in packed) / min(r.cpu_us for r in plain):.2f}",
            "(context)",
            None,
        ),
    ]
    print(
        f"mux run -> file: {events:,} demo events, best of {args.repeat} "
        f"(the 'bare' column: the plain file); same lines in both: {same}"
    )
    print(h.table(rows))


if __name__ == "__main__":
    main()
