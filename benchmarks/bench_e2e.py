"""End to end, as a user runs it: ``mux run CONFIG`` -> the ``file`` sink, vs the
script a user would write instead (issue 9).

Run: ``.venv/bin/python benchmarks/bench_e2e.py [--quick] [--events N] [sse] [ws] [rest]``.
Prints a table; asserts nothing (a missed target or a failed run is a "NO").

For each transport one server process (``_servers.py metrics-KIND N``) serves
N ~200-byte training-metric JSON events (steps 1 .. N, the same bytes for
every transport) and then ends the stream (SSE: close, then 204; WS: close
1000; REST: empty pages). Against it, one after the other:

* **mux**: a TOML config with one source and one ``[[sinks]] type = "file"``
  with the default options (``fsync`` on, ``flush_interval`` 1 s) in a temp
  dir, and ``mux run CONFIG`` as a subprocess (the ``mux`` next to this
  Python). SSE and WS runs end on their own (the source ``ended``); a REST
  run gets SIGINT once the file holds N event lines (mux flushes and exits
  0), as does any run still alive 5 s after that. WS sets ``end_on_close = true``; REST polls with
  ``cursor_param = "after"``, ``id_field = "step"``, ``interval = 0.001``.
* **the user's script**: ``_e2e_user_{sse,ws,rest}.py``, the loop a user
  writes without mux (httpx streaming + a line parser / the ``websockets``
  sync client / ``httpx.Client`` paging; ``json.loads`` + ``json.dumps`` of a
  ``{"received_at", "data"}`` line to a file).

Measured for each side, from the outside only (the CLI and the JSON Lines
file, no internals):

* ev/s from the file's ``received_at`` (first to last event) -- the rate;
* ev/s over the child's whole life (spawn to exit: start-up, connect, the
  file sink's up to 1 s flush delay and shut-down included) -- context;
* CPU per event: user + system seconds of the child (``os.wait4`` rusage,
  all its threads, start-up included) / N;
* peak RSS: ``ru_maxrss`` of the child.

Each file is then read back: exactly N events, ``seq`` 1 .. N in order and
``data.step == seq`` (mux), ``data.step`` 1 .. N (script) -- anything else
(loss, duplicates, a non-zero exit, a stall, a timeout) is a failure row,
with the tail of the child's stderr printed. Temp dirs are removed; every
child is killed if this process dies.
"""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _harness as h
import attrs
from orjson import loads as _loads

import mux_core

HERE = Path(__file__).resolve().parent
TRANSPORTS = ("sse", "ws", "rest")
#: transport -> (ev/s by received_at, times the user's script)
TARGETS = {"sse": (500_000, 3.0), "ws": (150_000, 3.0), "rest": (500_000, 3.0)}
FULL_EVENTS = 1_000_000
QUICK_EVENTS = 200_000
#: How often the parent looks at the growing file (and the child's state).
POLL_S = 0.1
#: No new event line in the file for this long (child alive, not yet told to stop): stalled.
STALL_S = 20.0
#: How long ``mux run`` may take to end by itself once its file is complete (then SIGINT).
END_GRACE_S = 5.0
#: After SIGINT, how long the child may take to flush and exit before SIGKILL.
GRACE_S = 30.0
#: Lines of a failed child's stderr shown.
STDERR_TAIL = 25


def timeout_for(events: int) -> float:
    """Wall seconds one child may take: generous (10k ev/s), never unbounded."""
    return 30.0 + events / 10_000


# -- one child process, measured -------------------------------------------


