"""The demo training run behind ``mux serve-demo``: something real to watch.

A simulated trainer -- loss decaying with noise, a warm-up + cosine learning
rate, throughput, GPU memory, an evaluation every ``eval_every`` steps -- that
serves its metrics the three ways mux reads them:

* SSE  ``http://HOST:8888/events`` (resumes after ``Last-Event-ID``),
* WS   ``ws://HOST:8889/ws`` (resumes after ``?last_id=``),
* REST ``http://HOST:8890/metrics`` (items after ``?after=``).

It is a SEPARATE program: the monitor never serves. Every step publishes the
same record ``{"step", "loss", "lr", "tokens_per_s", "gpu_mem_gb"}`` with id
``str(step)`` and event type ``"metric"``; every ``eval_every`` steps an
``"eval"`` event ``{"step", "eval_loss"}`` follows with id ``"<step>-eval"``
(its own id, so a client that saw the metric but not the eval still gets
the eval when it resumes). WebSocket messages carry ``"id"`` and ``"event"``
keys like the REST items do (configure the ws source with
``id_field = "id"``, ``event_field = "event"``).

The servers are the test kit's fake servers (:mod:`mux_core.testing`) with
no faults scripted: the same code the transports are tested against.
"""

from __future__ import annotations

import errno
import json
import math
import random
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, TypeVar

import attrs
import trio

from mux_core.options import non_negative, positive
from mux_core.testing import (
    FakeRestServer,
    FakeSseServer,
    FakeWsServer,
    serve_rest,
    serve_sse,
    serve_ws,
)

__all__ = [
    "DemoEndpoints",
    "DemoOptions",
    "DemoPortInUse",
    "eval_record",
    "learning_rate",
    "run_serve_demo",
    "serve_demo",
    "training_record",
]

_LOOPBACK = frozenset({"127.0.0.1", "localhost"})
_PEAK_LR = 3e-4
_MIN_LR = 3e-5
_DEFAULT_TOTAL_STEPS = 10_000

T = TypeVar("T")


def _port(_instance: Any, attribute: Any, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be a port number 0..65535 (0 = any free port)")


def _loopback(_instance: Any, _attribute: Any, value: str) -> None:
    if value not in _LOOPBACK:
        raise ValueError(f"host must be 127.0.0.1 (the demo serves loopback only), got {value!r}")


@attrs.frozen
class DemoOptions:
    """How the demo training run serves and how fast it trains."""

    #: Interface to listen on; loopback only (the fake servers bind 127.0.0.1).
    host: str = attrs.field(default="127.0.0.1", validator=_loopback)
    #: SSE port (0 = any free port, for tests).
    sse_port: int = attrs.field(default=8888, validator=_port)
    #: WebSocket port.
    ws_port: int = attrs.field(default=8889, validator=_port)
    #: REST port.
    rest_port: int = attrs.field(default=8890, validator=_port)
    #: Training steps per second.
    rate: float = attrs.field(default=10.0, validator=positive())
    #: An "eval" event every this many steps (0 = never).
    eval_every: int = attrs.field(default=50, validator=non_negative())
    #: Steps to train, then stop serving (0 = forever).
    steps: int = attrs.field(default=0, validator=non_negative())
    #: Seed of the noise, for a reproducible run (None = random).
    seed: int | None = None
    #: Fault switch: from this step on the loss is NaN (0 = never); alerts to watch.
    nan_at: int = attrs.field(default=0, validator=non_negative())
    #: ... for this many steps, then finite again (0 = for good).
    nan_for: int = attrs.field(default=0, validator=non_negative())
    #: Fault switch: at this step the trainer starts over at step 1, ids again from
    #: "1", as a restarted trainer does (0 = never).
    restart_at: int = attrs.field(default=0, validator=non_negative())
    #: Fault switch: before this step the trainer hangs (a stuck data loader) ...
    stall_at: int = attrs.field(default=0, validator=non_negative())
    #: ... for this many seconds, connected but silent, then trains on.
    stall_for: float = attrs.field(default=0.0, validator=non_negative())


@attrs.frozen
class DemoEndpoints:
    """Where a running demo serves (the actual ports when 0 was asked)."""

    host: str
    sse_port: int
    ws_port: int
    rest_port: int

    @property
    def sse_url(self) -> str:
        return f"http://{self.host}:{self.sse_port}/events"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}/ws"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}/metrics"


class DemoPortInUse(Exception):
    """A port the demo should serve on is taken (most likely by another serve-demo)."""

    def __init__(self, port: int, flag: str) -> None:
        super().__init__(f"port {port} is in use: is another serve-demo running? pass {flag}")
        self.port = port
        self.flag = flag


# -- the simulation (pure) -----------------------------------------------------


