"""The ``redis-stream`` transport: read what other mux processes wrote to Redis.

A relay: each stream entry's ``record`` field (the JSON Lines object the
``redis-stream`` sink writes) becomes the original record again -- source,
transport, event, id, data, received_at and seq as the collector had them --
and is handed to the sinks with :meth:`Session.relay`. This source's own
connection states are reported under its own name.

Streams are ``streams`` keys (``"mux:{bucket}"`` with ``buckets = N``
names the sink's N bucket streams), or glob patterns found with ``SCAN ...
TYPE stream`` and re-scanned every ``scan_interval`` seconds (new
collectors, new sources appear by themselves).

A read costs what is new, not what is known (``_reads.py``): streams that
gave entries lately are named in every read, quiet ones are checked a slice
at a time, one command names at most 1,000 streams, and rounds are paced to
about 20,000 stream checks a second. With a few dozen bucket streams each
round is one blocking read.

Two modes:

plain (no ``group``)
    ``XREAD`` from the last entry id read of each stream. The ids are the
    source's resume cursor, ``{"stream key": "entry id"}`` (plain strings,
    so ``mux run --state DIR`` saves it: a reconnect, and a restarted mux,
    go on where they stopped). Every consumer reads everything.

consumer group (``group`` and ``consumer``)
    ``XREADGROUP``: the group's members share the entries. An entry is
    acknowledged (``XACK``) only after every sink of this process wrote it
    (:meth:`Session.delivered`), so an entry acknowledged is never only in
    a dead process's memory. The group is joined once per stream per
    process (``XGROUP CREATE ... MKSTREAM``, batched in a script). A
    session first re-reads this consumer's own pending entries (a restart
    under the same name); meanwhile a background task takes over
    (``XAUTOCLAIM``) entries another member left pending longer than
    ``claim_idle`` -- a consumer that died -- asking Redis first which
    streams hold such entries (``XPENDING``'s summary, in a script), every
    ``claim_idle / 2`` seconds give or take a fifth, so consumers do not
    check together and reads never wait for a pass.

Redis Cluster (``redis+cluster://`` or ``cluster = true``): one command
may only touch keys of one hash slot, so the streams are read per slot.
While they are in one slot (a single stream, or keys sharing a hash tag:
``mux:{lab}:...``) that is one blocking read as on a single server;
otherwise each round is one pipelined non-blocking read per slot (coredis
sends each node its share), and after a round that found nothing the
transport waits before the next one -- 5 ms at first, doubling up to
``block`` or 0.1 s, whichever is shorter: new entries on a quiet cluster
arrive within that. The sink needs nothing special: it already appends
with one command per stream key.

Delivery is at least once: after a crash, a reconnect or a take-over an
entry may be delivered twice. A record is identified by ``(source, seq)``:
a consumer drops a record whose ``seq`` for its ``source`` it has already
seen (a set per source, or the highest seq when order is kept).

Errors: refused, reset, timed out -> ``server_unavailable`` before the
stream is read, ``disconnected`` after (both retried by the supervisor);
wrong password, an ACL refusal -> ``failed``.
"""

from __future__ import annotations

import logging
import math
import re
from typing import TYPE_CHECKING, Any

import attrs

from mux_core import Transport
from mux_core.errors import Disconnected, Failed, ServerUnavailable, SessionError
from mux_core.options import non_negative, positive, raise_problems
from mux_core.records import (
    RECORD_OVERHEAD,
    Record,
    RecordDecodeError,
    SizedBatch,
    decode_jsonl,
)
from mux_core.transport import Session

