"""The ``[[sinks]] type = "web"`` options: where to listen, who may look, what to plot.

Importing this module costs nothing at run time (no trio, no sockets): every
``mux`` command loads the plugin, and ``mux check`` validates these options
(a non-loopback ``listen`` without a ``token`` is an error there, at the
table's line).
"""

from __future__ import annotations

import ipaddress
from typing import Any

import attrs

from mux_core.options import at_least_one, raise_problems, secret

__all__ = [
    "DEFAULT_PORT",
    "MIN_TOKEN_LENGTH",
    "WebOptions",
    "is_loopback",
    "parse_listen",
]

#: The port of ``listen`` when the config does not set it.
DEFAULT_PORT = 8765
#: A token shorter than this is refused: a viewer's browser is the only thing
#: between the run's data and the network.
MIN_TOKEN_LENGTH = 16
_TOKEN_HINT = (
    "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe())' "
    'and write it as token = "${MUX_WEB_TOKEN}"'
)


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8765"``, ``"[::1]:8765"``, ``"0.0.0.0:0"`` -> (host, port).

    Raises ValueError with the fix for anything else (a name other than
    ``localhost``, a missing or out-of-range port).
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f'listen must be "ADDRESS:PORT" (e.g. "127.0.0.1:8765"), got {text!r}')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f'listen: write an IPv6 address in brackets ("[::1]:8765"), got {text!r}')
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"listen: {host!r} is not an IP address: give the address of the interface"
                ' to listen on ("127.0.0.1", "0.0.0.0", "[::1]")'
            ) from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"listen: the port must be 0..65535 (0 = any free port), got {text!r}")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (as :func:`parse_listen` gives it) is reachable only from this machine."""
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def _listen(_instance: Any, _attribute: attrs.Attribute[Any], value: str) -> None:
    parse_listen(value)


def _names(_instance: Any, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    for name in value:
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ValueError(f"{attribute.name} entries must be names without spaces, got {name!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{attribute.name} lists a name twice: {value!r}")


def _token(_instance: Any, _attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    if len(value) < MIN_TOKEN_LENGTH or not value.isascii() or not value.isprintable():
        # The value itself is never shown: it is a secret.
        raise ValueError(
            f"token must be at least {MIN_TOKEN_LENGTH} printable ASCII characters; {_TOKEN_HINT}"
        )


def _non_empty(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f'{attribute.name} must name a data field (e.g. "step")')


def _time_field(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or value == "received_at":
        raise ValueError(f'{attribute.name} must name a data field (e.g. "ts"), got {value!r}')


@attrs.frozen(kw_only=True)
class WebOptions:
    """Options of the web sink."""

    #: The address and port to listen on, "ADDRESS:PORT": loopback by default
    #: (reach it from another machine through an ssh tunnel). Any other address
    #: needs a token.
    listen: str = attrs.field(default=f"127.0.0.1:{DEFAULT_PORT}", validator=_listen)
    #: The secret a viewer must present (opened once as http://HOST:PORT/?token=...,
    #: then kept in a cookie). Required off loopback; write it as "${VAR}".
    token: str | None = attrs.field(default=None, validator=_token, metadata=secret())
    #: Numeric fields of each event's data to plot, one plot per field and one
    #: line per source, e.g. ["loss", "lr"].
    fields: list[str] = attrs.field(factory=list, validator=_names)
    #: The x axis the plots start with, as the Qt panel's: the step field (a
    #: numeric data field such as "step"), "received_at" (the time mux received
    #: the event, shown as clock time), or the time_field (the time in the
    #: event itself). The page can switch between them; with "received_at" or
    #: the time_field the step field is "step".
    x: str = attrs.field(default="step", validator=_non_empty)
    #: A data field holding the time each event was made: epoch seconds (or
    #: milliseconds, microseconds, nanoseconds) or ISO 8601 text, e.g. "ts".
    #: The plots can then be drawn by it: a backlog received in one burst after
    #: a reconnect is drawn when it happened. Empty: none.
    time_field: str = attrs.field(default="", validator=_time_field)
    #: Fields whose plot starts with a logarithmic y axis, e.g. ["loss"].
    log_y: list[str] = attrs.field(factory=list, validator=_names)
    #: Events kept per source and event type for a browser that opens late (or
    #: reconnects): it gets them first, then the live ones. Statuses, alerts and
    #: quality records are kept besides (the newest 1,000 of each per source).
    points: int = attrs.field(default=10_000, validator=at_least_one("events"))
    #: Browsers (and relaying muxes) served at once; one more gets 503.
    max_viewers: int = attrs.field(default=64, validator=at_least_one("viewers"))
    #: Bytes waiting for one viewer before it counts as stalled and is
    #: disconnected (its browser reconnects and resumes): a slow viewer never
    #: slows a source or another sink.
    viewer_buffer: int = attrs.field(default=8 * 1024 * 1024, validator=at_least_one("bytes"))
    #: Host names (besides IP addresses and "localhost") the page may be reached
    #: by, e.g. ["mux.lab.example"] behind a reverse proxy. Any other Host header
    #: is refused: a web page elsewhere cannot rebind its name to this port.
    hosts: list[str] = attrs.field(factory=list, validator=_names)

    @classmethod
    def check(cls, options: WebOptions) -> None:
        """A non-loopback address without a token is refused by ``mux check``."""
        host, port = parse_listen(options.listen)
        problems: list[str | None] = []
        if options.token is None and not is_loopback(host):
            problems.append(
                f"token: listen = {options.listen!r} is reachable from other machines, so the"
                f" web view needs a token; {_TOKEN_HINT} (or listen on 127.0.0.1:{port or 8765}"
                " and use an ssh tunnel)"
            )
        raise_problems(problems)
