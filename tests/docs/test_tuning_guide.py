"""The "Tuning alerts" page runs as written: its files, its commands, their outputs.

The page is read top to bottom: a ``toml`` block with ``title="FILE"``
writes FILE (a later block of the same title replaces it, as the reader
edits it); a ``console`` block's ``$ `` lines run in order -- ``&`` in the
background, ``wait`` for those -- and the lines after a command are its
expected stdout. What changes from one run to the next is left out of the
comparison: clock times, the durations in the table and the seconds a
``mux test`` took; runs of spaces count as one (the columns' widths follow
the times). The demo trainer and the monitor get free ports instead of the
page's 8888/8889/8890, so the test runs beside anything else.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

PAGE = ROOT / "docs" / "tuning-alerts.md"
MUX = [sys.executable, "-m", "mux_core"]
_BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_VARYING = [
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"), "<clock>"),
    (re.compile(r"(?<![\d.])\d+:\d\d:\d\d(?![\d.])"), "<duration>"),
    (re.compile(r" in \d+\.\d+ s "), " in <seconds> s "),
    (re.compile(r"[ \t]+"), " "),
]


def _normal(text: str) -> list[str]:
    lines = []
    for line in text.strip("\n").splitlines():
        for pattern, replacement in _VARYING:
            line = pattern.sub(replacement, line)
        lines.append(line.rstrip())
    return lines


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _steps() -> list[tuple[str, str, str]]:
    """In page order: ("file", name, content) and ("run", command, expected stdout)."""
    steps: list[tuple[str, str, str]] = []
    for lang, info, body in _BLOCK.findall(PAGE.read_text(encoding="utf-8")):
        title = re.search(r'title="([^"]+)"', info)
        if lang == "toml" and title:
            steps.append(("file", title.group(1), body))
        elif lang == "console":
            command: str | None = None
            out: list[str] = []
            for line in body.splitlines():
                if line.startswith("$ "):
                    if command is not None:
                        steps.append(("run", command, "\n".join(out)))
                    command, out = line[2:], []
                else:
                    out.append(line)
            if command is not None:
                steps.append(("run", command, "\n".join(out)))
    return steps


def test_the_page_has_files_and_commands_to_run() -> None:
    kinds = [(kind, text.split()[0] if kind == "run" else text) for kind, text, _ in _steps()]
    assert ("file", "monitor.toml") in kinds and ("file", "rules_test.toml") in kinds
    assert sum(1 for kind, word in kinds if kind == "run" and word == "mux") == 6


def test_the_tuning_guide_runs_as_written(tmp_path: Path) -> None:
    sse, ws, rest = _free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}
    background: list[subprocess.Popen[bytes]] = []
    try:
        for kind, text, expected in _steps():
            if kind == "file":
                content = expected.replace("127.0.0.1:8888", f"127.0.0.1:{sse}")
                (tmp_path / text).write_text(content, encoding="utf-8")
                continue
            command = text.strip()
            if command == "wait":
                for process in background:
                    assert process.wait(timeout=60) == 0, command
                background.clear()
                continue
            argv = shlex.split(command.removesuffix("&"))
            assert argv[0] == "mux", command
            argv = [*MUX, *argv[1:]]
            if argv[len(MUX)] == "serve-demo":
                argv += ["--sse-port", str(sse), "--ws-port", str(ws), "--rest-port", str(rest)]
            if command.endswith("&"):
                background.append(
                    subprocess.Popen(
                        argv,
                        cwd=tmp_path,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                continue
            done = subprocess.run(
                argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
            )
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            if expected.strip():
                assert _normal(done.stdout) == _normal(expected), command
    finally:
        for process in background:
            process.kill()
            process.wait()
