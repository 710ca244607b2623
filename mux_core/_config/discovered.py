"""Tables a discoverer found: data, held to what their ``[[discovery]]`` table allows.

The config file and its author are trusted; a discovery answer or an
endpoint file is not (docs/security.md). So a discovered table is never
read like config text -- no ``${VAR}`` is expanded in it -- and before it
is validated like a ``[[sources]]`` table, :func:`screen` holds it to its
``[[discovery]]`` table's :class:`~mux_core._config.records.DiscoveryPolicy`:

- its name is printable and at most 200 characters (``name_problem``);
- it sets only ``name``, ``transport``, ``retry`` and ``allow_options``;
- its transport is one of ``allow_transports``;
- every URL in it names a host of ``allow_hosts`` and carries no credentials;
- it asks for ``verify = false`` only with ``allow_insecure``.

What passes gets the policy's ``defaults`` underneath (the config author's
headers, credentials, ...: :func:`with_defaults`), and its ``retry`` is
clamped to the config's (:func:`clamp_retry`): a discovered source may
retry more slowly than the config says, never faster. At most
``max_sources`` are kept; the tables after that are not even validated.
:func:`policy_problems` checks a policy itself when the config is loaded.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Collection, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs

from .._plugins import PluginManager, Provided
from ..errors import ConfigError
from ..options import is_secret
from ..retry import RetryPolicy
from .loader import Loader
from .positions import KeyPath, line_of
from .records import DiscoveryPolicy, SourceConfig, name_problem
from .render import _format_key, _url_password, mask, secret_texts

__all__ = [
    "Discovered",
    "Problem",
    "clamp_retry",
    "load_discovered",
    "policy_problems",
    "policy_secrets",
    "screen",
    "url_secrets",
    "with_defaults",
]

#: Keys a discovered table may always set (``transport`` within allow_transports,
#: ``retry`` clamped to the config's).
ALWAYS_ALLOWED = ("name", "transport", "retry")
#: Keys of a source table that are not a transport's options.
_SOURCE_KEYS = ("name", "transport", "retry", "lag_field", "stale_after")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
#: A host as mux accepts it from a discovered URL: a DNS name or an IPv4 address,
#: or an IPv6 address (urlsplit has taken its brackets off). Anything else --
#: percent-escapes, backslashes, non-ASCII -- is refused, not interpreted.
_PLAIN_HOST = re.compile(r"[a-z0-9_.-]+|[0-9a-f:.]+")


@attrs.frozen
class Problem:
    """Why one discovered table was left out."""

    #: What kind of problem, for the summary: "name", "option", "transport",
    #: "host", "credentials", "insecure" (the policy's), "invalid" (its values).
    kind: str
    error: ConfigError


@attrs.frozen
class Discovered:
    """The tables of one document, validated."""

    sources: list[SourceConfig]
    problems: list[Problem]
    #: Tables not looked at: ``limit`` sources were kept before them.
    unread: int


def load_discovered(
    tables: list[dict[str, Any]],
    *,
    origin: str,
    policy: DiscoveryPolicy,
    retry: RetryPolicy,
    plugins: PluginManager,
    lines: Mapping[KeyPath, int],
    limit: int,
    secrets: Collection[str] = (),
) -> Discovered:
    """Screen and validate the tables of one document, keeping at most ``limit`` sources.

    ``retry`` is the config's ``[retry]``; the policy's ``defaults.retry``
    goes over it, and the result is the floor of every source's retry.
    ``secrets`` (the config's) are masked in the problems.
    """
    base = attrs.evolve(retry, **policy.defaults.get("retry", {}))
    base_raw = attrs.asdict(base, recurse=False)
    sources: list[SourceConfig] = []
    problems: list[Problem] = []
    for index, table in enumerate(tables):
        if len(sources) >= limit:
            return Discovered(sources, problems, len(tables) - index)
        refused = screen(table, policy)
        if refused is not None:
            kind, key, message = refused
            path = ("sources", index, *key)
            error = ConfigError(
                mask(message, secrets),
                file=origin,
                line=line_of(lines, path),
                key=_format_key(path),
            )
            problems.append(Problem(kind, error))
            continue
        merged = with_defaults(table, policy.defaults)
        found, errors = _validate(merged, index, origin, plugins, lines, base_raw, secrets)
        if errors:
            problems.append(Problem("invalid", errors[0]))
            continue
        sources += [attrs.evolve(s, retry=clamp_retry(s.retry, base)) for s in found]
    return Discovered(sources, problems, 0)


def _validate(
    table: dict[str, Any],
    index: int,
    origin: str,
    plugins: PluginManager,
    lines: Mapping[KeyPath, int],
    retry_raw: dict[str, Any],
    secrets: Collection[str],
) -> tuple[list[SourceConfig], list[ConfigError]]:
    """``table`` validated as a ``[[sources]]`` table -- alone, as ``sources[index]``."""
    own = {
        ("sources", 0, *path[2:]): line
        for path, line in lines.items()
        if path[:2] == ("sources", index)
    }
    loader = Loader("", origin, plugins, {})  # no environment: nothing is substituted
    sources, errors = loader.load_table(table, own, retry_raw)
    return sources, [
        ConfigError(
            mask(error.message, secrets),
            file=error.file,
            line=error.line,
            key=_reindex(error.key, index),
        )
        for error in errors
    ]


def _reindex(key: str, index: int) -> str:
    return f"sources[{index}]{key[len('sources[0]') :]}" if key.startswith("sources[0]") else key


def screen(table: Mapping[str, Any], policy: DiscoveryPolicy) -> tuple[str, KeyPath, str] | None:
    """``(kind, key, why)`` when ``policy`` refuses ``table``, else None (see the module)."""
    name = table.get("name")
    if isinstance(name, str):
        problem = name_problem(name)
        if problem is not None:
            return "name", ("name",), f"the source name {_shown(name)} {problem}"
    allowed = {*ALWAYS_ALLOWED, *policy.allow_options}
    for key in table:
        if key not in allowed:
            return (
                "option",
                (key,),
                f"a discovered source may not set {_shown(key)} (allow_options: "
                f"{_listed(policy.allow_options)}); give it to every discovered source in the "
                "[[discovery]] table's defaults, or add it to allow_options",
            )
    transport = table.get("transport", policy.defaults.get("transport"))
    if isinstance(transport, str) and transport not in policy.allow_transports:
        return (
            "transport",
            ("transport",),
            f"transport {_shown(transport)} is not in allow_transports "
            f"{_listed(policy.allow_transports)}; add it there to accept it",
        )
    for key, value in table.items():
        if key == "name":
            continue
        for url in _urls(value):
            refused = _url_problem(url, policy)
            if refused is not None:
                return refused[0], (key,), refused[1]
    if table.get("verify") is False and not policy.allow_insecure:
        return (
            "insecure",
            ("verify",),
            "verify = false (no TLS certificate check) is accepted from a discovered source "
            "only with allow_insecure = true in the [[discovery]] table",
        )
    return None


def _url_problem(url: str, policy: DiscoveryPolicy) -> tuple[str, str] | None:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        credentials = parts.username is not None or parts.password is not None
    except ValueError:
        return "invalid", "not a valid URL"
    if credentials:
        return (
            "credentials",
            "a discovered URL may not carry credentials (user:password@); give them to "
            "every discovered source in the [[discovery]] table's defaults (headers)",
        )
    if not _PLAIN_HOST.fullmatch(host):
        return "host", f"the host {_shown(host)} is not a plain host name or address"
    if not any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in policy.allow_hosts):
        return (
            "host",
            f"the host {_shown(host)} is not in allow_hosts {_listed(policy.allow_hosts)}; "
            'add it (or a glob such as "*.example.internal") there to accept it',
        )
    return None


def _urls(value: Any) -> Iterator[str]:
    """Every string in ``value`` (arrays and tables searched) that starts like a URL."""
    if isinstance(value, str):
        if _URL.match(value):
            yield value
    elif isinstance(value, list):
        for item in value:
            yield from _urls(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _urls(item)


def with_defaults(table: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``table`` over ``defaults`` (their ``retry`` aside: it is the floor); a table value
    of both (``headers``) is merged one level deep, the discovered keys winning."""
    merged = {key: value for key, value in defaults.items() if key != "retry"}
    for key, value in table.items():
        base = merged.get(key)
        if isinstance(base, dict) and isinstance(value, dict):
            merged[key] = {**base, **value}
        else:
            merged[key] = value
    return merged


def clamp_retry(asked: RetryPolicy, floor: RetryPolicy) -> RetryPolicy:
    """``asked`` never more eager than ``floor``: each wait at least the floor's,
    an attempt no longer, and no more attempts in a row than it allows."""
    attempts = asked.max_attempts
    if floor.max_attempts and not 0 < attempts <= floor.max_attempts:
        attempts = floor.max_attempts
    return attrs.evolve(
        asked,
        initial_delay=max(asked.initial_delay, floor.initial_delay),
        max_delay=max(asked.max_delay, floor.max_delay),
        min_delay=max(asked.min_delay, floor.min_delay),
        multiplier=max(asked.multiplier, floor.multiplier),
        reset_after=max(asked.reset_after, floor.reset_after),
        connect_timeout=min(asked.connect_timeout, floor.connect_timeout),
        max_attempts=attempts,
    )


def policy_problems(
    policy: DiscoveryPolicy, given: Collection[str], transports: Mapping[str, Provided]
) -> Iterator[tuple[KeyPath, str]]:
    """``(key, why)`` for each problem of a policy as written (``given``: its keys
    the table wrote); ``defaults.retry`` is checked by the loader."""
    for index, name in enumerate(policy.allow_transports):
        if name not in transports:
            yield ("allow_transports", index), _unknown("transport", name, transports)
    for index, pattern in enumerate(policy.allow_hosts):
        if not pattern or "/" in pattern or "@" in pattern:
            yield (
                ("allow_hosts", index),
                (
                    f'expected a host name, an address or a glob ("*.example.internal"), '
                    f"got {_shown(pattern)}"
                ),
            )
    options = _options_of(policy, transports)
    if "allow_options" in given:
        for index, key in enumerate(policy.allow_options):
            if key not in options and key not in ALWAYS_ALLOWED:
                yield ("allow_options", index), _no_option(key, policy, options)
    for key, value in policy.defaults.items():
        if key == "name":
            yield ("defaults", "name"), "each discovered source brings its own name; remove it"
        elif key == "transport":
            if not isinstance(value, str) or value not in policy.allow_transports:
                yield (
                    ("defaults", "transport"),
                    (
                        f"expected one of allow_transports {_listed(policy.allow_transports)}, "
                        f"got {_shown(value)}"
                    ),
                )
        elif key != "retry" and key not in options:
            yield ("defaults", key), _no_option(key, policy, options)
    if "retry" in policy.defaults and not isinstance(policy.defaults["retry"], dict):
        yield ("defaults", "retry"), "expected a table of [retry] keys"


def policy_secrets(policy: DiscoveryPolicy, transports: Mapping[str, Provided]) -> Iterator[str]:
    """The secrets in ``defaults``: values of the keys that are secret options of an
    allowed transport (``headers``, a ``password``, ...), and URL passwords."""
    secret_keys = {
        field.name
        for name in policy.allow_transports
        if name in transports
        for field in _fields(transports[name])
        if is_secret(field)
    }
    for key, value in policy.defaults.items():
        if key in secret_keys:
            yield from secret_texts(value)
        for text in _urls(value):
            password = _url_password(text)
            if password:
                yield password


def url_secrets(options: Any) -> Iterator[str]:
    """The query values of the URLs a discoverer's options hold (``?token=...``): a
    discovery endpoint's query is where its credentials go, so they are masked
    wherever the URL is shown (its password is, anyway)."""
    if options is None or not attrs.has(type(options)):
        return
    for field in attrs.fields(type(options)):
        for url in _urls(getattr(options, field.name)):
            try:
                query = urlsplit(url).query
            except ValueError:
                continue
            for _key, value in parse_qsl(query, keep_blank_values=False):
                yield value


def _fields(provided: Provided) -> tuple[attrs.Attribute[Any], ...]:
    options = getattr(provided.cls, "Options", None)
    return attrs.fields(options) if options is not None and attrs.has(options) else ()


def _options_of(policy: DiscoveryPolicy, transports: Mapping[str, Provided]) -> set[str]:
    """The keys a source of an allowed transport may have (``lag_field`` and
    ``stale_after`` too)."""
    found = {"lag_field", "stale_after"}
    for name in policy.allow_transports:
        if name in transports:
            found.update(field.name for field in _fields(transports[name]))
    return found


def _no_option(key: str, policy: DiscoveryPolicy, options: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(options), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (
        f"no transport of allow_transports {_listed(policy.allow_transports)} has "
        f"an option {_shown(key)}{hint}"
    )


def _unknown(kind: str, name: str, available: Mapping[str, Provided]) -> str:
    close = difflib.get_close_matches(name, list(available), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    installed = ", ".join(repr(n) for n in sorted(available)) or "none"
    return f"unknown {kind} {_shown(name)}; {hint}installed: {installed}"


def _listed(names: list[str]) -> str:
    return "[" + ", ".join(_shown(name) for name in names) + "]"


def _shown(value: Any) -> str:
    """A value from a discovered table, quoted, escaped and cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