from ._client import (
    RedisTarget,
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
from ._reads import PER_COMMAND, ReadPlan

# trio is imported by the methods that use it: loading the plugin (every mux
# command does) does not pay for it.
if TYPE_CHECKING:
    import trio

__all__ = ["RedisStreamOptions", "RedisStreamTransport"]

_log = logging.getLogger("mux.redis")
_GLOB = frozenset("*?[")
#: Seconds between two acknowledgement rounds, at least (see ``_Reader._acknowledge``).
_ACK_EVERY = 0.1
#: Seconds a stopping session spends acknowledging what its sinks wrote last, at most.
_LAST_ACK = 2.0
_BUCKET = re.compile(r"\{bucket(?::([^{}]*))?\}")

#: Join the group on every key (MKSTREAM); a group that exists already is fine.
#: ARGV: group, start id. Returns how many groups it made.
_JOIN = b"""
local made = 0
for i = 1, #KEYS do
  local reply = redis.pcall('XGROUP', 'CREATE', KEYS[i], ARGV[1], ARGV[2], 'MKSTREAM')
  if type(reply) == 'table' and reply.err then
    if string.sub(reply.err, 1, 9) ~= 'BUSYGROUP' then
      return redis.error_reply(reply.err)
    end
  else
    made = made + 1
  end
end
return made
"""

#: The keys whose group has entries pending for longer than ARGV[2] ms: the
#: summary form of XPENDING first (O(1) a key), the IDLE form only where
#: something is pending. ARGV: group, idle ms. Keys without the group are skipped.
_IDLE_PENDING = b"""
local found = {}
for i = 1, #KEYS do
  local summary = redis.pcall('XPENDING', KEYS[i], ARGV[1])
  if type(summary) == 'table' and not summary.err and summary[1] > 0 then
    local idle = redis.call('XPENDING', KEYS[i], ARGV[1], 'IDLE', ARGV[2], '-', '+', 1)
    if #idle > 0 then
      found[#found + 1] = KEYS[i]
    end
  end
end
return found
"""


def _streams(_instance: Any, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    if not value:
        raise ValueError(f'{attribute.name} must name at least one key or pattern ("mux:*")')
    for item in value:
        if not isinstance(item, str) or not item:
            raise ValueError(f"{attribute.name} entries must be keys or patterns, got {item!r}")


@attrs.frozen(kw_only=True)
class RedisStreamOptions:
    """The keys of a ``transport = "redis-stream"`` source."""

    #: ``redis://[:password@]host:6379/0``; ``rediss://`` for TLS;
    #: ``redis+cluster://host:port`` for a Redis Cluster.
    url: str = "redis://127.0.0.1:6379/0"
    #: Stream keys, or glob patterns (``mux:*``) found with SCAN and re-scanned.
    #: ``"mux:{bucket}"`` with ``buckets`` names the sink's bucket streams (no SCAN).
    streams: list[str] = attrs.field(factory=lambda: ["mux:*"], validator=_streams)
    #: With ``{bucket}`` in ``streams``: the sink's ``buckets``; the key is read as
    #: that many streams (``mux:0`` ... ``mux:15`` for 16). 0 = no buckets.
    buckets: int = attrs.field(default=0, validator=non_negative(note="0 = no buckets"))
    #: A consumer group: the group's consumers share the entries (XREADGROUP, XACK).
    #: Unset: this process reads every entry (XREAD).
    group: str | None = None
    #: This consumer's name in the group (required with ``group``; unique per process,
    #: e.g. ``"${HOSTNAME:-mux}"``).
    consumer: str | None = None
    #: Seconds an entry may stay pending with another consumer before this one takes
    #: it over (XAUTOCLAIM): longer than that consumer can take to write a batch.
    claim_idle: float = attrs.field(default=30.0, validator=positive())
    #: Where a new stream (or a new group) starts: "first" = its oldest entry,
    #: "new" = only entries added from now on.
    start: str = attrs.field(default="first", validator=attrs.validators.in_(("first", "new")))
    #: Entries per read, at most.
    count: int = attrs.field(default=10_000, validator=positive())
    #: Seconds one read waits for new entries before checking for new streams.
    block: float = attrs.field(default=1.0, validator=positive())
    #: Seconds between SCANs for new streams matching the patterns.
    scan_interval: float = attrs.field(default=5.0, validator=positive())
    #: Treat the url as a Redis Cluster seed (as ``redis+cluster://`` does).
    cluster: bool = False
    #: A PEM file of the CAs to trust for a ``rediss://`` server instead of the
    #: system's trust store (a private CA, a self-signed server's certificate).
    ca_file: str | None = None
    #: Check a ``rediss://`` server's certificate; false checks nothing (mux warns
    #: at check and at start).
    verify: bool = True

    @classmethod
    def check(cls, options: RedisStreamOptions) -> None:
        """A bad URL or CA file, or a group without a consumer, is found before any I/O."""
        from mux_core.http import tls_problem

        raise_problems(
            [
                url_problem(options.url, cluster=options.cluster),
                tls_problem(verify=options.verify, ca_file=options.ca_file),
                "consumer is required with group: a name unique to this process, "
                'e.g. consumer = "${HOSTNAME:-mux}"'
                if options.group is not None and not options.consumer
                else None,
                "consumer is set but group is not: name the consumer group too"
                if options.consumer is not None and options.group is None
                else None,
                bucket_problem(
                    "streams", any(_BUCKET.search(key) for key in options.streams), options.buckets
                ),
            ]
        )


def expand_buckets(streams: list[str], buckets: int) -> list[str]:
    """``streams`` with each ``{bucket}`` key written out once per bucket (0 .. buckets-1).

    Other braces stay as they are: in a key they are a Redis Cluster hash tag.
    """
    out: list[str] = []
    for key in streams:
        if not (buckets and _BUCKET.search(key)):
            out.append(key)
            continue
        for n in range(buckets):

            def bucket(match: re.Match[str], n: int = n) -> str:
                return format(n, match.group(1) or "")

            out.append(_BUCKET.sub(bucket, key))
    return out


@attrs.define(eq=False)
class _Acks:
    """Entry ids relayed but not yet acknowledged, by stream key."""

    pending: dict[bytes, list[bytes]] = attrs.field(factory=dict)
    wake: trio.Event = attrs.field(factory=new_event)

    def add(self, key: bytes, ids: list[bytes]) -> None:
        if ids:
            self.pending.setdefault(key, []).extend(ids)
            self.wake.set()


class RedisStreamTransport(Transport):
    """Reads Redis streams written by ``redis-stream`` sinks; see the module docstring."""

    Options = RedisStreamOptions

    def __init__(self, options: RedisStreamOptions) -> None:
        self.options = options
        self._target: RedisTarget | None
        self._problem: str | None = None
        try:
            self._target = parse_url(options.url, cluster=options.cluster)
        except ValueError as exc:
            self._target, self._problem = None, str(exc)
        streams = expand_buckets(options.streams, options.buckets)
        self._literal = [k for k in streams if not _GLOB & set(k)]
        self._patterns = [k for k in streams if _GLOB & set(k)]
        #: Streams this process joined the group on (once each, across sessions).
        self._joined: set[bytes] = set()
        # verify = false is said once, when the source starts.
        self._unverified_warned = options.verify

    async def run_session(self, session: Session) -> None:
        if self._target is None:
            raise Failed(self._problem or "bad url")
        if not self._unverified_warned:
            from mux_core.http import warn_unverified

            self._unverified_warned = True
            warn_unverified(f"source {session.source!r}")
        try:
            client = self.new_client(session)
        except ValueError as exc:  # a ca_file without a certificate: a config mistake
            raise Failed(str(exc)) from None
        try:
            async with client:
                await _Reader(self, client, session).run()
        except SessionError:
            raise
        except Exception as exc:
            raise self._session_error(exc, session) from None
        except BaseExceptionGroup as group:
            # Cancelled while the client was connecting: its own tasks end with
            # the cancellation and the connection error it caused, together.
            # The session is being stopped; the error is only its echo.
            import trio

            cancelled, _rest = group.split(trio.Cancelled)
            if cancelled is None:
                raise
            raise cancelled from None

    def new_client(self, session: Session) -> Any:
        """A coredis client for this source (enter it with ``async with``)."""
        assert self._target is not None
        return make_client(
            self._target,
            ca_file=self.options.ca_file,
            verify=self.options.verify,
            timeout=session.connect_timeout,
            name=f"mux:{session.source}",
        )

    def _session_error(self, exc: BaseException, session: Session) -> SessionError:
        for leaf in _leaves(exc):
            if isinstance(leaf, SessionError):
                return leaf
        detail = describe_error(exc)
        if not retryable(exc):
            if _redis_error_name(exc) in (
                "AuthenticationError",
                "AuthenticationFailureError",
                "AuthenticationRequiredError",
                "AuthorizationError",
            ):
                return Failed(f"Redis refused: {detail}")
            _log.debug("redis-stream source %r failed", session.source, exc_info=exc)
            return Failed(f"Redis error: {detail}")
        if session.is_connected:
            return Disconnected(detail)
        return ServerUnavailable(detail)


class _Reader:
    """One session's work: find streams, (join the group,) read, relay, acknowledge."""

    def __init__(self, transport: RedisStreamTransport, client: Any, session: Session) -> None:
        import trio

        self.options = transport.options
        self.transport = transport
        self.client = client
        self.session = session
        #: Plain mode: the last entry id read, per stream key; mirrored as plain
        #: strings in ``session.resume.cursor`` (see :meth:`_moved`).
        self.positions: dict[bytes, bytes] = _positions(session.resume.cursor)
        self.cluster = transport._target is not None and transport._target.cluster
        #: The streams known, and which of them the next round names.
        self.plan = ReadPlan(together=_by_slot if self.cluster else _whole)
        self.idle = 0.0
        self.acks = _Acks()
        self.next_scan = -math.inf
        #: The streams the last round named (rejoined when the group is gone).
        self.named: list[bytes] = []
        #: Relays from the read loop and the claim task go one at a time.
        self.relaying = trio.Lock()

    async def run(self) -> None:
        import trio

        # A round trip first: literal streams in plain mode need no command
        # before the first read, and "connected" must mean Redis answered.
        await command(self.client, b"PING")
        await self._rescan()
        await self.session.connected(f"{len(self.plan)} streams")
        group = self.options.group
        if group is None:
            while True:
                await self._rescan_when_due()
                await self._read_plain()
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._acknowledge)
            await self._read_own_pending()
            nursery.start_soon(self._claim_loop)
            while True:
                await self._rescan_when_due()
                await self._read_group()

    def _commands_for(self, keys: list[bytes], size: int = PER_COMMAND) -> list[list[bytes]]:
        """``keys`` cut into the sets one command may name (one slot each, ``size`` at most)."""
        groups = _by_slot(keys) if self.cluster else [keys]
        return [
            group[start : start + size] for group in groups for start in range(0, len(group), size)
        ]

    # -- finding streams --------------------------------------------------

    async def _rescan_when_due(self) -> None:
        import trio

        if trio.current_time() >= self.next_scan:
            await self._rescan()

    async def _rescan(self) -> None:
        import trio

        self.next_scan = trio.current_time() + self.options.scan_interval
        found = {key.encode() for key in self.transport._literal}
        for pattern in self.transport._patterns:
            found.update(await self._scan(pattern))
        new = sorted(key for key in found if key not in self.plan)
        if not new:
            return
        await self._start_at(new)
        self.plan.add(new, trio.current_time())

    async def _scan(self, pattern: str) -> set[bytes]:
        keys: set[bytes] = set()
        if self.cluster:
            async for key in self.client.scan_iter(match=pattern, count=1000, type_="stream"):
                keys.add(key if isinstance(key, bytes) else key.encode())
            return keys
        cursor: Any = 0
        while True:
            cursor, batch = await command(
                self.client, b"SCAN", cursor, b"MATCH", pattern, b"COUNT", 1000, b"TYPE", b"stream"
            )
            keys.update(batch)
            if int(cursor) == 0:
                return keys

    async def _start_at(self, keys: list[bytes]) -> None:
        """Where streams newly found start: the group (joined once), or the plain cursor."""
        if self.options.group is not None:
            await self._join([key for key in keys if key not in self.transport._joined])
            return
        fresh = [key for key in keys if key not in self.positions]
        if self.options.start == "first":
            self._moved([(key, b"0-0") for key in fresh])
            return
        await self._start_at_newest(fresh)

    async def _join(self, keys: list[bytes]) -> None:
        """Create the group on ``keys`` (and the streams: MKSTREAM), batched.

        One ``EVAL`` of :data:`_JOIN` per :data:`PER_COMMAND` keys (per slot in
        a cluster), pipelined; a group that exists already is no error. Done
        once per stream per process: the transport remembers what it joined
        across sessions, and joins again only streams whose read said the
        group is gone (a stream deleted and made again, a Redis without
        persistence restarted).
        """
        from coredis.typing import Key

        if not keys:
            return
        start = b"0" if self.options.start == "first" else b"$"
        calls = [
            (_JOIN, len(chunk), *[Key(key) for key in chunk], self.options.group, start)
            for chunk in self._commands_for(keys)
        ]
        await self._eval_all(calls)
        self.transport._joined.update(keys)

    async def _start_at_newest(self, keys: list[bytes]) -> None:
        from coredis.typing import Key

        for chunk in self._commands_for(keys):
            async with self.client.pipeline(transaction=False) as pipeline:
                requests = [
                    queue(pipeline, b"XREVRANGE", Key(key), b"+", b"-", b"COUNT", 1)
                    for key in chunk
                ]
            moved = []
            for key, request in zip(chunk, requests, strict=True):
                newest = await request
                moved.append((key, newest[0][0] if newest else b"0-0"))
            self._moved(moved)

    async def _eval_all(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """Run ``EVAL`` calls (script, numkeys, keys..., args...): one, or pipelined."""
        if len(calls) == 1:
            return [await command(self.client, b"EVAL", *calls[0])]
        async with self.client.pipeline(transaction=False) as pipeline:
            requests = [queue(pipeline, b"EVAL", *call) for call in calls]
        return [await request for request in requests]

    def _moved(self, moved: list[tuple[bytes, bytes]]) -> None:
        """Streams read up to these ids: the positions, and a new resume cursor.

        The cursor is a new dict each time: a checkpoint of ``--state`` holds
        on to the one it copied until the sinks have what it covers.
        """
        if not moved:
            return
        positions = self.positions
        resume = self.session.resume
        cursor = dict(resume.cursor) if isinstance(resume.cursor, dict) else {}
        for key, last in moved:
            positions[key] = last
            cursor[key.decode("utf-8", "surrogateescape")] = (
                last.decode("ascii") if isinstance(last, bytes) else str(last)
            )
        resume.cursor = cursor

    # -- reading ----------------------------------------------------------

    async def _read_plain(self) -> None:
        from coredis.typing import Key

        positions = self.positions

        def read(keys: list[bytes], count: int, block: tuple[Any, ...]) -> tuple[Any, ...]:
            return (
                b"XREAD",
                b"COUNT",
                count,
                *block,
                b"STREAMS",
                *[Key(key) for key in keys],
                *[positions.get(key, b"0-0") for key in keys],
            )

        streams = await self._read(read)
        if not streams:
            return
        records = SizedBatch[Record]()
        moved: list[tuple[bytes, bytes]] = []
        for key, entries in streams:
            if entries:
                self._decode(key, entries, records)
                moved.append((key, entries[-1][0]))
        await self.session.relay(records)
        self._moved(moved)

    async def _read(self, read: Any) -> list[tuple[bytes, list[Any]]]:
        """One round of reads: ``read(keys, count, block_args)`` makes a command.

        The plan (:class:`ReadPlan`) says which streams the round names and
        when it may go. One command may block (up to ``block`` seconds, or
        until the next slice of cold streams is due); several go out in one
        pipeline without blocking, and after a round that found nothing the
        next waits 5 ms, doubling up to ``block`` or 0.1 s, whichever is
        shorter.
        """
        import trio

        plan = self.plan
        now = trio.current_time()
        round = plan.next_round(now, self.options.block)
        if round.start_at > now:
            await trio.sleep_until(round.start_at)
        if not round.commands:
            return []
        self.named = [key for keys in round.commands for key in keys]
        if round.block is not None:
            block = (b"BLOCK", max(1, int(round.block * 1000)))
            reply = await command(self.client, *read(round.commands[0], self.options.count, block))
            streams = [pair for pair in _streams_of(reply) if pair[1]] if reply else []
        else:
            count = max(100, self.options.count // len(round.commands))
            async with self.client.pipeline(transaction=False) as pipeline:
                requests = [queue(pipeline, *read(keys, count, ())) for keys in round.commands]
            streams = []
            for request in requests:
                reply = await request
                if reply:
                    streams.extend(pair for pair in _streams_of(reply) if pair[1])
            if streams:
                self.idle = 0.0
            else:
                self.idle = min(max(self.idle * 2, 0.005), self.options.block, 0.1)
                await trio.sleep(self.idle)
        if streams:
            plan.saw([key for key, _ in streams], trio.current_time())
        return streams

    async def _read_group(self) -> None:
        from coredis.typing import Key

        group, consumer = self.options.group, self.options.consumer

        def read(keys: list[bytes], count: int, block: tuple[Any, ...]) -> tuple[Any, ...]:
            return (
                b"XREADGROUP",
                b"GROUP",
                group,
                consumer,
                b"COUNT",
                count,
                *block,
                b"STREAMS",
                *[Key(key) for key in keys],
                *[b">"] * len(keys),
            )

        try:
            streams = await self._read(read)
        except Exception as exc:
            from coredis.exceptions import StreamConsumerGroupError

            if not isinstance(_first_leaf(exc), StreamConsumerGroupError):
                raise  # anything but NOGROUP
            # A stream was deleted and made again: join its new incarnation.
            self.transport._joined.difference_update(self.named)
            await self._join(self.named)
            return
        if streams:
            await self._relay_group(streams)

    async def _read_own_pending(self) -> None:
        """Entries delivered to this consumer name before and never acknowledged."""
        for keys in self._commands_for(self.plan.keys):
            await self._read_own_pending_of(keys)

    async def _read_own_pending_of(self, keys: list[bytes]) -> None:
        from coredis.typing import Key

        after = dict.fromkeys(keys, b"0-0")
        while after:
            keys = list(after)
            reply = await command(
                self.client,
                b"XREADGROUP",
                b"GROUP",
                self.options.group,
                self.options.consumer,
                b"COUNT",
                self.options.count,
                b"STREAMS",
                *[Key(key) for key in keys],
                *[after[key] for key in keys],
            )
            streams = [(key, entries) for key, entries in _streams_of(reply or {}) if entries]
            got = {key for key, _ in streams}
            for key in keys:
                if key not in got:
                    del after[key]
            for key, entries in streams:
                after[key] = entries[-1][0]
            if streams:
                await self._relay_group(streams)

    # -- taking over a dead member's entries ---------------------------------

    async def _claim_loop(self) -> None:
        """Take over entries other members left pending, in the background of the reads.

        Every ``claim_idle / 2`` seconds (give or take a fifth, at random, and
        the first pass at a random point of the first interval: consumers
        started together do not check together), a pass asks Redis which
        streams hold entries pending longer than ``claim_idle`` -- one
        :data:`_IDLE_PENDING` script per :data:`PER_COMMAND` streams, spread
        over half the interval -- and claims (``XAUTOCLAIM``) only in those.
        The reads go on meanwhile.
        """
        import random

        import trio

        jitter = random.Random()
        interval = self.options.claim_idle / 2
        await trio.sleep(interval * jitter.uniform(0.05, 1.0))
        while True:
            await self._claim_pass(spread=interval / 2)
            await trio.sleep(interval * jitter.uniform(0.8, 1.2))

    async def _claim_pass(self, *, spread: float) -> None:
        import trio
        from coredis.typing import Key

        idle_ms = max(1, int(self.options.claim_idle * 1000))
        chunks = self._commands_for(self.plan.keys)
        for n, chunk in enumerate(chunks):
            if n:
                await trio.sleep(spread / len(chunks))
            call = (_IDLE_PENDING, len(chunk), *[Key(key) for key in chunk])
            found = await command(self.client, b"EVAL", *call, self.options.group, idle_ms)
            for key in found or ():
                await self._claim(key if isinstance(key, bytes) else key.encode(), idle_ms)

    async def _claim(self, key: bytes, idle_ms: int) -> None:
        from coredis.typing import Key

        start: bytes = b"0-0"
        while True:
            reply = await command(
                self.client,
                b"XAUTOCLAIM",
                Key(key),
                self.options.group,
                self.options.consumer,
                idle_ms,
                start,
                b"COUNT",
                self.options.count,
            )
            start, entries = reply[0], [e for e in reply[1] if e is not None]
            if entries:
                _log.info(
                    "source %r took over %d entries of %s left pending by another consumer",
                    self.session.source,
                    len(entries),
                    key.decode(errors="replace"),
                )
                await self._relay_group([(key, entries)])
            if start in (b"0-0", "0-0"):
                return

    async def _relay_group(self, streams: list[tuple[bytes, list[Any]]]) -> None:
        records = SizedBatch[Record]()
        ids: list[tuple[bytes, list[bytes]]] = []
        for key, entries in streams:
            if entries:
                self._decode(key, entries, records)
                ids.append((key, [entry[0] for entry in entries]))
        async with self.relaying:
            await self.session.relay(records)
            for key, entry_ids in ids:
                self.acks.add(key, entry_ids)

    async def _acknowledge(self) -> None:
        """XACK what every sink has written, in the background of the reads.

        At most every :data:`_ACK_EVERY` seconds: each round waits for the
        sinks to hold what it acknowledges durably (the file sink fsyncs), and
        back-to-back rounds would keep the disk busy with fsyncs that delay
        the next records' writes. Entries stay pending that much longer, far
        below ``claim_idle``. When the session ends (a stop), what is left is
        acknowledged once more, for up to :data:`_LAST_ACK` seconds.
        """
        import trio

        acks = self.acks
        try:
            while True:
                await acks.wake.wait()
                await trio.sleep(_ACK_EVERY)
                acks.wake = trio.Event()
                await self._ack_round()
        finally:
            if acks.pending:
                # The session's client went down with it (its tasks were cancelled):
                # a connection of its own, for this last round only.
                with trio.move_on_after(_LAST_ACK, shield=True):
                    try:
                        async with self.transport.new_client(self.session) as client:
                            await self._ack_round(client)
                    except Exception as exc:  # Redis went away meanwhile: they stay pending
                        _log.debug("source %r: last XACK failed: %r", self.session.source, exc)

    async def _ack_round(self, client: Any = None) -> None:
        from coredis.typing import Key

        client = self.client if client is None else client
        acks = self.acks
        group = self.options.group
        taken, acks.pending = acks.pending, {}
        try:
            if not await self.session.delivered():
                # A sink failed before writing them: leave them pending, for a
                # restart or another consumer to take over.
                return
            if len(taken) == 1:
                [(key, ids)] = taken.items()
                await command(client, b"XACK", Key(key), group, *ids)
            elif taken:
                async with client.pipeline(transaction=False) as pipeline:
                    for key, ids in taken.items():
                        queue(pipeline, b"XACK", Key(key), group, *ids)
        except BaseException:
            # Cut off (a stop): the session's last round acknowledges them (twice is harmless).
            for key, ids in taken.items():
                acks.pending.setdefault(key, []).extend(ids)
            raise

    def _decode(self, key: bytes, entries: list[Any], out: SizedBatch[Record]) -> None:
        append = out.append
        bad = 0
        size = 0
        for entry in entries:
            fields = entry[1]
            try:
                line = fields[1] if fields[0] == b"record" else _record_field(fields)
                append(decode_jsonl(line))
            except (RecordDecodeError, KeyError, IndexError, TypeError):
                bad += 1
                continue
            size += len(line)
        out.nbytes += size + RECORD_OVERHEAD * (len(entries) - bad)
        if bad:
            _log.warning(
                "source %r: %d entries of %s are not mux records (no valid 'record' field); "
                "skipped",
                self.session.source,
                bad,
                key.decode(errors="replace"),
            )


def _record_field(fields: list[Any]) -> Any:
    """The ``record`` field of an entry whose first field is another one."""
    return dict(zip(fields[::2], fields[1::2], strict=False))[b"record"]


def _positions(cursor: Any) -> dict[bytes, bytes]:
    """Plain mode's positions from a resume cursor ``{"key": "id"}`` (else none)."""
    positions: dict[bytes, bytes] = {}
    if isinstance(cursor, dict):
        for key, last in cursor.items():
            if isinstance(key, str) and isinstance(last, str):
                positions[key.encode("utf-8", "surrogateescape")] = last.encode()
    return positions


def _whole(keys: list[bytes]) -> list[list[bytes]]:
    return [keys]


def _by_slot(keys: list[bytes]) -> list[list[bytes]]:
    """``keys`` grouped by their Redis Cluster hash slot (hash tags honoured)."""
    from coredis.typing import Key

    slots: dict[int, list[bytes]] = {}
    for key in keys:
        slots.setdefault(Key(key).slot, []).append(key)
    return list(slots.values())


def _streams_of(reply: Any) -> list[tuple[bytes, list[Any]]]:
    """XREAD / XREADGROUP replies as (key, entries): a RESP3 map, or RESP2 pairs."""
    if isinstance(reply, dict):
        return list(reply.items())
    return [(pair[0], pair[1]) for pair in reply]


def _leaves(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    pending = [exc]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            found.append(error)
    return found


def _first_leaf(exc: BaseException) -> BaseException:
    return _leaves(exc)[0]


def _redis_error_name(exc: BaseException) -> str:
    return type(_first_leaf(exc)).__name__
