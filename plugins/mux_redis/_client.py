"""What the redis-stream sink and transport share: URLs, clients, errors.

This module imports without coredis (``mux check`` and ``mux plugins`` name
the missing extra instead of failing); :func:`make_client` imports it.

URLs::

    redis://[[user]:password@]host[:port][/db]      plain TCP (port 6379, db 0)
    rediss://...                                     TLS (verified as every TLS client; ``ca_file``)
    redis+cluster://host:port  (or ``cluster = true``) a Redis Cluster, any node as the seed
    rediss+cluster://...                             a Redis Cluster over TLS

Commands go out as raw requests (``create_request`` with a callback that
returns the reply as parsed): coredis's typed wrappers cost about 12 µs per
command and build an object per stream entry, a tenth of the records/s
this path needs (benchmarks/bench_redis.py).
"""

from __future__ import annotations

import importlib.util
import re
import zlib
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import attrs

# trio is imported where a run uses it: loading the plugin (every mux command
# does) does not pay for it.
if TYPE_CHECKING:
    import trio

__all__ = [
    "INSTALL_HINT",
    "RedisTarget",
    "bucket_of",
    "bucket_problem",
    "client_name",
    "command",
    "describe_error",
    "make_client",
    "missing_coredis",
    "new_event",
    "parse_url",
    "queue",
    "require_coredis",
    "retryable",
]

INSTALL_HINT = "coredis is not installed; install the Redis plugin with: pip install 'mux[redis]'"

_NOT_IN_NAME = re.compile(r"[^!-~]")

_SCHEMES = {
    "redis": (False, False),
    "rediss": (True, False),
    "redis+cluster": (False, True),
    "rediss+cluster": (True, True),
}


def new_event() -> trio.Event:
    """A new ``trio.Event``: the factory of an attrs field, made when a run needs one."""
    import trio

    return trio.Event()


def missing_coredis() -> str | None:
    """The install hint when coredis cannot be imported, else None."""
    return INSTALL_HINT if importlib.util.find_spec("coredis") is None else None


def require_coredis() -> None:
    """Raise ImportError with the install hint unless coredis is installed."""
    hint = missing_coredis()
    if hint is not None:
        raise ImportError(hint)


@attrs.frozen
class RedisTarget:
    """A parsed Redis URL."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool
    cluster: bool


def bucket_of(source: str, buckets: int) -> int:
    """The bucket (0 .. buckets-1) of a source: crc32 of its name as UTF-8, mod ``buckets``.

    The function ``--shard`` uses (``mux_core._config.shard``): fixed by its
    standard, the same on every machine and run.
    """
    return zlib.crc32(source.encode("utf-8")) % buckets


def bucket_problem(key: str, uses: bool, buckets: int) -> str | None:
    """Why ``{bucket}`` (``uses``: whether ``key`` has it) and ``buckets`` disagree, or None."""
    if uses and not buckets:
        return f"{key} uses {{bucket}}: set buckets = N too, the number of streams (e.g. 16)"
    if buckets and not uses:
        return f'buckets = {buckets} needs {{bucket}} in {key} (e.g. "mux:{{bucket}}")'
    return None


def url_problem(url: str, *, cluster: bool = False) -> str | None:
    """Why :func:`parse_url` refuses ``url``, or None (for ``check()``)."""
    try:
        parse_url(url, cluster=cluster)
    except ValueError as exc:
        return str(exc)
    return None


def parse_url(url: str, *, cluster: bool = False) -> RedisTarget:
    """Parse a ``redis://`` / ``rediss://`` / ``redis+cluster://`` URL; ValueError says why not."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"url {url!r} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError(
            f"url {url!r}: the scheme must be redis://, rediss:// (TLS) or redis+cluster://"
        )
    tls, in_cluster = _SCHEMES[scheme]
    if not parts.hostname:
        raise ValueError(f"url {url!r} names no host (redis://HOST:6379/0)")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"url {url!r}: the path must be a database number (/0), not /{path}")
    db = int(path) if path else 0
    if db and (cluster or in_cluster):
        raise ValueError(f"url {url!r}: Redis Cluster has only database 0")
    return RedisTarget(
        host=parts.hostname,
        port=port or 6379,
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=tls,
        cluster=cluster or in_cluster,
    )


