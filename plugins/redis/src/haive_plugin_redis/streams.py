"""Redis Streams source and sink: consumer groups, claims, replay, at-least-once and exactly-once.

The source reads with ``XREADGROUP`` in batches and acknowledges through the core's
acknowledgment protocol (:attr:`haive.dataflow.sources.DataSource.acknowledges`): every
``ack_every`` items, and whenever nothing new is ready, it yields an empty batch; the
:class:`~haive.dataflow.streaming_pipeline.StreamingPipeline` waits until everything read
so far is written by the sink (or dead-lettered, or filtered out) and calls
:meth:`RedisStreamSource.acknowledge`.

* ``delivery="at_least_once"``: acknowledging is one ``XACK`` of the IDs read. A crash
  before it redelivers those entries (duplicates downstream, nothing lost).
* ``delivery="exactly_once"``: the sink (:meth:`RedisStreamSource.sink`) and the keyed
  state (:meth:`RedisStreamSource.state`) only *stage* their writes; acknowledging commits
  the state writes, the output ``XADD``\\ s, the dead letters and the ``XACK`` in one
  ``MULTI/EXEC`` on a connection that ``WATCH``\\ es this consumer's fence key and every state
  key read. Either all of it happens or none: a crash, a conflicting write by another
  worker, or a claim of this consumer's entries by another (which bumps the fence) aborts
  the transaction and the entries are processed again. Every key carries the input
  stream's hash tag, so the transaction also runs on Redis Cluster.

Pending entries of a consumer that died are claimed by the living once idle for
``claim_idle``: with ``XAUTOCLAIM`` at least once; exactly once with ``XPENDING`` +
``XCLAIM`` inside a ``MULTI/EXEC`` that first bumps the previous owners' fence keys
(``XAUTOCLAIM`` does not say whose entries it took, and a slow-but-alive owner must be
fenced off before its entries change hands).
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import attrs
import orjson
import trio
from redis.exceptions import RedisError, ResponseError

from haive.dataflow.errors import (
    ConfigError,
    HaiveError,
    InvalidMessageError,
    SerializationError,
)
from haive.dataflow.serializers import JsonSerializer, Serializer
from haive.dataflow.sinks import StreamSink
from haive.dataflow.sources import DataSource
from haive.dataflow.units import parse_duration

from ._resp import bulk, derived_key, pack, pack_ids, previous_id, same_slot
from .backend import RedisStateBackend
from .client import DEFAULT_URL, DedicatedConnection, RedisClient

DELIVERY_MODES = ("at_least_once", "exactly_once")
_FENCE_TTL_MS = 7 * 24 * 3600 * 1000
_XACK_CHUNK = 10_000
_XADD_CHUNK = 5_000
_INTEGER = re.compile(rb"-?[0-9]{1,19}")  # what INCRBY accepts (64-bit signed)


class RedisCommitError(HaiveError):
    """An exactly-once commit failed inside ``EXEC`` (a command error: wrong key type...).

    Redis does not roll a transaction back, so the commands before the failing one were
    applied; the message names the failing command so the offending key can be fixed.
    """


@attrs.frozen
class StreamEntry:
    """One stream entry as the source yields it with ``with_ids=True``.

    Example::

        >>> StreamEntry("1700000000000-0", {"key": "a"}).data["key"]
        'a'
    """

    id: str
    data: Any


@attrs.define
class StreamSourceStats:
    """Counters of one :class:`RedisStreamSource`.

    Example::

        >>> StreamSourceStats().dead_lettered
        0
    """

    read: int = 0
    acknowledged: int = 0
    claimed: int = 0
    replayed: int = 0
    dead_lettered: int = 0
    missing: int = 0
    commits: int = 0
    aborted_commits: int = 0


# -- entry encoding ------------------------------------------------------------------------


class EntryCodec:
    """Turns items into stream entry fields and back.

    With a serializer (``"json"``, ``"msgpack"``, any registered name or a
    :class:`~haive.dataflow.serializers.Serializer`) an item is one field (``field``,
    default ``"data"``) holding its encoding. With ``"fields"`` an item is a flat mapping
    whose keys become the entry's fields (values as text), for interoperating with
    producers that write several fields.

    Example::

        >>> codec = EntryCodec("json")
        >>> codec.decode(codec.encode({"a": 1}))
        {'a': 1}
        >>> EntryCodec("fields").decode([b"k", b"v"])
        {'k': 'v'}
        >>> codec.decode([b"other", b"x"])
        Traceback (most recent call last):
        ...
        haive.dataflow.errors.InvalidMessageError: entry has no 'data' field (fields: other)
    """

    def __init__(self, codec: str | Serializer = "json", field: str = "data") -> None:
        if not isinstance(field, str) or not field:
            raise ConfigError(f"field must be a non-empty string, got {field!r}")
        self.field = field
        self.field_bytes = field.encode()
        self.serializer: Serializer | None
        if codec == "fields":
            self.serializer = None
        elif isinstance(codec, Serializer):
            self.serializer = codec
        elif isinstance(codec, str):
            from haive.dataflow.plugins import get_registry

            self.serializer = get_registry().serializer(codec)()
        else:
            raise ConfigError(
                f"codec must be a serializer name, a Serializer or 'fields', got {codec!r}"
            )
        #: Hot-path encoders: orjson itself for the plain JSON serializer (no Python frame per
        #: item); errors from them are re-raised through the serializer for a clear message.
        self.fast_loads: Callable[[bytes], Any] | None = None
        self.fast_dumps: Callable[[Any], bytes] | None = None
        if type(self.serializer) is JsonSerializer and self.serializer.max_size is None:
            self.fast_loads = orjson.loads
            self.fast_dumps = functools.partial(orjson.dumps, option=orjson.OPT_SERIALIZE_NUMPY)
        elif self.serializer is not None:
            self.fast_loads = self.serializer.loads
            self.fast_dumps = self.serializer.dumps

    def encode(self, item: Any) -> list[bytes]:
        """Field/value pairs, flattened."""
        if self.serializer is not None:
            return [self.field_bytes, self.serializer.dumps(item)]
        if not isinstance(item, Mapping) or not item:
            raise SerializationError(
                f"codec 'fields' needs a non-empty mapping per item, got {type(item).__name__}"
            )
        out: list[bytes] = []
        for key, value in item.items():
            if isinstance(value, bool) or not isinstance(value, bytes | str | int | float):
                raise SerializationError(
                    f"codec 'fields': field {key!r} must be bytes, str, int or float, "
                    f"got {type(value).__name__}"
                )
            out.append(str(key).encode())
            out.append(value if isinstance(value, bytes) else str(value).encode())
        return out

    def decode(self, fields: Sequence[bytes]) -> Any:
        """The item of one entry; SerializationError / InvalidMessageError when it is bad."""
        if self.serializer is None:
            return {
                fields[i].decode(errors="replace"): _text(fields[i + 1])
                for i in range(0, len(fields) - 1, 2)
            }
        target = self.field_bytes
        for i in range(0, len(fields) - 1, 2):
            if fields[i] == target:
                return self.serializer.loads(fields[i + 1])
        names = ", ".join(fields[i].decode(errors="replace") for i in range(0, len(fields), 2))
        raise InvalidMessageError(f"entry has no {self.field!r} field (fields: {names or 'none'})")


def _text(value: bytes) -> str | bytes:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value


def _xadd_head(stream: bytes, maxlen: int | None, approximate: bool, nfields: int) -> bytes:
    trim: list[bytes] = []
    if maxlen is not None:
        trim = [b"MAXLEN", b"~", b"%d" % maxlen] if approximate else [b"MAXLEN", b"%d" % maxlen]
    parts = [b"XADD", stream, *trim, b"*"]
    return b"*%d\r\n" % (len(parts) + nfields) + b"".join(bulk(p) for p in parts)


def pack_xadds(
    stream: str, entries: Sequence[Sequence[bytes]], maxlen: int | None, approximate: bool
) -> bytes:
    """``XADD`` commands for ``entries`` (flat field/value lists), packed for one write.

    Example::

        >>> pack_xadds("s", [[b"data", b"1"]], None, True)
        b'*5\\r\\n$4\\r\\nXADD\\r\\n$1\\r\\ns\\r\\n$1\\r\\n*\\r\\n$4\\r\\ndata\\r\\n$1\\r\\n1\\r\\n'
    """
    key = stream.encode()
    heads: dict[int, bytes] = {}
    out: list[bytes] = []
    for fields in entries:
        n = len(fields)
        head = heads.get(n)
        if head is None:
            head = heads[n] = _xadd_head(key, maxlen, approximate, n)
        out.append(head)
        out.extend(b"$%d\r\n%s\r\n" % (len(f), f) for f in fields)
    return b"".join(out)


def pack_payload_xadds(
    stream: str, field: bytes, payloads: Sequence[bytes], maxlen: int | None, approximate: bool
) -> bytes:
    """``XADD stream * field payload`` for each payload: the single-field fast path.

    Example::

        >>> pack_payload_xadds("s", b"data", [b"1"], None, True) == pack_xadds(
        ...     "s", [[b"data", b"1"]], None, True)
        True
    """
    prefix = _xadd_head(stream.encode(), maxlen, approximate, 2) + bulk(field)
    return b"".join([b"%s$%d\r\n%s\r\n" % (prefix, len(p), p) for p in payloads])


def _check_replies(replies: list[Any], what: str) -> None:
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise HaiveError(f"{what}: Redis replied {reply}")


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
    return value


def default_consumer_name() -> str:
    """``host-pid-random``: unique per process, readable in ``XINFO CONSUMERS``."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