@attrs.frozen
class Child:
    """What a finished child cost, from the outside."""

    exit_code: int
    wall: float  # spawn -> exit, seconds
    cpu: float  # user + system seconds (rusage of the child)
    max_rss_kib: int
    #: Why the parent had to stop it early (stall, timeout, kill), or None.
    stopped_because: str | None
    stderr_tail: str


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the child gets SIGKILL when this process dies (no orphans)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _wait_for_exit(pid: int, timeout: float) -> None:
    """Sleep up to ``timeout``, waking at once when ``pid`` exits (pidfd, Linux)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        time.sleep(timeout)
        return
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)


class _Growth:
    """Follows a growing file: how many whole lines holding ``marker`` it has."""

    def __init__(self, path: Path, marker: bytes) -> None:
        self.path, self.marker = path, marker
        self.offset = 0
        self.matches = 0
        self.grew_at = time.monotonic()

    def poll(self) -> int:
        try:
            with open(self.path, "rb") as file:
                file.seek(self.offset)
                chunk = file.read()
        except FileNotFoundError:
            return self.matches
        end = chunk.rfind(b"\n") + 1  # whole lines only: a marker never straddles a read
        found = chunk.count(self.marker, 0, end) if end else 0
        self.offset += end
        if found:  # status lines of a source retrying a dead server are not progress
            self.matches += found
            self.grew_at = time.monotonic()
        return self.matches


def _hwm_kib(pid: int) -> int:
    """The peak resident set of a running process (``VmHWM``), in KiB; 0 if gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run_child(
    argv: list[str],
    *,
    cwd: Path,
    out: Path,
    marker: bytes,
    events: int,
    end_grace: float | None,
    timeout: float,
) -> Child:
    """Run ``argv`` until it exits; SIGINT it ``end_grace`` seconds after ``out``
    holds ``events`` lines with ``marker`` (None: never for that reason), when
    it stalls, or when ``timeout`` passes; SIGKILL if SIGINT does not end it."""
    stdout_path, stderr_path = cwd / f"{out.stem}.stdout", cwd / f"{out.stem}.stderr"
    growth = _Growth(out, marker)
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, cwd=cwd, stdout=stdout, stderr=stderr, preexec_fn=_die_with_parent
        )
    complete_at: float | None = None
    peak_kib = 0
    interrupted_at: float | None = None
    killed = False
    because: str | None = None
    try:
        while True:
            peak_kib = max(peak_kib, _hwm_kib(proc.pid))
            _wait_for_exit(proc.pid, POLL_S)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic()
            seen = growth.poll()
            if seen >= events and complete_at is None:
                complete_at = now
            if interrupted_at is None:
                if (
                    end_grace is not None
                    and complete_at is not None
                    and now - complete_at >= end_grace
                ):
                    because = None  # the normal end: the file is complete
                elif now - started > timeout:
                    because = f"timed out after {timeout:.0f} s with {seen:,} of {events:,} lines"
                elif now - growth.grew_at > STALL_S:
                    because = f"stalled: no new event for {STALL_S:.0f} s at {seen:,} of {events:,}"
                else:
                    continue
                proc.send_signal(signal.SIGINT)
                interrupted_at = now
            elif not killed and now - interrupted_at > GRACE_S:
                proc.kill()
                killed = True
                because = (because + "; " if because else "") + (
                    f"did not exit within {GRACE_S:.0f} s of SIGINT (killed)"
                )
    except BaseException:  # this process is being interrupted: take the child along
        proc.kill()
        os.wait4(proc.pid, 0)
        raise
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    tail = stderr_path.read_text(errors="replace").splitlines()[-STDERR_TAIL:]
    return Child(
        exit_code=proc.returncode,
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        # ru_maxrss of a child forked from this (by then large) process starts
        # at this process's size (seen: every row after the first read
        # ~135 MiB); VmHWM, sampled while the child runs, is the child's own.
        max_rss_kib=peak_kib or usage.ru_maxrss,
        stopped_because=because,
        stderr_tail="\n".join(tail),
    )


# -- reading a file back ---------------------------------------------------


@attrs.frozen
class Check:
    """What the file holds: the events in order, and when the first and last came."""

    events: int
    first_at: float
    last_at: float
    problem: str | None  # the first thing wrong (loss, duplicate, order, bad line)


