"""Exactly-once epochs of a :class:`~haive_plugin_redis.streams.RedisStreamSource`.

In ``delivery="exactly_once"`` the sink and the keyed state only *stage* their writes in
the epoch's :class:`Transaction`. Acknowledging, the :class:`ExactlyOnceCommitter` commits the state writes, the output
``XADD``\\ s, the dead letters and the ``XACK`` of the epoch's IDs in one ``MULTI/EXEC``
on a connection that ``WATCH``\\ es this consumer's fence key (bumped by a claimer, see
:mod:`.stream_claims`) and every state key read: all of it happens or none. An aborted
commit (a conflicting write, or this consumer fenced off) replays the epoch's entries:
the source reads them again.
A counter whose stored value is not an integer is quarantined to the dead-letter stream
in the same transaction instead of failing inside ``EXEC``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import attrs
from redis.exceptions import ResponseError

from haive.dataflow.errors import HaiveError

from ._resp import pack, pack_ids
from .stream_wire import _XACK_CHUNK

if TYPE_CHECKING:
    from .stream_dead_letters import DeadLetterWriter
    from .stream_fencing import FencedConnection
    from .stream_stats import StreamSourceStats
    from .stream_unacked import UnackedEntries

_INTEGER = re.compile(rb"-?[0-9]{1,19}")  # what INCRBY accepts (64-bit signed)


class RedisCommitError(HaiveError):
    """An exactly-once commit failed inside ``EXEC`` (a command error: wrong key type...).

    Redis does not roll a transaction back, so the commands before the failing one were
    applied; the message names the failing command so the offending key can be fixed.
    """


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


class ExactlyOnceCommitter:
    """Commits one consumer's exactly-once epochs on its fenced connection.

    Given the consumer's :class:`~haive_plugin_redis.stream_fencing.FencedConnection`, its
    stream, group and name, the epoch's :class:`Transaction`, the entries read and not
    acknowledged (:class:`~haive_plugin_redis.stream_unacked.UnackedEntries`), the
    dead-letter writer (for corrupt counters) and the source's stats. :meth:`commit`
    applies the epoch in one ``MULTI/EXEC`` or, when a watched key changed, nothing.

    Example::

        >>> import uuid
        >>> import trio
        >>> from haive_plugin_redis import RedisClient, StreamSourceStats
        >>> from haive_plugin_redis.stream_dead_letters import DeadLetterWriter
        >>> from haive_plugin_redis.stream_fencing import FencedConnection
        >>> from haive_plugin_redis.stream_unacked import UnackedEntries
        >>> async def main():
        ...     client, stats, txn = RedisClient(), StreamSourceStats(), Transaction()
        ...     stream = f"{{doc-{uuid.uuid4().hex}}}:in"
        ...     conn = FencedConnection(client)
        ...     conn.open(stream + ":fence")
        ...     committer = ExactlyOnceCommitter(
        ...         conn, stream, "g", "c1", transaction=txn, unacked=UnackedEntries(),
        ...         dead_letters=DeadLetterWriter(client, stream + ":dead", stats=stats,
        ...                                       transaction=txn),
        ...         stats=stats)
        ...     txn.stage_write(stream + ":k", ("set", b"v", None))
        ...     try:
        ...         return await committer.commit(), await client.execute("GET", stream + ":k")
        ...     finally:
        ...         await client.execute("DEL", stream + ":k")
        ...         conn.close()
        ...         client.close()
        >>> trio.run(main)
        (True, b'v')
    """

    def __init__(
        self,
        connection: FencedConnection,
        stream: str,
        group: str,
        consumer: str,
        *,
        transaction: Transaction,
        unacked: UnackedEntries,
        dead_letters: DeadLetterWriter,
        stats: StreamSourceStats,
    ) -> None:
        self.connection = connection
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.transaction = transaction
        self.unacked = unacked
        self.dead_letters = dead_letters
        self.stats = stats
        #: Keyed partitions: the epoch this owner holds. The fence key (the partition's
        #: epoch) must still hold it at commit, read after the epoch's WATCH: an owner
        #: whose lease moved is refused even if it watched only after the move.
        self.fence_value: bytes | None = None

    def __repr__(self) -> str:
        return f"ExactlyOnceCommitter({self.stream!r}, group={self.group!r}, consumer={self.consumer!r})"

    async def commit(self) -> bool:
        """One MULTI/EXEC: state writes, staged XADDs, XACK of the epoch's IDs.

        ``False``: the epoch was aborted (a watched key changed, this consumer was fenced
        off, or the slot moved): nothing was applied and its entries must be read again.
        """
        conn = self.connection
        txn = self.transaction
        ids = self.unacked.drain()
        if not ids and txn.empty:
            return True
        if conn.watch_lost:  # Redis Cluster: the slot moved this epoch
            txn.reset()
            self._abort_epoch()
            return False
        if self.fence_value is not None:
            held = (await conn.send_watched(pack("GET", conn.fence_key or ""), 1))[0]
            if held != self.fence_value:
                txn.reset()
                self.stats.fenced_commits += 1
                self._abort_epoch()
                return False
        commands = [pack("MULTI")]
        corrupt = await self._corrupt_counters()
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
            commands.append(self.dead_letters.commands([dead]))
            commands.append(pack("DEL", key))
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
            replies = await conn.execute(packed, n)
        finally:
            txn.reset()
        result = replies[-1]
        if result is None or conn.watch_lost:
            # A watched key changed (conflict), this consumer was fenced, or (Redis Cluster)
            # the slot moved and EXEC was refused: nothing applied, the epoch replays.
            self._abort_epoch()
            return False
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
        return True

    def _abort_epoch(self) -> None:
        self.stats.aborted_commits += 1
        self.connection.unwatch()

    async def _corrupt_counters(self) -> dict[str, bytes]:
        """Staged ``add`` keys whose stored value is not an integer (one MGET, not watched)."""
        keys = [key for key, op in self.transaction.writes.items() if op[0] == "add"]
        if not keys:
            return {}
        values = (await self.connection.send(pack("MGET", *keys), 1))[0]
        if isinstance(values, ResponseError):
            raise HaiveError(f"reading counters before the commit failed: {values}")
        return {
            key: value
            for key, value in zip(keys, values, strict=True)
            if value is not None and not _INTEGER.fullmatch(value)
        }
