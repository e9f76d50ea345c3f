"""How a :class:`~haive_plugin_redis.streams.RedisStreamSource` reads its stream.

Entries come from three places, in this order: entries delivered to this consumer earlier
and never acknowledged (replayed first: a restart under the same name, or an aborted
exactly-once epoch), pending entries of dead consumers claimed every ``claim_interval``
(:mod:`.stream_claims`), then new entries with ``XREADGROUP``. Each batch is decoded; an
entry that cannot be decoded goes to the dead-letter stream with the reason. Every ID read
is remembered until it is acknowledged (:mod:`.stream_unacked`). The source's ``batches``
loop drives the :class:`EntryReader`; when nothing new is ready it yields an empty batch,
asking the pipeline to acknowledge.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio
from redis.exceptions import ResponseError

from haive.dataflow.errors import HaiveError
from haive.dataflow.io.trace_headers import TraceHeaderLog

from ._resp import pack
from .stream_wire import entry_trace_headers

if TYPE_CHECKING:
    from .client import RedisClient
    from .stream_acks import StreamAcknowledger
    from .stream_claims import IdleEntryClaimer
    from .stream_dead_letters import DeadLetterWriter
    from .stream_fencing import FencedConnection
    from .stream_stats import StreamSourceStats
    from .stream_unacked import UnackedEntries
    from .stream_wire import EntryCodec


@attrs.frozen
class StreamEntry:
    """One stream entry as the source yields it with ``with_ids=True``.

    Example::

        >>> StreamEntry("1700000000000-0", {"key": "a"}).data["key"]
        'a'
    """

    id: str
    data: Any


class EntryReader:
    """Reads one consumer's entries: its own unacknowledged ones, claimed ones, then new ones.

    Given the consumer's client, stream, group and name, how long ``XREADGROUP`` may block,
    the codec and ``with_ids``, the entries read and not acknowledged (every batch read is
    recorded there), the claimer of idle entries, the fenced connection (exactly once:
    reads go through it, after the epoch's ``WATCH``), the dead-letter writer (for entries
    that do not decode) and the stats. :meth:`next_entries` fetches raw entries,
    :meth:`accept` decodes and records them.

    Example::

        >>> import uuid
        >>> import trio
        >>> from haive_plugin_redis import EntryCodec, RedisClient, StreamSourceStats
        >>> from haive_plugin_redis.stream_claims import IdleEntryClaimer
        >>> from haive_plugin_redis.stream_dead_letters import DeadLetterWriter
        >>> from haive_plugin_redis.stream_unacked import UnackedEntries
        >>> async def main():
        ...     client, stream, stats = RedisClient(), f"doc-{uuid.uuid4().hex}", StreamSourceStats()
        ...     await client.execute("XADD", stream, "1-0", "data", '{"n":1}')
        ...     await client.execute("XADD", stream, "2-0", "data", "not json")
        ...     await client.execute("XGROUP", "CREATE", stream, "g", "0")
        ...     unacked = UnackedEntries()
        ...     reader = EntryReader(
        ...         client, stream, "g", "c", block=0.0, codec=EntryCodec("json"),
        ...         with_ids=False, unacked=unacked,
        ...         claimer=IdleEntryClaimer(client, stream, "g", "c", idle=30.0, interval=15.0,
        ...                                  fenced=False, unacked=unacked),
        ...         fenced_connection=None,
        ...         dead_letters=DeadLetterWriter(client, stream + ":dead", stats=stats),
        ...         stats=stats)
        ...     items = await reader.accept(await reader.next_entries(10, block=False))
        ...     await client.execute("DEL", stream, stream + ":dead")
        ...     client.close()
        ...     return items, stats.read, stats.dead_lettered, unacked.left_pending()
        >>> trio.run(main)
        ([{'n': 1}], 1, 1, 2)
    """

    def __init__(
        self,
        client: RedisClient,
        stream: str,
        group: str,
        consumer: str,
        *,
        block: float,
        codec: EntryCodec,
        with_ids: bool,
        unacked: UnackedEntries,
        claimer: IdleEntryClaimer,
        fenced_connection: FencedConnection | None,
        dead_letters: DeadLetterWriter,
        stats: StreamSourceStats,
        trace_log: TraceHeaderLog | None = None,
        acknowledger: StreamAcknowledger | None = None,
    ) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.block = block
        self.codec = codec
        self.with_ids = with_ids
        self.unacked = unacked
        self.claimer = claimer
        self.fenced_connection = fenced_connection
        self.dead_letters = dead_letters
        self.stats = stats
        self.trace_log = trace_log if trace_log is not None else TraceHeaderLog()
        #: At least once: its deferred XACKs go out ahead of each XREADGROUP.
        self.acknowledger = acknowledger
        self._replay = True
        self._replay_cursor = b"0"

    def __repr__(self) -> str:
        return (
            f"EntryReader({self.stream!r}, group={self.group!r}, consumer={self.consumer!r})"
        )

    def replay_unacknowledged(self) -> None:
        """Read this consumer's unacknowledged entries again first (an aborted epoch)."""
        self._replay = True
        self._replay_cursor = b"0"

    async def next_entries(self, count: int, *, block: bool) -> list[Any]:
        """Up to ``count`` raw entries: replayed, claimed or new (``block``: wait for new
        ones up to the reader's ``block`` time)."""
        if self._replay and (not self.unacked or self._replay_cursor != b"0"):
            # Entries delivered to this consumer earlier and never acknowledged (a restart
            # under the same name, or an aborted exactly-once epoch): they come first, all
            # of them before any new entry (per-key order). The replay starts when nothing
            # is held (so it re-reads nothing in flight) and goes on from its cursor.
            entries = await self._read(count, self._replay_cursor, block=False)
            if entries:
                self._replay_cursor = entries[-1][0]
                self.stats.replayed += len(entries)
                return entries
            self._replay = False
        if not self._replay and self.claimer.due(trio.current_time()):
            if self.fenced_connection is not None:
                # Claimed entries join this epoch: be fenced from before they are ours.
                await self.fenced_connection.watch()
            claimed = await self.claimer.claim(count)
            if claimed and self.unacked:
                # XAUTOCLAIM also takes this consumer's own entries once they are idle long
                # enough; those being processed right now must not be yielded twice.
                held = self.unacked.held_ids()
                claimed = [entry for entry in claimed if entry[0] not in held]
            if claimed:
                self.stats.claimed += len(claimed)
                return claimed
        return await self._read(count, b">", block=block)

    async def _read(self, count: int, cursor: bytes, *, block: bool) -> list[Any]:
        args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count]
        if block and self.block > 0:
            args += ["BLOCK", max(1, round(self.block * 1000))]
        args += ["STREAMS", self.stream, cursor]
        packed = pack(*args)
        if self.fenced_connection is not None:
            replies = await self.fenced_connection.send_watched(packed, 1)
        elif self.acknowledger is not None and self.acknowledger.deferred:
            # Acknowledged items' XACKs first, in the same write: one round trip for both.
            acks, commands, ids = self.acknowledger.take_deferred()
            replies = await self.client.send(acks + packed, commands + 1)
            self.acknowledger.confirm(replies[:commands], ids)
            replies = replies[commands:]
        else:
            replies = await self.client.send(packed, 1)
        reply = replies[0]
        if isinstance(reply, ResponseError):
            raise HaiveError(
                f"XREADGROUP on {self.stream!r} (group {self.group!r}) failed: {reply}"
            )
        if not reply:
            return []
        # RESP3 (redis-py 8's default) answers a map {stream: entries}, RESP2 [[stream, entries]].
        entries: list[Any] = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        return entries

    async def accept(self, entries: list[Any]) -> list[Any]:
        """Decode entries; dead-letter the bad ones; remember every ID for the ack."""
        # Entries left pending after a failure, delivered again.
        self.unacked.delivered_again(entry[0] for entry in entries)
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
            except Exception:  # any decoder error: the per-entry path below names it
                values = None
            if values is not None and len(values) == len(entries):
                ids = [entry[0] for entry in entries]
                if with_ids:
                    values = [StreamEntry(i.decode(), v) for i, v in zip(ids, values, strict=True)]
                self.unacked.add(deque(ids), [], deque(values))
                self.stats.read += len(values)
                if self.trace_log.wanted:
                    self.trace_log.record([None] * len(values))  # no entry has trace fields
                return values
        trace_headers: list[Mapping[str, str] | None] | None = (
            [] if self.trace_log.wanted else None
        )
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
            except Exception as exc:
                # Whatever a producer wrote, and whatever a decoder raises on it (msgpack
                # raises TypeError on an unhashable map key), is a dead letter, not a crash.
                other_ids.append(entry_id)
                dead.append(self._dead_letter_fields(entry_id, fields, exc))
                continue
            item_ids.append(entry_id)
            items.append(StreamEntry(entry_id.decode(), value) if with_ids else value)
            if trace_headers is not None:
                trace_headers.append(entry_trace_headers(fields))
        await self.dead_letters.write(dead)
        if trace_headers is not None:
            self.trace_log.record(trace_headers)
        self.unacked.add(item_ids, other_ids, deque(items))
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

    async def drained(self) -> bool:
        """Whether the group has no undelivered and no pending entries."""
        if self.acknowledger is not None:
            await self.acknowledger.flush()  # acknowledged entries are not pending
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