# -- the exactly-once transaction ----------------------------------------------------------


@attrs.define
class _Batch:
    """IDs read in one batch: those yielded as items, and the rest (dead letters, gone)."""

    item_ids: deque[bytes]
    other_ids: list[bytes]


@attrs.define
class Transaction:
    """What one exactly-once epoch stages until its commit.

    Example::

        >>> txn = Transaction()
        >>> txn.stage_write("k", ("set", b"1", None))
        >>> txn.empty
        False
    """

    #: State key -> ("set", value, ttl) | ("del",) | ("add", amount, ttl), in write order.
    writes: dict[str, tuple[Any, ...]] = attrs.field(factory=dict)
    #: State key -> value read under WATCH in this epoch.
    reads: dict[str, bytes | None] = attrs.field(factory=dict)
    #: Packed XADD commands (outputs and dead letters) and how many.
    xadds: list[bytes] = attrs.field(factory=list)
    xadd_count: int = 0

    @property
    def empty(self) -> bool:
        return not self.writes and not self.xadds

    def stage_write(self, key: str, op: tuple[Any, ...]) -> None:
        self.writes.pop(key, None)  # keep write order = order of the last write
        self.writes[key] = op

    def stage_xadds(self, packed: bytes, count: int) -> None:
        self.xadds.append(packed)
        self.xadd_count += count

    def reset(self) -> None:
        self.writes.clear()
        self.reads.clear()
        self.xadds.clear()
        self.xadd_count = 0


