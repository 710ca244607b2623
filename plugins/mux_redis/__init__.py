"""mux_redis: Redis Streams -- the ``redis-stream`` sink and transport.

Collectors write every record to Redis streams (sink); other mux processes
read them back (transport), alone with ``XREAD`` or as a consumer group that
shares the work and takes over a dead member's entries. See
docs/deployment.md for N collectors -> Redis -> M consumers.

coredis comes with the ``mux[redis]`` extra. Without it this module raises
ImportError with the install hint, so ``mux plugins`` lists the plugin as
unavailable with that hint and a config using ``redis-stream`` fails
``mux check`` with it -- never a traceback.
"""

from __future__ import annotations

from mux_core.hookspecs import Register, hookimpl

from ._client import INSTALL_HINT, require_coredis

require_coredis()  # before anything else: the plugin is unavailable without its extra

from .sink import RedisStreamSink, RedisStreamSinkOptions  # noqa: E402
from .transport import RedisStreamOptions, RedisStreamTransport  # noqa: E402

__all__ = [
    "INSTALL_HINT",
    "RedisStreamOptions",
    "RedisStreamSink",
    "RedisStreamSinkOptions",
    "RedisStreamTransport",
    "mux_register_sinks",
    "mux_register_transports",
]


@hookimpl
def mux_register_sinks(register: Register) -> None:
    """Provide ``type = "redis-stream"``."""
    register("redis-stream", RedisStreamSink)


@hookimpl
def mux_register_transports(register: Register) -> None:
    """Provide ``transport = "redis-stream"``."""
    register("redis-stream", RedisStreamTransport)