def make_client(
    target: RedisTarget,
    *,
    ca_file: str | None,
    verify: bool,
    timeout: float,
    name: str | None = None,
) -> Any:
    """A coredis client for ``target`` (enter it with ``async with``; it connects lazily).

    ``rediss://`` follows mux's one TLS policy (:func:`mux_core.http.tls_context`:
    the system's trust store, or ``ca_file``; ``verify = false`` checks
    nothing); a ``ca_file`` that holds no certificate raises ``ValueError``
    with the reason.

    coredis's own retries are off: the sink and the supervisor retry with
    mux's one policy, and a retried command could run twice. ``name`` is
    the connections' ``CLIENT SETNAME`` (``redis-cli CLIENT LIST`` shows
    which mux sink or source a connection is); coredis sets none on a
    cluster.
    """
    import coredis
    from coredis.connection import TCPLocation
    from coredis.retry import NoRetryPolicy

    common: dict[str, Any] = {
        "username": target.username,
        "password": target.password,
        "connect_timeout": timeout,
        "retry_policy": NoRetryPolicy(),
    }
    if target.tls:
        from mux_core.http import tls_context

        common["ssl_context"] = tls_context(verify=verify, ca_file=ca_file)
    if target.cluster:
        return coredis.RedisCluster(startup_nodes=[TCPLocation(target.host, target.port)], **common)
    if name is not None:
        common["client_name"] = client_name(name)
    return coredis.Redis(host=target.host, port=target.port, db=target.db, **common)


def client_name(name: str) -> str:
    """``name`` as Redis takes a client name: no spaces or control characters."""
    return _NOT_IN_NAME.sub("_", name)


def _reply(response: Any, **_: Any) -> Any:
    return response


async def command(client: Any, name: bytes, *arguments: Any) -> Any:
    """Send one command and return its reply as parsed (RESP3: maps are dicts)."""
    return await client.execute_command(client.create_request(name, *arguments, callback=_reply))


def queue(pipeline: Any, name: bytes, *arguments: Any) -> Any:
    """Add one raw command to a coredis pipeline; await the result once it has run."""
    return pipeline.create_request(name, *arguments, callback=_reply)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) groups, causes first searched last."""
    found: list[BaseException] = []
    pending = [exc]
    while pending and len(found) < 32:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            found.append(error)
    return found


def _redis_error(exc: BaseException) -> BaseException | None:
    """The coredis error (or OSError) a failure comes down to, if any."""
    import coredis.exceptions as errors

    leaves = _leaves(exc)
    for error in leaves:
        if isinstance(error, errors.RedisError | OSError | TimeoutError):
            return error
    for error in leaves:
        cause = error.__cause__ or error.__context__
        if cause is not None and isinstance(cause, errors.RedisError | OSError):
            return cause
    return None


def retryable(exc: BaseException) -> bool:
    """True when ``exc`` means "Redis is not reachable right now": try again later.

    Refused, reset, timed out, loading its data set, a cluster reconfiguring.
    Authentication failures, wrong key types and script errors are not.
    """
    import coredis.exceptions as errors
    import trio

    if any(isinstance(leaf, trio.TooSlowError) for leaf in _leaves(exc)):
        return True
    error = _redis_error(exc)
    if error is None:
        return False
    if isinstance(error, errors.AuthenticationError | errors.AuthorizationError):
        return False
    if isinstance(error, OSError | TimeoutError | errors.ConnectionError):
        return True
    return isinstance(error, errors.ClusterDownError | errors.TryAgainError) or (
        "LOADING" in str(error) or "MASTERDOWN" in str(error)
    )


def describe_error(exc: BaseException) -> str:
    """A few words for a Redis failure ("connection refused", "NOAUTH ...")."""
    import trio

    from mux_core.errors import describe_connection_error

    if any(isinstance(leaf, trio.TooSlowError) for leaf in _leaves(exc)):
        return "Redis did not answer in time"
    error = _redis_error(exc) or exc
    words = describe_connection_error(error)
    if words:
        return words
    text = str(error) or type(error).__name__
    if "Unable to establish a connection" in text:
        cause = error.__cause__ or error.__context__
        deeper = describe_connection_error(cause) if cause is not None else None
        return deeper or text
    return text
