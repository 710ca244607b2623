"""``mux demo``: start ``mux serve-demo`` as a child process and watch it.

The monitor side stays a pure client: the demo server is a separate process
(the same one ``mux serve-demo`` runs), and the monitor connects to it like to
any trainer -- it may even start before the server listens, in which case the
sources report ``server_unavailable`` and then ``connected``.

Ctrl-C stops both, monitor first: the child runs in a session of its own, so
the terminal's SIGINT reaches only the monitor, which stops its sources (each
records ``stopped``) and then terminates the child. Sharing the process group,
the server used to die in the same instant and a source could record
``disconnected: connection lost`` just before ``stopped``. On Linux the child
also gets SIGTERM if the monitor dies without cleaning up (kill -9).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from mux_core import Engine, PluginManager, parse_config

__all__ = ["demo_config_text", "run_demo"]

_log = logging.getLogger("mux.demo")


def demo_config_text(
    *, host: str, sse_port: int, ws_port: int, rest_port: int, view: str, events_path: str
) -> str:
    """The demo's config: the sources of examples/monitor.toml on the given ports."""
    return f"""\
[retry]
initial_delay = 0.25
max_delay = 5.0

[[sources]]
name = "train-sse"
transport = "sse"
url = "http://{host}:{sse_port}/events"

[[sources]]
name = "train-ws"
transport = "ws"
url = "ws://{host}:{ws_port}/ws"
id_field = "id"
event_field = "event"
resume_param = "last_id"

[[sources]]
name = "train-rest"
transport = "rest"
url = "http://{host}:{rest_port}/metrics"
interval = 1.0
items = "items"
event_field = "event"
cursor_param = "after"

[[sinks]]
type = "{view}"
{'plot = ["loss", "lr"]' if view == "tui" else ""}

[[sinks]]
type = "file"
path = "{events_path}"
"""


def run_demo(args: argparse.Namespace, plugins: PluginManager | None = None) -> int:
    """Run the demo until Ctrl-C (or ``--for``); returns the exit code."""
    view = args.view or ("tui" if sys.stdout.isatty() else "log")
    if view == "tui":  # the view is the output; only warnings go to the log
        logging.getLogger().setLevel(logging.WARNING)
    plugins = plugins or args.plugins
    events_path = str(Path("runs") / "demo-events.jsonl")
    text = demo_config_text(
        host=args.host,
        sse_port=args.sse_port,
        ws_port=args.ws_port,
        rest_port=args.rest_port,
        view=view,
        events_path=events_path,
    )
    config = parse_config(text, path="mux-demo", plugins=plugins)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mux_core",
            "serve-demo",
            "--host",
            args.host,
            "--sse-port",
            str(args.sse_port),
            "--ws-port",
            str(args.ws_port),
            "--rest-port",
            str(args.rest_port),
            "--rate",
            str(args.rate),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_die_with_parent_hook(),
    )
    refused = _wait_until_serving(server)
    if refused is not None:
        print(f"mux demo: {refused}", file=sys.stderr)
        return 2
    try:
        engine = Engine(config, plugins, duration=args.duration, install_signal_handlers=True)
        result = trio.run(engine.run)
    finally:
        _stop_child(server)
    print(f"mux demo: events recorded in {events_path}", file=sys.stderr)
    return result.exit_code


_PR_SET_PDEATHSIG = 1


def _wait_until_serving(server: subprocess.Popen[str]) -> str | None:
    """Block until the child says it serves (None) or exits: then why, in one line.

    A taken port (another serve-demo, or any program on 8888) makes the child
    exit 2 before it prints anything; watching on would watch whatever serves
    there, so the demo refuses instead.
    """
    assert server.stdout is not None
    if server.stdout.readline():
        return None
    _, err = server.communicate()
    lines = [line for line in err.splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"the demo server exited with code {server.returncode}"


def _die_with_parent_hook() -> Callable[[], None] | None:
    """For Popen's preexec_fn: make the child get SIGTERM when the monitor dies.

    Linux only (prctl); looked up here, in the parent, so the child does no
    more between fork and exec than the one call.
    """
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_child(server: subprocess.Popen[str]) -> None:
    if server.poll() is None:
        server.terminate()
    try:
        _, err = server.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        server.kill()
        _, err = server.communicate()
    if server.returncode not in (0, -15, 130) and err:
        print(f"mux demo: the demo server said: {err.strip()}", file=sys.stderr)