def check_file(path: Path, events: int, *, mux: bool) -> Check:
    """Every event of ``path`` in order: mux records with ``seq`` == ``data.step``
    == 1, 2, ...; script lines with ``data.step`` == 1, 2, ...; nothing else."""
    count = 0
    first_at = last_at = 0.0
    problem: str | None = None
    if not path.exists():
        return Check(0, 0.0, 0.0, "no output file")
    with open(path, "rb") as file:
        for number, line in enumerate(file, 1):
            try:
                record = _loads(line)
                if mux and record["type"] != "event":
                    continue
                at, step = record["received_at"], record["data"]["step"]
                seq = record["seq"] if mux else step
            except (ValueError, KeyError, TypeError) as exc:
                problem = problem or f"line {number}: not a record ({exc!r}): {line[:120]!r}"
                continue
            count += 1
            if problem is None and not (seq == step == count):
                problem = f"event {count} (line {number}) has seq {seq}, step {step}"
            if count == 1:
                first_at = at
            last_at = at
    if problem is None and count != events:
        problem = f"{count:,} events, expected {events:,}"
    return Check(count, first_at, last_at, problem)


# -- the two sides ---------------------------------------------------------


@attrs.frozen
class Outcome:
    """One side's figures, or why there are none."""

    side: str
    events: int
    rate: float  # ev/s by received_at, first to last event
    wall: float
    cpu: float
    max_rss_kib: int
    problem: str | None

    @property
    def wall_rate(self) -> float:
        return self.events / self.wall if self.wall else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu / self.events * 1e6 if self.events else 0.0


def mux_config(transport: str, port: int, out: Path) -> str:
    source = {
        "sse": f'url = "http://127.0.0.1:{port}/events/mux"\n',
        "ws": f'url = "ws://127.0.0.1:{port}/ws"\nend_on_close = true\n',
        "rest": (
            f'url = "http://127.0.0.1:{port}/page"\n'
            'cursor_param = "after"\nid_field = "step"\ninterval = 0.001\n'
        ),
    }[transport]
    return (
        f'[[sources]]\nname = "train-{transport}"\ntransport = "{transport}"\n{source}\n'
        f'[[sinks]]\ntype = "file"\npath = "{out}"\n'
    )


def script_url(transport: str, port: int) -> str:
    return {
        "sse": f"http://127.0.0.1:{port}/events/script",
        "ws": f"ws://127.0.0.1:{port}/ws",
        "rest": f"http://127.0.0.1:{port}/page",
    }[transport]


def mux_command() -> list[str]:
    """``mux`` as the user runs it: the console script of this Python's environment."""
    script = Path(sys.executable).parent / "mux"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mux_core"]


def measure(transport: str, side: str, port: int, events: int, work: Path) -> Outcome:
    """One side against the server on ``port``: run it, read its file back."""
    out = work / f"{side}.jsonl"
    if side == "mux":
        config = work / "mux.toml"
        config.write_text(mux_config(transport, port, out))
        argv = [*mux_command(), "run", str(config)]
        marker = b'"type":"event"'
    else:
        script = HERE / f"_e2e_user_{transport}.py"
        argv = [sys.executable, str(script), script_url(transport, port), str(events), str(out)]
        marker = b"\n"
    child = run_child(
        argv,
        cwd=work,
        out=out,
        marker=marker,
        events=events,
        # mux ends by itself when the server ends an SSE or WS stream; an
        # interrupt then could land in its shut-down. REST polls forever.
        end_grace=(0.0 if transport == "rest" else END_GRACE_S) if side == "mux" else None,
        timeout=timeout_for(events),
    )
    check = check_file(out, events, mux=side == "mux")
    problems = []
    if child.stopped_because:
        problems.append(child.stopped_because)
    if child.exit_code != 0:
        problems.append(f"exit code {child.exit_code}")
    if check.problem:
        problems.append(check.problem)
    span = check.last_at - check.first_at
    rate = (check.events - 1) / span if check.events > 1 and span > 0 else 0.0
    outcome = Outcome(
        side, check.events, rate, child.wall, child.cpu, child.max_rss_kib,
        "; ".join(problems) or None,
    )  # fmt: skip
    _report(transport, outcome, child)
    try:
        out.unlink()  # ~250 MB at 1M events: gone before the next run writes its own
    except FileNotFoundError:
        pass
    return outcome


