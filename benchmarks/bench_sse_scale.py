"""Scale: N concurrent, idle SSE sources in one process -- memory per source and
time until all are connected.

Run: ``.venv/bin/python benchmarks/bench_sse_scale.py [--quick] [--sources N]``.
Prints a table; asserts nothing.

The server (``_servers.py sse``, ``GET /idle``, its own process) holds every
stream open with one comment and then silence. Each client runs in a fresh
child process (so one's heap does not flatter the other's) with RLIMIT_NOFILE
raised to its hard limit:

* mux: a config of N ``sse`` sources parsed by ``parse_config``, the real
  engine, a null sink that notes when the N-th ``connected`` Status arrives;
* bare: N trio tasks, each a raw socket that sends the request, reads the
  response head, then waits in ``receive_some``.

RSS is VmRSS from /proc/self/status, read after the imports and before the
config is parsed (mux) / the first socket is opened (bare), and again once
all N are connected; the delta divided by N is the cost of one source.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import _harness as h
import trio
from _servers import raise_nofile

TARGET_SOURCES = 10_000
TARGET_KIB = 32
TARGET_SECONDS = 10.0
_DEADLINE = 120.0


def _config(port: int, n: int) -> str:
    parts = ["[retry]\nconnect_timeout = 60.0\n"]
    for i in range(n):
        parts.append(
            f'[[sources]]\nname = "s{i}"\ntransport = "sse"\nurl = "http://127.0.0.1:{port}/idle"\n'
        )
    parts.append(f'[[sinks]]\ntype = "bench-connect"\nexpect = {n}\n')
    return "\n".join(parts)


async def _mux(port: int, n: int) -> dict[str, object]:
    manager = h.plugins()
    text = _config(port, n)
    before = h.rss_kib()
    eng = h.engine(text, manager)
    h.ConnectSink.created = trio.Event()
    result: dict[str, object] = {}
    async with trio.open_nursery() as nursery:
        start = time.perf_counter()
        nursery.start_soon(eng.run)
        await h.ConnectSink.created.wait()
        sink = h.ConnectSink.last
        assert sink is not None
        with trio.move_on_after(_DEADLINE):
            await sink.all_connected.wait()
        result["seconds"] = time.perf_counter() - start
        result["rss_delta_kib"] = h.rss_kib() - before
        result["connected"] = len(sink.connected)
        result["problems"] = sorted(set(sink.problems.values()))[:5]
        eng.request_stop("benchmark done")
    return result


async def _bare(port: int, n: int) -> dict[str, object]:
    before = h.rss_kib()
    connected = 0
    all_connected = trio.Event()
    problems: set[str] = set()

    async def one() -> None:
        nonlocal connected
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError as exc:
            problems.add(str(exc)[:120])
            return
        async with stream:
            await stream.send_all(
                b"GET /idle HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
            )
            head = b""
            while b"\n\n" not in head.partition(b"\r\n\r\n")[2]:
                data = await stream.receive_some(4096)
                if not data:
                    return
                head += data
            connected += 1
            if connected == n:
                all_connected.set()
            await stream.receive_some(4096)

    result: dict[str, object] = {}
    async with trio.open_nursery() as nursery:
        start = time.perf_counter()
        for _ in range(n):
            nursery.start_soon(one)
        with trio.move_on_after(_DEADLINE):
            await all_connected.wait()
        result["seconds"] = time.perf_counter() - start
        result["rss_delta_kib"] = h.rss_kib() - before
        result["connected"] = connected
        result["problems"] = sorted(problems)[:5]
        nursery.cancel_scope.cancel()
    return result


def _child(kind: str, port: int, n: int) -> None:
    raise_nofile()
    import httpx  # noqa: F401  (imported before the first RSS reading, as mux's are)

    runner = _mux if kind == "mux" else _bare
    print(json.dumps(trio.run(runner, port, n)), flush=True)


def _measure(kind: str, port: int, n: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(port), str(n)],
        capture_output=True,
        text=True,
        timeout=_DEADLINE + 120,
    )
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1]}
    result: dict[str, object] = json.loads(lines[-1])
    return result


def run(quick: bool, sources: int | None = None) -> list[h.Row]:
    n = sources or (1_000 if quick else TARGET_SOURCES)
    limit = raise_nofile()
    with h.server_process("sse") as port:
        mux = _measure("mux", port, n)
        bare = _measure("bare", port, n)
    return _rows(n, mux, bare, limit)


def _rows(n: int, mux: dict[str, object], bare: dict[str, object], limit: int) -> list[h.Row]:
    def per_source(r: dict[str, object]) -> float:
        return float(r["rss_delta_kib"]) / max(1, int(r["connected"]))  # type: ignore[arg-type]

    if "error" in mux or "error" in bare:
        why = mux.get("error") or bare.get("error")
        return [h.Row(f"SSE scale, {n:,} sources", "failed", "", "", str(why)[:60], False)]
    all_up = mux["connected"] == n
    m_kib, b_kib = per_source(mux), per_source(bare)
    m_s, b_s = float(mux["seconds"]), float(bare["seconds"])  # type: ignore[arg-type]
    note = "" if all_up else f" ({mux['connected']} connected: {mux['problems']})"
    return [
        h.Row(
            f"SSE scale: RSS per source, {n:,} sources{note}",
            f"{m_kib:.1f} KiB",
            f"{b_kib:.1f} KiB",
            f"{m_kib / b_kib:.2f}" if b_kib > 0 else "-",
            f"<= {TARGET_KIB} KB at {TARGET_SOURCES:,}",
            all_up and n >= TARGET_SOURCES and m_kib * 1024 <= TARGET_KIB * 1000,
        ),
        h.Row(
            f"SSE scale: time to all {n:,} connected (fd limit {limit:,})",
            f"{m_s:.2f} s",
            f"{b_s:.2f} s",
            f"{m_s / b_s:.2f}",
            f"<= {TARGET_SECONDS:.0f} s at {TARGET_SOURCES:,}",
            all_up and n >= TARGET_SOURCES and m_s <= TARGET_SECONDS,
        ),
    ]


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--child"]:
        _child(args[1], int(args[2]), int(args[3]))
    else:
        count = int(args[args.index("--sources") + 1]) if "--sources" in args else None
        print(h.table(run(h.quick_flag(args), count)))
