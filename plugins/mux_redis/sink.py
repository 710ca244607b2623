"""The ``redis-stream`` sink: every record as one stream entry in Redis.

Each entry has one field, ``record``: the record's JSON Lines object, byte
for byte the line the file sink writes, without the trailing newline
(:func:`mux_core.records.decode_jsonl` reads it back; so does
``redis-cli XRANGE``). The key comes from the ``stream`` template
(``mux:{source}`` by default: one stream per source). For a fleet,
``stream = "mux:{bucket}"`` with ``buckets = N`` spreads the sources over N
streams: a source's bucket is ``crc32(name as UTF-8) mod N``, the function
``--shard`` uses, so a source always lands in the same stream and its
records keep their order there; consumers then read N streams however many
sources there are (docs/deployment.md, Stream layouts).

A batch is appended in one round trip: one ``EVAL`` per stream key of a
short Lua script that runs ``XADD key MAXLEN ~ maxlen * record LINE`` for
each line of that key (several keys: those EVALs in one pipeline). One
``XADD`` per record through coredis costs ~12 µs of client CPU each, a
quarter of the target rate; the script costs the client one command per
batch (see benchmarks/bench_redis.py for both, measured). Two appends start
at least ``min_interval`` (10 ms) apart: a fleet's sources trickle in an
event at a time, and appending each alone costs Redis a command and every
blocked consumer a wake-up per event (benchmarks/bench_redis_fleet.py).

While Redis is unreachable the sink retries with the run's ``[retry]``
policy (logged as it goes); ``write`` does not return meanwhile, so the
sink's channel fills and its overflow policy applies (``block``, the
default: sources wait and nothing is lost; ``drop_*``: drops are counted).
A batch is *acknowledged* -- ``write`` returns -- only once Redis answered
the append: nothing acknowledged is lost (as far as Redis keeps it: see its
persistence settings). A retried append whose first try reached Redis
before the connection broke appears twice: duplicates are recognised by
``(source, seq)``. With ``retry.max_attempts`` the sink gives up after
that many failures in a row and fails per ``on_error``.

The coredis client lives in a background task of its own (it holds an
anyio task group, which must not span the engine's calls); ``write`` hands
it each batch and waits for the answer.
"""

from __future__ import annotations

import logging
import math
import operator
import string
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from mux_core import Sink
from mux_core.options import non_negative, positive, raise_problems
from mux_core.records import Batch, EncodedBatch, encode_jsonl
from mux_core.sink import SinkContext

from ._client import (
    RedisTarget,
    bucket_of,
    bucket_problem,
    command,
    describe_error,
    make_client,
    new_event,
    parse_url,
    queue,
    retryable,
    url_problem,
)

# trio is imported by the methods that use it: loading the plugin (every mux
# command does) does not pay for it.
if TYPE_CHECKING:
    import trio

__all__ = ["RedisStreamSink", "RedisStreamSinkOptions"]

_log = logging.getLogger("mux.redis")

#: Records per EVAL: bounds one command's size and how long the script holds Redis.
_CHUNK = 10_000

_APPEND = b"""
local maxlen = tonumber(ARGV[1])
for i = 2, #ARGV do
  if maxlen > 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'record', ARGV[i])
  else
    redis.call('XADD', KEYS[1], '*', 'record', ARGV[i])
  end
end
return #ARGV - 1
"""

#: The same for several streams in one command (KEYS: the streams; ARGV: maxlen,
#: then how many lines each stream gets, then the lines, stream after stream).
_APPEND_MANY = b"""
local maxlen = tonumber(ARGV[1])
local at = #KEYS + 2
for k = 1, #KEYS do
  local last = at + tonumber(ARGV[k + 1]) - 1
  for i = at, last do
    if maxlen > 0 then
      redis.call('XADD', KEYS[k], 'MAXLEN', '~', maxlen, '*', 'record', ARGV[i])
    else
      redis.call('XADD', KEYS[k], '*', 'record', ARGV[i])
    end
  end
  at = last + 1
end
return at - #KEYS - 2
"""

_FIELDS = frozenset({"source", "transport", "bucket"})
_origin = operator.attrgetter("source", "transport")


