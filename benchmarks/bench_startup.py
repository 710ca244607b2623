"""How long ``mux`` takes to start: ``mux --help``, ``mux plugins`` and
``mux check examples/monitor.toml``, each a new process as a user runs it,
next to ``python -c pass`` (the interpreter alone).

Every command runs once first, not counted (it writes the bytecode caches, as
a user's first run does: ``PYTHONDONTWRITEBYTECODE`` is left out of the
children's environment), then the commands take turns ``N`` times, so a burst
of load elsewhere on the machine hits each of them alike. The table shows the
median and the minimum wall time of the ``N`` runs; the target is a median
under 0.25 s.

Each command is measured twice: with every plugin the environment has (in the
dev venv that includes the example plugins of examples/, installed by ``make``)
and with ``MUX_LOAD_PLUGINS=""``: mux and its built-in plugins only. Which
modules start-up may not import (trio, httpx, websockets, prometheus_client,
...) is tested in tests/core/test_cli.py; how long it takes is measured here.

Run: ``.venv/bin/python benchmarks/bench_startup.py [--quick] [--runs N]``
(default 11 runs, ``--quick`` 5). Prints a table; asserts nothing.
``run(quick)`` returns the rows for run_all's table.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.25
COMMANDS = [("--help",), ("plugins",), ("check", "examples/monitor.toml")]
#: Label -> what the environment adds: every installed plugin, or the built-ins only.
PLUGIN_SETS = {"": {}, " (built-in plugins only)": {"MUX_LOAD_PLUGINS": ""}}


def _mux() -> list[str]:
    """The console script beside this interpreter, as a user runs it; else ``-m mux_core``."""
    script = Path(sys.executable).parent / "mux"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mux_core"]


def _time(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed


def measure(runs: int) -> dict[str, list[float]]:
    """Wall seconds of each command, ``runs`` times, by label (``python -c pass`` first)."""
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    mux = _mux()
    jobs: list[tuple[str, list[str], dict[str, str]]] = [
        ("python -c pass", [sys.executable, "-c", "pass"], base)
    ]
    for suffix, extra in PLUGIN_SETS.items():
        for args in COMMANDS:
            jobs.append((f"mux {' '.join(args)}{suffix}", [*mux, *args], {**base, **extra}))
    for _, argv, env in jobs:  # the warm-up: bytecode written, files in the page cache
        _time(argv, env)
    times: dict[str, list[float]] = {label: [] for label, _, _ in jobs}
    for _ in range(runs):
        for label, argv, env in jobs:
            times[label].append(_time(argv, env))
    return times


def run(quick: bool = False) -> list[h.Row]:
    runs = 5 if quick else 11
    times = measure(runs)
    bare = statistics.median(times.pop("python -c pass"))
    rows = []
    for label, taken in times.items():
        median = statistics.median(taken)
        rows.append(
            h.Row(
                f"start-up: {label}",
                f"{median:.3f} s (min {min(taken):.3f})",
                f"{bare:.3f} s",
                f"{median / bare:.0f}x",
                f"median < {TARGET:g} s ({runs} runs)",
                median < TARGET,
            )
        )
    return rows


def main(argv: list[str]) -> None:
    runs = int(argv[argv.index("--runs") + 1]) if "--runs" in argv else None
    runs = runs or (5 if "--quick" in argv else 11)
    times = measure(runs)
    cells = [("command", "median", "min")]
    for label, taken in times.items():
        cells.append((label, f"{statistics.median(taken):.3f} s", f"{min(taken):.3f} s"))
    widths = [max(len(row[i]) for row in cells) for i in range(3)]
    for index, row in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    print(f"\n{h.machine()}; {runs} runs each after one warm-up; target: median < {TARGET:g} s")


if __name__ == "__main__":
    main(sys.argv[1:])