class RedisStreamSource(DataSource):
    """Reads a Redis stream as one consumer of a consumer group.

    ``group`` is created at ``start`` (``"0"``: the whole stream, ``"$"``: new entries
    only) if it does not exist. Items are the decoded entries (``codec``/``field``, see
    :class:`EntryCodec`), or :class:`StreamEntry` with ``with_ids=True``. An entry that
    cannot be decoded goes to the ``dead_letter`` stream (default ``<stream>:dead`` in the
    same hash slot) with the reason, and reading goes on.

    ``claim_idle``: pending entries of other consumers idle that long are claimed (a dead
    worker's work moves to the living), checked every ``claim_interval``.
    ``replay_from``: when opened, move the group back so the stream is read again from
    that ID (inclusive; ``"0"`` for everything; it moves the whole group, so one process
    should do it: ``haive worker --replay-from``). ``stop_when_drained``: end when the
    group has no undelivered and no pending entries (batch jobs, tests).

    Example: at-least-once copy of one stream into another::

        >>> import uuid
        >>> from haive.dataflow.streaming_pipeline import StreamingPipeline
        >>> name = f"doc-{uuid.uuid4().hex}"
        >>> async def main():
        ...     source = RedisStreamSource(f"{{{name}}}:in", group="g", stop_when_drained=True)
        ...     sink = source.sink(f"{{{name}}}:out")
        ...     await sink.open()
        ...     await RedisStreamSink(f"{{{name}}}:in", client=source.client).write_batch(
        ...         [{"n": n} for n in range(5)])
        ...     pipeline = StreamingPipeline("copy")
        ...     pipeline.set_source(source)
        ...     pipeline.add_processor(lambda e: {"n": e["n"] * 10})
        ...     pipeline.set_sink(sink)
        ...     report = await pipeline.execute()
        ...     out = await source.client.execute("XRANGE", f"{{{name}}}:out", "-", "+")
        ...     await source.client.execute("DEL", f"{{{name}}}:in", f"{{{name}}}:out")
        ...     source.client.close()
        ...     return report.processed, [fields for _, fields in out]
        >>> trio.run(main)
        (5, [{b'data': b'{"n":0}'}, {b'data': b'{"n":10}'}, ..., {b'data': b'{"n":40}'}])
    """

    PLUGIN_NAME = "redis_stream"
    acknowledges = True

    def __init__(
        self,
        stream: str,
        *,
        group: str = "haive",
        consumer: str | None = None,
        url: str = DEFAULT_URL,
        client: RedisClient | None = None,
        delivery: str = "at_least_once",
        batch_size: int = 1000,
        ack_every: int | None = None,
        block: float | str = "100ms",
        start: str = "0",
        claim_idle: float | str = "30s",
        claim_interval: float | str | None = None,
        stop_when_drained: bool = False,
        codec: str | Serializer = "json",
        field: str = "data",
        with_ids: bool = False,
        dead_letter: str | None = None,
        replay_from: str | None = None,
        pool_size: int = 8,
    ) -> None:
        if not isinstance(stream, str) or not stream:
            raise ConfigError(
                f"RedisStreamSource: stream must be a non-empty string, got {stream!r}"
            )
        if delivery not in DELIVERY_MODES:
            raise ConfigError(
                f"RedisStreamSource: delivery must be one of {DELIVERY_MODES}, got {delivery!r}"
            )
        self.stream = stream
        self.group = group
        self.consumer = consumer or default_consumer_name()
        self.delivery = delivery
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.ack_every = _positive_int(
            ack_every if ack_every is not None else 4 * batch_size, "ack_every"
        )
        self.block = parse_duration(block, what="block")
        self.start = start
        self.claim_idle = parse_duration(claim_idle, what="claim_idle")
        self.claim_interval = (
            parse_duration(claim_interval, what="claim_interval")
            if claim_interval is not None
            else max(0.05, self.claim_idle / 2)
        )
        self.stop_when_drained = stop_when_drained
        self.codec = EntryCodec(codec, field)
        self.with_ids = with_ids
        self.dead_letter = dead_letter or derived_key(stream, "dead")
        if delivery == "exactly_once" and not same_slot(stream, self.dead_letter):
            raise ConfigError(
                f"exactly_once: dead-letter stream {self.dead_letter!r} is not in the hash slot "
                f"of {stream!r}; give it the same hash tag (e.g. {derived_key(stream, 'dead')!r})"
            )
        self.replay_from = replay_from
        if replay_from is not None:
            previous_id(replay_from)  # validates
        self._owns_client = client is None
        self.client = client if client is not None else RedisClient(url, pool_size=pool_size)
        self.url = self.client.url
        self.stats = StreamSourceStats()
        self.transaction = Transaction()
        self._conn: DedicatedConnection | None = None
        self._watching = False
        self._batches: deque[_Batch] = deque()
        self._unacked_items = 0
        self._ack_requested = False
        self._replay = True
        self._replay_cursor = b"0"
        self._claim_cursor = b"0-0" if delivery == "at_least_once" else b"-"
        self._next_claim = 0.0
        self._opened = False

    def __repr__(self) -> str:
        return (
            f"RedisStreamSource({self.stream!r}, group={self.group!r}, "
            f"consumer={self.consumer!r}, delivery={self.delivery!r})"
        )

    @property
    def exactly_once(self) -> bool:
        return self.delivery == "exactly_once"

    def join(self, group: str | None = None, consumer: str | None = None) -> None:
        """Set the consumer group and/or consumer name before the source is opened."""
        if self._opened:
            raise ConfigError("RedisStreamSource.join: the source is already open")
        if group is not None:
            self.group = group
        if consumer is not None:
            self.consumer = consumer

    def fence_key(self, consumer: str | None = None) -> str:
        """The key a claimer bumps to fence ``consumer`` off (exactly-once)."""
        return derived_key(self.stream, f"fence:{self.group}:{consumer or self.consumer}")

    def state_prefix(self, name: str) -> str:
        """Key prefix of the keyed state ``name`` (same hash slot as the stream)."""
        return derived_key(self.stream, f"state:{name}:")

    # -- companions ---------------------------------------------------------------------
    def sink(
        self,
        stream: str,
        *,
        maxlen: int | None = None,
        approximate: bool = True,
        codec: str | Serializer = "json",
        field: str = "data",
    ) -> RedisStreamSink:
        """A sink writing to ``stream`` with this source's delivery guarantee.

        Exactly-once: its writes are committed with this source's acknowledgment (so
        ``stream`` must share the input's hash slot). At-least-once: a plain sink on the
        same connection pool.
        """
        return RedisStreamSink(
            stream,
            client=self.client,
            maxlen=maxlen,
            approximate=approximate,
            codec=codec,
            field=field,
            transaction=self if self.exactly_once else None,
        )

    def state(self, name: str) -> RedisStateBackend | TransactionalState:
        """Keyed state ``name`` stored next to the stream (hash-tagged like it).

        Exactly-once: a :class:`TransactionalState` whose writes commit with this source's
        acknowledgment. At-least-once: a :class:`RedisStateBackend` writing at once. Wrap
        either in ``StateStore(...)`` for typed values.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"state name must be a non-empty string, got {name!r}")
        if self.exactly_once:
            return TransactionalState(self, self.state_prefix(name))
        return RedisStateBackend(client=self.client, prefix=self.state_prefix(name))

    # -- lifecycle ----------------------------------------------------------------------
    async def open(self) -> None:
        if self.exactly_once:
            self._conn = self.client.dedicated()
        reply = await self.client.send(
            pack("XGROUP", "CREATE", self.stream, self.group, self.start, "MKSTREAM"), 1
        )
        if isinstance(reply[0], ResponseError) and "BUSYGROUP" not in str(reply[0]):
            raise HaiveError(
                f"cannot create consumer group {self.group!r} on {self.stream!r}: {reply[0]}"
            )
        if self.replay_from is not None:
            await self.client.execute(
                "XGROUP", "SETID", self.stream, self.group, previous_id(self.replay_from)
            )
        self._opened = True

    async def aclose(self) -> None:
        try:
            if self._opened and not self._batches and not self._unacked_items:
                # Leave the group tidy: forget this consumer when it holds nothing.
                with trio.move_on_after(2):
                    mine = await self.client.send(
                        pack("XPENDING", self.stream, self.group, "-", "+", 1, self.consumer), 1
                    )
                    if mine[0] == []:  # (an error reply: the group is gone, nothing to tidy)
                        await self.client.send(
                            pack("XGROUP", "DELCONSUMER", self.stream, self.group, self.consumer),
                            1,
                        )
        except RedisError:
            pass  # tidying is best effort: a lost connection must not hide the real error
        finally:
            self._opened = False
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._watching = False
            if self._owns_client:
                self.client.close()

    # -- reading ------------------------------------------------------------------------
    async def batches(self, max_items: int) -> AsyncIterator[list[Any]]:
        count = max(1, min(self.batch_size, max_items))
        while True:
            entries = await self._next_entries(count)
            if entries:
                items = await self._accept(entries)
                if items:
                    self._ack_requested = False
                    yield items
                elif not self._unacked_items:
                    await self._settle_unyielded()
                if self._unacked_items >= self.ack_every:
                    self._ack_requested = True
                    yield []
                continue
            if self._unacked_items:
                self._ack_requested = True
                yield []  # nothing more ready: ask the pipeline to acknowledge
                continue
            if self._batches:
                await self._settle_unyielded()
            if self.stop_when_drained and await self._drained():
                return

    async def _next_entries(self, count: int) -> list[Any]:
        if self._replay and not self._batches:
            # Entries delivered to this consumer earlier and never acknowledged (a restart
            # under the same name, or an aborted exactly-once epoch): they come first.
            entries = await self._read(count, self._replay_cursor, block=False)
            if entries:
                self._replay_cursor = entries[-1][0]
                self.stats.replayed += len(entries)
                return entries
            self._replay = False
        now = trio.current_time()
        if not self._replay and now >= self._next_claim:
            self._next_claim = now + self.claim_interval
            if self._conn is not None and not self._watching:
                # Claimed entries join this epoch: be fenced from before they are ours.
                await self._conn.send(pack("WATCH", self.fence_key()), 1)
                self._watching = True
            claimed = await (
                self._claim_fenced(count) if self.exactly_once else self._autoclaim(count)
            )
            if claimed and self._batches:
                # XAUTOCLAIM also takes this consumer's own entries once they are idle long
                # enough; those being processed right now must not be yielded twice.
                held = {i for batch in self._batches for i in (*batch.item_ids, *batch.other_ids)}
                claimed = [entry for entry in claimed if entry[0] not in held]
            if claimed:
                self.stats.claimed += len(claimed)
                return claimed
        block = not self._unacked_items or self._ack_requested
        return await self._read(count, b">", block=block)

    async def _read(self, count: int, cursor: bytes, *, block: bool) -> list[Any]:
        args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count]
        if block and self.block > 0:
            args += ["BLOCK", max(1, round(self.block * 1000))]
        args += ["STREAMS", self.stream, cursor]
        packed = pack(*args)
        if self._conn is not None:
            n = 1
            if not self._watching:
                packed = pack("WATCH", self.fence_key()) + packed
                n = 2
            replies = await self._conn.send(packed, n)
            self._watching = True
        else:
            replies = await self.client.send(packed, 1)
        reply = replies[-1]
        if isinstance(reply, ResponseError):
            raise HaiveError(
                f"XREADGROUP on {self.stream!r} (group {self.group!r}) failed: {reply}"
            )
        if not reply:
            return []
        # RESP3 (redis-py 8's default) answers a map {stream: entries}, RESP2 [[stream, entries]].
        entries: list[Any] = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        return entries

    async def _autoclaim(self, count: int) -> list[Any]:
        reply = await self.client.send(
            pack(
                "XAUTOCLAIM",
                self.stream,
                self.group,
                self.consumer,
                max(1, round(self.claim_idle * 1000)),
                self._claim_cursor,
                "COUNT",
                count,
            ),
            1,
        )
        result = reply[0]
        if isinstance(result, ResponseError):
            raise HaiveError(f"XAUTOCLAIM on {self.stream!r} failed: {result}")
        cursor, entries = result[0], result[1]
        self._claim_cursor = cursor
        if cursor != b"0-0":
            self._next_claim = 0.0  # more to scan: continue at the next read
        return [entry for entry in entries if entry is not None]

    async def _claim_fenced(self, count: int) -> list[Any]:
        idle_ms = max(1, round(self.claim_idle * 1000))
        reply = await self.client.send(
            pack(
                "XPENDING", self.stream, self.group, "IDLE", idle_ms, self._claim_cursor, "+", count
            ),
            1,
        )
        rows = reply[0]
        if isinstance(rows, ResponseError):
            raise HaiveError(f"XPENDING on {self.stream!r} failed: {rows}")
        if len(rows) < count:
            self._claim_cursor = b"-"
        else:
            self._claim_cursor = b"(" + rows[-1][0]
            self._next_claim = 0.0
        me = self.consumer.encode()
        theirs = [row for row in rows if row[1] != me]
        if not theirs:
            return []
        owners = sorted({row[1].decode() for row in theirs})
        commands = [pack("MULTI")]
        for owner in owners:
            fence = self.fence_key(owner)
            commands.append(pack("INCR", fence))
            commands.append(pack("PEXPIRE", fence, _FENCE_TTL_MS))
        commands.append(
            pack(
                "XCLAIM",
                self.stream,
                self.group,
                self.consumer,
                idle_ms,
                *[row[0] for row in theirs],
            )
        )
        commands.append(pack("EXEC"))
        replies = await self.client.send(b"".join(commands), len(commands))
        result = replies[-1]
        if not isinstance(result, list):
            raise HaiveError(f"claiming entries of {owners} on {self.stream!r} failed: {result}")
        claimed = result[-1]
        if isinstance(claimed, ResponseError):
            raise HaiveError(f"XCLAIM on {self.stream!r} failed: {claimed}")
        return [entry for entry in claimed if entry is not None and entry[1] is not None]

    async def _accept(self, entries: list[Any]) -> list[Any]:
        """Decode entries; dead-letter the bad ones; remember every ID for the ack."""
        codec = self.codec
        with_ids = self.with_ids
        serializer = codec.serializer
        if serializer is not None:
            # Fast path: every entry is exactly {field: payload} and decodes.
            target = codec.field_bytes
            loads = codec.fast_loads
            assert loads is not None
            try:
                values = [
                    loads(fields[1])
                    for _, fields in entries
                    if len(fields) == 2 and fields[0] == target
                ]
            except (TypeError, ValueError):  # (SerializationError is a ValueError)
                values = None  # some entry is bad: the per-entry path below names it
            if values is not None and len(values) == len(entries):
                ids = [entry[0] for entry in entries]
                self._batches.append(_Batch(deque(ids), []))
                self._unacked_items += len(values)
                self.stats.read += len(values)
                if with_ids:
                    return [StreamEntry(i.decode(), v) for i, v in zip(ids, values, strict=True)]
                return values
        items: list[Any] = []
        item_ids: deque[bytes] = deque()
        other_ids: list[bytes] = []
        dead: list[list[bytes]] = []
        for entry_id, fields in entries:
            if fields is None:  # trimmed or deleted while pending: nothing left to process
                other_ids.append(entry_id)
                self.stats.missing += 1
                continue
            try:
                value = codec.decode(fields)
            except (SerializationError, InvalidMessageError, UnicodeDecodeError) as exc:
                other_ids.append(entry_id)
                dead.append(self._dead_letter_fields(entry_id, fields, exc))
                continue
            item_ids.append(entry_id)
            items.append(StreamEntry(entry_id.decode(), value) if with_ids else value)
        if dead:
            self.stats.dead_lettered += len(dead)
            packed = pack_xadds(self.dead_letter, dead, None, True)
            if self.exactly_once:
                self.transaction.stage_xadds(packed, len(dead))
            else:
                _check_replies(
                    await self.client.send(packed, len(dead)), f"XADD to {self.dead_letter!r}"
                )
        self._batches.append(_Batch(item_ids, other_ids))
        self._unacked_items += len(items)
        self.stats.read += len(items)
        return items

    def _dead_letter_fields(
        self, entry_id: bytes, fields: list[bytes], exc: BaseException
    ) -> list[bytes]:
        out = [
            b"reason",
            f"{type(exc).__name__}: {exc}".encode(),
            b"stream",
            self.stream.encode(),
            b"id",
            entry_id,
            b"group",
            self.group.encode(),
            b"consumer",
            self.consumer.encode(),
        ]
        for i in range(0, len(fields) - 1, 2):
            out.append(b"entry." + fields[i])
            out.append(fields[i + 1])
        return out

    async def _drained(self) -> bool:
        groups = await self.client.call(self.client.redis.xinfo_groups, self.stream)
        for info in groups:
            name = info.get("name")
            if (name.decode() if isinstance(name, bytes) else name) != self.group:
                continue
            if info.get("pending"):
                return False
            lag = info.get("lag")
            if lag is not None:
                return bool(lag == 0)
            stream = await self.client.call(self.client.redis.xinfo_stream, self.stream)
            return bool(info.get("last-delivered-id") == stream.get("last-generated-id"))
        raise HaiveError(f"consumer group {self.group!r} of {self.stream!r} no longer exists")

    # -- acknowledging ------------------------------------------------------------------
    async def acknowledge(self, count: int) -> None:
        """The oldest ``count`` items yielded are handled: XACK them (or commit the epoch)."""
        if count < 0 or count > self._unacked_items:
            raise ConfigError(
                f"acknowledge({count}): only {self._unacked_items} items are unacknowledged"
            )
        self._ack_requested = False
        if self.exactly_once:
            if count != self._unacked_items:
                raise ConfigError(
                    f"exactly_once commits whole epochs: acknowledge({count}) while "
                    f"{self._unacked_items} items are unacknowledged"
                )
            await self._commit()
            return
        ids: list[bytes] = []
        left = count
        batches = self._batches
        while batches:
            batch = batches[0]
            take = min(left, len(batch.item_ids))
            for _ in range(take):
                ids.append(batch.item_ids.popleft())
            left -= take
            if batch.item_ids:
                break
            ids.extend(batch.other_ids)
            batches.popleft()
        self._unacked_items -= count
        await self._xack(ids)

    async def _settle_unyielded(self) -> None:
        """Acknowledge batches that yielded no item (all dead-lettered or gone)."""
        if self.exactly_once:
            await self._commit()
        else:
            ids = [i for batch in self._batches for i in batch.other_ids]
            self._batches.clear()
            await self._xack(ids)

    async def _xack(self, ids: list[bytes]) -> None:
        if not ids:
            return
        commands = [
            pack_ids(("XACK", self.stream, self.group), ids[i : i + _XACK_CHUNK])
            for i in range(0, len(ids), _XACK_CHUNK)
        ]
        _check_replies(
            await self.client.send(b"".join(commands), len(commands)), f"XACK on {self.stream!r}"
        )
        self.stats.acknowledged += len(ids)

    async def _commit(self) -> None:
        """One MULTI/EXEC: state writes, staged XADDs, XACK of the epoch's IDs."""
        conn = self._conn
        assert conn is not None
        txn = self.transaction
        ids = [i for batch in self._batches for i in (*batch.item_ids, *batch.other_ids)]
        self._batches.clear()
        self._unacked_items = 0
        if not ids and txn.empty:
            return
        commands = [pack("MULTI")]
        corrupt = await self._corrupt_counters(conn)
        for key, value in corrupt.items():
            # INCRBY would fail inside EXEC (Redis does not roll back): quarantine the bad
            # value with the reason and count from zero, in this same transaction.
            dead = [
                b"reason", b"state key holds a non-integer value; moved here, counter reset",
                b"state_key", key.encode(),
                b"value", value,
                b"stream", self.stream.encode(),
                b"group", self.group.encode(),
                b"consumer", self.consumer.encode(),
            ]  # fmt: skip
            commands.append(pack_xadds(self.dead_letter, [dead], None, True))
            commands.append(pack("DEL", key))
        self.stats.dead_lettered += len(corrupt)
        for key, op in txn.writes.items():
            kind = op[0]
            if kind == "set":
                _, value, ttl = op
                if ttl is None:
                    commands.append(pack("SET", key, value))
                else:
                    commands.append(pack("SET", key, value, "PX", max(1, round(ttl * 1000))))
            elif kind == "del":
                commands.append(pack("DEL", key))
            else:
                _, amount, ttl = op
                commands.append(pack("INCRBY", key, amount))
                if ttl is not None:
                    commands.append(pack("PEXPIRE", key, max(1, round(ttl * 1000))))
        body = b"".join(commands) + b"".join(txn.xadds)
        n = len(commands) + txn.xadd_count
        acks = [
            pack_ids(("XACK", self.stream, self.group), ids[i : i + _XACK_CHUNK])
            for i in range(0, len(ids), _XACK_CHUNK)
        ]
        packed = body + b"".join(acks) + pack("EXEC")
        n += len(acks) + 1
        try:
            replies = await conn.send(packed, n)
        finally:
            txn.reset()
            self._watching = False
        result = replies[-1]
        if result is None:  # a watched key changed (conflict) or this consumer was fenced
            self.stats.aborted_commits += 1
            self._replay = True
            self._replay_cursor = b"0"
            return
        if isinstance(result, ResponseError):
            queued = next(
                (r for r in replies if isinstance(r, ResponseError) and r is not result), result
            )
            raise RedisCommitError(
                f"exactly-once commit on {self.stream!r} rejected, nothing applied: {queued}"
            )
        for reply in result:
            if isinstance(reply, ResponseError):
                raise RedisCommitError(
                    f"exactly-once commit on {self.stream!r} partly applied: a command failed "
                    f"inside EXEC: {reply}"
                )
        self.stats.commits += 1
        self.stats.acknowledged += len(ids)

    async def _corrupt_counters(self, conn: DedicatedConnection) -> dict[str, bytes]:
        """Staged ``add`` keys whose stored value is not an integer (one MGET, not watched)."""
        keys = [key for key, op in self.transaction.writes.items() if op[0] == "add"]
        if not keys:
            return {}
        values = (await conn.send(pack("MGET", *keys), 1))[0]
        if isinstance(values, ResponseError):
            raise HaiveError(f"reading counters before the commit failed: {values}")
        return {
            key: value
            for key, value in zip(keys, values, strict=True)
            if value is not None and not _INTEGER.fullmatch(value)
        }

    # -- transactional reads (exactly-once state) ---------------------------------------
    async def _watched_read(self, keys: list[str]) -> list[bytes | None]:
        """Read ``keys`` on the transaction's connection after WATCHing them."""
        conn = self._conn
        if conn is None:
            raise ConfigError("exactly_once state is used before its source was opened")
        packed = pack("WATCH", *keys) + pack("MGET", *keys)
        n = 2
        if not self._watching:
            packed = pack("WATCH", self.fence_key()) + packed
            n = 3
        replies = await conn.send(packed, n)
        self._watching = True
        values = replies[-1]
        if isinstance(values, ResponseError):
            raise HaiveError(f"reading state keys failed: {values}")
        out: list[bytes | None] = values
        return out


