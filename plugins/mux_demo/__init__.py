"""mux_demo: ``mux serve-demo`` and ``mux demo`` -- a simulated training run to watch.

The demo trainer is not the framework: these two commands come to ``mux``
through ``mux_register_commands``, the way a third party's command would.

* ``mux serve-demo`` (:mod:`mux_demo.server`): a simulated training run
  serving SSE :8888, WS :8889 and REST :8890 -- a separate program, since
  the monitor itself never serves;
* ``mux demo`` (:mod:`mux_demo.monitor`): starts ``serve-demo`` as a child
  process and monitors it with the bundled config; Ctrl-C stops both.
"""

from __future__ import annotations

import argparse
from typing import Any

from mux_core.hookspecs import hookimpl
from mux_core.options import positive_seconds

__all__ = ["mux_register_commands"]


def _add_endpoints(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="the demo server's address (loopback only)"
    )
    parser.add_argument(
        "--sse-port", type=int, default=8888, metavar="PORT", help="SSE port (default 8888)"
    )
    parser.add_argument(
        "--ws-port", type=int, default=8889, metavar="PORT", help="WebSocket port (default 8889)"
    )
    parser.add_argument(
        "--rest-port", type=int, default=8890, metavar="PORT", help="REST port (default 8890)"
    )
    parser.add_argument("--rate", type=float, default=10.0, help="training steps per second")


def _serve_demo_arguments(parser: argparse.ArgumentParser) -> None:
    _add_endpoints(parser)
    parser.add_argument(
        "--nan-at",
        type=int,
        default=0,
        metavar="STEP",
        help="fault switch: the loss is NaN from this step on (a nonfinite alert)",
    )
    parser.add_argument(
        "--nan-for",
        type=int,
        default=0,
        metavar="STEPS",
        help="with --nan-at: NaN for this many steps only, then finite again (an episode)",
    )
    parser.add_argument(
        "--restart-at",
        type=int,
        default=0,
        metavar="STEP",
        help="fault switch: at this step the trainer starts over at step 1 (a restart alert)",
    )
    parser.add_argument(
        "--stall-at",
        type=int,
        default=0,
        metavar="STEP",
        help="fault switch: before this step the trainer hangs for --stall-for seconds, "
        "connected but silent (a stall alert)",
    )
    parser.add_argument(
        "--stall-for",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="how long the hang of --stall-at lasts",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        metavar="N",
        help="train N steps, then stop serving (default: forever)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the noise, for a run that repeats"
    )


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    _add_endpoints(parser)
    parser.add_argument(
        "--view",
        choices=("tui", "log"),
        default=None,
        help="terminal table (default on a terminal) or log lines",
    )
    parser.add_argument(
        "--for",
        dest="duration",
        type=positive_seconds,
        metavar="SECONDS",
        help="stop both after this many seconds (default: until Ctrl-C)",
    )


def _serve_demo(args: argparse.Namespace) -> int:
    import sys

    from .server import DemoOptions, run_serve_demo

    try:
        options = DemoOptions(
            host=args.host,
            sse_port=args.sse_port,
            ws_port=args.ws_port,
            rest_port=args.rest_port,
            rate=args.rate,
            nan_at=args.nan_at,
            nan_for=args.nan_for,
            restart_at=args.restart_at,
            stall_at=args.stall_at,
            stall_for=args.stall_for,
            steps=args.steps,
            seed=args.seed,
        )
    except ValueError as exc:  # a negative step, a port out of range: the option's own words
        print(f"mux serve-demo: error: {exc}", file=sys.stderr)
        return 2
    return run_serve_demo(options)


def _demo(args: argparse.Namespace) -> int:
    from .monitor import run_demo

    return run_demo(args)


@hookimpl
def mux_register_commands(register: Any) -> None:
    """Provide ``mux serve-demo`` and ``mux demo``."""
    register(
        "serve-demo",
        _serve_demo_arguments,
        _serve_demo,
        help="serve a simulated training run (SSE :8888, WS :8889, REST :8890)",
    )
    register(
        "demo", _demo_arguments, _demo, help="start serve-demo as a child process and monitor it"
    )
