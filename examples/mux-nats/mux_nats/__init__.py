"""mux_nats: a ``nats`` transport -- core subscriptions and JetStream durable consumers.

The NATS client protocol is spoken by hand over trio (no client library):
``protocol.py`` parses and builds the protocol's lines, ``client.py`` is one
connection (handshake, keep-alive, errors as mux's states), ``jetstream.py``
the JetStream API (stream check, durable pull consumer, acks),
``delivered.py`` which messages the sinks have (a repeat is not emitted
again), and ``transport.py`` the options and the session mux runs.
"""

from mux_core import Register, hookimpl

from .transport import NatsOptions, NatsTransport

__all__ = ["NatsOptions", "NatsTransport", "mux_register_transports"]


@hookimpl
def mux_register_transports(register: Register) -> None:
    register("nats", NatsTransport)