def template_fields(value: str) -> set[str]:
    """The ``{names}`` a stream template uses; ValueError when it is not a template."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid template: {exc}") from None


def _template(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value:
        raise ValueError(f'{attribute.name} must not be empty (e.g. "mux:{{source}}")')
    try:
        names = template_fields(value)
    except ValueError as exc:
        raise ValueError(f"{attribute.name} {exc}") from None
    unknown = names - _FIELDS
    if unknown:
        raise ValueError(
            f"{attribute.name} {value!r} uses {{{sorted(unknown)[0]}}}; "
            "only {source}, {transport} and {bucket} are known"
        )


@attrs.frozen(kw_only=True)
class RedisStreamSinkOptions:
    """The keys of a ``[[sinks]] type = "redis-stream"`` table."""

    #: ``redis://[:password@]host:6379/0``; ``rediss://`` for TLS;
    #: ``redis+cluster://host:port`` for a Redis Cluster. A password may come
    #: from the environment (``redis://:${REDIS_PASSWORD}@host``): masked by ``mux check``.
    url: str = "redis://127.0.0.1:6379/0"
    #: The stream key of each record: a template of ``{source}``, ``{transport}`` and
    #: ``{bucket}`` (one stream per source by default; ``"mux:{bucket}"`` with ``buckets``
    #: for a fleet; a constant puts every record in one stream).
    stream: str = attrs.field(default="mux:{source}", validator=_template)
    #: With ``{bucket}`` in ``stream``: how many streams the sources are spread over
    #: (a source's bucket is crc32 of its name mod buckets, so it always lands in the
    #: same stream). 0 = no buckets.
    buckets: int = attrs.field(default=0, validator=non_negative(note="0 = no buckets"))
    #: Approximate trimming: each stream keeps about this many entries (``MAXLEN ~``);
    #: 0 = keep all. With buckets it caps all the sources of a bucket together.
    maxlen: int = attrs.field(default=1_000_000, validator=non_negative(note="0 = keep all"))
    #: Treat the url as a Redis Cluster seed (as ``redis+cluster://`` does).
    cluster: bool = False
    #: A PEM file of the CAs to trust for a ``rediss://`` server instead of the
    #: system's trust store (a private CA, a self-signed server's certificate).
    ca_file: str | None = None
    #: Check a ``rediss://`` server's certificate; false checks nothing (mux warns
    #: at check and at start).
    verify: bool = True
    #: Seconds to connect, and to wait for Redis to answer one append.
    timeout: float = attrs.field(default=10.0, validator=positive("seconds"))
    #: Seconds between the starts of two appends, at least: records that arrive
    #: meanwhile go in the next one. Sources trickling in (a fleet: thousands of
    #: sources, an event each now and then) are appended a few dozen at a time
    #: instead of one by one -- fewer commands for Redis, and fewer wake-ups for
    #: every consumer. 0 = append as soon as the last append returned.
    min_interval: float = attrs.field(default=0.01, validator=non_negative("seconds"))

    @classmethod
    def check(cls, options: RedisStreamSinkOptions) -> None:
        """A bad URL or CA file, or buckets without ``{bucket}``, is found before any I/O."""
        from mux_core.http import tls_problem

        raise_problems(
            [
                url_problem(options.url, cluster=options.cluster),
                tls_problem(verify=options.verify, ca_file=options.ca_file),
                bucket_problem(
                    "stream", "bucket" in template_fields(options.stream), options.buckets
                ),
            ]
        )


@attrs.define(eq=False)
class _Append:
    """One batch, grouped by stream key, waiting for Redis."""

    groups: dict[str, list[bytes]]
    done: trio.Event = attrs.field(factory=new_event)
    error: BaseException | None = None


class RedisStreamSink(Sink):
    """Append every record to a Redis stream (see the module docstring)."""

    Options = RedisStreamSinkOptions
    default_overflow: ClassVar[str] = "block"
    default_on_error: ClassVar[str] = "stop"

    def __init__(self, options: RedisStreamSinkOptions, context: SinkContext) -> None:
        import trio

        self.options = options
        self.context = context
        self._target: RedisTarget = parse_url(options.url, cluster=options.cluster)
        self._keys: dict[tuple[str, str], str] = {}
        self._send, self._receive = trio.open_memory_channel[_Append](0)
        self._worker_done = trio.Event()
        #: Appends that reached Redis, and records in them (for tests and logs).
        self.appended = 0
        self.failures = 0
        self._next_append = -math.inf

    async def open(self) -> None:
        from mux_core.http import tls_context, warn_unverified

        if not self.options.verify:
            warn_unverified(f"sink {self.context.name!r}")
        if self._target.tls:  # a CA file that holds no certificate fails the sink here, in words
            tls_context(verify=self.options.verify, ca_file=self.options.ca_file)
        self.context.start_background(self._serve)

    async def write(self, batch: Batch) -> None:
        if not batch:
            return
        lines = encode_jsonl(batch).split(b"\n")
        lines.pop()  # after the last newline
        runs = batch.runs if type(batch) is EncodedBatch else ()
        groups: dict[str, list[bytes]]
        if runs:  # records that came as bytes (--workers): grouped without decoding them
            groups = {}
            at = 0
            for source, transport, count in runs:
                groups.setdefault(self._key(source, transport), []).extend(lines[at : at + count])
                at += count
        elif len(origins := set(map(_origin, batch))) == 1:
            # a source's own batch: one key (the loop costs ~0.2 µs a record)
            groups = {self._key(*origins.pop()): lines}
        else:  # a relay's batch, or a run's mixed one
            groups = {}
            for record, line in zip(batch, lines, strict=True):
                key = self._key(record.source, record.transport)
                group = groups.get(key)
                if group is None:
                    groups[key] = [line]
                else:
                    group.append(line)
        await self._hand_over(_Append(groups))

    async def _hand_over(self, job: _Append) -> None:
        if self.options.min_interval:
            import trio

            now = trio.current_time()
            if now < self._next_append:
                await trio.sleep_until(self._next_append)
                now = trio.current_time()
            self._next_append = now + self.options.min_interval
        await self._send.send(job)
        await job.done.wait()
        if job.error is not None:
            raise job.error

    def _key(self, source: str, transport: str) -> str:
        key = self._keys.get((source, transport))
        if key is None:
            buckets = self.options.buckets
            key = self._keys[source, transport] = self.options.stream.format(
                source=source,
                transport=transport,
                bucket=bucket_of(source, buckets) if buckets else 0,
            )
        return key

    async def aclose(self) -> None:
        import trio

        await self._send.aclose()
        with trio.CancelScope(shield=True):
            await self._worker_done.wait()

    # -- the worker: owns the client, retries ------------------------------

    async def _serve(self) -> None:
        import trio

        job: _Append | None = None
        failures = 0
        policy = self.context.retry
        try:
            while True:
                try:
                    async with self._client() as client:
                        while True:
                            if job is None:
                                try:
                                    job = await self._receive.receive()
                                except trio.EndOfChannel:
                                    return
                            await self._append(client, job.groups)
                            if failures:
                                _log.warning(
                                    "sink %r: Redis is back; appended after %d failed attempts",
                                    self.context.name,
                                    failures,
                                )
                                failures = 0
                            job.done.set()
                            job = None
                except Exception as exc:
                    if not retryable(exc):
                        if job is None:
                            raise
                        job.error = RuntimeError(f"Redis refused the append: {describe_error(exc)}")
                        job.done.set()
                        job = None
                        continue
                    failures += 1
                    self.failures += 1
                    detail = describe_error(exc)
                    if policy.gives_up(failures):
                        error = ConnectionError(
                            f"Redis at {self._where()} unavailable after {failures} attempts "
                            f"in a row: {detail}"
                        )
                        if job is None:
                            raise error from None
                        job.error = error
                        job.done.set()
                        job = None
                        failures = 0
                        continue
                    delay = policy.delay(failures)
                    _log.warning(
                        "sink %r: Redis at %s unavailable (%s); retry %d in %.1f s%s",
                        self.context.name,
                        self._where(),
                        detail,
                        failures,
                        delay,
                        " (the records wait; overflow policy applies)" if job else "",
                    )
                    await trio.sleep(delay)
        finally:
            self._worker_done.set()

    def _client(self) -> Any:
        return make_client(
            self._target,
            ca_file=self.options.ca_file,
            verify=self.options.verify,
            timeout=self.options.timeout,
            name=f"mux-sink:{self.context.name}",
        )

    def _where(self) -> str:
        return f"{self._target.host}:{self._target.port}"

    async def _append(self, client: Any, groups: dict[str, list[bytes]]) -> None:
        import trio
        from coredis.typing import Key

        maxlen = self.options.maxlen
        calls = [
            (key, lines[start : start + _CHUNK])
            for key, lines in groups.items()
            for start in range(0, len(lines), _CHUNK)
        ]
        total = sum(len(lines) for _, lines in calls)
        with trio.fail_after(self.options.timeout):
            if len(calls) == 1:
                key, lines = calls[0]
                await command(client, b"EVAL", _APPEND, 1, Key(key), maxlen, *lines)
            elif total <= _CHUNK and not self._target.cluster:
                # Several streams (buckets: sources trickling in), one command; a
                # pipeline of one EVAL per stream cost the client 10-25% more.
                await command(
                    client,
                    b"EVAL",
                    _APPEND_MANY,
                    len(calls),
                    *[Key(key) for key, _ in calls],
                    maxlen,
                    *[len(lines) for _, lines in calls],
                    *[line for _, lines in calls for line in lines],
                )
            else:  # a cluster's streams may live on different nodes
                async with client.pipeline(transaction=False) as pipeline:
                    for key, lines in calls:
                        queue(pipeline, b"EVAL", _APPEND, 1, Key(key), maxlen, *lines)
        self.appended += total
