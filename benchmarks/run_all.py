"""Run every end-to-end benchmark and print one table (``make bench``).

Run: ``.venv/bin/python benchmarks/run_all.py [--quick] [--markdown FILE]``.
Asserts nothing: a missed target is a "NO" in the table, not a failure.

The first rows measure mux inside this process with a null sink (what mux
itself costs); the "E2E" rows at the end (``bench_e2e.py``, issue 9) run
``mux run CONFIG`` as a subprocess writing the real ``file`` sink, 1,000,000
events per transport, next to the script a user would write instead (in
the "bare" column). The "start-up" rows (``bench_startup.py``) time ``mux
--help``, ``mux plugins`` and ``mux check`` as new processes, next to
``python -c pass``.

``--quick`` runs fewer events (E2E: 200,000), one repeat each and 1,000
sources instead of 10,000 (about a minute and a half). ``--markdown FILE``
also writes the table, the date, the machine and the command to FILE.
Each benchmark also runs alone: ``.venv/bin/python benchmarks/bench_<name>.py``.
The micro-benchmarks (``bench_sse_parser.py``, ``bench_file_sink.py``) are not
part of this table.
"""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
import bench_e2e
import bench_processors
import bench_rest_throughput
import bench_sse_latency
import bench_sse_scale
import bench_sse_throughput
import bench_startup
import bench_ws_throughput

BENCHMARKS = [
    ("SSE throughput", bench_sse_throughput.run),
    ("WS throughput", bench_ws_throughput.run),
    ("REST throughput", bench_rest_throughput.run),
    ("SSE latency", bench_sse_latency.run),
    ("SSE scale", bench_sse_scale.run),
    ("E2E mux run -> file vs user's script", bench_e2e.run),
    ("Processors", bench_processors.run),
    ("Start-up", bench_startup.run),
]


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    markdown = Path(argv[argv.index("--markdown") + 1]) if "--markdown" in argv else None
    rows: list[h.Row] = []
    started = time.perf_counter()
    for name, run in BENCHMARKS:
        print(f"running {name}{' (quick)' if quick else ''} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        rows.extend(run(quick))
        print(f"  {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    print(h.table(rows))
    print(f"\n{h.machine()}; {elapsed:.0f} s in all")
    if markdown is not None:
        command = "python benchmarks/run_all.py " + " ".join(argv)
        markdown.write_text(
            "# Benchmark results\n\n"
            f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}\n"
            f"- machine: {h.machine()}\n"
            f"- command: `{command.strip()}` ({elapsed:.0f} s)\n\n"
            + h.table(rows, markdown=True)
            + "\n"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
