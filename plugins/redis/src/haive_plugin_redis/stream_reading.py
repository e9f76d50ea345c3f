"""How a :class:`~haive_plugin_redis.streams.RedisStreamSource` reads its stream.

Entries come from three places, in this order: entries delivered to this consumer earlier
and never acknowledged (replayed first: a restart under the same name, or an aborted
exactly-once epoch), pending entries of dead consumers claimed every ``claim_interval``
(:mod:`.stream_claims`), then new entries with ``XREADGROUP``. Each batch is decoded; an
entry that cannot be decoded goes to the dead-letter stream with the reason. Every ID read
is remembered until it is acknowledged (:mod:`.stream_acks`). When nothing new is ready
the source yields an empty batch, asking the pipeline to acknowledge.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import attrs
import trio
from redis.exceptions import ResponseError

from haive.dataflow.errors import HaiveError

from ._resp import pack

if TYPE_CHECKING:
    from .client import RedisClient
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


class _ReadingMixin:
    """Part of :class:`~haive_plugin_redis.streams.RedisStreamSource`: reading."""

    if TYPE_CHECKING:
        stream: str
        group: str
        consumer: str
        client: RedisClient
        codec: EntryCodec
        with_ids: bool
        batch_size: int
        ack_every: int
        block: float
        claim_interval: float
        stop_when_drained: bool
        stats: StreamSourceStats
        _dead_letters: DeadLetterWriter
        fenced_connection: FencedConnection | None
        _unacked: UnackedEntries
        _ack_requested: bool
        _replay: bool
        _replay_cursor: bytes
        _claimer: IdleEntryClaimer

        @property
        def exactly_once(self) -> bool: ...

        def fence_key(self, consumer: str | None = None) -> str: ...

        async def _settle_unyielded(self) -> None: ...


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
                elif not self._unacked.item_count:
                    await self._settle_unyielded()
                if self._unacked.item_count >= self.ack_every:
                    self._ack_requested = True
                    yield []
                continue
            if self._unacked.item_count:
                self._ack_requested = True
                yield []  # nothing more ready: ask the pipeline to acknowledge
                continue
            if self._unacked:
                await self._settle_unyielded()
            if self.stop_when_drained and await self._drained():
                return

    async def _next_entries(self, count: int) -> list[Any]:
        if self._replay and not self._unacked:
            # Entries delivered to this consumer earlier and never acknowledged (a restart
            # under the same name, or an aborted exactly-once epoch): they come first.
            entries = await self._read(count, self._replay_cursor, block=False)
            if entries:
                self._replay_cursor = entries[-1][0]
                self.stats.replayed += len(entries)
                return entries
            self._replay = False
        if not self._replay and self._claimer.due(trio.current_time()):
            if self.fenced_connection is not None:
                # Claimed entries join this epoch: be fenced from before they are ours.
                await self.fenced_connection.watch()
            claimed = await self._claimer.claim(count)
            if claimed and self._unacked:
                # XAUTOCLAIM also takes this consumer's own entries once they are idle long
                # enough; those being processed right now must not be yielded twice.
                held = self._unacked.held_ids()
                claimed = [entry for entry in claimed if entry[0] not in held]
            if claimed:
                self.stats.claimed += len(claimed)
                return claimed
        block = not self._unacked.item_count or self._ack_requested
        return await self._read(count, b">", block=block)

    async def _read(self, count: int, cursor: bytes, *, block: bool) -> list[Any]:
        args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count]
        if block and self.block > 0:
            args += ["BLOCK", max(1, round(self.block * 1000))]
        args += ["STREAMS", self.stream, cursor]
        packed = pack(*args)
        if self.fenced_connection is not None:
            replies = await self.fenced_connection.send_watched(packed, 1)
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

    async def _accept(self, entries: list[Any]) -> list[Any]:
        """Decode entries; dead-letter the bad ones; remember every ID for the ack."""
        # Entries left pending after a failure, delivered again.
        self._unacked.delivered_again(entry[0] for entry in entries)
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
                self._unacked.add(deque(ids), [], deque(values))
                self.stats.read += len(values)
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
            except Exception as exc:
                # Whatever a producer wrote, and whatever a decoder raises on it (msgpack
                # raises TypeError on an unhashable map key), is a dead letter, not a crash.
                other_ids.append(entry_id)
                dead.append(self._dead_letter_fields(entry_id, fields, exc))
                continue
            item_ids.append(entry_id)
            items.append(StreamEntry(entry_id.decode(), value) if with_ids else value)
        await self._dead_letters.write(dead)
        self._unacked.add(item_ids, other_ids, deque(items))
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