class TransactionalState(RedisStateBackend):
    """Keyed state of an exactly-once :class:`RedisStreamSource`: writes wait for the commit.

    Reads return this epoch's staged writes, else the stored value read under ``WATCH``
    (so a concurrent change by another worker aborts the commit and the epoch is
    replayed). ``add``/``add_many`` stage ``INCRBY`` without reading, so counters never
    conflict. ``scan`` sees stored keys plus this epoch's writes; keys another worker
    creates meanwhile are not guarded. Get one from :meth:`RedisStreamSource.state`.

    Example::

        >>> import uuid
        >>> async def main():
        ...     source = RedisStreamSource(f"doc-{uuid.uuid4().hex}", delivery="exactly_once")
        ...     state = source.state("counts")
        ...     await source.open()
        ...     try:
        ...         await state.add("a", 2)
        ...         await state.put("b", b"x")
        ...         staged = await state.get("a"), await state.get("b")
        ...         await source._commit()
        ...         return staged, await source.client.execute("GET", state.prefix + "a")
        ...     finally:
        ...         await source.client.execute("DEL", state.prefix + "a", state.prefix + "b", source.stream)
        ...         await source.aclose()
        >>> trio.run(main)
        ((b'2', b'x'), b'2')
    """

    def __init__(self, source: RedisStreamSource, prefix: str) -> None:
        super().__init__(client=source.client, prefix=prefix)
        self.source = source
        self._owns_client = False

    def __repr__(self) -> str:
        return f"TransactionalState({self.source.stream!r}, prefix={self.prefix!r})"

    async def open(self) -> None:
        """Nothing to connect: the source's connection is used."""

    async def aclose(self) -> None:
        """The source owns the connection."""

    async def get(self, key: str) -> bytes | None:
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        txn = self.source.transaction
        prefix = self.prefix
        full = [prefix + key for key in keys]
        missing = [
            k
            for k in dict.fromkeys(full)
            if k not in txn.reads and (k not in txn.writes or txn.writes[k][0] == "add")
        ]
        if missing:
            for k, value in zip(missing, await self.source._watched_read(missing), strict=True):
                txn.reads[k] = value
        return [self._current(k) for k in full]

    def _current(self, key: str) -> bytes | None:
        txn = self.source.transaction
        op = txn.writes.get(key)
        if op is None:
            return txn.reads.get(key)
        if op[0] == "set":
            value: bytes = op[1]
            return value
        if op[0] == "del":
            return None
        return b"%d" % (_as_int(txn.reads.get(key), key) + op[1])

    async def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self._stage(key, value, ttl)

    def _stage(self, key: str, value: bytes | None, ttl: float | None) -> None:
        full = self.prefix + key
        if value is None:
            self.source.transaction.stage_write(full, ("del",))
        else:
            if ttl is not None and ttl <= 0:
                self.source.transaction.stage_write(full, ("del",))
                return
            self.source.transaction.stage_write(full, ("set", _check_bytes(value, key), ttl))

    async def delete(self, key: str) -> bool:
        existed = await self.get(key) is not None
        self._stage(key, None, None)
        return existed

    async def update(
        self,
        key: str,
        fn: Callable[[bytes | None], bytes | None],
        *,
        ttl: float | None = None,
    ) -> bytes | None:
        new = fn(await self.get(key))
        self._stage(key, new, ttl)
        return new

    async def write_batch(self, writes: Sequence[tuple[str, bytes | None, float | None]]) -> None:
        for key, value, ttl in writes:
            self._stage(key, value, ttl)

    async def scan(self, prefix: str) -> list[tuple[str, bytes]]:
        full_prefix = self.prefix + prefix
        stored = [k.decode() for k in await self.client.call(self._scan_keys, full_prefix)]
        staged = [k for k in self.source.transaction.writes if k.startswith(full_prefix)]
        keys = sorted(set(stored) | set(staged))
        cut = len(self.prefix)
        values = await self.get_many([k[cut:] for k in keys])
        return [(k[cut:], v) for k, v in zip(keys, values, strict=True) if v is not None]

    async def delete_prefix(self, prefix: str) -> int:
        doomed = await self.scan(prefix)
        for key, _ in doomed:
            self._stage(key, None, None)
        return len(doomed)

    async def add(self, key: str, amount: int = 1, *, ttl: float | None = None) -> None:
        """Stage ``INCRBY key amount`` (no read, so never a conflict)."""
        await self.add_many({key: amount}, ttl=ttl)

    async def add_many(self, amounts: Mapping[str, int], *, ttl: float | None = None) -> None:
        """``add`` for several keys."""
        txn = self.source.transaction
        prefix = self.prefix
        for key, amount in amounts.items():
            if isinstance(amount, bool) or not isinstance(amount, int):
                raise ConfigError(f"add {key!r}: amount must be an int, got {amount!r}")
            full = prefix + key
            op = txn.writes.get(full)
            if op is None:
                txn.writes[full] = ("add", amount, ttl)
            elif op[0] == "add":
                txn.writes[full] = ("add", op[1] + amount, ttl if ttl is not None else op[2])
            elif op[0] == "del":
                txn.stage_write(full, ("set", b"%d" % amount, ttl))
            else:
                txn.stage_write(full, ("set", b"%d" % (_as_int(op[1], key) + amount), ttl))

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        """Add and return the new value (reads the key, so it is WATCHed)."""
        await self.get(key)
        await self.add(key, amount, ttl=ttl)
        return _as_int(self._current(self.prefix + key), key)

    async def incr_many(self, amounts: Mapping[str, int], *, ttl: float | None = None) -> list[int]:
        await self.get_many(list(amounts))
        await self.add_many(amounts, ttl=ttl)
        return [_as_int(self._current(self.prefix + k), k) for k in amounts]