def _report(transport: str, o: Outcome, child: Child) -> None:
    label = "mux run -> file" if o.side == "mux" else "user's script"
    print(
        f"  {transport} {label}: {o.events:,} events, {o.rate:,.0f} ev/s by received_at, "
        f"{o.wall:.1f} s wall, {o.cpu_us_per_event:.2f} µs CPU/event, "
        f"peak RSS {o.max_rss_kib / 1024:.0f} MiB"
        + (f"\n  PROBLEM: {o.problem}" if o.problem else ""),
        file=sys.stderr,
        flush=True,
    )
    if o.problem and child.stderr_tail:
        indented = "\n".join("    | " + line for line in child.stderr_tail.splitlines())
        print(f"  stderr (last {STDERR_TAIL} lines):\n{indented}", file=sys.stderr, flush=True)


def compare(transport: str, events: int) -> tuple[Outcome, Outcome]:
    """mux, then the user's script, against one server of ``events`` events."""
    work = Path(tempfile.mkdtemp(prefix=f"mux-e2e-{transport}-"))
    try:
        with h.server_process(f"metrics-{transport}", str(events)) as port:
            mux = measure(transport, "mux", port, events, work)
            script = measure(transport, "script", port, events, work)
        return mux, script
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- rows ------------------------------------------------------------------


def rows(transport: str, mux: Outcome, script: Outcome) -> list[h.Row]:
    floor, times = TARGETS[transport]
    name = f"E2E {transport} -> file"
    target = f">= {floor:,} ev/s, >= {times:g}x script"
    if mux.problem or script.problem:
        return [
            h.Row(
                f"{name}: FAILED (see above)",
                "FAILED" if mux.problem else h.rate(mux.rate),
                "FAILED" if script.problem else h.rate(script.rate),
                "-",
                target,
                False,
            )
        ]
    met = mux.rate >= floor and mux.rate >= times * script.rate
    return [
        h.versus(
            f"{name}: ev/s by received_at (vs user's script)", mux.rate, script.rate, target, met
        ),
        h.versus(f"{name}: ev/s spawn to exit", mux.wall_rate, script.wall_rate),
        h.Row(
            f"{name}: CPU per event (whole process)",
            f"{mux.cpu_us_per_event:.2f} µs",
            f"{script.cpu_us_per_event:.2f} µs",
            f"{mux.cpu_us_per_event / script.cpu_us_per_event:.2f}",
            "(context)",
            None,
        ),
        h.Row(
            f"{name}: peak RSS",
            f"{mux.max_rss_kib / 1024:.1f} MiB",
            f"{script.max_rss_kib / 1024:.1f} MiB",
            f"{mux.max_rss_kib / script.max_rss_kib:.2f}",
            "(context)",
            None,
        ),
    ]


def run(
    quick: bool, events: int | None = None, transports: tuple[str, ...] = TRANSPORTS
) -> list[h.Row]:
    events = events or (QUICK_EVENTS if quick else FULL_EVENTS)
    print(
        f"  {events:,} events per side; mux = {' '.join(mux_command())} "
        f"(mux_core from {Path(mux_core.__file__).parent})",
        file=sys.stderr,
    )
    result: list[h.Row] = []
    for transport in transports:
        result.extend(rows(transport, *compare(transport, events)))
    return result


def main(argv: list[str]) -> None:
    events = int(argv[argv.index("--events") + 1]) if "--events" in argv else None
    chosen = tuple(t for t in TRANSPORTS if t in argv) or TRANSPORTS
    print(h.table(run(h.quick_flag(argv), events, chosen)))
    print(f"\n{h.machine()}")


if __name__ == "__main__":
    main(sys.argv[1:])