def learning_rate(step: int, total_steps: int = _DEFAULT_TOTAL_STEPS) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to a floor."""
    warmup = max(1, total_steps // 20)
    if step <= warmup:
        return _PEAK_LR * max(step, 0) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return _MIN_LR + (_PEAK_LR - _MIN_LR) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _clean_loss(step: int) -> float:
    # A power law towards an irreducible loss, like language-model curves.
    return 1.7 + 8.3 * math.pow(1.0 + max(step, 0) / 150.0, -0.6)


def _significant(value: float, digits: int) -> float:
    """``value`` to ``digits`` significant digits: 6.6e-06, not 6.5999999999999995e-06."""
    return float(f"{value:.{digits}g}")


def training_record(
    step: int, rng: random.Random, *, total_steps: int = _DEFAULT_TOTAL_STEPS
) -> dict[str, float | int]:
    """The metrics of one training step; the noise comes from ``rng`` alone."""
    loss = max(_clean_loss(step) * (1.0 + rng.gauss(0.0, 0.03)), 0.01)
    warming_up = 0.3 if step <= 3 else 1.0  # the first steps compile kernels
    tokens_per_s = max(48_000.0 * warming_up * (1.0 + rng.gauss(0.0, 0.02)), 1.0)
    gpu_mem_gb = 38.0 + 2.0 * min(max(step, 0), 200) / 200 + rng.gauss(0.0, 0.05)
    return {
        "step": step,
        "loss": round(loss, 5),
        "lr": _significant(learning_rate(step, total_steps), 4),
        "tokens_per_s": round(tokens_per_s, 1),
        "gpu_mem_gb": round(gpu_mem_gb, 3),
    }


def eval_record(step: int, rng: random.Random) -> dict[str, float | int]:
    """An evaluation at ``step``: a little above the training loss, less noisy."""
    return {"step": step, "eval_loss": round(_clean_loss(step) * 1.04 + rng.gauss(0.0, 0.01), 5)}


# -- serving -------------------------------------------------------------------


def _address_in_use(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_address_in_use(inner) for inner in exc.exceptions)
    return isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE


async def _listen(
    stack: AsyncExitStack, server: AbstractAsyncContextManager[T], port: int, flag: str
) -> T:
    try:
        return await stack.enter_async_context(server)
    except (OSError, BaseExceptionGroup) as exc:
        if _address_in_use(exc):
            raise DemoPortInUse(port, flag) from exc
        raise


async def serve_demo(
    options: DemoOptions,
    *,
    task_status: trio.TaskStatus[DemoEndpoints] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the simulated run; ``task_status.started(endpoints)`` once all three listen.

    Returns after ``options.steps`` steps (closing the servers, as a finished
    trainer would), or runs until cancelled when ``steps`` is 0. Raises
    :class:`DemoPortInUse` (before ``started``) when a port is taken.
    """
    async with AsyncExitStack() as stack:
        sse = await _listen(stack, serve_sse(port=options.sse_port), options.sse_port, "--sse-port")
        ws = await _listen(stack, serve_ws(port=options.ws_port), options.ws_port, "--ws-port")
        rest = await _listen(
            stack, serve_rest(port=options.rest_port), options.rest_port, "--rest-port"
        )
        task_status.started(DemoEndpoints("127.0.0.1", sse.port, ws.port, rest.port))
        rng = random.Random(options.seed)
        total = options.steps or _DEFAULT_TOTAL_STEPS
        start = trio.current_time()
        step = 0
        ticks = 0
        restarted = stalled = False
        while options.steps == 0 or ticks < options.steps:
            step += 1
            ticks += 1
            if step == options.restart_at and not restarted:
                restarted, step = True, 1
            if step == options.stall_at and not stalled:
                stalled = True
                start += options.stall_for  # the hang: every later step comes that much later
            # the step clock: no drift, and a slow moment is caught up at once
            await trio.sleep_until(start + ticks / options.rate)
            for event, data in _step_records(step, rng, options, total):
                await _publish(sse, ws, rest, step, event, data)


def _step_records(
    step: int, rng: random.Random, options: DemoOptions, total: int
) -> list[tuple[str, dict[str, float | int]]]:
    metric = training_record(step, rng, total_steps=total)
    nan_until = options.nan_at + options.nan_for if options.nan_for else math.inf
    if options.nan_at and options.nan_at <= step < nan_until:
        metric["loss"] = math.nan
    records = [("metric", metric)]
    if options.eval_every and step % options.eval_every == 0:
        records.append(("eval", eval_record(step, rng)))
    return records


async def _publish(
    sse: FakeSseServer,
    ws: FakeWsServer,
    rest: FakeRestServer,
    step: int,
    event: str,
    data: dict[str, float | int],
) -> None:
    event_id = str(step) if event == "metric" else f"{step}-{event}"
    if any(isinstance(v, float) and not math.isfinite(v) for v in data.values()):
        # What a Python trainer's json.dumps writes: bare NaN / Infinity literals.
        text = json.dumps(data)
        await sse.publish(text, id=event_id, event=event)
        await rest.publish(text, id=event_id, event=event)
        await ws.publish(json.dumps({"id": event_id, "event": event, **data}))
        return
    await sse.publish(data, id=event_id, event=event)
    await rest.publish(data, id=event_id, event=event)
    await ws.publish({"id": event_id, "event": event, **data})


# -- the program ---------------------------------------------------------------


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def _stop_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _signum in signals:
        scope.cancel()
        return


async def _serve_then_cancel(
    options: DemoOptions,
    scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[DemoEndpoints] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve_demo(options, task_status=task_status)
    scope.cancel()


def run_serve_demo(options: DemoOptions) -> int:
    """``mux serve-demo``: serve until Ctrl-C / SIGTERM (exit 0); a taken port exits 2."""
    try:
        trio.run(_program, options)
    except KeyboardInterrupt:
        return 0
    except BaseException as exc:
        taken = [leaf for leaf in _leaves(exc) if isinstance(leaf, DemoPortInUse)]
        if not taken:
            raise
        print(taken[0], file=sys.stderr)
        return 2
    return 0


async def _program(options: DemoOptions) -> None:
    """Serve until a signal arrives or, with ``steps``, until the run is over."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, signals, nursery.cancel_scope)
            endpoints: DemoEndpoints = await nursery.start(
                _serve_then_cancel, options, nursery.cancel_scope
            )
            print(
                "mux demo: a simulated training run, serving\n"
                f"  SSE   {endpoints.sse_url}\n"
                f"  WS    {endpoints.ws_url}\n"
                f"  REST  {endpoints.rest_url}\n"
                "Ctrl-C to stop.",
                flush=True,
            )