def _as_int(value: bytes | None, key: str) -> int:
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        raise InvalidMessageError(
            f"state key {key!r} holds {value[:40]!r}, not an integer"
        ) from None


def _check_bytes(value: object, key: str) -> bytes:
    if isinstance(value, bytes):
        return value
    raise ConfigError(f"state value of {key!r} must be bytes, got {type(value).__name__}")


class RedisStreamSink(StreamSink):
    """Appends items to a Redis stream with pipelined ``XADD`` (``MAXLEN ~`` trimming).

    A batch is packed into one write of ``XADD`` commands and its replies read at once;
    ``write_batch`` returns after Redis answered, so a pipeline acknowledges its source
    only after the entries exist. ``maxlen`` caps the stream (``approximate=True`` lets
    Redis trim whole nodes, which is much cheaper). Bound to an exactly-once source
    (:meth:`RedisStreamSource.sink`) it stages the XADDs for the source's commit instead.

    Example::

        >>> import uuid
        >>> async def main():
        ...     sink = RedisStreamSink(f"doc-{uuid.uuid4().hex}", maxlen=1000)
        ...     async with sink:
        ...         await sink.write_batch([{"n": 1}, {"n": 2}])
        ...         length = await sink.client.execute("XLEN", sink.stream)
        ...         await sink.client.execute("DEL", sink.stream)
        ...     return length
        >>> trio.run(main)
        2
    """

    PLUGIN_NAME = "redis_stream"

    def __init__(
        self,
        stream: str,
        *,
        url: str = DEFAULT_URL,
        client: RedisClient | None = None,
        maxlen: int | None = None,
        approximate: bool = True,
        codec: str | Serializer = "json",
        field: str = "data",
        transaction: RedisStreamSource | None = None,
        pool_size: int = 4,
    ) -> None:
        if not isinstance(stream, str) or not stream:
            raise ConfigError(f"RedisStreamSink: stream must be a non-empty string, got {stream!r}")
        if maxlen is not None:
            _positive_int(maxlen, "maxlen")
        if transaction is not None:
            if not transaction.exactly_once:
                raise ConfigError("RedisStreamSink: transaction= needs an exactly_once source")
            if not same_slot(stream, transaction.stream):
                raise ConfigError(
                    f"exactly_once: output stream {stream!r} is not in the hash slot of "
                    f"{transaction.stream!r}, so one MULTI/EXEC cannot cover both on Redis "
                    f"Cluster; give it the same hash tag, e.g. "
                    f"{derived_key(transaction.stream, 'out')!r}"
                )
            client = transaction.client
        self.stream = stream
        self.maxlen = maxlen
        self.approximate = approximate
        self.codec = EntryCodec(codec, field)
        self.transaction = transaction
        self._owns_client = client is None
        self.client = client if client is not None else RedisClient(url, pool_size=pool_size)
        self.written = 0

    def __repr__(self) -> str:
        mode = "exactly_once" if self.transaction is not None else "at_least_once"
        return f"RedisStreamSink({self.stream!r}, maxlen={self.maxlen}, {mode})"

    async def open(self) -> None:
        """Refuse an output key that exists and is not a stream (before anything is read)."""
        kind = (await self.client.send(pack("TYPE", self.stream), 1))[0]
        if kind not in (b"stream", b"none", "stream", "none"):
            kind_text = kind.decode() if isinstance(kind, bytes) else kind
            raise ConfigError(
                f"RedisStreamSink: key {self.stream!r} holds a {kind_text}, not a stream"
            )

    async def aclose(self) -> None:
        if self._owns_client:
            self.client.close()

    def _encode(self, items: list[Any]) -> list[list[bytes]]:
        encode = self.codec.encode
        out: list[list[bytes]] = []
        for index, item in enumerate(items):
            try:
                out.append(encode(item))
            except SerializationError as exc:
                raise SerializationError(
                    f"RedisStreamSink {self.stream!r}: item {index} of the batch cannot be "
                    f"encoded (nothing of this batch was written): {exc}"
                ) from exc
        return out

    def _pack(self, items: list[Any]) -> bytes:
        dumps = self.codec.fast_dumps
        if dumps is not None:
            try:
                payloads = [dumps(item) for item in items]
            except (TypeError, ValueError):
                pass  # some item does not encode: _encode below names it
            else:
                return pack_payload_xadds(
                    self.stream, self.codec.field_bytes, payloads, self.maxlen, self.approximate
                )
        return pack_xadds(self.stream, self._encode(items), self.maxlen, self.approximate)

    async def write_batch(self, items: list[Any]) -> None:
        if not items:
            return
        if self.transaction is not None:
            self.transaction.transaction.stage_xadds(self._pack(items), len(items))
            self.written += len(items)
            return
        for start in range(0, len(items), _XADD_CHUNK):
            chunk = items[start : start + _XADD_CHUNK]
            packed = self._pack(chunk)
            replies = await self.client.send(packed, len(chunk))
            _check_replies(replies, f"XADD to {self.stream!r}")
            self.written += len(chunk)


async def reset_group(client: RedisClient, stream: str, group: str, from_id: str) -> None:
    """Make ``group`` read ``stream`` again from ``from_id`` (inclusive), creating it if needed.

    Example::

        >>> import uuid
        >>> async def main():
        ...     client = RedisClient()
        ...     stream = f"doc-{uuid.uuid4().hex}"
        ...     await reset_group(client, stream, "g", "5-0")
        ...     info = await client.call(client.redis.xinfo_groups, stream)
        ...     await client.execute("DEL", stream)
        ...     client.close()
        ...     return info[0]["last-delivered-id"]
        >>> trio.run(main)
        b'4-18446744073709551615'
    """
    start = previous_id(from_id)
    reply = await client.send(pack("XGROUP", "CREATE", stream, group, start, "MKSTREAM"), 1)
    if isinstance(reply[0], ResponseError):
        if "BUSYGROUP" not in str(reply[0]):
            raise HaiveError(f"cannot create consumer group {group!r} on {stream!r}: {reply[0]}")
        await client.execute("XGROUP", "SETID", stream, group, start)
