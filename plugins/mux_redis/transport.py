"""The ``redis-stream`` transport: read what other mux processes wrote to Redis.

A relay: each stream entry's ``record`` field (the JSON Lines object the
``redis-stream`` sink writes) becomes the original record again -- source,
transport, event, id, data, received_at and seq as the collector had them --
and is handed to the sinks with :meth:`Session.relay`. This source's own
connection states are reported under its own name.

Streams are ``streams`` keys, or glob patterns found with ``SCAN ... TYPE
stream`` and re-scanned every ``scan_interval`` seconds (new collectors,
new sources appear by themselves).

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
    a dead process's memory. A session first re-reads this consumer's own
    pending entries (a restart under the same name), and every
    ``claim_idle / 2`` seconds takes over (``XAUTOCLAIM``) entries another
    member left pending longer than ``claim_idle`` -- a consumer that died.

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
from typing import TYPE_CHECKING, Any

import attrs

from mux_core import Transport
from mux_core.errors import Disconnected, Failed, ServerUnavailable, SessionError
from mux_core.options import positive, raise_problems
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

__all__ = ["RedisStreamOptions", "RedisStreamTransport"]

_log = logging.getLogger("mux.redis")
_GLOB = frozenset("*?[")


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
    streams: list[str] = attrs.field(factory=lambda: ["mux:*"], validator=_streams)
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
            ]
        )


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
        self._literal = [k for k in options.streams if not _GLOB & set(k)]
        self._patterns = [k for k in options.streams if _GLOB & set(k)]
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
            client = make_client(
                self._target,
                ca_file=self.options.ca_file,
                verify=self.options.verify,
                timeout=session.connect_timeout,
                name=f"mux:{session.source}",
            )
        except ValueError as exc:  # a ca_file without a certificate: a config mistake
            raise Failed(str(exc)) from None
        try:
            async with client:
                await _Reader(self, client, session).run()
        except SessionError:
            raise
        except Exception as exc:
            raise self._session_error(exc, session) from None

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
        self.options = transport.options
        self.transport = transport
        self.client = client
        self.session = session
        #: Plain mode: the last entry id read, per stream key; mirrored as plain
        #: strings in ``session.resume.cursor`` (see :meth:`_moved`).
        self.positions: dict[bytes, bytes] = _positions(session.resume.cursor)
        self.cluster = transport._target is not None and transport._target.cluster
        self.keys: list[bytes] = []
        #: The keys one command may read together: all of them, or in a cluster one slot's.
        self.slots: list[list[bytes]] = []
        self.idle = 0.0
        self.acks = _Acks()
        self.next_scan = -math.inf
        self.next_claim = -math.inf

    async def run(self) -> None:
        import trio

        # A round trip first: literal streams in plain mode need no command
        # before the first read, and "connected" must mean Redis answered.
        await command(self.client, b"PING")
        await self._rescan()
        await self.session.connected(f"{len(self.keys)} streams")
        group = self.options.group
        if group is None:
            while True:
                await self._rescan_when_due()
                await self._read_plain()
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._acknowledge)
            await self._read_own_pending()
            while True:
                await self._rescan_when_due()
                await self._claim_when_due()
                await self._read_group()

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
        new = sorted(found - set(self.keys))
        if not new:
            return
        for key in new:
            await self._start_at(key)
        self.keys = sorted(found | set(self.keys))
        self.slots = _by_slot(self.keys) if self.cluster else [self.keys]
        self.next_claim = -math.inf  # new streams may hold a dead consumer's entries

    async def _scan(self, pattern: str) -> set[bytes]:
        keys: set[bytes] = set()
        if self.transport._target is not None and self.transport._target.cluster:
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

    async def _start_at(self, key: bytes) -> None:
        """Where a stream newly found starts: the group, or the plain cursor."""
        from coredis.typing import Key

        first = self.options.start == "first"
        group = self.options.group
        if group is not None:
            try:
                await command(
                    self.client,
                    b"XGROUP",
                    b"CREATE",
                    Key(key),
                    group,
                    b"0" if first else b"$",
                    b"MKSTREAM",
                )
            except Exception as exc:
                from coredis.exceptions import StreamDuplicateConsumerGroupError

                if not isinstance(_first_leaf(exc), StreamDuplicateConsumerGroupError):
                    raise  # anything but BUSYGROUP (the group exists already)
            return
        if key in self.positions:
            return
        if first:
            self._moved([(key, b"0-0")])
            return
        newest = await command(self.client, b"XREVRANGE", Key(key), b"+", b"-", b"COUNT", 1)
        self._moved([(key, newest[0][0] if newest else b"0-0")])

    def _moved(self, moved: list[tuple[bytes, bytes]]) -> None:
        """Streams read up to these ids: the positions, and a new resume cursor.

        The cursor is a new dict each time: a checkpoint of ``--state`` holds
        on to the one it copied until the sinks have what it covers.
        """
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

    def _block_ms(self) -> int:
        return max(1, int(self.options.block * 1000))

    async def _read_plain(self) -> None:
        import trio
        from coredis.typing import Key

        if not self.keys:
            await trio.sleep(self.options.block)
            return
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
        """One read of every stream: ``read(keys, count, block_args)`` makes a command.

        One blocking command when the keys may go together (always, but on a
        cluster with streams in several slots); else a pipelined round of
        non-blocking reads, one per slot, and a wait after an empty round.
        """
        import trio

        slots = self.slots
        if len(slots) == 1:
            reply = await command(
                self.client, *read(slots[0], self.options.count, (b"BLOCK", self._block_ms()))
            )
            return _streams_of(reply) if reply else []
        count = max(100, self.options.count // len(slots))
        async with self.client.pipeline(transaction=False) as pipeline:
            requests = [queue(pipeline, *read(keys, count, ())) for keys in slots]
        streams: list[tuple[bytes, list[Any]]] = []
        for request in requests:
            reply = await request
            if reply:
                streams.extend(pair for pair in _streams_of(reply) if pair[1])
        if streams:
            self.idle = 0.0
        else:
            self.idle = min(max(self.idle * 2, 0.005), self.options.block, 0.1)
            await trio.sleep(self.idle)
        return streams

    async def _read_group(self) -> None:
        import trio
        from coredis.typing import Key

        if not self.keys:
            await trio.sleep(self.options.block)
            return
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

        keys = self.keys
        try:
            streams = await self._read(read)
        except Exception as exc:
            from coredis.exceptions import StreamConsumerGroupError

            if not isinstance(_first_leaf(exc), StreamConsumerGroupError):
                raise  # anything but NOGROUP
            # A stream was deleted and made again: join its new incarnation.
            for key in keys:
                await self._start_at(key)
            return
        if streams:
            await self._relay_group(streams)

    async def _read_own_pending(self) -> None:
        """Entries delivered to this consumer name before and never acknowledged."""
        for keys in self.slots:
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
            for key in keys:
                if not any(key == k for k, _ in streams):
                    del after[key]
            for key, entries in streams:
                after[key] = entries[-1][0]
            if streams:
                await self._relay_group(streams)

    async def _claim_when_due(self) -> None:
        import trio

        if trio.current_time() < self.next_claim:
            return
        self.next_claim = trio.current_time() + self.options.claim_idle / 2
        from coredis.typing import Key

        idle_ms = max(1, int(self.options.claim_idle * 1000))
        for key in list(self.keys):
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
                    break

    async def _relay_group(self, streams: list[tuple[bytes, list[Any]]]) -> None:
        records = SizedBatch[Record]()
        ids: list[tuple[bytes, list[bytes]]] = []
        for key, entries in streams:
            if entries:
                self._decode(key, entries, records)
                ids.append((key, [entry[0] for entry in entries]))
        await self.session.relay(records)
        for key, entry_ids in ids:
            self.acks.add(key, entry_ids)

    async def _acknowledge(self) -> None:
        """XACK what every sink has written, in the background of the reads."""
        import trio
        from coredis.typing import Key

        acks = self.acks
        group = self.options.group
        while True:
            await acks.wake.wait()
            acks.wake = trio.Event()
            taken, acks.pending = acks.pending, {}
            if not await self.session.delivered():
                # A sink failed before writing them: leave them pending, for a
                # restart or another consumer to take over.
                continue
            if len(taken) == 1:
                [(key, ids)] = taken.items()
                await command(self.client, b"XACK", Key(key), group, *ids)
            elif taken:
                async with self.client.pipeline(transaction=False) as pipeline:
                    for key, ids in taken.items():
                        queue(pipeline, b"XACK", Key(key), group, *ids)

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
